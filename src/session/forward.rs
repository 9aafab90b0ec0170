//! Sending a command on: to the client's shared upstream connection, its dedicated one, or
//! its connection to the embedded store; and taking and giving back the dedicated connection.

use super::*;

impl Session {
    /// Sends a command upstream: on the client's shared connection, or its dedicated one.
    pub(super) async fn send(
        &mut self,
        cmd: Command,
        start: Instant,
        conn: Conn,
        wait: Wait,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        let dedicated = conn == Conn::Dedicated;
        let (cmd, effect) = self.compress_layer(cmd, effect, w).await?;
        if self.mem.is_none() {
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
                .shared(self.slot, self.proto)
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
    pub(super) fn release_dedicated(&mut self, reuse: bool) {
        if let Some(d) = self.dedicated.take() {
            self.sh.metrics.pinned_clients.dec();
            self.entry.pinned.store(false, Ordering::Relaxed);
            self.entry.upstream_id.store(-1, Ordering::Relaxed);
            if reuse && !self.needs_dedicated() {
                self.sh.upstream.release(d);
            }
        }
    }
}
