//! Expiry sweeps (`[[expiry.sets]]`): a sorted set of (member, expires_at unix seconds); every
//! `interval_s` each instance claims the due members atomically (the CLAIM script moves them
//! into `prescient:expiry:<name>:claims`, leased for `jobs.lease_ttl_ms`) and runs the actions:
//! delete the templated keys, PUBLISH the member, POST the webhook. A member's claim is
//! released when its actions are done; a claim whose instance died is re-leased by the next
//! sweep after its lease passed, and its actions run again: deletes are idempotent, the
//! webhook carries `Idempotency-Key: <set>:<member>:<expires_at>` for the receiver to dedupe,
//! and PUBLISH is at least once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::post::Poster;
use super::settings::ExpirySet;
use super::{call, unix_ms, Frame};
use crate::upstream::scripts::CLAIM;
use crate::upstream::Upstream;

/// Members acted on at once.
const PARALLEL: usize = 32;

pub struct Sweep {
    pub cfg: ExpirySet,
    up: Arc<Upstream>,
    poster: Arc<Poster>,
    lease: Duration,
    pub processed: AtomicU64,
    pub errors: AtomicU64,
}

/// One sweep's tally.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    processed: u64,
    updated: u64,
    errors: u64,
}

impl Sweep {
    pub fn new(cfg: &ExpirySet, up: Arc<Upstream>, lease: Duration) -> Sweep {
        Sweep {
            cfg: cfg.clone(),
            up,
            poster: Arc::new(Poster::default()),
            lease,
            processed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    fn claims(&self) -> Bytes {
        Bytes::from(format!("prescient:expiry:{}:claims", self.cfg.name))
    }

    fn claimed(&self) -> Bytes {
        Bytes::from(format!("prescient:expiry:{}:claimed", self.cfg.name))
    }

    /// Claims and processes due members, round after round, until none is due.
    pub async fn run(&self) -> Result<String, String> {
        let mut t = Tally::default();
        loop {
            let now = unix_ms();
            let args = CLAIM.call(
                [
                    Bytes::from(self.cfg.key.clone()),
                    self.claims(),
                    self.claimed(),
                ],
                [
                    Bytes::from((now / 1000).to_string()),
                    Bytes::from(now.to_string()),
                    Bytes::from((now + self.lease.as_millis() as u64).to_string()),
                    Bytes::from(self.cfg.batch.to_string()),
                ],
            );
            let got = super::strings(call(&self.up, &args).await?);
            if got.is_empty() {
                break;
            }
            let mut set = tokio::task::JoinSet::new();
            let mut pairs = got.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone()));
            loop {
                while set.len() < PARALLEL {
                    let Some((member, due)) = pairs.next() else {
                        break;
                    };
                    let me = self.handle();
                    set.spawn(async move { me.act(member, due).await });
                }
                match set.join_next().await {
                    Some(Ok(Ok(updated))) => {
                        t.processed += 1;
                        t.updated += updated;
                    }
                    Some(Ok(Err(e))) => {
                        t.errors += 1;
                        tracing::debug!(set = %self.cfg.name, error = %e, "expiry action failed");
                    }
                    Some(Err(_)) => t.errors += 1,
                    None => break,
                }
            }
            if got.len() / 2 < self.cfg.batch as usize {
                break;
            }
        }
        self.processed.fetch_add(t.processed, Ordering::Relaxed);
        self.errors.fetch_add(t.errors, Ordering::Relaxed);
        let line = format!(
            "Offer expiration: {} processed, {} updated, {} errors",
            t.processed, t.updated, t.errors
        );
        if t.processed + t.errors > 0 {
            tracing::info!(set = %self.cfg.name, "{line}");
        }
        match t.errors {
            0 => Ok(line),
            _ => Err(line),
        }
    }

    /// What a spawned action needs, owned.
    fn handle(&self) -> Handle {
        Handle {
            cfg: self.cfg.clone(),
            up: self.up.clone(),
            poster: self.poster.clone(),
            claims: self.claims(),
            claimed: self.claimed(),
        }
    }

    /// `PROXY EXPIRING <set> <seconds>`: members expiring within `secs`, soonest first.
    pub async fn expiring(&self, secs: u64) -> Result<Vec<(String, String)>, String> {
        let now = unix_ms() / 1000;
        let got = call(
            &self.up,
            &[
                Bytes::from_static(b"ZRANGEBYSCORE"),
                Bytes::from(self.cfg.key.clone()),
                Bytes::from_static(b"-inf"),
                Bytes::from((now + secs).to_string()),
                Bytes::from_static(b"WITHSCORES"),
            ],
        )
        .await?;
        Ok(super::strings(got)
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect())
    }
}

struct Handle {
    cfg: ExpirySet,
    up: Arc<Upstream>,
    poster: Arc<Poster>,
    claims: Bytes,
    claimed: Bytes,
}

impl Handle {
    /// Runs a member's actions; releases its claim when all succeeded. Keys deleted.
    async fn act(&self, member: String, due: String) -> Result<u64, String> {
        let mut updated = 0;
        if !self.cfg.delete.is_empty() {
            let mut del = vec![Bytes::from_static(b"DEL")];
            del.extend(
                self.cfg
                    .delete
                    .iter()
                    .map(|t| Bytes::from(t.replace("{member}", &member))),
            );
            if let Frame::Integer(n) = call(&self.up, &del).await? {
                updated = n.max(0) as u64;
            }
        }
        if !self.cfg.publish.is_empty() {
            call(
                &self.up,
                &[
                    Bytes::from_static(b"PUBLISH"),
                    Bytes::from(self.cfg.publish.clone()),
                    Bytes::from(member.clone()),
                ],
            )
            .await?;
        }
        if !self.cfg.webhook.is_empty() {
            let at: serde_json::Value = due
                .parse::<i64>()
                .map(Into::into)
                .unwrap_or_else(|_| due.clone().into());
            let body = serde_json::json!({"member": member, "expires_at": at}).to_string();
            let key = format!("{}:{member}:{due}", self.cfg.name);
            self.poster
                .post(&self.cfg.webhook, body, &key, Duration::from_secs(10))
                .await?;
        }
        // The claim first, then its note: should we stop between, a stray note is harmless.
        let m = Bytes::from(member);
        call(
            &self.up,
            &[Bytes::from_static(b"ZREM"), self.claims.clone(), m.clone()],
        )
        .await?;
        call(
            &self.up,
            &[Bytes::from_static(b"HDEL"), self.claimed.clone(), m],
        )
        .await?;
        Ok(updated)
    }
}
