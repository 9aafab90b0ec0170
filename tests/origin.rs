//! Read-through to a real HTTP origin (tests/common/origin.rs), on both upstreams: a miss is
//! filled once and answered, 1,000 concurrent misses of one key make one origin request, a 404
//! is remembered until a client writes the key, a failing or oversized origin gives the
//! configured outcome while everything else is served, a client's write during a fill wins,
//! replies stay in order around a slow fill, and RESP3 clients get RESP3 nils.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::origin::{body_of, TestOrigin};
use common::{proxy_with, settings, Raw, Redis};
use prescient::config::OnError;
use prescient::server::Server;

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
}

async fn proxy_for(url: &str, origin: &TestOrigin, on_error: OnError) -> Server {
    let mut s = settings(url);
    let mut r = origin.route("product");
    r.on_error = on_error;
    r.max_body_bytes = 1 << 20;
    s.origin.routes = vec![r];
    s.origin.timeout_ms = 5_000;
    proxy_with(s).await
}

/// Both upstreams, one test each: a redis-server is started for the first.
async fn upstreams() -> (Redis, [String; 2]) {
    let redis = Redis::start().await;
    let url = redis.url();
    (redis, [url, "memory://".to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_filled_from_the_origin_once_and_then_hits() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let p = proxy_for(&url, &origin, OnError::Nil).await;
        let mut c = Raw::to(&p).await;
        assert_eq!(
            c.text(&["GET", "product:1"]).await,
            bulk(&body_of("1")),
            "{url}"
        );
        assert_eq!(
            c.text(&["GET", "product:1"]).await,
            bulk(&body_of("1")),
            "{url}"
        );
        assert_eq!(origin.b.hits("/api/products/1"), 1, "{url}");
        // Stored with the route's TTL (900 s plus up to 10% jitter).
        let ttl: i64 = c.text(&["TTL", "product:1"]).await[1..]
            .trim()
            .parse()
            .unwrap();
        assert!((890..=990).contains(&ttl), "{url}: ttl {ttl}");
        // Keys no route matches are untouched.
        assert_eq!(c.text(&["GET", "other:1"]).await, "$-1\r\n");
        assert_eq!(origin.b.total(), 1);
        let report = c.text(&["PROXY", "ORIGIN"]).await;
        assert!(
            report.contains("route:product") && report.contains("requests_ok=1"),
            "{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_of_one_key_make_one_origin_request() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.delay_ms.store(300, Ordering::Relaxed);
        let p = proxy_for(&url, &origin, OnError::Nil).await;
        let mut clients = Vec::new();
        for _ in 0..1000 {
            clients.push(Raw::to(&p).await);
        }
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| tokio::spawn(async move { c.text(&["GET", "product:herd"]).await }))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), bulk(&body_of("herd")), "{url}");
        }
        assert_eq!(origin.b.hits("/api/products/herd"), 1, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_nil_and_remembered_until_a_client_writes_the_key() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let p = proxy_for(&url, &origin, OnError::Error).await;
        let mut c = Raw::to(&p).await;
        assert_eq!(c.text(&["GET", "product:missing1"]).await, "$-1\r\n");
        assert_eq!(c.text(&["GET", "product:missing1"]).await, "$-1\r\n");
        assert_eq!(
            origin.b.hits("/api/products/missing1"),
            1,
            "{url}: remembered"
        );
        assert_eq!(
            c.text(&["SET", "product:missing1", "mine"]).await,
            "+OK\r\n"
        );
        assert_eq!(c.text(&["GET", "product:missing1"]).await, bulk("mine"));
        assert_eq!(c.text(&["DEL", "product:missing1"]).await, ":1\r\n");
        // The write forgot the 404: the next miss asks the origin again.
        assert_eq!(c.text(&["GET", "product:missing1"]).await, "$-1\r\n");
        assert_eq!(origin.b.hits("/api/products/missing1"), 2, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_gives_the_configured_outcome_and_nothing_else_waits() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.status.store(503, Ordering::Relaxed);
        let quiet = proxy_for(&url, &origin, OnError::Nil).await;
        let loud = proxy_for(&url, &origin, OnError::Error).await;
        let (mut q, mut l) = (Raw::to(&quiet).await, Raw::to(&loud).await);
        assert_eq!(q.text(&["GET", "product:2"]).await, "$-1\r\n", "{url}");
        let e = l.text(&["GET", "product:3"]).await;
        assert!(
            e.starts_with("-ERR origin route 'product' failed: status 503"),
            "{url}: {e}"
        );
        let metrics = common::http_get(quiet.admin_addr.unwrap(), "/metrics")
            .await
            .1;
        assert!(
            metrics.contains("prescient_origin_up{route=\"product\"} 0"),
            "{metrics}"
        );
        // Not remembered: a failure is not a 404.
        origin.b.status.store(0, Ordering::Relaxed);
        assert_eq!(
            q.text(&["GET", "product:2"]).await,
            bulk(&body_of("2")),
            "{url}"
        );
        let metrics = common::http_get(quiet.admin_addr.unwrap(), "/metrics")
            .await
            .1;
        assert!(
            metrics.contains("prescient_origin_up{route=\"product\"} 1"),
            "{metrics}"
        );
        // An origin that is not there at all; a body over max_body_bytes.
        let mut s = settings(&url);
        let mut gone = origin.route("gone");
        gone.url = "http://127.0.0.1:9/api/{id}".into();
        gone.on_error = OnError::Error;
        gone.key = "gone:{id}".into();
        let mut big = origin.route("big");
        big.url = format!("http://{}/api/big?{{id}}", origin.addr);
        big.key = "big:{id}".into();
        big.on_error = OnError::Error;
        big.max_body_bytes = 1 << 20;
        s.origin.routes = vec![gone, big];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        let e = c.text(&["GET", "gone:1"]).await;
        assert!(
            e.starts_with("-ERR origin route 'gone' failed: request failed"),
            "{e}"
        );
        let e = c.text(&["GET", "big:1"]).await;
        assert!(e.contains("body over max_body_bytes"), "{e}");
        assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_write_during_a_fill_wins() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.delay_ms.store(400, Ordering::Relaxed);
        let p = proxy_for(&url, &origin, OnError::Nil).await;
        let mut reader = Raw::to(&p).await;
        let mut writer = Raw::to(&p).await;
        reader.send(&[b"GET", b"product:race"]).await;
        common::eventually(Duration::from_secs(5), "the fill started", || {
            let n = origin.b.hits("/api/products/race");
            async move { (n == 1).then_some(()) }
        })
        .await;
        assert_eq!(
            writer.text(&["SET", "product:race", "mine"]).await,
            "+OK\r\n"
        );
        // The read was asked before the write: it gets the origin's answer ...
        assert_eq!(&reader.read().await[..], bulk(&body_of("race")).as_bytes());
        // ... and the client's value stays, without the fill's TTL.
        assert_eq!(
            writer.text(&["GET", "product:race"]).await,
            bulk("mine"),
            "{url}"
        );
        assert_eq!(
            writer.text(&["TTL", "product:race"]).await,
            ":-1\r\n",
            "{url}"
        );
        // A DEL during the fill wins too: the fill does not store (EXISTS does not read
        // through).
        reader.send(&[b"GET", b"product:race2"]).await;
        common::eventually(Duration::from_secs(5), "the second fill started", || {
            let n = origin.b.hits("/api/products/race2");
            async move { (n == 1).then_some(()) }
        })
        .await;
        assert_eq!(writer.text(&["DEL", "product:race2"]).await, ":0\r\n");
        assert_eq!(&reader.read().await[..], bulk(&body_of("race2")).as_bytes());
        assert_eq!(
            writer.text(&["EXISTS", "product:race2"]).await,
            ":0\r\n",
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stay_in_order_around_a_slow_fill_and_resp3_gets_its_nil() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.delay_ms.store(200, Ordering::Relaxed);
        let p = proxy_for(&url, &origin, OnError::Nil).await;
        let mut c = Raw::to(&p).await;
        c.text(&["SET", "plain", "v"]).await;
        for args in [
            &["GET", "plain"][..],
            &["GET", "product:slow"],
            &["PING"],
            &["GET", "plain"],
        ] {
            let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
            c.send(&a).await;
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(String::from_utf8_lossy(&c.read().await).into_owned());
        }
        assert_eq!(
            got,
            [
                bulk("v"),
                bulk(&body_of("slow")),
                "+PONG\r\n".into(),
                bulk("v")
            ],
            "{url}"
        );
        // Another client is served while a fill is slow.
        let mut waiting = Raw::to(&p).await;
        waiting.send(&[b"GET", b"product:slow2"]).await;
        let mut other = Raw::to(&p).await;
        assert_eq!(other.text(&["GET", "plain"]).await, bulk("v"));
        assert_eq!(
            &waiting.read().await[..],
            bulk(&body_of("slow2")).as_bytes()
        );
        // RESP3: a 404 is RESP3's nil.
        let mut r3 = Raw::to(&p).await;
        r3.proto = prescient::protocol::reply::Proto::Resp3;
        r3.text(&["HELLO", "3"]).await;
        assert_eq!(
            r3.text(&["GET", "product:missing9"]).await,
            "_\r\n",
            "{url}"
        );
        assert_eq!(
            r3.text(&["GET", "product:9"]).await,
            bulk(&body_of("9")),
            "{url}"
        );
    }
}

/// An MGET fills its routed misses from the origin, all at once, and keeps everything else:
/// hits (compressed ones decoded), unrouted keys, 404s and failures stay nil. A GET of a key an
/// MGET is filling joins that fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mget_fills_its_routed_misses_and_keeps_the_rest() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.delay_ms.store(200, Ordering::Relaxed);
        let mut s = settings(&url);
        s.compression.threshold_bytes = 64;
        s.origin.routes = vec![origin.route("product")];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        let big = "x".repeat(500);
        c.text(&["SET", "product:hit", &big]).await;
        c.text(&["SET", "plain", "v"]).await;
        let keys = [
            "product:hit",
            "product:a",
            "plain",
            "product:missing2",
            "nosuch",
            "product:b",
        ];
        let mut mget = vec![b"MGET".as_slice()];
        mget.extend(keys.iter().map(|k| k.as_bytes()));
        c.send(&mget).await;
        // Joins the MGET's fill of product:a rather than asking again.
        let mut g = Raw::to(&p).await;
        g.send(&[b"GET", b"product:a"]).await;
        let want = format!(
            "*6\r\n{}{}{}$-1\r\n$-1\r\n{}",
            bulk(&big),
            bulk(&body_of("a")),
            bulk("v"),
            bulk(&body_of("b"))
        );
        assert_eq!(String::from_utf8_lossy(&c.read().await), want, "{url}");
        assert_eq!(&g.read().await[..], bulk(&body_of("a")).as_bytes());
        assert_eq!(origin.b.hits("/api/products/a"), 1, "{url}");
        assert_eq!(origin.b.hits("/api/products/b"), 1, "{url}");
        assert_eq!(origin.b.hits("/api/products/hit"), 0, "{url}");
        // Stored: the next MGET is all hits.
        let before = origin.b.total();
        let again = c.text(&["MGET", "product:a", "product:b"]).await;
        assert_eq!(
            again,
            format!("*2\r\n{}{}", bulk(&body_of("a")), bulk(&body_of("b")))
        );
        assert_eq!(origin.b.total(), before, "{url}");
    }
}

/// A failing origin host opens its breaker: after `breaker_failures` consecutive failures,
/// misses fail at once without asking it; once it recovers, one probe closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_failing_host_and_closes_when_it_recovers() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.status.store(500, Ordering::Relaxed);
        let mut s = settings(&url);
        let mut r = origin.route("product");
        r.on_error = OnError::Error;
        r.retries = 0;
        s.origin.routes = vec![r];
        s.origin.breaker_failures = 3;
        s.origin.breaker_cooldown_ms = 200;
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        for i in 0..3 {
            let e = c.text(&["GET", &format!("product:f{i}")]).await;
            assert!(e.contains("status 500"), "{url}: {e}");
        }
        let e = c.text(&["GET", "product:f3"]).await;
        assert!(e.contains("circuit breaker open"), "{url}: {e}");
        assert_eq!(origin.b.total(), 3, "{url}: the open breaker asked nothing");
        assert!(c.text(&["PROXY", "ORIGIN"]).await.contains(" open"));
        origin.b.status.store(0, Ordering::Relaxed);
        // After the cooldown a probe goes through, succeeds and closes the breaker.
        let body = bulk(&body_of("f4"));
        common::eventually(Duration::from_secs(10), "the breaker closes", || {
            let p = &p;
            let body = body.clone();
            async move {
                let mut c = Raw::to(p).await;
                (c.text(&["GET", "product:f4"]).await == body).then_some(())
            }
        })
        .await;
        assert!(c.text(&["PROXY", "ORIGIN"]).await.contains(" closed"));
        assert_eq!(c.text(&["GET", "product:f5"]).await, bulk(&body_of("f5")));
    }
}

/// Stale-while-revalidate: past `ttl` and within `stale`, a read gets the stored value at once
/// and one refresh runs, however many readers see it stale; the reads after it get the new
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_served_while_one_refresh_runs() {
    use common::origin::versioned;
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        origin.b.version.store(1, Ordering::Relaxed);
        let mut s = settings(&url);
        let mut r = origin.route("product");
        r.ttl = 1;
        r.stale = 60;
        s.origin.routes = vec![r];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        let v1 = bulk(&versioned("s", 1));
        assert_eq!(c.text(&["GET", "product:s"]).await, v1, "{url}");
        origin.b.version.store(2, Ordering::Relaxed);
        origin.b.delay_ms.store(300, Ordering::Relaxed);
        // Fresh for a second: reads are plain hits; then the first stale read starts the refresh.
        common::eventually(
            Duration::from_secs(10),
            "a stale read starts a refresh",
            || {
                let p = &p;
                let (o, v1) = (&origin, v1.clone());
                async move {
                    let mut c = Raw::to(p).await;
                    assert_eq!(
                        c.text(&["GET", "product:s"]).await,
                        v1,
                        "stale, served at once"
                    );
                    (o.b.hits("/api/products/s") == 2).then_some(())
                }
            },
        )
        .await;
        // The refresh is slow: fifty more readers see the stale value, and ask nothing.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let mut c = Raw::to(&p).await;
            tasks.push(tokio::spawn(
                async move { c.text(&["GET", "product:s"]).await },
            ));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), v1, "{url}");
        }
        let v2 = bulk(&versioned("s", 2));
        common::eventually(Duration::from_secs(10), "the refreshed value", || {
            let p = &p;
            let v2 = v2.clone();
            async move { (Raw::to(p).await.text(&["GET", "product:s"]).await == v2).then_some(()) }
        })
        .await;
        assert_eq!(origin.b.hits("/api/products/s"), 2, "{url}: one refresh");
    }
}

/// Stale-if-error: past `ttl` (and `stale`) a read is a miss, but while the origin fails the
/// stored value is served for `stale_if_error`; after that, the route's on_error outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_is_covered_by_stale_values_for_a_while() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let mut s = settings(&url);
        let mut r = origin.route("product");
        r.ttl = 1;
        r.stale_if_error = 2;
        r.on_error = OnError::Error;
        s.origin.routes = vec![r];
        s.origin.breaker_failures = 1000;
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        let v = bulk(&body_of("e"));
        assert_eq!(c.text(&["GET", "product:e"]).await, v, "{url}");
        origin.b.status.store(500, Ordering::Relaxed);
        // Expired: each read asks the origin, which fails; the stored value is served.
        common::eventually(
            Duration::from_secs(10),
            "a failed fill covered by the stale value",
            || {
                let (p, o, v) = (&p, &origin, v.clone());
                async move {
                    let got = Raw::to(p).await.text(&["GET", "product:e"]).await;
                    assert_eq!(got, v, "served while the origin fails");
                    (o.b.hits("/api/products/e") >= 2).then_some(())
                }
            },
        )
        .await;
        // Past stale_if_error: the failure shows.
        common::eventually(Duration::from_secs(10), "the configured failure", || {
            let p = &p;
            async move {
                let got = Raw::to(p).await.text(&["GET", "product:e"]).await;
                got.starts_with("-ERR origin route 'product' failed")
                    .then_some(())
            }
        })
        .await;
        // Recovered: the next read fills a fresh value over the expired one.
        origin.b.status.store(0, Ordering::Relaxed);
        assert_eq!(c.text(&["GET", "product:e"]).await, v, "{url}");
        let ttl: i64 = c.text(&["TTL", "product:e"]).await[1..]
            .trim()
            .parse()
            .unwrap();
        assert!(ttl >= 2, "{url}: refilled, ttl {ttl}");
    }
}

/// An MGET's misses on a route with a batch URL: one origin request per `batch_size` of them,
/// the values taken from the JSON object by id (exactly the bytes a single GET returns), the
/// ids it leaves out remembered as 404s; an answer that is not JSON fails those keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mget_backfills_through_the_batch_url() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let mut s = settings(&url);
        let mut r = origin.route("product");
        r.batch_url = format!("http://{}/api/products?ids={{ids}}", origin.addr);
        r.batch_size = 2;
        s.origin.routes = vec![r];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        c.text(&["SET", "product:hit", "h"]).await;
        let got = c
            .text(&[
                "MGET",
                "product:a",
                "product:hit",
                "product:b",
                "product:missing3",
                "product:c",
            ])
            .await;
        let want = format!(
            "*5\r\n{}{}{}$-1\r\n{}",
            bulk(&body_of("a")),
            bulk("h"),
            bulk(&body_of("b")),
            bulk(&body_of("c"))
        );
        assert_eq!(got, want, "{url}");
        // Four misses, two per request.
        assert_eq!(origin.b.hits("/api/products"), 2, "{url}");
        assert_eq!(origin.b.total(), 2, "{url}: no single requests");
        // Stored as a single GET's fill: the next reads are hits; the 404 is remembered.
        assert_eq!(c.text(&["GET", "product:b"]).await, bulk(&body_of("b")));
        assert_eq!(c.text(&["GET", "product:missing3"]).await, "$-1\r\n");
        assert_eq!(origin.b.total(), 2, "{url}");
        let ttl: i64 = c.text(&["TTL", "product:c"]).await[1..]
            .trim()
            .parse()
            .unwrap();
        assert!(ttl > 800, "{url}: ttl {ttl}");
        // Not JSON: those keys stay nil, the MGET still answers.
        let got = c.text(&["MGET", "product:bad-json1", "product:hit"]).await;
        assert_eq!(got, format!("*2\r\n$-1\r\n{}", bulk("h")), "{url}");
    }
}

/// A lying origin, on raw TCP: a Content-Length longer than the body (then the connection
/// closes), a connection reset before any answer, garbage instead of HTTP, and an answer that
/// never ends. Each miss gets the configured failure, within the timeout, and the next reader
/// of the same key starts a new fill (no key is left stuck); other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_origin_gives_a_clear_failure_and_leaves_no_key_stuck() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if req.contains("/short") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
                        .await;
                } else if req.contains("/reset") {
                    // A zero linger makes the close a reset (RST); with zero it does not block.
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                } else if req.contains("/garbage") {
                    let _ = s.write_all(b"this is not HTTP at all\r\n\r\n").await;
                } else if req.contains("/endless") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    loop {
                        if s.write_all(b"4\r\nmore\r\n").await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                // Dropped: closed.
            });
        }
    });
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let mut s = settings(&url);
        s.origin.breaker_failures = 1000;
        let mut r = prescient::config::OriginRoute {
            name: "liar".into(),
            key: "liar:{id}".into(),
            url: format!("http://{addr}/{{id}}"),
            on_error: OnError::Error,
            timeout_ms: 500,
            ..Default::default()
        };
        r.max_body_bytes = 1 << 20;
        s.origin.routes = vec![r];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        for (key, why) in [
            ("liar:short", "body failed"),
            ("liar:reset", "request failed"),
            ("liar:garbage", "request failed"),
            ("liar:endless", "timed out after 500 ms"),
        ] {
            let before = served.load(Ordering::Relaxed);
            let e = c.text(&["GET", key]).await;
            assert!(
                e.starts_with("-ERR origin route 'liar' failed") && e.contains(why),
                "{url} {key}: {e}"
            );
            // Not stuck: the next read asks again.
            let e = c.text(&["GET", key]).await;
            assert!(
                e.starts_with("-ERR origin route 'liar' failed"),
                "{url} {key}: {e}"
            );
            assert!(
                served.load(Ordering::Relaxed) >= before + 2,
                "{url} {key}: asked twice"
            );
            assert_eq!(
                c.text(&["EXISTS", key]).await,
                ":0\r\n",
                "{url} {key}: nothing stored"
            );
        }
        assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
    }
}

/// A hash route: the origin's JSON object becomes the hash (its top-level fields), and HGET,
/// HMGET and HGETALL of a missing key read through, each answering as it asked, in RESP2 and
/// RESP3; a hash that exists is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_route_reads_hget_hmget_and_hgetall_through() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let mut s = settings(&url);
        let mut r = origin.route("ph");
        r.key = "ph:{id}".into();
        r.value_type = prescient::config::ValueType::Hash;
        s.origin.routes = vec![r];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        assert_eq!(
            c.text(&["HGET", "ph:1", "name"]).await,
            bulk("product 1"),
            "{url}"
        );
        assert_eq!(
            c.text(&["HGETALL", "ph:1"]).await,
            format!(
                "*4\r\n{}{}{}{}",
                bulk("id"),
                bulk("1"),
                bulk("name"),
                bulk("product 1")
            ),
            "{url}: stored"
        );
        let ttl: i64 = c.text(&["TTL", "ph:1"]).await[1..].trim().parse().unwrap();
        assert!((890..=990).contains(&ttl), "{url}: ttl {ttl}");
        assert_eq!(
            c.text(&["HMGET", "ph:2", "id", "nosuch", "name"]).await,
            format!("*3\r\n{}$-1\r\n{}", bulk("2"), bulk("product 2")),
            "{url}"
        );
        let mut r3 = Raw::to(&p).await;
        r3.proto = prescient::protocol::reply::Proto::Resp3;
        r3.text(&["HELLO", "3"]).await;
        assert_eq!(
            r3.text(&["HGETALL", "ph:3"]).await,
            format!(
                "%2\r\n{}{}{}{}",
                bulk("id"),
                bulk("3"),
                bulk("name"),
                bulk("product 3")
            ),
            "{url}"
        );
        assert_eq!(
            r3.text(&["HGET", "ph:missing4", "name"]).await,
            "_\r\n",
            "{url}"
        );
        assert_eq!(origin.b.hits("/api/products/1"), 1, "{url}");
        // A hash that exists is not replaced (a field it lacks reads nil).
        c.text(&["HSET", "ph:5", "x", "y"]).await;
        assert_eq!(c.text(&["HGET", "ph:5", "name"]).await, "$-1\r\n", "{url}");
        assert_eq!(
            c.text(&["HGETALL", "ph:5"]).await,
            format!("*2\r\n{}{}", bulk("x"), bulk("y"))
        );
        // GET of a hash route's key is not read through.
        assert_eq!(origin.b.hits("/api/products/6"), 0);
    }
}

/// A failed GET is tried again (`retries`), and a route's `rate_limit` holds fills back: past
/// the timeout, those waiting for their turn fail as "rate limited".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_gets_are_retried_and_the_rate_limit_holds() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let mut s = settings(&url);
        let mut r = origin.route("product");
        r.retries = 2;
        r.on_error = OnError::Error;
        let mut limited = origin.route("limited");
        limited.key = "lim:{id}".into();
        limited.rate_limit = 1;
        limited.timeout_ms = 300;
        limited.on_error = OnError::Error;
        s.origin.routes = vec![r, limited];
        let p = proxy_with(s).await;
        let mut c = Raw::to(&p).await;
        origin.b.fail_next.store(2, Ordering::Relaxed);
        assert_eq!(
            c.text(&["GET", "product:r"]).await,
            bulk(&body_of("r")),
            "{url}"
        );
        assert_eq!(origin.b.hits("/api/products/r"), 3, "{url}: two retries");
        // One request per second: of three fills at once, one goes, the others time out
        // waiting for their turn (300 ms).
        let mut tasks = Vec::new();
        for i in 0..3 {
            let mut c = Raw::to(&p).await;
            tasks.push(tokio::spawn(async move {
                c.text(&["GET", &format!("lim:{i}")]).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let got = t.await.unwrap();
            if got.starts_with('$') {
                ok += 1;
            } else {
                assert!(got.contains("rate limited (1/s)"), "{url}: {got}");
            }
        }
        assert_eq!(ok, 1, "{url}");
    }
}

/// GETEX reads through like GET, and its options apply to the value filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getex_reads_through_and_its_options_apply_to_the_fill() {
    let (_redis, urls) = upstreams().await;
    for url in urls {
        let origin = TestOrigin::start().await;
        let p = proxy_for(&url, &origin, OnError::Nil).await;
        let mut c = Raw::to(&p).await;
        let ttl = |s: String| -> i64 { s[1..].trim().parse().unwrap() };
        assert_eq!(
            c.text(&["GETEX", "product:x", "EX", "50"]).await,
            bulk(&body_of("x"))
        );
        let t = ttl(c.text(&["TTL", "product:x"]).await);
        assert!((1..=50).contains(&t), "{url}: ttl {t}");
        assert_eq!(
            c.text(&["GETEX", "product:y", "PERSIST"]).await,
            bulk(&body_of("y"))
        );
        assert_eq!(c.text(&["TTL", "product:y"]).await, ":-1\r\n", "{url}");
        assert_eq!(c.text(&["GETEX", "product:z"]).await, bulk(&body_of("z")));
        let t = ttl(c.text(&["TTL", "product:z"]).await);
        assert!(t > 800, "{url}: the route's ttl, {t}");
        assert_eq!(origin.b.total(), 3, "{url}");
    }
}

/// A route's headers go with its requests, and never show in PROXY CONFIG GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_headers_are_sent_and_masked() {
    let origin = TestOrigin::start().await;
    let mut s = settings("memory://");
    let mut r = origin.route("product");
    r.headers.insert("x-api-key".into(), "k-123-secret".into());
    s.origin.routes = vec![r];
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["GET", "product:h"]).await, bulk(&body_of("h")));
    assert_eq!(
        origin.b.api_key.lock().unwrap().as_deref(),
        Some("k-123-secret")
    );
    let shown = c.text(&["PROXY", "CONFIG", "GET", "origin.*"]).await;
    assert!(
        shown.contains("x-api-key") && !shown.contains("k-123"),
        "{shown}"
    );
}

/// A refresh never waits for the origin host's capacity ahead of demand: with every slot taken
/// (by a slow demand miss), a stale read is served and its refresh skipped, not queued; once a
/// slot is free, the next stale read refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_yield_the_origin_to_demand_misses() {
    let origin = TestOrigin::start().await;
    let mut s = settings("memory://");
    let mut r = origin.route("product");
    r.ttl = 1;
    r.stale = 60;
    r.timeout_ms = 10_000;
    s.origin.routes = vec![r];
    s.origin.max_concurrency = 1;
    let p = proxy_with(s).await;
    let admin = p.admin_addr.unwrap();
    let mut c = Raw::to(&p).await;
    let a = bulk(&body_of("a"));
    assert_eq!(c.text(&["GET", "product:a"]).await, a);
    // A slow demand miss takes the one slot for 3 s.
    origin.b.delay_ms.store(3000, Ordering::Relaxed);
    let mut d = Raw::to(&p).await;
    d.send(&[b"GET", b"product:slow"]).await;
    common::eventually(
        Duration::from_secs(5),
        "the slow fill holds the slot",
        || {
            let n = origin.b.hits("/api/products/slow");
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    // product:a goes stale (1 s): its reads are served, and its refresh is skipped.
    common::eventually(Duration::from_secs(10), "a skipped refresh", || {
        let (p, a) = (&p, a.clone());
        async move {
            assert_eq!(Raw::to(p).await.text(&["GET", "product:a"]).await, a);
            let m = common::http_get(admin, "/metrics").await.1;
            m.contains(r#"prescient_origin_requests_total{outcome="skipped",route="product"}"#)
                .then_some(())
        }
    })
    .await;
    assert_eq!(origin.b.hits("/api/products/a"), 1, "skipped, not queued");
    assert_eq!(&d.read().await[..], bulk(&body_of("slow")).as_bytes());
    // The slot is free again: the next stale read refreshes.
    common::eventually(Duration::from_secs(15), "the refresh", || {
        let (p, o) = (&p, &origin);
        async move {
            Raw::to(p).await.text(&["GET", "product:a"]).await;
            (o.b.hits("/api/products/a") == 2).then_some(())
        }
    })
    .await;
}
