//! Faults: Redis restarted under load, Redis paused past the timeout, a client that never
//! reads, malformed and oversized frames, the client limit, idle clients, graceful shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, proxy, proxy_with, settings, Raw, Redis, DEADLINE};

/// A reply is "one of mine" when it is the exact tag this client sent, or an error from the
/// proxy. Anything else means a reply reached the wrong request.
fn check_echo(reply: &[u8], tag: &str) -> Result<bool, String> {
    let want = format!("${}\r\n{}\r\n", tag.len(), tag);
    if reply == want.as_bytes() {
        Ok(true)
    } else if reply.starts_with(b"-ERR upstream") {
        Ok(false)
    } else {
        Err(format!(
            "expected {tag:?}, got {:?}",
            String::from_utf8_lossy(reply)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load_never_crosses_replies() {
    let mut redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.upstream.timeout_ms = 2_000;
    let p = proxy_with(s).await;
    let port = p.addr.port();
    let restarted = Arc::new(AtomicBool::new(false));
    let ok_after = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 0..50u32 {
        let restarted = restarted.clone();
        let ok_after = ok_after.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(port).await;
            let (mut ok, mut errors, mut good_after) = (0u32, 0u32, 0u32);
            for seq in 0.. {
                // A pipeline of three tagged requests: each reply must be its own.
                let tags: Vec<String> = (0..3).map(|k| format!("c{id}:s{seq}:{k}")).collect();
                let key = format!("k:{id}");
                let val = format!("v:{id}:{seq}");
                for t in &tags {
                    c.send(&[b"ECHO", t.as_bytes()]).await;
                }
                c.send(&[b"SET", key.as_bytes(), val.as_bytes()]).await;
                c.send(&[b"GET", key.as_bytes()]).await;
                for t in &tags {
                    match check_echo(&c.read().await, t) {
                        Ok(true) => ok += 1,
                        Ok(false) => errors += 1,
                        Err(e) => panic!("client {id}: {e}"),
                    }
                }
                let set = c.read().await;
                let get = c.read().await;
                if &set[..] == b"+OK\r\n" {
                    let want = format!("${}\r\n{}\r\n", val.len(), val);
                    // Never nil: a GET pipelined behind its SET reaches the same Redis, or
                    // fails with it (a restarted, empty Redis never answers it).
                    let mine = get == want.as_bytes() || get.starts_with(b"-ERR upstream");
                    assert!(
                        mine,
                        "client {id}: GET after SET {val} returned {:?}",
                        String::from_utf8_lossy(&get)
                    );
                } else {
                    assert!(
                        set.starts_with(b"-ERR upstream"),
                        "client {id}: SET got {:?}",
                        String::from_utf8_lossy(&set)
                    );
                }
                if restarted.load(Ordering::SeqCst) && &set[..] == b"+OK\r\n" {
                    good_after += 1;
                    if good_after == 20 {
                        ok_after.fetch_add(1, Ordering::SeqCst);
                        return (ok, errors);
                    }
                }
            }
            unreachable!()
        }));
    }
    // Load is running: kill Redis, let clients see the failure, bring it back.
    let sh = p.shared.clone();
    eventually(DEADLINE, "load running", || {
        let n = sh.metrics.commands_processed();
        async move { (n > 2_000).then_some(()) }
    })
    .await;
    redis.kill();
    eventually(DEADLINE, "proxy notices Redis is gone", || {
        let up = sh.upstream.connector.health.is_up();
        async move { (!up).then_some(()) }
    })
    .await;
    redis.restart().await;
    let back = Instant::now();
    restarted.store(true, Ordering::SeqCst);
    eventually(DEADLINE, "proxy serves again", || async move {
        let mut c = Raw::connect(port).await;
        (c.text(&["SET", "probe", "1"]).await == "+OK\r\n").then_some(())
    })
    .await;
    println!(
        "proxy serving again {:?} after Redis came back",
        back.elapsed()
    );
    let mut errors = 0;
    for t in tasks {
        let (_, e) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("clients finish")
            .expect("client task");
        errors += e;
    }
    println!("errors seen by clients during the outage: {errors}");
    // The commands in flight while Redis was down got upstream errors (check_echo accepts no
    // other error), and some were in flight.
    assert!(errors > 0, "no command failed while Redis was down");
    assert_eq!(ok_after.load(Ordering::SeqCst), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_gets_a_prompt_error_then_recovers() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.upstream.timeout_ms = 200;
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["SET", "a", "1"]).await, "+OK\r\n");
    redis.signal("-STOP");
    let r = c.text(&["GET", "a"]).await;
    assert!(
        r.starts_with("-ERR upstream") && r.contains("did not answer within 200 ms"),
        "{r}"
    );
    // New commands while it is still paused fail promptly too (timeout or reconnect error).
    let r = c.text(&["GET", "a"]).await;
    assert!(r.starts_with("-ERR upstream"), "{r}");
    redis.signal("-CONT");
    eventually(DEADLINE, "GET works after SIGCONT", || {
        let port = p.addr.port();
        async move {
            let mut c = Raw::connect(port).await;
            (c.text(&["GET", "a"]).await == "$1\r\n1\r\n").then_some(())
        }
    })
    .await;
    assert!(p.shared.metrics.upstream_errors("timeout") >= 1);
}

/// A slow network in front of Redis: what Redis sends arrives `chunk` bytes every `pause`
/// (what the proxy sends goes straight through). Returns the port to connect to.
async fn slow_link(redis: u16, chunk: usize, pause: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", redis))
                    .await
                    .expect("connect to redis");
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0; chunk];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_arriving_slower_than_the_timeout_is_delivered_not_failed() {
    let redis = Redis::start().await;
    let mut setup = redis.client().await;
    for chunk in 0..20 {
        let mut args = vec![b"RPUSH".to_vec(), b"big".to_vec()];
        args.extend(
            (chunk * 10_000..(chunk + 1) * 10_000).map(|i| format!("item:{i}").into_bytes()),
        );
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        setup.send(&args).await;
        assert!(setup.read().await.starts_with(b":"));
    }
    let want = setup.cmd(&["LRANGE", "big", "0", "-1"]).await;
    assert!(want.len() > 3_000_000, "{}", want.len());
    // 3.4 MB at 64 KiB per 20 ms takes over a second: more than three timeouts.
    let link = slow_link(redis.port, 64 * 1024, Duration::from_millis(20)).await;
    let mut s = settings(&format!("redis://127.0.0.1:{link}"));
    s.upstream.timeout_ms = 300;
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    let got = c.cmd(&["LRANGE", "big", "0", "-1"]).await;
    assert!(
        got == want,
        "{} bytes: {}",
        got.len(),
        String::from_utf8_lossy(&got[..got.len().min(100)])
    );
    assert_eq!(p.shared.metrics.upstream_errors("timeout"), 0);
    // A silent upstream still times out.
    redis.signal("-STOP");
    let r = c.text(&["GET", "a"]).await;
    redis.signal("-CONT");
    assert!(r.contains("did not answer within 300 ms"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_others_are_served() {
    let redis = Redis::start().await;
    never_reads(settings(&redis.url())).await;
    // The embedded store writes replies past the reply queue while nothing is queued before
    // them (uncompressed values: a decoded reply takes the queue); the limit still holds.
    let mut s = settings("memory://");
    s.compression.enabled = false;
    never_reads(s).await;
}

async fn never_reads(mut s: prescient::config::Settings) {
    s.limits.client_output_buffer_limit = 4 * 1024 * 1024;
    let p = proxy_with(s).await;
    let mut setup = Raw::to(&p).await;
    let big = "x".repeat(256 * 1024);
    assert_eq!(setup.text(&["SET", "big", &big]).await, "+OK\r\n");
    let mut hog = Raw::to(&p).await;
    // 20,000 GETs of 256 KiB is 5 GB of replies, never read.
    let one = prescient::command::encode_request(&[
        bytes::Bytes::from_static(b"GET"),
        bytes::Bytes::from_static(b"big"),
    ]);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            if tokio::io::AsyncWriteExt::write_all(&mut hog.stream, &batch)
                .await
                .is_err()
            {
                break;
            }
        }
        hog
    });
    let sh = p.shared.clone();
    eventually(DEADLINE, "hog disconnected for its output buffer", || {
        let n = sh.metrics.clients_closed("output_buffer_limit");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let _ = writer.await;
    assert_eq!(setup.text(&["PING"]).await, "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_redis_errors_and_close() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.limits.max_bulk_len = 1024;
    s.limits.max_array_len = 100;
    let p = proxy_with(s).await;
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*101\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$1025\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET a \"unbalanced\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut c = Raw::to(&p).await;
        c.send_raw(b"*1\r\n$4\r\nPING\r\n").await;
        assert_eq!(&c.read().await[..], b"+PONG\r\n");
        c.send_raw(input).await;
        assert_eq!(
            String::from_utf8_lossy(&c.read().await),
            *want,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(c.closed().await, "connection closes after a protocol error");
    }
    // Random garbage never takes the proxy down.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        let mut c = Raw::to(&p).await;
        let len = (seed % 64) as usize + 1;
        let mut junk = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(b"*$\r\n-+:0123456789abc \"'"[(seed % 23) as usize]);
        }
        c.send_raw(&junk).await;
        drop(c);
    }
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limit_and_idle_timeout() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.server.max_clients = 2;
    s.server.idle_timeout_secs = 1;
    let p = proxy_with(s).await;
    let mut a = Raw::to(&p).await;
    let mut b = Raw::to(&p).await;
    assert_eq!(a.text(&["PING"]).await, "+PONG\r\n");
    assert_eq!(b.text(&["PING"]).await, "+PONG\r\n");
    let mut c = Raw::to(&p).await;
    assert_eq!(
        &c.read().await[..],
        b"-ERR max number of clients reached\r\n"
    );
    assert!(a.closed().await, "idle client closed");
    assert!(p.shared.metrics.clients_closed("idle_timeout") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_commands_then_closes() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    c.send(&[b"BLPOP", b"nothing", b"0.5"]).await;
    let sh = p.shared.clone();
    eventually(DEADLINE, "BLPOP in flight", || {
        let n = sh.metrics.pinned_clients.get();
        async move { (n == 1).then_some(()) }
    })
    .await;
    p.shutdown();
    assert_eq!(&c.read().await[..], b"*-1\r\n");
    assert!(c.closed().await);
    assert!(p.wait(DEADLINE).await, "every client finished");
}
