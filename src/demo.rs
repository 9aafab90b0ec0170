//! `prescient demo`: what prefetching does, in one command and under a minute. A built-in origin
//! (an HTTP API answering in 20 ms) and a built-in workload (simulated users, each reading a
//! profile and then a feed page by page, with a pause between pages) run against prescient on
//! its embedded store twice, prefetching off and on, with the same users; then a table side by
//! side. With `--keep-running` the second instance stays up for redis-cli and curl.
//!
//! Every user reads keys no user read before (`user:{id}:profile`, `feed:{id}:page:{n}`), so
//! with prefetching off every read is a miss read through to the origin. With it on, the model
//! learns the key templates' transitions from the first users (profile -> page 1, page n ->
//! page n+1, for the same id) and fetches each user's next page during the pause.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::{OriginRoute, Settings};
use crate::server::Server;

/// `prescient demo`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated users per run.
    #[arg(long, default_value_t = 300)]
    pub users: u32,
    /// Users reading at the same time.
    #[arg(long, default_value_t = 30)]
    pub concurrency: u32,
    /// The origin's latency per request (ms).
    #[arg(long, default_value_t = 20)]
    pub origin_ms: u64,
    /// Leave prescient (prefetching on) and the origin running afterwards, on 127.0.0.1:6380
    /// and :9380 when they are free.
    #[arg(long)]
    pub keep_running: bool,
}

/// The demo origin: counts requests, answers after `delay`.
struct Origin {
    requests: AtomicU64,
    delay: Duration,
}

async fn profile(State(o): State<Arc<Origin>>, Path(id): Path<String>) -> String {
    o.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(o.delay).await;
    format!("{{\"user\":\"{id}\",\"name\":\"user {id}\",\"plan\":\"free\"}}")
}

async fn feed(State(o): State<Arc<Origin>>, Path((id, n)): Path<(String, String)>) -> String {
    o.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(o.delay).await;
    let items: Vec<String> = (0..10)
        .map(|i| format!("{{\"post\":\"{id}-{n}-{i}\",\"title\":\"post {i} of page {n}\"}}"))
        .collect();
    format!(
        "{{\"user\":\"{id}\",\"page\":{n},\"items\":[{}]}}",
        items.join(",")
    )
}

async fn start_origin(delay: Duration) -> std::io::Result<(SocketAddr, Arc<Origin>)> {
    let o = Arc::new(Origin {
        requests: AtomicU64::new(0),
        delay,
    });
    let app = Router::new()
        .route("/users/{id}/profile", get(profile))
        .route("/feed/{id}/page/{n}", get(feed))
        .with_state(o.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, o))
}

/// One user's reads: the profile, then `pages` feed pages, `pause` apart.
#[derive(Clone)]
struct Session {
    user: u32,
    pages: u32,
    pauses: Vec<Duration>,
}

/// The same sessions for both runs (a fixed seed).
fn sessions(users: u32) -> Vec<Session> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    (0..users)
        .map(|i| {
            let pages = rng.random_range(3..=8);
            Session {
                user: 10_000 + i,
                pages,
                pauses: (0..=pages)
                    .map(|_| Duration::from_millis(rng.random_range(60..=140)))
                    .collect(),
            }
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    hits: u64,
    reads: u64,
    users_done: u32,
}

/// What one run measured.
struct Run {
    hit_ratio: f64,
    mean_ms: f64,
    p99_ms: f64,
    origin: u64,
    precision: Option<f64>,
    wall: Duration,
}

fn settings(origin: SocketAddr, prefetch: bool, listen: &str, admin: &str) -> Settings {
    let mut s = Settings::default();
    s.server.listen = listen.into();
    s.server.admin_listen = admin.into();
    s.upstream.url = "memory://".into();
    let route = |name: &str, key: &str, path: &str| OriginRoute {
        name: name.into(),
        key: key.into(),
        url: format!("http://{origin}{path}"),
        ttl: 300,
        ..Default::default()
    };
    s.origin.routes = vec![
        route("profile", "user:{id}:profile", "/users/{id}/profile"),
        route("feed", "feed:{id}:page:{n}", "/feed/{id}/page/{n}"),
    ];
    s.prefetch.enabled = prefetch;
    // The demo's users read about 250 pages a second: room for that, and enough workers to
    // fetch them within a user's pause at the origin's latency (4, the default, fetch at most
    // 4 / 20 ms = 200 a second, and the queue would hold keys past the read they were for).
    s.prefetch.max_requests_per_second = 1000.0;
    s.prefetch.num_workers = 32;
    s
}

/// Reads one key: (found, latency). The reply is read whole and dropped.
async fn read_key(
    stream: &mut BufReader<TcpStream>,
    key: &str,
) -> std::io::Result<(bool, Duration)> {
    let started = Instant::now();
    let req = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let found = match line.as_bytes().first() {
        Some(b'$') => match line[1..].trim().parse::<i64>() {
            Ok(n) if n >= 0 => {
                let mut body = vec![0u8; n as usize + 2];
                stream.read_exact(&mut body).await?;
                true
            }
            _ => false,
        },
        _ => return Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
    };
    Ok((found, started.elapsed()))
}

/// Runs the sessions against `server`, `concurrency` users at a time, updating `label`'s
/// progress line.
async fn drive(
    server: &Server,
    all: &[Session],
    concurrency: u32,
    origin: &Origin,
    label: &str,
) -> std::io::Result<Run> {
    let before = origin.requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(all.to_vec())));
    let mut workers = Vec::new();
    // A read served from the store takes well under half the origin's latency; a miss at least
    // all of it.
    let fast = origin.delay / 2;
    for _ in 0..concurrency {
        let (tally, queue, addr) = (tally.clone(), queue.clone(), server.addr);
        workers.push(tokio::spawn(async move {
            let mut conn = BufReader::new(TcpStream::connect(addr).await?);
            conn.get_mut().set_nodelay(true)?;
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(s) = next else { break };
                let mut keys = vec![format!("user:{}:profile", s.user)];
                keys.extend((1..=s.pages).map(|n| format!("feed:{}:page:{n}", s.user)));
                for (key, pause) in keys.iter().zip(&s.pauses) {
                    let (found, took) = read_key(&mut conn, key).await?;
                    {
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        t.latencies.push(took);
                        t.reads += 1;
                        t.hits += u64::from(found && took < fast);
                    }
                    tokio::time::sleep(*pause).await;
                }
                tally.lock().unwrap_or_else(|p| p.into_inner()).users_done += 1;
            }
            Ok::<(), std::io::Error>(())
        }));
    }
    let total = all.len();
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (done, reads, hits) = {
                let t = tally.lock().unwrap_or_else(|p| p.into_inner());
                (t.users_done, t.reads, t.hits)
            };
            eprint!(
                "\r  {label:<13} {done:>4}/{total} users, {reads:>5} reads, hit ratio {:.2}   ",
                hits as f64 / reads.max(1) as f64
            );
        }
    };
    let all_done = async {
        for w in workers {
            w.await.map_err(std::io::Error::other)??;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        r = all_done => r?,
        _ = progress => unreachable!("the progress line runs until the users are done"),
    }
    eprintln!();
    let wall = started.elapsed();
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    t.latencies.sort();
    let n = t.latencies.len().max(1);
    let mean = t.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64;
    let p99 = t.latencies[(n * 99 / 100).min(n - 1)].as_secs_f64();
    let precision = server.shared.prefetch.as_ref().and_then(|p| {
        let stats: std::collections::HashMap<_, _> = p.stats().into_iter().collect();
        let num = |k: &str| stats.get(k).and_then(|v| v.parse::<f64>().ok());
        let issued = num("issued")?;
        (issued > 0.0 && p.enabled()).then(|| num("useful").unwrap_or(0.0) / issued)
    });
    Ok(Run {
        hit_ratio: t.hits as f64 / t.reads.max(1) as f64,
        mean_ms: mean * 1000.0,
        p99_ms: p99 * 1000.0,
        origin: origin.requests.load(Ordering::Relaxed) - before,
        precision,
        wall,
    })
}

/// Runs the demo; the table, or why it could not run.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(demo(args)).map_err(|e| e.to_string())
}

async fn demo(args: &DemoArgs) -> std::io::Result<()> {
    let users = args.users.max(10);
    let all = sessions(users);
    let reads: u32 = all.iter().map(|s| s.pages + 1).sum();
    println!(
        "prescient demo: {users} users, each reading a profile then 3-8 feed pages, 60-140 ms apart \
         ({reads} reads, every key new); origin latency {} ms; the embedded store, starting empty;\n\
         prefetching with its defaults but 32 workers and 1000 requests/s.",
        args.origin_ms
    );
    let (origin_addr, origin) = start_origin(Duration::from_millis(args.origin_ms)).await?;
    let off = {
        let s = settings(origin_addr, false, "127.0.0.1:0", "");
        let server = Server::start(s).await?;
        let r = drive(&server, &all, args.concurrency, &origin, "prefetch off").await?;
        server.shutdown();
        server.wait(Duration::from_secs(2)).await;
        r
    };
    let (listen, admin) = match args.keep_running {
        true => (free_or_any("127.0.0.1:6380"), free_or_any("127.0.0.1:9380")),
        false => ("127.0.0.1:0".to_string(), String::new()),
    };
    let server = Server::start(settings(origin_addr, true, &listen, &admin)).await?;
    let on = drive(&server, &all, args.concurrency, &origin, "prefetch on").await?;
    let cell = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:>14.digits$}"),
        None => format!("{:>14}", "-"),
    };
    println!();
    println!("{:<22}{:>14}{:>14}", "", "prefetch off", "prefetch on");
    println!(
        "{:<22}{}{}",
        "hit ratio",
        cell(Some(off.hit_ratio), 3),
        cell(Some(on.hit_ratio), 3)
    );
    println!(
        "{:<22}{}{}",
        "mean latency (ms)",
        cell(Some(off.mean_ms), 1),
        cell(Some(on.mean_ms), 1)
    );
    println!(
        "{:<22}{}{}",
        "p99 latency (ms)",
        cell(Some(off.p99_ms), 1),
        cell(Some(on.p99_ms), 1)
    );
    println!(
        "{:<22}{:>14}{:>14}",
        "origin requests", off.origin, on.origin
    );
    println!(
        "{:<22}{}{}",
        "prefetch precision",
        cell(off.precision, 3),
        cell(on.precision, 3)
    );
    println!(
        "{:<22}{:>13.1}s{:>13.1}s",
        "run time",
        off.wall.as_secs_f64(),
        on.wall.as_secs_f64()
    );
    println!(
        "\nA hit is a read answered from the store (in under half the origin's latency); a miss waits for the origin. \
         Precision: prefetches read before they left the store, of those issued."
    );
    if args.keep_running {
        let a = server.addr;
        println!("\nprescient (prefetching on) is still running. Try:");
        println!("  redis-cli -p {} get feed:10000:page:2", a.port());
        println!("  redis-cli -p {} proxy prefetch stats", a.port());
        println!(
            "  redis-cli -p {} proxy predict feed:10000:page:2",
            a.port()
        );
        if let Some(ad) = server.admin_addr {
            println!("  curl -s http://{ad}/api/v1/status");
            println!("  prescient --admin http://{ad} status");
        }
        println!("Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    server.shutdown();
    server.wait(Duration::from_secs(2)).await;
    Ok(())
}

/// `addr` when it can be bound now, else any free port on loopback.
fn free_or_any(addr: &str) -> String {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr.to_string(),
        Err(_) => "127.0.0.1:0".to_string(),
    }
}
