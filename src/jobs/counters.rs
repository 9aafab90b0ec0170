//! View counts (`[counters]`): INCR, INCRBY, DECR, DECRBY and HINCRBY on a counter key run as
//! usual in the store, and every `interval_s` the deltas since the last sync go to a sink (an
//! HTTP POST of a JSON batch) — with nothing lost or counted twice across a crash of prescient,
//! a Redis restart or a sink outage:
//!
//! 1. The increment and its delta are one atomic step (the COUNT script: the command, then
//!    HINCRBY of `prescient:counters:pending`), so a counted increment always has its delta.
//! 2. A sync moves the pending deltas into a new batch atomically (BATCH: RENAME to
//!    `prescient:counters:batch:<id>`, the id leased to the mover in
//!    `prescient:counters:batches`), so increments after it go to the next batch.
//! 3. The batch is POSTed with `Idempotency-Key: <id>`, and deleted only after a 2xx.
//! 4. A batch whose mover died (its lease passed) is re-leased by whichever instance syncs
//!    next (RECLAIM) and sent again under the same id; the sink dedupes on it.
//!
//! A hash field's delta is reported as `<key>#<field>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::post::Poster;
use super::settings::Counters as Config;
use super::{call, unix_ms, Frame};
use crate::command::Command;
use crate::tracking::template::KeyPattern;
use crate::upstream::scripts::{BATCH, COUNT, RECLAIM};
use crate::upstream::Upstream;

pub const PENDING: &str = "prescient:counters:pending";
pub const BATCHES: &str = "prescient:counters:batches";
pub const BATCH_PREFIX: &str = "prescient:counters:batch:";

/// Batches sent per sync at most (the rest wait for the next).
const MAX_BATCHES: usize = 100;

/// The count sync's metrics, registered once.
#[derive(Clone)]
pub struct Metrics {
    keys: IntCounter,
    views: IntCounter,
    batches: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        use crate::metrics::register;
        Metrics {
            keys: register(
                registry,
                IntCounter::new(
                    "prescient_counter_keys_synced_total",
                    "Counter keys sent to the sink (one per key per batch)",
                )
                .expect("metric"),
            ),
            views: register(
                registry,
                IntCounter::new(
                    "prescient_counter_increments_synced_total",
                    "Sum of the deltas the sink acknowledged",
                )
                .expect("metric"),
            ),
            batches: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "prescient_counter_batches_total",
                        "Count batches sent to the sink, by outcome (ok, failed)",
                    ),
                    &["outcome"],
                )
                .expect("metric"),
            ),
        }
    }
}

pub struct Counters {
    patterns: Vec<KeyPattern>,
    cfg: Config,
    up: Arc<Upstream>,
    poster: Poster,
    instance: String,
    lease: Duration,
    seq: AtomicU64,
    m: Metrics,
}

impl Counters {
    pub fn new(
        cfg: &Config,
        up: Arc<Upstream>,
        instance: String,
        lease: Duration,
        m: Metrics,
    ) -> Counters {
        Counters {
            patterns: cfg
                .patterns
                .iter()
                .filter_map(|p| KeyPattern::parse(p).ok())
                .collect(),
            cfg: cfg.clone(),
            up,
            poster: Poster::default(),
            instance,
            lease,
            seq: AtomicU64::new(0),
            m,
        }
    }

    /// Whether syncing is configured (a sink and patterns).
    pub fn active(&self) -> bool {
        !self.cfg.sink_url.is_empty() && !self.patterns.is_empty()
    }

    /// The command with its delta recorded atomically, when `cmd` increments a counter key.
    pub fn rewrite(&self, cmd: &Command) -> Option<Command> {
        if !self.active() {
            return None;
        }
        let name = cmd.known_name()?;
        let a = &cmd.args;
        let (key, field, delta) = match (name, a.len()) {
            ("incr", 2) => (&a[1], None, 1),
            ("decr", 2) => (&a[1], None, -1),
            ("incrby", 3) => (&a[1], None, parse(&a[2])?),
            ("decrby", 3) => (&a[1], None, parse(&a[2])?.checked_neg()?),
            ("hincrby", 4) => (&a[1], Some(&a[2]), parse(&a[3])?),
            _ => return None,
        };
        if !self.patterns.iter().any(|p| p.matches(key)) {
            return None;
        }
        let label = match field {
            Some(f) => {
                let mut l = key.to_vec();
                l.push(b'#');
                l.extend_from_slice(f);
                Bytes::from(l)
            }
            None => key.clone(),
        };
        let mut argv = vec![label, Bytes::from(delta.to_string())];
        argv.extend(a.iter().cloned());
        Some(Command::from_args(COUNT.call(
            [key.clone(), Bytes::from_static(PENDING.as_bytes())],
            argv,
        )))
    }

    /// One sync: the pending deltas into a new batch, then every batch this instance holds or
    /// whose holder's lease passed, sent. The summary line, or why it failed.
    pub async fn sync(&self) -> Result<String, String> {
        if !self.active() {
            return Ok("no sink configured".into());
        }
        let now = unix_ms();
        let deadline = Bytes::from((now + self.lease.as_millis() as u64).to_string());
        let id = format!(
            "{}-{now}-{}",
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut mine = Vec::new();
        let moved = call(
            &self.up,
            &BATCH.call(
                [
                    Bytes::from_static(PENDING.as_bytes()),
                    Bytes::from(format!("{BATCH_PREFIX}{id}")),
                    Bytes::from_static(BATCHES.as_bytes()),
                ],
                [Bytes::from(id.clone()), deadline.clone()],
            ),
        )
        .await?;
        if moved == Frame::Integer(1) {
            mine.push(id);
        }
        let reclaimed = call(
            &self.up,
            &RECLAIM.call(
                [Bytes::from_static(BATCHES.as_bytes())],
                [
                    Bytes::from(now.to_string()),
                    deadline,
                    Bytes::from(MAX_BATCHES.to_string()),
                ],
            ),
        )
        .await?;
        mine.extend(super::strings(reclaimed));
        let (mut keys, mut total, mut failed) = (0usize, 0i64, Vec::new());
        for id in &mine {
            match self.send(id).await {
                Ok((k, t)) => {
                    keys += k;
                    total += t;
                }
                Err(e) => failed.push(format!("batch {id}: {e}")),
            }
        }
        let line = format!("View count sync: {keys} keys, {total} total views");
        if keys > 0 || !failed.is_empty() {
            tracing::info!("{line}");
        }
        match failed.is_empty() {
            true => Ok(line),
            false => Err(format!(
                "{line}; {} failed: {}",
                failed.len(),
                failed.join("; ")
            )),
        }
    }

    /// Sends one batch; deleted once the sink acknowledges. Its keys and total.
    async fn send(&self, id: &str) -> Result<(usize, i64), String> {
        let key = Bytes::from(format!("{BATCH_PREFIX}{id}"));
        let fields = call(&self.up, &[Bytes::from_static(b"HGETALL"), key.clone()]).await?;
        let fields = super::strings(fields);
        let mut counts = serde_json::Map::new();
        let mut total = 0i64;
        for pair in fields.chunks_exact(2) {
            let n: i64 = pair[1].parse().unwrap_or(0);
            total += n;
            counts.insert(pair[0].clone(), n.into());
        }
        if !counts.is_empty() {
            let body = serde_json::json!({"batch": id, "counts": counts}).to_string();
            let timeout = Duration::from_millis(self.cfg.timeout_ms);
            if let Err(e) = self
                .poster
                .post(&self.cfg.sink_url, body, id, timeout)
                .await
            {
                self.m.batches.with_label_values(&["failed"]).inc();
                return Err(e);
            }
            self.m.batches.with_label_values(&["ok"]).inc();
        }
        // The batch first: should we stop between the two, the id left in the zset has
        // nothing to send and is dropped next time.
        call(&self.up, &[Bytes::from_static(b"DEL"), key]).await?;
        call(
            &self.up,
            &[
                Bytes::from_static(b"ZREM"),
                Bytes::from_static(BATCHES.as_bytes()),
                Bytes::from(id.to_string()),
            ],
        )
        .await?;
        self.m.keys.inc_by(counts.len() as u64);
        self.m.views.inc_by(total.max(0) as u64);
        Ok((counts.len(), total))
    }
}

/// Whether `cmd` is one a counter key's increment may be (checked before anything else, on
/// every command).
pub fn counts(cmd: &Command) -> bool {
    matches!(
        cmd.known_name(),
        Some("incr" | "incrby" | "decr" | "decrby" | "hincrby")
    )
}

fn parse(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}
