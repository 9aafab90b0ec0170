//! The embedded store (`memory://`) with real clients: eviction under maxmemory, a blocked
//! pop woken by another client, WATCH aborted by another client's write, atomic counters from
//! many clients, INFO, and the clock of commands pipelined behind a blocked one.

mod common;

use bytes::Bytes;
use common::{proxy, proxy_with, settings, Raw};
use redis::AsyncCommands;

async fn client(p: &prescient::server::Server) -> redis::aio::MultiplexedConnection {
    common::redis_client(p.addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_memory_under_maxmemory() {
    let mut s = settings("memory://");
    s.memory.maxmemory = 2 * 1024 * 1024;
    let p = proxy_with(s).await;
    let mut c = client(&p).await;
    // Incompressible and different for every key, so compression (on by default, with
    // dictionaries that would learn a value repeated) does not shrink them.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut value = Vec::new();
    for i in 0..10_000 {
        value = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _: () = c.set(format!("key:{i}"), &value).await.unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(used <= 2 * 1024 * 1024 + 4096, "used_memory {used}");
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c)
        .await
        .unwrap();
    let evicted: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(evicted > 5_000, "evicted {evicted}");
    // The most recent keys survive.
    let last: Option<Vec<u8>> = c.get("key:9999").await.unwrap();
    assert_eq!(last.as_deref(), Some(&value[..]));
}

/// (blocking command, its name in CLIENT LIST, writes from another client, expected reply)
type WakeCase = (
    &'static [&'static str],
    &'static str,
    &'static [&'static [&'static str]],
    &'static str,
);

/// Each blocking pop waits (seen dispatched in CLIENT LIST) and is then woken by a write from
/// another client: pushes, sorted-set adds and a RENAME onto the waited key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pops_are_woken_by_another_clients_write() {
    let cases: &[WakeCase] = &[
        (
            &["BLPOP", "jobs", "5"],
            "blpop",
            &[&["RPUSH", "jobs", "job-1"]],
            "*2\r\n$4\r\njobs\r\n$5\r\njob-1\r\n",
        ),
        (
            &["BZPOPMIN", "zq", "5"],
            "bzpopmin",
            &[&["ZADD", "zq", "1", "m"]],
            "*3\r\n$2\r\nzq\r\n$1\r\nm\r\n$1\r\n1\r\n",
        ),
        (
            &["BZPOPMAX", "zi", "5"],
            "bzpopmax",
            &[&["ZINCRBY", "zi", "2", "n"]],
            "*3\r\n$2\r\nzi\r\n$1\r\nn\r\n$1\r\n2\r\n",
        ),
        (
            &["BLMOVE", "src", "dst", "LEFT", "RIGHT", "5"],
            "blmove",
            &[&["RPUSH", "tmp", "a"], &["RENAME", "tmp", "src"]],
            "$1\r\na\r\n",
        ),
    ];
    let p = proxy("memory://").await;
    for (cmd, name, writes, want) in cases {
        let mut waiter = Raw::to(&p).await;
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
        waiter.send(&args).await;
        let sh = p.shared.clone();
        let needle = format!("cmd={name}");
        common::eventually(common::DEADLINE, "blocking pop dispatched", || {
            let seen = sh.clients.list().lines().any(|l| l.contains(&needle));
            async move { seen.then_some(()) }
        })
        .await;
        let mut writer = Raw::to(&p).await;
        for w in writes.iter() {
            writer.text(w).await;
        }
        assert_eq!(
            String::from_utf8_lossy(&waiter.read().await),
            *want,
            "{name}"
        );
    }
}

/// Commands pipelined behind a blocking pop run after its wait, at that later time (the
/// store reads the clock once per batch of commands; a blocked command ends the batch): an
/// expiry set after the wait counts from after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_behind_a_blocked_pop_see_the_time_after_it() {
    let p = proxy("memory://").await;
    let mut c = Raw::to(&p).await;
    let pipeline: Vec<u8> = [
        &["SET", "k", "v", "PX", "100"][..],
        &["BLPOP", "nothing", "0.3"],
        &["GET", "k"],
        &["SET", "j", "v", "PX", "10000"],
        &["PEXPIRETIME", "j"],
    ]
    .iter()
    .flat_map(|a| {
        let a: Vec<Bytes> = a.iter().map(|s| Bytes::from(s.to_string())).collect();
        prescient::command::encode_request(&a)
    })
    .collect();
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    c.send_raw(&pipeline).await;
    let mut replies = String::new();
    for _ in 0..4 {
        replies.push_str(&String::from_utf8_lossy(&c.read().await));
    }
    assert_eq!(replies, "+OK\r\n*-1\r\n$-1\r\n+OK\r\n");
    let at = String::from_utf8_lossy(&c.read().await).into_owned();
    let at: i64 = at.trim_start_matches(':').trim_end().parse().unwrap();
    // 300 ms of wait (less a margin for clock granularity), then 10 s to live.
    assert!(at >= sent + 250 + 10_000, "expires at {at}, sent at {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_aborted_by_another_clients_write() {
    let p = proxy("memory://").await;
    let mut a = Raw::to(&p).await;
    let mut b = client(&p).await;
    assert_eq!(a.text(&["SET", "balance", "10"]).await, "+OK\r\n");
    assert_eq!(a.text(&["WATCH", "balance"]).await, "+OK\r\n");
    let _: () = b.set("balance", "20").await.unwrap();
    assert_eq!(a.text(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(a.text(&["SET", "balance", "0"]).await, "+QUEUED\r\n");
    assert_eq!(a.text(&["EXEC"]).await, "*-1\r\n");
    let v: String = b.get("balance").await.unwrap();
    assert_eq!(v, "20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_transactions_from_many_clients_are_atomic() {
    let p = proxy("memory://").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = client(&p).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let _: i64 = c.incr("hits", 1).await.unwrap();
                let (x, y): (i64, i64) = redis::pipe()
                    .atomic()
                    .incr("pair:a", 1)
                    .incr("pair:b", 1)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                assert_eq!(x, y, "MULTI/EXEC ran without interleaving");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = client(&p).await;
    let hits: i64 = c.get("hits").await.unwrap();
    assert_eq!(hits, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_store_sections_and_the_proxy_section() {
    let p = proxy("memory://").await;
    let mut c = Raw::to(&p).await;
    c.cmd(&["SET", "a", "1"]).await;
    let info = c.text(&["INFO"]).await;
    for want in [
        "# Server",
        "redis_version:",
        "# Memory",
        "used_memory:",
        "maxmemory_policy:allkeys-lru",
        "# Stats",
        "# Keyspace",
        "db0:keys=1",
        "# Proxy",
        "proxy_upstream:memory://",
    ] {
        assert!(info.contains(want), "INFO lacks {want}:\n{info}");
    }
    let e = c.text(&["SORT", "x"]).await;
    assert!(e.contains("embedded store does not implement it"), "{e}");
    assert_eq!(c.text(&["MONITOR"]).await.get(..4), Some("-ERR"));
}
