//! String commands: GET/SET and the whole family, with Redis 7.0's replies and errors.

use bytes::Bytes;

use super::db::Value;
use super::out::fmt_human;
use super::{parse_f64, parse_i64, Ctx, Handler, Out, NOT_FLOAT, NOT_INT, SYNTAX, WRONGTYPE};

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("get", cmd_get),
    ("set", cmd_set),
    ("setnx", cmd_setnx),
    ("setex", cmd_setex),
    ("psetex", cmd_setex),
    ("mget", cmd_mget),
    ("mset", cmd_mset),
    ("msetnx", cmd_mset),
    ("getset", cmd_getset),
    ("getdel", cmd_getdel),
    ("getex", cmd_getex),
    ("append", cmd_append),
    ("strlen", cmd_strlen),
    ("getrange", cmd_getrange),
    ("substr", cmd_getrange),
    ("setrange", cmd_setrange),
    ("incr", cmd_incr),
    ("decr", cmd_incr),
    ("incrby", cmd_incr),
    ("decrby", cmd_incr),
    ("incrbyfloat", cmd_incrbyfloat),
    ("lcs", cmd_lcs),
];

fn cmd_get(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    get(ctx, &a[1], out);
}

fn cmd_set(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    set(ctx, a, out);
}

fn cmd_setnx(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let done = !ctx.exists(&a[1]);
    if done {
        ctx.set_str(&a[1], &a[2], None, false);
    }
    out.int(done as i64);
}

fn cmd_setex(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let unit = if name == "setex" { 1000 } else { 1 };
    match parse_i64(&a[2]) {
        Some(t) if t > 0 && t.checked_mul(unit).is_some() => {
            let at = ctx.now as i64 + t * unit;
            ctx.set_str(&a[1], &a[3], Some(at as u64), false);
            out.ok();
        }
        Some(_) => out.err(&format!("ERR invalid expire time in '{name}' command")),
        None => out.err(NOT_INT),
    }
}

fn cmd_mget(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    out.array(a.len() - 1);
    for k in &a[1..] {
        match ctx.read(k) {
            Some(Value::Str(v)) => out.bulk(v),
            _ => out.nil(),
        }
    }
}

fn cmd_mset(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    if a.len().is_multiple_of(2) {
        out.err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return;
    }
    if name == "msetnx" && a[1..].chunks(2).any(|kv| ctx.exists(&kv[0])) {
        out.int(0);
        return;
    }
    for kv in a[1..].chunks(2) {
        ctx.set_str(&kv[0], &kv[1], None, false);
    }
    if name == "mset" {
        out.ok()
    } else {
        out.int(1)
    }
}

fn cmd_getset(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if get(ctx, &a[1], out) {
        ctx.set_str(&a[1], &a[2], None, false);
    }
}

fn cmd_getdel(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    if get(ctx, &a[1], out) {
        ctx.delete(&a[1]);
    }
}

fn cmd_getex(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    getex(ctx, a, out);
}

fn cmd_append(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match string_of(ctx, &a[1]) {
        Err(e) => out.err(&e),
        Ok(cur) => {
            let mut v = cur.map(|b| b.to_vec()).unwrap_or_default();
            v.extend_from_slice(&a[2]);
            let n = v.len();
            set_keep_ttl(ctx, &a[1], v);
            out.int(n as i64);
        }
    };
}

fn cmd_strlen(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match string_of(ctx, &a[1]) {
        Err(e) => out.err(&e),
        Ok(v) => out.int(v.map_or(0, |v| v.len()) as i64),
    };
}

fn cmd_getrange(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    getrange(ctx, a, out);
}

fn cmd_setrange(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    setrange(ctx, a, out);
}

fn cmd_incr(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let by = match name {
        "incr" => Some(1),
        "decr" => Some(-1),
        "incrby" => parse_i64(&a[2]),
        _ => parse_i64(&a[2]).and_then(|n| n.checked_neg()),
    };
    match by {
        Some(by) => incr(ctx, &a[1], by, out),
        None if name == "decrby" && parse_i64(&a[2]) == Some(i64::MIN) => {
            out.err("ERR decrement would overflow")
        }
        None => out.err(NOT_INT),
    }
}

fn cmd_incrbyfloat(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    incrbyfloat(ctx, a, out);
}

/// The original bytes of the string at `key` (decoded when stored compressed): Ok(None) when
/// missing, Err with the error reply for another type or an undecodable value.
pub(super) fn string_of(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Bytes>, String> {
    match ctx.read(key) {
        None => Ok(None),
        Some(Value::Str(v)) => {
            let v = v.clone();
            ctx.plain(key, v).map(Some)
        }
        Some(_) => Err(WRONGTYPE.into()),
    }
}

/// Writes a new string value, keeping the key's TTL (APPEND, SETRANGE, INCR keep it).
pub(super) fn set_keep_ttl(ctx: &mut Ctx, key: &Bytes, v: Vec<u8>) {
    let v = ctx.stored(key, v);
    ctx.set(key, Value::Str(v), None, true);
}

/// Replies with GET's answer (written straight from the stored value); false (and an error
/// reply) for the wrong type.
fn get(ctx: &mut Ctx, key: &[u8], out: &mut Out) -> bool {
    match ctx.read(key) {
        Some(Value::Str(v)) => {
            out.bulk(v);
            true
        }
        None => {
            out.nil();
            true
        }
        Some(_) => {
            out.err(WRONGTYPE);
            false
        }
    }
}

/// Parses `EX|PX|EXAT|PXAT n` at `a[i]`: the absolute expiry in ms, or an error message.
pub fn parse_expiry(ctx: &Ctx, a: &[Bytes], i: usize, cmd: &str) -> Result<u64, String> {
    let opt = String::from_utf8_lossy(&a[i]).to_ascii_lowercase();
    let n = a.get(i + 1).ok_or_else(|| SYNTAX.to_string())?;
    let n = parse_i64(n).ok_or_else(|| NOT_INT.to_string())?;
    let bad = || format!("ERR invalid expire time in '{cmd}' command");
    if n <= 0 {
        return Err(bad());
    }
    let now = ctx.now as i64;
    let at = match opt.as_str() {
        "ex" => n.checked_mul(1000).and_then(|m| m.checked_add(now)),
        "px" => n.checked_add(now),
        "exat" => n.checked_mul(1000),
        _ => Some(n),
    };
    at.map(|t| t as u64).ok_or_else(bad)
}

fn set(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (mut nx, mut xx, mut get_old, mut keep) = (false, false, false, false);
    let mut expire = None;
    let mut i = 3;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_lowercase();
        match opt.as_str() {
            "nx" if !xx => nx = true,
            "xx" if !nx => xx = true,
            "get" => get_old = true,
            "keepttl" if expire.is_none() => keep = true,
            "ex" | "px" | "exat" | "pxat" if expire.is_none() && !keep && i + 1 < a.len() => {
                match parse_expiry(ctx, a, i, "set") {
                    Ok(t) => expire = Some(t),
                    Err(e) => return out.err(&e),
                }
                i += 1;
            }
            _ => return out.err(SYNTAX),
        }
        i += 1;
    }
    // As Redis: with GET, a read (counted as a hit or miss) that also says whether it
    // exists; NX or XX only look; a plain SET does not look before it writes.
    let (exists, old) = if get_old {
        match ctx.read(&a[1]) {
            None => (false, None),
            Some(Value::Str(v)) => (true, Some(v.clone())),
            Some(_) => return out.err(WRONGTYPE),
        }
    } else if nx || xx {
        (ctx.exists(&a[1]), None)
    } else {
        (false, None)
    };
    let write = !(nx && exists || xx && !exists);
    if write {
        ctx.set_str(&a[1], &a[2], expire, keep);
    }
    match (get_old, write) {
        (true, _) => match old {
            Some(v) => out.bulk(&v),
            None => out.nil(),
        },
        (false, true) => out.ok(),
        (false, false) => out.nil(),
    }
}

fn getex(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let mut change: Option<Option<u64>> = None;
    let mut i = 2;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_lowercase();
        match opt.as_str() {
            "persist" if change.is_none() => change = Some(None),
            "ex" | "px" | "exat" | "pxat" if change.is_none() && i + 1 < a.len() => {
                match parse_expiry(ctx, a, i, "getex") {
                    Ok(t) => change = Some(Some(t)),
                    Err(e) => return out.err(&e),
                }
                i += 1;
            }
            _ => return out.err(SYNTAX),
        }
        i += 1;
    }
    match string_of(ctx, &a[1]) {
        Err(e) => out.err(&e),
        Ok(None) => out.nil(),
        Ok(Some(v)) => {
            out.bulk(&v);
            if let Some(at) = change {
                let db = ctx.db;
                ctx.inner.dbs[db].set_expire(&a[1], at);
                ctx.touch_version(&a[1]);
            }
        }
    }
}

/// Redis's range clamp for GETRANGE: negative from the end, then clipped.
fn getrange(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let (Some(mut s), Some(mut e)) = (parse_i64(&a[2]), parse_i64(&a[3])) else {
        return out.err(NOT_INT);
    };
    let v = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(v) => v.unwrap_or_default(),
    };
    let len = v.len() as i64;
    if s < 0 && e < 0 && s > e {
        return out.bulk(b"");
    }
    if s < 0 {
        s += len;
    }
    if e < 0 {
        e += len;
    }
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return out.bulk(b"");
    }
    out.bulk(&v[s as usize..=e as usize]);
}

fn setrange(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(off) = parse_i64(&a[2]) else {
        return out.err(NOT_INT);
    };
    if off < 0 {
        return out.err("ERR offset is out of range");
    }
    let cur = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(v) => v,
    };
    let off = off as usize;
    if off + a[3].len() > 512 * 1024 * 1024 {
        return out.err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    if a[3].is_empty() {
        return out.int(cur.map_or(0, |v| v.len()) as i64);
    }
    let mut v = cur.map(|b| b.to_vec()).unwrap_or_default();
    if v.len() < off + a[3].len() {
        v.resize(off + a[3].len(), 0);
    }
    v[off..off + a[3].len()].copy_from_slice(&a[3]);
    let n = v.len();
    set_keep_ttl(ctx, &a[1], v);
    out.int(n as i64);
}

fn incr(ctx: &mut Ctx, key: &Bytes, by: i64, out: &mut Out) {
    let cur = match string_of(ctx, key) {
        Err(e) => return out.err(&e),
        Ok(None) => 0,
        Ok(Some(v)) => match parse_i64(&v) {
            Some(n) => n,
            None => return out.err(NOT_INT),
        },
    };
    match cur.checked_add(by) {
        Some(n) => {
            set_keep_ttl(ctx, key, n.to_string().into_bytes());
            out.int(n);
        }
        None => out.err("ERR increment or decrement would overflow"),
    }
}

fn incrbyfloat(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(by) = parse_f64(&a[2]) else {
        return out.err(NOT_FLOAT);
    };
    let cur = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(None) => 0.0,
        Ok(Some(v)) => match parse_f64(&v) {
            Some(n) => n,
            None => return out.err(NOT_FLOAT),
        },
    };
    let n = cur + by;
    if !n.is_finite() {
        return out.err("ERR increment would produce NaN or Infinity");
    }
    let s = fmt_human(n);
    out.bulk(s.as_bytes());
    set_keep_ttl(ctx, &a[1], s.into_bytes());
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: Redis 7.0's t_string.c, its
/// table limit (proto-max-bulk-len bytes of u32 cells) and its ranges included.
fn cmd_lcs(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    const NOT_STRINGS: &str = "ERR The specified keys must contain string values";
    let (x, y) = match (string_of(ctx, &a[1]), string_of(ctx, &a[2])) {
        (Ok(x), Ok(y)) => (x.unwrap_or_default(), y.unwrap_or_default()),
        (Err(e), _) | (_, Err(e)) if e != WRONGTYPE => return out.err(&e),
        _ => return out.err(NOT_STRINGS),
    };
    let (mut len_only, mut idx, mut with_len, mut min_len) = (false, false, false, 0i64);
    let mut j = 3;
    while j < a.len() {
        let more = j + 1 < a.len();
        match a[j].to_ascii_lowercase().as_slice() {
            b"idx" => idx = true,
            b"len" => len_only = true,
            b"withmatchlen" => with_len = true,
            b"minmatchlen" if more => {
                match parse_i64(&a[j + 1]) {
                    Some(n) => min_len = n.max(0),
                    None => return out.err(NOT_INT),
                }
                j += 1;
            }
            _ => return out.err(SYNTAX),
        }
        j += 1;
    }
    if len_only && idx {
        return out.err("ERR If you want both the length and indexes, please just use IDX.");
    }
    let (alen, blen) = (x.len(), y.len());
    if alen as u64 >= u32::MAX as u64 - 1 || blen as u64 >= u32::MAX as u64 - 1 {
        return out.err("ERR String too long for LCS");
    }
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    if cells * 4 > 512 * 1024 * 1024 {
        return out
            .err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for k in 1..=blen {
            t[k + i * w] = if x[i - 1] == y[k - 1] {
                t[(k - 1) + (i - 1) * w] + 1
            } else {
                t[k + (i - 1) * w].max(t[(k - 1) + i * w])
            };
        }
    }
    let total = t[blen + alen * w];
    if len_only {
        return out.int(total as i64);
    }
    // Walk back from the end, as Redis does, collecting the string and the ranges.
    let mut result = vec![0u8; total as usize];
    let mut ranges: Vec<[i64; 5]> = Vec::new();
    let (mut at, mut i, mut k) = (total as usize, alen, blen);
    let unset = alen;
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (unset, 0usize, 0usize, 0usize);
    while i > 0 && k > 0 {
        let mut emit = false;
        if x[i - 1] == y[k - 1] {
            result[at - 1] = x[i - 1];
            if a_start == unset {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, k - 1, k - 1);
            } else if a_start == i && b_start == k {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            at -= 1;
            i -= 1;
            k -= 1;
        } else {
            if t[k + (i - 1) * w] > t[(k - 1) + i * w] {
                i -= 1;
            } else {
                k -= 1;
            }
            if a_start != unset {
                emit = true;
            }
        }
        if emit {
            let len = (a_end as i64) - (a_start as i64) + 1;
            if min_len == 0 || len >= min_len {
                ranges.push([
                    a_start as i64,
                    a_end as i64,
                    b_start as i64,
                    b_end as i64,
                    len,
                ]);
            }
            a_start = unset;
        }
    }
    if !idx {
        return out.bulk(&result);
    }
    out.map(2);
    out.bulk(b"matches");
    out.array(ranges.len());
    for r in &ranges {
        out.array(2 + usize::from(with_len));
        out.array(2);
        out.int(r[0]);
        out.int(r[1]);
        out.array(2);
        out.int(r[2]);
        out.int(r[3]);
        if with_len {
            out.int(r[4]);
        }
    }
    out.bulk(b"len");
    out.int(total as i64);
}
