//! The live tracker: the proxy hands every key read to it, and it learns.
//!
//! The request path calls [`Tracker::record`], which `try_send`s one message per key into a
//! bounded channel (`tracking.channel_capacity`); when the channel is full the read is
//! dropped and counted, so the request path never waits. One thread (`prescient-tracker`)
//! polls the channel and drains it in batches and, under a mutex that only `PROXY` commands
//! also take, updates the contexts, the model, the hot-key sketch, the self-score and the
//! access log. The thread ends when the last sender is dropped.
//!
//! The learner must not slow the proxy down. Its thread runs at a low priority
//! (`tracking.learner_priority`, SCHED_IDLE by default), so it only gets CPU the proxy leaves
//! idle; when it falls behind (the channel fills or drops reads), it learns from a sample of
//! contexts: those whose hash has its top `shift` bits clear, 1/2^shift of them, whole
//! sequences kept (dropping single reads would teach false transitions). The sample widens
//! again after `CALM_SECS` (10) calm seconds, and every context then starts afresh (one left
//! out would otherwise learn a transition across its gap). In connection and client-name
//! mode the request path skips unsampled reads before copying them; in key-segment mode the
//! learner does.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::{Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use regex::bytes::Regex;

use super::accesslog;
use super::context::{Contexts, Score};
use super::hotkeys::HotKeys;
use super::model::{Model, ModelConfig, ModelSize, Prediction};
use super::settings::{ContextBy, LearnerPriority, Tracking};
use super::template::{hash_bytes, Templater};
use crate::command::{Command, Keys};

/// One key read, as the request path hands it over.
pub struct Read {
    pub client: u64,
    pub name: Option<Bytes>,
    pub key: Bytes,
    pub command: &'static str,
    /// When the request path handed it over (prediction lag is measured from here).
    pub at: Instant,
}

/// What the model predicted after one read, for the prefetch scheduler: each key with its
/// probability, in the model's order (the highest order first), at or above the lower of the
/// two prefetch thresholds.
#[derive(Debug)]
pub struct Predicted {
    /// When the read that led to these reached the tracker.
    pub at: Instant,
    pub candidates: Vec<(Bytes, f64)>,
}

/// Where predictions go: the prefetch scheduler's channel (bounded; full means dropped).
pub type Sink = tokio::sync::mpsc::Sender<Predicted>;

/// What groups reads into one sequence.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Ctx {
    Conn(u64),
    Name(Bytes),
    Segment(Bytes),
}

/// The hash that decides whether a connection is in the learning sample.
fn conn_hash(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Whether a context with this hash is in a sample of 1/2^shift.
fn sampled(hash: u64, shift: u32) -> bool {
    shift == 0 || hash >> (64 - shift) == 0
}

/// The most a saturated learner sheds: it keeps 1/2^MAX_SHIFT of the contexts.
const MAX_SHIFT: u32 = 6;
/// Seconds without drops and with a short queue before the sample doubles again.
const CALM_SECS: u32 = 10;

/// How much the learner sheds, from what happened in the last second.
#[derive(Default, Debug)]
struct Shedder {
    shift: u32,
    calm: u32,
}

impl Shedder {
    /// `drops`: reads dropped in the last second; `backlog`: reads queued now.
    fn update(&mut self, drops: u64, backlog: u64, capacity: u64) -> u32 {
        if drops > 0 || backlog > capacity / 2 {
            self.shift = (self.shift + 1).min(MAX_SHIFT);
            self.calm = 0;
        } else if backlog < capacity / 16 {
            self.calm += 1;
            if self.calm >= CALM_SECS && self.shift > 0 {
                self.shift -= 1;
                self.calm = 0;
            }
        } else {
            self.calm = 0;
        }
        self.shift
    }
}

impl Ctx {
    fn sample_hash(&self) -> u64 {
        match self {
            Ctx::Conn(id) => conn_hash(*id),
            Ctx::Name(n) | Ctx::Segment(n) => hash_bytes(n),
        }
    }

    fn label(&self) -> Vec<u8> {
        match self {
            Ctx::Conn(id) => format!("conn:{id}").into_bytes(),
            Ctx::Name(n) => [&b"name:"[..], n].concat(),
            Ctx::Segment(s) => [&b"seg:"[..], s].concat(),
        }
    }
}

enum Mode {
    Connection,
    ClientName,
    KeySegment(Regex),
}

struct Stats {
    reads: IntCounter,
    learned: IntCounter,
    dropped: IntCounter,
    shed: IntCounter,
    shift: IntGauge,
    transitions: IntCounter,
    predicted: IntCounter,
    top1: IntCounter,
    topk: IntCounter,
    top1_ratio: Gauge,
    topk_ratio: Gauge,
    contexts: IntGauge,
    states: IntGaugeVec,
    model_bytes: IntGauge,
}

impl Stats {
    fn new(r: &Registry) -> Stats {
        use crate::metrics::register as reg;
        let c = |n: &str, h: &str| reg(r, IntCounter::new(n, h).expect("valid metric"));
        let g = |n: &str, h: &str| reg(r, IntGauge::new(n, h).expect("valid metric"));
        let f = |n: &str, h: &str| reg(r, Gauge::new(n, h).expect("valid metric"));
        Stats {
            reads: c(
                "prescient_tracking_reads_total",
                "Key reads handed to the tracker.",
            ),
            learned: c(
                "prescient_tracking_learned_total",
                "Key reads the learner has taken in (the rest of the reads are queued or shed).",
            ),
            dropped: c(
                "prescient_tracking_dropped_total",
                "Key reads dropped because the tracker's channel was full.",
            ),
            shed: c(
                "prescient_tracking_shed_total",
                "Key reads not learned because their context was outside the learning sample.",
            ),
            shift: g(
                "prescient_tracking_sample_shift",
                "The learner learns from 1/2^shift of the contexts (0: all).",
            ),
            transitions: c(
                "prescient_tracking_transitions_total",
                "Reads of a key other than the context's previous one.",
            ),
            predicted: c(
                "prescient_tracking_predicted_total",
                "Transitions that had a prediction before them.",
            ),
            top1: c(
                "prescient_tracking_top1_hits_total",
                "Predicted transitions whose first prediction was the key read.",
            ),
            topk: c(
                "prescient_tracking_topk_hits_total",
                "Predicted transitions where any prediction to fetch was the key read.",
            ),
            top1_ratio: f(
                "prescient_tracking_top1_accuracy_ratio",
                "Top-1 prediction accuracy since start.",
            ),
            topk_ratio: f(
                "prescient_tracking_topk_accuracy_ratio",
                "Top-k prediction accuracy since start.",
            ),
            contexts: g("prescient_tracking_contexts", "Contexts being tracked."),
            states: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("prescient_tracking_model_states", "Model states, by level."),
                    &["level"],
                )
                .expect("valid metric"),
            ),
            model_bytes: g(
                "prescient_tracking_model_bytes",
                "Estimated heap bytes held by the model's states.",
            ),
        }
    }
}

/// Everything the tracker thread owns; `PROXY` commands lock it briefly.
struct Learner {
    mode: Mode,
    templater: Templater,
    model: Model,
    contexts: Contexts<Ctx>,
    hotkeys: HotKeys,
    log: Option<(BufWriter<File>, f64)>,
    /// The score already added to the counters.
    counted: Score,
    /// The prefetch scheduler, once attached.
    sink: Option<Sink>,
    /// Predictions the sink was too full to take.
    sink_dropped: u64,
}

impl Learner {
    fn context(&self, r: &Read) -> Ctx {
        match &self.mode {
            Mode::Connection => Ctx::Conn(r.client),
            Mode::ClientName => r.name.clone().map_or(Ctx::Conn(r.client), Ctx::Name),
            Mode::KeySegment(re) => re
                .captures(&r.key)
                .and_then(|c| c.get(1))
                .map_or(Ctx::Conn(r.client), |m| {
                    Ctx::Segment(Bytes::copy_from_slice(m.as_bytes()))
                }),
        }
    }

    /// Learns one read; false when its context is outside the sample of 1/2^`shift`.
    fn learn(&mut self, r: Read, now: f64, shift: u32) -> bool {
        let ctx = self.context(&r);
        if !sampled(ctx.sample_hash(), shift) {
            return false;
        }
        self.hotkeys.add(&r.key, now);
        if let Some((log, sample)) = &mut self.log {
            if *sample >= 1.0 || rand::random::<f64>() < *sample {
                let _ =
                    log.write_all(accesslog::line(now, &ctx.label(), r.command, &r.key).as_bytes());
            }
        }
        let key = Arc::new(self.templater.parse(r.key));
        let Some(sink) = &self.sink else {
            // Predictions are only scored.
            self.contexts.access(&mut self.model, ctx, key, now, |_| {});
            return true;
        };
        let mut candidates = Vec::new();
        self.contexts.access(&mut self.model, ctx, key, now, |p| {
            candidates.push((Bytes::copy_from_slice(p.key), p.probability))
        });
        if !candidates.is_empty() {
            let p = Predicted {
                at: r.at,
                candidates,
            };
            if sink.try_send(p).is_err() {
                self.sink_dropped += 1;
            }
        }
        true
    }

    /// Brings the metrics up to date; returns the model's size.
    fn publish(&mut self, stats: &Stats) -> ModelSize {
        let s = self.contexts.score;
        let c = self.counted;
        stats.transitions.inc_by(s.transitions - c.transitions);
        stats.predicted.inc_by(s.predicted - c.predicted);
        stats.top1.inc_by(s.top1 - c.top1);
        stats.topk.inc_by(s.topk - c.topk);
        self.counted = s;
        stats.top1_ratio.set(s.top1_ratio());
        stats.topk_ratio.set(s.topk_ratio());
        stats.contexts.set(self.contexts.len() as i64);
        let size = self.model.size();
        let levels = [
            ("order2", size.order2_states),
            ("key", size.key_states),
            ("template", size.template_states),
        ];
        for (level, n) in levels {
            stats.states.with_label_values(&[level]).set(n as i64);
        }
        stats.model_bytes.set(size.bytes as i64);
        if let Some((log, _)) = &mut self.log {
            let _ = log.flush();
        }
        size
    }
}

pub struct Tracker {
    tx: Option<SyncSender<Read>>,
    learner: Arc<Mutex<Learner>>,
    stats: Arc<Stats>,
    mode_name: bool,
    /// Whether the request path can tell a read's context (connection or client name).
    sample_early: bool,
    /// The learner's current sample, 1/2^shift of the contexts.
    shift: Arc<AtomicU32>,
    /// Whether reads carry the time they were handed over (only prefetching reads it: the
    /// prediction lag); otherwise `epoch` stands in, and the request path reads no clock.
    stamp: std::sync::atomic::AtomicBool,
    epoch: Instant,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Tracker {
    /// Starts the tracker thread (unless tracking is off), with the default prefetch
    /// thresholds. Settings were validated.
    pub fn start(cfg: &Tracking, registry: &Registry) -> std::io::Result<Tracker> {
        let model = cfg.model(&crate::prefetch::settings::Prefetch::default());
        Tracker::start_with(cfg, model, registry)
    }

    /// Hands every prediction from now on to the prefetch scheduler.
    pub fn set_sink(&self, sink: Sink) {
        self.lock().sink = Some(sink);
        self.stamp.store(true, Ordering::Relaxed);
    }

    /// Predictions the prefetch scheduler's channel was too full to take.
    pub fn sink_dropped(&self) -> u64 {
        self.lock().sink_dropped
    }

    /// Starts the tracker thread with this model (thresholds from `[prefetch]`).
    pub fn start_with(
        cfg: &Tracking,
        model: ModelConfig,
        registry: &Registry,
    ) -> std::io::Result<Tracker> {
        let mode = match cfg.context {
            ContextBy::ClientName => Mode::ClientName,
            ContextBy::KeySegment => Mode::KeySegment(
                Regex::new(&cfg.context_pattern)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            ContextBy::Connection => Mode::Connection,
        };
        let log = if cfg.access_log.is_empty() {
            None
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.access_log)?;
            Some((BufWriter::new(f), cfg.access_log_sample))
        };
        let learner = Arc::new(Mutex::new(Learner {
            mode,
            templater: Templater::new(&cfg.template_patterns).map_err(std::io::Error::other)?,
            model: Model::new(model),
            contexts: Contexts::new(cfg.max_contexts, cfg.stale_after_secs as f64),
            hotkeys: HotKeys::new(cfg.hotkeys_capacity, cfg.hotkeys_window_secs as f64),
            log,
            counted: Score::default(),
            sink: None,
            sink_dropped: 0,
        }));
        let stats = Arc::new(Stats::new(registry));
        let shift = Arc::new(AtomicU32::new(0));
        let tx = if cfg.enabled {
            let (tx, rx) = sync_channel(cfg.channel_capacity);
            let (l, s, sh) = (learner.clone(), stats.clone(), shift.clone());
            let (capacity, priority) = (cfg.channel_capacity as u64, cfg.learner_priority);
            let budget = cfg.learner_cpu_percent as f64 / 100.0;
            std::thread::Builder::new()
                .name("prescient-tracker".into())
                .spawn(move || {
                    lower_priority(priority);
                    drain(rx, &l, &s, &sh, capacity, budget)
                })?;
            Some(tx)
        } else {
            None
        };
        Ok(Tracker {
            tx,
            learner,
            stats,
            mode_name: cfg.context == ContextBy::ClientName,
            sample_early: cfg.context != ContextBy::KeySegment,
            shift,
            stamp: std::sync::atomic::AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether the session should pass its client name along.
    pub fn wants_name(&self) -> bool {
        self.mode_name
    }

    /// Hands the keys of a read command over; never waits.
    #[inline]
    pub fn record(&self, client: u64, name: Option<&Bytes>, cmd: &Command) {
        let (Some(tx), Some(spec)) = (&self.tx, cmd.spec) else {
            return;
        };
        if !super::is_tracked_read(spec) {
            return;
        }
        let shift = self.shift.load(Ordering::Relaxed);
        if shift > 0 && self.sample_early {
            let h = match name {
                Some(n) if self.mode_name => hash_bytes(n),
                _ => conn_hash(client),
            };
            if !sampled(h, shift) {
                self.stats.shed.inc();
                return;
            }
        }
        let at = match self.stamp.load(Ordering::Relaxed) {
            true => Instant::now(),
            false => self.epoch,
        };
        let send = |key: &Bytes| {
            // A copy, not a clone: a clone shares the refcount of the client's whole read
            // buffer, which the learner would then touch from another core (measured: 11% of
            // the process's cycles in refcount traffic) and which the model would pin for as
            // long as it remembers the key.
            let r = Read {
                client,
                name: name.map(|n| Bytes::copy_from_slice(n)),
                key: Bytes::copy_from_slice(key),
                command: spec.name,
                at,
            };
            match tx.try_send(r) {
                Ok(()) => self.stats.reads.inc(),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.stats.dropped.inc()
                }
            }
        };
        // The common single-key read without the index vector.
        if let Keys::Range {
            first: 1, last: 1, ..
        } = spec.keys
        {
            if let Some(k) = cmd.args.get(1) {
                send(k);
            }
            return;
        }
        for i in spec.key_indexes(&cmd.args) {
            send(&cmd.args[i]);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Learner> {
        self.learner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the model predicts after a read of `key` (from the key alone: order 1 and
    /// template level), at most `k`.
    pub fn predict(&self, key: &Bytes, k: usize) -> Vec<Prediction> {
        let l = self.lock();
        let parsed = Arc::new(l.templater.parse(key.clone()));
        let mut p = l.model.predict(&[parsed], unix_now());
        p.truncate(k);
        p
    }

    pub fn hotkeys(&self, n: usize) -> Vec<(Bytes, u64)> {
        self.lock().hotkeys.top(n, unix_now())
    }

    /// `PROXY TRACKING STATS`: name and value pairs.
    pub fn stats(&self) -> Vec<(&'static str, String)> {
        let mut l = self.lock();
        let size = l.publish(&self.stats);
        let s = l.contexts.score;
        vec![
            ("enabled", u8::from(self.enabled()).to_string()),
            ("reads", self.stats.reads.get().to_string()),
            ("learned", self.stats.learned.get().to_string()),
            ("dropped", self.stats.dropped.get().to_string()),
            ("shed", self.stats.shed.get().to_string()),
            (
                "learning_sample",
                format!("1/{}", 1u64 << self.shift.load(Ordering::Relaxed)),
            ),
            ("contexts", l.contexts.len().to_string()),
            ("transitions", s.transitions.to_string()),
            ("predicted", s.predicted.to_string()),
            ("top1_accuracy", format!("{:.4}", s.top1_ratio())),
            ("topk_accuracy", format!("{:.4}", s.topk_ratio())),
            ("states", size.states().to_string()),
            ("order2_states", size.order2_states.to_string()),
            ("key_states", size.key_states.to_string()),
            ("template_states", size.template_states.to_string()),
            ("model_bytes", size.bytes.to_string()),
            (
                "bytes_per_state",
                (size.bytes / size.states().max(1)).to_string(),
            ),
            ("hotkeys_bytes", l.hotkeys.bytes().to_string()),
        ]
    }
}

/// How long the tracker thread sleeps when the channel is empty. It polls rather than
/// blocks: a sender wakes a blocked receiver with a syscall, and that would put a syscall on
/// the request path for every read (measured: GET throughput -24% on 2 cores). Polling every
/// few milliseconds keeps senders to a few atomic operations; the channel absorbs the gap.
const POLL: Duration = Duration::from_millis(5);

/// The poll when prefetching acts on the predictions: a prediction that arrives after the
/// client's next read is worthless, and the poll is most of the lag from a read to its
/// predictions (1,000 wake-ups a second cost well under 1% of a core).
const PREFETCH_POLL: Duration = Duration::from_millis(1);

/// Lowers the calling thread's CPU priority (Linux: per thread): "idle" is SCHED_IDLE,
/// "low" nice 19. Best effort: a refusal is logged and the learner runs at normal priority.
fn lower_priority(priority: LearnerPriority) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain integers and a parameter struct that outlives the call.
        let rc = unsafe {
            match priority {
                LearnerPriority::Idle => {
                    let p = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &p)
                }
                LearnerPriority::Low => {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19)
                }
                LearnerPriority::Normal => 0,
            }
        };
        if rc != 0 {
            tracing::warn!(priority = priority.name(), error = %std::io::Error::last_os_error(),
                "could not lower the tracker thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// CPU time the calling thread has used (not wall time: on a busy machine the learner is
/// preempted in the middle of a batch, and that time was not its work).
fn thread_cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a timespec that outlives the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
            return Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
        }
    }
    // Elsewhere: wall time since the first call, an upper bound of the CPU time.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The tracker thread: learns in batches, publishes metrics and adjusts the learning sample
/// about once a second.
fn drain(
    rx: Receiver<Read>,
    learner: &Mutex<Learner>,
    stats: &Stats,
    shift: &AtomicU32,
    capacity: u64,
    budget: f64,
) {
    let mut published = Instant::now();
    let mut shedder = Shedder::default();
    let (mut taken, mut dropped) = (0u64, stats.dropped.get());
    let mut poll;
    loop {
        let first = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => break,
        };
        let idle = first.is_none();
        let started = if idle { Duration::ZERO } else { thread_cpu() };
        let now = unix_now();
        {
            let mut l = learner.lock().unwrap_or_else(|p| p.into_inner());
            poll = if l.sink.is_some() {
                PREFETCH_POLL
            } else {
                POLL
            };
            if let Some(r) = first {
                let sh = shift.load(Ordering::Relaxed);
                let (mut shed, mut learned) = (0, 0);
                for r in std::iter::once(r).chain(rx.try_iter().take(4095)) {
                    taken += 1;
                    if l.learn(r, now, sh) {
                        learned += 1;
                    } else {
                        shed += 1;
                    }
                }
                stats.shed.inc_by(shed);
                stats.learned.inc_by(learned);
            }
            if published.elapsed() >= Duration::from_secs(1) {
                l.publish(stats);
                let d = stats.dropped.get();
                let backlog = stats.reads.get().saturating_sub(taken);
                let sh = shedder.update(d - dropped, backlog, capacity);
                if sh < shift.load(Ordering::Relaxed) {
                    l.contexts.restart_all();
                }
                dropped = d;
                shift.store(sh, Ordering::Relaxed);
                stats.shift.set(i64::from(sh));
                published = Instant::now();
            }
        }
        if idle {
            std::thread::sleep(poll);
        } else if budget < 1.0 {
            // Work `budget` of the time at most: rest for the rest. What piles up meanwhile
            // fills the channel, and the shedder narrows the sample until the work fits.
            let worked = thread_cpu().saturating_sub(started);
            std::thread::sleep(worked.mul_f64((1.0 - budget) / budget));
        }
    }
    let mut l = learner.lock().unwrap_or_else(|p| p.into_inner());
    l.publish(stats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_waiting() {
        let cfg = Tracking {
            channel_capacity: 4,
            ..Tracking::default()
        };
        let t = Tracker::start(&cfg, &Registry::new()).unwrap();
        // Hold the learner, as a long PROXY command would: the thread stalls after at most
        // one batch, and the channel fills.
        let held = t.lock();
        for i in 0..100 {
            let get = [Bytes::from_static(b"GET"), Bytes::from(format!("k{i}"))];
            t.record(1, None, &Command::from_args(get));
        }
        // Writes are not tracked.
        t.record(
            1,
            None,
            &Command::from_args([&b"SET"[..], &b"k"[..], &b"v"[..]].map(Bytes::from_static)),
        );
        drop(held);
        let (reads, dropped) = (t.stats.reads.get(), t.stats.dropped.get());
        assert_eq!(reads + dropped, 100);
        assert!(reads <= 5 && dropped >= 95, "{reads} {dropped}");
    }

    fn get(key: &str) -> Command {
        Command::from_args([Bytes::from_static(b"GET"), Bytes::from(key.to_string())])
    }

    #[test]
    fn the_sample_halves_on_drops_or_a_long_queue_and_widens_after_calm_seconds() {
        let mut s = Shedder::default();
        assert_eq!(s.update(0, 10, 1000), 0, "calm: learn from every context");
        assert_eq!(s.update(5, 0, 1000), 1, "drops halve the sample");
        assert_eq!(s.update(0, 600, 1000), 2, "so does a queue over half full");
        for _ in 0..10 {
            s.update(1, 0, 1000);
        }
        assert_eq!(s.shift, MAX_SHIFT, "never below 1/2^MAX_SHIFT");
        for _ in 0..CALM_SECS - 1 {
            assert_eq!(s.update(0, 0, 1000), MAX_SHIFT);
        }
        assert_eq!(
            s.update(0, 0, 1000),
            MAX_SHIFT - 1,
            "widens after calm seconds"
        );
        // A queue between 1/16 and 1/2 full is neither calm nor a reason to shed more.
        for _ in 0..3 * CALM_SECS {
            assert_eq!(s.update(0, 100, 1000), MAX_SHIFT - 1);
        }
    }

    #[test]
    fn a_sample_keeps_about_its_share_of_connections_whole() {
        for shift in 1..=3u32 {
            let kept = (0..4096u64)
                .filter(|id| sampled(conn_hash(*id), shift))
                .count();
            let want = 4096 >> shift;
            assert!(
                kept.abs_diff(want) < want / 5,
                "shift {shift}: {kept} of 4096"
            );
        }
        assert!((0..100u64).all(|id| sampled(conn_hash(id), 0)));
    }

    #[test]
    fn reads_of_unsampled_connections_are_skipped_on_the_request_path_and_counted() {
        let t = Tracker::start(&Tracking::default(), &Registry::new()).unwrap();
        t.shift.store(2, Ordering::Relaxed);
        let ids: Vec<u64> = (0..64).collect();
        for id in &ids {
            t.record(*id, None, &get("k"));
        }
        let kept = ids.iter().filter(|id| sampled(conn_hash(**id), 2)).count() as u64;
        assert!(kept > 0 && kept < 64);
        assert_eq!(t.stats.reads.get() + t.stats.dropped.get(), kept);
        assert_eq!(t.stats.shed.get(), 64 - kept);
        let stats = t.stats();
        assert!(
            stats.contains(&("learning_sample", "1/4".to_string())),
            "{stats:?}"
        );
    }

    #[test]
    fn an_idle_priority_learner_still_learns() {
        let cfg = Tracking {
            learner_priority: LearnerPriority::Idle,
            ..Tracking::default()
        };
        let t = Tracker::start(&cfg, &Registry::new()).unwrap();
        for _ in 0..3 {
            for k in ["a", "b", "c"] {
                t.record(1, None, &get(k));
            }
        }
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let p = t.predict(&Bytes::from_static(b"a"), 1);
            if p.first().is_some_and(|p| p.key == "b") {
                break;
            }
            assert!(Instant::now() < end, "learned nothing: {p:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
