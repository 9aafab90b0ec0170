//! The state every connection shares, built once from the settings: the upstream, the
//! compressor, the tracker, the client registry, users and limits, and the admin face's
//! [`View`] of them.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_util::sync::CancellationToken;

use crate::admin::{Parts, View};
use crate::clients::Registry;
use crate::command::acl::{Denylist, Rules};
use crate::compression::Compressor;
use crate::config::{Settings, Tunables};
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::tracking::template::Templater;
use crate::tracking::tracker::Tracker;
use crate::upstream::Upstream;

/// A named user allowed to authenticate to the proxy.
pub struct User {
    pub name: String,
    pub password: String,
    pub rules: Rules,
}

/// Who may connect: the default user's password and the named users (`[auth]`); replaced
/// whole by a reload that changes them.
#[derive(Default)]
pub struct Auth {
    pub password: String,
    pub users: Vec<User>,
}

impl Auth {
    pub fn new(a: &crate::config::Auth) -> Auth {
        Auth {
            password: a.password.clone(),
            users: a
                .users
                .iter()
                .map(|u| User {
                    name: u.name.clone(),
                    password: u.password.clone(),
                    rules: u.commands.rules().clone(),
                })
                .collect(),
        }
    }

    /// The named user `name`.
    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }
}

/// State every connection shares.
pub struct Shared {
    pub settings: Settings,
    pub tunables: Arc<Tunables>,
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    /// The compression policy (envelopes are decoded even when compression is off).
    pub compressor: Arc<Compressor>,
    /// Learns from every key read (tracking/).
    pub tracker: Arc<Tracker>,
    pub clients: Arc<Registry>,
    /// The application's HTTP API, when routes are configured (read-through); replaced by a
    /// reload that changes the routes. A request decides its route against the origin it
    /// loaded and keeps that origin until its reply (see session/forward.rs).
    pub origin: Arc<ArcSwapOption<crate::origin::Origin>>,
    /// The prefetch pipeline, when there is an origin and tracking is on.
    pub prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
    /// Background jobs (jobs/): warming, count sync, expiry sweeps, cleanup; replaced whole by
    /// a reload that changes their settings.
    pub jobs: Arc<ArcSwap<crate::jobs::Jobs>>,
    /// What INFO, PROXY and the admin HTTP server see: no secrets.
    pub admin: Arc<View>,
    /// Replaced by a reload that changes `server.deny_commands`.
    pub deny: ArcSwap<Denylist>,
    /// Replaced by a reload that changes `[auth]`.
    pub auth: ArcSwap<Auth>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    /// Where the settings came from and what they are now (reload.rs).
    pub(crate) reload: crate::reload::Source,
    /// Bumped by each reload after it replaced what it replaces (the deny list, the origin,
    /// the jobs): a session keeps its own copies and takes new ones when this moves, so the
    /// request path reads one atomic instead of three swaps per command.
    pub generation: std::sync::atomic::AtomicU64,
}

/// A session's copies of what a reload may replace ([`Shared::generation`]).
pub struct Current {
    pub generation: u64,
    pub deny: Arc<Denylist>,
    pub origin: Option<Arc<crate::origin::Origin>>,
    pub jobs: Arc<crate::jobs::Jobs>,
}

impl Current {
    pub fn of(sh: &Shared) -> Current {
        Current {
            // Read first: a reload bumps it after its stores, so these copies are at least
            // as new as the number.
            generation: sh.generation.load(std::sync::atomic::Ordering::Acquire),
            deny: sh.deny.load_full(),
            origin: sh.origin.load_full(),
            jobs: sh.jobs.load_full(),
        }
    }
}

impl Shared {
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Shared> {
        let tunables = Arc::new(Tunables::new(&settings));
        let upstream = Arc::new(Upstream::new(&settings, tunables.clone(), metrics.clone()));
        // Validated at load: a pattern that does not compile never gets here.
        let templater = Templater::new(&settings.tracking.template_patterns).unwrap_or_default();
        let compressor = Arc::new(Compressor::new(
            &settings.compression,
            &templater,
            &metrics.registry,
        ));
        compressor.dicts.start_trainer(upstream.clone());
        let origin_metrics = crate::origin::Metrics::new(&metrics.registry);
        let origin = crate::origin::Origin::new(
            &settings.origin,
            upstream.clone(),
            compressor.clone(),
            origin_metrics.clone(),
        );
        if let Some(store) = upstream.memory() {
            let _ = store.compressor.set(compressor.clone());
        }
        let model = settings.tracking.model(&settings.prefetch);
        let tracker = Arc::new(Tracker::start_with(
            &settings.tracking,
            model,
            &metrics.registry,
        )?);
        // Prefetching needs routes to fetch through and a tracker to predict.
        let prefetch = match &origin {
            Some(o) if tracker.enabled() => Some(crate::prefetch::Prefetcher::start(
                &settings.prefetch,
                o.clone(),
                upstream.clone(),
                tracker.clone(),
                &metrics.registry,
                shutdown.clone(),
            )),
            _ => None,
        };
        let jobs_metrics = crate::jobs::Metrics::new(&metrics.registry);
        let jobs = crate::jobs::Jobs::start(
            &settings,
            crate::jobs::Parts {
                up: upstream.clone(),
                origin: origin.clone(),
                tracker: tracker.clone(),
                prefetch: prefetch.clone(),
                metrics: jobs_metrics.clone(),
            },
        );
        let jobs = Arc::new(ArcSwap::new(jobs));
        let origin = Arc::new(ArcSwapOption::new(origin));
        let clients = Arc::new(Registry::default());
        let admin = Arc::new(View::new(
            &settings,
            Parts {
                metrics: metrics.clone(),
                tunables: tunables.clone(),
                health: upstream.connector.health.clone(),
                clients: clients.clone(),
                compressor: compressor.clone(),
                tracker: tracker.clone(),
                prefetch: prefetch.clone(),
                jobs: jobs.clone(),
                origin: origin.clone(),
                store: upstream.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        Ok(Shared {
            origin,
            prefetch,
            jobs,
            admin,
            clients,
            tracker,
            deny: ArcSwap::from_pointee(Denylist::new(&settings.server.deny_commands)),
            reload: crate::reload::Source::new(&settings, jobs_metrics, origin_metrics),
            generation: std::sync::atomic::AtomicU64::new(0),
            limits: Limits {
                max_bulk_len: settings.limits.max_bulk_len as usize,
                max_array_len: settings.limits.max_array_len as usize,
            },
            tunables,
            metrics,
            upstream,
            compressor,
            auth: ArcSwap::from_pointee(Auth::new(&settings.auth)),
            settings,
            shutdown,
        })
    }
}

impl Shared {
    /// A demand read found `key` in the store: the prefetch ledger and warming's efficiency
    /// count it.
    pub fn note_hit(&self, key: &[u8]) {
        if let Some(p) = &self.prefetch {
            p.note_hit(key);
        }
        if let Some(w) = &self.jobs.load().warming {
            w.note_read(key);
        }
    }

    /// An MGET's reply: each routed key whose element is not nil was found.
    pub fn note_hits(&self, raw: &[u8], keys: &[bytes::Bytes], routes: &[Option<usize>]) {
        if let Some(p) = &self.prefetch {
            p.note_hits(raw, keys, routes);
        }
        if let Some(w) = &self.jobs.load().warming {
            let Some(spans) = crate::compression::reply::array_elements(raw) else {
                return;
            };
            for ((&(s, e), key), route) in spans.iter().zip(keys).zip(routes) {
                if route.is_some() && !crate::origin::is_nil(&raw[s..e]) {
                    w.note_read(key);
                }
            }
        }
    }
}
