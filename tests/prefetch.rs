//! The prefetch pipeline against a real origin (tests/common/origin.rs), on both upstreams: a
//! learned sequence is prefetched and the read it predicted is a hit, counted useful; a read
//! during the prefetch joins it (late); every issued prefetch is in one class; demand misses
//! keep the origin's slots ahead of prefetches; the space guard holds on `noeviction`; the
//! rate limit and the back-off after five failures hold; hour weights follow a simulated day.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::origin::{body_of, TestOrigin};
use common::{eventually, proxy_with, settings, Raw, Redis, DEADLINE};
use prescient::config::Settings;
use prescient::prefetch::settings::Threshold;
use prescient::server::Server;

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
}

fn prefetching(url: &str, origin: &TestOrigin) -> Settings {
    let mut s = settings(url);
    s.origin.routes = vec![origin.route("product")];
    s.origin.timeout_ms = 5_000;
    // Learn from two observations of a transition, and fetch at 0.3 or more.
    s.tracking.min_support = 1.0;
    s.prefetch.min_probability = Threshold::Fixed(0.3);
    s
}

async fn upstreams() -> (Redis, [String; 2]) {
    let redis = Redis::start().await;
    let url = redis.url();
    (redis, [url, "memory://".to_string()])
}

/// PROXY PREFETCH STATS as a map.
async fn stats(c: &mut Raw) -> HashMap<String, String> {
    let text = c.text(&["PROXY", "PREFETCH", "STATS"]).await;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.strip_prefix("prefetch_")?.to_string(), v.to_string())))
        .collect()
}

fn num(s: &HashMap<String, String>, k: &str) -> u64 {
    s.get(k)
        .unwrap_or_else(|| panic!("no prefetch_{k} in {s:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("prefetch_{k} is not a count: {s:?}"))
}

/// Polls PROXY PREFETCH STATS until `ok` holds (or the deadline passes: a panic naming `what`).
async fn stats_until(
    c: &mut Raw,
    what: &str,
    ok: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = stats(c).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until the origin has answered `path` more than `n` times.
async fn origin_hits_over(origin: &TestOrigin, path: &str, n: u64) {
    let end = Instant::now() + DEADLINE;
    while origin.b.hits(path) <= n {
        assert!(
            Instant::now() < end,
            "timed out waiting for a request to {path}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every issued prefetch is in exactly one class, or still open.
fn assert_identity(s: &HashMap<String, String>) {
    let classes = [
        "useful",
        "late",
        "wasted_evicted",
        "wasted_expired",
        "wasted_overwritten",
        "wasted_unused",
        "open",
    ];
    let sum: u64 = classes.iter().map(|k| num(s, k)).sum();
    assert_eq!(num(s, "issued"), sum, "{s:?}");
}

/// Waits until the tracker has learned every read handed to it and the prefetch pipeline is
/// quiet (no predictions waiting, nothing queued or in flight).
async fn quiesce(p: &Server) {
    let pf = p.shared.prefetch.clone().expect("prefetching is set up");
    eventually(DEADLINE, "the pipeline quiet", || {
        let stats = p.shared.tracker.stats();
        let get = |k: &str| {
            stats
                .iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let learned = get("reads") == get("learned") + get("shed");
        let quiet = learned && pf.pending() == 0;
        async move { quiet.then_some(()) }
    })
    .await;
}

/// Teaches the model that product:<b> follows product:<a>: a few connections read a then b
/// (each a context of its own), until the model predicts b after a. Prefetching is off
/// meanwhile, and b is deleted after: only a prefetch (or a miss) brings it back.
async fn teach(p: &Server, a: &str, b: &str) {
    let pf = p.shared.prefetch.clone().expect("prefetching is set up");
    pf.set_enabled(false);
    let (ka, kb) = (format!("product:{a}"), format!("product:{b}"));
    for _ in 0..3 {
        let mut c = Raw::to(p).await;
        assert_eq!(c.text(&["GET", &ka]).await, bulk(&body_of(a)));
        assert_eq!(c.text(&["GET", &kb]).await, bulk(&body_of(b)));
    }
    let mut c = Raw::to(p).await;
    eventually(DEADLINE, "the model predicts b after a", || {
        let tracker = p.shared.tracker.clone();
        let (ka, kb) = (ka.clone(), kb.clone());
        async move {
            let got = tracker.predict(&bytes::Bytes::from(ka), 5);
            got.iter().any(|x| x.key == kb.as_bytes()).then_some(())
        }
    })
    .await;
    quiesce(p).await;
    c.cmd(&["DEL", &kb]).await;
    pf.set_enabled(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predicted_key_is_prefetched_and_its_read_is_a_useful_hit() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let p = proxy_with(prefetching(&url, &origin)).await;
        teach(&p, "1", "2").await;
        let before = origin.b.hits("/api/products/2");
        let mut c = Raw::to(&p).await;
        c.cmd(&["GET", "product:1"]).await;
        // The prefetch lands: the key is in the store without anyone having read it.
        let mut probe = Raw::to(&p).await;
        origin_hits_over(&origin, "/api/products/2", before).await;
        stats_until(&mut probe, "product:2 landed", |s| {
            num(s, "issued") >= 1 && num(s, "open") + num(s, "useful") >= 1
        })
        .await;
        let end = Instant::now() + DEADLINE;
        while probe.text(&["EXISTS", "product:2"]).await != ":1\r\n" {
            assert!(Instant::now() < end, "{url}: product:2 never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The read the model predicted: a hit, served from the store, no origin request.
        assert_eq!(c.text(&["GET", "product:2"]).await, bulk(&body_of("2")));
        assert_eq!(origin.b.hits("/api/products/2"), before + 1, "{url}");
        let s = stats_until(&mut probe, "the prefetch counted useful", |s| {
            num(s, "useful") >= 1
        })
        .await;
        assert_identity(&s);
        assert!(
            num(&s, "processed") >= 1 && num(&s, "successful") >= 1,
            "{s:?}"
        );
        assert!(num(&s, "scheduled_fetch") >= 1, "{s:?}");
        // PROXY PREDICT says what the scheduler would do now, and why: product:2 is cached.
        let predict = c.text(&["PROXY", "PREDICT", "product:1"]).await;
        assert!(
            predict.contains("product:2") && predict.contains("cached"),
            "{url}: {predict}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_during_the_prefetch_joins_it_and_counts_late() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let p = proxy_with(prefetching(&url, &origin)).await;
        teach(&p, "10", "11").await;
        origin.b.delay_ms.store(400, Ordering::Relaxed);
        let before = origin.b.hits("/api/products/11");
        let mut c = Raw::to(&p).await;
        c.cmd(&["GET", "product:10"]).await;
        // Wait until the prefetch of product:11 is at the origin, then read it.
        origin_hits_over(&origin, "/api/products/11", before).await;
        assert_eq!(c.text(&["GET", "product:11"]).await, bulk(&body_of("11")));
        assert_eq!(
            origin.b.hits("/api/products/11"),
            before + 1,
            "{url}: the read joined the prefetch, no second request"
        );
        let mut probe = Raw::to(&p).await;
        let s = stats_until(&mut probe, "late counted", |s| num(s, "late") >= 1).await;
        assert_identity(&s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_misses_keep_the_origin_slots_and_prefetches_step_aside() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let mut s = prefetching(&redis.url(), &origin);
    s.origin.max_concurrency = 1;
    let p = proxy_with(s).await;
    teach(&p, "20", "21").await;
    origin.b.delay_ms.store(1500, Ordering::Relaxed);
    // A slow demand miss holds the origin host's one slot...
    let mut slow = Raw::to(&p).await;
    slow.send(&[b"GET", b"product:99"]).await;
    origin_hits_over(&origin, "/api/products/99", 0).await;
    // ...so the prefetch its prediction asks for is skipped, not queued behind it.
    let mut c = Raw::to(&p).await;
    c.cmd(&["GET", "product:20"]).await;
    let mut probe = Raw::to(&p).await;
    let s = stats_until(&mut probe, "the prefetch skipped", |s| {
        num(s, "skipped") >= 1
    })
    .await;
    assert_eq!(
        origin.b.hits("/api/products/21"),
        1,
        "only the teaching read: {s:?}"
    );
    assert_eq!(
        num(&s, "issued"),
        num(&s, "open") + num(&s, "useful"),
        "{s:?}"
    );
    assert_eq!(slow.read().await, bulk(&body_of("99")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_space_guard_holds_prefetching_when_the_store_cannot_evict() {
    let redis =
        Redis::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    for url in [redis.url(), "memory://".to_string()] {
        let origin = TestOrigin::start().await;
        let mut s = prefetching(&url, &origin);
        s.memory.maxmemory = 4 << 20;
        s.memory.maxmemory_policy = prescient::config::EvictionPolicy::NoEviction;
        let p = proxy_with(s).await;
        // The embedded store is reached through the proxy; Redis directly.
        let direct = match url.starts_with("redis") {
            true => redis.client().await,
            false => Raw::to(&p).await,
        };
        space_guard(&p, &origin, direct).await;
    }
}

async fn space_guard(p: &Server, origin: &TestOrigin, mut direct: Raw) {
    teach(p, "30", "31").await;
    // Fill the store past 80% of maxmemory.
    // Not compressible, so it fills the embedded store through the proxy too.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let value: String = (0..10_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    for i in 0.. {
        let r = direct.text(&["SET", &format!("filler:{i}"), &value]).await;
        if r.starts_with("-OOM") {
            break;
        }
        let info = direct.text(&["INFO", "memory"]).await;
        let used: f64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        if used > 0.85 * 4.0 * 1024.0 * 1024.0 {
            break;
        }
    }
    let mut probe = Raw::to(p).await;
    stats_until(&mut probe, "the guard on", |s| num(s, "space_guard") == 1).await;
    let before = origin.b.hits("/api/products/31");
    let issued = num(&stats(&mut probe).await, "issued");
    let mut c = Raw::to(p).await;
    c.cmd(&["GET", "product:30"]).await;
    let end = Instant::now() + DEADLINE;
    let s = loop {
        let s = stats(&mut probe).await;
        if num(&s, "scheduled_space_guard") >= 1 {
            break s;
        }
        if Instant::now() > end {
            let why = probe.text(&["PROXY", "PREDICT", "product:30"]).await;
            panic!("the prediction was not held by the guard: {why} {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(origin.b.hits("/api/products/31"), before, "{s:?}");
    assert_eq!(num(&s, "issued"), issued, "{s:?}");
}

/// Reads `n` routed keys, each on a connection of its own (so none follows another and no
/// prediction is made), until the hot-key sketch holds them all.
async fn make_hot(p: &Server, n: usize) {
    for i in 0..n {
        Raw::to(p)
            .await
            .cmd(&["GET", &format!("product:w{i}")])
            .await;
    }
    eventually(DEADLINE, "the keys are hot", || {
        let hot = p.shared.tracker.hotkeys(4 * n);
        async move { (hot.len() >= n).then_some(()) }
    })
    .await;
}

/// Queues `n` routed keys through PROXY WARMUP: each is read (so it is hot), then deleted.
async fn warm(p: &Server, c: &mut Raw, n: usize) -> usize {
    make_hot(p, n).await;
    for i in 0..n {
        c.cmd(&["DEL", &format!("product:w{i}")]).await;
    }
    let reply = c.text(&["PROXY", "WARMUP", &n.to_string(), "1"]).await;
    reply.matches("product:w").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_bounds_prefetches_and_warmup_queues_hot_keys() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let mut s = prefetching(&url, &origin);
        s.prefetch.max_requests_per_second = 5.0;
        s.tracking.hotkeys_capacity = 64;
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        let queued = warm(&p, &mut c, 20).await;
        assert_eq!(queued, 20, "{url}");
        let started = Instant::now();
        let mut probe = Raw::to(&p).await;
        // An upper bound only: a slow machine sends fewer, never more.
        for _ in 0..20 {
            let s = stats(&mut probe).await;
            let bound = 5.0 * started.elapsed().as_secs_f64() + 5.0 + 1.0;
            assert!((num(&s, "processed") as f64) <= bound, "{url}: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = stats_until(&mut probe, "all 20 fetched", |s| num(s, "processed") >= 20).await;
        assert_identity(&s);
        assert_eq!(c.text(&["EXISTS", "product:w7"]).await, ":1\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_in_a_row_back_the_workers_off() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let mut s = prefetching(&redis.url(), &origin);
    s.prefetch.max_requests_per_second = 1000.0;
    s.origin.breaker_failures = 1000;
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    make_hot(&p, 30).await;
    origin.b.status.store(503, Ordering::Relaxed);
    for i in 0..30 {
        c.cmd(&["DEL", &format!("product:w{i}")]).await;
    }
    let queued = c.text(&["PROXY", "WARMUP", "30", "1"]).await;
    assert_eq!(queued.matches("product:w").count(), 30);
    let mut probe = Raw::to(&p).await;
    stats_until(&mut probe, "five failures", |s| num(s, "failed") >= 5).await;
    let fifth = Instant::now();
    // Without the back-off the other 25 would fail within milliseconds; with it, the workers
    // that were already fetching finish (4 at most) and the rest wait in the queue a second.
    let s = stats(&mut probe).await;
    if fifth.elapsed() < Duration::from_millis(900) {
        assert!(num(&s, "failed") <= 5 + 4, "{s:?}");
        assert!(num(&s, "queue_size") >= 30 - 9, "{s:?}");
    }
    // Failures are not issued prefetches: what is issued is still in flight.
    assert_eq!(num(&s, "issued"), num(&s, "open"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_weights_follow_a_simulated_day_and_control_works() {
    let origin = TestOrigin::start().await;
    let mut s = prefetching("memory://", &origin);
    s.prefetch.hour_weights = [("9-11", 1.5), ("21-9", 0.3)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let p = proxy_with(s).await;
    let pf = p.shared.prefetch.clone().expect("prefetching is set up");
    for hour in 0..24 {
        pf.pin_hour(Some(hour));
        let want = match hour {
            9 | 10 => 1.5,
            21..=23 | 0..=8 => 0.3,
            _ => 1.0,
        };
        assert_eq!(pf.weight(), want, "hour {hour}");
    }
    pf.pin_hour(None);
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["PROXY", "PREFETCH", "OFF"]).await, "+OK\r\n");
    assert!(c
        .text(&["PROXY", "PREFETCH", "STATS"])
        .await
        .contains("prefetch_enabled:0"));
    assert_eq!(c.text(&["PROXY", "PREFETCH", "ON"]).await, "+OK\r\n");
    let set = c
        .text(&["PROXY", "PREFETCH", "CONFIG", "SET", "confidence", "0.6"])
        .await;
    assert_eq!(set, "+OK\r\n");
    let set = c
        .text(&[
            "PROXY",
            "PREFETCH",
            "CONFIG",
            "SET",
            "hour_weights",
            "0-24=2",
        ])
        .await;
    assert_eq!(set, "+OK\r\n");
    assert_eq!(pf.weight(), 2.0);
    let got = c
        .text(&["PROXY", "PREFETCH", "CONFIG", "GET", "min_*"])
        .await;
    assert!(got.contains("0.6"), "{got}");
    let bad = c
        .text(&["PROXY", "PREFETCH", "CONFIG", "SET", "confidence", "lots"])
        .await;
    assert!(bad.starts_with("-ERR"), "{bad}");
    let s = stats(&mut c).await;
    assert_eq!(s.get("threshold").map(String::as_str), Some("0.60"));
}
