//! List commands (the blocking forms are in blocking.rs, which uses `pop` and `lmove` here).

use std::collections::VecDeque;

use bytes::Bytes;

use super::db::{Value, ELEM_OVERHEAD};
use super::{own, parse_i64, Ctx, Handler, Out, NOT_INT, SYNTAX, WRONGTYPE};

type L = VecDeque<Bytes>;

fn new_list() -> Value {
    Value::List(VecDeque::new())
}

fn list_mut(v: &mut Value) -> &mut L {
    match v {
        Value::List(l) => l,
        _ => unreachable!("type checked before modify"),
    }
}

/// The list at `key`: Ok(None) when missing, Err(()) for another type.
pub fn read<'c>(ctx: &'c mut Ctx, key: &[u8]) -> Result<Option<&'c L>, ()> {
    match ctx.read(key) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(()),
    }
}

fn cost(b: &Bytes) -> isize {
    (b.len() + ELEM_OVERHEAD) as isize
}

/// Resolves Redis list indexes (negative from the end) to a clamped inclusive range.
fn range(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let s = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let e = if end < 0 { end + len } else { end.min(len - 1) };
    (s <= e && s < len && e >= 0).then_some((s as usize, e as usize))
}

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("lpush", cmd_lpush),
    ("rpush", cmd_lpush),
    ("lpushx", cmd_lpush),
    ("rpushx", cmd_lpush),
    ("lpop", cmd_lpop),
    ("rpop", cmd_lpop),
    ("llen", cmd_llen),
    ("lrange", cmd_lrange),
    ("lindex", cmd_lindex),
    ("lset", cmd_lset),
    ("lrem", cmd_lrem),
    ("ltrim", cmd_ltrim),
    ("linsert", cmd_linsert),
    ("lpos", cmd_lpos),
    ("lmove", cmd_lmove),
    ("rpoplpush", cmd_lmove),
    ("lmpop", cmd_lmpop),
];

/// LMPOP and BLMPOP's arguments from `numkeys` at `a[at]` (Redis's lmpopGenericCommand):
/// (keys, from the left, count).
pub fn mpop_args(a: &[Bytes], at: usize) -> Result<(Vec<Bytes>, bool, usize), &'static str> {
    let n = match parse_i64(&a[at]) {
        Some(n) if n >= 1 => n as usize,
        _ => return Err("ERR numkeys should be greater than 0"),
    };
    let side_at = at.saturating_add(n).saturating_add(1);
    if side_at >= a.len() {
        return Err(SYNTAX);
    }
    let left = side(&a[side_at]).ok_or(SYNTAX)?;
    let mut count = None;
    let mut j = side_at + 1;
    while j < a.len() {
        if count.is_none() && a[j].eq_ignore_ascii_case(b"count") && j + 1 < a.len() {
            j += 1;
            match parse_i64(&a[j]) {
                Some(c) if c >= 1 => count = Some(c as usize),
                _ => return Err("ERR count should be greater than 0"),
            }
        } else {
            return Err(SYNTAX);
        }
        j += 1;
    }
    Ok((a[at + 1..side_at].to_vec(), left, count.unwrap_or(1)))
}

/// Pops up to `count` from the first of `keys` holding a list: Some(reply written), or None
/// when all are empty.
pub fn mpop(ctx: &mut Ctx, keys: &[Bytes], left: bool, count: usize, out: &mut Out) -> bool {
    for k in keys {
        match pop(ctx, k, left, count) {
            Err(()) => {
                out.err(WRONGTYPE);
                return true;
            }
            Ok(Some(items)) if !items.is_empty() => {
                out.array(2);
                out.bulk(k);
                out.bulks(items.iter().map(|b| &b[..]));
                return true;
            }
            _ => continue,
        }
    }
    false
}

fn cmd_lmpop(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match mpop_args(a, 1) {
        Err(e) => out.err(e),
        Ok((keys, left, count)) => {
            if !mpop(ctx, &keys, left, count, out) {
                out.nil_array();
            }
        }
    }
}

fn cmd_lpush(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    if read(ctx, &a[1]).is_err() {
        out.err(WRONGTYPE);
        return;
    }
    let make = if name.ends_with('x') {
        None
    } else {
        Some(new_list as fn() -> Value)
    };
    let left = name.starts_with('l');
    let n = ctx.modify(&a[1], make, |v| {
        let l = list_mut(v);
        let mut d = 0;
        for e in &a[2..] {
            d += cost(e);
            if left {
                l.push_front(own(e))
            } else {
                l.push_back(own(e))
            }
        }
        (l.len(), d)
    });
    if n.is_some() {
        ctx.touched.push((ctx.db, a[1].clone()));
    }
    out.int(n.unwrap_or(0) as i64);
}

fn cmd_lpop(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let count = match a.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                out.err("ERR value is out of range, must be positive");
                return;
            }
        },
    };
    match pop(ctx, &a[1], name == "lpop", count.unwrap_or(1)) {
        Err(()) => out.err(WRONGTYPE),
        Ok(None) if count.is_some() => out.nil_array(),
        Ok(None) => out.nil(),
        Ok(Some(items)) if count.is_some() => out.bulks(items.iter().map(|b| &b[..])),
        Ok(Some(items)) => out.bulk(&items[0]),
    }
}

fn cmd_llen(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(l) => out.int(l.map_or(0, |l| l.len()) as i64),
    };
}

fn cmd_lrange(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let (Some(s), Some(e)) = (parse_i64(&a[2]), parse_i64(&a[3])) else {
        out.err(NOT_INT);
        return;
    };
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(l) => {
            let l = l.cloned().unwrap_or_default();
            match range(l.len(), s, e) {
                Some((s, e)) => out.bulks(l.range(s..=e).map(|b| &b[..])),
                None => out.array(0),
            }
        }
    }
}

fn cmd_lindex(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let Some(i) = parse_i64(&a[2]) else {
        out.err(NOT_INT);
        return;
    };
    match read(ctx, &a[1]) {
        Err(()) => out.err(WRONGTYPE),
        Ok(l) => {
            let item = l.and_then(|l| {
                let idx = if i < 0 { i + l.len() as i64 } else { i };
                usize::try_from(idx).ok().and_then(|i| l.get(i))
            });
            match item {
                Some(v) => out.bulk(v),
                None => out.nil(),
            }
        }
    }
}

fn cmd_lset(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    lset(ctx, a, out);
}

fn cmd_lrem(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    lrem(ctx, a, out);
}

fn cmd_ltrim(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    ltrim(ctx, a, out);
}

fn cmd_linsert(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    linsert(ctx, a, out);
}

fn cmd_lpos(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    lpos(ctx, a, out);
}

fn cmd_lmove(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let (from_left, to_left) = if name == "rpoplpush" {
        (false, true)
    } else {
        match (side(&a[3]), side(&a[4])) {
            (Some(f), Some(t)) => (f, t),
            _ => {
                out.err(SYNTAX);
                return;
            }
        }
    };
    match lmove(ctx, &a[1], &a[2], from_left, to_left) {
        Err(()) => out.err(WRONGTYPE),
        Ok(Some(v)) => out.bulk(&v),
        Ok(None) => out.nil(),
    }
}

/// LEFT -> true, RIGHT -> false.
pub fn side(b: &[u8]) -> Option<bool> {
    if b.eq_ignore_ascii_case(b"left") {
        Some(true)
    } else if b.eq_ignore_ascii_case(b"right") {
        Some(false)
    } else {
        None
    }
}

/// Pops up to `count` elements; Ok(None) when the key is missing.
pub fn pop(ctx: &mut Ctx, key: &Bytes, left: bool, count: usize) -> Result<Option<Vec<Bytes>>, ()> {
    if read(ctx, key)?.is_none() {
        return Ok(None);
    }
    let items = ctx.modify(key, None, |v| {
        let l = list_mut(v);
        let mut got = Vec::new();
        let mut d = 0;
        for _ in 0..count {
            let e = if left { l.pop_front() } else { l.pop_back() };
            match e {
                Some(e) => {
                    d -= cost(&e);
                    got.push(e);
                }
                None => break,
            }
        }
        (got, d)
    });
    Ok(items)
}

/// Moves one element between lists (atomically: both under the store lock).
pub fn lmove(
    ctx: &mut Ctx,
    src: &Bytes,
    dst: &Bytes,
    from_left: bool,
    to_left: bool,
) -> Result<Option<Bytes>, ()> {
    if read(ctx, src)?.is_none() {
        return Ok(None);
    }
    read(ctx, dst)?;
    let Some(mut got) = pop(ctx, src, from_left, 1)? else {
        return Ok(None);
    };
    let Some(v) = got.pop() else { return Ok(None) };
    let e = v.clone();
    ctx.modify(dst, Some(new_list), |l| {
        let l = list_mut(l);
        if to_left {
            l.push_front(e.clone())
        } else {
            l.push_back(e.clone())
        }
        ((), cost(&e))
    });
    ctx.touched.push((ctx.db, dst.clone()));
    Ok(Some(v))
}

fn lset(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(i) = parse_i64(&a[2]) else {
        return out.err(NOT_INT);
    };
    let len = match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(None) => return out.err("ERR no such key"),
        Ok(Some(l)) => l.len() as i64,
    };
    let idx = if i < 0 { i + len } else { i };
    if !(0..len).contains(&idx) {
        return out.err("ERR index out of range");
    }
    let v = own(&a[3]);
    ctx.modify(&a[1], None, |l| {
        let l = list_mut(l);
        let old = std::mem::replace(&mut l[idx as usize], v.clone());
        ((), cost(&v) - cost(&old))
    });
    out.ok();
}

fn lrem(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(count) = parse_i64(&a[2]) else {
        return out.err(NOT_INT);
    };
    match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(None) => return out.int(0),
        Ok(Some(_)) => {}
    }
    let target = a[3].clone();
    let n = ctx.modify(&a[1], None, |v| {
        let l = list_mut(v);
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        let mut removed = 0;
        let idx: Vec<usize> = if count >= 0 {
            (0..l.len()).collect()
        } else {
            (0..l.len()).rev().collect()
        };
        let mut kill = Vec::new();
        for i in idx {
            if removed == limit {
                break;
            }
            if l[i] == target {
                kill.push(i);
                removed += 1;
            }
        }
        kill.sort_unstable();
        for i in kill.into_iter().rev() {
            l.remove(i);
        }
        (removed, -(removed as isize) * cost(&target))
    });
    out.int(n.unwrap_or(0) as i64);
}

fn ltrim(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (Some(s), Some(e)) = (parse_i64(&a[2]), parse_i64(&a[3])) else {
        return out.err(NOT_INT);
    };
    match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(None) => return out.ok(),
        Ok(Some(_)) => {}
    }
    ctx.modify(&a[1], None, |v| {
        let l = list_mut(v);
        let before: isize = l.iter().map(cost).sum();
        match range(l.len(), s, e) {
            Some((s, e)) => {
                l.truncate(e + 1);
                l.drain(..s);
            }
            None => l.clear(),
        }
        let after: isize = l.iter().map(cost).sum();
        ((), after - before)
    });
    out.ok();
}

fn linsert(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let before = if a[2].eq_ignore_ascii_case(b"before") {
        true
    } else if a[2].eq_ignore_ascii_case(b"after") {
        false
    } else {
        return out.err(SYNTAX);
    };
    match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(None) => return out.int(0),
        Ok(Some(_)) => {}
    }
    let (pivot, v) = (a[3].clone(), own(&a[4]));
    let n = ctx.modify(&a[1], None, |l| {
        let l = list_mut(l);
        match l.iter().position(|e| *e == pivot) {
            Some(i) => {
                l.insert(if before { i } else { i + 1 }, v.clone());
                (l.len() as i64, cost(&v))
            }
            None => (-1, 0),
        }
    });
    out.int(n.unwrap_or(0));
}

fn lpos(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return out.err(SYNTAX);
        };
        let Some(n) = parse_i64(v) else {
            return out.err(NOT_INT);
        };
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "rank" if n == 0 => return out.err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"),
            "rank" if n == i64::MIN => return out.err("ERR value is out of range"),
            "rank" => rank = n,
            "count" if n < 0 => return out.err("ERR COUNT can't be negative"),
            "count" => count = Some(n as usize),
            "maxlen" if n < 0 => return out.err("ERR MAXLEN can't be negative"),
            "maxlen" => maxlen = n as usize,
            _ => return out.err(SYNTAX),
        }
        i += 2;
    }
    let l = match read(ctx, &a[1]) {
        Err(()) => return out.err(WRONGTYPE),
        Ok(l) => l.cloned().unwrap_or_default(),
    };
    let idx: Box<dyn Iterator<Item = usize>> = if rank > 0 {
        Box::new(0..l.len())
    } else {
        Box::new((0..l.len()).rev())
    };
    let limit = if maxlen == 0 { usize::MAX } else { maxlen };
    let want = match count {
        None | Some(0) => usize::MAX,
        Some(c) => c,
    };
    let mut skip = rank.unsigned_abs() as usize - 1;
    let mut found = Vec::new();
    for (scanned, i) in idx.enumerate() {
        if scanned >= limit || found.len() >= want || (count.is_none() && !found.is_empty()) {
            break;
        }
        if l[i] == a[2] {
            if skip > 0 {
                skip -= 1;
            } else {
                found.push(i as i64);
            }
        }
    }
    match count {
        None => match found.first() {
            Some(&i) => out.int(i),
            None => out.nil(),
        },
        Some(_) => {
            out.array(found.len());
            for i in found {
                out.int(i);
            }
        }
    }
}
