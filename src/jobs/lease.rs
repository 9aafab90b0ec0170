//! Leadership for singleton jobs: one lease in the store (`prescient:jobs:lease`, `holder
//! token`, with a TTL), renewed at a third of the TTL, and a fencing token from a counter
//! (`prescient:jobs:fence`) that only a new holder increments. A singleton job's writes go
//! through the FENCED script with its token, so a leader that stalled (SIGSTOP, a long GC in
//! a neighbour, a partition) and lost the lease meanwhile has its late writes refused.
//!
//! A holder counts itself leader only until its last renewal plus the TTL, by its own monotonic
//! clock: after a stall it knows it may have lost the lease before the store tells it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{call, Frame};
use crate::upstream::scripts::{FENCED, LEASE, RELEASE};
use crate::upstream::Upstream;

pub const LEASE_KEY: &str = "prescient:jobs:lease";
pub const FENCE_KEY: &str = "prescient:jobs:fence";

pub struct Lease {
    up: Arc<Upstream>,
    holder: String,
    ttl: Duration,
    /// The token while leader, else 0.
    token: AtomicU64,
    /// Leader until then (the last renewal's start plus the TTL).
    until: Mutex<Option<Instant>>,
    /// Times this instance became leader.
    pub acquired: AtomicU64,
    /// 1 while leading (`prescient_job_leader`).
    gauge: prometheus::IntGauge,
}

impl Lease {
    pub fn new(
        up: Arc<Upstream>,
        holder: String,
        ttl: Duration,
        gauge: prometheus::IntGauge,
    ) -> Arc<Lease> {
        Arc::new(Lease {
            gauge,
            up,
            holder,
            ttl,
            token: AtomicU64::new(0),
            until: Mutex::new(None),
            acquired: AtomicU64::new(0),
        })
    }

    /// The fencing token while this instance leads.
    pub fn token(&self) -> Option<u64> {
        let until = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        match (self.token.load(Ordering::Relaxed), until) {
            (0, _) | (_, None) => None,
            (t, Some(u)) if Instant::now() < u => Some(t),
            _ => None,
        }
    }

    /// Tries to take or renew the lease once.
    pub async fn tick(&self) {
        let started = Instant::now();
        let args = LEASE.call(
            [
                Bytes::from_static(LEASE_KEY.as_bytes()),
                Bytes::from_static(FENCE_KEY.as_bytes()),
            ],
            [
                Bytes::from(self.holder.clone()),
                Bytes::from(self.ttl.as_millis().to_string()),
            ],
        );
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner()).take();
        match call(&self.up, &args).await {
            Ok(Frame::Integer(t)) if t > 0 => {
                let t = t as u64;
                if self.token.swap(t, Ordering::Relaxed) != t {
                    self.acquired.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(holder = %self.holder, token = t, "jobs: leading");
                }
                until = Some(started + self.ttl);
            }
            Ok(_) => {
                if self.token.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(holder = %self.holder, "jobs: lease held by another instance");
                }
                until = None;
            }
            // The store did not answer: keep what we had; it lapses at `until` by itself.
            Err(e) => tracing::debug!(error = %e, "jobs: lease renewal failed"),
        }
        self.gauge.set(i64::from(until.is_some()));
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// Renews until `stop`, then lets the lease go (so another instance takes over at once).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = self.ttl / 3;
        loop {
            self.tick().await;
            let wait = if self.token().is_some() {
                every
            } else {
                // Followers poll more often, so a takeover comes soon after the TTL.
                (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(250))
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(t) = self.token() {
            let value = format!("{} {t}", self.holder);
            let args = RELEASE.call(
                [Bytes::from_static(LEASE_KEY.as_bytes())],
                [Bytes::from(value)],
            );
            let _ = call(&self.up, &args).await;
        }
    }

    /// `cmd` (touching `keys`) run only while `token` is current: the FENCED script.
    pub fn fenced(token: u64, keys: &[Bytes], cmd: Vec<Bytes>) -> Vec<Bytes> {
        let mut k = vec![Bytes::from_static(FENCE_KEY.as_bytes())];
        k.extend(keys.iter().cloned());
        let mut a = vec![Bytes::from(token.to_string())];
        a.extend(cmd);
        FENCED.call(k, a)
    }
}
