//! EVAL on the embedded store: the proxy's own scripts (upstream/scripts.rs), recognised by
//! their exact bodies and run natively under the store's lock, so they are as atomic here as
//! Lua is on Redis. Any other script gets the store's not-implemented error: there is no Lua
//! interpreter here.

use bytes::Bytes;
use redis_protocol::resp2::types::OwnedFrame as F;

use super::conn::{run_one, unknown};
use super::{Ctx, Handler, Out};
use crate::protocol::Proto;
use crate::upstream::scripts::{self, Script};

pub(super) const COMMANDS: &[(&str, Handler)] = &[("eval", cmd_eval)];

fn cmd_eval(ctx: &mut Ctx, _: &'static str, a: &[Bytes], out: &mut Out) {
    let Some(script) = scripts::by_body(&a[1]) else {
        return out.err(NO_LUA);
    };
    let n = match super::parse_i64(&a[2]) {
        Some(n) if n >= 0 && (n as usize) <= a.len() - 3 => n as usize,
        Some(n) if n < 0 => return out.err("ERR Number of keys can't be negative"),
        Some(_) => return out.err("ERR Number of keys can't be greater than number of args"),
        None => return out.err(super::NOT_INT),
    };
    let (keys, argv) = a[3..].split_at(n);
    run(script, ctx, keys, argv, out);
}

/// Any script but the proxy's own.
const NO_LUA: &str = "ERR the embedded store runs no Lua scripts (only prescient's own operations); use a Redis upstream for EVAL";

/// Wrong arguments to one of our own scripts: Lua would fail on them too, with another text.
const BAD: &str = "ERR prescient script called with the wrong arguments";

/// As in Lua, a script may not run a script: nesting would recurse once per level, and a
/// client could nest thousands deep in one request.
const NESTED: &str = "ERR This Redis command is not allowed from script";

fn nests(cmd: Option<&Bytes>) -> bool {
    cmd.is_some_and(|c| {
        [
            &b"eval"[..],
            b"evalsha",
            b"eval_ro",
            b"evalsha_ro",
            b"fcall",
            b"fcall_ro",
        ]
        .iter()
        .any(|n| c.eq_ignore_ascii_case(n))
    })
}

fn run(s: &Script, ctx: &mut Ctx, k: &[Bytes], v: &[Bytes], out: &mut Out) {
    let inner = match s.name {
        "count" => v.get(2),
        "fenced" => v.get(1),
        _ => None,
    };
    if nests(inner) {
        return out.err(NESTED);
    }
    match s.name {
        "count" if k.len() == 2 && v.len() >= 3 => {
            let mut first = Out::new(out.proto);
            if let Some(spec) = crate::command::lookup(&v[2]) {
                run_one(ctx, spec, &v[2..], &mut first);
            } else {
                unknown(&v[2..], None, &mut first);
            }
            if !first.buf.starts_with(b"-") {
                call(ctx, &[b"HINCRBY", &k[1], &v[0], &v[1]]);
            }
            out.raw(&first.buf);
        }
        "lease" if k.len() == 2 && v.len() == 2 => {
            if let F::BulkString(cur) = call(ctx, &[b"GET", &k[0]]) {
                let mine = cur
                    .iter()
                    .position(|&b| b == b' ')
                    .filter(|&sp| cur[..sp] == v[0][..]);
                match mine {
                    Some(sp) => {
                        call(ctx, &[b"PEXPIRE", &k[0], &v[1]]);
                        match super::parse_i64(&cur[sp + 1..]) {
                            Some(t) => out.int(t),
                            None => out.nil(),
                        }
                    }
                    None => out.int(0),
                }
                return;
            }
            let F::Integer(t) = call(ctx, &[b"INCR", &k[1]]) else {
                return out.err("ERR the fence counter is not an integer");
            };
            let mut value = v[0].to_vec();
            value.push(b' ');
            value.extend_from_slice(t.to_string().as_bytes());
            call(ctx, &[b"SET", &k[0], &value, b"PX", &v[1]]);
            out.int(t);
        }
        "release" if k.len() == 1 && v.len() == 1 => match call(ctx, &[b"GET", &k[0]]) {
            F::BulkString(cur) if cur[..] == v[0][..] => {
                call(ctx, &[b"DEL", &k[0]]);
                out.int(1)
            }
            _ => out.int(0),
        },
        "fenced" if !k.is_empty() && v.len() >= 2 => match call(ctx, &[b"GET", &k[0]]) {
            F::BulkString(cur) if cur[..] == v[0][..] => match crate::command::lookup(&v[1]) {
                Some(spec) => run_one(ctx, spec, &v[1..], out),
                None => unknown(&v[1..], None, out),
            },
            _ => out.err("FENCED the lease was taken over: stale token"),
        },
        "batch" if k.len() == 3 && v.len() == 2 => {
            if call(ctx, &[b"EXISTS", &k[0]]) != F::Integer(1) {
                return out.int(0);
            }
            call(ctx, &[b"RENAME", &k[0], &k[1]]);
            call(ctx, &[b"ZADD", &k[2], &v[1], &v[0]]);
            out.int(1);
        }
        "reclaim" if k.len() == 1 && v.len() == 3 => {
            let stale = bulks(call(
                ctx,
                &[
                    b"ZRANGEBYSCORE",
                    &k[0],
                    b"-inf",
                    &v[0],
                    b"LIMIT",
                    b"0",
                    &v[2],
                ],
            ));
            for m in &stale {
                call(ctx, &[b"ZADD", &k[0], &v[1], m]);
            }
            out.bulks(stale.iter().map(Vec::as_slice));
        }
        "claim" if k.len() == 3 && v.len() == 4 => {
            let mut found: Vec<Vec<u8>> = Vec::new();
            let stale = bulks(call(
                ctx,
                &[
                    b"ZRANGEBYSCORE",
                    &k[1],
                    b"-inf",
                    &v[1],
                    b"LIMIT",
                    b"0",
                    &v[3],
                ],
            ));
            for m in stale {
                call(ctx, &[b"ZADD", &k[1], &v[2], &m]);
                let due = match call(ctx, &[b"HGET", &k[2], &m]) {
                    F::BulkString(d) => d,
                    _ => b"0".to_vec(),
                };
                found.push(m);
                found.push(due);
            }
            let due = bulks(call(
                ctx,
                &[
                    b"ZRANGEBYSCORE",
                    &k[0],
                    b"-inf",
                    &v[0],
                    b"WITHSCORES",
                    b"LIMIT",
                    b"0",
                    &v[3],
                ],
            ));
            for pair in due.chunks_exact(2) {
                call(ctx, &[b"ZREM", &k[0], &pair[0]]);
                call(ctx, &[b"ZADD", &k[1], &v[2], &pair[0]]);
                call(ctx, &[b"HSET", &k[2], &pair[0], &pair[1]]);
                found.extend_from_slice(pair);
            }
            out.bulks(found.iter().map(Vec::as_slice));
        }
        _ => out.err(BAD),
    }
}

/// Runs one command (as `redis.call` would) and returns its reply.
fn call(ctx: &mut Ctx, parts: &[&[u8]]) -> F {
    let args: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let mut o = Out::new(Proto::Resp2);
    match crate::command::lookup(&args[0]) {
        Some(spec) => run_one(ctx, spec, &args, &mut o),
        None => return F::Error("ERR unknown command".into()),
    }
    match redis_protocol::resp2::decode::decode(&o.buf) {
        Ok(Some((f, _))) => f,
        _ => F::Error("ERR unreadable reply".into()),
    }
}

/// The bulk strings of an array reply.
fn bulks(f: F) -> Vec<Vec<u8>> {
    match f {
        F::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                F::BulkString(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Policy, Store};
    use super::*;

    #[test]
    fn a_script_cannot_nest_a_script_however_deep_the_request() {
        let store = Store::new(0, Policy::NoEviction);
        let fenced = Bytes::from_static(scripts::FENCED.lua.as_bytes());
        // EVAL <fenced> 1 f 1 EVAL <fenced> 1 f 1 ... PING: 50,000 levels in one request.
        let mut args: Vec<Bytes> = Vec::new();
        for _ in 0..50_000 {
            args.push(Bytes::from_static(b"EVAL"));
            args.push(fenced.clone());
            args.extend(["1", "f", "1"].map(|s| Bytes::from_static(s.as_bytes())));
        }
        args.push(Bytes::from_static(b"PING"));
        let mut inner = store.lock();
        let mut ctx = Ctx::new(&store, &mut inner, 0);
        let mut out = Out::new(Proto::Resp2);
        call(&mut ctx, &[b"SET", b"f", b"1"]);
        run_one(
            &mut ctx,
            crate::command::lookup(b"eval").unwrap(),
            &args,
            &mut out,
        );
        assert_eq!(String::from_utf8_lossy(&out.buf), format!("-{NESTED}\r\n"));
    }
}
