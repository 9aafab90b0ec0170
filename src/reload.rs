//! Reloading the configuration while running (SIGHUP, `PROXY CONFIG RELOAD`): the file (and the
//! environment and flags it was loaded with) is read again and validated whole; an invalid one
//! changes nothing and says why. What differs from the settings in force is applied where it can
//! change live, and every other difference is reported as needing a restart:
//!
//! - live: `prefetch.*` (the prefetcher's settings), the tunables (`server.max_clients`, ...),
//!   `server.deny_commands`, `[auth]` (the default user's password and the users: a connected
//!   client keeps its authentication, and its user's rules are the new ones from its next
//!   command; a removed user's clients get NOPERM), and the jobs' sections (`jobs`, `warming`,
//!   `counters`, `expiry`: the jobs are stopped, the count sync flushing, and started again);
//!   `[origin]` (a new Origin is built: a request keeps the one its route was decided
//!   against until its reply, the prefetcher drops jobs queued for the old one, fills in
//!   flight on the old one finish there);
//! - restart: everything else, among them the upstream and the listeners.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Overrides, Settings, TUNABLE_KEYS};
use crate::shared::Shared;

/// Where the settings came from, and the settings in force.
pub struct Source {
    origin: Mutex<Option<(Option<PathBuf>, Overrides)>>,
    applied: Mutex<Settings>,
    jobs_metrics: Arc<crate::jobs::Metrics>,
    origin_metrics: Arc<crate::origin::Metrics>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys applied while running.
    pub applied: Vec<String>,
    /// Keys that differ but take effect only after a restart.
    pub restart: Vec<String>,
}

impl Reloaded {
    /// The lines of `PROXY CONFIG RELOAD` and the log.
    pub fn lines(&self) -> Vec<String> {
        let list = |v: &[String]| match v.is_empty() {
            true => "(none)".to_string(),
            false => v.join(", "),
        };
        vec![
            format!("applied: {}", list(&self.applied)),
            format!("restart needed: {}", list(&self.restart)),
        ]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Source {
    pub fn new(
        settings: &Settings,
        jobs_metrics: Arc<crate::jobs::Metrics>,
        origin_metrics: Arc<crate::origin::Metrics>,
    ) -> Source {
        Source {
            origin: Mutex::new(None),
            applied: Mutex::new(settings.clone()),
            jobs_metrics,
            origin_metrics,
            running: tokio::sync::Mutex::new(()),
        }
    }
}

/// Sections whose change restarts the jobs.
const JOB_SECTIONS: &[&str] = &["jobs.", "warming.", "counters.", "expiry."];

/// How a changed key is applied.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum How {
    Prefetch,
    Tunable,
    Deny,
    Auth,
    Origin,
    Jobs,
    Restart,
}

fn how(key: &str) -> How {
    if key.starts_with("prefetch.") {
        How::Prefetch
    } else if TUNABLE_KEYS.contains(&key) {
        How::Tunable
    } else if key == "server.deny_commands" {
        How::Deny
    } else if key.starts_with("auth.") {
        How::Auth
    } else if key.starts_with("origin.") {
        How::Origin
    } else if JOB_SECTIONS.iter().any(|s| key.starts_with(s)) {
        How::Jobs
    } else {
        How::Restart
    }
}

/// Keys whose values differ (or exist in one only).
fn changed(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A list key (`origin.routes[0].name`, `warming.tasks...`) reported once by its section.
fn shown(key: &str) -> String {
    match key.find('[') {
        Some(i) => key[..i].to_string(),
        None => match key.strip_prefix("prefetch.hour_weights.") {
            Some(_) => "prefetch.hour_weights".into(),
            None => key.to_string(),
        },
    }
}

impl Shared {
    /// Records where the settings came from, so a reload reads the same file, environment and
    /// flags again.
    pub fn set_source(&self, file: Option<PathBuf>, overrides: Overrides) {
        *lock(&self.reload.origin) = Some((file, overrides));
    }

    /// Reloads the configuration (module docs); Err when it is invalid (nothing changed).
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let _one = self.reload.running.lock().await;
        let (file, overrides) = lock(&self.reload.origin)
            .clone()
            .ok_or("this instance was not started from a configuration it can read again")?;
        let new = Settings::load(file.as_deref(), &overrides).map_err(|e| e.to_string())?;
        let old = lock(&self.reload.applied).clone();
        let keys = changed(&old.flatten_unmasked(), &new.flatten_unmasked());
        let mut out = Reloaded::default();
        let mut restart_jobs = false;
        let mut prefetch_changed = false;
        let mut origin_changed = false;
        for key in &keys {
            let h = how(key);
            let name = shown(key);
            match h {
                How::Restart => out.restart.push(name),
                How::Prefetch if self.prefetch.is_none() => out.restart.push(name),
                How::Prefetch => {
                    prefetch_changed = true;
                    out.applied.push(name);
                }
                How::Tunable => {
                    let value = new.flatten_unmasked().get(key).cloned().unwrap_or_default();
                    match self.tunables.set(key, value.trim_matches('"')) {
                        Ok(()) => out.applied.push(name),
                        Err(e) => return Err(format!("{key}: {e}")),
                    }
                }
                How::Deny => {
                    self.deny.store(Arc::new(crate::command::acl::Denylist::new(
                        &new.server.deny_commands,
                    )));
                    out.applied.push(name);
                }
                How::Auth => {
                    self.auth
                        .store(Arc::new(crate::shared::Auth::new(&new.auth)));
                    out.applied.push(name);
                }
                How::Jobs => {
                    restart_jobs = true;
                    out.applied.push(name);
                }
                How::Origin => {
                    origin_changed = true;
                    out.applied.push(name);
                }
            }
        }
        if origin_changed {
            let origin = crate::origin::Origin::new(
                &new.origin,
                self.upstream.clone(),
                self.compressor.clone(),
                self.reload.origin_metrics.clone(),
            );
            match (&origin, &self.prefetch) {
                (Some(o), Some(p)) => p.set_origin(o.clone()),
                // No routes left: nothing to prefetch through.
                (None, Some(p)) => p.set_enabled(false),
                // Routes where there were none: read-through starts; prefetching needs a
                // restart to start.
                (Some(_), None) if new.tracking.enabled => out
                    .restart
                    .push("prefetch (to start prefetching through the new routes)".into()),
                _ => {}
            }
            self.origin.store(origin);
            // Warming and invalidation hold the origin.
            restart_jobs = true;
        }
        // With no routes left, prefetching stays off whatever its settings say.
        if prefetch_changed && self.origin.load().is_some() {
            if let Some(p) = &self.prefetch {
                apply_prefetch(p, &new.prefetch)?;
            }
        }
        if restart_jobs {
            let old_jobs = self.jobs.load_full();
            old_jobs.stop(Duration::from_secs(10)).await;
            let jobs = crate::jobs::Jobs::start(
                &new,
                crate::jobs::Parts {
                    up: self.upstream.clone(),
                    origin: self.origin.load_full(),
                    tracker: self.tracker.clone(),
                    prefetch: self.prefetch.clone(),
                    metrics: self.reload.jobs_metrics.clone(),
                },
            );
            self.jobs.store(jobs);
        }
        // Sessions take their new copies at their next command.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        out.applied.dedup();
        out.restart.dedup();
        // What was applied is in force now; what needs a restart is not.
        {
            let mut applied = lock(&self.reload.applied);
            let mut shown_settings = self
                .admin
                .settings
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let masked = new.flatten();
            applied.prefetch = new.prefetch.clone();
            applied.server.deny_commands = new.server.deny_commands.clone();
            applied.auth = new.auth.clone();
            applied.origin = new.origin.clone();
            applied.server.max_clients = new.server.max_clients;
            applied.server.idle_timeout_secs = new.server.idle_timeout_secs;
            applied.limits.max_pipeline = new.limits.max_pipeline;
            applied.limits.client_output_buffer_limit = new.limits.client_output_buffer_limit;
            applied.upstream.timeout_ms = new.upstream.timeout_ms;
            applied.jobs = new.jobs.clone();
            applied.warming = new.warming.clone();
            applied.counters = new.counters.clone();
            applied.expiry = new.expiry.clone();
            for key in keys.iter().filter(|k| how(k) != How::Restart) {
                match masked.get(key) {
                    Some(v) => shown_settings.insert(key.clone(), v.clone()),
                    None => shown_settings.remove(key),
                };
            }
        }
        tracing::info!(
            applied = %out.applied.join(","),
            restart_needed = %out.restart.join(","),
            "configuration reloaded"
        );
        if !out.restart.is_empty() {
            tracing::warn!(
                keys = %out.restart.join(","),
                "configuration changes that take effect only after a restart"
            );
        }
        Ok(out)
    }
}

/// Sets every prefetch setting to `p`'s (the prefetcher validates each again).
fn apply_prefetch(
    pf: &Arc<crate::prefetch::Prefetcher>,
    p: &crate::prefetch::settings::Prefetch,
) -> Result<(), String> {
    let threshold = match p.min_probability {
        crate::prefetch::settings::Threshold::Adaptive => "adaptive".to_string(),
        crate::prefetch::settings::Threshold::Fixed(t) => t.to_string(),
    };
    let hours: Vec<String> = p
        .hour_weights
        .iter()
        .map(|(range, w)| format!("{range}={w}"))
        .collect();
    for (k, v) in [
        ("enabled", p.enabled.to_string()),
        ("min_probability", threshold),
        ("touch_probability", p.touch_probability.to_string()),
        (
            "max_prefetch_per_schedule",
            p.max_prefetch_per_schedule.to_string(),
        ),
        ("max_load_factor", p.max_load_factor.to_string()),
        (
            "max_requests_per_second",
            p.max_requests_per_second.to_string(),
        ),
        ("num_workers", p.num_workers.to_string()),
        ("cache_space_threshold", p.cache_space_threshold.to_string()),
        ("queue_max_size", p.queue_max_size.to_string()),
        ("max_age_ms", p.max_age_ms.to_string()),
        ("hour_weights", hours.join(",")),
        ("hour_weights_utc", p.hour_weights_utc.to_string()),
    ] {
        pf.set(k, &v).map_err(|e| format!("prefetch.{k}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_into_live_and_restart() {
        assert_eq!(how("prefetch.num_workers"), How::Prefetch);
        assert_eq!(how("server.max_clients"), How::Tunable);
        assert_eq!(how("server.deny_commands"), How::Deny);
        assert_eq!(how("warming.tasks"), How::Jobs);
        assert_eq!(how("counters.patterns"), How::Jobs);
        assert_eq!(how("origin.routes"), How::Origin);
        assert_eq!(how("origin.timeout_ms"), How::Origin);
        assert_eq!(how("auth.users"), How::Auth);
        assert_eq!(how("auth.password"), How::Auth);
        assert_eq!(how("upstream.url"), How::Restart);
        assert_eq!(shown("origin.routes[0].url"), "origin.routes");
        assert_eq!(shown("prefetch.hour_weights.9-17"), "prefetch.hour_weights");
    }

    #[test]
    fn only_differences_count() {
        let a: BTreeMap<String, String> = [("x", "1"), ("y", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = a.clone();
        b.insert("y".into(), "3".into());
        b.insert("z".into(), "4".into());
        assert_eq!(changed(&a, &b), ["y", "z"]);
        assert!(changed(&a, &a).is_empty());
    }
}
