//! The adaptive fetch threshold: feedback-directed prefetching (Srinath et al., HPCA 2007)
//! reduced to the one knob prescient has.
//!
//! FDP watches accuracy, lateness and pollution over fixed intervals and moves the
//! prefetcher's aggressiveness one step at a time. Here aggressiveness is the probability a
//! prediction needs to be fetched, on a ladder of levels 0.05 apart. A lower threshold fetches
//! more keys, so it turns more misses into hits and costs more origin requests; the goal is
//! the lowest threshold whose origin load stays under the budget (`max_load_factor`: origin
//! requests over the misses there would be without prefetching).
//!
//! Each interval (an epoch: about a thousand reads in the replay, a second in the proxy) the
//! controller takes what happened: demand misses, prefetches issued, prefetches used (read
//! before they left the cache) and late ones (joined by a demand read while in flight). It
//! estimates the load factor as `(misses + issued) / (misses + used)`: the misses that would
//! have been, without prefetching, are those that still happened plus those a prefetch
//! turned into hits. The estimate is smoothed over epochs; then the threshold
//! - rises one level when the load is over `CEILING` (95%) of the budget's extra load, or
//!   when the prefetches' precision falls under `MIN_PRECISION` (mostly pollution: keys
//!   fetched that nobody reads);
//! - falls one level when the load is under `HEADROOM` (85%) of the budget's extra load;
//! - otherwise stays.
//!
//! Lateness is reported, not acted on: a lower threshold does not make a prefetch earlier,
//! and a late prefetch costs no request beyond the miss it replaced.
//!
//! The same code runs in `prescient replay --threshold adaptive` (on trace time) and in the
//! proxy's scheduler (on wall time): it only sees counts.

/// The thresholds the controller moves between. The last fetches nothing (no probability
/// reaches it): when even the surest predictions cost more than the budget allows (they are
/// evicted before they are read, say), prefetching pauses until an epoch shows room again.
pub const LEVELS: [f64; 20] = [
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 1.01,
];

/// Where the controller starts: the model's old fixed default.
const START: usize = 6;

/// Below this share of the budget's extra load the threshold falls...
pub const HEADROOM: f64 = 0.85;
/// ... and above this share it rises: the band keeps the load under the budget on average
/// while the threshold moves a level either way.
pub const CEILING: f64 = 0.95;

/// Prefetch precision under which the threshold rises whatever the load.
pub const MIN_PRECISION: f64 = 0.05;

/// Weight of the newest epoch in the smoothed counts.
const SMOOTHING: f64 = 0.5;

/// Fewer events than this in an epoch: too few to judge, carried over to the next.
pub const MIN_EVENTS: u64 = 20;

/// What happened during one epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Feedback {
    /// Demand reads that waited for the origin (late joins included).
    pub misses: u64,
    /// Prefetches sent to the origin.
    pub issued: u64,
    /// Prefetched values read before they left the cache.
    pub used: u64,
    /// Prefetches a demand read joined while in flight.
    pub late: u64,
}

impl Feedback {
    fn add(&mut self, o: Feedback) {
        self.misses += o.misses;
        self.issued += o.issued;
        self.used += o.used;
        self.late += o.late;
    }

    /// Origin requests over the misses there would have been without prefetching.
    pub fn load_factor(&self) -> f64 {
        let base = (self.misses + self.used) as f64;
        if base == 0.0 {
            return 1.0;
        }
        (self.misses.saturating_sub(self.late) + self.issued) as f64 / base
    }
}

#[derive(Clone, Debug)]
pub struct Controller {
    at: usize,
    /// `max_load_factor`.
    budget: f64,
    /// Smoothed rates (per epoch).
    smooth: Option<[f64; 4]>,
    /// Events of epochs too small to judge, carried over.
    pending: Feedback,
    /// The last estimate, for reports.
    pub load: f64,
    pub precision: f64,
    pub epochs: u64,
}

impl Controller {
    pub fn new(budget: f64) -> Controller {
        Controller {
            at: START,
            budget,
            smooth: None,
            pending: Feedback::default(),
            load: 1.0,
            precision: 0.0,
            epochs: 0,
        }
    }

    pub fn threshold(&self) -> f64 {
        LEVELS[self.at]
    }

    pub fn set_budget(&mut self, budget: f64) {
        self.budget = budget;
    }

    /// Ends an epoch; returns the threshold for the next.
    pub fn observe(&mut self, f: Feedback) -> f64 {
        self.pending.add(f);
        let p = self.pending;
        if p.misses + p.issued < MIN_EVENTS {
            return self.threshold();
        }
        self.pending = Feedback::default();
        self.epochs += 1;
        let now = [
            p.misses as f64,
            p.issued as f64,
            p.used as f64,
            p.late as f64,
        ];
        let s = match self.smooth {
            None => now,
            Some(old) => std::array::from_fn(|i| old[i] + SMOOTHING * (now[i] - old[i])),
        };
        self.smooth = Some(s);
        let [misses, issued, used, late] = s;
        let base = misses + used;
        self.load = if base > 0.0 {
            ((misses - late).max(0.0) + issued) / base
        } else {
            1.0
        };
        self.precision = if issued > 0.0 {
            (used / issued).min(1.0)
        } else {
            1.0
        };
        let extra = self.budget - 1.0;
        if self.load > 1.0 + CEILING * extra || (issued > 0.0 && self.precision < MIN_PRECISION) {
            // Far over the budget (half its extra again): two levels at once.
            let step = if self.load > self.budget + extra / 2.0 {
                2
            } else {
                1
            };
            self.at = (self.at + step).min(LEVELS.len() - 1);
        } else if self.load < 1.0 + HEADROOM * extra {
            self.at = self.at.saturating_sub(1);
        }
        self.threshold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic workload: at threshold t the prefetcher issues `issued(t)` per epoch of
    /// 1000 misses-without-prefetch, and a share of them is used.
    fn epoch(t: f64, base: u64, precision: f64) -> Feedback {
        let issued = (base as f64 * (1.0 - t)) as u64;
        let used = (issued as f64 * precision) as u64;
        Feedback {
            misses: base - used,
            issued,
            used,
            late: 0,
        }
    }

    #[test]
    fn it_settles_at_the_lowest_threshold_under_the_budget_and_again_after_a_change() {
        let mut c = Controller::new(1.3);
        let mut t = c.threshold();
        for _ in 0..60 {
            t = c.observe(epoch(t, 1000, 0.5));
        }
        // load = (base - used + issued)/base = 1 + issued(t)/base * (1 - 0.5) = 1 + (1-t)/2:
        // in the band (1.255 to 1.285) from t = 0.43 to 0.49.
        assert!((0.4..=0.5).contains(&t), "{t}");
        assert!(c.load <= 1.3 + 0.02, "{}", c.load);
        // The workload changes: predictions get better. The threshold falls.
        for _ in 0..60 {
            t = c.observe(epoch(t, 1000, 0.8));
        }
        // 1 + (1-t)*0.2 <= 1.2 for every t >= 0: the floor.
        assert_eq!(t, LEVELS[0]);
        // And worse: it climbs back.
        for _ in 0..60 {
            t = c.observe(epoch(t, 1000, 0.3));
        }
        // 1 + (1-t)*0.7 in the band from t = 0.59 to 0.64.
        assert!((0.55..=0.7).contains(&t), "{t}");
    }

    #[test]
    fn useless_prefetching_backs_off_and_small_epochs_carry_over() {
        let mut c = Controller::new(100.0);
        let start = c.threshold();
        for _ in 0..5 {
            c.observe(Feedback {
                misses: 100,
                issued: 1000,
                used: 1,
                late: 0,
            });
        }
        assert!(
            c.threshold() > start,
            "precision 0.001 raises the threshold"
        );
        let mut c = Controller::new(1.3);
        let t = c.threshold();
        for _ in 0..(MIN_EVENTS - 1) {
            c.observe(Feedback {
                misses: 1,
                ..Feedback::default()
            });
            assert_eq!((c.threshold(), c.epochs), (t, 0));
        }
        c.observe(Feedback {
            misses: 1,
            ..Feedback::default()
        });
        assert_eq!(c.epochs, 1);
    }

    #[test]
    fn the_load_factor_counts_late_joins_once() {
        let f = Feedback {
            misses: 10,
            issued: 10,
            used: 5,
            late: 5,
        };
        // 10 misses, 5 of them joined prefetches: 5 demand requests + 10 prefetches over 15.
        assert!((f.load_factor() - 1.0).abs() < 1e-9);
    }
}
