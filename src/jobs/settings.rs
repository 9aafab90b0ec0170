//! `[jobs]`, `[[warming.tasks]]`, `[counters]` and `[[expiry.sets]]` (documented one key at a
//! time in conf/prescient.toml).

use serde::{Deserialize, Serialize};

use crate::tracking::template::KeyPattern;

/// `[jobs]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Jobs {
    /// How long leadership (singleton jobs) and a claim (an expiry member, a count batch) hold
    /// without renewal; another instance takes over within this plus its poll.
    pub lease_ttl_ms: u64,
    /// Seconds between cleanup runs (tag index and bookkeeping entries of keys gone).
    pub cleanup_interval_s: u64,
    /// Seconds a critical warming task may hold `/ready` at 503 at start.
    pub critical_deadline_s: u64,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            lease_ttl_ms: 10_000,
            cleanup_interval_s: 60,
            critical_deadline_s: 60,
        }
    }
}

/// `[warming]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Warming {
    pub tasks: Vec<WarmTask>,
}

/// `warming.tasks[].interval`: seconds, or "adaptive" (from how often the task's keys are read).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawInterval", into = "RawInterval")]
pub enum Interval {
    Adaptive,
    Every(u64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawInterval {
    Num(u64),
    Str(String),
}

impl TryFrom<RawInterval> for Interval {
    type Error = String;
    fn try_from(r: RawInterval) -> Result<Self, String> {
        match r {
            RawInterval::Num(0) => Err("an interval of 0 seconds".into()),
            RawInterval::Num(n) => Ok(Interval::Every(n)),
            RawInterval::Str(s) if s == "adaptive" => Ok(Interval::Adaptive),
            RawInterval::Str(s) => Err(format!("`{s}` is neither \"adaptive\" nor seconds")),
        }
    }
}

impl From<Interval> for RawInterval {
    fn from(i: Interval) -> RawInterval {
        match i {
            Interval::Adaptive => RawInterval::Str("adaptive".into()),
            Interval::Every(n) => RawInterval::Num(n),
        }
    }
}

/// One `[[warming.tasks]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WarmTask {
    pub name: String,
    /// The origin route the keys are fetched through.
    pub route: String,
    /// Keys, listed.
    pub keys: Vec<String>,
    /// Ids filled into the route's template: "1-500", or "1,5,9".
    pub ids: String,
    /// The N keys read most often (the tracker's counts).
    pub top_hot: u32,
    /// Higher runs first.
    pub priority: i64,
    /// Run at start; `/ready` answers 503 until it has run (or `jobs.critical_deadline_s`).
    pub critical: bool,
    pub interval: Interval,
    /// A cron expression (UTC; 5 fields, or 6 with seconds first); when set, it schedules the
    /// task instead of `interval`.
    pub cron: String,
    /// Tags the filled keys get (besides the route's).
    pub tags: Vec<String>,
}

impl Default for WarmTask {
    fn default() -> Self {
        WarmTask {
            name: String::new(),
            route: String::new(),
            keys: Vec::new(),
            ids: String::new(),
            top_hot: 0,
            priority: 0,
            critical: false,
            interval: Interval::Every(3600),
            cron: String::new(),
            tags: Vec::new(),
        }
    }
}

/// `[counters]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Counters {
    /// Where batches of deltas are POSTed; empty: counters are not synced.
    pub sink_url: String,
    pub interval_s: u64,
    /// Counter keys: `views:product:{id}`.
    pub patterns: Vec<String>,
    /// Per sink request, ms.
    pub timeout_ms: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            sink_url: String::new(),
            interval_s: 5,
            patterns: Vec::new(),
            timeout_ms: 5000,
        }
    }
}

/// `[expiry]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Expiry {
    pub sets: Vec<ExpirySet>,
}

/// One `[[expiry.sets]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExpirySet {
    pub name: String,
    /// Sorted set: member -> expires_at (unix seconds).
    pub key: String,
    pub interval_s: u64,
    /// Key templates deleted per member: `offer:{member}`.
    pub delete: Vec<String>,
    /// Channel the member is published on.
    pub publish: String,
    /// URL POSTed `{"member": ..., "expires_at": ...}` per member.
    pub webhook: String,
    /// Members claimed per round at most (a sweep runs rounds until none is due).
    pub batch: u32,
    /// A cron expression (UTC) scheduling the sweep instead of `interval_s`.
    pub cron: String,
}

impl Default for ExpirySet {
    fn default() -> Self {
        ExpirySet {
            name: String::new(),
            key: String::new(),
            interval_s: 60,
            delete: Vec::new(),
            publish: String::new(),
            webhook: String::new(),
            batch: 500,
            cron: String::new(),
        }
    }
}

/// Checks the four sections against each other and the origin's routes; the error names the
/// key.
pub fn validate(
    jobs: &Jobs,
    warming: &Warming,
    counters: &Counters,
    expiry: &Expiry,
    routes: &[crate::config::OriginRoute],
) -> Result<(), (String, String)> {
    let bad = |k: String, why: &str| Err((k, why.to_string()));
    if jobs.lease_ttl_ms < 100 {
        return bad("jobs.lease_ttl_ms".into(), "must be at least 100");
    }
    if jobs.cleanup_interval_s == 0 {
        return bad("jobs.cleanup_interval_s".into(), "must be at least 1");
    }
    let mut names = std::collections::HashSet::new();
    for (i, t) in warming.tasks.iter().enumerate() {
        let key = |k: &str| format!("warming.tasks[{i}].{k}");
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return bad(key("name"), "must be set and unique");
        }
        let Some(route) = routes.iter().find(|r| r.name == t.route) else {
            return bad(key("route"), "names no [[origin.routes]] entry");
        };
        if !t.cron.is_empty() {
            parse_cron(&t.cron).map_err(|e| (key("cron"), e))?;
        }
        let sources = usize::from(!t.keys.is_empty())
            + usize::from(!t.ids.is_empty())
            + usize::from(t.top_hot > 0);
        if sources != 1 {
            return bad(key("keys"), "give exactly one of keys, ids or top_hot");
        }
        if !t.ids.is_empty() {
            if let Err(e) = parse_ids(&t.ids) {
                return bad(key("ids"), &e);
            }
            let p = KeyPattern::parse(&route.key).map_err(|e| (key("route"), e))?;
            if p.names().count() != 1 {
                return bad(
                    key("ids"),
                    "needs a route whose key has exactly one placeholder",
                );
            }
        }
    }
    let c = counters;
    if !c.sink_url.is_empty() {
        url::Url::parse(&c.sink_url)
            .map_err(|e| ("counters.sink_url".to_string(), e.to_string()))?;
    }
    if c.interval_s == 0 {
        return bad("counters.interval_s".into(), "must be at least 1");
    }
    for (i, p) in c.patterns.iter().enumerate() {
        KeyPattern::parse(p).map_err(|e| (format!("counters.patterns[{i}]"), e))?;
    }
    let mut names = std::collections::HashSet::new();
    for (i, s) in expiry.sets.iter().enumerate() {
        let key = |k: &str| format!("expiry.sets[{i}].{k}");
        if s.name.is_empty() || !names.insert(s.name.as_str()) {
            return bad(key("name"), "must be set and unique");
        }
        if s.key.is_empty() {
            return bad(key("key"), "must be set");
        }
        if s.interval_s == 0 {
            return bad(key("interval_s"), "must be at least 1");
        }
        if !s.cron.is_empty() {
            parse_cron(&s.cron).map_err(|e| (key("cron"), e))?;
        }
        if s.batch == 0 {
            return bad(key("batch"), "must be at least 1");
        }
        for d in &s.delete {
            if !d.contains("{member}") {
                return bad(key("delete"), "each template needs {member}");
            }
        }
        if !s.webhook.is_empty() {
            url::Url::parse(&s.webhook).map_err(|e| (key("webhook"), e.to_string()))?;
        }
    }
    Ok(())
}

/// A cron expression: 5 fields (minute first), or 6-7 with seconds first (and a year).
pub fn parse_cron(s: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr;
    let fields = s.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {s}"),
        _ => s.to_string(),
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("`{s}` is not a cron expression: {e}"))
}

/// Most ids an `ids` list or range may name.
pub const MAX_IDS: u64 = 1_000_000;

/// "1-500" or "1,5,9" (or a mix: "1-3,7").
pub fn parse_ids(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = match (a.trim().parse(), b.trim().parse()) {
                    (Ok(a), Ok(b)) if a <= b => (a, b),
                    _ => return Err(format!("`{part}` is not a range low-high")),
                };
                if b - a >= MAX_IDS || out.len() as u64 + b - a >= MAX_IDS {
                    return Err(format!("more than {MAX_IDS} ids"));
                }
                out.extend((a..=b).map(|n| n.to_string()));
            }
            None => out.push(part.to_string()),
        }
    }
    if out.is_empty() {
        return Err("no ids".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ranges_and_lists() {
        assert_eq!(parse_ids("1-3,7").unwrap(), ["1", "2", "3", "7"]);
        assert_eq!(parse_ids("a, b").unwrap(), ["a", "b"]);
        assert!(parse_ids("5-1").is_err());
        assert!(parse_ids("").is_err());
        assert!(parse_ids("0-99999999999").is_err());
    }

    #[test]
    fn cron_takes_five_or_six_fields() {
        use chrono::TimeZone;
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 23, 59, 30)
            .unwrap();
        let next = |s: &str| {
            parse_cron(s)
                .unwrap()
                .after(&at)
                .next()
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(next("*/15 * * * *"), "2026-12-05T00:00:00+00:00");
        assert_eq!(next("45 * * * * *"), "2026-12-04T23:59:45+00:00");
        assert_eq!(next("0 3 * * *"), "2026-12-05T03:00:00+00:00");
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn an_interval_is_adaptive_or_seconds() {
        let t: WarmTask = toml::from_str("name='a'\ninterval='adaptive'").unwrap();
        assert_eq!(t.interval, Interval::Adaptive);
        let t: WarmTask = toml::from_str("name='a'\ninterval=30").unwrap();
        assert_eq!(t.interval, Interval::Every(30));
        assert!(toml::from_str::<WarmTask>("interval='often'").is_err());
        assert!(toml::from_str::<WarmTask>("interval=0").is_err());
    }
}
