//! Background jobs beside the request path, on the same upstream and origin: cache warming,
//! view-count syncing, expiry sweeps and cleanup, correct with one instance or several in
//! front of one Redis.
//!
//! - The runner: each job has an id, a schedule (every N seconds; warming may be adaptive) and
//!   a state (running, last and next run, duration, outcome, runs, failures), shown by
//!   `PROXY JOBS`; `PROXY JOB RUN <id>` runs one now. Jobs stop after the clients drained
//!   ([`Jobs::stop`]), the count sync running one last time.
//! - Leadership (lease.rs): warming and cleanup are singletons: they run on the instance that
//!   holds the lease, and warming's writes carry its fencing token.
//! - The count sync (counters.rs) and the expiry sweeps (expiry.rs) run on every instance and
//!   share the work through atomic claims in the store.

pub mod counters;
pub mod expiry;
pub mod lease;
pub mod post;
pub mod settings;
pub mod tags;
pub mod warming;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};
pub use redis_protocol::resp2::types::OwnedFrame as Frame;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::protocol::Value;
use crate::upstream::{Internal, Upstream};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs one command on the store: its reply, or the error reply's text (or why there was no
/// reply) as Err.
pub async fn call(up: &Arc<Upstream>, args: &[Bytes]) -> Result<Frame, String> {
    let raw = Internal::new(up.clone())
        .call(args)
        .await
        .map_err(|e| e.to_string())?;
    frame(&raw)
}

/// Runs commands sent together; their replies (an error reply fails the lot).
pub async fn pipeline(up: &Arc<Upstream>, cmds: &[Vec<Bytes>]) -> Result<Vec<Frame>, String> {
    let raws = Internal::new(up.clone())
        .pipeline(cmds)
        .await
        .map_err(|e| e.to_string())?;
    raws.iter().map(|r| frame(r)).collect()
}

fn frame(raw: &[u8]) -> Result<Frame, String> {
    match redis_protocol::resp2::decode::decode(raw) {
        Ok(Some((Frame::Error(e), _))) => Err(e),
        Ok(Some((f, _))) => Ok(f),
        _ => Err("an unreadable reply from the store".into()),
    }
}

/// The bulk strings of an array reply, as text.
pub fn strings(f: Frame) -> Vec<String> {
    match f {
        Frame::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Frame::BulkString(b) | Frame::SimpleString(b) => {
                    Some(String::from_utf8_lossy(&b).into_owned())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Unix milliseconds as an RFC 3339 UTC time to the second (`2026-12-04T23:59:48Z`).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// What a job does.
enum Work {
    Warm(usize),
    Counters,
    Expiry(Arc<expiry::Sweep>),
    Cleanup,
}

#[derive(Default, Clone)]
struct State {
    running: bool,
    last_run: Option<u64>,
    next_run: Option<u64>,
    last_duration: Duration,
    last_outcome: String,
    runs: u64,
    failures: u64,
}

struct Job {
    id: String,
    kind: &'static str,
    singleton: bool,
    every: Duration,
    /// When set, schedules the job instead of `every`.
    cron: Option<cron::Schedule>,
    /// Runs at start rather than after the first interval.
    at_start: bool,
    work: Work,
    state: Mutex<State>,
    now: Notify,
}

/// The jobs' metrics, registered once (a reload replaces the jobs, not their series).
pub struct Metrics {
    runs: IntCounterVec,
    duration: HistogramVec,
    last_success: GaugeVec,
    leader: IntGauge,
    cleaned: IntCounterVec,
    used_memory: IntGauge,
    keys: IntGauge,
    /// The store's own counters (INFO stats), mirrored: (INFO field, counter, last seen).
    store: Vec<(
        &'static str,
        prometheus::IntCounter,
        std::sync::atomic::AtomicU64,
    )>,
    counters: counters::Metrics,
}

impl Metrics {
    pub fn new(r: &prometheus::Registry) -> Arc<Metrics> {
        use crate::metrics::register;
        Arc::new(Metrics {
            counters: counters::Metrics::new(r),
            runs: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "prescient_job_runs_total",
                        "Job runs by outcome (ok, error, fenced)",
                    ),
                    &["job", "outcome"],
                )
                .expect("metric"),
            ),
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("prescient_job_duration_seconds", "Job run durations")
                        .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
                    &["job"],
                )
                .expect("metric"),
            ),
            last_success: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "prescient_job_last_success_timestamp_seconds",
                        "When each job last succeeded (unix seconds)",
                    ),
                    &["job"],
                )
                .expect("metric"),
            ),
            leader: register(
                r,
                IntGauge::new(
                    "prescient_job_leader",
                    "1 while this instance holds the singleton jobs' lease",
                )
                .expect("metric"),
            ),
            cleaned: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "prescient_cleanup_removed_total",
                        "Bookkeeping entries the cleanup job removed, by kind",
                    ),
                    &["kind"],
                )
                .expect("metric"),
            ),
            used_memory: register(
                r,
                IntGauge::new(
                    "prescient_store_used_memory_bytes",
                    "The store's used_memory (INFO memory), read every few seconds",
                )
                .expect("metric"),
            ),
            keys: register(
                r,
                IntGauge::new(
                    "prescient_store_keys",
                    "Keys in the store's default database",
                )
                .expect("metric"),
            ),
            store: [
                (
                    "keyspace_hits",
                    "prescient_store_keyspace_hits_total",
                    "Reads that found their key (the store's keyspace_hits)",
                ),
                (
                    "keyspace_misses",
                    "prescient_store_keyspace_misses_total",
                    "Reads that missed (the store's keyspace_misses)",
                ),
                (
                    "evicted_keys",
                    "prescient_store_evicted_keys_total",
                    "Keys the store evicted under maxmemory",
                ),
                (
                    "expired_keys",
                    "prescient_store_expired_keys_total",
                    "Keys the store expired",
                ),
            ]
            .into_iter()
            .map(|(field, name, help)| {
                let c = register(r, prometheus::IntCounter::new(name, help).expect("metric"));
                (field, c, std::sync::atomic::AtomicU64::new(0))
            })
            .collect(),
        })
    }
}

/// How often the store's INFO is mirrored into metrics.
const STORE_STATS_EVERY: Duration = Duration::from_secs(5);

/// Whether `/ready` may answer 200 as far as warming is concerned: the critical tasks ran, or
/// their deadline passed.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    why: Mutex<String>,
}

impl Gate {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    pub fn why(&self) -> String {
        lock(&self.why).clone()
    }

    fn set(&self, open: bool, why: String) {
        *lock(&self.why) = why;
        self.open.store(open, Ordering::Relaxed);
    }
}

pub struct Jobs {
    pub instance: String,
    jobs: Vec<Arc<Job>>,
    lease: Option<Arc<lease::Lease>>,
    pub counters: Option<Arc<counters::Counters>>,
    pub warming: Option<Arc<warming::Warming>>,
    sweeps: Vec<Arc<expiry::Sweep>>,
    up: Arc<Upstream>,
    origin: Option<Arc<crate::origin::Origin>>,
    pub gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What the jobs are built from.
pub struct Parts {
    pub up: Arc<Upstream>,
    pub origin: Option<Arc<crate::origin::Origin>>,
    pub tracker: Arc<crate::tracking::tracker::Tracker>,
    pub prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
    pub metrics: Arc<Metrics>,
}

impl Jobs {
    /// Builds the configured jobs and starts them.
    pub fn start(s: &Settings, p: Parts) -> Arc<Jobs> {
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let ttl = Duration::from_millis(s.jobs.lease_ttl_ms);
        let metrics = p.metrics.clone();
        let mut jobs = Vec::new();
        let warming = (!s.warming.tasks.is_empty()).then(|| {
            Arc::new(warming::Warming::new(
                &s.warming.tasks,
                p.origin.clone(),
                p.tracker.clone(),
                p.prefetch.clone(),
                p.up.clone(),
                s.prefetch.max_requests_per_second,
            ))
        });
        if let Some(w) = &warming {
            for (i, t) in w.tasks.iter().enumerate() {
                jobs.push(
                    Job::new(
                        format!("warm:{}", t.cfg.name),
                        "warming",
                        true,
                        t.interval(std::time::Instant::now()),
                        true,
                        Work::Warm(i),
                    )
                    .with_cron(&t.cfg.cron),
                );
            }
        }
        let counters = (!s.counters.patterns.is_empty()).then(|| {
            Arc::new(counters::Counters::new(
                &s.counters,
                p.up.clone(),
                instance.clone(),
                ttl,
                metrics.counters.clone(),
            ))
        });
        if counters.as_ref().is_some_and(|c| c.active()) {
            jobs.push(Job::new(
                "counters".into(),
                "counters",
                false,
                Duration::from_secs(s.counters.interval_s),
                // At start: batches a crashed instance left are replayed at once.
                true,
                Work::Counters,
            ));
        }
        let sweeps: Vec<Arc<expiry::Sweep>> = s
            .expiry
            .sets
            .iter()
            .map(|e| Arc::new(expiry::Sweep::new(e, p.up.clone(), ttl)))
            .collect();
        for sw in &sweeps {
            jobs.push(
                Job::new(
                    format!("expiry:{}", sw.cfg.name),
                    "expiry",
                    false,
                    Duration::from_secs(sw.cfg.interval_s),
                    sw.cfg.cron.is_empty(),
                    Work::Expiry(sw.clone()),
                )
                .with_cron(&sw.cfg.cron),
            );
        }
        let tagged = s.origin.routes.iter().any(|r| !r.tags.is_empty())
            || s.warming.tasks.iter().any(|t| !t.tags.is_empty());
        if tagged || counters.is_some() {
            jobs.push(Job::new(
                "cleanup".into(),
                "cleanup",
                true,
                Duration::from_secs(s.jobs.cleanup_interval_s),
                false,
                Work::Cleanup,
            ));
        }
        let lease = jobs.iter().any(|j| j.singleton).then(|| {
            lease::Lease::new(p.up.clone(), instance.clone(), ttl, metrics.leader.clone())
        });
        let gate = Arc::new(Gate::default());
        let critical = s.warming.tasks.iter().any(|t| t.critical);
        gate.set(
            !critical,
            match critical {
                true => "critical warming tasks have not run yet".into(),
                false => String::new(),
            },
        );
        let j = Arc::new(Jobs {
            instance,
            jobs,
            lease,
            counters,
            warming,
            sweeps,
            up: p.up,
            origin: p.origin,
            gate,
            metrics,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        if let Some(l) = &j.lease {
            j.tasks.spawn(l.clone().run(j.stop.clone()));
        }
        for job in &j.jobs {
            j.tasks.spawn(j.clone().schedule(job.clone()));
        }
        j.tasks.spawn(j.clone().store_stats());
        if critical {
            j.tasks.spawn(
                j.clone()
                    .critical(Duration::from_secs(s.jobs.critical_deadline_s)),
            );
        }
        j
    }

    /// Stops every job (after the clients drained): running ones finish, the count sync runs
    /// once more, the lease is let go. At most `deadline`.
    pub async fn stop(&self, deadline: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let done = async {
            self.tasks.wait().await;
            if let Some(c) = &self.counters {
                if let Err(e) = c.sync().await {
                    tracing::warn!(error = %e, "final view count sync failed");
                }
            }
        };
        if tokio::time::timeout(deadline, done).await.is_err() {
            tracing::warn!("jobs did not stop within the shutdown deadline");
        }
    }

    /// Opens the ready gate when every critical task has run once, or at the deadline.
    async fn critical(self: Arc<Self>, deadline: Duration) {
        let end = Instant::now() + deadline;
        let critical: Vec<&Arc<Job>> = self.jobs.iter().filter(|j| self.is_critical(j)).collect();
        loop {
            let waiting: Vec<&str> = critical
                .iter()
                .filter(|j| !lock(&j.state).last_outcome.starts_with("ok"))
                .map(|j| j.id.as_str())
                .collect();
            if waiting.is_empty() {
                self.gate.set(true, String::new());
                return;
            }
            if Instant::now() >= end {
                let why = format!(
                    "critical warming not done within {}s: {}",
                    deadline.as_secs(),
                    waiting.join(", ")
                );
                tracing::warn!("{why}");
                self.gate.set(true, why);
                return;
            }
            self.gate.set(
                false,
                format!("waiting for critical warming: {}", waiting.join(", ")),
            );
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    async fn schedule(self: Arc<Self>, job: Arc<Job>) {
        let mut next = Instant::now()
            + match job.at_start {
                true => Duration::ZERO,
                false => self.interval(&job),
            };
        loop {
            lock(&job.state).next_run =
                Some(unix_ms() + next.saturating_duration_since(Instant::now()).as_millis() as u64);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = job.now.notified() => {}
            }
            let fence = match (&self.lease, job.singleton) {
                (Some(l), true) => match l.token() {
                    Some(t) => Some(t),
                    None => {
                        // A follower: the leader runs it. Look again soon, in case it dies.
                        lock(&job.state).last_outcome = "standby (another instance leads)".into();
                        next = Instant::now() + job.every.min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ => None,
            };
            let ok = self.run(&job, fence).await;
            next = Instant::now()
                + match ok || self.gate.is_open() || !self.is_critical(&job) {
                    true => self.interval(&job),
                    // A critical task that failed while it holds /ready: again soon.
                    false => job.every.min(Duration::from_secs(1)),
                };
        }
    }

    fn is_critical(&self, job: &Job) -> bool {
        match (&job.work, &self.warming) {
            (Work::Warm(i), Some(w)) => w.tasks[*i].cfg.critical,
            _ => false,
        }
    }

    fn interval(&self, job: &Job) -> Duration {
        if let Some(c) = &job.cron {
            let now = chrono::Utc::now();
            return c
                .after(&now)
                .next()
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::from_secs(3600));
        }
        match (&job.work, &self.warming) {
            (Work::Warm(i), Some(w)) => w.tasks[*i].interval(std::time::Instant::now()),
            _ => job.every,
        }
    }

    /// Runs a job once and records it; whether it succeeded.
    async fn run(&self, job: &Job, fence: Option<u64>) -> bool {
        lock(&job.state).running = true;
        let started = Instant::now();
        let at = unix_ms();
        let r = match &job.work {
            Work::Warm(i) => match &self.warming {
                Some(w) => w.run(*i, fence).await,
                None => Err("warming is not configured".into()),
            },
            Work::Counters => match &self.counters {
                Some(c) => c.sync().await,
                None => Ok("no counters".into()),
            },
            Work::Expiry(s) => s.run().await,
            Work::Cleanup => self.cleanup().await,
        };
        let took = started.elapsed();
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) if e.contains("FENCED") => "fenced",
            Err(_) => "error",
        };
        self.metrics
            .runs
            .with_label_values(&[job.id.as_str(), outcome])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[job.id.as_str()])
            .observe(took.as_secs_f64());
        if r.is_ok() {
            self.metrics
                .last_success
                .with_label_values(&[job.id.as_str()])
                .set(at as f64 / 1000.0);
        }
        let ok = r.is_ok();
        let mut s = lock(&job.state);
        s.running = false;
        s.runs += 1;
        s.last_run = Some(at);
        s.last_duration = took;
        s.last_outcome = match r {
            Ok(line) => format!("ok: {line}"),
            Err(e) => {
                s.failures += 1;
                tracing::warn!(job = %job.id, error = %e, "job failed");
                format!("{outcome}: {e}")
            }
        };
        ok
    }

    /// Mirrors the store's INFO counters, used memory and key count into metrics until stop
    /// (a counter that went back, a restarted store, counts again from its new value).
    async fn store_stats(self: Arc<Self>) {
        loop {
            let cmds = [
                vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"stats")],
                vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"memory")],
                vec![Bytes::from_static(b"DBSIZE")],
            ];
            if let Ok(replies) = pipeline(&self.up, &cmds).await {
                for r in replies {
                    match r {
                        Frame::BulkString(b) => self.mirror(&String::from_utf8_lossy(&b)),
                        Frame::Integer(n) => self.metrics.keys.set(n),
                        _ => {}
                    }
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(STORE_STATS_EVERY) => {}
            }
        }
    }

    fn mirror(&self, info: &str) {
        for line in info.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let Ok(v) = v.trim().parse::<u64>() else {
                continue;
            };
            if k == "used_memory" {
                self.metrics.used_memory.set(v as i64);
            }
            for (field, counter, last) in &self.metrics.store {
                if *field == k {
                    let before = last.swap(v, Ordering::Relaxed);
                    counter.inc_by(if v >= before { v - before } else { v });
                }
            }
        }
    }

    /// The cleanup job: tag-index entries and finished count batches whose keys are gone;
    /// reports the store's used_memory.
    async fn cleanup(&self) -> Result<String, String> {
        let tags = tags::clean(&self.up).await?;
        self.metrics
            .cleaned
            .with_label_values(&["tag"])
            .inc_by(tags);
        let mut batches = 0;
        let ids = strings(
            call(
                &self.up,
                &[
                    Bytes::from_static(b"ZRANGE"),
                    Bytes::from_static(counters::BATCHES.as_bytes()),
                    Bytes::from_static(b"0"),
                    Bytes::from_static(b"-1"),
                ],
            )
            .await?,
        );
        for id in ids {
            let key = Bytes::from(format!("{}{id}", counters::BATCH_PREFIX));
            // A batch's hash goes before its id (counters.rs): an id alone is finished.
            if call(&self.up, &[Bytes::from_static(b"EXISTS"), key]).await? == Frame::Integer(0) {
                let zrem = [
                    Bytes::from_static(b"ZREM"),
                    Bytes::from_static(counters::BATCHES.as_bytes()),
                    Bytes::from(id),
                ];
                if call(&self.up, &zrem).await? == Frame::Integer(1) {
                    batches += 1;
                }
            }
        }
        self.metrics
            .cleaned
            .with_label_values(&["count_batch"])
            .inc_by(batches);
        let info = call(
            &self.up,
            &[Bytes::from_static(b"INFO"), Bytes::from_static(b"memory")],
        )
        .await?;
        let used = match info {
            Frame::BulkString(b) => String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0),
            _ => 0,
        };
        self.metrics.used_memory.set(used);
        let line = format!(
            "Cleanup: {tags} tag entries and {batches} count batches removed, used_memory {used} bytes"
        );
        tracing::info!("{line}");
        Ok(line)
    }

    fn job(&self, id: &str) -> Option<&Arc<Job>> {
        self.jobs.iter().find(|j| j.id.eq_ignore_ascii_case(id))
    }

    /// The lines of `PROXY JOBS` (and the HTTP API's).
    pub fn report(&self) -> Vec<String> {
        let mut out = vec![
            format!("instance:{}", self.instance),
            match self.lease.as_ref().map(|l| l.token()) {
                Some(Some(t)) => format!("leader:yes token={t}"),
                Some(None) => "leader:no".into(),
                None => "leader:none needed".into(),
            },
        ];
        if !self.gate.is_open() || !self.gate.why().is_empty() {
            out.push(format!("ready_gate:{}", self.gate.why()));
        }
        for j in &self.jobs {
            let s = lock(&j.state).clone();
            let at = |t: Option<u64>| t.map_or("-".to_string(), utc);
            out.push(format!(
                "job:{} kind={} singleton={} running={} runs={} failures={} last_run={} next_run={} last_duration_ms={} every_s={} last_outcome={}",
                j.id,
                j.kind,
                if j.singleton { "yes" } else { "no" },
                if s.running { "yes" } else { "no" },
                s.runs,
                s.failures,
                at(s.last_run),
                at(s.next_run),
                s.last_duration.as_millis(),
                self.interval(j).as_secs(),
                if s.last_outcome.is_empty() { "-" } else { &s.last_outcome },
            ));
        }
        if let Some(w) = &self.warming {
            for t in &w.tasks {
                let s = lock(&t.stats).clone();
                let avg = match s.runs {
                    0 => 0.0,
                    n => s.total.as_secs_f64() * 1000.0 / n as f64,
                };
                out.push(format!(
                    "warm:{} priority={} critical={} runs={} warmed={} failed={} avg_ms={avg:.1} fastest_ms={} slowest_ms={} efficiency={}",
                    t.cfg.name,
                    t.cfg.priority,
                    if t.cfg.critical { "yes" } else { "no" },
                    s.runs,
                    s.warmed,
                    s.failed,
                    s.fastest.map_or(0, |d| d.as_millis()),
                    s.slowest.as_millis(),
                    s.efficiency.map_or("-".into(), |e| format!("{e:.3}")),
                ));
            }
        }
        out
    }

    /// Runs job `id` now (as `PROXY JOBS` names it); false when there is no such job.
    pub fn run_now(&self, id: &str) -> bool {
        match self.job(id) {
            Some(j) => {
                j.now.notify_one();
                true
            }
            None => false,
        }
    }

    /// Removes every key tagged `tag`; how many.
    pub async fn invalidate(&self, tag: &str) -> Result<u64, String> {
        let origin = self.origin.clone();
        let note = |k: &Bytes| {
            if let Some(o) = &origin {
                o.note_write(k);
            }
        };
        tags::invalidate(&self.up, tag, note).await
    }

    /// The jobs as JSON (the HTTP API's `GET /api/v1/jobs`).
    pub fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let jobs: Vec<serde_json::Value> = self
            .jobs
            .iter()
            .map(|j| {
                let s = lock(&j.state).clone();
                json!({
                    "id": j.id,
                    "kind": j.kind,
                    "singleton": j.singleton,
                    "running": s.running,
                    "runs": s.runs,
                    "failures": s.failures,
                    "last_run": s.last_run.map(utc),
                    "next_run": s.next_run.map(utc),
                    "last_duration_ms": s.last_duration.as_millis() as u64,
                    "interval_s": self.interval(j).as_secs(),
                    "last_outcome": s.last_outcome,
                })
            })
            .collect();
        let tasks: Vec<serde_json::Value> = self
            .warming
            .iter()
            .flat_map(|w| w.tasks.iter())
            .map(|t| {
                let s = lock(&t.stats).clone();
                json!({
                    "name": t.cfg.name,
                    "priority": t.cfg.priority,
                    "critical": t.cfg.critical,
                    "runs": s.runs,
                    "warmed": s.warmed,
                    "failed": s.failed,
                    "fastest_ms": s.fastest.map(|d| d.as_millis() as u64),
                    "slowest_ms": s.slowest.as_millis() as u64,
                    "efficiency": s.efficiency,
                })
            })
            .collect();
        json!({
            "instance": self.instance,
            "leader": self.leading(),
            "ready_gate": if self.gate.is_open() { serde_json::Value::Null } else { self.gate.why().into() },
            "jobs": jobs,
            "warming_tasks": tasks,
        })
    }

    /// `PROXY JOBS | JOB RUN <id> | WARM <task> | WARM USER <id> | INVALIDATE TAG <tag> |
    /// EXPIRING <set> <seconds>`.
    pub async fn command(&self, args: &[Bytes]) -> Value {
        let arg = |i: usize| {
            args.get(i)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        };
        let sub = arg(1).to_ascii_lowercase();
        let lines =
            |v: Vec<String>| Value::Verbatim(v.iter().map(|l| format!("{l}\r\n")).collect());
        match (sub.as_str(), args.len()) {
            ("jobs", 2) => lines(self.report()),
            ("job", 4) if arg(2).eq_ignore_ascii_case("run") => match self.run_now(&arg(3)) {
                true => Value::ok(),
                false => Value::err(format!("ERR no job '{}' (PROXY JOBS lists them)", arg(3))),
            },
            ("warm", 4) if arg(2).eq_ignore_ascii_case("user") => match &self.warming {
                Some(w) => match w.preload_user(&arg(3)).await {
                    Ok(Some(keys)) => lines(
                        std::iter::once(format!("preloaded:{}", keys.len()))
                            .chain(keys)
                            .collect(),
                    ),
                    Ok(None) => lines(vec![format!(
                        "skipped: user {} was preloaded within {} s",
                        arg(3),
                        warming::PRELOAD_SKIP.as_secs()
                    )]),
                    Err(e) => Value::err(format!("ERR {e}")),
                },
                None => Value::err("ERR no warming is configured ([[warming.tasks]] and [[origin.routes]])"),
            },
            ("warm", 3) => match self.run_now(&format!("warm:{}", arg(2))) {
                true => Value::ok(),
                false => Value::err(format!("ERR no warming task '{}'", arg(2))),
            },
            ("invalidate", 4) if arg(2).eq_ignore_ascii_case("tag") => {
                match self.invalidate(&arg(3)).await {
                    Ok(n) => Value::Int(n as i64),
                    Err(e) => Value::err(format!("ERR {e}")),
                }
            }
            ("expiring", 4) => {
                let Some(sw) = self.sweeps.iter().find(|s| s.cfg.name == arg(2)) else {
                    return Value::err(format!("ERR no expiry set '{}'", arg(2)));
                };
                let Ok(secs) = arg(3).parse::<u64>() else {
                    return Value::err("ERR seconds must be a non-negative integer");
                };
                match sw.expiring(secs).await {
                    Ok(m) => lines(m.into_iter().map(|(m, at)| format!("{m} {at}")).collect()),
                    Err(e) => Value::err(format!("ERR {e}")),
                }
            }
            _ => Value::err(
                "ERR usage: PROXY JOBS | JOB RUN <id> | WARM <task> | WARM USER <id> | INVALIDATE TAG <tag> | EXPIRING <set> <seconds>",
            ),
        }
    }

    /// Whether this instance leads the singleton jobs.
    pub fn leading(&self) -> bool {
        self.lease.as_ref().and_then(|l| l.token()).is_some()
    }
}

impl Job {
    /// The job scheduled by `expr` instead (validated at load; an empty one changes nothing).
    fn with_cron(self: Arc<Job>, expr: &str) -> Arc<Job> {
        let Ok(c) = settings::parse_cron(expr) else {
            return self;
        };
        match Arc::try_unwrap(self) {
            Ok(mut j) => {
                j.cron = Some(c);
                Arc::new(j)
            }
            Err(a) => a,
        }
    }

    fn new(
        id: String,
        kind: &'static str,
        singleton: bool,
        every: Duration,
        at_start: bool,
        work: Work,
    ) -> Arc<Job> {
        Arc::new(Job {
            id,
            kind,
            singleton,
            every,
            cron: None,
            at_start,
            work,
            state: Mutex::new(State::default()),
            now: Notify::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_civil_time() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_796_428_788_123), "2026-12-04T23:59:48Z");
    }
}
