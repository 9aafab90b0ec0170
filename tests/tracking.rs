//! Access tracking through the running proxy: reads from real clients teach the model, and
//! `PROXY PREDICT`, `PROXY TRACKING STATS`, `PROXY HOTKEYS` and the access log show it; the
//! replay simulator reproduces the reference LRU figures on the shipped traces.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{eventually, proxy_with, settings, Raw, Redis, DEADLINE};
use prescient::replay::sim::{simulate, Capacity, SimOptions};
use prescient::replay::trace::{self, Format};
use prescient::tracking::model::ModelConfig;
use prescient::tracking::template::Templater;

/// `PROXY PREDICT`'s answer as (key, probability, level, action) rows.
async fn predict(c: &mut Raw, key: &str) -> Vec<(String, f64, String, String)> {
    let reply = c.text(&["PROXY", "PREDICT", key, "5"]).await;
    let lines: Vec<&str> = reply.split("\r\n").collect();
    let bulks: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0].starts_with('$'))
        .map(|w| w[1])
        .collect();
    bulks
        .chunks(4)
        .map(|r| {
            (
                r[0].to_string(),
                r[1].parse().unwrap(),
                r[2].to_string(),
                r[3].to_string(),
            )
        })
        .collect()
}

async fn stat(c: &mut Raw, name: &str) -> u64 {
    let s = c.text(&["PROXY", "TRACKING", "STATS"]).await;
    let prefix = format!("tracking_{name}:");
    s.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {s}"))
}

/// Waits until the learner has taken in `reads` reads (not only been handed them).
async fn learned(c: &mut Raw, reads: u64) {
    let end = std::time::Instant::now() + DEADLINE;
    while stat(c, "learned").await < reads {
        assert!(std::time::Instant::now() < end, "tracker never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reads_through_redis_teach_key_and_template_predictions() {
    let redis = Redis::start().await;
    let p = proxy_with(settings(&redis.url())).await;
    let mut c = Raw::to(&p).await;
    for _ in 0..3 {
        for id in 1..=4 {
            c.cmd(&["GET", &format!("user:{id}:profile")]).await;
            c.cmd(&["HGETALL", &format!("user:{id}:orders")]).await;
        }
    }
    // Writes are not reads: they teach nothing.
    c.cmd(&["SET", "user:1:profile", "x"]).await;
    // Poll: the tracker learns on its own thread.
    let key = eventually(DEADLINE, "key-level prediction", || {
        let port = p.addr.port();
        async move {
            let mut c = Raw::connect(port).await;
            // Until the learner has taken in two rounds only the template level (fed by
            // every user) has the support to speak; wait for the key level.
            let p = predict(&mut c, "user:2:profile").await;
            p.first()
                .filter(|r| r.0 == "user:2:orders" && r.2 == "key")
                .cloned()
        }
    })
    .await;
    assert_eq!(
        (key.1, key.2.as_str(), key.3.as_str()),
        (1.0, "key", "fetch")
    );
    // A user never seen: the template transition names their orders.
    let unseen = predict(&mut c, "user:77:profile").await;
    assert_eq!(unseen[0].0, "user:77:orders");
    assert_eq!(unseen[0].2, "template");
    learned(&mut c, 24).await;
    assert!(stat(&mut c, "predicted").await > 0);
    assert!(stat(&mut c, "states").await > 0);
    let hot = c.text(&["PROXY", "HOTKEYS", "1"]).await;
    assert!(hot.contains("user:"), "{hot}");
    assert!(c
        .text(&["PROXY", "PREDICT", "k", "0"])
        .await
        .starts_with("-ERR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_is_its_own_context() {
    let p = proxy_with(settings("memory://")).await;
    let (mut a, mut b) = (Raw::to(&p).await, Raw::to(&p).await);
    // Two clients interleave read by read. Per connection, a1 is always followed by a2; in
    // one global sequence it would be followed by b1.
    for _ in 0..4 {
        for i in 1..=3 {
            a.cmd(&["GET", &format!("a{i}")]).await;
            b.cmd(&["GET", &format!("b{i}")]).await;
        }
    }
    learned(&mut a, 24).await;
    let pa = predict(&mut a, "a1").await;
    assert_eq!(pa[0].0, "a2", "{pa:?}");
    assert_eq!(pa[0].1, 1.0);
    assert!(pa.iter().all(|r| r.0.starts_with('a')), "{pa:?}");
    let pb = predict(&mut b, "b2").await;
    assert_eq!(pb[0].0, "b3", "{pb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_context_joins_pooled_connections() {
    let mut s = settings("memory://");
    s.tracking.context = prescient::tracking::settings::ContextBy::ClientName;
    let p = proxy_with(s).await;
    let (mut a, mut b) = (Raw::to(&p).await, Raw::to(&p).await);
    for c in [&mut a, &mut b] {
        c.cmd(&["CLIENT", "SETNAME", "web-42"]).await;
    }
    // One user's requests spread over two pooled connections: x on one, y on the other.
    for _ in 0..3 {
        a.cmd(&["GET", "x"]).await;
        b.cmd(&["GET", "y"]).await;
        a.cmd(&["GET", "z"]).await;
    }
    learned(&mut a, 9).await;
    assert_eq!(predict(&mut a, "x").await[0].0, "y");
    assert_eq!(predict(&mut a, "y").await[0].0, "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut s = settings("memory://");
    s.tracking.access_log = log.display().to_string();
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    for _ in 0..5 {
        c.cmd(&["MGET", "page:1", "page:2"]).await;
        c.cmd(&["GET", "bin\x00 key"]).await;
    }
    learned(&mut c, 15).await;
    let text = eventually(DEADLINE, "15 access log lines", || {
        let log = log.clone();
        async move {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            (t.lines().count() >= 15).then_some(t)
        }
    })
    .await;
    let t = trace::read(text.as_bytes(), Format::AccessLog).unwrap();
    assert_eq!(t.accesses.len(), 15);
    assert_eq!(t.skipped, 0);
    assert_eq!(&t.accesses[2].key[..], b"bin\x00 key");
    assert_eq!(t.clients, 1);
}

fn gunzip(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.gz", env!("CARGO_MANIFEST_DIR"));
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn opts(capacity: Capacity, prefetch: bool) -> SimOptions {
    SimOptions {
        capacity,
        prefetch,
        model: ModelConfig {
            order: 2,
            lookahead: 2,
            half_life_secs: 0.0,
            min_probability: 0.35,
            touch_probability: 0.05,
            ..ModelConfig::default()
        },
        per_client: true,
        stale_gap_secs: 1800.0,
        templater: Templater::default(),
        distinct_keys: 0,
        adaptive: None,
    }
}

#[test]
fn replay_matches_reference_lru_figures_and_prefetch_beats_them() {
    let nasa = trace::read(&gunzip("nasa_19950801.tsv"), Format::Nasa).unwrap();
    assert_eq!(nasa.accesses.len(), 33_256);
    // 1,821 distinct URLs: 2% = 36 keys, 5% = 91, 10% = 182.
    for (keys, expected) in [(36, 0.485), (91, 0.6437), (182, 0.748)] {
        let r = simulate(&nasa.accesses, &opts(Capacity::Keys(keys), false));
        assert!(
            (r.hit_ratio() - expected).abs() < 0.0006,
            "{keys} keys: {}",
            r.hit_ratio()
        );
    }
    let base = simulate(&nasa.accesses, &opts(Capacity::Keys(91), false));
    let with = simulate(&nasa.accesses, &opts(Capacity::Keys(91), true));
    let load = (with.misses + with.prefetches) as f64 / base.misses as f64;
    assert!(with.hit_ratio() >= 0.77, "hit ratio {}", with.hit_ratio());
    assert!(load <= 1.3, "load {load}");
    // Per-client contexts matter: one global sequence gains much less.
    let mut global = opts(Capacity::Keys(91), true);
    global.per_client = false;
    let g = simulate(&nasa.accesses, &global);
    let (gain, gain_global) = (
        with.hit_ratio() - base.hit_ratio(),
        g.hit_ratio() - base.hit_ratio(),
    );
    assert!(gain_global < 0.75 * gain, "{gain_global} vs {gain}");

    let cp = trace::read(&gunzip("cloudPhysicsIO.oracleGeneral.bin"), Format::Oracle).unwrap();
    let r = simulate(&cp.accesses, &opts(Capacity::Bytes(128 << 20), false));
    assert_eq!(r.misses, 93_374);
    let w = simulate(&cp.accesses, &opts(Capacity::Bytes(128 << 20), true));
    let load = (w.misses + w.prefetches) as f64 / r.misses as f64;
    assert!(
        w.hit_ratio() >= 0.29 && load <= 1.2,
        "{} at {load}",
        w.hit_ratio()
    );
}
