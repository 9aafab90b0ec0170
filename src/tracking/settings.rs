//! `[tracking]`: what the live tracker learns from and how (documented one key at a time in
//! conf/prescient.toml). Kept beside the tracker rather than in config.rs, which only
//! includes it, so the model's knobs live with the model.

use serde::{Deserialize, Serialize};

use super::model::{ModelConfig, DEFAULTS};
use super::template::Templater;

/// `tracking.context`: what a sequence of reads is grouped by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum ContextBy {
    /// Each client connection.
    Connection,
    /// The CLIENT SETNAME name (pooled connections that serve one user each).
    ClientName,
    /// A key segment captured by `context_pattern`.
    KeySegment,
}

impl ContextBy {
    pub fn name(self) -> &'static str {
        match self {
            ContextBy::Connection => "connection",
            ContextBy::ClientName => "client_name",
            ContextBy::KeySegment => "key_segment",
        }
    }
}

impl TryFrom<String> for ContextBy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use ContextBy::*;
        crate::config::one_of(&s, &[Connection, ClientName, KeySegment], ContextBy::name)
    }
}

/// `tracking.learner_priority`: the learner thread's CPU priority.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LearnerPriority {
    /// SCHED_IDLE: only CPU nothing else wants.
    Idle,
    /// nice 19.
    Low,
    /// The proxy's own.
    Normal,
}

impl LearnerPriority {
    pub fn name(self) -> &'static str {
        match self {
            LearnerPriority::Idle => "idle",
            LearnerPriority::Low => "low",
            LearnerPriority::Normal => "normal",
        }
    }
}

impl TryFrom<String> for LearnerPriority {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use LearnerPriority::*;
        crate::config::one_of(&s, &[Idle, Low, Normal], LearnerPriority::name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tracking {
    pub enabled: bool,
    /// What a sequence of reads is grouped by.
    pub context: ContextBy,
    /// For `key_segment`: a regex whose first capture group names the context.
    pub context_pattern: String,
    pub stale_after_secs: u64,
    pub max_contexts: usize,
    pub channel_capacity: usize,
    /// The learner thread's CPU priority: idle (SCHED_IDLE: only CPU nothing else wants),
    /// low (nice 19) or normal (the proxy's own).
    pub learner_priority: LearnerPriority,
    /// The most of one core the learner uses, in percent (100 = no limit): past it, it rests,
    /// reads pile up and it learns from a narrower sample of contexts.
    pub learner_cpu_percent: u32,
    pub order: u8,
    pub lookahead: usize,
    pub templates: bool,
    pub template_patterns: Vec<String>,
    pub min_support: f64,
    pub half_life_secs: f64,
    pub top_k: usize,
    pub max_states: usize,
    pub hotkeys_capacity: usize,
    pub hotkeys_window_secs: u64,
    pub access_log: String,
    pub access_log_sample: f64,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            enabled: true,
            context: ContextBy::Connection,
            context_pattern: String::new(),
            stale_after_secs: 1800,
            max_contexts: 100_000,
            channel_capacity: 65_536,
            learner_priority: LearnerPriority::Idle,
            learner_cpu_percent: 10,
            order: DEFAULTS.order,
            lookahead: DEFAULTS.lookahead,
            templates: DEFAULTS.templates,
            template_patterns: Vec::new(),
            min_support: DEFAULTS.min_support,
            half_life_secs: DEFAULTS.half_life_secs,
            top_k: DEFAULTS.top_k,
            max_states: DEFAULTS.max_states,
            hotkeys_capacity: 256,
            hotkeys_window_secs: 60,
            access_log: String::new(),
            access_log_sample: 1.0,
        }
    }
}

impl Tracking {
    /// The model these settings and `[prefetch]`'s thresholds make.
    pub fn model(&self, prefetch: &crate::prefetch::settings::Prefetch) -> ModelConfig {
        let mut m = ModelConfig {
            order: self.order,
            templates: self.templates,
            min_support: self.min_support,
            half_life_secs: self.half_life_secs,
            top_k: self.top_k,
            max_states: self.max_states,
            lookahead: self.lookahead,
            ..DEFAULTS
        };
        prefetch.apply_to(&mut m);
        m
    }

    /// The first invalid key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |k: &'static str, why: &str| Err((k, why.to_string()));
        match self.context {
            ContextBy::Connection | ContextBy::ClientName => {}
            ContextBy::KeySegment => {
                let re = regex::bytes::Regex::new(&self.context_pattern)
                    .map_err(|e| ("tracking.context_pattern", e.to_string()))?;
                if re.captures_len() < 2 {
                    return bad("tracking.context_pattern", "needs a capture group");
                }
            }
        }
        if !(1..=100).contains(&self.learner_cpu_percent) {
            return bad("tracking.learner_cpu_percent", "must be 1 to 100");
        }
        if !(1..=2).contains(&self.order) {
            return bad("tracking.order", "must be 1 or 2");
        }
        if !(1..=16).contains(&self.lookahead) {
            return bad("tracking.lookahead", "must be 1 to 16");
        }
        Templater::new(&self.template_patterns).map_err(|e| ("tracking.template_patterns", e))?;
        for (k, v) in [("tracking.access_log_sample", self.access_log_sample)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(k, "must be between 0 and 1");
            }
        }
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !non_negative(self.half_life_secs) || !non_negative(self.min_support) {
            return bad(
                "tracking.half_life_secs",
                "half_life_secs and min_support must be >= 0",
            );
        }
        for (k, v) in [
            ("tracking.max_contexts", self.max_contexts),
            ("tracking.channel_capacity", self.channel_capacity),
            ("tracking.top_k", self.top_k),
            ("tracking.max_states", self.max_states),
            ("tracking.hotkeys_capacity", self.hotkeys_capacity),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        Ok(())
    }
}
