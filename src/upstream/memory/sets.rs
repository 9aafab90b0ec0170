//! Set commands. Sets of at most 512 integers reply in ascending order, as Redis's intset
//! does; other sets in insertion order (Redis's order there is a hash order).

use bytes::Bytes;
use indexmap::IndexSet;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::db::{Value, ELEM_OVERHEAD};
use super::{own, parse_i64, Ctx, Handler, Out, NOT_INT, SYNTAX, WRONGTYPE};

type S = IndexSet<Bytes>;

fn new_set() -> Value {
    Value::Set(IndexSet::new())
}

fn read(ctx: &mut Ctx, key: &[u8]) -> Result<Option<S>, ()> {
    match ctx.read(key) {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

fn set_mut(v: &mut Value) -> &mut S {
    match v {
        Value::Set(s) => s,
        _ => unreachable!("type checked before modify"),
    }
}

/// Members in the order Redis would list them.
pub fn ordered(s: &S) -> Vec<Bytes> {
    let ints: Option<Vec<(i64, &Bytes)>> = (s.len() <= 512)
        .then(|| s.iter().map(|m| parse_i64(m).map(|n| (n, m))).collect())
        .flatten();
    match ints {
        Some(mut v) => {
            v.sort();
            v.into_iter().map(|(_, m)| m.clone()).collect()
        }
        None => s.iter().cloned().collect(),
    }
}

fn reply_set(out: &mut Out, members: &[Bytes]) {
    out.set(members.len());
    for m in members {
        out.bulk(m);
    }
}

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("sadd", cmd_sadd),
    ("srem", cmd_srem),
    ("smembers", cmd_smembers),
    ("scard", cmd_smembers),
    ("sismember", cmd_smembers),
    ("smismember", cmd_smembers),
    ("sinter", cmd_sinter),
    ("sunion", cmd_sinter),
    ("sdiff", cmd_sinter),
    ("sinterstore", cmd_sinterstore),
    ("sunionstore", cmd_sinterstore),
    ("sdiffstore", cmd_sinterstore),
    ("sintercard", cmd_sintercard),
    ("smove", cmd_smove),
    ("spop", cmd_spop),
    ("srandmember", cmd_spop),
    ("sscan", cmd_sscan),
];

fn cmd_sadd(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if read(ctx, &a[1]).is_err() {
        out.err(WRONGTYPE);
        return;
    }
    let n = ctx.modify(&a[1], Some(new_set), |v| {
        let s = set_mut(v);
        let (mut n, mut d) = (0, 0);
        for m in &a[2..] {
            if s.insert(own(m)) {
                n += 1;
                d += (m.len() + ELEM_OVERHEAD) as isize;
            }
        }
        (n, d)
    });
    out.int(n.unwrap_or(0));
}

fn cmd_srem(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if read(ctx, &a[1]).is_err() {
        out.err(WRONGTYPE);
        return;
    }
    let n = ctx.modify(&a[1], None, |v| {
        let s = set_mut(v);
        let (mut n, mut d) = (0, 0);
        for m in &a[2..] {
            if s.shift_remove(m) {
                n += 1;
                d -= (m.len() + ELEM_OVERHEAD) as isize;
            }
        }
        (n, d)
    });
    out.int(n.unwrap_or(0));
}

fn cmd_smembers(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(s) => {
            let s = s.unwrap_or_default();
            match name {
                "smembers" => reply_set(out, &ordered(&s)),
                "scard" => out.int(s.len() as i64),
                "sismember" => out.int(s.contains(&a[2]) as i64),
                _ => {
                    out.array(a.len() - 2);
                    for m in &a[2..] {
                        out.int(s.contains(m) as i64);
                    }
                }
            }
        }
    };
}

fn cmd_sinter(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    match combine(ctx, name, &a[1..]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(s) => reply_set(out, &ordered(&s)),
    };
}

fn cmd_sinterstore(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    match combine(ctx, &name[..name.len() - 5], &a[2..]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(s) => {
            let n = s.len();
            ctx.delete(&a[1]);
            if n > 0 {
                ctx.set(&a[1], Value::Set(s), None, false);
            }
            out.int(n as i64);
        }
    }
}

fn cmd_sintercard(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    sintercard(ctx, a, out);
}

fn cmd_smove(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    smove(ctx, a, out);
}

fn cmd_spop(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    pop_or_sample(ctx, name == "spop", a, out);
}

fn cmd_sscan(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(s) => {
            let items = ordered(&s.unwrap_or_default())
                .into_iter()
                .map(|m| (m, None))
                .collect();
            scan_reply(a, items, out);
        }
    };
}

fn combine(ctx: &mut Ctx, op: &str, keys: &[Bytes]) -> Result<S, ()> {
    let mut sets = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(read(ctx, k)?);
    }
    let mut it = sets.into_iter();
    let first = it.next().flatten().unwrap_or_default();
    Ok(match op {
        "sunion" => it.fold(first, |mut acc, s| {
            acc.extend(s.unwrap_or_default());
            acc
        }),
        "sinter" => it.fold(first, |acc, s| {
            let s = s.unwrap_or_default();
            acc.into_iter().filter(|m| s.contains(m)).collect()
        }),
        _ => it.fold(first, |acc, s| {
            let s = s.unwrap_or_default();
            acc.into_iter().filter(|m| !s.contains(m)).collect()
        }),
    })
}

fn sintercard(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let n = match parse_i64(&a[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return out.err("ERR numkeys should be greater than 0"),
    };
    if a.len() < 2 + n {
        return out.err("ERR Number of keys can't be greater than number of args");
    }
    let mut limit = 0usize;
    let rest = &a[2 + n..];
    if !rest.is_empty() {
        match (rest.len(), rest[0].eq_ignore_ascii_case(b"limit")) {
            (2, true) => match parse_i64(&rest[1]) {
                Some(l) if l >= 0 => limit = l as usize,
                _ => return out.err("ERR LIMIT can't be negative"),
            },
            _ => return out.err(SYNTAX),
        }
    }
    match combine(ctx, "sinter", &a[2..2 + n]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(s) => out.int(if limit > 0 {
            s.len().min(limit)
        } else {
            s.len()
        } as i64),
    }
}

fn smove(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (Ok(src), Ok(_)) = (read(ctx, &a[1]), read(ctx, &a[2])) else {
        return out.err(WRONGTYPE);
    };
    if !src.is_some_and(|s| s.contains(&a[3])) {
        return out.int(0);
    }
    let m = a[3].clone();
    ctx.modify(&a[1], None, |v| {
        (
            (),
            if set_mut(v).shift_remove(&m) {
                -((m.len() + ELEM_OVERHEAD) as isize)
            } else {
                0
            },
        )
    });
    ctx.modify(&a[2], Some(new_set), |v| {
        (
            (),
            if set_mut(v).insert(own(&m)) {
                (m.len() + ELEM_OVERHEAD) as isize
            } else {
                0
            },
        )
    });
    out.int(1);
}

fn pop_or_sample(ctx: &mut Ctx, pop: bool, a: &[Bytes], out: &mut Out) {
    let count = match a.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) if !pop || n >= 0 => Some(n),
            Some(_) => return out.err("ERR value is out of range, must be positive"),
            None => return out.err(NOT_INT),
        },
    };
    if a.len() > 3 {
        return out.err(SYNTAX);
    }
    let s = match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(s) => s.unwrap_or_default(),
    };
    let members: Vec<&Bytes> = s.iter().collect();
    let mut rng = rand::rng();
    let picked: Vec<Bytes> = match count {
        None => members
            .choose(&mut rng)
            .map(|m| (*m).clone())
            .into_iter()
            .collect(),
        Some(n) if n >= 0 => members
            .choose_multiple(&mut rng, (n as usize).min(members.len()))
            .map(|m| (*m).clone())
            .collect(),
        Some(_) if members.is_empty() => Vec::new(),
        Some(n) if n.unsigned_abs() > super::MAX_SAMPLED => return out.err(super::TOO_MANY),
        Some(n) => (0..n.unsigned_abs())
            .map(|_| members[rng.random_range(0..members.len())].clone())
            .collect(),
    };
    if pop && !picked.is_empty() {
        let gone = picked.clone();
        ctx.modify(&a[1], None, |v| {
            let s = set_mut(v);
            let d: isize = gone
                .iter()
                .filter(|m| s.shift_remove(*m))
                .map(|m| (m.len() + ELEM_OVERHEAD) as isize)
                .sum();
            ((), -d)
        });
    }
    match count {
        None => match picked.first() {
            Some(m) => out.bulk(m),
            None => out.nil(),
        },
        Some(_) if pop => reply_set(out, &picked),
        Some(_) => out.bulks(picked.iter().map(|m| &m[..])),
    }
}

/// HSCAN/SSCAN/ZSCAN: small containers answer in one step with cursor 0, as Redis does for
/// its compact encodings; larger ones page through positions like SCAN.
pub fn scan_reply(a: &[Bytes], items: Vec<(Bytes, Option<Bytes>)>, out: &mut Out) {
    let Some(cursor) = std::str::from_utf8(&a[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return out.err("ERR invalid cursor");
    };
    let (mut pattern, mut count) = (None, 10usize);
    let mut i = 3;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return out.err(SYNTAX);
        };
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "match" => pattern = Some(v.clone()),
            "count" => match parse_i64(v) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return out.err(SYNTAX),
                None => return out.err(NOT_INT),
            },
            _ => return out.err(SYNTAX),
        }
        i += 2;
    }
    let (next, range) = if items.len() <= 128 {
        (0, 0..items.len())
    } else {
        let (n, r) = super::db::Db::scan_positions(items.len(), cursor, count);
        (n, r)
    };
    let picked: Vec<&(Bytes, Option<Bytes>)> = items[range]
        .iter()
        .filter(|(m, _)| {
            pattern
                .as_ref()
                .is_none_or(|p| crate::redis_glob::matches_key(p, m))
        })
        .collect();
    let n: usize = picked.iter().map(|(_, v)| 1 + v.is_some() as usize).sum();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(n);
    for (m, v) in picked {
        out.bulk(m);
        if let Some(v) = v {
            out.bulk(v);
        }
    }
}
