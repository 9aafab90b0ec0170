//! Keyspace commands: DEL, EXISTS, TYPE, RENAME, KEYS, SCAN, RANDOMKEY, TOUCH, the EXPIRE
//! family and TTLs.

use bytes::Bytes;

use super::db::Db;
use super::{parse_i64, Ctx, Handler, Out, NOT_INT, SYNTAX};

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("del", cmd_del),
    ("unlink", cmd_del),
    ("exists", cmd_exists),
    ("touch", cmd_exists),
    ("type", cmd_type),
    ("rename", cmd_rename),
    ("renamenx", cmd_rename),
    ("keys", cmd_keys),
    ("scan", cmd_scan),
    ("randomkey", cmd_randomkey),
    ("expire", cmd_expire),
    ("pexpire", cmd_expire),
    ("expireat", cmd_expire),
    ("pexpireat", cmd_expire),
    ("ttl", cmd_ttl),
    ("pttl", cmd_ttl),
    ("expiretime", cmd_ttl),
    ("pexpiretime", cmd_ttl),
    ("persist", cmd_persist),
];

fn cmd_del(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let n = a[1..].iter().filter(|k| ctx.delete(k)).count();
    out.int(n as i64);
}

fn cmd_exists(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let n = a[1..].iter().filter(|k| ctx.exists(k)).count();
    out.int(n as i64);
}

fn cmd_type(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let t = ctx.get(&a[1]).map_or("none", |e| e.value.type_name());
    out.simple(t);
}

fn cmd_rename(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    rename(ctx, name == "renamenx", &a[1], &a[2], out);
}

fn cmd_keys(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let keys = live_keys(ctx, 0..usize::MAX, |k| {
        crate::redis_glob::matches_key(&a[1], k)
    });
    out.bulks(keys.iter().map(|k| &k[..]));
}

fn cmd_scan(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    scan(ctx, a, out);
}

fn cmd_randomkey(ctx: &mut Ctx, _name: &'static str, _a: &[Bytes], out: &mut Out) {
    for _ in 0..100 {
        let db = ctx.db;
        let Some(k) = ctx.inner.dbs[db]
            .random_key(&mut rand::rng())
            .map(Bytes::copy_from_slice)
        else {
            break;
        };
        if ctx.exists(&k) {
            out.bulk(&k);
            return;
        }
    }
    out.nil();
}

fn cmd_expire(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    expire(ctx, name, a, out);
}

fn cmd_ttl(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let now = ctx.now;
    let r = match ctx.get(&a[1]) {
        None => -2,
        Some(e) => match e.expire_at {
            None => -1,
            Some(t) => match name {
                "ttl" => ((t.saturating_sub(now) + 500) / 1000) as i64,
                "pttl" => t.saturating_sub(now) as i64,
                "expiretime" => ((t + 500) / 1000) as i64,
                _ => t as i64,
            },
        },
    };
    out.int(r);
}

fn cmd_persist(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let had = ctx.get(&a[1]).is_some_and(|e| e.expire_at.is_some());
    if had {
        let db = ctx.db;
        ctx.inner.dbs[db].set_expire(&a[1], None);
        ctx.touch_version(&a[1]);
    }
    out.int(had as i64);
}

fn rename(ctx: &mut Ctx, nx: bool, from: &Bytes, to: &Bytes, out: &mut Out) {
    if !ctx.exists(from) {
        return out.err("ERR no such key");
    }
    if from == to {
        return if nx { out.int(0) } else { out.ok() };
    }
    if nx && ctx.exists(to) {
        return out.int(0);
    }
    let db = ctx.db;
    let Some(e) = ctx.inner.remove_key(db, from) else {
        return out.err("ERR no such key");
    };
    ctx.delete(to);
    ctx.set(to, e.value, e.expire_at, false);
    if nx {
        out.int(1)
    } else {
        out.ok()
    }
}

/// Live keys at positions `range` of the current database that pass `keep`.
fn live_keys(
    ctx: &mut Ctx,
    range: std::ops::Range<usize>,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Bytes> {
    let db = ctx.db;
    let now = ctx.now;
    let keys = &ctx.inner.dbs[db].keys;
    let end = range.end.min(keys.len());
    let start = range.start.min(end);
    (start..end)
        .rev()
        .filter_map(|i| keys.get_index(i))
        .filter(|(_, e)| e.expire_at.is_none_or(|t| t > now))
        .filter(|(k, _)| keep(k))
        .map(|(k, _)| k.to_bytes())
        .collect()
}

fn scan(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let Some(cursor) = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return out.err("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut i = 2;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_lowercase();
        let Some(v) = a.get(i + 1) else {
            return out.err(SYNTAX);
        };
        match opt.as_str() {
            "match" => pattern = Some(v.clone()),
            "count" => match parse_i64(v) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return out.err(SYNTAX),
                None => return out.err(NOT_INT),
            },
            "type" => kind = Some(String::from_utf8_lossy(v).to_ascii_lowercase()),
            _ => return out.err(SYNTAX),
        }
        i += 2;
    }
    let len = ctx.inner.dbs[ctx.db].len();
    let (next, range) = Db::scan_positions(len, cursor, count);
    let db = ctx.db;
    let mut keys = live_keys(ctx, range, |k| {
        pattern
            .as_ref()
            .is_none_or(|p| crate::redis_glob::matches_key(p, k))
    });
    if let Some(t) = kind {
        keys.retain(|k| {
            ctx.inner.dbs[db]
                .keys
                .get(&k[..])
                .is_some_and(|e| e.value.type_name() == t)
        });
    }
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.bulks(keys.iter().map(|k| &k[..]));
}

fn expire(ctx: &mut Ctx, name: &str, a: &[Bytes], out: &mut Out) {
    let Some(t) = parse_i64(&a[2]) else {
        return out.err(NOT_INT);
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match String::from_utf8_lossy(opt).to_ascii_lowercase().as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "gt" => gt = true,
            "lt" => lt = true,
            _ => {
                return out.err(&format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return out.err("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return out.err("ERR GT and LT options at the same time are not compatible");
    }
    let unit: i64 = if name.starts_with('p') { 1 } else { 1000 };
    let base: i64 = if name.ends_with("at") {
        0
    } else {
        ctx.now as i64
    };
    let Some(when) = t.checked_mul(unit).and_then(|m| m.checked_add(base)) else {
        return out.err(&format!("ERR invalid expire time in '{name}' command"));
    };
    let Some(cur) = ctx.get(&a[1]).map(|e| e.expire_at) else {
        return out.int(0);
    };
    let ok = match cur {
        None => !(xx || gt),
        Some(c) => !(nx || (gt && when <= c as i64) || (lt && when >= c as i64)),
    };
    if !ok {
        return out.int(0);
    }
    if when <= ctx.now as i64 {
        ctx.delete(&a[1]);
    } else {
        let db = ctx.db;
        ctx.inner.dbs[db].set_expire(&a[1], Some(when as u64));
        ctx.touch_version(&a[1]);
    }
    out.int(1);
}
