//! Prefetching: the keys the model expects next, fetched from the origin before they are read.
//!
//! ```text
//! tracker predictions --try_send--> scheduler --> bounded priority queue --> workers
//!    --> origin (single-flight, shared with demand misses) --> store (SET NX, route TTL)
//! ```
//!
//! - The tracker's thread hands each read's predictions over with `try_send` (a full channel
//!   drops them, counted): the learner never waits for prefetching.
//! - The scheduler keeps the predictions at or above the live threshold (at most
//!   `max_prefetch_per_schedule` per read), drops keys with no prefetch route, keys queued,
//!   in flight or recently prefetched and wasted, and asks the store which of the rest it
//!   holds, in one pipeline per batch (EXISTS does not touch a key's LRU clock). Predictions
//!   between the touch and fetch thresholds (or with no route) are TOUCHed: kept warm if
//!   cached, at no origin cost. The rest are queued with priority = probability × hour weight.
//! - `num_workers` workers take the best entry, wait for a token of the global
//!   `max_requests_per_second` bucket (× the hour's weight), and fetch it as background work:
//!   the origin host's slots go to demand misses first (with none free the prefetch is
//!   skipped). Five failures in a row back the workers off (1 s, doubling to 30 s); a route
//!   whose breaker is open is not asked.
//! - Every issued prefetch ends in one class of [`ledger::Ledger`]; a sweep each second
//!   closes the expired, checks the landed ones still unread for eviction, feeds the
//!   [`controller::Controller`] (the adaptive threshold) and checks the store's memory (the
//!   space guard).
//!
//! The space guard: when the store cannot evict (`noeviction`, or `volatile-*` with under a
//! tenth of its keys volatile) and its used memory reaches `cache_space_threshold` of
//! `maxmemory`, prefetching pauses, so a prefetch never takes the room a client's write needs
//! (which would fail with OOM). Under `allkeys-*` a full cache is normal: a prefetch evicts
//! the least recently used key, and whether that pays is the controller's business (it sees
//! wasted prefetches as lost precision and raises the threshold).

pub mod controller;
pub mod hours;
pub mod ledger;
pub mod queue;
pub mod settings;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::admin::proxy_cmd::count;
use crate::origin::{Found, Origin};
use crate::protocol::Value;
use crate::tracking::tracker::{Predicted, Tracker};
use crate::upstream::{Internal, Upstream};
use controller::{Controller, Feedback};
use hours::HourWeights;
use ledger::{Ledger, Wasted};
use queue::{Job, Queue};
use settings::{Prefetch as Settings, Threshold};

/// Predictions waiting for the scheduler at most (the tracker drops past it).
const CHANNEL: usize = 4096;
/// Reads' predictions the scheduler takes at once (one store round trip for all).
const BATCH: usize = 64;
/// A key prefetched and wasted (expired or evicted unread) is not prefetched again for this
/// long.
const WASTE_MEMORY: Duration = Duration::from_secs(30);
/// Keys remembered as recently wasted, at most.
const WASTE_KEYS: usize = 10_000;
/// Open prefetches the ledger keeps at most.
const LEDGER_MAX: usize = 100_000;
/// Landed prefetches checked for eviction per sweep, at most.
const EVICTION_CHECKS: usize = 1000;
/// Consecutive failures after which the workers back off.
const FAILURES_TO_BACK_OFF: u32 = 5;

/// Why the scheduler did what it did with one prediction (PROXY PREDICT, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Queued for a worker.
    Fetch,
    /// Below the fetch threshold (or past the per-read limit) and at or above the touch one,
    /// or with no route: TOUCHed, kept warm if cached.
    Touch,
    BelowThreshold,
    OverLimit,
    NoRoute,
    Cached,
    InFlight,
    Queued,
    RecentlyWasted,
    /// Prefetching is off.
    Off,
    /// The space guard holds prefetching.
    Space,
}

impl Decision {
    pub const ALL: [Decision; 11] = [
        Decision::Fetch,
        Decision::Touch,
        Decision::BelowThreshold,
        Decision::OverLimit,
        Decision::NoRoute,
        Decision::Cached,
        Decision::InFlight,
        Decision::Queued,
        Decision::RecentlyWasted,
        Decision::Off,
        Decision::Space,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Decision::Fetch => "fetch",
            Decision::Touch => "touch",
            Decision::BelowThreshold => "below_threshold",
            Decision::OverLimit => "over_limit",
            Decision::NoRoute => "no_route",
            Decision::Cached => "cached",
            Decision::InFlight => "in_flight",
            Decision::Queued => "queued",
            Decision::RecentlyWasted => "recently_wasted",
            Decision::Off => "off",
            Decision::Space => "space_guard",
        }
    }
}

/// What a first look decides, before the store is asked.
enum Look {
    /// Ask the store whether it holds the key; fetch it on `route` (of the origin of `epoch`)
    /// if not.
    Check {
        route: usize,
        epoch: u64,
        priority: f64,
    },
    Done(Decision),
}

/// The settings that `PROXY PREFETCH CONFIG SET` changes while running.
#[derive(Clone, Debug)]
pub struct Live {
    pub threshold: Threshold,
    pub touch: f64,
    pub top_n: usize,
    pub budget: f64,
    pub rate: f64,
    pub workers: usize,
    pub hours: HourWeights,
    pub utc: bool,
    pub space: f64,
    pub queue_max: usize,
    pub max_age: Duration,
}

impl Live {
    fn of(s: &Settings) -> Live {
        Live {
            threshold: s.min_probability,
            touch: s.touch_probability,
            top_n: s.max_prefetch_per_schedule,
            budget: s.max_load_factor,
            rate: s.max_requests_per_second,
            workers: s.num_workers,
            hours: s.hours(),
            utc: s.hour_weights_utc,
            space: s.cache_space_threshold,
            queue_max: s.queue_max_size,
            max_age: Duration::from_millis(s.max_age_ms),
        }
    }
}

/// The origin the prefetcher fetches through, and its epoch: queued jobs name a route of it.
struct Bound {
    epoch: u64,
    origin: Arc<Origin>,
}

/// The workers' shared token bucket: `rate` tokens a second, a second's worth at most.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token at `now`, or says how long until one is due.
    fn take(&mut self, rate: f64, now: Instant) -> Result<(), Duration> {
        let rate = rate.max(0.001);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Consecutive failures and the back-off they earned.
#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn failed(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= FAILURES_TO_BACK_OFF {
            let doublings = (self.failures - FAILURES_TO_BACK_OFF).min(5);
            let wait = Duration::from_secs(1 << doublings).min(Duration::from_secs(30));
            self.until = Some(now + wait);
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}

struct Stats {
    processed: IntCounter,
    successful: IntCounter,
    failed: IntCounter,
    skipped: IntCounter,
    breaker: IntCounter,
    success_ratio: prometheus::Gauge,
    wait: Histogram,
    fetch: Histogram,
    lead: Histogram,
    lag: Histogram,
    decisions: IntCounterVec,
    outcomes: IntCounterVec,
    issued: IntCounter,
    queue_size: IntGauge,
    queue_events: IntCounterVec,
    threshold: prometheus::Gauge,
    precision: prometheus::Gauge,
    coverage: prometheus::Gauge,
    load: prometheus::Gauge,
    space_guard: IntGauge,
    enabled: IntGauge,
    predictions_dropped: IntCounter,
}

impl Stats {
    fn new(r: &Registry) -> Stats {
        use crate::metrics::register as reg;
        let c = |n: &str, h: &str| reg(r, IntCounter::new(n, h).expect("valid metric"));
        let g = |n: &str, h: &str| reg(r, IntGauge::new(n, h).expect("valid metric"));
        let f = |n: &str, h: &str| reg(r, prometheus::Gauge::new(n, h).expect("valid metric"));
        let hist = |n: &str, h: &str, buckets: Vec<f64>| {
            reg(
                r,
                Histogram::with_opts(HistogramOpts::new(n, h).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let vec = |n: &str, h: &str, l: &str| {
            reg(
                r,
                IntCounterVec::new(Opts::new(n, h), &[l]).expect("valid metric"),
            )
        };
        let ms = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        Stats {
            processed: c(
                "prescient_prefetch_processed_total",
                "Prefetches the workers sent to the origin.",
            ),
            successful: c(
                "prescient_prefetch_successful_total",
                "Prefetches the origin answered (a value or a 404).",
            ),
            failed: c(
                "prescient_prefetch_failed_total",
                "Prefetches that got no answer (error, timeout, 5xx).",
            ),
            skipped: c(
                "prescient_prefetch_skipped_total",
                "Prefetches not sent: the origin host had no slot free of demand misses.",
            ),
            breaker: c(
                "prescient_prefetch_breaker_total",
                "Prefetches not sent: the route's circuit breaker was open.",
            ),
            success_ratio: f(
                "prescient_prefetch_success_ratio",
                "Successful over processed prefetches since start.",
            ),
            wait: hist(
                "prescient_prefetch_wait_seconds",
                "Time a prefetch waited in the queue.",
                ms.clone(),
            ),
            fetch: hist(
                "prescient_prefetch_fetch_seconds",
                "Time a prefetch took: origin request and store.",
                ms.clone(),
            ),
            lead: hist(
                "prescient_prefetch_lead_time_seconds",
                "Time from a prefetch landing to its first demand read.",
                vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0],
            ),
            lag: hist(
                "prescient_prefetch_prediction_lag_seconds",
                "Time from a read reaching the tracker to its predictions reaching the scheduler.",
                ms,
            ),
            decisions: vec(
                "prescient_prefetch_scheduled_total",
                "Predictions by what the scheduler did with them.",
                "decision",
            ),
            outcomes: vec(
                "prescient_prefetch_outcomes_total",
                "Issued prefetches by how they ended: useful, late, wasted_evicted, wasted_expired, wasted_overwritten, wasted_unused.",
                "class",
            ),
            issued: c(
                "prescient_prefetch_issued_total",
                "Prefetches issued (answered by the origin, or joined by a demand read).",
            ),
            queue_size: g("prescient_prefetch_queue_size", "Keys queued for prefetching."),
            queue_events: vec(
                "prescient_prefetch_queue_total",
                "Queue events: put, dropped_full, dropped_duplicate, dropped_cleared, expired, served.",
                "event",
            ),
            threshold: f(
                "prescient_prefetch_threshold",
                "The live fetch threshold (probability).",
            ),
            precision: f(
                "prescient_prefetch_precision_ratio",
                "Useful over closed prefetches since start.",
            ),
            coverage: f(
                "prescient_prefetch_coverage_ratio",
                "Useful prefetches over the misses there would have been without prefetching.",
            ),
            load: f(
                "prescient_prefetch_load_factor",
                "Origin requests over the misses there would have been without prefetching (the controller's smoothed estimate).",
            ),
            space_guard: g(
                "prescient_prefetch_space_guard",
                "1 while the store is too full to prefetch into (it cannot evict).",
            ),
            enabled: g("prescient_prefetch_enabled", "1 while prefetching is on."),
            predictions_dropped: c(
                "prescient_prefetch_predictions_dropped_total",
                "Reads' predictions dropped because the scheduler's channel was full.",
            ),
        }
    }
}

/// The prefetch pipeline. One per proxy, when origin routes and tracking are configured.
pub struct Prefetcher {
    /// The origin its jobs fetch through, and its epoch (replaced by a reload).
    bound: ArcSwap<Bound>,
    up: Arc<Upstream>,
    tracker: Arc<Tracker>,
    live: Mutex<Live>,
    enabled: AtomicBool,
    /// The live fetch threshold (f64 bits).
    threshold: AtomicU64,
    queue: Mutex<Queue>,
    ready: Notify,
    ledger: Mutex<Ledger>,
    /// Open ledger entries (the read path looks before it locks).
    open: AtomicUsize,
    controller: Mutex<Controller>,
    space_full: AtomicBool,
    bucket: Mutex<Bucket>,
    backoff: Mutex<Backoff>,
    wasted: Mutex<lru::LruCache<Bytes, Instant>>,
    workers: AtomicUsize,
    /// Where the last sweep left the counters the controller reads.
    last: Mutex<Feedback>,
    stats: Stats,
    shutdown: CancellationToken,
    /// Overrides the clock's hour (tests over a simulated day).
    hour_override: Mutex<Option<u32>>,
    /// The tracker's end of the scheduler's channel (to tell how much waits in it).
    sink: mpsc::Sender<Predicted>,
    /// Reads' predictions the scheduler has taken but not finished with.
    scheduling: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Prefetcher {
    /// Starts the pipeline: the scheduler, the workers and the sweep, attached to the tracker.
    pub fn start(
        s: &Settings,
        origin: Arc<Origin>,
        up: Arc<Upstream>,
        tracker: Arc<Tracker>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Arc<Prefetcher> {
        let live = Live::of(s);
        let start = match live.threshold {
            Threshold::Fixed(t) => t,
            Threshold::Adaptive => Controller::new(live.budget).threshold(),
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        let p = Arc::new(Prefetcher {
            sink: tx.clone(),
            scheduling: AtomicUsize::new(0),
            queue: Mutex::new(Queue::new(live.queue_max, live.max_age)),
            controller: Mutex::new(Controller::new(live.budget)),
            bucket: Mutex::new(Bucket {
                tokens: 1.0,
                last: Instant::now(),
            }),
            live: Mutex::new(live),
            enabled: AtomicBool::new(s.enabled),
            threshold: AtomicU64::new(start.to_bits()),
            ready: Notify::new(),
            ledger: Mutex::new(Ledger::new(LEDGER_MAX)),
            open: AtomicUsize::new(0),
            space_full: AtomicBool::new(false),
            backoff: Mutex::new(Backoff::default()),
            wasted: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(WASTE_KEYS).expect("non-zero"),
            )),
            workers: AtomicUsize::new(0),
            last: Mutex::new(Feedback::default()),
            stats: Stats::new(registry),
            bound: ArcSwap::from_pointee(Bound { epoch: 0, origin }),
            up,
            tracker: tracker.clone(),
            shutdown,
            hour_override: Mutex::new(None),
        });
        p.stats.enabled.set(i64::from(s.enabled));
        p.stats.threshold.set(start);
        tracker.set_sink(tx);
        tokio::spawn(p.clone().schedule(rx));
        tokio::spawn(p.clone().sweep());
        p.set_workers(s.num_workers);
        p
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The live fetch threshold.
    pub fn threshold(&self) -> f64 {
        f64::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    fn hour(&self, utc: bool) -> u32 {
        lock(&self.hour_override).unwrap_or_else(|| hours::hour_now(utc))
    }

    /// The weight of the hour now.
    pub fn weight(&self) -> f64 {
        let l = lock(&self.live);
        l.hours.at(self.hour(l.utc))
    }

    /// Pins the hour of day (tests over a simulated day); None goes back to the clock.
    pub fn pin_hour(&self, hour: Option<u32>) {
        *lock(&self.hour_override) = hour;
    }

    /// Runs more workers, or lets the ones past `n` end after their current job.
    fn set_workers(self: &Arc<Self>, n: usize) {
        let before = self.workers.swap(n, Ordering::Relaxed);
        for i in before..n {
            tokio::spawn(self.clone().work(i));
        }
        self.ready.notify_waiters();
    }

    // ---- the read path's hooks ----

    /// A demand read found `key` in the store (a routed GET's hit).
    pub fn note_hit(&self, key: &[u8]) {
        if self.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        let lead = lock(&self.ledger).read(key, Instant::now());
        if let Some(lead) = lead {
            self.stats.lead.observe(lead.as_secs_f64());
            self.publish_outcomes();
        }
    }

    /// An MGET's reply: its routed keys whose elements are not nil were found.
    pub fn note_hits(&self, raw: &[u8], keys: &[Bytes], routes: &[Option<usize>]) {
        if self.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(spans) = crate::compression::reply::array_elements(raw) else {
            return;
        };
        for ((&(s, e), key), route) in spans.iter().zip(keys).zip(routes) {
            if route.is_some() && !crate::origin::is_nil(&raw[s..e]) {
                self.note_hit(key);
            }
        }
    }

    /// A client wrote `key`.
    pub fn note_write(&self, key: &[u8]) {
        if self.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        lock(&self.ledger).written(key);
        self.publish_outcomes();
    }

    // ---- the scheduler ----

    /// What to do with one prediction, before the store is asked; `fetches` counts the keys
    /// this read already decided to fetch.
    fn look(&self, key: &[u8], p: f64, live: &Live, weight: f64, fetches: &mut usize) -> Look {
        let thr = self.threshold();
        let touch = |d| {
            if p >= live.touch {
                Look::Done(Decision::Touch)
            } else {
                Look::Done(d)
            }
        };
        if p < thr {
            return touch(Decision::BelowThreshold);
        }
        if *fetches >= live.top_n {
            return touch(Decision::OverLimit);
        }
        let bound = self.bound.load();
        let Some(route) = bound.origin.prefetch_route_for(key) else {
            return touch(Decision::NoRoute);
        };
        if lock(&self.queue).contains(key) {
            return Look::Done(Decision::Queued);
        }
        if bound.origin.in_flight(key) || self.open_flying(key) {
            return Look::Done(Decision::InFlight);
        }
        if let Some(&at) = lock(&self.wasted).peek(key) {
            if at.elapsed() < WASTE_MEMORY {
                return Look::Done(Decision::RecentlyWasted);
            }
        }
        *fetches += 1;
        Look::Check {
            route,
            epoch: bound.epoch,
            priority: p * weight,
        }
    }

    fn open_flying(&self, key: &[u8]) -> bool {
        self.open.load(Ordering::Relaxed) > 0 && lock(&self.ledger).is_open(key)
    }

    fn decided(&self, d: Decision) {
        self.stats.decisions.with_label_values(&[d.name()]).inc();
    }

    async fn schedule(self: Arc<Self>, mut rx: mpsc::Receiver<Predicted>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut client = Internal::new(self.up.clone());
        let mut dropped = 0;
        loop {
            let got = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                _ = self.shutdown.cancelled() => 0,
            };
            if got == 0 {
                return;
            }
            self.scheduling.store(got, Ordering::Relaxed);
            self.schedule_batch(&mut batch, &mut client, &mut dropped)
                .await;
            self.scheduling.store(0, Ordering::Relaxed);
        }
    }

    /// Predictions waiting for the scheduler or being scheduled, and prefetches queued or in
    /// flight: 0 when the pipeline is quiet.
    pub fn pending(&self) -> usize {
        let waiting = self.sink.max_capacity() - self.sink.capacity();
        let flying = lock(&self.ledger).flying();
        waiting + self.scheduling.load(Ordering::Relaxed) + lock(&self.queue).len() + flying
    }

    async fn schedule_batch(
        &self,
        batch: &mut Vec<Predicted>,
        client: &mut Internal,
        dropped: &mut u64,
    ) {
        let now = Instant::now();
        for p in batch.iter() {
            self.stats
                .lag
                .observe(now.saturating_duration_since(p.at).as_secs_f64());
        }
        let d = self.tracker.sink_dropped();
        self.stats.predictions_dropped.inc_by(d - *dropped);
        *dropped = d;
        if !self.enabled() {
            let n: usize = batch.iter().map(|p| p.candidates.len()).sum();
            self.stats
                .decisions
                .with_label_values(&[Decision::Off.name()])
                .inc_by(n as u64);
            batch.clear();
            return;
        }
        let live = lock(&self.live).clone();
        let weight = live.hours.at(self.hour(live.utc));
        let mut checks: Vec<(Bytes, usize, f64, u64)> = Vec::new();
        let mut touches: Vec<Bytes> = Vec::new();
        for p in batch.drain(..) {
            let mut fetches = 0;
            for (key, prob) in p.candidates {
                match self.look(&key, prob, &live, weight, &mut fetches) {
                    Look::Check {
                        route,
                        epoch,
                        priority,
                    } => match checks.iter_mut().find(|c| c.0 == key) {
                        Some(c) => c.2 = c.2.max(priority),
                        None => checks.push((key, route, priority, epoch)),
                    },
                    Look::Done(Decision::Touch) => {
                        self.decided(Decision::Touch);
                        touches.push(key);
                    }
                    Look::Done(d) => self.decided(d),
                }
            }
        }
        if self.space_full.load(Ordering::Relaxed) {
            for _ in &checks {
                self.decided(Decision::Space);
            }
            checks.clear();
        }
        if checks.is_empty() && touches.is_empty() {
            return;
        }
        let mut cmds: Vec<Vec<Bytes>> = checks
            .iter()
            .map(|(k, _, _, _)| vec![Bytes::from_static(b"EXISTS"), k.clone()])
            .collect();
        if !touches.is_empty() {
            touches.sort();
            touches.dedup();
            let mut t = vec![Bytes::from_static(b"TOUCH")];
            t.extend(touches);
            cmds.push(t);
        }
        let replies = match client.pipeline(&cmds).await {
            Ok(r) => r,
            Err(_) => {
                // A connection that broke (or was not up yet): once more on a fresh one;
                // if the store is away, nothing is queued.
                *client = Internal::new(self.up.clone());
                match client.pipeline(&cmds).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "prefetch scheduler: the store did not answer");
                        *client = Internal::new(self.up.clone());
                        return;
                    }
                }
            }
        };
        let now = Instant::now();
        let mut queued = 0;
        {
            let mut q = lock(&self.queue);
            for ((key, route, priority, epoch), reply) in checks.into_iter().zip(&replies) {
                if &reply[..] != b":0\r\n" {
                    self.decided(Decision::Cached);
                    continue;
                }
                self.decided(Decision::Fetch);
                if q.put(Job {
                    key,
                    route,
                    epoch,
                    priority,
                    queued: now,
                }) {
                    queued += 1;
                }
            }
            self.publish_queue(&q);
        }
        for _ in 0..queued {
            self.ready.notify_one();
        }
    }

    fn publish_queue(&self, q: &Queue) {
        self.stats.queue_size.set(q.len() as i64);
        let s = q.stats;
        for (event, n) in [
            ("put", s.put),
            ("dropped_full", s.dropped_full),
            ("dropped_duplicate", s.dropped_duplicate),
            ("dropped_cleared", s.dropped_cleared),
            ("expired", s.expired),
            ("served", s.served),
        ] {
            let c = self.stats.queue_events.with_label_values(&[event]);
            c.inc_by(n - c.get());
        }
    }

    // ---- the workers ----

    /// The next job, once there is one and it may go (rate, back-off); None to end.
    async fn next_job(&self, index: usize) -> Option<Job> {
        loop {
            if self.shutdown.is_cancelled() || index >= self.workers.load(Ordering::Relaxed) {
                return None;
            }
            // Backing off: jobs stay queued (and age there) meanwhile.
            let until = lock(&self.backoff).until;
            if let Some(t) = until.filter(|t| *t > Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => {}
                    _ = self.shutdown.cancelled() => return None,
                }
                continue;
            }
            let notified = self.ready.notified();
            let job = if self.enabled() {
                let mut q = lock(&self.queue);
                let job = q.pop(Instant::now());
                self.publish_queue(&q);
                job
            } else {
                None
            };
            let Some(job) = job else {
                tokio::select! {
                    _ = notified => {}
                    _ = self.shutdown.cancelled() => return None,
                    // A wake-up now and then: a notification can go to a worker that ended.
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            };
            self.take_token().await;
            return Some(job);
        }
    }

    /// Waits for a token of the workers' bucket (`max_requests_per_second` x the hour's
    /// weight). Cache warming takes its tokens here too, so both together keep to the rate.
    pub async fn take_token(&self) {
        loop {
            let rate = {
                let l = lock(&self.live);
                l.rate * l.hours.at(self.hour(l.utc))
            };
            if rate <= 0.0 {
                // An hour weighted 0: no prefetching now.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let taken = lock(&self.bucket).take(rate, Instant::now());
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    async fn work(self: Arc<Self>, index: usize) {
        while let Some(job) = self.next_job(index).await {
            self.run(job).await;
        }
    }

    /// Fetches one job's key and accounts for it.
    async fn run(&self, job: Job) {
        let started = Instant::now();
        self.stats
            .wait
            .observe(started.saturating_duration_since(job.queued).as_secs_f64());
        let bound = self.bound.load_full();
        if bound.epoch != job.epoch {
            // Queued for an origin a reload replaced: its route may mean another now.
            return;
        }
        if !bound.origin.route_available(job.route) {
            self.stats.breaker.inc();
            return;
        }
        if !lock(&self.ledger).start(&job.key) {
            self.decided(Decision::InFlight);
            return;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let done = bound.origin.prefetch(job.route, job.key.clone()).await;
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        let key = &job.key;
        match done {
            None => ledger.failed(key),
            Some(p) => {
                self.stats
                    .fetch
                    .observe(now.duration_since(started).as_secs_f64());
                let skipped =
                    matches!(&p.found, Found::Failed(e) if e == crate::origin::client::SKIPPED);
                if skipped {
                    self.stats.skipped.inc();
                } else {
                    self.stats.processed.inc();
                }
                match &p.found {
                    Found::Failed(_) => {
                        if !skipped {
                            self.stats.failed.inc();
                            lock(&self.backoff).failed(now);
                        }
                        match p.late {
                            true => ledger.late(key),
                            false => ledger.failed(key),
                        }
                    }
                    found => {
                        self.stats.successful.inc();
                        lock(&self.backoff).succeeded();
                        if p.late {
                            ledger.late(key);
                        } else if matches!(found, Found::NotFound) {
                            ledger.ended_wasted(key, Wasted::Unused);
                        } else if !p.stored {
                            ledger.ended_wasted(key, Wasted::Overwritten);
                        } else {
                            ledger.landed(key, now, now + p.kept);
                        }
                    }
                }
                let (ok, all) = (self.stats.successful.get(), self.stats.processed.get());
                self.stats.success_ratio.set(ok as f64 / all.max(1) as f64);
            }
        }
        self.open.store(ledger.open(), Ordering::Relaxed);
        drop(ledger);
        self.publish_outcomes();
    }

    fn publish_outcomes(&self) {
        let c = lock(&self.ledger).counts;
        let set = |class: &str, n: u64| {
            let m = self.stats.outcomes.with_label_values(&[class]);
            m.inc_by(n.saturating_sub(m.get()));
        };
        set("useful", c.useful);
        set("late", c.late);
        set("wasted_evicted", c.evicted);
        set("wasted_expired", c.expired);
        set("wasted_overwritten", c.overwritten);
        set("wasted_unused", c.unused);
        self.stats
            .issued
            .inc_by(c.issued.saturating_sub(self.stats.issued.get()));
    }

    // ---- the sweep ----

    async fn sweep(self: Arc<Self>) {
        let mut client = Internal::new(self.up.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => break,
            }
            if self.sweep_once(&mut client).await.is_err() {
                client = Internal::new(self.up.clone());
            }
        }
        let mut l = lock(&self.ledger);
        l.forget_landed();
        self.open.store(l.open(), Ordering::Relaxed);
    }

    /// One sweep: expiries, evictions, the controller, the space guard.
    pub async fn sweep_once(&self, client: &mut Internal) -> Result<(), ()> {
        let now = Instant::now();
        let expired = lock(&self.ledger).expire(now);
        self.remember_wasted(expired, now);
        let landed = lock(&self.ledger).landed_keys(EVICTION_CHECKS);
        if !landed.is_empty() {
            let cmds: Vec<Vec<Bytes>> = landed
                .iter()
                .map(|k| vec![Bytes::from_static(b"EXISTS"), k.clone()])
                .collect();
            let replies = client.pipeline(&cmds).await.map_err(|_| ())?;
            let now = Instant::now();
            let mut gone = Vec::new();
            {
                let mut l = lock(&self.ledger);
                for (k, r) in landed.into_iter().zip(replies) {
                    if &r[..] == b":0\r\n" && l.evicted(&k, now) {
                        gone.push(k);
                    }
                }
                self.open.store(l.open(), Ordering::Relaxed);
            }
            self.remember_wasted(gone, now);
        }
        self.publish_outcomes();
        self.adapt();
        self.check_space(client).await
    }

    fn remember_wasted(&self, keys: Vec<Bytes>, now: Instant) {
        if keys.is_empty() {
            return;
        }
        let mut w = lock(&self.wasted);
        for k in keys {
            w.put(k, now);
        }
    }

    /// Feeds the controller what happened since the last sweep.
    fn adapt(&self) {
        let c = lock(&self.ledger).counts;
        let now = Feedback {
            misses: self
                .bound
                .load()
                .origin
                .metrics
                .misses
                .load(Ordering::Relaxed),
            issued: c.issued,
            used: c.useful,
            late: c.late,
        };
        let delta = {
            let mut last = lock(&self.last);
            let d = Feedback {
                misses: now.misses.saturating_sub(last.misses),
                issued: now.issued.saturating_sub(last.issued),
                used: now.used.saturating_sub(last.used),
                late: now.late.saturating_sub(last.late),
            };
            *last = now;
            d
        };
        let live = lock(&self.live).clone();
        let weight = live.hours.at(self.hour(live.utc));
        let mut ctl = lock(&self.controller);
        ctl.set_budget(1.0 + (live.budget - 1.0) * weight);
        let t = ctl.observe(delta);
        if live.threshold == Threshold::Adaptive {
            self.threshold.store(t.to_bits(), Ordering::Relaxed);
            self.stats.threshold.set(t);
        }
        self.stats.load.set(ctl.load);
        let closed = c.closed();
        self.stats
            .precision
            .set(c.useful as f64 / closed.max(1) as f64);
        let base = now.misses + c.useful;
        self.stats
            .coverage
            .set(c.useful as f64 / base.max(1) as f64);
    }

    /// The space guard: the store's memory and eviction policy (INFO memory, keyspace).
    async fn check_space(&self, client: &mut Internal) -> Result<(), ()> {
        let info =
            |section: &'static [u8]| vec![Bytes::from_static(b"INFO"), Bytes::from_static(section)];
        let replies = client
            .pipeline(&[info(b"memory"), info(b"keyspace")])
            .await
            .map_err(|_| ())?;
        let text: String = replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
        let (used, max) = (
            num("used_memory").unwrap_or(0.0),
            num("maxmemory").unwrap_or(0.0),
        );
        let policy = field("maxmemory_policy").unwrap_or_default();
        // db0:keys=N,expires=M,avg_ttl=T
        let (keys, expires) = field("db0").map_or((0.0, 0.0), |v| {
            let get = |k: &str| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (get("keys"), get("expires"))
        });
        let cannot_evict =
            policy == "noeviction" || (policy.starts_with("volatile") && expires < keys * 0.1);
        let threshold = lock(&self.live).space;
        let full = max > 0.0 && cannot_evict && used >= threshold * max;
        if full != self.space_full.swap(full, Ordering::Relaxed) {
            tracing::info!(
                used,
                max,
                policy,
                "prefetch space guard {}",
                if full {
                    "on: prefetching paused"
                } else {
                    "off"
                }
            );
        }
        self.stats.space_guard.set(i64::from(full));
        Ok(())
    }

    // ---- the operator's face ----

    /// `PROXY PREFETCH ON|OFF|CLEAR|STATS|CONFIG GET|CONFIG SET`, `PROXY PREDICT`, `PROXY
    /// WARMUP`.
    pub async fn command(self: &Arc<Self>, args: &[Bytes]) -> Value {
        let arg = |i: usize| {
            args.get(i)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        };
        match (arg(1).as_deref(), arg(2).as_deref(), args.len()) {
            (Some("prefetch"), Some("on"), 3) => {
                self.set_enabled(true);
                Value::ok()
            }
            (Some("prefetch"), Some("off"), 3) => {
                self.set_enabled(false);
                Value::ok()
            }
            (Some("prefetch"), Some("clear"), 3) => {
                let n = {
                    let mut q = lock(&self.queue);
                    let n = q.clear();
                    self.publish_queue(&q);
                    n
                };
                Value::Int(n as i64)
            }
            (Some("prefetch"), Some("stats"), 3) => Value::Verbatim(
                self.stats()
                    .into_iter()
                    .map(|(k, v)| format!("prefetch_{k}:{v}\r\n"))
                    .collect(),
            ),
            (Some("prefetch"), Some("config"), 5) if arg(3).as_deref() == Some("get") => {
                let pattern = arg(4).unwrap_or_default();
                Value::Map(
                    self.config()
                        .into_iter()
                        .filter(|(k, _)| {
                            crate::redis_glob::matches_key(pattern.as_bytes(), k.as_bytes())
                        })
                        .map(|(k, v)| (Value::text(k), Value::text(v)))
                        .collect(),
                )
            }
            (Some("prefetch"), Some("config"), 6) if arg(3).as_deref() == Some("set") => {
                let value = String::from_utf8_lossy(&args[5]).into_owned();
                match self.set(&arg(4).unwrap_or_default(), &value) {
                    Ok(()) => Value::ok(),
                    Err(e) => Value::err(format!("ERR {e}")),
                }
            }
            (Some("predict"), _, 3 | 4) => match count(args.get(3), 10) {
                Ok(n) => self.predict(&args[2], n).await,
                Err(e) => e,
            },
            (Some("warmup"), _, 2..=4) => {
                let n = match count(args.get(2), 20) {
                    Ok(n) => n,
                    Err(e) => return e,
                };
                let min = match args.get(3).map(|a| String::from_utf8_lossy(a).parse::<f64>()) {
                    None => None,
                    Some(Ok(p)) if (0.0..=1.0).contains(&p) => Some(p),
                    Some(_) => return Value::err("ERR min_confidence must be a number from 0 to 1"),
                };
                self.warmup(n, min).await
            }
            _ => Value::err(
                "ERR PROXY PREFETCH ON|OFF|CLEAR|STATS|CONFIG GET <pattern>|CONFIG SET <key> <value>, PROXY PREDICT <key> [count], PROXY WARMUP [n] [min_confidence]",
            ),
        }
    }

    /// Fetches through `origin` from now on (a reload changed the routes): jobs queued for
    /// the old one are dropped, as their routes may mean others now.
    pub fn set_origin(&self, origin: Arc<Origin>) {
        let epoch = self.bound.load().epoch + 1;
        self.bound.store(Arc::new(Bound { epoch, origin }));
        let mut q = lock(&self.queue);
        q.clear();
        self.publish_queue(&q);
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        self.stats.enabled.set(i64::from(on));
        if !on {
            let mut q = lock(&self.queue);
            q.clear();
            self.publish_queue(&q);
        }
        tracing::info!(
            enabled = on,
            "prefetching turned {}",
            if on { "on" } else { "off" }
        );
    }

    /// `PROXY PREFETCH CONFIG GET`'s pairs.
    pub fn config(&self) -> Vec<(String, String)> {
        let l = lock(&self.live);
        vec![
            ("enabled".into(), self.enabled().to_string()),
            ("min_probability".into(), l.threshold.describe()),
            ("min_confidence".into(), l.threshold.describe()),
            ("touch_probability".into(), l.touch.to_string()),
            ("top_n".into(), l.top_n.to_string()),
            ("max_prefetch_per_schedule".into(), l.top_n.to_string()),
            ("max_load_factor".into(), l.budget.to_string()),
            ("rate".into(), l.rate.to_string()),
            ("max_requests_per_second".into(), l.rate.to_string()),
            ("workers".into(), l.workers.to_string()),
            ("num_workers".into(), l.workers.to_string()),
            ("hour_weights".into(), l.hours.describe()),
            ("hour_weights_utc".into(), l.utc.to_string()),
            ("cache_space_threshold".into(), l.space.to_string()),
            ("queue_max_size".into(), l.queue_max.to_string()),
            ("max_age_ms".into(), l.max_age.as_millis().to_string()),
        ]
    }

    /// `PROXY PREFETCH CONFIG SET`: a key (or its alias) and a value; the error says why not.
    pub fn set(self: &Arc<Self>, key: &str, value: &str) -> Result<(), String> {
        let num = |lo: f64, hi: f64| -> Result<f64, String> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| format!("'{value}' for {key} must be a number from {lo} to {hi}"))
        };
        let mut workers = None;
        {
            let mut l = lock(&self.live);
            match key {
                "enabled" => match value {
                    "true" | "yes" | "1" | "on" => self.set_enabled(true),
                    "false" | "no" | "0" | "off" => self.set_enabled(false),
                    _ => return Err(format!("'{value}' for enabled must be true or false")),
                },
                "min_probability" | "min_confidence" | "confidence" => {
                    l.threshold = Threshold::parse(value)?;
                    let t = match l.threshold {
                        Threshold::Fixed(t) => t,
                        Threshold::Adaptive => lock(&self.controller).threshold(),
                    };
                    self.threshold.store(t.to_bits(), Ordering::Relaxed);
                    self.stats.threshold.set(t);
                }
                "touch_probability" => l.touch = num(0.0, 1.0)?,
                "top_n" | "top" | "max_prefetch_per_schedule" => {
                    l.top_n = num(1.0, 1000.0)? as usize
                }
                "max_load_factor" => l.budget = num(1.0, 1000.0)?,
                "rate" | "max_requests_per_second" => l.rate = num(0.001, 1e6)?,
                "workers" | "num_workers" => {
                    l.workers = num(1.0, 1024.0)? as usize;
                    workers = Some(l.workers);
                }
                "cache_space_threshold" => l.space = num(0.01, 1.0)?,
                "queue_max_size" => {
                    l.queue_max = num(1.0, 1e7)? as usize;
                    lock(&self.queue).set_limits(l.queue_max, l.max_age);
                }
                "max_age_ms" => {
                    l.max_age = Duration::from_millis(num(1.0, 1e9)? as u64);
                    lock(&self.queue).set_limits(l.queue_max, l.max_age);
                }
                "hour_weights" => l.hours = parse_hours(value)?,
                "hour_weights_utc" => {
                    l.utc = match value {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(format!("'{value}' must be true or false")),
                    }
                }
                _ => return Err(format!("unknown prefetch setting '{key}'")),
            }
        }
        if let Some(n) = workers {
            self.set_workers(n);
        }
        tracing::info!(key, value, "prefetch setting changed");
        Ok(())
    }

    /// `PROXY PREFETCH STATS`: name and value pairs.
    pub fn stats(&self) -> Vec<(&'static str, String)> {
        let (c, open) = {
            let l = lock(&self.ledger);
            (l.counts, l.open())
        };
        let q = lock(&self.queue);
        let qs = q.stats;
        let s = &self.stats;
        let avg = |h: &Histogram| {
            let n = h.get_sample_count();
            if n == 0 {
                0.0
            } else {
                h.get_sample_sum() / n as f64 * 1000.0
            }
        };
        let ctl = lock(&self.controller);
        let misses = self
            .bound
            .load()
            .origin
            .metrics
            .misses
            .load(Ordering::Relaxed);
        let mode = lock(&self.live).threshold.describe();
        let mut v = vec![
            ("enabled", u8::from(self.enabled()).to_string()),
            ("issued", c.issued.to_string()),
            ("useful", c.useful.to_string()),
            ("late", c.late.to_string()),
            ("wasted_evicted", c.evicted.to_string()),
            ("wasted_expired", c.expired.to_string()),
            ("wasted_overwritten", c.overwritten.to_string()),
            ("wasted_unused", c.unused.to_string()),
            ("open", open.to_string()),
            ("threshold", format!("{:.2}", self.threshold())),
            ("threshold_mode", mode),
            ("queue_size", q.len().to_string()),
            ("queue_put", qs.put.to_string()),
            ("queue_dropped_full", qs.dropped_full.to_string()),
            ("queue_dropped_duplicate", qs.dropped_duplicate.to_string()),
            ("queue_dropped_cleared", qs.dropped_cleared.to_string()),
            ("queue_expired", qs.expired.to_string()),
            ("queue_served", qs.served.to_string()),
            ("processed", s.processed.get().to_string()),
            ("successful", s.successful.get().to_string()),
            ("failed", s.failed.get().to_string()),
            ("skipped", s.skipped.get().to_string()),
            ("breaker_refused", s.breaker.get().to_string()),
            (
                "success_rate",
                format!(
                    "{:.4}",
                    s.successful.get() as f64 / s.processed.get().max(1) as f64
                ),
            ),
            ("avg_wait_ms", format!("{:.2}", avg(&s.wait))),
            ("avg_fetch_ms", format!("{:.2}", avg(&s.fetch))),
            ("avg_lead_ms", format!("{:.2}", avg(&s.lead))),
            ("avg_prediction_lag_ms", format!("{:.3}", avg(&s.lag))),
            (
                "predictions_dropped",
                s.predictions_dropped.get().to_string(),
            ),
            ("demand_misses", misses.to_string()),
            (
                "precision",
                format!("{:.4}", c.useful as f64 / c.closed().max(1) as f64),
            ),
            (
                "coverage",
                format!("{:.4}", c.useful as f64 / (misses + c.useful).max(1) as f64),
            ),
            ("load_factor", format!("{:.4}", ctl.load)),
            (
                "space_guard",
                u8::from(self.space_full.load(Ordering::Relaxed)).to_string(),
            ),
            ("hour_weight", self.weight().to_string()),
        ];
        for d in Decision::ALL {
            let n = s.decisions.with_label_values(&[d.name()]).get();
            v.push((scheduled_name(d), n.to_string()));
        }
        v
    }

    /// `PROXY PREDICT <key> [n]`: what the model expects after `key`, and what the scheduler
    /// would do with each prediction now, and why.
    async fn predict(&self, key: &Bytes, n: usize) -> Value {
        let predictions = self.tracker.predict(key, n);
        let live = lock(&self.live).clone();
        let weight = live.hours.at(self.hour(live.utc));
        let mut fetches = 0;
        let mut rows = Vec::new();
        let mut client = Internal::new(self.up.clone());
        for p in predictions {
            let d = if !self.enabled() {
                Decision::Off
            } else {
                match self.look(&p.key, p.probability, &live, weight, &mut fetches) {
                    Look::Done(d) => d,
                    Look::Check { .. } if self.space_full.load(Ordering::Relaxed) => {
                        Decision::Space
                    }
                    Look::Check { .. } => {
                        let exists = [Bytes::from_static(b"EXISTS"), p.key.clone()];
                        match client.call(&exists).await {
                            Ok(r) if &r[..] == b":0\r\n" => Decision::Fetch,
                            Ok(_) => Decision::Cached,
                            Err(_) => Decision::Off,
                        }
                    }
                }
            };
            rows.push(Value::Array(vec![
                Value::Bulk(p.key),
                Value::text(format!("{:.4}", p.probability)),
                Value::text(p.level.name()),
                Value::text(d.name()),
                Value::text(why(d, &live, self.threshold())),
            ]));
        }
        Value::Array(rows)
    }

    /// `PROXY WARMUP [n] [min_confidence]`: queues the keys the model expects next across the
    /// hot keys (each hot key and its likely successors) that are routed and not cached, up to
    /// `n`; answers with the keys queued.
    async fn warmup(&self, n: usize, min: Option<f64>) -> Value {
        match self.warm_up(n, min).await {
            Ok(keys) => Value::Array(keys.into_iter().map(Value::Bulk).collect()),
            Err(e) => Value::err(format!("ERR {e}")),
        }
    }

    /// Queues up to `n` hot keys and their likely successors (at `min` or the live threshold)
    /// that the store lacks; the keys queued. `PROXY WARMUP` and the HTTP API's.
    pub async fn warm_up(&self, n: usize, min: Option<f64>) -> Result<Vec<Bytes>, String> {
        let min = min.unwrap_or_else(|| self.threshold());
        let mut wanted: Vec<(Bytes, f64)> = Vec::new();
        let hot = self.tracker.hotkeys(n.max(10));
        let top = hot.first().map_or(1, |h| h.1.max(1)) as f64;
        for (key, reads) in &hot {
            // A hot key itself, weighted by how hot it is against the hottest.
            wanted.push((key.clone(), *reads as f64 / top));
            for p in self.tracker.predict(key, 10) {
                if p.probability >= min {
                    wanted.push((p.key, p.probability * *reads as f64 / top));
                }
            }
        }
        wanted.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut seen = std::collections::HashSet::new();
        wanted.retain(|(k, _)| seen.insert(k.clone()));
        let bound = self.bound.load_full();
        let routed: Vec<(Bytes, usize, f64)> = wanted
            .into_iter()
            .filter_map(|(k, p)| Some((k.clone(), bound.origin.prefetch_route_for(&k)?, p)))
            .collect();
        let mut client = Internal::new(self.up.clone());
        let cmds: Vec<Vec<Bytes>> = routed
            .iter()
            .map(|(k, _, _)| vec![Bytes::from_static(b"EXISTS"), k.clone()])
            .collect();
        let Ok(replies) = client.pipeline(&cmds).await else {
            return Err("the store did not answer".into());
        };
        let now = Instant::now();
        let mut out = Vec::new();
        {
            let mut q = lock(&self.queue);
            for ((key, route, p), r) in routed.into_iter().zip(replies) {
                if out.len() >= n {
                    break;
                }
                if &r[..] != b":0\r\n" || bound.origin.in_flight(&key) {
                    continue;
                }
                if q.put(Job {
                    key: key.clone(),
                    route,
                    epoch: bound.epoch,
                    priority: p,
                    queued: now,
                }) {
                    out.push(key);
                }
            }
            self.publish_queue(&q);
        }
        for _ in 0..out.len() {
            self.ready.notify_one();
        }
        Ok(out)
    }
}

fn scheduled_name(d: Decision) -> &'static str {
    match d {
        Decision::Fetch => "scheduled_fetch",
        Decision::Touch => "scheduled_touch",
        Decision::BelowThreshold => "scheduled_below_threshold",
        Decision::OverLimit => "scheduled_over_limit",
        Decision::NoRoute => "scheduled_no_route",
        Decision::Cached => "scheduled_cached",
        Decision::InFlight => "scheduled_in_flight",
        Decision::Queued => "scheduled_queued",
        Decision::RecentlyWasted => "scheduled_recently_wasted",
        Decision::Off => "scheduled_off",
        Decision::Space => "scheduled_space_guard",
    }
}

fn why(d: Decision, live: &Live, thr: f64) -> String {
    match d {
        Decision::Fetch => "not cached: would be queued for a worker".into(),
        Decision::Touch => format!(
            "below the fetch threshold {thr:.2} (or no prefetch route), at or above touch {}: kept warm if cached",
            live.touch
        ),
        Decision::BelowThreshold => format!("below the fetch threshold {thr:.2} and touch {}", live.touch),
        Decision::OverLimit => format!("past max_prefetch_per_schedule ({})", live.top_n),
        Decision::NoRoute => "no origin route with prefetch = true matches the key".into(),
        Decision::Cached => "already in the store".into(),
        Decision::InFlight => "a fill of the key is in flight, or it was prefetched and not read yet".into(),
        Decision::Queued => "already queued".into(),
        Decision::RecentlyWasted => "prefetched recently and not read: not again for 30 s".into(),
        Decision::Off => "prefetching is off (PROXY PREFETCH ON)".into(),
        Decision::Space => "the store is near maxmemory and cannot evict (space guard)".into(),
    }
}

/// `9-11=1.5,21-9=0.3` (CONFIG SET's form of `[prefetch.hour_weights]`); "" for none.
fn parse_hours(s: &str) -> Result<HourWeights, String> {
    let mut table = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (range, w) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not range=weight"))?;
        let w = w
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("'{part}': the weight is not a number"))?;
        table.insert(range.trim().to_string(), w);
    }
    HourWeights::parse(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_gives_rate_tokens_a_second() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 0.0,
            last: t0,
        };
        let mut taken = 0;
        // 10 simulated seconds at 5/s, asked every 10 ms.
        for i in 0..1000 {
            if b.take(5.0, t0 + Duration::from_millis(10 * i)).is_ok() {
                taken += 1;
            }
        }
        assert!((49..=51).contains(&taken), "{taken}");
        // After a pause the bucket holds a second's worth at most.
        let later = t0 + Duration::from_secs(60);
        let burst = (0..10).filter(|_| b.take(5.0, later).is_ok()).count();
        assert_eq!(burst, 5);
        assert_eq!(b.take(5.0, later), Err(Duration::from_millis(200)));
    }

    #[test]
    fn five_failures_in_a_row_back_off_and_a_success_resets() {
        let now = Instant::now();
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.failed(now);
        }
        assert!(b.until.is_none(), "four are not enough");
        b.failed(now);
        assert_eq!(b.until, Some(now + Duration::from_secs(1)));
        b.failed(now);
        assert_eq!(b.until, Some(now + Duration::from_secs(2)));
        for _ in 0..10 {
            b.failed(now);
        }
        assert_eq!(b.until, Some(now + Duration::from_secs(30)));
        b.succeeded();
        assert!(b.until.is_none() && b.failures == 0);
    }

    #[test]
    fn hour_weights_parse_in_config_set_form() {
        let w = parse_hours("9-11=1.5, 21-9=0.3").unwrap();
        assert_eq!((w.at(10), w.at(23), w.at(12)), (1.5, 0.3, 1.0));
        assert!(parse_hours("").unwrap().is_flat());
        assert!(parse_hours("9-11").is_err());
    }
}
