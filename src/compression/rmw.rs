//! Byte-level commands (STRLEN, APPEND, SETRANGE, GETBIT, BITFIELD, LCS, INCRBYFLOAT, HSTRLEN,
//! ...) on a Redis upstream, where a value may be stored compressed.
//!
//! On a connection of its own: WATCH the key, read the stored value, decode it, run the
//! client's command on the original bytes in a scratch embedded store (the same code that
//! serves `memory://`, checked against Redis by the differential corpus, so replies and error
//! precedence are Redis's), and, when the value changed, write it back encoded inside
//! MULTI/EXEC with KEEPTTL. An EXEC aborted by another client's write is retried. Writes
//! among these commands are therefore atomic with respect to every other client.

use bytes::Bytes;

use super::plan::Target;
use super::reply::bulk_payload;
use super::{envelope, Compressor};
use crate::command::Command;
use crate::protocol::Proto;
use crate::upstream::memory::{Exec, MemConn, Policy, Store};
use crate::upstream::{Dedicated, Upstream};

const ATTEMPTS: usize = 32;

/// What the upstream holds at a key (or field) before the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    Missing,
    WrongType,
    Value(Bytes),
}

/// Runs a byte-level command; returns the reply for the client, in `proto`.
pub async fn run(
    up: &Upstream,
    c: &Compressor,
    db: u32,
    proto: Proto,
    cmd: &Command,
    target: &Target,
) -> Result<Bytes, String> {
    let d = up.dedicated(proto, db).await.map_err(|e| e.to_string())?;
    let r = attempt_loop(up, c, &d, proto, cmd, target).await;
    // A clean connection goes back to the spare list; one left in a transaction or watch
    // (an error mid-way) is dropped, which makes Redis forget that state.
    if r.as_ref().is_ok_and(|(_, clean)| *clean) {
        up.release(d);
    }
    r.map(|(reply, _)| reply)
}

async fn attempt_loop(
    up: &Upstream,
    c: &Compressor,
    d: &Dedicated,
    proto: Proto,
    cmd: &Command,
    target: &Target,
) -> Result<(Bytes, bool), String> {
    let (keys, read): (Vec<Bytes>, Vec<Vec<Bytes>>) = match target {
        Target::Strings(ks) => (
            ks.clone(),
            ks.iter()
                .map(|k| vec![Bytes::from_static(b"GET"), k.clone()])
                .collect(),
        ),
        Target::Field(k, f) => (
            vec![k.clone()],
            vec![vec![Bytes::from_static(b"HGET"), k.clone(), f.clone()]],
        ),
    };
    let mut watch = vec![Bytes::from_static(b"WATCH")];
    watch.extend(keys.iter().cloned());
    for _ in 0..ATTEMPTS {
        let mut cmds = vec![watch.clone()];
        cmds.extend(read.iter().cloned());
        let replies = roundtrip(up, d, &cmds).await?;
        let mut current = Vec::new();
        for (i, r) in replies[1..].iter().enumerate() {
            let key = &keys[i.min(keys.len() - 1)];
            current.push(match parse_current(r) {
                Some(Current::Value(v)) => match c.decode(&v) {
                    Ok(d) => Current::Value(Bytes::from(d.into_owned())),
                    Err(e) => {
                        roundtrip(up, d, &[vec![Bytes::from_static(b"UNWATCH")]]).await?;
                        return Err(Compressor::error_text(key, &e));
                    }
                },
                Some(cur) => cur,
                None => return Err(String::from_utf8_lossy(r).trim_end().to_string()),
            });
        }
        if !current
            .iter()
            .any(|c| matches!(c, Current::Value(v) if envelope::is_enveloped(v)))
        {
            // Nothing stored compressed: Redis runs the command itself, in a transaction
            // that the WATCH voids if a compressed value arrived since the read.
            let tx = [
                vec![Bytes::from_static(b"MULTI")],
                cmd.args.clone(),
                vec![Bytes::from_static(b"EXEC")],
            ];
            let replies = roundtrip(up, d, &tx).await?;
            if let Some(reply) = only_element(&replies[2]) {
                return Ok((reply, true));
            }
            continue;
        }
        let (reply, before, after) = evaluate(cmd, proto, target, &current);
        if before == after {
            roundtrip(up, d, &[vec![Bytes::from_static(b"UNWATCH")]]).await?;
            return Ok((reply, true));
        }
        let key = &keys[0];
        let write: Vec<Bytes> = match (target, after) {
            (Target::Strings(_), Some(v)) => vec![
                Bytes::from_static(b"SET"),
                key.clone(),
                c.encode(key, &v),
                Bytes::from_static(b"KEEPTTL"),
            ],
            (Target::Field(_, f), Some(v)) => vec![
                Bytes::from_static(b"HSET"),
                key.clone(),
                f.clone(),
                c.encode(key, &v),
            ],
            (_, None) => vec![Bytes::from_static(b"DEL"), key.clone()],
        };
        let tx = [
            vec![Bytes::from_static(b"MULTI")],
            write,
            vec![Bytes::from_static(b"EXEC")],
        ];
        let replies = roundtrip(up, d, &tx).await?;
        if !is_null(&replies[2]) {
            return Ok((reply, true));
        }
    }
    Err(format!(
        "ERR prescient: key '{}' kept changing during {ATTEMPTS} read-modify-write attempts",
        String::from_utf8_lossy(&keys[0])
    ))
}

/// Sends `cmds` pipelined and waits for every reply.
async fn roundtrip(
    up: &Upstream,
    d: &Dedicated,
    cmds: &[Vec<Bytes>],
) -> Result<Vec<Bytes>, String> {
    let deadline = Some(up.deadline(tokio::time::Instant::now()));
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

/// The one reply inside EXEC's `*1` array; `None` when the transaction was voided.
fn only_element(exec: &Bytes) -> Option<Bytes> {
    if is_null(exec) {
        return None;
    }
    match exec.strip_prefix(b"*1\r\n") {
        Some(rest) => Some(exec.slice(exec.len() - rest.len()..)),
        // EXECABORT or another error: the client sees it as it is.
        None => Some(exec.clone()),
    }
}

fn parse_current(r: &[u8]) -> Option<Current> {
    if r.starts_with(b"-WRONGTYPE") {
        return Some(Current::WrongType);
    }
    match bulk_payload(r)? {
        None => Some(Current::Missing),
        Some(v) => Some(Current::Value(Bytes::copy_from_slice(v))),
    }
}

/// Runs `cmd` in a scratch store holding `current` (the decoded values): the reply, and the
/// first target's value before and after (`None`: missing or another type).
pub fn evaluate(
    cmd: &Command,
    proto: Proto,
    target: &Target,
    current: &[Current],
) -> (Bytes, Option<Bytes>, Option<Bytes>) {
    let store = Store::new(0, Policy::NoEviction);
    let mut conn = MemConn::new(store);
    let mut run = |args: Vec<Bytes>, proto: Proto| -> Bytes {
        match conn.execute(&Command::from_args(args), proto) {
            Exec::Ready(b) => b,
            Exec::Later(_) => Bytes::new(),
        }
    };
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    let (keys, field) = match target {
        Target::Strings(ks) => (ks.clone(), None),
        Target::Field(k, f) => (vec![k.clone()], Some(f.clone())),
    };
    for (k, cur) in keys.iter().zip(current) {
        match (cur, &field) {
            (Current::Missing, _) => {}
            (Current::WrongType, _) => {
                run(vec![b("RPUSH"), k.clone(), b("x")], Proto::Resp2);
            }
            (Current::Value(v), None) => {
                run(vec![b("SET"), k.clone(), v.clone()], Proto::Resp2);
            }
            (Current::Value(v), Some(f)) => {
                run(
                    vec![b("HSET"), k.clone(), f.clone(), v.clone()],
                    Proto::Resp2,
                );
            }
        }
    }
    let before = match current.first() {
        Some(Current::Value(v)) => Some(v.clone()),
        _ => None,
    };
    let reply = run(cmd.args.clone(), proto);
    let read_back = match &field {
        None => vec![b("GET"), keys[0].clone()],
        Some(f) => vec![b("HGET"), keys[0].clone(), f.clone()],
    };
    let after = if matches!(current.first(), Some(Current::WrongType)) {
        None
    } else {
        bulk_payload(&run(read_back, Proto::Resp2))
            .flatten()
            .map(Bytes::copy_from_slice)
    };
    (reply, before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(args: &[&str], cur: Current) -> (String, Option<Bytes>) {
        let cmd = Command::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())));
        let t = super::super::plan::byte_target(&cmd).unwrap();
        let (r, _, after) = evaluate(&cmd, Proto::Resp2, &t, &[cur]);
        (String::from_utf8_lossy(&r).into_owned(), after)
    }

    #[test]
    fn commands_run_on_the_original_bytes_with_redis_errors() {
        let v = Current::Value(Bytes::from("hello"));
        assert_eq!(eval(&["STRLEN", "k"], v.clone()).0, ":5\r\n");
        let (r, after) = eval(&["APPEND", "k", " world"], v.clone());
        assert_eq!(
            (r.as_str(), after),
            (":11\r\n", Some(Bytes::from("hello world")))
        );
        assert_eq!(
            eval(&["GETRANGE", "k", "1", "-2"], v.clone()).0,
            "$3\r\nell\r\n"
        );
        assert!(eval(&["APPEND", "k", "x"], Current::WrongType)
            .0
            .starts_with("-WRONGTYPE"));
        assert_eq!(
            eval(&["GETRANGE", "k", "a", "1"], Current::WrongType).0,
            "-ERR value is not an integer or out of range\r\n"
        );
        let (r, after) = eval(&["SETRANGE", "k", "0", ""], Current::Missing);
        assert_eq!((r.as_str(), after), (":0\r\n", None));
    }
}
