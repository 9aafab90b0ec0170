//! Hash commands. Small hashes keep insertion order on delete, as Redis's listpack does, so
//! HGETALL matches Redis byte for byte for them.

use bytes::Bytes;
use indexmap::IndexMap;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::db::{Value, ELEM_OVERHEAD};
use super::out::fmt_human;
use super::{own, parse_f64, parse_i64, Ctx, Handler, Out, NOT_FLOAT, NOT_INT, SYNTAX, WRONGTYPE};

/// Largest hash Redis 7.0 keeps as an ordered listpack (hash-max-listpack-entries).
pub const SMALL: usize = 128;

fn new_hash() -> Value {
    Value::Hash(IndexMap::new())
}

type H = IndexMap<Bytes, Bytes>;

/// The hash at `key` for reading; Err(()) for another type.
fn read<'c>(ctx: &'c mut Ctx, key: &[u8]) -> Result<Option<&'c H>, ()> {
    match ctx.read(key) {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(()),
    }
}

fn wrong(ctx: &mut Ctx, key: &[u8]) -> bool {
    matches!(ctx.get(key).map(|e| &e.value), Some(v) if !matches!(v, Value::Hash(_)))
}

fn hash_mut(v: &mut Value) -> &mut H {
    match v {
        Value::Hash(h) => h,
        _ => unreachable!("type checked before modify"),
    }
}

/// Sets a field; returns (added, cost delta).
fn put(h: &mut H, f: &Bytes, v: &Bytes) -> (bool, isize) {
    match h.insert(own(f), own(v)) {
        Some(old) => (false, v.len() as isize - old.len() as isize),
        None => (true, (f.len() + v.len() + 2 * ELEM_OVERHEAD) as isize),
    }
}

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("hset", cmd_hset),
    ("hmset", cmd_hset),
    ("hsetnx", cmd_hsetnx),
    ("hget", cmd_hget),
    ("hmget", cmd_hmget),
    ("hgetall", cmd_hgetall),
    ("hkeys", cmd_hgetall),
    ("hvals", cmd_hgetall),
    ("hlen", cmd_hgetall),
    ("hexists", cmd_hexists),
    ("hstrlen", cmd_hstrlen),
    ("hdel", cmd_hdel),
    ("hincrby", cmd_hincrby),
    ("hincrbyfloat", cmd_hincrbyfloat),
    ("hrandfield", cmd_hrandfield),
    ("hscan", cmd_hscan),
];

fn cmd_hset(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    if !a.len().is_multiple_of(2) {
        out.err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return;
    }
    if wrong(ctx, &a[1]) {
        out.err(WRONGTYPE);
        return;
    }
    let added = ctx.modify(&a[1], Some(new_hash), |v| {
        let h = hash_mut(v);
        let (mut n, mut d) = (0, 0);
        for fv in a[2..].chunks(2) {
            let (added, delta) = put(h, &fv[0], &fv[1]);
            n += added as i64;
            d += delta;
        }
        (n, d)
    });
    if name == "hset" {
        out.int(added.unwrap_or(0))
    } else {
        out.ok()
    }
}

fn cmd_hsetnx(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if wrong(ctx, &a[1]) {
        out.err(WRONGTYPE);
        return;
    }
    let exists = matches!(read(ctx, &a[1]), Ok(Some(h)) if h.contains_key(&a[2]));
    if !exists {
        ctx.modify(&a[1], Some(new_hash), |v| {
            ((), put(hash_mut(v), &a[2], &a[3]).1)
        });
    }
    out.int(!exists as i64);
}

fn cmd_hget(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(h) => match h.and_then(|h| h.get(&a[2])) {
            Some(v) => out.bulk(v),
            None => out.nil(),
        },
    };
}

fn cmd_hmget(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(h) => {
            out.array(a.len() - 2);
            for f in &a[2..] {
                match h.and_then(|h| h.get(f)) {
                    Some(v) => out.bulk(v),
                    None => out.nil(),
                }
            }
        }
    };
}

fn cmd_hgetall(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(h) => {
            let empty = H::new();
            let h = h.unwrap_or(&empty);
            match name {
                "hgetall" => {
                    out.map(h.len());
                    for (k, v) in h {
                        out.bulk(k);
                        out.bulk(v);
                    }
                }
                "hkeys" => out.bulks(h.keys().map(|k| &k[..])),
                "hvals" => out.bulks(h.values().map(|v| &v[..])),
                _ => out.int(h.len() as i64),
            }
        }
    };
}

fn cmd_hexists(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(h) => out.int(h.and_then(|h| h.get(&a[2])).is_some() as i64),
    };
}

fn cmd_hstrlen(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match field_number(ctx, a) {
        Err(e) => out.err(&e),
        Ok(v) => out.int(v.map_or(0, |v| v.len()) as i64),
    };
}

fn cmd_hdel(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if wrong(ctx, &a[1]) {
        out.err(WRONGTYPE);
        return;
    }
    let n = ctx.modify(&a[1], None, |v| {
        let h = hash_mut(v);
        let (mut n, mut d) = (0, 0isize);
        for f in &a[2..] {
            let small = h.len() <= SMALL;
            let removed = if small {
                h.shift_remove(f)
            } else {
                h.swap_remove(f)
            };
            if let Some(old) = removed {
                n += 1;
                d -= (f.len() + old.len() + 2 * ELEM_OVERHEAD) as isize;
            }
        }
        (n, d)
    });
    out.int(n.unwrap_or(0));
}

fn cmd_hincrby(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    hincrby(ctx, a, out);
}

fn cmd_hincrbyfloat(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    hincrbyfloat(ctx, a, out);
}

fn cmd_hrandfield(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    hrandfield(ctx, a, out);
}

fn cmd_hscan(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let h = match read(ctx, &a[1]) {
        Err(()) => {
            out.err(WRONGTYPE);
            return;
        }
        Ok(h) => h.cloned().unwrap_or_default(),
    };
    super::sets::scan_reply(
        a,
        h.iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        out,
    );
}

/// The original bytes of field a[2] of hash a[1] (decoded when stored compressed).
fn field_number(ctx: &mut Ctx, a: &[Bytes]) -> Result<Option<Bytes>, String> {
    match read(ctx, &a[1]) {
        Err(()) => Err(WRONGTYPE.into()),
        Ok(h) => match h.and_then(|h| h.get(&a[2]).cloned()) {
            Some(v) => ctx.plain(&a[1], v).map(Some),
            None => Ok(None),
        },
    }
}

fn hincrby(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(by) = parse_i64(&a[3]) else {
        return out.err(NOT_INT);
    };
    let cur = match field_number(ctx, a) {
        Err(e) => return out.err(&e),
        Ok(None) => 0,
        Ok(Some(v)) => match parse_i64(&v) {
            Some(n) => n,
            None => return out.err("ERR hash value is not an integer"),
        },
    };
    let Some(n) = cur.checked_add(by) else {
        return out.err("ERR increment or decrement would overflow");
    };
    let v = Bytes::from(n.to_string());
    ctx.modify(&a[1], Some(new_hash), |h| {
        ((), put(hash_mut(h), &a[2], &v).1)
    });
    out.int(n);
}

fn hincrbyfloat(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(by) = parse_f64(&a[3]) else {
        return out.err(NOT_FLOAT);
    };
    let cur = match field_number(ctx, a) {
        Err(e) => return out.err(&e),
        Ok(None) => 0.0,
        Ok(Some(v)) => match parse_f64(&v) {
            Some(n) => n,
            None => return out.err("ERR hash value is not a float"),
        },
    };
    let n = cur + by;
    if !n.is_finite() {
        return out.err("ERR increment would produce NaN or Infinity");
    }
    let v = Bytes::from(fmt_human(n));
    ctx.modify(&a[1], Some(new_hash), |h| {
        ((), put(hash_mut(h), &a[2], &v).1)
    });
    out.bulk(&v);
}

fn hrandfield(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let count = match a.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) => Some(n),
            None => return out.err(NOT_INT),
        },
    };
    let with_values = match a.get(3) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"withvalues") && a.len() == 4 => true,
        Some(_) => return out.err(SYNTAX),
    };
    let h = match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(h) => h.cloned().unwrap_or_default(),
    };
    let items: Vec<(&Bytes, &Bytes)> = h.iter().collect();
    let mut rng = rand::rng();
    let Some(n) = count else {
        return match items.choose(&mut rng) {
            Some((k, _)) => out.bulk(k),
            None => out.nil(),
        };
    };
    let picked: Vec<(&Bytes, &Bytes)> = if n >= 0 && n as usize >= items.len() {
        // The whole hash, in its own order (as Redis does).
        items
    } else if n >= 0 {
        let n = n as usize;
        items.choose_multiple(&mut rng, n).copied().collect()
    } else if items.is_empty() {
        Vec::new()
    } else if n.unsigned_abs() > super::MAX_SAMPLED {
        return out.err(super::TOO_MANY);
    } else {
        (0..n.unsigned_abs())
            .map(|_| items[rng.random_range(0..items.len())])
            .collect()
    };
    if with_values && out.proto == crate::protocol::Proto::Resp3 {
        out.array(picked.len());
        for (k, v) in picked {
            out.array(2);
            out.bulk(k);
            out.bulk(v);
        }
    } else {
        out.array(picked.len() * if with_values { 2 } else { 1 });
        for (k, v) in picked {
            out.bulk(k);
            if with_values {
                out.bulk(v);
            }
        }
    }
}
