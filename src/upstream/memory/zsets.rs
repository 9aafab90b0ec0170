//! Sorted-set commands: ZADD with its flags, scores, ranks, ZRANGE in all its forms, pops and
//! range removals.

use bytes::Bytes;

use super::db::{Value, ELEM_OVERHEAD};
use super::zset::ZSet;
use super::{own, parse_f64, parse_i64, Ctx, Handler, Out, NOT_FLOAT, NOT_INT, SYNTAX, WRONGTYPE};
use crate::protocol::Proto;

fn new_zset() -> Value {
    Value::ZSet(ZSet::default())
}

fn z_mut(v: &mut Value) -> &mut ZSet {
    match v {
        Value::ZSet(z) => z,
        _ => unreachable!("type checked before modify"),
    }
}

fn read(ctx: &mut Ctx, key: &[u8]) -> Result<Option<ZSet>, ()> {
    match ctx.read(key) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z.clone())),
        Some(_) => Err(()),
    }
}

fn cost(m: &[u8]) -> isize {
    (m.len() + 2 * ELEM_OVERHEAD + 8) as isize
}

/// One end of a score range.
#[derive(Clone, Copy)]
struct Bound {
    v: f64,
    excl: bool,
}

fn score_bound(b: &[u8]) -> Option<Bound> {
    let (excl, rest) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    parse_f64(rest).map(|v| Bound { v, excl })
}

/// One end of a lex range: None = unbounded (`-` below, `+` above).
#[derive(Clone)]
enum Lex {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

fn lex_bound(b: &Bytes) -> Option<Lex> {
    match b.first() {
        Some(b'-') if b.len() == 1 => Some(Lex::Min),
        Some(b'+') if b.len() == 1 => Some(Lex::Max),
        Some(b'[') => Some(Lex::Incl(b.slice(1..))),
        Some(b'(') => Some(Lex::Excl(b.slice(1..))),
        _ => None,
    }
}

fn lex_above(m: &[u8], min: &Lex) -> bool {
    match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::Incl(x) => m >= &x[..],
        Lex::Excl(x) => m > &x[..],
    }
}

fn lex_below(m: &[u8], max: &Lex) -> bool {
    match max {
        Lex::Min => false,
        Lex::Max => true,
        Lex::Incl(x) => m <= &x[..],
        Lex::Excl(x) => m < &x[..],
    }
}

fn in_scores(s: f64, min: Bound, max: Bound) -> bool {
    (if min.excl { s > min.v } else { s >= min.v })
        && (if max.excl { s < max.v } else { s <= max.v })
}

fn reply_pairs(out: &mut Out, items: &[(Bytes, f64)], scores: bool, nested: bool) {
    if scores && nested && out.proto == Proto::Resp3 {
        out.array(items.len());
        for (m, s) in items {
            out.array(2);
            out.bulk(m);
            out.double(*s);
        }
    } else {
        out.array(items.len() * if scores { 2 } else { 1 });
        for (m, s) in items {
            out.bulk(m);
            if scores {
                out.double(*s);
            }
        }
    }
}

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("zadd", cmd_zadd),
    ("zincrby", cmd_zincrby),
    ("zrem", cmd_zrem),
    ("zscore", cmd_zscore),
    ("zcard", cmd_zscore),
    ("zmscore", cmd_zscore),
    ("zrank", cmd_zscore),
    ("zrevrank", cmd_zscore),
    ("zcount", cmd_zcount),
    ("zlexcount", cmd_zcount),
    ("zrange", cmd_zrange),
    ("zrevrange", cmd_zrange),
    ("zrangebyscore", cmd_zrange),
    ("zrevrangebyscore", cmd_zrange),
    ("zrangebylex", cmd_zrange),
    ("zrevrangebylex", cmd_zrange),
    ("zpopmin", cmd_zpopmin),
    ("zpopmax", cmd_zpopmin),
    ("zremrangebyscore", cmd_zremrangebyscore),
    ("zremrangebyrank", cmd_zremrangebyscore),
    ("zremrangebylex", cmd_zremrangebyscore),
    ("zscan", cmd_zscan),
];

fn cmd_zadd(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    zadd(ctx, a, out);
}

fn cmd_zincrby(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    // ZINCRBY is ZADD ... INCR with one pair; its errors are ZADD's.
    let args = [
        a[0].clone(),
        a[1].clone(),
        Bytes::from_static(b"INCR"),
        a[2].clone(),
        a[3].clone(),
    ];
    zadd(ctx, &args, out);
}

fn cmd_zrem(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if read(ctx, &a[1]).is_err() {
        out.err(WRONGTYPE);
        return;
    }
    let n = ctx.modify(&a[1], None, |v| {
        let z = z_mut(v);
        let gone: Vec<&Bytes> = a[2..].iter().filter(|m| z.remove(m).is_some()).collect();
        (gone.len(), -gone.iter().map(|m| cost(m)).sum::<isize>())
    });
    out.int(n.unwrap_or(0) as i64);
}

fn cmd_zscore(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(z) => {
            let z = z.unwrap_or_default();
            match name {
                "zscore" => match z.score(&a[2]) {
                    Some(s) => out.double(s),
                    None => out.nil(),
                },
                "zcard" => out.int(z.len() as i64),
                "zmscore" => {
                    out.array(a.len() - 2);
                    for m in &a[2..] {
                        match z.score(m) {
                            Some(s) => out.double(s),
                            None => out.nil(),
                        }
                    }
                }
                _ => match z.rank(&a[2]) {
                    Some(r) if name == "zrank" => out.int(r as i64),
                    Some(r) => out.int((z.len() - 1 - r) as i64),
                    None => out.nil(),
                },
            }
        }
    };
}

fn cmd_zcount(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let items = if name == "zcount" {
        select(
            ctx,
            &a[1],
            Sel::Score(a[2].clone(), a[3].clone()),
            false,
            None,
        )
    } else {
        select(
            ctx,
            &a[1],
            Sel::Lex(a[2].clone(), a[3].clone()),
            false,
            None,
        )
    };
    match items {
        Ok(v) => out.int(v.len() as i64),
        Err(e) => out.err(e),
    }
}

fn cmd_zrange(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    zrange(ctx, name, a, out);
}

fn cmd_zpopmin(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let count = match a.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) if n >= 0 => Some(n as usize),
            Some(_) => {
                out.err("ERR value is out of range, must be positive");
                return;
            }
            None => {
                out.err(NOT_INT);
                return;
            }
        },
    };
    match pop(ctx, &a[1], name == "zpopmin", count.unwrap_or(1)) {
        Err(()) => out.err(WRONGTYPE),
        Ok(items) => reply_pairs(out, &items, true, count.is_some()),
    }
}

fn cmd_zremrangebyscore(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let sel = match name {
        "zremrangebyscore" => Sel::Score(a[2].clone(), a[3].clone()),
        "zremrangebylex" => Sel::Lex(a[2].clone(), a[3].clone()),
        _ => Sel::Rank(a[2].clone(), a[3].clone()),
    };
    match select(ctx, &a[1], sel, false, None) {
        Err(e) => out.err(e),
        Ok(items) => {
            remove_members(ctx, &a[1], &items);
            out.int(items.len() as i64);
        }
    }
}

fn cmd_zscan(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(z) => {
            let z = z.unwrap_or_default();
            let items = z
                .iter()
                .map(|(m, s)| (m.clone(), Some(Bytes::from(super::out::fmt_double(s)))))
                .collect();
            super::sets::scan_reply(a, items, out);
        }
    };
}

/// Pops up to `count` members from the low (min) or high end.
pub fn pop(ctx: &mut Ctx, key: &Bytes, min: bool, count: usize) -> Result<Vec<(Bytes, f64)>, ()> {
    let Some(z) = read(ctx, key)? else {
        return Ok(Vec::new());
    };
    let items: Vec<(Bytes, f64)> = if min {
        z.iter().take(count).map(|(m, s)| (m.clone(), s)).collect()
    } else {
        z.iter()
            .rev()
            .take(count)
            .map(|(m, s)| (m.clone(), s))
            .collect()
    };
    remove_members(ctx, key, &items);
    Ok(items)
}

/// Removes the given members (an emptied set goes with them).
fn remove_members(ctx: &mut Ctx, key: &Bytes, items: &[(Bytes, f64)]) {
    if items.is_empty() {
        return;
    }
    ctx.modify(key, None, |v| {
        let z = z_mut(v);
        let freed: isize = items
            .iter()
            .filter(|(m, _)| z.remove(m).is_some())
            .map(|(m, _)| cost(m))
            .sum();
        ((), -freed)
    });
}

fn zadd(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "gt" => gt = true,
            "lt" => lt = true,
            "ch" => ch = true,
            "incr" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let rest = &a[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return out.err(SYNTAX);
    }
    if nx && xx {
        return out.err("ERR XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return out.err("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && rest.len() > 2 {
        return out.err("ERR INCR option supports a single increment-element pair");
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    for p in rest.chunks(2) {
        let Some(s) = parse_f64(&p[0]) else {
            return out.err(NOT_FLOAT);
        };
        pairs.push((s, p[1].clone()));
    }
    if read(ctx, &a[1]).is_err() {
        return out.err(WRONGTYPE);
    }
    if xx && !ctx.exists(&a[1]) {
        return if incr { out.nil() } else { out.int(0) };
    }
    let r = ctx.modify(&a[1], Some(new_zset), |v| {
        let z = z_mut(v);
        let (mut added, mut changed, mut d) = (0i64, 0i64, 0isize);
        let mut last: Result<Option<f64>, &'static str> = Ok(None);
        for (s, m) in &pairs {
            let cur = z.score(m);
            if (nx && cur.is_some()) || (xx && cur.is_none()) {
                last = Ok(None);
                continue;
            }
            let new = match (incr, cur) {
                (true, Some(c)) => c + s,
                _ => *s,
            };
            if new.is_nan() {
                last = Err("ERR resulting score is not a number (NaN)");
                break;
            }
            if let Some(c) = cur {
                if (gt && new <= c) || (lt && new >= c) {
                    last = Ok(None);
                    continue;
                }
                if c != new {
                    z.insert(m.clone(), new);
                    changed += 1;
                }
            } else {
                z.insert(own(m), new);
                added += 1;
                d += cost(m);
            }
            last = Ok(Some(new));
        }
        ((added, changed, last), d)
    });
    let Some((added, changed, last)) = r else {
        return out.int(0);
    };
    match (incr, last) {
        (_, Err(e)) => out.err(e),
        (true, Ok(Some(s))) => out.double(s),
        (true, Ok(None)) => out.nil(),
        (false, _) => out.int(if ch { added + changed } else { added }),
    }
}

enum Sel {
    Rank(Bytes, Bytes),
    Score(Bytes, Bytes),
    Lex(Bytes, Bytes),
}

/// Members selected by rank, score or lex range, ascending (or descending when `rev`, with
/// the range given high-to-low as Redis takes it), then LIMIT offset/count applied.
fn select(
    ctx: &mut Ctx,
    key: &[u8],
    sel: Sel,
    rev: bool,
    limit: Option<(i64, i64)>,
) -> Result<Vec<(Bytes, f64)>, &'static str> {
    let z = match read(ctx, key) {
        Err(()) => return Err(WRONGTYPE),
        Ok(z) => z.unwrap_or_default(),
    };
    let mut items: Vec<(Bytes, f64)> = match sel {
        Sel::Rank(s, e) => {
            let (Some(s), Some(e)) = (parse_i64(&s), parse_i64(&e)) else {
                return Err(NOT_INT);
            };
            let len = z.len() as i64;
            let s = if s < 0 { (s + len).max(0) } else { s };
            let e = if e < 0 { e + len } else { e.min(len - 1) };
            if s > e || s >= len {
                return Ok(Vec::new());
            }
            let all: Vec<(Bytes, f64)> = if rev {
                z.iter().rev().map(|(m, s)| (m.clone(), s)).collect()
            } else {
                z.iter().map(|(m, s)| (m.clone(), s)).collect()
            };
            return Ok(all[s as usize..=e as usize].to_vec());
        }
        Sel::Score(lo, hi) => {
            let (lo, hi) = if rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (score_bound(&lo), score_bound(&hi)) else {
                return Err("ERR min or max is not a float");
            };
            z.iter()
                .filter(|(_, s)| in_scores(*s, min, max))
                .map(|(m, s)| (m.clone(), s))
                .collect()
        }
        Sel::Lex(lo, hi) => {
            let (lo, hi) = if rev { (hi, lo) } else { (lo, hi) };
            let (Some(min), Some(max)) = (lex_bound(&lo), lex_bound(&hi)) else {
                return Err("ERR min or max not valid string range item");
            };
            z.iter()
                .filter(|(m, _)| lex_above(m, &min) && lex_below(m, &max))
                .map(|(m, s)| (m.clone(), s))
                .collect()
        }
    };
    if rev {
        items.reverse();
    }
    if let Some((off, count)) = limit {
        if off < 0 {
            return Ok(Vec::new());
        }
        let it = items.into_iter().skip(off as usize);
        items = if count < 0 {
            it.collect()
        } else {
            it.take(count as usize).collect()
        };
    }
    Ok(items)
}

fn zrange(ctx: &mut Ctx, name: &str, a: &[Bytes], out: &mut Out) {
    let (mut by, mut rev) = (
        match name {
            "zrangebyscore" | "zrevrangebyscore" => 1,
            "zrangebylex" | "zrevrangebylex" => 2,
            _ => 0,
        },
        name.starts_with("zrev"),
    );
    let (mut scores, mut limit) = (false, None);
    let mut i = 4;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "withscores" => scores = true,
            "byscore" if name == "zrange" => by = 1,
            "bylex" if name == "zrange" => by = 2,
            "rev" if name == "zrange" => rev = true,
            "limit" if i + 2 < a.len() => {
                let (Some(o), Some(c)) = (parse_i64(&a[i + 1]), parse_i64(&a[i + 2])) else {
                    return out.err(NOT_INT);
                };
                limit = Some((o, c));
                i += 2;
            }
            _ => return out.err(SYNTAX),
        }
        i += 1;
    }
    if limit.is_some() && by == 0 {
        return out.err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if scores && by == 2 {
        return out.err("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    let sel = match by {
        0 => Sel::Rank(a[2].clone(), a[3].clone()),
        1 => Sel::Score(a[2].clone(), a[3].clone()),
        _ => Sel::Lex(a[2].clone(), a[3].clone()),
    };
    match select(ctx, &a[1], sel, rev, limit) {
        Err(e) => out.err(e),
        Ok(items) => reply_pairs(out, &items, scores, true),
    }
}
