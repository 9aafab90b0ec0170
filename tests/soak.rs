//! The hostile-client soak: clients that send random bytes, truncated frames, NULs and 0xFF
//! in inline and multibulk commands, huge length headers, 10,000-deep arrays, one byte at a
//! time, or connect and vanish, while one well-behaved client PINGs and SETs and GETs tagged
//! values. Bounded in count and time; run on both upstreams.
//!
//! What is asserted: every reply to the well-behaved client is right; each arrives within
//! [`REPLY_BOUND`] (a liveness bound: a proxy wedged by one client, as a NUL once wedged it,
//! fails it; the longest wait seen is printed, not asserted, since this machine is shared); and
//! the process's resident memory grows by less than [`RSS_BOUND`]. That bound: at most
//! [`HOSTILE`] hostile connections are open at once, and each may hold a 64 KiB line (the
//! inline limit), 1 MiB of room for an argument whose header promised more (the parser makes
//! room for bytes that arrive, not for a header's promise), and its output (small replies);
//! 16 x ~1.1 MiB is under 20 MiB, and the rest of the bound is allocator and runtime slack.

mod common;

use std::time::{Duration, Instant};

use common::{proxy_with, settings, Raw, Redis, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Hostile connections open at once.
const HOSTILE: usize = 16;
/// Hostile connections made in all, per upstream.
const ROUNDS: usize = 1_500;
/// The soak stops after this long even if rounds remain.
const SOAK_TIME: Duration = Duration::from_secs(15);
/// Longest a well-behaved client may wait for one reply.
const REPLY_BOUND: Duration = DEADLINE;
/// Resident memory growth allowed over the soak.
const RSS_BOUND: u64 = 96 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile connection of kind `kind`.
async fn hostile(port: u16, kind: u64, rng: &mut Rng) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let payload: Vec<u8> = match kind {
        0 => {
            let n = rng.below(512) as usize + 1;
            rng.bytes(n)
        }
        // A valid command cut short.
        1 => {
            let full = b"*3\r\n$3\r\nSET\r\n$4\r\nkey1\r\n$10\r\n0123456789\r\n";
            full[..rng.below(full.len() as u64 - 1) as usize + 1].to_vec()
        }
        // NUL and 0xFF in an inline command, and in multibulk arguments (answered normally).
        2 => b"SET k\x00\xff v\r\nGET \xff\r\n".to_vec(),
        3 => b"*3\r\n$3\r\nSET\r\n$3\r\n\x00\xff\x00\r\n$2\r\n\xff\x00\r\n*2\r\n$3\r\nGET\r\n$3\r\n\x00\xff\x00\r\n"
            .to_vec(),
        // Length headers promising far more than ever comes.
        4 => b"*1\r\n$536870911\r\nabc".to_vec(),
        5 => b"*1048576\r\n$1\r\na\r\n".to_vec(),
        // 10,000 nested array headers.
        6 => b"*1\r\n".repeat(10_000),
        // Connect and vanish.
        7 => Vec::new(),
        // A NUL that hides the line end.
        _ => b"GET a\x00\r\nPING\r\n".to_vec(),
    };
    if kind == 8 && rng.below(4) == 0 {
        // Slow drip, one byte at a time.
        for b in b"*2\r\n$3\r\nGET\r\n$4\r\ndrip\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else if s.write_all(&payload).await.is_err() {
        return;
    }
    // Read a little (or not at all), then vanish.
    if rng.below(2) == 0 {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await;
    }
}

/// The well-behaved client until `stop`: every reply right, each within the bound. Returns
/// the longest wait and the number of round trips.
async fn good_client(port: u16, stop: tokio::sync::watch::Receiver<bool>) -> (Duration, u64) {
    let mut c = Raw::connect(port).await;
    let mut worst = Duration::ZERO;
    let mut n = 0u64;
    while !*stop.borrow() {
        let tag = format!("tag:{n}");
        let value = format!("value-{n}-{}", "x".repeat((n % 50) as usize));
        let steps: [(Vec<&str>, String); 3] = [
            (vec!["PING"], "+PONG\r\n".to_string()),
            (vec!["SET", &tag, &value], "+OK\r\n".to_string()),
            (
                vec!["GET", &tag],
                format!("${}\r\n{value}\r\n", value.len()),
            ),
        ];
        for (args, want) in steps {
            let t = Instant::now();
            let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
            c.send(&a).await;
            let got = tokio::time::timeout(REPLY_BOUND, c.try_read())
                .await
                .unwrap_or_else(|_| panic!("no reply to {args:?} within {REPLY_BOUND:?}"))
                .expect("the well-behaved client's connection stays open");
            worst = worst.max(t.elapsed());
            assert_eq!(String::from_utf8_lossy(&got), want, "{args:?}");
        }
        n += 1;
    }
    (worst, n)
}

async fn soak(url: &str) {
    // The proxy runs on a runtime of its own, so that a proxy wedged by a hostile client
    // fails the well-behaved client's bound instead of also stopping the test's own clock.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the proxy");
    let s = settings(url);
    let p = rt
        .spawn(async move { proxy_with(s).await })
        .await
        .expect("the proxy starts");
    let port = p.addr.port();
    // Warm up, so the baseline includes the runtime's and the store's first allocations.
    let mut warm = Raw::connect(port).await;
    for _ in 0..100 {
        warm.cmd(&["SET", "warm", "x"]).await;
    }
    let base = rss_bytes();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let good = tokio::spawn(good_client(port, stop_rx));
    let end = Instant::now() + SOAK_TIME;
    let mut tasks = tokio::task::JoinSet::new();
    let mut made = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while made < ROUNDS && Instant::now() < end {
        while tasks.len() < HOSTILE && made < ROUNDS {
            seed = seed.wrapping_add(0x2545_F491_4F6C_DD1D);
            let mut rng = Rng(seed | 1);
            let kind = rng.below(9);
            tasks.spawn(async move { hostile(port, kind, &mut rng).await });
            made += 1;
        }
        let _ = tasks.join_next().await;
    }
    while tasks.join_next().await.is_some() {}
    let _ = stop_tx.send(true);
    let (worst, trips) = good.await.expect("the well-behaved client passes");
    let grown = rss_bytes().saturating_sub(base);
    println!(
        "{url}: {made} hostile connections, {trips} good round trips, longest wait {worst:?}, RSS grew {} KiB",
        grown / 1024
    );
    assert!(trips > 0);
    assert!(
        grown < RSS_BOUND,
        "{url}: resident memory grew {grown} bytes over the soak"
    );
    assert_eq!(warm.text(&["PING"]).await, "+PONG\r\n");
    drop(p);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_never_disturb_a_well_behaved_one() {
    let redis = Redis::start().await;
    soak(&redis.url()).await;
    soak("memory://").await;
}
