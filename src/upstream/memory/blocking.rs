//! Blocking pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, BZPOPMAX): served at once when
//! a key has data; otherwise the client waits in a first-come queue per key and is woken when
//! a push touches one of its keys, or answered with a null when its timeout passes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{lists, parse_f64, zsets, Ctx, Out, Store, SYNTAX, WRONGTYPE};
use crate::protocol::Proto;
use crate::upstream::Reply;

/// Clients waiting per (database, key), oldest first.
#[derive(Debug, Default)]
pub struct Waiters {
    queues: HashMap<(usize, Bytes), VecDeque<u64>>,
    /// Clients blocked now (INFO's blocked_clients): each wait enqueues once and is removed
    /// once, whether served, timed out or abandoned.
    blocked: usize,
}

impl Waiters {
    pub fn blocked(&self) -> usize {
        self.blocked
    }

    fn enqueue(&mut self, id: u64, db: usize, keys: &[Bytes]) {
        self.blocked += 1;
        for k in keys {
            self.queues
                .entry((db, k.clone()))
                .or_default()
                .push_back(id);
        }
    }

    fn remove(&mut self, id: u64, db: usize, keys: &[Bytes]) {
        self.blocked = self.blocked.saturating_sub(1);
        for k in keys {
            if let Some(q) = self.queues.get_mut(&(db, k.clone())) {
                q.retain(|&w| w != id);
                if q.is_empty() {
                    self.queues.remove(&(db, k.clone()));
                }
            }
        }
    }

    /// Whether some client waits on `key` in `db`.
    pub fn waits_on(&self, db: usize, key: &Bytes) -> bool {
        !self.queues.is_empty() && self.queues.contains_key(&(db, key.clone()))
    }

    fn first(&self, db: usize, key: &Bytes) -> Option<u64> {
        self.queues
            .get(&(db, key.clone()))
            .and_then(|q| q.front().copied())
    }
}

/// What a blocking command does once it has data.
#[derive(Debug, Clone)]
pub enum Op {
    Pop {
        left: bool,
    },
    Move {
        dst: Bytes,
        from_left: bool,
        to_left: bool,
    },
    ZPop {
        min: bool,
    },
    MPop {
        left: bool,
        count: usize,
    },
}

/// A parsed blocking command.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub keys: Vec<Bytes>,
    pub op: Op,
    /// None: wait forever.
    pub timeout: Option<Duration>,
}

fn timeout_arg(b: &[u8]) -> Result<Option<Duration>, &'static str> {
    let Some(t) = parse_f64(b).filter(|t| t.is_finite()) else {
        return Err("ERR timeout is not a float or out of range");
    };
    if t < 0.0 {
        return Err("ERR timeout is negative");
    }
    Ok((t > 0.0).then(|| Duration::from_secs_f64(t)))
}

/// Parses a blocking command; an error message for bad arguments.
pub fn parse(name: &str, a: &[Bytes]) -> Result<Blocked, &'static str> {
    let last = &a[a.len() - 1];
    let (keys, op) = match name {
        "blmpop" => {
            // BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]: the timeout is read last.
            let (keys, left, count) = lists::mpop_args(a, 2)?;
            return Ok(Blocked {
                keys,
                op: Op::MPop { left, count },
                timeout: timeout_arg(&a[1])?,
            });
        }
        "blpop" | "brpop" => (
            a[1..a.len() - 1].to_vec(),
            Op::Pop {
                left: name == "blpop",
            },
        ),
        "bzpopmin" | "bzpopmax" => (
            a[1..a.len() - 1].to_vec(),
            Op::ZPop {
                min: name == "bzpopmin",
            },
        ),
        "brpoplpush" => (
            vec![a[1].clone()],
            Op::Move {
                dst: a[2].clone(),
                from_left: false,
                to_left: true,
            },
        ),
        _ => {
            let (Some(f), Some(t)) = (lists::side(&a[3]), lists::side(&a[4])) else {
                return Err(SYNTAX);
            };
            (
                vec![a[1].clone()],
                Op::Move {
                    dst: a[2].clone(),
                    from_left: f,
                    to_left: t,
                },
            )
        }
    };
    Ok(Blocked {
        keys,
        op,
        timeout: timeout_arg(last)?,
    })
}

/// Tries to serve `b` now: Some(reply) if a key had data (or a type error), None to wait.
/// `only` restricts serving to keys where waiter `only` is first in line.
pub fn try_serve(ctx: &mut Ctx, b: &Blocked, proto: Proto, only: Option<u64>) -> Option<Out> {
    let mut out = Out::new(proto);
    for k in &b.keys {
        if let Some(id) = only {
            if ctx.inner.waiters.first(ctx.db, k) != Some(id) {
                continue;
            }
        }
        match &b.op {
            Op::Pop { left } => match lists::pop(ctx, k, *left, 1) {
                Err(()) => out.err(WRONGTYPE),
                Ok(Some(mut v)) if !v.is_empty() => {
                    out.array(2);
                    out.bulk(k);
                    out.bulk(&v.remove(0));
                }
                _ => continue,
            },
            Op::Move {
                dst,
                from_left,
                to_left,
            } => match lists::lmove(ctx, k, dst, *from_left, *to_left) {
                Err(()) => out.err(WRONGTYPE),
                Ok(Some(v)) => out.bulk(&v),
                Ok(None) => continue,
            },
            Op::MPop { left, count } => {
                if !lists::mpop(ctx, std::slice::from_ref(k), *left, *count, &mut out) {
                    continue;
                }
            }
            Op::ZPop { min } => match zsets::pop(ctx, k, *min, 1) {
                Err(()) => out.err(WRONGTYPE),
                Ok(v) if !v.is_empty() => {
                    out.array(3);
                    out.bulk(k);
                    out.bulk(&v[0].0);
                    out.double(v[0].1);
                }
                Ok(_) => continue,
            },
        }
        return Some(out);
    }
    None
}

/// Registers the waiter and spawns the task that answers it.
pub fn wait(
    store: Arc<Store>,
    id: u64,
    db: usize,
    b: Blocked,
    proto: Proto,
) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    store.lock().waiters.enqueue(id, db, &b.keys);
    let mut wake = store.wake.subscribe();
    tokio::spawn(async move {
        let mut tx = tx;
        let deadline = b.timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            {
                let mut inner = store.lock();
                let mut ctx = Ctx::new(&store, &mut inner, db);
                if let Some(out) = try_serve(&mut ctx, &b, proto, Some(id)) {
                    let touched = std::mem::take(&mut ctx.touched);
                    inner.waiters.remove(id, db, &b.keys);
                    drop(inner);
                    store.notify(&touched);
                    let _ = tx.send(Ok(out.buf.freeze()));
                    return;
                }
            }
            let timed_out = tokio::select! {
                _ = wake.changed() => false,
                _ = tx.closed() => {
                    store.lock().waiters.remove(id, db, &b.keys);
                    return;
                }
                _ = sleep_until(deadline) => true,
            };
            if timed_out {
                store.lock().waiters.remove(id, db, &b.keys);
                let mut out = Out::new(proto);
                out.nil_array();
                let _ = tx.send(Ok(out.buf.freeze()));
                return;
            }
        }
    });
    rx
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
