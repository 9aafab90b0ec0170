//! One client's connection to the embedded store: its database, transaction, watched keys
//! and subscriptions, and `execute`, which runs a command and returns its reply (or, for a
//! blocking command with nothing to pop, a reply that will come).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use tokio::sync::{mpsc, oneshot};

use super::{
    bits, blocking, hashes, keys, lists, own, server, sets, strings, zsets, Ctx, Handler, Out,
    Store, DATABASES, OOM,
};
use crate::command::{flag, Command, CommandSpec};
use crate::protocol::Proto;
use crate::upstream::Reply;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A command's outcome: its reply now, or later (a blocked pop).
pub enum Exec {
    Ready(Bytes),
    Later(oneshot::Receiver<Reply>),
}

pub struct MemConn {
    store: Arc<Store>,
    id: u64,
    pub db: usize,
    multi: Option<Vec<Command>>,
    multi_failed: bool,
    watched: Vec<(usize, Bytes, u64)>,
    channels: IndexSet<Bytes>,
    patterns: IndexSet<Bytes>,
    push_tx: mpsc::Sender<Bytes>,
    pub pushes: mpsc::Receiver<Bytes>,
    /// Replies are written here and split off (see `execute`).
    buf: BytesMut,
    /// Inside a batch (`begin_batch`), the store's time read once for all its commands;
    /// outside one (tests, internal callers), read per command.
    batch: bool,
    batch_ms: Option<u64>,
}

/// The (un)subscribe family, answered by the connection itself.
const SUBSCRIBE_FAMILY: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];

/// Whether a RESP2 client may send `name` while subscribed.
fn allowed_while_subscribed(name: &str) -> bool {
    SUBSCRIBE_FAMILY.contains(&name) || matches!(name, "ping" | "quit" | "reset")
}

impl MemConn {
    pub fn new(store: Arc<Store>) -> MemConn {
        let (push_tx, pushes) = mpsc::channel(4096);
        store.stats.connections.fetch_add(1, Ordering::Relaxed);
        store.stats.connected.fetch_add(1, Ordering::Relaxed);
        MemConn {
            store,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            db: 0,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            push_tx,
            pushes,
            buf: BytesMut::new(),
            batch: false,
            batch_ms: None,
        }
    }

    /// The commands from here to the next call arrived together (one read of a pipeline):
    /// they see one reading of the clock, as Redis's commands see its cached time (one clock
    /// read per command was 1% of a pipelined GET). A command that blocks ends the batch,
    /// so no command queued behind it sees a time older than the wait.
    pub fn begin_batch(&mut self) {
        self.batch = true;
        self.batch_ms = None;
    }

    fn now_ms(&mut self) -> u64 {
        let clock = &self.store.clock;
        if self.batch {
            *self.batch_ms.get_or_insert_with(|| clock.now_ms())
        } else {
            clock.now_ms()
        }
    }

    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }

    /// Runs one command. Replies are written into one reusable buffer and split off it, so
    /// a pipelined burst allocates once per 16 KiB of replies rather than once per reply.
    pub fn execute(&mut self, cmd: &Command, proto: Proto) -> Exec {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(16 * 1024);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let later = self.execute_into(cmd, proto, &mut buf);
        let reply = buf.split().freeze();
        self.buf = buf;
        match later {
            Some(rx) => Exec::Later(rx),
            None => Exec::Ready(reply),
        }
    }

    /// Runs one command and appends its reply to `buf`; a command that blocks appends
    /// nothing and returns the reply to come.
    pub fn execute_into(
        &mut self,
        cmd: &Command,
        proto: Proto,
        buf: &mut BytesMut,
    ) -> Option<oneshot::Receiver<Reply>> {
        let mut out = Out {
            buf: std::mem::take(buf),
            proto,
        };
        let before = out.buf.len();
        let later = self.run(cmd, &mut out);
        if later.is_some() {
            out.buf.truncate(before);
            // The commands after a blocked one run when it is served: they read the clock.
            self.batch = false;
        }
        *buf = out.buf;
        later
    }

    /// Runs one command, writing its reply into `out`, or returns the reply to come.
    fn run(&mut self, cmd: &Command, out: &mut Out) -> Option<oneshot::Receiver<Reply>> {
        let proto = out.proto;
        self.store.stats.commands.fetch_add(1, Ordering::Relaxed);
        let a = &cmd.args[..];
        let Some(spec) = cmd.spec else {
            unknown(a, None, out);
            self.multi_failed |= self.multi.is_some();
            return None;
        };
        let name = spec.name;
        if !spec.arity_ok(a.len()) {
            out.err(&format!(
                "ERR wrong number of arguments for '{name}' command"
            ));
            self.multi_failed |= self.multi.is_some();
            return None;
        }
        if proto == Proto::Resp2 && self.subscribed() && !allowed_while_subscribed(name) {
            out.err(&format!("ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"));
            return None;
        }
        if let Some(q) = self.multi.as_mut() {
            if !matches!(
                name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            ) {
                if !implemented(spec) {
                    unknown(a, Some(name), out);
                    self.multi_failed = true;
                } else {
                    q.push(cmd.clone());
                    out.simple("QUEUED");
                }
                return None;
            }
        }
        match name {
            "multi" => {
                if self.multi.is_some() {
                    out.err("ERR MULTI calls can not be nested");
                } else {
                    self.multi = Some(Vec::new());
                    self.multi_failed = false;
                    out.ok();
                }
            }
            "exec" => self.exec(proto, out),
            "discard" => match self.multi.take() {
                Some(_) => {
                    self.watched.clear();
                    out.ok();
                }
                None => out.err("ERR DISCARD without MULTI"),
            },
            "watch" => {
                if self.multi.is_some() {
                    out.err("ERR WATCH inside MULTI is not allowed");
                } else {
                    let now = self.now_ms();
                    let store = &*self.store;
                    let mut inner = store.lock();
                    let mut ctx = Ctx::at(store, &mut inner, self.db, now);
                    let vs: Vec<(usize, Bytes, u64)> = a[1..]
                        .iter()
                        .map(|k| (ctx.db, k.clone(), ctx.version_of(k)))
                        .collect();
                    drop(inner);
                    self.watched.extend(vs);
                    out.ok();
                }
            }
            "unwatch" => {
                self.watched.clear();
                out.ok();
            }
            "select" => match super::parse_i64(&a[1]) {
                Some(n) if (0..DATABASES as i64).contains(&n) => {
                    self.db = n as usize;
                    out.ok();
                }
                Some(_) => out.err("ERR DB index is out of range"),
                None => out.err(super::NOT_INT),
            },
            "subscribe" | "psubscribe" | "ssubscribe" => self.subscribe(name, a, proto, out),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" => self.unsubscribe(name, a, out),
            "ping" if proto == Proto::Resp2 && self.subscribed() => {
                out.array(2);
                out.bulk(b"pong");
                out.bulk(a.get(1).map_or(&b""[..], |b| &b[..]));
            }
            _ if BLOCKING_POPS.contains(&name) => return self.blocking(name, a, out),
            _ => {
                let now = self.now_ms();
                let store = &*self.store;
                let mut inner = store.lock();
                let mut ctx = Ctx::at(store, &mut inner, self.db, now);
                run_one(&mut ctx, spec, a, out);
                let touched = std::mem::take(&mut ctx.touched);
                drop(inner);
                self.store.notify(&touched);
            }
        }
        None
    }

    fn exec(&mut self, proto: Proto, out: &mut Out) {
        let Some(queue) = self.multi.take() else {
            return out.err("ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut self.watched);
        if self.multi_failed {
            return out.err("EXECABORT Transaction discarded because of previous errors.");
        }
        let store = self.store.clone();
        let mut inner = store.lock();
        let mut ctx = Ctx::new(&store, &mut inner, self.db);
        for (db, key, v) in &watched {
            ctx.db = *db;
            if ctx.version_of(key) != *v {
                return out.nil_array();
            }
        }
        out.array(queue.len());
        for cmd in &queue {
            ctx.db = self.db;
            let Some(spec) = cmd.spec else { continue };
            let name = spec.name;
            match name {
                "select" => match super::parse_i64(&cmd.args[1]) {
                    Some(n) if (0..DATABASES as i64).contains(&n) => {
                        self.db = n as usize;
                        out.ok();
                    }
                    _ => out.err("ERR DB index is out of range"),
                },
                _ if BLOCKING_POPS.contains(&name) => {
                    match blocking::parse(name, &cmd.args) {
                        Err(e) => out.err(e),
                        // Inside a transaction a blocking command never blocks.
                        Ok(b) => match blocking::try_serve(&mut ctx, &b, proto, None) {
                            Some(o) => out.raw(&o.buf),
                            None => out.nil_array(),
                        },
                    }
                }
                _ => run_one(&mut ctx, spec, &cmd.args, out),
            }
        }
        let touched = std::mem::take(&mut ctx.touched);
        drop(inner);
        self.store.notify(&touched);
    }

    fn blocking(
        &mut self,
        name: &str,
        a: &[Bytes],
        out: &mut Out,
    ) -> Option<oneshot::Receiver<Reply>> {
        let b = match blocking::parse(name, a) {
            Ok(b) => b,
            Err(e) => {
                out.err(e);
                return None;
            }
        };
        let store = self.store.clone();
        let mut inner = store.lock();
        let mut ctx = Ctx::new(&store, &mut inner, self.db);
        if let Some(o) = blocking::try_serve(&mut ctx, &b, out.proto, None) {
            let touched = std::mem::take(&mut ctx.touched);
            drop(inner);
            store.notify(&touched);
            out.raw(&o.buf);
            return None;
        }
        drop(inner);
        Some(blocking::wait(store, self.id, self.db, b, out.proto))
    }

    fn subscribe(&mut self, name: &str, a: &[Bytes], proto: Proto, out: &mut Out) {
        let pattern = name == "psubscribe";
        for ch in &a[1..] {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            // Copied: a slice of the client's read buffer would keep all of it alive for as
            // long as the subscription lives.
            let owned = own(ch);
            if set.insert(owned.clone()) {
                self.store
                    .pubsub
                    .subscribe(pattern, &owned, self.id, proto, &self.push_tx);
            }
            out.push(3);
            out.bulk(name.as_bytes());
            out.bulk(ch);
            out.int((self.channels.len() + self.patterns.len()) as i64);
        }
    }

    fn unsubscribe(&mut self, name: &str, a: &[Bytes], out: &mut Out) {
        let pattern = name == "punsubscribe";
        let targets: Vec<Bytes> = if a.len() > 1 {
            a[1..].to_vec()
        } else if pattern {
            self.patterns.iter().cloned().collect()
        } else {
            self.channels.iter().cloned().collect()
        };
        if targets.is_empty() {
            out.push(3);
            out.bulk(name.as_bytes());
            out.nil();
            out.int((self.channels.len() + self.patterns.len()) as i64);
        }
        for ch in targets {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.shift_remove(&ch) {
                self.store.pubsub.unsubscribe(pattern, &ch, self.id);
            }
            out.push(3);
            out.bulk(name.as_bytes());
            out.bulk(&ch);
            out.int((self.channels.len() + self.patterns.len()) as i64);
        }
    }
}

impl Drop for MemConn {
    fn drop(&mut self) {
        self.store.stats.connected.fetch_sub(1, Ordering::Relaxed);
        for c in &self.channels {
            self.store.pubsub.unsubscribe(false, c, self.id);
        }
        for p in &self.patterns {
            self.store.pubsub.unsubscribe(true, p, self.id);
        }
    }
}

/// Runs one ordinary command under the lock, evicting first for commands that may grow memory.
pub(super) fn run_one(ctx: &mut Ctx, spec: &'static CommandSpec, a: &[Bytes], out: &mut Out) {
    let Some(handler) = handler(spec) else {
        return unknown(a, Some(spec.name), out);
    };
    if spec.flags & flag::DENYOOM != 0 && !ctx.make_room() {
        return out.err(OOM);
    }
    handler(ctx, spec.name, a, out);
    // Any write may give a blocked client its data (ZADD, ZINCRBY, RENAME onto the key, ...):
    // every argument naming a waited-on key wakes the waiters, which re-check for themselves.
    if spec.flags & flag::WRITE != 0 {
        for k in &a[1..] {
            if ctx.inner.waiters.waits_on(ctx.db, k) {
                ctx.touched.push((ctx.db, k.clone()));
            }
        }
    }
}

/// The command families, each a list of (name, handler).
const FAMILIES: [&[(&str, Handler)]; 9] = [
    strings::COMMANDS,
    bits::COMMANDS,
    keys::COMMANDS,
    hashes::COMMANDS,
    lists::COMMANDS,
    sets::COMMANDS,
    zsets::COMMANDS,
    server::COMMANDS,
    super::scripts::COMMANDS,
];

/// The command families' handlers, by the command table's row.
fn handler(spec: &'static CommandSpec) -> Option<Handler> {
    static BY_ROW: OnceLock<Vec<Option<Handler>>> = OnceLock::new();
    let rows = BY_ROW.get_or_init(|| {
        let mut rows = vec![None; crate::command::all().len()];
        for (name, h) in FAMILIES.iter().copied().flatten() {
            if let Some(spec) = crate::command::lookup(name.as_bytes()) {
                rows[crate::command::index_of(spec)] = Some(*h);
            }
        }
        rows
    });
    rows.get(crate::command::index_of(spec)).copied().flatten()
}

/// Whether the embedded store implements `name` (the rest get an error saying so).
fn implemented(spec: &'static CommandSpec) -> bool {
    const LOCAL: &[&str] = &["multi", "exec", "discard", "watch", "unwatch", "select"];
    let name = spec.name;
    LOCAL.contains(&name)
        || SUBSCRIBE_FAMILY.contains(&name)
        || BLOCKING_POPS.contains(&name)
        || handler(spec).is_some()
}

/// The blocking pops, answered by blocking.rs.
const BLOCKING_POPS: &[&str] = &[
    "blmpop",
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "bzpopmin",
    "bzpopmax",
];

/// Redis's unknown-command error; for a command Redis has but the store does not, it says so.
pub(super) fn unknown(a: &[Bytes], known: Option<&str>, out: &mut Out) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&a[0])
    );
    for arg in a[1..].iter().take(16) {
        msg.push_str(&format!(
            "'{}' ",
            String::from_utf8_lossy(arg)
                .chars()
                .take(128)
                .collect::<String>()
        ));
    }
    if known.is_some() {
        msg.push_str("(the embedded store does not implement it; a Redis upstream does)");
    }
    out.err(&msg.replace(['\r', '\n'], " "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handler_is_a_command_of_the_table_and_answers() {
        let store = Store::new(0, super::super::Policy::NoEviction);
        let mut seen = std::collections::HashSet::new();
        for (name, _) in FAMILIES.iter().copied().flatten() {
            assert!(seen.insert(*name), "{name} has two handlers");
            let spec = crate::command::lookup(name.as_bytes())
                .unwrap_or_else(|| panic!("{name} is not in the command table"));
            assert!(implemented(spec), "{name}");
            let args: Vec<Bytes> = std::iter::once(Bytes::from(*name))
                .chain(["k", "0", "0", "0", "0"].map(|a: &'static str| Bytes::from(a)))
                .collect();
            let mut inner = store.lock();
            let mut ctx = Ctx::new(&store, &mut inner, 0);
            let mut out = Out::new(Proto::Resp2);
            run_one(&mut ctx, spec, &args, &mut out);
            let reply = String::from_utf8_lossy(&out.buf).into_owned();
            assert!(!reply.is_empty(), "{name} wrote no reply");
            assert!(!reply.contains("does not implement"), "{name}: {reply}");
        }
        assert!(seen.len() > 100, "{}", seen.len());
    }
}
