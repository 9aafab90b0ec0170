//! Byte-level commands (STRLEN, APPEND, SETRANGE, GETBIT, BITFIELD, LCS, INCRBYFLOAT, HSTRLEN,
//! ...) on a Redis upstream, where a value may be stored compressed.
//!
//! On a connection of its own (in the client's protocol and database): WATCH the key(s), read
//! the stored value(s). When none is enveloped, Redis runs the command in MULTI/EXEC. When one
//! is, one transaction puts the original bytes in place (SET ... KEEPTTL, or HSET for a
//! field), runs the command, and for a read-only command puts the envelope back. Redis itself
//! computes every reply and error, so they are its own byte for byte; the WATCH voids the
//! transaction if another client wrote the key since the read, and it is retried. After a
//! byte-level write the new value is read back in the same transaction and, when it is large
//! enough (or begins with the magic), stored encoded by a second WATCHed transaction.

use std::sync::Arc;

use bytes::Bytes;

use crate::command::Command;
use crate::compression::plan::Target;
use crate::compression::{envelope, reply, Compressor};
use crate::protocol::Proto;
use crate::upstream::{Dedicated, Upstream};

const ATTEMPTS: usize = 32;

/// Runs a byte-level command; returns the reply for the client, in `proto`.
pub async fn run(
    up: &Arc<Upstream>,
    c: &Compressor,
    db: u32,
    proto: Proto,
    cmd: &Command,
    target: &Target,
) -> Result<Bytes, String> {
    let d = up.dedicated(proto, db).await.map_err(|e| e.to_string())?;
    let r = attempt_loop(up, c, &d, cmd, target).await;
    release_if_clean(up, d, db, r.is_ok());
    r
}

/// A connection that ended cleanly on the default database goes back to the spare list; one
/// on another database, or left in a transaction or watch by an error, is dropped (closing
/// it makes Redis forget that state).
fn release_if_clean(up: &Upstream, d: Dedicated, db: u32, clean: bool) {
    if clean && db == up.connector.db {
        up.release(d);
    }
}

fn put(target: &Target, key: &Bytes, value: Bytes) -> Vec<Bytes> {
    match target {
        Target::Strings(_) => vec![
            Bytes::from_static(b"SET"),
            key.clone(),
            value,
            Bytes::from_static(b"KEEPTTL"),
        ],
        Target::Field(_, f) => vec![Bytes::from_static(b"HSET"), key.clone(), f.clone(), value],
    }
}

fn keys_and_reads(target: &Target) -> (Vec<Bytes>, Vec<Vec<Bytes>>) {
    match target {
        Target::Strings(ks) => (
            ks.clone(),
            ks.iter()
                .map(|k| vec![Bytes::from_static(b"GET"), k.clone()])
                .collect(),
        ),
        Target::Field(ks, f) => (
            ks.clone(),
            ks.iter()
                .map(|k| vec![Bytes::from_static(b"HGET"), k.clone(), f.clone()])
                .collect(),
        ),
    }
}

/// WATCHes the target's keys and reads the stored values. For each enveloped one: the write
/// that puts its original bytes in place and the write that restores the envelope.
async fn watch_and_read(
    up: &Arc<Upstream>,
    c: &Compressor,
    d: &Dedicated,
    target: &Target,
) -> Result<(Vec<Vec<Bytes>>, Vec<Vec<Bytes>>), String> {
    let (keys, read) = keys_and_reads(target);
    let mut cmds = vec![std::iter::once(Bytes::from_static(b"WATCH"))
        .chain(keys.iter().cloned())
        .collect::<Vec<_>>()];
    cmds.extend(read);
    let replies = roundtrip(up, d, &cmds).await?;
    let (mut demote, mut restore) = (Vec::new(), Vec::new());
    for (key, r) in keys.iter().zip(&replies[1..]) {
        let Some(v) = stored_value(r) else { continue };
        if !envelope::is_enveloped(v) {
            continue;
        }
        let missing = c.dicts.missing_in(v);
        if !missing.is_empty() {
            // Written by another prescient with a dictionary not known here yet.
            c.dicts.fetch(up, &missing).await;
        }
        match c.decode(v) {
            Ok(p) => {
                demote.push(put(target, key, Bytes::from(p.into_owned())));
                restore.push(put(target, key, Bytes::copy_from_slice(v)));
            }
            Err(e) => {
                roundtrip(up, d, &[vec![Bytes::from_static(b"UNWATCH")]]).await?;
                return Err(Compressor::error_text(key, &e));
            }
        }
    }
    Ok((demote, restore))
}

async fn attempt_loop(
    up: &Arc<Upstream>,
    c: &Compressor,
    d: &Dedicated,
    cmd: &Command,
    target: &Target,
) -> Result<Bytes, String> {
    let read_only = !cmd.has(crate::command::flag::WRITE);
    let (keys, reads) = keys_and_reads(target);
    for _ in 0..ATTEMPTS {
        let (demote, restore) = watch_and_read(up, c, d, target).await?;
        // One transaction, voided by the WATCH if anything changed since the read: the
        // original bytes go in place, Redis runs the command itself (so replies and errors are
        // its own), and for a read the stored envelope is put back; after a write, the new
        // value is read back to be stored encoded.
        let mut tx = vec![vec![Bytes::from_static(b"MULTI")]];
        let at = demote.len();
        tx.extend(demote);
        tx.push(cmd.args.clone());
        if read_only {
            tx.extend(restore);
        } else {
            tx.push(reads[0].clone());
        }
        tx.push(vec![Bytes::from_static(b"EXEC")]);
        let replies = roundtrip(up, d, &tx).await?;
        let exec = &replies[replies.len() - 1];
        if is_null(exec) {
            continue;
        }
        let reply = element(exec, at).unwrap_or_else(|| exec.clone());
        if !read_only {
            if let Some(new) = element(exec, at + 1)
                .as_deref()
                .and_then(stored_value)
                .map(Bytes::copy_from_slice)
            {
                if envelope::is_enveloped(&new) || (c.enabled && new.len() >= c.threshold) {
                    reencode(up, c, d, target, &keys[0], new).await?;
                }
            }
        }
        return Ok(reply);
    }
    Err(format!(
        "ERR prescient: key '{}' kept changing during {ATTEMPTS} read-modify-write attempts",
        String::from_utf8_lossy(&keys[0])
    ))
}

/// Stores `raw` (the value a byte-level write left) encoded: escaped when it begins with the
/// magic, compressed when that pays. Only if the key still holds exactly `raw`: a later write
/// by someone else wins.
async fn reencode(
    up: &Arc<Upstream>,
    c: &Compressor,
    d: &Dedicated,
    target: &Target,
    key: &Bytes,
    raw: Bytes,
) -> Result<(), String> {
    let (_, read) = keys_and_reads(target);
    let watch = vec![Bytes::from_static(b"WATCH"), key.clone()];
    let replies = roundtrip(up, d, &[watch, read[0].clone()]).await?;
    if stored_value(&replies[1]) != Some(&raw[..]) {
        roundtrip(up, d, &[vec![Bytes::from_static(b"UNWATCH")]]).await?;
        return Ok(());
    }
    let tx = [
        vec![Bytes::from_static(b"MULTI")],
        put(target, key, c.encode(key, &raw)),
        vec![Bytes::from_static(b"EXEC")],
    ];
    roundtrip(up, d, &tx).await?;
    Ok(())
}

/// Inside a client's MULTI (its connection is queueing): puts the original bytes of the
/// target's enveloped values in place, on a connection of its own, so the queued command
/// runs natively on them at EXEC.
pub async fn demote(
    up: &Arc<Upstream>,
    c: &Compressor,
    db: u32,
    proto: Proto,
    target: &Target,
) -> Result<(), String> {
    let d = up.dedicated(proto, db).await.map_err(|e| e.to_string())?;
    for _ in 0..ATTEMPTS {
        let (demote, _) = watch_and_read(up, c, &d, target).await?;
        if demote.is_empty() {
            roundtrip(up, &d, &[vec![Bytes::from_static(b"UNWATCH")]]).await?;
            release_if_clean(up, d, db, true);
            return Ok(());
        }
        let mut tx = vec![vec![Bytes::from_static(b"MULTI")]];
        tx.extend(demote);
        tx.push(vec![Bytes::from_static(b"EXEC")]);
        let replies = roundtrip(up, &d, &tx).await?;
        if !is_null(&replies[replies.len() - 1]) {
            release_if_clean(up, d, db, true);
            return Ok(());
        }
    }
    Err("ERR prescient: the key kept changing while it was being decompressed".into())
}

/// Sends `cmds` pipelined and waits for every reply.
async fn roundtrip(
    up: &Arc<Upstream>,
    d: &Dedicated,
    cmds: &[Vec<Bytes>],
) -> Result<Vec<Bytes>, String> {
    let deadline = crate::upstream::Patience::Until(up.deadline(tokio::time::Instant::now()));
    let mut rxs = Vec::with_capacity(cmds.len());
    for c in cmds {
        let raw = crate::command::encode_request(c);
        rxs.push(d.conn.send(raw, deadline).map_err(|e| e.to_string())?);
    }
    let mut out = Vec::with_capacity(rxs.len());
    for rx in rxs {
        let r = rx
            .await
            .map_err(|_| "ERR upstream connection closed".to_string())?
            .map_err(|e| e.to_string())?;
        out.push(r);
    }
    Ok(out)
}

fn is_null(r: &[u8]) -> bool {
    r == b"*-1\r\n" || r == b"_\r\n"
}

/// Element `i` of EXEC's array; `None` when the reply is not an array (EXECABORT).
fn element(exec: &Bytes, i: usize) -> Option<Bytes> {
    let (start, end) = reply::array_element(exec, i)?;
    Some(exec.slice(start..end))
}

/// The stored bytes in a GET/HGET reply; `None` for a null or an error (WRONGTYPE).
fn stored_value(r: &[u8]) -> Option<&[u8]> {
    reply::bulk_payload(r).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_elements() {
        let exec = Bytes::from_static(b"*3\r\n+OK\r\n$5\r\nhello\r\n:1\r\n");
        assert_eq!(element(&exec, 1).as_deref(), Some(&b"$5\r\nhello\r\n"[..]));
        assert_eq!(element(&exec, 2).as_deref(), Some(&b":1\r\n"[..]));
        assert_eq!(element(&exec, 3), None);
        let abort = Bytes::from_static(b"-EXECABORT Transaction discarded\r\n");
        assert_eq!(element(&abort, 0), None);
        assert!(is_null(b"*-1\r\n") && is_null(b"_\r\n"));
    }
}
