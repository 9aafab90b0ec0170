//! The prefetch queue (seed: `PrefetchQueue`): bounded, highest priority first, one entry per
//! key, entries older than `max_age` dropped when they come up.
//!
//! Two indexes over the same entries: by key (dedupe) and by (priority, order) in a B-tree, so
//! the best entry and the worst (the one a full queue drops for a better newcomer) are both a
//! step away.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One key to prefetch.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub key: Bytes,
    pub route: usize,
    /// The origin `route` indexes into (the prefetcher's epoch when it was queued: a reload
    /// that replaces the origin starts a new one, and older jobs are dropped).
    pub epoch: u64,
    pub priority: f64,
    pub queued: Instant,
}

/// Counters as the seed names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub put: u64,
    /// Refused or pushed out because the queue was full of better entries.
    pub dropped_full: u64,
    /// A key already queued: the entry kept the higher priority.
    pub dropped_duplicate: u64,
    /// Removed by `clear` (prefetch turned off, or `PROXY PREFETCH CLEAR`).
    pub dropped_cleared: u64,
    /// Older than `max_age` when their turn came.
    pub expired: u64,
    /// Handed to a worker.
    pub served: u64,
}

/// Orders priorities (finite, >= 0) by their bits; ties go to the older entry.
type Rank = (u64, std::cmp::Reverse<u64>);

fn rank(priority: f64, seq: u64) -> Rank {
    (priority.max(0.0).to_bits(), std::cmp::Reverse(seq))
}

pub struct Queue {
    max_size: usize,
    max_age: Duration,
    by_rank: BTreeMap<Rank, Job>,
    by_key: HashMap<Bytes, Rank>,
    seq: u64,
    pub stats: QueueStats,
}

impl Queue {
    pub fn new(max_size: usize, max_age: Duration) -> Queue {
        Queue {
            max_size: max_size.max(1),
            max_age,
            by_rank: BTreeMap::new(),
            by_key: HashMap::new(),
            seq: 0,
            stats: QueueStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_rank.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_rank.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn set_limits(&mut self, max_size: usize, max_age: Duration) {
        self.max_size = max_size.max(1);
        self.max_age = max_age;
        while self.by_rank.len() > self.max_size {
            self.pop_worst();
            self.stats.dropped_full += 1;
        }
    }

    fn pop_worst(&mut self) -> Option<Job> {
        let (_, job) = self.by_rank.pop_first()?;
        self.by_key.remove(&job.key);
        Some(job)
    }

    /// Queues `job`; false when it was not queued (a duplicate kept its better priority, or
    /// the queue is full of entries at least as good).
    pub fn put(&mut self, job: Job) -> bool {
        self.stats.put += 1;
        if let Some(&old) = self.by_key.get(&job.key) {
            self.stats.dropped_duplicate += 1;
            if old.0 >= job.priority.max(0.0).to_bits() {
                return false;
            }
            // The newcomer's priority is higher: it replaces the entry (and its age).
            self.by_rank.remove(&old);
            self.by_key.remove(&job.key);
        }
        self.seq += 1;
        let r = rank(job.priority, self.seq);
        if self.by_rank.len() >= self.max_size {
            match self.by_rank.first_key_value() {
                Some((worst, _)) if *worst < r => {
                    self.pop_worst();
                    self.stats.dropped_full += 1;
                }
                _ => {
                    self.stats.dropped_full += 1;
                    return false;
                }
            }
        }
        self.by_key.insert(job.key.clone(), r);
        self.by_rank.insert(r, job);
        true
    }

    /// The best entry not older than `max_age` at `now` (older ones are dropped on the way).
    pub fn pop(&mut self, now: Instant) -> Option<Job> {
        while let Some((_, job)) = self.by_rank.pop_last() {
            self.by_key.remove(&job.key);
            if now.saturating_duration_since(job.queued) > self.max_age {
                self.stats.expired += 1;
                continue;
            }
            self.stats.served += 1;
            return Some(job);
        }
        None
    }

    /// Drops every entry; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.by_rank.len();
        self.by_rank.clear();
        self.by_key.clear();
        self.stats.dropped_cleared += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, priority: f64, queued: Instant) -> Job {
        Job {
            key: Bytes::copy_from_slice(key.as_bytes()),
            route: 0,
            epoch: 0,
            priority,
            queued,
        }
    }

    fn keys(q: &mut Queue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| q.pop(now))
            .map(|j| String::from_utf8(j.key.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn highest_priority_first_ties_in_arrival_order() {
        let now = Instant::now();
        let mut q = Queue::new(10, Duration::from_secs(30));
        for (k, p) in [("a", 0.2), ("b", 0.9), ("c", 0.5), ("d", 0.9), ("e", 0.0)] {
            assert!(q.put(job(k, p, now)));
        }
        assert_eq!(keys(&mut q, now), ["b", "d", "c", "a", "e"]);
        assert_eq!(q.stats.served, 5);
    }

    #[test]
    fn a_duplicate_keeps_the_higher_priority() {
        let now = Instant::now();
        let mut q = Queue::new(10, Duration::from_secs(30));
        q.put(job("a", 0.5, now));
        q.put(job("b", 0.6, now));
        assert!(
            !q.put(job("a", 0.1, now)),
            "lower: the entry stays as it was"
        );
        assert_eq!(q.len(), 2);
        assert!(q.put(job("a", 0.9, now)), "higher: the entry moves up");
        assert_eq!(q.len(), 2);
        assert_eq!(q.stats.dropped_duplicate, 2);
        assert_eq!(keys(&mut q, now), ["a", "b"]);
    }

    #[test]
    fn a_full_queue_drops_its_worst_for_a_better_newcomer_only() {
        let now = Instant::now();
        let mut q = Queue::new(2, Duration::from_secs(30));
        q.put(job("a", 0.5, now));
        q.put(job("b", 0.7, now));
        assert!(!q.put(job("c", 0.4, now)), "no better than the worst");
        assert!(q.put(job("d", 0.6, now)), "pushes a out");
        assert_eq!(q.stats.dropped_full, 2);
        assert!(!q.contains(b"a"));
        assert_eq!(keys(&mut q, now), ["b", "d"]);
        q.put(job("x", 0.1, now));
        q.put(job("y", 0.2, now));
        q.set_limits(1, Duration::from_secs(30));
        assert_eq!(keys(&mut q, now), ["y"]);
    }

    #[test]
    fn entries_past_max_age_are_dropped_when_they_come_up_and_clear_empties() {
        let t0 = Instant::now();
        let mut q = Queue::new(10, Duration::from_millis(100));
        q.put(job("old", 0.9, t0));
        q.put(job("new", 0.1, t0 + Duration::from_millis(150)));
        let now = t0 + Duration::from_millis(200);
        assert_eq!(keys(&mut q, now), ["new"]);
        assert_eq!((q.stats.expired, q.stats.served), (1, 1));
        q.put(job("a", 0.1, now));
        q.put(job("b", 0.1, now));
        assert_eq!(q.clear(), 2);
        assert!(q.is_empty() && q.pop(now).is_none());
        assert_eq!(q.stats.dropped_cleared, 2);
    }
}
