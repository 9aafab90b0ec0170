//! Administration: PROXY commands, the INFO section and the HTTP endpoints.
//!
//! Everything here reads the proxy through a [`View`]: counters, tunables, the upstream's
//! health, the client registry, the compressor, the tracker, the prefetcher and the jobs, and
//! the settings with every secret masked. No part of the admin face holds the settings
//! themselves, so a bug in it (or in the HTTP API) cannot print a password; it reaches the
//! store only through upstream::Internal, whose connector shows a masked URL.
pub mod api;
pub mod http;
pub mod info;
pub mod proxy_cmd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::clients::Registry;
use crate::compression::Compressor;
use crate::config::{Settings, Tunables};
use crate::metrics::Metrics;
use crate::tracking::tracker::Tracker;
use crate::upstream::Health;

/// What the admin face may see of the proxy.
pub struct View {
    pub metrics: Arc<Metrics>,
    pub tunables: Arc<Tunables>,
    pub health: Arc<Health>,
    /// The upstream as shown to operators (no credentials).
    pub upstream: String,
    pub pool_size: usize,
    pub clients: Arc<Registry>,
    pub compressor: Arc<Compressor>,
    pub tracker: Arc<Tracker>,
    /// What the HTTP API operates: the prefetch pipeline, the jobs, the origin's routes, and
    /// the store (for INFO and DBSIZE through upstream::Internal; its credentials stay in its
    /// connector, which shows only a masked URL).
    pub prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
    /// The jobs (a reload may replace them: load them at each use).
    pub jobs: Arc<arc_swap::ArcSwap<crate::jobs::Jobs>>,
    pub origin: Arc<arc_swap::ArcSwapOption<crate::origin::Origin>>,
    pub store: Arc<crate::upstream::Upstream>,
    /// `server.admin_token` (never shown: the settings keep it masked).
    pub(crate) token: String,
    pub started: Instant,
    /// The settings flattened to `section.key`, secrets masked (a reload updates what it
    /// applied).
    pub settings: std::sync::RwLock<BTreeMap<String, String>>,
    pub shutdown: CancellationToken,
}

/// The parts of the proxy a [`View`] is made from.
pub struct Parts {
    pub metrics: Arc<Metrics>,
    pub tunables: Arc<Tunables>,
    pub health: Arc<Health>,
    pub clients: Arc<Registry>,
    pub compressor: Arc<Compressor>,
    pub tracker: Arc<Tracker>,
    pub prefetch: Option<Arc<crate::prefetch::Prefetcher>>,
    pub jobs: Arc<arc_swap::ArcSwap<crate::jobs::Jobs>>,
    pub origin: Arc<arc_swap::ArcSwapOption<crate::origin::Origin>>,
    pub store: Arc<crate::upstream::Upstream>,
    pub shutdown: CancellationToken,
}

impl View {
    /// The view of a proxy built from `settings`: the settings are read here, once, and only
    /// their masked form is kept.
    pub fn new(settings: &Settings, p: Parts) -> View {
        View {
            upstream: settings.upstream_url().display(),
            pool_size: settings.upstream.pool_size,
            settings: std::sync::RwLock::new(settings.flatten()),
            started: Instant::now(),
            metrics: p.metrics,
            tunables: p.tunables,
            health: p.health,
            clients: p.clients,
            compressor: p.compressor,
            tracker: p.tracker,
            prefetch: p.prefetch,
            jobs: p.jobs,
            origin: p.origin,
            store: p.store,
            token: settings.server.admin_token.clone(),
            shutdown: p.shutdown,
        }
    }
}
