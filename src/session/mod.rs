//! A client's session: authentication, protocol version, connection state (transaction,
//! watch, database, tracking), and the routing decision for every command: answered here,
//! sent on the client's shared upstream connection, or on a dedicated one.
//!
//! State is tracked when a command is sent, not when its reply arrives, because a pipelining
//! client sends `MULTI SET EXEC` before any reply comes back and all three must take the same
//! route. When the route changes (shared <-> dedicated), the replies in flight are awaited
//! first (delivering them as they come: `Wire::barrier`) so no command overtakes an earlier one.
//!
//! This file holds the state and acts on the route; the parts: routing.rs (the pure routing
//! decision), auth.rs (AUTH, HELLO, the access check), client.rs (CLIENT subcommands about the
//! client itself), peers.rs (CLIENT KILL, UNBLOCK, TRACKING REDIRECT), pubsub.rs, link.rs (the
//! client's way to the upstream: Redis connections or the embedded store), forward.rs (sending
//! on it), compress.rs (the compression layer), rmw.rs (byte-level commands on Redis).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::clients::ClientEntry;
use crate::command::Command;
use crate::command::CommandSpec;
use crate::compression::reply::Shape;
use crate::metrics::{Metrics, Outcome};
use crate::protocol::reply::{is_error, Proto, Value};
use crate::shared::Shared;
use crate::upstream::memory::Exec;
use crate::upstream::{Dedicated, Patience, UpstreamError};
pub(crate) use crate::wire::Stop;

mod auth;
mod client;
mod compress;
mod forward;
mod link;
mod peers;
mod pubsub;
mod rmw;
mod routing;

use link::{Link, RedisLink};
use routing::{Conn, ConnState, Route, Wait};

/// A session's reply queue, and a reply in it.
pub(crate) type Wire = crate::wire::Wire<Effect>;
pub(crate) type Pending = crate::wire::Pending<Effect>;

/// Work to do on a reply when it comes back, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Effect {
    #[default]
    None,
    /// A SELECT: if it failed, the database is still `prev`.
    Select { prev: u32, requested: u32 },
    /// An INFO reply from the upstream: append the proxy's section.
    InfoAppend,
    /// Stored values in the reply are decoded (compression).
    Decode(Box<(Shape, Vec<Bytes>)>),
    /// A command sent inside MULTI: if it was queued, EXEC's reply will hold its reply there.
    Queued(Option<Box<(Shape, Vec<Bytes>)>>),
    /// MULTI or DISCARD: no queued commands.
    MultiReset,
    /// EXEC: its array holds the queued commands' replies.
    Exec,
    /// PROXY KEYINFO: the reply is the stored value of this key, to be described.
    KeyInfo(Bytes),
    /// A GET or GETEX of a key an origin route reads through: a nil reply is answered from the
    /// origin (key, route); any other reply gets the inner effect. A GETEX with options runs
    /// again once the value is filled, so they apply to it. Each read-through keeps the origin
    /// its route was decided against.
    ReadThrough(Box<ReadThrough>),
    /// An MGET naming routed keys: its nil elements whose key a route reads through are
    /// answered from the origin (keys, each key's route), after the inner effect.
    ReadThroughMany(Box<ReadThroughMany>),
    /// HGET, HMGET or HGETALL of a key a hash route reads through: a reply that says the key
    /// is missing is answered from the origin (key, route, what was read).
    ReadThroughHash(Box<ReadThroughHash>),
}

/// [`Effect::ReadThrough`]: key, route, inner effect, the GETEX to run again, origin.
pub type ReadThrough = (
    Bytes,
    usize,
    Effect,
    Option<Vec<Bytes>>,
    crate::origin::Pinned,
);

/// [`Effect::ReadThroughMany`]: keys, each key's route, inner effect, origin.
pub type ReadThroughMany = (
    Vec<Bytes>,
    Vec<Option<usize>>,
    Effect,
    crate::origin::Pinned,
);

/// [`Effect::ReadThroughHash`]: key, route, what was read, inner effect, origin.
pub type ReadThroughHash = (
    Bytes,
    usize,
    crate::origin::HashRead,
    Effect,
    crate::origin::Pinned,
);

/// Bytes of replies written straight out before the rest go through the reply queue, where
/// the client output limit is checked.
const DIRECT_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    Skip,
}

/// Why a client's connection becomes a raw tunnel to its own upstream connection.
pub struct TunnelStart {
    pub first: Command,
    pub db: u32,
}

pub struct Session {
    sh: Arc<Shared>,
    /// What a reload may replace, as of this session's last command.
    cur: crate::shared::Current,
    entry: Arc<ClientEntry>,
    proto: Proto,
    authed: bool,
    /// The named user it authenticated as (None: the default user); its rules are looked up
    /// at each command, as a reload may change them.
    user: Option<String>,
    st: ConnState,
    default_db: u32,
    /// The way to the upstream (shared/dedicated Redis connections, or the embedded store).
    link: Link,
    reply_mode: ReplyMode,
    tunnel: Option<TunnelStart>,
    /// Reply shapes of the commands queued in the open transaction, for EXEC's reply.
    queued: Vec<Option<(Shape, Vec<Bytes>)>>,
    /// CLIENT SETNAME's name, when the tracker groups reads by it.
    track_name: Option<Bytes>,
    /// Replies of the embedded store written straight out, for commands with nothing queued
    /// before them: they skip the reply queue (a Bytes per reply, a copy, two refcount
    /// updates). They precede everything in the queue: `take_direct` before delivering.
    direct: BytesMut,
    /// The commands whose replies are in `direct`, counted in the metrics when `take_direct`
    /// delivers them: one clock reading for all, as for queued replies.
    direct_done: Vec<(Option<&'static CommandSpec>, Outcome, Instant)>,
    /// Inside MULTI on Redis: (destination, source) of each RENAME/COPY queued.
    moved: Vec<(Bytes, Bytes)>,
    /// Whether the command being dispatched has its reply suppressed (CLIENT REPLY).
    suppressing: bool,
    /// The connection closes once the replies queued are written (CLIENT KILL of itself).
    close_after_reply: bool,
}

impl Session {
    pub fn new(sh: Arc<Shared>, entry: Arc<ClientEntry>) -> Session {
        let db = sh.upstream.connector.db;
        entry.db.store(db, Ordering::Relaxed);
        Session {
            authed: sh.auth.load().password.is_empty(),
            link: Link::new(&sh.upstream),
            st: ConnState {
                db,
                ..Default::default()
            },
            default_db: db,
            proto: Proto::Resp2,
            user: None,
            reply_mode: ReplyMode::On,
            tunnel: None,
            queued: Vec::new(),
            track_name: None,
            direct: BytesMut::new(),
            direct_done: Vec::new(),
            moved: Vec::new(),
            suppressing: false,
            close_after_reply: false,
            cur: crate::shared::Current::of(&sh),
            sh,
            entry,
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The commands dispatched from here to the next call arrived together (one read).
    pub fn begin_batch(&mut self) {
        self.link.begin_batch();
    }

    /// Moves the replies written straight out to the end of `out`.
    pub fn take_direct(&mut self, out: &mut BytesMut) {
        if !self.direct_done.is_empty() {
            let now = Instant::now();
            let log = self.sh.tunables.request_log.load(Ordering::Relaxed) != 0;
            for (spec, outcome, start) in self.direct_done.drain(..) {
                let secs = (now - start).as_secs_f64();
                self.sh.metrics.record(spec, outcome, secs);
                if log {
                    crate::metrics::Metrics::log_request(self.entry.id, spec, outcome, secs, None);
                }
            }
            // A burst of tiny replies may have grown it; an idle connection keeps little.
            self.direct_done.shrink_to(256);
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.direct);
        } else if !self.direct.is_empty() {
            out.extend_from_slice(&self.direct);
            self.direct.clear();
        }
    }

    /// Whether the client holds state that may legitimately sit idle (blocked, in a
    /// transaction, on its own connection).
    pub fn holds_state(&self) -> bool {
        self.link.holds_state()
    }

    pub fn take_tunnel(&mut self) -> Option<TunnelStart> {
        self.tunnel.take()
    }

    /// Whether the connection is to close after the replies queued (CLIENT KILL of itself).
    pub fn closes_after_reply(&self) -> bool {
        self.close_after_reply
    }

    pub fn tunnel_pending(&self) -> bool {
        self.tunnel.is_some()
    }

    fn needs_dedicated(&self) -> bool {
        self.st.needs_dedicated(self.default_db)
    }

    /// The connection the client's state puts an ordinary command on.
    fn conn_for_state(&self) -> Conn {
        match self.needs_dedicated() {
            true => Conn::Dedicated,
            false => Conn::Shared,
        }
    }

    /// The next RESP3 push from the dedicated connection (client-side caching invalidations).
    ///
    /// # Cancel safety
    /// Cancel safe: it only receives from a channel.
    pub async fn next_push(&mut self) -> Bytes {
        self.link.next_push().await
    }

    /// Handles one command that arrived at `start`: queues its reply (ready or coming) at the
    /// back of `pending`.
    pub async fn dispatch(
        &mut self,
        cmd: Command,
        start: Instant,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        self.entry.touch(cmd.spec, start.into_std());
        if self.sh.generation.load(Ordering::Acquire) != self.cur.generation {
            self.cur = crate::shared::Current::of(&self.sh);
        }
        // CLIENT REPLY decides about its own reply (ON answers even after OFF).
        let own_reply = cmd.known_name() == Some("client") && cmd.arg_is(1, "reply");
        let suppress = match self.reply_mode {
            _ if own_reply => false,
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        let before = w.pending.len();
        self.suppressing = suppress;
        if let Err(v) = self.check_access(&cmd) {
            w.push(self.ready(&cmd, start, v, Outcome::Refused));
        } else {
            self.sh
                .tracker
                .record(self.entry.id, self.track_name.as_ref(), &cmd);
            if let Some(o) = &self.cur.origin {
                if cmd.has(crate::command::flag::WRITE) {
                    for k in cmd.keys() {
                        o.note_write(k);
                        if let Some(p) = &self.sh.prefetch {
                            p.note_write(k);
                        }
                    }
                }
            }
            // A counter's increment records its delta in the same atomic step (jobs/counters.rs);
            // the deltas are kept in the default database, so increments elsewhere are not.
            let cmd = match crate::jobs::counters::counts(&cmd) && self.st.db == self.default_db {
                true => match &self.cur.jobs.counters {
                    Some(c) => c.rewrite(&cmd).unwrap_or(cmd),
                    None => cmd,
                },
                false => cmd,
            };
            self.route(cmd, start, w).await?;
        }
        if suppress && w.pending.len() > before {
            w.suppress_last();
        }
        Ok(())
    }

    fn ready(&self, cmd: &Command, start: Instant, v: Value, outcome: Outcome) -> Pending {
        Pending::ready(cmd.spec, start, v.encode(self.proto), outcome)
    }

    /// Queues the proxy's own answer to `cmd` (an error reply counts as an error).
    fn answer(&self, cmd: &Command, start: Instant, v: Value, w: &mut Wire) {
        let outcome = if matches!(v, Value::Error(_)) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        w.push(self.ready(cmd, start, v, outcome));
    }

    async fn route(&mut self, cmd: Command, start: Instant, w: &mut Wire) -> Result<(), Stop> {
        let (route, next) = routing::decide(self.st, self.default_db, self.link.embedded(), &cmd);
        match route {
            Route::OutOfBand => {
                let rx = self.sh.upstream.out_of_band(cmd.args.clone(), self.proto);
                w.push(Pending::waiting(cmd.spec, start, rx, Effect::None));
                Ok(())
            }
            Route::Local => self.local(cmd, start, w).await,
            Route::Client => self.client_command(cmd, start, w).await,
            Route::Reset => {
                w.barrier(self).await?;
                self.reset();
                w.push(self.ready(&cmd, start, Value::Simple("RESET".into()), Outcome::Ok));
                Ok(())
            }
            Route::PubSub => self.pubsub(cmd, start, w).await,
            Route::Monitor => {
                w.barrier(self).await?;
                self.tunnel = Some(TunnelStart {
                    first: cmd,
                    db: self.st.db,
                });
                Ok(())
            }
            Route::Select { conn, db } => {
                let effect = match db {
                    Some(n) => Effect::Select {
                        prev: self.st.db,
                        requested: n,
                    },
                    None => Effect::None,
                };
                // A new dedicated connection opens on the current database; this SELECT
                // moves it, and the state follows once it is sent.
                self.send(cmd, start, conn, Wait::Deadline, effect, w)
                    .await?;
                self.st = next;
                Ok(())
            }
            Route::Forward { conn, wait } => {
                self.st = next;
                self.send(cmd, start, conn, wait, Effect::None, w).await
            }
        }
    }

    /// Drops every piece of connection state (RESET, or before a protocol change).
    fn reset(&mut self) {
        self.release_dedicated(true);
        self.st = ConnState {
            db: self.default_db,
            ..Default::default()
        };
        self.proto = Proto::Resp2;
        self.reply_mode = ReplyMode::On;
        if self.link.embedded() {
            self.link = Link::new(&self.sh.upstream);
        }
        self.authed = self.sh.auth.load().password.is_empty();
        self.user = None;
        self.entry.set_user("default");
        self.entry.set_name("");
        self.track_name = None;
        self.entry.db.store(self.default_db, Ordering::Relaxed);
        self.entry.resp.store(2, Ordering::Relaxed);
    }

    /// Called after a tunnel ends with RESET.
    pub fn after_tunnel_reset(&mut self) {
        self.reset();
    }

    /// Called when the client is gone. A dedicated connection is kept for reuse only if its
    /// state is clean and nothing is still in flight on it (`idle`): a BLPOP the client left
    /// behind must not block the next user.
    pub fn finish(&mut self, idle: bool) {
        self.release_dedicated(idle);
    }

    /// Applies a reply's effect and returns the bytes to send.
    pub fn apply(&mut self, effect: Effect, raw: Bytes) -> Bytes {
        match effect {
            Effect::None => raw,
            Effect::Select { prev, requested } => {
                if is_error(&raw) && self.st.db == requested {
                    self.st.db = prev;
                }
                self.entry.db.store(self.st.db, Ordering::Relaxed);
                raw
            }
            Effect::ReadThrough(r) => self.apply(r.2, raw),
            Effect::ReadThroughMany(r) => self.apply(r.2, raw),
            Effect::ReadThroughHash(r) => self.apply(r.3, raw),
            Effect::InfoAppend => {
                crate::admin::info::append_proxy_section(&self.sh.admin, raw, self.proto)
            }
            other => self.apply_compression(other, raw),
        }
    }

    async fn local(&mut self, cmd: Command, start: Instant, w: &mut Wire) -> Result<(), Stop> {
        let v = match cmd.known_name().unwrap_or("") {
            "auth" => self.auth(&cmd),
            "hello" => {
                w.barrier(self).await?;
                self.hello(&cmd)
            }
            "quit" => Value::ok(),
            "info" => {
                let (upstream, proxy) = crate::admin::info::sections(&cmd);
                if upstream {
                    let effect = if proxy {
                        Effect::InfoAppend
                    } else {
                        Effect::None
                    };
                    let d = self.conn_for_state();
                    return self.send(cmd, start, d, Wait::Deadline, effect, w).await;
                }
                crate::admin::info::proxy_only(&self.sh.admin)
            }
            "proxy" if cmd.arg_is(1, "keyinfo") && cmd.args.len() == 3 => {
                // The stored bytes, read past the compression layer.
                let key = cmd.args[2].clone();
                let get = Command::from_args([Bytes::from_static(b"GET"), key.clone()]);
                let d = self.conn_for_state();
                let effect = Effect::KeyInfo(key);
                return self.send(get, start, d, Wait::Deadline, effect, w).await;
            }
            "proxy" if cmd.arg_is(1, "prefetch") || cmd.arg_is(1, "warmup") => {
                match &self.sh.prefetch {
                    Some(p) => {
                        let p = p.clone();
                        p.command(&cmd.args).await
                    }
                    None => Value::err(
                        "ERR prefetching needs origin routes ([[origin.routes]]) and tracking (tracking.enabled)",
                    ),
                }
            }
            "proxy" if cmd.arg_is(1, "predict") && self.sh.prefetch.is_some() => {
                match self.sh.prefetch.clone() {
                    Some(p) => p.command(&cmd.args).await,
                    None => Value::err("ERR prefetching is not configured"),
                }
            }
            "proxy"
                if cmd.arg_is(1, "config") && cmd.arg_is(2, "reload") && cmd.args.len() == 3 =>
            {
                let sh = self.sh.clone();
                match sh.reload().await {
                    Ok(r) => {
                        Value::Verbatim(r.lines().iter().map(|l| format!("{l}\r\n")).collect())
                    }
                    Err(e) => Value::err(format!(
                        "ERR configuration not reloaded, nothing changed: {e}"
                    )),
                }
            }
            "proxy"
                if ["jobs", "job", "warm", "invalidate", "expiring"]
                    .iter()
                    .any(|s| cmd.arg_is(1, s)) =>
            {
                let jobs = self.sh.jobs.load_full();
                jobs.command(&cmd.args).await
            }
            "proxy" if cmd.arg_is(1, "origin") && cmd.args.len() == 2 => {
                match self.sh.origin.load().as_ref() {
                    Some(o) => {
                        Value::Verbatim(o.report().iter().map(|l| format!("{l}\r\n")).collect())
                    }
                    None => Value::err("ERR no origin routes are configured ([[origin.routes]])"),
                }
            }
            "proxy" => crate::admin::proxy_cmd::handle(&self.sh.admin, &cmd),
            _ => Value::err("ERR unknown command"),
        };
        self.answer(&cmd, start, v, w);
        Ok(())
    }
}

impl crate::wire::Owner for Session {
    type Effect = Effect;

    fn apply(&mut self, effect: Effect, raw: Bytes) -> Bytes {
        Session::apply(self, effect, raw)
    }

    fn decode_later(
        &mut self,
        effect: &mut Effect,
        raw: &Bytes,
    ) -> Option<tokio::sync::oneshot::Receiver<crate::upstream::Reply>> {
        Session::decode_later(self, effect, raw)
    }

    fn take_direct(&mut self, out: &mut BytesMut) {
        Session::take_direct(self, out)
    }
}
