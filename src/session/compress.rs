//! The compression layer of a session: values encoded on the way in, replies decoded on the
//! way out, byte-level commands run on the original bytes.

use bytes::Bytes;
use tokio::time::Instant;

use super::rmw;
use super::{Effect, Pending, Session, Stop, Wire};
use crate::command::Command;
use crate::compression::plan::{self, Target};
use crate::compression::reply;
use crate::metrics::Outcome;
use crate::protocol::Value;

/// Commands this large (their raw request bytes) are compressed off the event loop.
const OFFLOAD_BYTES: usize = 1 << 20;

/// Replies this large (as stored, compressed) are decoded off the event loop: they inflate
/// to several times as many bytes, a millisecond or more of zlib.
const DECODE_OFFLOAD_BYTES: usize = 64 << 10;

impl Session {
    /// Encodes the command's stored values and chooses how its reply is decoded. A command
    /// of [`OFFLOAD_BYTES`] or more is encoded on a blocking-pool thread: compressing 50 MB
    /// takes seconds, and the event loop serves every other client meanwhile. This client's
    /// later commands wait for it, as they would have; its replies owed from before go out
    /// meanwhile.
    pub(super) async fn compress_layer(
        &mut self,
        cmd: Command,
        effect: Effect,
        w: &mut Wire,
    ) -> Result<(Command, Effect), Stop> {
        // Inside MULTI on a Redis upstream a later byte-level command in the same
        // transaction runs natively on what was queued before it: store those values raw.
        let compress = self.link.reads_envelopes() || !self.st.in_multi;
        let encode = move |c: &crate::compression::Compressor, cmd: Command| match plan::encode_args(
            c, &cmd, compress,
        ) {
            Some(args) => Command::from_args(args),
            None => cmd,
        };
        let cmd = if cmd.raw.len() >= OFFLOAD_BYTES && self.sh.compressor.enabled {
            let c = self.sh.compressor.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let copy = cmd.clone();
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(encode(&c, copy));
            });
            // The pool runs every task it is given; should it fail, the value goes raw.
            w.while_serving(self, rx).await?.unwrap_or(cmd)
        } else {
            encode(&self.sh.compressor, cmd)
        };
        let effect = match (cmd.known_name(), effect) {
            (Some("multi" | "discard"), Effect::None) => Effect::MultiReset,
            (Some("exec"), Effect::None) => Effect::Exec,
            (_, Effect::None) if self.st.in_multi => {
                Effect::Queued(plan::decode_shape(&cmd).map(Box::new))
            }
            (_, Effect::None) => match plan::decode_shape(&cmd) {
                Some(s) => Effect::Decode(Box::new(s)),
                None => Effect::None,
            },
            (_, e) => e,
        };
        Ok((cmd, effect))
    }

    /// Whether the embedded store leaves a reply of `len` bytes with this effect for delivery
    /// to decode (on another thread, by [`Self::decode_later`]). Only a plain decode: an
    /// EXEC's shapes are session state, which the store's next commands change on the spot,
    /// so `mem_send` turns an EXEC's effect into a plain decode first.
    pub(super) fn decoded_on_delivery(effect: &Effect, len: usize) -> bool {
        // A read-through is decided on delivery too (a miss goes to the origin).
        len >= DECODE_OFFLOAD_BYTES && matches!(effect, Effect::Decode(_))
            || matches!(
                effect,
                Effect::ReadThrough(_) | Effect::ReadThroughMany(_) | Effect::ReadThroughHash(_)
            )
    }

    /// A reply of [`DECODE_OFFLOAD_BYTES`] or more whose stored values are to be decoded (a
    /// GET's, an EXEC's) is decoded on a blocking-pool thread, as a large value is encoded (a
    /// GET of a 50 MB value held the event loop ~0.45 s): the receiver gets the decoded reply,
    /// and `effect` is spent. None for any other reply (or one with no envelope in it), which
    /// [`Session::apply`] handles on the spot. Called as the reply reaches the front of the
    /// queue, so an EXEC takes the shapes its QUEUED replies left.
    ///
    /// On Redis, a reply naming a dictionary this prescient does not know (another one trained
    /// it) also waits: the dictionary is fetched from the store first, then the reply decoded.
    pub(crate) fn decode_later(
        &mut self,
        effect: &mut Effect,
        raw: &Bytes,
    ) -> Option<tokio::sync::oneshot::Receiver<crate::upstream::Reply>> {
        if let Effect::ReadThrough(_) = effect {
            let Effect::ReadThrough(r) = std::mem::replace(effect, Effect::None) else {
                return None;
            };
            let (key, route, inner, then, crate::origin::Pinned(origin)) = *r;
            if crate::origin::is_nil(raw) {
                let filled = origin.read_through(route, key, raw.clone(), None);
                let Some(getex) = then else {
                    return Some(filled);
                };
                // GETEX's options apply to the value filled: run it again, then answer.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let up = self.sh.upstream.clone();
                tokio::spawn(async move {
                    let reply = filled
                        .await
                        .unwrap_or(Err(crate::upstream::UpstreamError::Closed));
                    if matches!(&reply, Ok(r) if r.starts_with(b"$") && !r.starts_with(b"$-1")) {
                        let _ = crate::upstream::Internal::new(up).call(&getex).await;
                    }
                    let _ = tx.send(reply);
                });
                return Some(rx);
            }
            // A hit: a value filled from the origin may be stale, or expired.
            if let Some(Some(stored)) = reply::bulk_payload(raw) {
                self.sh.note_hit(&key);
                match origin.on_hit(route, stored) {
                    crate::origin::Hit::Fresh => {}
                    crate::origin::Hit::Stale => {
                        origin.refresh(route, key, Bytes::copy_from_slice(stored));
                    }
                    crate::origin::Hit::Expired { fallback_until } => {
                        let fallback = self
                            .sh
                            .compressor
                            .decode(stored)
                            .ok()
                            .map(|v| (Bytes::copy_from_slice(&v), fallback_until));
                        let nil = crate::origin::nil(self.proto);
                        return Some(origin.read_through(route, key, nil, fallback));
                    }
                }
            }
            *effect = inner;
        }
        if let Effect::ReadThroughHash(_) = effect {
            let Effect::ReadThroughHash(r) = std::mem::replace(effect, Effect::None) else {
                return None;
            };
            let (key, route, read, inner, crate::origin::Pinned(origin)) = *r;
            // The key is missing: HGET's nil, HMGET's all-nil array, HGETALL's empty one.
            let missing = match &read {
                crate::origin::HashRead::Get(_) => crate::origin::is_nil(raw),
                crate::origin::HashRead::MGet(_) => reply::array_elements(raw)
                    .is_some_and(|e| e.iter().all(|&(s, t)| crate::origin::is_nil(&raw[s..t]))),
                crate::origin::HashRead::All => matches!(&raw[..], b"*0\r\n" | b"%0\r\n"),
            };
            if !missing {
                self.sh.note_hit(&key);
            }
            if missing {
                let proto = self.proto;
                return Some(origin.read_through_hash(route, key, read, raw.clone(), proto));
            }
            *effect = inner;
        }
        if let Effect::ReadThroughMany(_) = effect {
            let Effect::ReadThroughMany(r) = std::mem::replace(effect, Effect::None) else {
                return None;
            };
            let (keys, routes, inner, crate::origin::Pinned(origin)) = *r;
            self.sh.note_hits(raw, &keys, &routes);
            if !origin.any_routed_nil(raw, &routes) {
                *effect = inner;
            } else {
                // The hits are decoded as the MGET's own effect would (a large reply on the
                // blocking pool), then the misses filled.
                let (c, raw) = (self.sh.compressor.clone(), raw.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let decoded = match inner {
                        Effect::Decode(s) if raw.len() >= DECODE_OFFLOAD_BYTES => {
                            c.stats.decoded_off_loop.inc();
                            let work = move || reply::decode(&c, &raw, &s.0, &s.1);
                            match tokio::task::spawn_blocking(work).await {
                                Ok(d) => d,
                                Err(_) => return,
                            }
                        }
                        Effect::Decode(s) => reply::decode(&c, &raw, &s.0, &s.1),
                        _ => raw,
                    };
                    let reply = origin.read_through_many(keys, routes, decoded).await;
                    let _ = tx.send(reply.unwrap_or(Err(crate::upstream::UpstreamError::Closed)));
                });
                return Some(rx);
            }
        }
        let large = raw.len() >= DECODE_OFFLOAD_BYTES;
        if (!large && self.link.embedded())
            || !matches!(effect, Effect::Decode(_) | Effect::Exec)
            || !crate::compression::envelope::has_magic(raw)
        {
            // Nothing of it stored compressed (a large incompressible value, say): `apply`
            // passes it on as it is, no thread needed.
            return None;
        }
        // The embedded store's values were all written here, with dictionaries known here.
        let missing = match self.link.embedded() {
            true => Vec::new(),
            false => self.sh.compressor.dicts.missing_in(raw),
        };
        if !large && missing.is_empty() {
            return None;
        }
        let (shape, keys) = match std::mem::replace(effect, Effect::None) {
            Effect::Decode(s) => *s,
            _ => (self.exec_shape()?, Vec::new()),
        };
        let (c, raw) = (self.sh.compressor.clone(), raw.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        if large {
            c.stats.decoded_off_loop.inc();
        }
        // Should the task fail (decoding does not panic on any input), the client gets
        // "upstream connection closed" for this reply, in its place.
        if missing.is_empty() {
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(Ok(reply::decode(&c, &raw, &shape, &keys)));
            });
        } else {
            let up = self.sh.upstream.clone();
            tokio::spawn(async move {
                // Those not found stay unknown: decoding then names the missing dictionary.
                c.dicts.fetch(&up, &missing).await;
                let decoded = match large {
                    true => {
                        tokio::task::spawn_blocking(move || reply::decode(&c, &raw, &shape, &keys))
                            .await
                            .ok()
                    }
                    false => Some(reply::decode(&c, &raw, &shape, &keys)),
                };
                if let Some(d) = decoded {
                    let _ = tx.send(Ok(d));
                }
            });
        }
        Some(rx)
    }

    /// The shape of an EXEC's reply, from the shapes its QUEUED replies left (taken: the
    /// transaction is over); None when none of its commands reads a stored value.
    pub(super) fn exec_shape(&mut self) -> Option<reply::Shape> {
        let parts = std::mem::take(&mut self.queued);
        (!parts.iter().all(Option::is_none)).then_some(reply::Shape::Exec(parts))
    }

    /// Applies a compression effect to a reply.
    pub(super) fn apply_compression(&mut self, effect: Effect, raw: Bytes) -> Bytes {
        let c = &self.sh.compressor;
        match effect {
            Effect::Decode(s) => reply::decode(c, &raw, &s.0, &s.1),
            Effect::Queued(s) => {
                if &raw[..] == b"+QUEUED\r\n" {
                    self.queued.push(s.map(|b| *b));
                }
                raw
            }
            Effect::MultiReset => {
                self.queued.clear();
                raw
            }
            Effect::Exec => match self.exec_shape() {
                Some(shape) => reply::decode(&self.sh.compressor, &raw, &shape, &[]),
                None => raw,
            },
            Effect::KeyInfo(key) => {
                let v = crate::admin::proxy_cmd::keyinfo(c, &key, &raw);
                v.encode(self.proto)
            }
            _ => raw,
        }
    }

    /// Inside MULTI on a Redis upstream: remembers where a queued RENAME, RENAMENX or COPY
    /// moves a value (the transaction's first command forgets the last one's moves).
    pub(super) fn note_move(&mut self, cmd: &Command) {
        match cmd.known_name() {
            Some("multi") => self.moved.clear(),
            Some("rename" | "renamenx" | "copy") if cmd.args.len() >= 3 => {
                self.moved.push((cmd.args[2].clone(), cmd.args[1].clone()));
            }
            _ => {}
        }
    }

    /// A byte-level target inside MULTI, with the keys whose values an earlier command of
    /// the transaction moves into its keys (RENAME a b; APPEND b ...): those are put back
    /// uncompressed too, or the command would run on an envelope moved in at EXEC.
    pub(super) fn with_sources(&self, t: Target) -> Target {
        let mut keys: Vec<Bytes> = match &t {
            Target::Strings(ks) => ks.clone(),
            Target::Field(ks, _) => ks.clone(),
        };
        let mut i = 0;
        while i < keys.len() && keys.len() < 1024 {
            for (dst, src) in &self.moved {
                if *dst == keys[i] && !keys.contains(src) {
                    keys.push(src.clone());
                }
            }
            i += 1;
        }
        match t {
            Target::Strings(_) => Target::Strings(keys),
            // A hash field's value moves with its key: the same field of each source.
            Target::Field(_, f) => Target::Field(keys, f),
        }
    }

    /// A byte-level command inside MULTI on a Redis upstream: its keys' values are put back
    /// uncompressed first (on another connection), then it is queued like any other.
    /// Returns the error that replaces it when that fails.
    /// The replies owed from before go out meanwhile.
    pub(super) async fn demote_for_multi(
        &mut self,
        target: &Target,
        w: &mut Wire,
    ) -> Result<Option<String>, Stop> {
        let (sh, db, proto) = (self.sh.clone(), self.st.db, self.proto);
        let work = async move {
            rmw::demote(&sh.upstream, &sh.compressor, db, proto, target)
                .await
                .err()
        };
        w.while_serving(self, work).await
    }

    /// A byte-level command on a Redis upstream: after the replies before it, as a
    /// read-modify-write on its own connection (see `rmw`).
    pub(super) async fn byte_level(
        &mut self,
        cmd: Command,
        target: Target,
        start: Instant,
        w: &mut Wire,
    ) -> Result<(), Stop> {
        w.barrier(self).await?;
        let r = rmw::run(
            &self.sh.upstream,
            &self.sh.compressor,
            self.st.db,
            self.proto,
            &cmd,
            &target,
        )
        .await;
        let p = match r {
            Ok(raw) => Pending::ready(cmd.spec, start, raw, Outcome::Ok),
            Err(e) => self.ready(&cmd, start, Value::err(e), Outcome::UpstreamFailed),
        };
        w.push(p);
        Ok(())
    }
}
