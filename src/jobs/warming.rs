//! Cache warming (`[[warming.tasks]]`): a task's keys (listed, an id range filled into its
//! route's template, or the N hottest keys of the route) are fetched through the origin and
//! written, highest priority first. Fetches are background work at the origin (they never take
//! a slot a demand miss needs) and take the prefetch workers' rate tokens when prefetching runs
//! (else their own bucket at `prefetch.max_requests_per_second`). Warming is a singleton job:
//! its writes carry the leader's fencing token.
//!
//! Per task: runs, keys warmed and failed, durations, efficiency (the share of the previous
//! run's keys read before they expired), and with `interval = "adaptive"` the next interval
//! from how often its keys were read: the tiers are 15, 30, 60 and 120 minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::settings::{parse_ids, Interval, WarmTask};
use crate::origin::Origin;
use crate::tracking::template::KeyPattern;
use crate::upstream::Upstream;

/// A user preloaded within this long is skipped (`PROXY WARM USER`).
pub const PRELOAD_SKIP: Duration = Duration::from_secs(300);

/// Warmed keys remembered for efficiency at most.
const MAX_REMEMBERED: usize = 1_000_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The adaptive interval for keys read `per_key_hour` times an hour each.
pub fn adaptive_interval(per_key_hour: f64) -> Duration {
    let minutes = match per_key_hour {
        r if r >= 60.0 => 15,
        r if r >= 10.0 => 30,
        r if r >= 1.0 => 60,
        _ => 120,
    };
    Duration::from_secs(minutes * 60)
}

#[derive(Debug, Clone, Default)]
pub struct TaskStats {
    pub runs: u64,
    pub warmed: u64,
    pub failed: u64,
    pub total: Duration,
    pub fastest: Option<Duration>,
    pub slowest: Duration,
    /// The previous run's keys read before they expired, as a share.
    pub efficiency: Option<f64>,
    /// Reads of the task's warmed keys since the last run.
    reads: u64,
    keys_last_run: u64,
    last_run: Option<Instant>,
}

pub struct Task {
    pub cfg: WarmTask,
    pub route: usize,
    pub stats: Mutex<TaskStats>,
}

impl Task {
    /// The interval to the next run.
    pub fn interval(&self, now: Instant) -> Duration {
        match self.cfg.interval {
            Interval::Every(s) => Duration::from_secs(s),
            Interval::Adaptive => {
                let s = lock(&self.stats);
                let Some(last) = s.last_run else {
                    return adaptive_interval(0.0);
                };
                let hours = now.saturating_duration_since(last).as_secs_f64() / 3600.0;
                let per = s.reads as f64 / (s.keys_last_run.max(1) as f64) / hours.max(1e-9);
                adaptive_interval(per)
            }
        }
    }
}

/// The tasks waiting for a turn (by priority, then index) and whether one is running.
type Waiting = (
    std::collections::BTreeSet<(std::cmp::Reverse<i64>, usize)>,
    bool,
);

struct Warmed {
    task: usize,
    until: Instant,
    read: bool,
}

pub struct Warming {
    pub tasks: Vec<Arc<Task>>,
    origin: Option<Arc<Origin>>,
    tracker: Arc<crate::tracking::tracker::Tracker>,
    prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
    up: Arc<Upstream>,
    /// Tokens when there is no prefetcher to share: (tokens, last refill).
    bucket: Mutex<(f64, Instant)>,
    rate: f64,
    warmed: Mutex<HashMap<Bytes, Warmed>>,
    any: AtomicBool,
    /// Tasks waiting for their turn, highest priority first; one task runs at a time.
    waiting: Mutex<Waiting>,
    turn_over: tokio::sync::Notify,
}

/// A warming task's turn; the next waiting task goes when it is dropped.
pub struct Turn<'a>(&'a Warming);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.0.waiting).1 = false;
        self.0.turn_over.notify_waiters();
    }
}

impl Warming {
    pub fn new(
        tasks: &[WarmTask],
        origin: Option<Arc<Origin>>,
        tracker: Arc<crate::tracking::tracker::Tracker>,
        prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
        up: Arc<Upstream>,
        rate: f64,
    ) -> Warming {
        let mut tasks: Vec<Arc<Task>> = tasks
            .iter()
            .filter_map(|t| {
                let route = origin.as_ref()?.route_index(&t.route)?;
                Some(Arc::new(Task {
                    cfg: t.clone(),
                    route,
                    stats: Mutex::new(TaskStats::default()),
                }))
            })
            .collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.cfg.priority));
        // Every task runs at start: all wait from the outset, so the order is the priorities'.
        let waiting = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (std::cmp::Reverse(t.cfg.priority), i))
            .collect();
        Warming {
            waiting: Mutex::new((waiting, false)),
            turn_over: tokio::sync::Notify::new(),
            tasks,
            origin,
            tracker,
            prefetch,
            up,
            bucket: Mutex::new((rate.max(1.0), Instant::now())),
            rate: rate.max(0.1),
            warmed: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
        }
    }

    pub fn task(&self, name: &str) -> Option<(usize, &Arc<Task>)> {
        self.tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.cfg.name == name)
    }

    /// Waits until task `i` is the highest-priority waiting task and none runs.
    pub async fn turn(&self, i: usize) -> Turn<'_> {
        let me = (std::cmp::Reverse(self.tasks[i].cfg.priority), i);
        lock(&self.waiting).0.insert(me);
        loop {
            let over = self.turn_over.notified();
            {
                let mut w = lock(&self.waiting);
                if !w.1 && w.0.first() == Some(&me) {
                    w.0.remove(&me);
                    w.1 = true;
                    return Turn(self);
                }
            }
            over.await;
        }
    }

    /// A demand read found `key` in the store.
    pub fn note_read(&self, key: &[u8]) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut w = lock(&self.warmed);
        if let Some(e) = w.get_mut(key) {
            if !e.read && Instant::now() < e.until {
                e.read = true;
            }
            let task = e.task;
            drop(w);
            if let Some(t) = self.tasks.get(task) {
                lock(&t.stats).reads += 1;
            }
        }
    }

    /// The keys a task warms now.
    fn keys(&self, t: &Task) -> Result<Vec<Bytes>, String> {
        let origin = self.origin.as_ref().ok_or("no origin")?;
        let cfg = origin.route(t.route);
        if !t.cfg.keys.is_empty() {
            return Ok(t.cfg.keys.iter().map(|k| Bytes::from(k.clone())).collect());
        }
        let pattern = KeyPattern::parse(&cfg.key)?;
        if !t.cfg.ids.is_empty() {
            return Ok(parse_ids(&t.cfg.ids)?
                .iter()
                .filter_map(|id| pattern.fill(|_| Some(id.as_str())))
                .map(Bytes::from)
                .collect());
        }
        Ok(self
            .tracker
            .hotkeys(usize::MAX >> 1)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| pattern.matches(k))
            .take(t.cfg.top_hot as usize)
            .collect())
    }

    /// Waits for a rate token: the prefetch workers' bucket when prefetching runs.
    async fn token(&self) {
        if let Some(p) = &self.prefetch {
            return p.take_token().await;
        }
        loop {
            let wait = {
                let mut b = lock(&self.bucket);
                let now = Instant::now();
                b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.rate);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs task `i` once with the leader's fencing token; the summary line.
    pub async fn run(&self, i: usize, fence: Option<u64>) -> Result<String, String> {
        let t = &self.tasks[i];
        let origin = self.origin.as_ref().ok_or("no origin")?;
        let _turn = self.turn(i).await;
        let started = Instant::now();
        let keys = self.keys(t)?;
        let kept = {
            let cfg = origin.route(t.route);
            Duration::from_secs(cfg.ttl + cfg.stale.max(cfg.stale_if_error))
        };
        // The previous run's efficiency, before its keys are replaced.
        let (read, total) = {
            let w = lock(&self.warmed);
            w.values()
                .filter(|e| e.task == i)
                .fold((0u64, 0u64), |(r, n), e| (r + u64::from(e.read), n + 1))
        };
        let (mut warmed, mut failed, mut first_err) = (0u64, 0u64, None);
        for key in &keys {
            self.token().await;
            match origin.warm(t.route, key, &t.cfg.tags, fence).await {
                Ok(true) => {
                    warmed += 1;
                    let mut w = lock(&self.warmed);
                    if w.len() < MAX_REMEMBERED || w.contains_key(key) {
                        w.insert(
                            key.clone(),
                            Warmed {
                                task: i,
                                until: Instant::now() + kept,
                                read: false,
                            },
                        );
                        self.any.store(true, Ordering::Relaxed);
                    }
                }
                Ok(false) => failed += 1,
                Err(e) => {
                    failed += 1;
                    // A stale token: another instance leads now; stop here.
                    if e.starts_with("FENCED") {
                        first_err = Some(e);
                        break;
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        let took = started.elapsed();
        {
            let mut s = lock(&t.stats);
            s.runs += 1;
            s.warmed += warmed;
            s.failed += failed;
            s.total += took;
            s.fastest = Some(s.fastest.map_or(took, |f| f.min(took)));
            s.slowest = s.slowest.max(took);
            if total > 0 {
                s.efficiency = Some(read as f64 / total as f64);
            }
            s.reads = 0;
            s.keys_last_run = warmed;
            s.last_run = Some(Instant::now());
        }
        let line = format!(
            "Cache warming {}: {warmed} keys warmed, {failed} failed in {:.1}s",
            t.cfg.name,
            took.as_secs_f64()
        );
        tracing::info!("{line}");
        match first_err {
            Some(e) if warmed == 0 || e.starts_with("FENCED") => Err(format!("{line}: {e}")),
            _ => Ok(line),
        }
    }

    /// `PROXY WARM USER <id>`: fills every route whose key has a `{user}` or `{uid}`
    /// placeholder (and no other) for that user, unless the user was preloaded within
    /// [`PRELOAD_SKIP`] (a marker in the store, so instances share it). The keys filled, or
    /// None when skipped.
    pub async fn preload_user(&self, id: &str) -> Result<Option<Vec<String>>, String> {
        let origin = self
            .origin
            .as_ref()
            .ok_or("no origin routes are configured")?;
        let marker = super::call(
            &self.up,
            &[
                Bytes::from_static(b"SET"),
                Bytes::from(format!("prescient:preloaded:{id}")),
                Bytes::from_static(b"1"),
                Bytes::from_static(b"EX"),
                Bytes::from(PRELOAD_SKIP.as_secs().to_string()),
                Bytes::from_static(b"NX"),
            ],
        )
        .await?;
        if marker == super::Frame::Null {
            return Ok(None);
        }
        let mut filled = Vec::new();
        for (i, cfg) in origin.routes().enumerate() {
            let Ok(p) = KeyPattern::parse(&cfg.key) else {
                continue;
            };
            let names: Vec<&str> = p.names().collect();
            if names.len() != 1 || !matches!(names[0], "user" | "uid") {
                continue;
            }
            let Some(key) = p.fill(|_| Some(id)) else {
                continue;
            };
            self.token().await;
            let key = Bytes::from(key);
            if let Ok(true) = origin.warm(i, &key, &[], None).await {
                filled.push(String::from_utf8_lossy(&key).into_owned());
            }
        }
        Ok(Some(filled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_interval_follows_the_read_rate() {
        assert_eq!(adaptive_interval(600.0), Duration::from_secs(15 * 60));
        assert_eq!(adaptive_interval(20.0), Duration::from_secs(30 * 60));
        assert_eq!(adaptive_interval(2.0), Duration::from_secs(60 * 60));
        assert_eq!(adaptive_interval(0.0), Duration::from_secs(120 * 60));
    }

    #[test]
    fn a_task_interval_moves_with_reads_on_a_paused_clock() {
        let t = Task {
            cfg: WarmTask {
                name: "t".into(),
                interval: Interval::Adaptive,
                ..Default::default()
            },
            route: 0,
            stats: Mutex::new(TaskStats::default()),
        };
        let t0 = Instant::now();
        assert_eq!(
            t.interval(t0),
            Duration::from_secs(7200),
            "never run: slowest"
        );
        {
            let mut s = lock(&t.stats);
            s.last_run = Some(t0);
            s.keys_last_run = 10;
            s.reads = 1000;
        }
        // 1000 reads of 10 keys in an hour: 100 a key an hour.
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(t.interval(hour), Duration::from_secs(900));
        // The same reads over ten hours: 10 a key an hour.
        assert_eq!(
            t.interval(t0 + Duration::from_secs(36_000)),
            Duration::from_secs(1800)
        );
        lock(&t.stats).reads = 5;
        assert_eq!(t.interval(hour), Duration::from_secs(7200));
        let fixed = Task {
            cfg: WarmTask {
                interval: Interval::Every(30),
                ..Default::default()
            },
            route: 0,
            stats: Mutex::new(TaskStats::default()),
        };
        assert_eq!(fixed.interval(hour), Duration::from_secs(30));
    }
}
