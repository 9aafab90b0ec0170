//! `[prefetch]`: what the prefetch pipeline fetches, how fast and when (documented one key at
//! a time in conf/prescient.toml). The thresholds live here alone: the live tracker's marks,
//! `PROXY PREDICT` and the scheduler read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::controller::LEVELS;
use super::hours::HourWeights;
use crate::tracking::model::ModelConfig;

/// `prefetch.min_probability`: "adaptive" (the controller's live value) or a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Raw", into = "Raw")]
pub enum Threshold {
    Adaptive,
    Fixed(f64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Raw {
    Num(f64),
    Str(String),
}

impl TryFrom<Raw> for Threshold {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        Threshold::parse(&match r {
            Raw::Num(n) => return Threshold::fixed(n),
            Raw::Str(s) => s,
        })
    }
}

impl From<Threshold> for Raw {
    fn from(t: Threshold) -> Raw {
        match t {
            Threshold::Adaptive => Raw::Str("adaptive".into()),
            Threshold::Fixed(n) => Raw::Num(n),
        }
    }
}

impl Threshold {
    fn fixed(n: f64) -> Result<Threshold, String> {
        if n > 0.0 && n <= 1.0 {
            Ok(Threshold::Fixed(n))
        } else {
            Err(format!("{n} is not in (0, 1]"))
        }
    }

    /// "adaptive" or a number in (0, 1].
    pub fn parse(s: &str) -> Result<Threshold, String> {
        match s.trim() {
            "adaptive" => Ok(Threshold::Adaptive),
            n => match n.parse::<f64>() {
                Ok(n) => Threshold::fixed(n),
                Err(_) => Err(format!("'{s}' is neither \"adaptive\" nor a number")),
            },
        }
    }

    /// The lowest threshold this can be: what the model marks as worth fetching.
    pub fn floor(self) -> f64 {
        match self {
            Threshold::Adaptive => LEVELS[0],
            Threshold::Fixed(n) => n,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Threshold::Adaptive => "adaptive".into(),
            Threshold::Fixed(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Prefetch {
    /// Prefetch the routes with `prefetch = true` (needs `[tracking] enabled`).
    pub enabled: bool,
    /// Predictions at or above this probability are fetched: "adaptive" or (0, 1].
    pub min_probability: Threshold,
    /// Predictions at or above this (and below the fetch threshold) are kept warm (TOUCH) when
    /// cached, never fetched.
    pub touch_probability: f64,
    /// Keys fetched per read at most.
    pub max_prefetch_per_schedule: usize,
    /// Origin requests over the misses there would be without prefetching, at most (the
    /// adaptive threshold's budget).
    pub max_load_factor: f64,
    /// When the store cannot evict, prefetching pauses at this share of maxmemory.
    pub cache_space_threshold: f64,
    pub num_workers: usize,
    /// Prefetch requests to the origin per second, all routes together.
    pub max_requests_per_second: f64,
    pub queue_max_size: usize,
    /// Queued keys older than this are dropped when their turn comes.
    pub max_age_ms: u64,
    /// `"start-end" = weight`: scales priority, rate and load budget by hour of day.
    pub hour_weights: BTreeMap<String, f64>,
    /// Hours in UTC (true) or the machine's local time (false).
    pub hour_weights_utc: bool,
}

/// The numeric defaults, in one place: `[prefetch]` and `prescient replay`'s flags start here.
pub struct Defaults {
    pub touch_probability: f64,
    pub max_prefetch_per_schedule: usize,
    pub max_load_factor: f64,
}

pub const DEFAULTS: Defaults = Defaults {
    touch_probability: 0.05,
    max_prefetch_per_schedule: 10,
    max_load_factor: 1.3,
};

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            enabled: true,
            min_probability: Threshold::Adaptive,
            touch_probability: DEFAULTS.touch_probability,
            max_prefetch_per_schedule: DEFAULTS.max_prefetch_per_schedule,
            max_load_factor: DEFAULTS.max_load_factor,
            cache_space_threshold: 0.8,
            num_workers: 4,
            max_requests_per_second: 200.0,
            queue_max_size: 1000,
            max_age_ms: 30_000,
            hour_weights: BTreeMap::new(),
            hour_weights_utc: false,
        }
    }
}

impl Prefetch {
    /// The model's marks: what it offers to fetch (at or above the lowest threshold this
    /// setting can take, at most `max_prefetch_per_schedule`) and to touch.
    pub fn apply_to(&self, m: &mut ModelConfig) {
        m.min_probability = self.min_probability.floor();
        m.touch_probability = self.touch_probability;
        m.max_predictions = self.max_prefetch_per_schedule;
    }

    /// The first invalid key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |k: &'static str, why: &str| Err((k, why.to_string()));
        if !(0.0..=1.0).contains(&self.touch_probability) {
            return bad("prefetch.touch_probability", "must be between 0 and 1");
        }
        if !(self.max_load_factor >= 1.0 && self.max_load_factor.is_finite()) {
            return bad("prefetch.max_load_factor", "must be at least 1");
        }
        if !(self.cache_space_threshold > 0.0 && self.cache_space_threshold <= 1.0) {
            return bad("prefetch.cache_space_threshold", "must be in (0, 1]");
        }
        if !(self.max_requests_per_second > 0.0 && self.max_requests_per_second.is_finite()) {
            return bad("prefetch.max_requests_per_second", "must be above 0");
        }
        for (k, v) in [
            (
                "prefetch.max_prefetch_per_schedule",
                self.max_prefetch_per_schedule,
            ),
            ("prefetch.num_workers", self.num_workers),
            ("prefetch.queue_max_size", self.queue_max_size),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        if self.num_workers > 1024 {
            return bad("prefetch.num_workers", "must be at most 1024");
        }
        if self.max_age_ms == 0 {
            return bad("prefetch.max_age_ms", "must be at least 1");
        }
        HourWeights::parse(&self.hour_weights).map_err(|e| ("prefetch.hour_weights", e))?;
        Ok(())
    }

    pub fn hours(&self) -> HourWeights {
        HourWeights::parse(&self.hour_weights).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_from_numbers_and_strings() {
        assert_eq!(Threshold::parse("adaptive"), Ok(Threshold::Adaptive));
        assert_eq!(Threshold::parse(" 0.5 "), Ok(Threshold::Fixed(0.5)));
        assert!(Threshold::parse("0").is_err());
        assert!(Threshold::parse("1.5").is_err());
        assert!(Threshold::parse("often").is_err());
        let t: Threshold = serde_json::from_str("0.25").unwrap();
        assert_eq!(t, Threshold::Fixed(0.25));
        let t: Threshold = serde_json::from_str("\"adaptive\"").unwrap();
        assert_eq!(t, Threshold::Adaptive);
        assert_eq!(
            serde_json::to_string(&Threshold::Adaptive).unwrap(),
            "\"adaptive\""
        );
    }
}
