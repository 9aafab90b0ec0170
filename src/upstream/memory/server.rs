//! Server and connection-independent commands: PING, ECHO, DBSIZE, FLUSHDB/FLUSHALL, TIME,
//! INFO, COMMAND, CONFIG GET, PUBLISH, PUBSUB.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::db::Key;
use super::{keyspace_info, Ctx, Handler, Out, DATABASES, SYNTAX};
use crate::command::{self, cat, flag};

/// The Redis version the embedded store's behaviour follows.
pub const COMPAT_VERSION: &str = "7.0.15";

/// The family's commands and their handlers (the store dispatches through these).
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("ping", cmd_ping),
    ("echo", cmd_echo),
    ("dbsize", cmd_dbsize),
    ("flushdb", cmd_flushdb),
    ("flushall", cmd_flushdb),
    ("time", cmd_time),
    ("info", cmd_info),
    ("command", cmd_command),
    ("config", cmd_config),
    ("publish", cmd_publish),
    ("spublish", cmd_publish),
    ("pubsub", cmd_pubsub),
    ("lastsave", cmd_lastsave),
];

fn cmd_ping(_ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    match a.len() {
        1 => out.simple("PONG"),
        2 => out.bulk(&a[1]),
        _ => out.err("ERR wrong number of arguments for 'ping' command"),
    };
}

fn cmd_echo(_ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    out.bulk(&a[1]);
}

fn cmd_dbsize(ctx: &mut Ctx, _name: &'static str, _a: &[Bytes], out: &mut Out) {
    out.int(ctx.inner.dbs[ctx.db].len() as i64);
}

fn cmd_flushdb(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    if a.len() > 2
        || (a.len() == 2
            && !a[1].eq_ignore_ascii_case(b"sync")
            && !a[1].eq_ignore_ascii_case(b"async"))
    {
        out.err(SYNTAX);
        return;
    }
    let dbs: Vec<usize> = if name == "flushdb" {
        vec![ctx.db]
    } else {
        (0..DATABASES).collect()
    };
    for d in dbs {
        let keys: Vec<Bytes> = ctx.inner.dbs[d].keys.keys().map(Key::to_bytes).collect();
        for k in keys {
            ctx.inner.remove_key(d, &k);
        }
    }
    out.ok();
}

fn cmd_time(_ctx: &mut Ctx, _name: &'static str, _a: &[Bytes], out: &mut Out) {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    out.array(2);
    out.bulk((us / 1_000_000).to_string().as_bytes());
    out.bulk((us % 1_000_000).to_string().as_bytes());
}

fn cmd_info(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    info(ctx, a, out);
}

fn cmd_command(_ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    command_cmd(a, out);
}

fn cmd_config(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    config(ctx, a, out);
}

fn cmd_publish(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    out.int(ctx.store.pubsub.publish(&a[1], &a[2]));
}

fn cmd_pubsub(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    pubsub(ctx, a, out);
}

fn cmd_lastsave(ctx: &mut Ctx, _name: &'static str, _a: &[Bytes], out: &mut Out) {
    out.int((ctx.store.clock.now_ms() / 1000) as i64);
}

fn human(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

fn info(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let wanted: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let st = &ctx.store.stats;
    let max = ctx.store.maxmemory.load(Ordering::Relaxed) as usize;
    let mut sections: Vec<String> = Vec::new();
    if want("server") {
        sections.push(format!(
            "# Server\r\nredis_version:{COMPAT_VERSION}\r\nredis_mode:standalone\r\nprescient_store:embedded\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n",
            std::process::id(),
            ctx.store.started.elapsed().as_secs()
        ));
    }
    if want("clients") {
        sections.push(format!(
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{}\r\n",
            st.connected.load(Ordering::Relaxed),
            ctx.inner.waiters.blocked()
        ));
    }
    if want("memory") {
        let used = ctx.inner.used;
        sections.push(format!(
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nmaxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\n",
            human(used),
            human(max),
            ctx.store.policy().name()
        ));
    }
    if want("stats") {
        sections.push(format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsub_dropped_messages:{}\r\n",
            st.connections.load(Ordering::Relaxed),
            st.commands.load(Ordering::Relaxed),
            st.expired_keys.load(Ordering::Relaxed),
            st.evicted_keys.load(Ordering::Relaxed),
            st.keyspace_hits.load(Ordering::Relaxed),
            st.keyspace_misses.load(Ordering::Relaxed),
            ctx.store.pubsub.channels(None).len(),
            ctx.store.pubsub.numpat(),
            ctx.store.pubsub.dropped.load(Ordering::Relaxed),
        ));
    }
    if want("keyspace") {
        let mut s = String::from("# Keyspace\r\n");
        for l in keyspace_info(ctx.inner) {
            s.push_str(&l);
            s.push_str("\r\n");
        }
        sections.push(s);
    }
    out.bulk(sections.join("\r\n").as_bytes());
}

const FLAG_NAMES: [(u32, &str); 11] = [
    (flag::WRITE, "write"),
    (flag::READ, "readonly"),
    (flag::DENYOOM, "denyoom"),
    (flag::ADMIN, "admin"),
    (flag::PUBSUB, "pubsub"),
    (flag::NOSCRIPT, "noscript"),
    (flag::BLOCKING, "blocking"),
    (flag::LOADING, "loading"),
    (flag::STALE, "stale"),
    (flag::FAST, "fast"),
    (flag::MOVABLE, "movablekeys"),
];

fn command_info(c: &command::CommandSpec, out: &mut Out) {
    let (first, last, step) = match c.keys {
        command::Keys::Range { first, last, step } => (first as i64, last as i64, step as i64),
        _ => (0, 0, 0),
    };
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(c.arity as i64);
    let flags: Vec<&str> = FLAG_NAMES
        .iter()
        .filter(|(b, _)| c.has(*b))
        .map(|(_, n)| *n)
        .collect();
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(first);
    out.int(last);
    out.int(step);
    let cats: Vec<String> = (0..21)
        .map(|i| 1u32 << i)
        .filter(|b| c.categories & b != 0)
        .filter_map(|b| {
            CAT_NAMES
                .iter()
                .find(|(x, _)| *x == b)
                .map(|(_, n)| format!("@{n}"))
        })
        .collect();
    out.set(cats.len());
    for n in cats {
        out.simple(&n);
    }
    out.array(0);
    out.array(0);
    out.array(0);
}

const CAT_NAMES: [(u32, &str); 21] = [
    (cat::ADMIN, "admin"),
    (cat::BITMAP, "bitmap"),
    (cat::BLOCKING, "blocking"),
    (cat::CONNECTION, "connection"),
    (cat::DANGEROUS, "dangerous"),
    (cat::FAST, "fast"),
    (cat::GEO, "geo"),
    (cat::HASH, "hash"),
    (cat::HYPERLOGLOG, "hyperloglog"),
    (cat::KEYSPACE, "keyspace"),
    (cat::LIST, "list"),
    (cat::PUBSUB, "pubsub"),
    (cat::READ, "read"),
    (cat::SCRIPTING, "scripting"),
    (cat::SET, "set"),
    (cat::SLOW, "slow"),
    (cat::SORTEDSET, "sortedset"),
    (cat::STREAM, "stream"),
    (cat::STRING, "string"),
    (cat::TRANSACTION, "transaction"),
    (cat::WRITE, "write"),
];

fn command_cmd(a: &[Bytes], out: &mut Out) {
    let sub = a
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let table = command::all();
    match sub.as_deref() {
        None => {
            out.array(table.len());
            for c in table {
                command_info(c, out);
            }
        }
        Some("count") => out.int(table.len() as i64),
        Some("info") => {
            out.array(a.len() - 2);
            for n in &a[2..] {
                match command::lookup(n) {
                    Some(c) => command_info(c, out),
                    None => out.nil_array(),
                }
            }
        }
        // No argument docs ship with the store. An error here is what makes redis-cli fall
        // back to its own built-in help, which gives full hints; empty docs would give none.
        Some("docs") => out.err("ERR COMMAND DOCS is not available from the embedded store"),
        Some(s) => out.err(&format!("ERR unknown subcommand '{s}'. Try COMMAND HELP.")),
    }
}

fn config(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    if !a[1].eq_ignore_ascii_case(b"get") || a.len() < 3 {
        out.err("ERR the embedded store answers CONFIG GET only; settings are in prescient's configuration");
        return;
    }
    let max = ctx.store.maxmemory.load(Ordering::Relaxed).to_string();
    let items: [(&str, String); 5] = [
        ("maxmemory", max),
        ("maxmemory-policy", ctx.store.policy().name().to_string()),
        ("databases", DATABASES.to_string()),
        ("save", String::new()),
        ("appendonly", "no".into()),
    ];
    let hits: Vec<&(&str, String)> = items
        .iter()
        .filter(|(k, _)| {
            a[2..]
                .iter()
                .any(|p| crate::redis_glob::matches(p, k.as_bytes()))
        })
        .collect();
    out.map(hits.len());
    for (k, v) in hits {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
}

fn pubsub(ctx: &mut Ctx, a: &[Bytes], out: &mut Out) {
    let r = &ctx.store.pubsub;
    match String::from_utf8_lossy(&a[1]).to_ascii_lowercase().as_str() {
        "channels" | "shardchannels" => {
            let c = r.channels(a.get(2).map(|p| &p[..]));
            out.bulks(c.iter().map(|c| &c[..]));
        }
        "numsub" | "shardnumsub" => {
            out.map(a.len() - 2);
            for c in &a[2..] {
                out.bulk(c);
                out.int(r.numsub(c) as i64);
            }
        }
        "numpat" => out.int(r.numpat() as i64),
        s => out.err(&format!("ERR unknown subcommand '{s}'. Try PUBSUB HELP.")),
    }
}
