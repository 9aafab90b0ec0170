//! Sending a command on: to the client's shared upstream connection, its dedicated one, or
//! its connection to the embedded store; and taking and giving back the dedicated connection.

use super::*;
use crate::compression::reply;

impl Session {
    /// Sends a command upstream, through the compression layer: to the embedded store, or on
    /// Redis to the client's shared connection or its dedicated one (`conn`).
    pub(super) async fn send(
        &mut self,
        cmd: Command,
        start: Instant,
        conn: Conn,
        wait: Wait,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let (cmd, effect) = self.compress_layer(cmd, effect, w).await?;
        let effect = self.read_through(&cmd, effect);
        match self.link {
            Link::Memory(_) => self.mem_send(cmd, start, effect, w).await,
            Link::Redis(_) => self.redis_send(cmd, start, conn, wait, effect, w).await,
        }
    }

    /// A GET of a routed key, outside a transaction and on the default database (the origin's
    /// fills go there): its nil reply is read through to the origin.
    /// The effect keeps the origin the route was decided against: a reload may replace the
    /// shared one before the reply, and its routes may be others.
    fn read_through(&self, cmd: &Command, effect: Effect) -> Effect {
        let Some(o) = &self.cur.origin else {
            return effect;
        };
        if self.st.in_multi || self.st.db != self.default_db {
            return effect;
        }
        match cmd.known_name() {
            Some(name @ ("get" | "getex")) => {
                match cmd.args.get(1).and_then(|k| o.route_for(k).map(|r| (k, r))) {
                    Some((k, r)) => {
                        let then =
                            (name == "getex" && cmd.args.len() > 2).then(|| cmd.args.clone());
                        Effect::ReadThrough(Box::new((k.clone(), r, effect, then, pin(o))))
                    }
                    None => effect,
                }
            }
            Some(name @ ("hget" | "hmget" | "hgetall")) => {
                let Some((k, r)) = cmd
                    .args
                    .get(1)
                    .and_then(|k| o.hash_route_for(k).map(|r| (k, r)))
                else {
                    return effect;
                };
                use crate::origin::HashRead;
                let read = match name {
                    "hget" => HashRead::Get(cmd.args.get(2).cloned().unwrap_or_default()),
                    "hmget" => HashRead::MGet(cmd.args[2..].to_vec()),
                    _ => HashRead::All,
                };
                Effect::ReadThroughHash(Box::new((k.clone(), r, read, effect, pin(o))))
            }
            Some("mget") => {
                let keys: Vec<Bytes> = cmd.args[1..].to_vec();
                let routes: Vec<Option<usize>> = keys.iter().map(|k| o.route_for(k)).collect();
                match routes.iter().any(Option::is_some) {
                    true => Effect::ReadThroughMany(Box::new((keys, routes, effect, pin(o)))),
                    false => effect,
                }
            }
            _ => effect,
        }
    }

    /// The Redis link (None on the embedded store, where no caller asks for it).
    fn redis(&mut self) -> Option<&mut RedisLink> {
        match &mut self.link {
            Link::Redis(r) => Some(r),
            Link::Memory(_) => None,
        }
    }

    async fn redis_send(
        &mut self,
        cmd: Command,
        start: Instant,
        conn: Conn,
        wait: Wait,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let dedicated = conn == Conn::Dedicated;
        if self.st.in_multi {
            self.note_move(&cmd);
        }
        if let Some(t) = crate::compression::plan::byte_target(&cmd) {
            if !self.st.in_multi {
                return self.byte_level(cmd, t, start, w).await;
            }
            let t = self.with_sources(t);
            if let Some(e) = self.demote_for_multi(&t, w).await? {
                let outcome = Outcome::UpstreamFailed;
                w.push(self.ready(&cmd, start, Value::err(e), outcome));
                return Ok(());
            }
        }
        let Some(r) = self.redis() else {
            return Ok(());
        };
        let (was_dedicated, holds) = (r.on_dedicated, r.dedicated.is_some());
        if dedicated != was_dedicated && !w.pending.is_empty() {
            w.barrier(self).await?;
        }
        if !dedicated && holds && !self.needs_dedicated() {
            self.release_dedicated(true);
        }
        let Some(r) = self.redis() else {
            return Ok(());
        };
        r.on_dedicated = dedicated;
        let slot = r.slot;
        // From now, not from the command's arrival: the timeout is the upstream's to keep,
        // and the proxy's own work (compressing a large value) is not.
        let patience = if wait == Wait::Block {
            Patience::Blocking
        } else if cmd.holds_server() && !self.st.in_multi {
            // (Inside MULTI it is only queued; a transaction's EXEC keeps its deadline.)
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
                .shared(slot, self.proto)
                .and_then(|c| c.send(cmd.raw.clone(), patience))
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
    pub(super) async fn mem_send(
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
        let Link::Memory(mem) = &mut self.link else {
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
                    if let Effect::Decode(s) = &effect {
                        if crate::compression::envelope::has_magic(written) {
                            if Self::decoded_on_delivery(&effect, written.len()) {
                                // Large: it joins the queue, where delivery decodes it on
                                // another thread (the direct bytes before it go out first).
                                let raw = self.direct.split_off(before).freeze();
                                w.push(Pending::undecoded(cmd.spec, start, raw, effect));
                                return Ok(());
                            }
                            // Decoded in place: the stored bytes (compressed, small) are set
                            // aside and the reply rewritten where they were, so the buffer
                            // keeps its capacity.
                            let raw = written.to_vec();
                            self.direct.truncate(before);
                            let c = &self.sh.compressor;
                            reply::decode_into(c, &raw, &s.0, &s.1, &mut self.direct);
                        }
                    }
                    let outcome = Metrics::outcome_of(Outcome::Ok, &self.direct[before..]);
                    self.direct_done.push((cmd.spec, outcome, start));
                }
                Some(rx) => w.push(Pending::waiting(cmd.spec, start, rx, effect)),
            }
            return Ok(());
        }
        let exec = mem.execute(&cmd, proto);
        // The store ran EXEC just now, and every QUEUED reply before it has been applied: its
        // shape is known, so a large EXEC reply is decoded on delivery like a GET's (on
        // another thread), as on Redis.
        let effect = match effect {
            Effect::Exec => match self.exec_shape() {
                Some(shape) => Effect::Decode(Box::new((shape, Vec::new()))),
                None => Effect::None,
            },
            e => e,
        };
        match exec {
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

    pub(super) async fn ensure_dedicated(&mut self) -> Result<&Dedicated, UpstreamError> {
        let (proto, db) = (self.proto, self.st.db);
        let Some(r) = self.redis() else {
            return Err(UpstreamError::Closed);
        };
        if r.dedicated.as_ref().is_some_and(|d| d.conn.is_closed()) {
            // The connection died and its state with it (as if Redis had dropped the client).
            r.dedicated = None;
            self.st.in_multi = false;
            self.st.watching = false;
        }
        let Some(r) = self.redis() else {
            return Err(UpstreamError::Closed);
        };
        if r.dedicated.is_none() {
            let d = self.sh.upstream.dedicated(proto, db).await?;
            self.sh.metrics.pinned_clients.inc();
            self.entry.pinned.store(true, Ordering::Relaxed);
            let id = d.redis_id.unwrap_or(-1);
            self.entry.upstream_id.store(id, Ordering::Relaxed);
            if let Some(r) = self.redis() {
                r.dedicated = Some(d);
            }
        }
        match &self.link {
            Link::Redis(r) => r.dedicated.as_ref().ok_or(UpstreamError::Closed),
            Link::Memory(_) => Err(UpstreamError::Closed),
        }
    }

    /// Lets go of the dedicated connection: kept for reuse when `reuse` and its state is
    /// clean, closed otherwise (which makes Redis drop whatever state it held).
    pub(super) fn release_dedicated(&mut self, reuse: bool) {
        let clean = !self.needs_dedicated();
        let Some(r) = self.redis() else {
            return;
        };
        r.on_dedicated = false;
        if let Some(d) = r.dedicated.take() {
            self.sh.metrics.pinned_clients.dec();
            self.entry.pinned.store(false, Ordering::Relaxed);
            self.entry.upstream_id.store(-1, Ordering::Relaxed);
            if reuse && clean {
                self.sh.upstream.release(d);
            }
        }
    }
}

fn pin(o: &std::sync::Arc<crate::origin::Origin>) -> crate::origin::Pinned {
    crate::origin::Pinned(o.clone())
}
