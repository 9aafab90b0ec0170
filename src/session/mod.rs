//! A client's session: authentication, protocol version, connection state (transaction,
//! watch, database, tracking), and the routing decision for every command: answered here,
//! sent on the client's shared upstream connection, or on a dedicated one.
//!
//! State is tracked when a command is sent, not when its reply arrives, because a pipelining
//! client sends `MULTI SET EXEC` before any reply comes back and all three must take the same
//! route. When the route changes (shared <-> dedicated), the replies in flight are awaited
//! first so no command overtakes an earlier one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::admin::clients::ClientEntry;
use crate::command::CommandSpec;
use crate::command::{Command, State};
use crate::compression::reply::Shape;
use crate::connection::{Pending, Stop, Wire};
use crate::metrics::{Metrics, Outcome};
use crate::protocol::reply::{is_error, Proto, Value};
use crate::server::Shared;
use crate::upstream::memory::{Exec, MemConn};
use crate::upstream::{Dedicated, Patience, UpstreamError};

mod compress;
mod peers;

/// Work to do on a reply when it comes back, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// A SELECT: if it failed, the database is still `prev`.
    Select {
        prev: u32,
        requested: u32,
    },
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
}

/// Connection state that Redis keeps per connection.
#[derive(Debug, Clone, Copy, Default)]
struct ConnState {
    in_multi: bool,
    watching: bool,
    db: u32,
    /// CLIENT TRACKING, NO-TOUCH and the like: kept until RESET or disconnect.
    sticky: bool,
}

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
    entry: Arc<ClientEntry>,
    proto: Proto,
    authed: bool,
    user: Option<usize>,
    slot: usize,
    st: ConnState,
    default_db: u32,
    dedicated: Option<Dedicated>,
    on_dedicated: bool,
    reply_mode: ReplyMode,
    tunnel: Option<TunnelStart>,
    /// The client's connection to the embedded store, when the upstream is `memory://`.
    mem: Option<MemConn>,
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
            authed: sh.settings.auth.password.is_empty(),
            slot: sh.upstream.assign(),
            st: ConnState {
                db,
                ..Default::default()
            },
            default_db: db,
            proto: Proto::Resp2,
            user: None,
            dedicated: None,
            on_dedicated: false,
            reply_mode: ReplyMode::On,
            tunnel: None,
            mem: sh.upstream.memory.clone().map(MemConn::new),
            queued: Vec::new(),
            track_name: None,
            direct: BytesMut::new(),
            direct_done: Vec::new(),
            suppressing: false,
            close_after_reply: false,
            sh,
            entry,
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The commands dispatched from here to the next call arrived together (one read).
    pub fn begin_batch(&mut self) {
        if let Some(m) = self.mem.as_mut() {
            m.begin_batch();
        }
    }

    /// Moves the replies written straight out to the end of `out`.
    pub fn take_direct(&mut self, out: &mut BytesMut) {
        if !self.direct_done.is_empty() {
            let now = Instant::now();
            for (spec, outcome, start) in self.direct_done.drain(..) {
                self.sh
                    .metrics
                    .record(spec, outcome, (now - start).as_secs_f64());
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
        self.dedicated.is_some() || self.mem.as_ref().is_some_and(|m| m.subscribed())
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
        let s = &self.st;
        s.in_multi || s.watching || s.sticky || s.db != self.default_db
    }

    /// The next RESP3 push from the dedicated connection (client-side caching invalidations).
    ///
    /// # Cancel safety
    /// Cancel safe: it only receives from a channel.
    pub async fn next_push(&mut self) -> Bytes {
        if let Some(m) = self.mem.as_mut() {
            return match m.pushes.recv().await {
                Some(p) => p,
                None => std::future::pending().await,
            };
        }
        match self.dedicated.as_mut() {
            Some(d) => match d.pushes.recv().await {
                Some(p) => p,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
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

    /// Authentication, the deny list, and the user's command rules.
    fn check_access(&self, cmd: &Command) -> Result<(), Value> {
        let name = cmd.known_name();
        if !self.authed && !matches!(name, Some("auth" | "hello" | "quit")) {
            return Err(Value::err("NOAUTH Authentication required."));
        }
        let Some(spec) = cmd.spec else {
            return match self.user {
                Some(u) if !self.sh.users[u].rules.allows(None) => {
                    Err(noperm(&self.sh.users[u].name, cmd))
                }
                _ => Ok(()),
            };
        };
        if let Some(what) = self.sh.deny.check(spec, cmd.args.get(1).map(|b| &b[..])) {
            return Err(Value::err(format!(
                "ERR command '{what}' is disabled by the proxy (server.deny_commands)"
            )));
        }
        if let Some(u) = self.user {
            if !self.sh.users[u].rules.allows(Some(spec)) {
                return Err(noperm(&self.sh.users[u].name, cmd));
            }
        }
        Ok(())
    }

    async fn route(&mut self, cmd: Command, start: Instant, w: &mut Wire) -> Result<(), Stop> {
        if cmd.runs_while_busy() && self.mem.is_none() && !self.st.in_multi {
            let rx = self.sh.upstream.out_of_band(cmd.args.clone(), self.proto);
            w.push(Pending::waiting(cmd.spec, start, rx, Effect::None));
            return Ok(());
        }
        match cmd.state() {
            State::Local => self.local(cmd, start, w).await,
            State::Client => self.client_command(cmd, start, w).await,
            State::Reset => {
                w.barrier(self).await?;
                self.reset();
                w.push(self.ready(&cmd, start, Value::Simple("RESET".into()), Outcome::Ok));
                Ok(())
            }
            State::Transaction => {
                let before = self.needs_dedicated();
                match cmd.known_name() {
                    Some("multi") => self.st.in_multi = true,
                    Some("exec" | "discard") => {
                        self.st.in_multi = false;
                        self.st.watching = false;
                    }
                    Some("watch") if !self.st.in_multi => self.st.watching = true,
                    Some("unwatch") if !self.st.in_multi => self.st.watching = false,
                    _ => {}
                }
                let dedicated = before || self.needs_dedicated();
                self.send(cmd, start, dedicated, true, Effect::None, w)
                    .await
            }
            State::PubSub | State::Monitor if self.mem.is_some() => {
                self.send(cmd, start, false, true, Effect::None, w).await
            }
            State::PubSub => self.pubsub(cmd, start, w).await,
            State::Monitor if !self.st.in_multi => {
                w.barrier(self).await?;
                self.tunnel = Some(TunnelStart {
                    first: cmd,
                    db: self.st.db,
                });
                Ok(())
            }
            State::Select => self.select(cmd, start, w).await,
            State::Blocking => {
                // Inside MULTI a blocking command does not block.
                let deadline = self.st.in_multi;
                self.send(cmd, start, true, deadline, Effect::None, w).await
            }
            _ => {
                let d = self.needs_dedicated();
                self.send(cmd, start, d, true, Effect::None, w).await
            }
        }
    }

    async fn select(&mut self, cmd: Command, start: Instant, w: &mut Wire) -> Result<(), Stop> {
        let requested = cmd
            .args
            .get(1)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|_| cmd.args.len() == 2);
        let prev = self.st.db;
        let dedicated = self.needs_dedicated() || requested.is_some_and(|n| n != self.default_db);
        let effect = match requested {
            Some(n) => Effect::Select { prev, requested: n },
            None => Effect::None,
        };
        // A new dedicated connection opens on the current database; this SELECT moves it.
        self.send(cmd, start, dedicated, true, effect, w).await?;
        if let Some(n) = requested {
            self.st.db = n;
        }
        Ok(())
    }

    async fn pubsub(&mut self, cmd: Command, start: Instant, w: &mut Wire) -> Result<(), Stop> {
        let name = cmd.known_name().unwrap_or("");
        if self.st.in_multi {
            // Queued inside the transaction like any other command.
            return self.send(cmd, start, true, true, Effect::None, w).await;
        }
        if name.contains("unsubscribe") {
            // Not subscribed (a subscribed client is tunnelled): Redis answers one
            // confirmation per argument, or one with a nil channel, and never enters pub/sub.
            let kind = Value::text(name);
            let mut out = Vec::new();
            let channels: Vec<Value> = if cmd.args.len() > 1 {
                cmd.args[1..]
                    .iter()
                    .map(|c| Value::Bulk(c.clone()))
                    .collect()
            } else {
                vec![Value::Nil]
            };
            for ch in channels {
                let v = Value::Array(vec![kind.clone(), ch, Value::Int(0)]);
                out.extend_from_slice(&v.encode(self.proto));
            }
            if self.proto == Proto::Resp3 {
                // In RESP3 the confirmations are pushes: '>' instead of '*'.
                for i in find_array_starts(&out) {
                    out[i] = b'>';
                }
            }
            w.push(Pending::ready(
                cmd.spec,
                start,
                Bytes::from(out),
                Outcome::Ok,
            ));
            return Ok(());
        }
        w.barrier(self).await?;
        self.tunnel = Some(TunnelStart {
            first: cmd,
            db: self.st.db,
        });
        Ok(())
    }

    /// Sends a command upstream: on the client's shared connection, or its dedicated one.
    async fn send(
        &mut self,
        cmd: Command,
        start: Instant,
        dedicated: bool,
        with_deadline: bool,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let (cmd, effect) = self.compress_layer(cmd, effect, w).await?;
        if self.mem.is_none() {
            if let Some(t) = crate::compression::plan::byte_target(&cmd) {
                if !self.st.in_multi {
                    return self.byte_level(cmd, t, start, w).await;
                }
                if let Some(e) = self.demote_for_multi(&t, w).await? {
                    let outcome = Outcome::UpstreamFailed;
                    w.push(self.ready(&cmd, start, Value::err(e), outcome));
                    return Ok(());
                }
            }
        }
        if self.mem.is_some() {
            return self.mem_send(cmd, start, effect, w).await;
        }
        if dedicated != self.on_dedicated && !w.pending.is_empty() {
            w.barrier(self).await?;
        }
        if !dedicated && self.dedicated.is_some() && !self.needs_dedicated() {
            self.release_dedicated(true);
        }
        self.on_dedicated = dedicated;
        // From now, not from the command's arrival: the timeout is the upstream's to keep,
        // and the proxy's own work (compressing a large value) is not.
        let patience = if !with_deadline {
            Patience::Blocking
        } else if cmd.holds_server() {
            Patience::HoldsServer
        } else {
            Patience::Until(self.sh.upstream.deadline(Instant::now()))
        };
        let sent = if dedicated {
            match self.ensure_dedicated().await {
                Ok(d) => d.conn.send(cmd.raw.clone(), patience),
                Err(e) => Err(e),
            }
        } else {
            self.sh
                .upstream
                .shared(self.slot, self.proto)
                .send(cmd.raw.clone(), patience)
        };
        match sent {
            Ok(rx) => w.push(Pending::waiting(cmd.spec, start, rx, effect)),
            Err(e) => w.push(self.ready(
                &cmd,
                start,
                Value::err(e.to_string()),
                Outcome::UpstreamFailed,
            )),
        }
        Ok(())
    }

    /// Runs a command on the embedded store. A blocked command holds the connection, as in
    /// Redis: the next command waits for it.
    async fn mem_send(
        &mut self,
        cmd: Command,
        start: Instant,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        if w.pending.back().is_some_and(Pending::is_waiting) {
            w.barrier(self).await?;
        }
        let proto = self.proto;
        let Some(mem) = self.mem.as_mut() else {
            return Ok(());
        };
        let direct = w.pending.is_empty()
            && matches!(effect, Effect::None | Effect::Decode(_))
            && !self.suppressing
            && self.direct.len() < DIRECT_MAX;
        if direct {
            let before = self.direct.len();
            match mem.execute_into(&cmd, proto, &mut self.direct) {
                None => {
                    // A reply with an envelope in it is decoded (as the queue would); the
                    // rest, most replies, are already what the client gets.
                    let written = &self.direct[before..];
                    if matches!(effect, Effect::Decode(_))
                        && crate::compression::envelope::has_magic(written)
                    {
                        let raw = self.direct.split_off(before).freeze();
                        if Self::decoded_on_delivery(&effect, raw.len()) {
                            // Large: it joins the queue, where delivery decodes it on
                            // another thread (the direct bytes before it go out first).
                            w.push(Pending::undecoded(cmd.spec, start, raw, effect));
                            return Ok(());
                        }
                        let raw = self.apply(effect, raw);
                        self.direct.extend_from_slice(&raw);
                    }
                    let outcome = Metrics::outcome_of(Outcome::Ok, &self.direct[before..]);
                    self.direct_done.push((cmd.spec, outcome, start));
                }
                Some(rx) => w.push(Pending::waiting(cmd.spec, start, rx, effect)),
            }
            return Ok(());
        }
        match mem.execute(&cmd, proto) {
            Exec::Ready(raw) => {
                let p = if Self::decoded_on_delivery(&effect, raw.len()) {
                    // Large: delivery decodes it on another thread.
                    Pending::undecoded(cmd.spec, start, raw, effect)
                } else {
                    let raw = self.apply(effect, raw);
                    Pending::ready(cmd.spec, start, raw, Outcome::Ok)
                };
                w.push(p);
            }
            Exec::Later(rx) => w.push(Pending::waiting(cmd.spec, start, rx, effect)),
        }
        Ok(())
    }

    async fn ensure_dedicated(&mut self) -> Result<&Dedicated, UpstreamError> {
        if self.dedicated.as_ref().is_some_and(|d| d.conn.is_closed()) {
            // The connection died and its state with it (as if Redis had dropped the client).
            self.dedicated = None;
            self.st.in_multi = false;
            self.st.watching = false;
        }
        if self.dedicated.is_none() {
            let d = self.sh.upstream.dedicated(self.proto, self.st.db).await?;
            self.sh.metrics.pinned_clients.inc();
            self.entry.pinned.store(true, Ordering::Relaxed);
            let id = d.redis_id.unwrap_or(-1);
            self.entry.upstream_id.store(id, Ordering::Relaxed);
            self.dedicated = Some(d);
        }
        self.dedicated.as_ref().ok_or(UpstreamError::Closed)
    }

    /// Lets go of the dedicated connection: kept for reuse when `reuse` and its state is
    /// clean, closed otherwise (which makes Redis drop whatever state it held).
    fn release_dedicated(&mut self, reuse: bool) {
        if let Some(d) = self.dedicated.take() {
            self.sh.metrics.pinned_clients.dec();
            self.entry.pinned.store(false, Ordering::Relaxed);
            self.entry.upstream_id.store(-1, Ordering::Relaxed);
            if reuse && !self.needs_dedicated() {
                self.sh.upstream.release(d);
            }
        }
    }

    /// Drops every piece of connection state (RESET, or before a protocol change).
    fn reset(&mut self) {
        self.release_dedicated(true);
        self.on_dedicated = false;
        self.st = ConnState {
            db: self.default_db,
            ..Default::default()
        };
        self.proto = Proto::Resp2;
        self.reply_mode = ReplyMode::On;
        if let Some(store) = self.sh.upstream.memory.clone() {
            self.mem = Some(MemConn::new(store));
        }
        self.authed = self.sh.settings.auth.password.is_empty();
        self.user = None;
        self.entry.user.store(usize::MAX, Ordering::Relaxed);
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
            Effect::InfoAppend => {
                crate::admin::info::append_proxy_section(&self.sh, raw, self.proto)
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
                    let d = self.needs_dedicated();
                    return self.send(cmd, start, d, true, effect, w).await;
                }
                crate::admin::info::proxy_only(&self.sh)
            }
            "proxy" if cmd.arg_is(1, "keyinfo") && cmd.args.len() == 3 => {
                // The stored bytes, read past the compression layer.
                let key = cmd.args[2].clone();
                let get = Command::from_args([Bytes::from_static(b"GET"), key.clone()]);
                let d = self.needs_dedicated();
                let effect = Effect::KeyInfo(key);
                return self.send(get, start, d, true, effect, w).await;
            }
            "proxy" => crate::admin::proxy_cmd::handle(&self.sh, &cmd),
            _ => Value::err("ERR unknown command"),
        };
        let outcome = if matches!(v, Value::Error(_)) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        w.push(self.ready(&cmd, start, v, outcome));
        Ok(())
    }

    fn auth(&mut self, cmd: &Command) -> Value {
        match cmd.args.len() {
            2 => self.authenticate(None, &cmd.args[1]),
            3 => self.authenticate(Some(&cmd.args[1]), &cmd.args[2]),
            _ => Value::err("ERR wrong number of arguments for 'auth' command"),
        }
    }

    /// Checks a password (for the default user when `user` is None or "default").
    fn authenticate(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Value {
        let auth = &self.sh.settings.auth;
        let default = user.is_none_or(|u| u == b"default");
        if default {
            if auth.password.is_empty() && user.is_none() {
                return Value::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            }
            if auth.password.is_empty() || auth.password.as_bytes() == pass {
                self.authed = true;
                self.user = None;
                self.entry.user.store(usize::MAX, Ordering::Relaxed);
                return Value::ok();
            }
        } else if let Some(i) = self
            .sh
            .users
            .iter()
            .position(|u| Some(u.name.as_bytes()) == user)
        {
            if self.sh.users[i].password.as_bytes() == pass {
                self.authed = true;
                self.user = Some(i);
                self.entry.user.store(i, Ordering::Relaxed);
                return Value::ok();
            }
        }
        Value::err("WRONGPASS invalid username-password pair or user is disabled.")
    }

    fn hello(&mut self, cmd: &Command) -> Value {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(v) = cmd.args.get(1) {
            proto = match &v[..] {
                b"2" => Proto::Resp2,
                b"3" => Proto::Resp3,
                _ if std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_none() =>
                {
                    return Value::err("ERR Protocol version is not an integer or out of range")
                }
                _ => return Value::err("NOPROTO unsupported protocol version"),
            };
            i = 2;
        }
        let mut name = None;
        while i < cmd.args.len() {
            if cmd.arg_is(i, "auth") && i + 2 < cmd.args.len() {
                let r = self.authenticate(Some(&cmd.args[i + 1]), &cmd.args[i + 2]);
                if matches!(r, Value::Error(_)) {
                    return r;
                }
                i += 3;
            } else if cmd.arg_is(i, "setname") && i + 1 < cmd.args.len() {
                name = Some(cmd.args[i + 1].clone());
                i += 2;
            } else {
                return Value::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&cmd.args[i])
                ));
            }
        }
        if !self.authed {
            return Value::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(n) = name {
            if let Err(e) = self.set_name(&n) {
                return e;
            }
        }
        if proto != self.proto {
            if self.dedicated.is_some() {
                // A dedicated connection speaks the old protocol; its state cannot move.
                self.release_dedicated(true);
                self.on_dedicated = false;
            }
            self.proto = proto;
            self.entry
                .resp
                .store(proto.number() as u32, Ordering::Relaxed);
        }
        let version = self.sh.upstream.connector.health.version();
        Value::Map(vec![
            (Value::text("server"), Value::text("redis")),
            (
                Value::text("version"),
                Value::text(if version.is_empty() {
                    "7.0.0"
                } else {
                    &version
                }),
            ),
            (Value::text("proto"), Value::Int(proto.number())),
            (Value::text("id"), Value::Int(self.entry.id as i64)),
            (Value::text("mode"), Value::text("standalone")),
            (Value::text("role"), Value::text("master")),
            (Value::text("modules"), Value::Array(vec![])),
        ])
    }

    fn set_name(&mut self, name: &[u8]) -> Result<(), Value> {
        if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
            return Err(Value::err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.entry.set_name(&String::from_utf8_lossy(name));
        if self.sh.tracker.wants_name() {
            self.track_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
        }
        Ok(())
    }

    async fn client_command(
        &mut self,
        cmd: Command,
        start: Instant,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let sub = cmd.subcommand().unwrap_or_default();
        let argc = cmd.args.len();
        let arity_err = || {
            Value::err(format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ))
        };
        let v = match sub.as_str() {
            "id" if argc == 2 => Value::Int(self.entry.id as i64),
            "getname" if argc == 2 => match self.entry.name() {
                n if n.is_empty() => Value::Nil,
                n => Value::text(n),
            },
            "setname" if argc == 3 => match self.set_name(&cmd.args[2]) {
                Ok(()) => Value::ok(),
                Err(e) => e,
            },
            "setinfo" if argc == 4 => Value::ok(),
            "info" if argc == 2 => Value::Verbatim(format!("{}\n", self.entry.line())),
            "list" => Value::Verbatim(
                self.sh
                    .clients
                    .lines()
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect(),
            ),
            "reply" if argc == 3 => {
                let mode = String::from_utf8_lossy(&cmd.args[2]).to_ascii_lowercase();
                match mode.as_str() {
                    "on" => {
                        self.reply_mode = ReplyMode::On;
                        Value::ok()
                    }
                    "off" | "skip" => {
                        self.reply_mode = if mode == "off" {
                            ReplyMode::Off
                        } else {
                            ReplyMode::Skip
                        };
                        // The CLIENT REPLY OFF/SKIP command itself gets no reply.
                        w.push(self.ready(&cmd, start, Value::ok(), Outcome::Ok));
                        w.suppress_last();
                        return Ok(());
                    }
                    _ => Value::err("ERR syntax error"),
                }
            }
            "kill" => {
                let (v, close) = self.kill(&cmd);
                self.close_after_reply |= close;
                v
            }
            "unblock" if argc == 3 || argc == 4 => match self.unblock(&cmd) {
                Ok(fwd) => {
                    let d = self.needs_dedicated();
                    return self.send(fwd, start, d, true, Effect::None, w).await;
                }
                Err(v) => v,
            },
            "id" | "getname" | "setname" | "setinfo" | "info" | "reply" => arity_err(),
            "tracking" | "caching" | "trackinginfo" | "getredir" | "no-touch" | "no-evict" => {
                let cmd = if sub == "tracking" && argc >= 3 {
                    match self.tracking_redirect(&cmd) {
                        Ok(fwd) => fwd,
                        Err(v) => {
                            w.push(self.ready(&cmd, start, v, Outcome::Error));
                            return Ok(());
                        }
                    }
                } else {
                    cmd
                };
                self.st.sticky = true;
                return self.send(cmd, start, true, true, Effect::None, w).await;
            }
            _ => {
                let d = self.needs_dedicated();
                return self.send(cmd, start, d, true, Effect::None, w).await;
            }
        };
        let outcome = if matches!(v, Value::Error(_)) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        w.push(self.ready(&cmd, start, v, outcome));
        Ok(())
    }
}

fn noperm(user: &str, cmd: &Command) -> Value {
    Value::err(format!(
        "NOPERM User {user} has no permissions to run the '{}' command",
        String::from_utf8_lossy(cmd.name()).to_lowercase()
    ))
}

/// Offsets of the top-level arrays in a sequence of encoded 3-element confirmation arrays.
fn find_array_starts(buf: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        out.push(i);
        match crate::protocol::reply::reply_len(&buf[i..], Proto::Resp3) {
            Ok(Some(n)) => i += n,
            _ => break,
        }
    }
    out
}
