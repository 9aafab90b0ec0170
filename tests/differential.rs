//! The differential corpus (tests/corpus/*.txt): every sequence runs against Redis directly,
//! through prescient in front of a second Redis of the same version, and through prescient on
//! its embedded store (`memory://`); every reply must match Redis's byte for byte. Lines
//! marked `~` are Redis-only (the embedded store answers them differently by design, or does
//! not implement the command) and are skipped on the embedded store.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{proxy_with, Raw, Redis};
use prescient::protocol::reply::Proto;
use prescient::protocol::request::split_args;

#[derive(Debug, Clone)]
enum Step {
    Cmd {
        client: char,
        args: Vec<Bytes>,
        wait: bool,
    },
    Recv {
        client: char,
    },
    Resp3 {
        client: char,
    },
    Pipeline {
        client: char,
        count: usize,
        args: Vec<Bytes>,
    },
}

#[derive(Debug)]
struct Sequence {
    name: String,
    /// (line, redis only, step)
    steps: Vec<(usize, bool, Step)>,
}

fn parse_corpus(text: &str) -> Vec<Sequence> {
    let mut seqs: Vec<Sequence> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("===") {
            seqs.push(Sequence {
                name: name.trim().into(),
                steps: Vec::new(),
            });
            continue;
        }
        let seq = seqs.last_mut().expect("a step before the first === line");
        let (redis_only, line) = match line.strip_prefix('~') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        seq.steps.push((n + 1, redis_only, parse_step(line, n + 1)));
    }
    seqs
}

/// `$(text*N)` (one argument) stands for `text` repeated N times; `$script(name)` for the body
/// of the proxy's own script `name` (upstream/scripts.rs).
fn expand(arg: Bytes) -> Bytes {
    if let Some(name) = arg
        .strip_prefix(b"$script(")
        .and_then(|r| r.strip_suffix(b")"))
    {
        let s = prescient::upstream::scripts::ALL
            .iter()
            .find(|s| s.name.as_bytes() == name)
            .expect("$script(name) names one of upstream/scripts.rs");
        return Bytes::from_static(s.lua.as_bytes());
    }
    let Some(inner) = arg.strip_prefix(b"$(").and_then(|r| r.strip_suffix(b")")) else {
        return arg;
    };
    let Some(star) = inner.iter().rposition(|&b| b == b'*') else {
        return arg;
    };
    let n: usize = std::str::from_utf8(&inner[star + 1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("$(text*N) needs a count");
    Bytes::from(inner[..star].repeat(n))
}

fn parse_step(line: &str, n: usize) -> Step {
    let args = |s: &str| -> Vec<Bytes> {
        split_args(s.as_bytes())
            .unwrap_or_else(|| panic!("line {n}: bad quoting"))
            .into_iter()
            .map(expand)
            .collect()
    };
    if let Some(rest) = line.strip_prefix("@resp3") {
        let client = rest
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .chars()
            .next()
            .unwrap_or('a');
        return Step::Resp3 { client };
    }
    if let Some(rest) = line.strip_prefix("@pipeline") {
        let rest = rest.trim();
        let (count, cmd) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("line {n}: @pipeline N CMD"));
        return Step::Pipeline {
            client: 'a',
            count: count.parse().expect("count"),
            args: args(cmd),
        };
    }
    let (client, mode, rest) = if line.starts_with('[') && line.as_bytes().get(2) == Some(&b']') {
        let c = line.as_bytes()[1] as char;
        match line.as_bytes().get(3) {
            Some(b'>') => (c, '>', &line[4..]),
            Some(b'<') => (c, '<', &line[4..]),
            _ => (c, ' ', &line[3..]),
        }
    } else {
        ('a', ' ', line)
    };
    match mode {
        '<' => Step::Recv { client },
        '>' => Step::Cmd {
            client,
            args: args(rest),
            wait: false,
        },
        _ => Step::Cmd {
            client,
            args: args(rest),
            wait: true,
        },
    }
}

/// Runs one sequence against a server on `port`; returns (line, reply) for every reply read.
async fn run(seq: &Sequence, port: u16, embedded: bool) -> Vec<(usize, Bytes)> {
    let mut clients: BTreeMap<char, Raw> = BTreeMap::new();
    let mut out = Vec::new();
    // Blocking commands sent without reading, not yet answered: the next step waits until the
    // server reports that many blocked clients, or another client's push could overtake them.
    let mut blocking: BTreeMap<char, bool> = BTreeMap::new();
    let mut control: Option<Raw> = None;
    for (line, redis_only, step) in &seq.steps {
        if embedded && *redis_only {
            continue;
        }
        let c = match step {
            Step::Cmd { client, .. }
            | Step::Recv { client }
            | Step::Resp3 { client }
            | Step::Pipeline { client, .. } => *client,
        };
        if let std::collections::btree_map::Entry::Vacant(e) = clients.entry(c) {
            e.insert(Raw::connect(port).await);
        }
        let cl = clients.get_mut(&c).expect("client");
        match step {
            Step::Cmd { args, wait, .. } => {
                let a: Vec<&[u8]> = args.iter().map(|b| &b[..]).collect();
                cl.send(&a).await;
                if *wait {
                    out.push((*line, cl.read().await));
                } else if is_blocking(&args[0]) {
                    blocking.insert(c, true);
                    let want = blocking.values().filter(|b| **b).count();
                    let ctl = match control.as_mut() {
                        Some(ctl) => ctl,
                        None => control.insert(Raw::connect(port).await),
                    };
                    wait_blocked(ctl, want, *line).await;
                }
            }
            Step::Recv { .. } => {
                blocking.insert(c, false);
                out.push((*line, cl.read().await))
            }
            Step::Resp3 { .. } => {
                cl.send(&[b"HELLO", b"3"]).await;
                cl.proto = Proto::Resp3;
                cl.read().await;
            }
            Step::Pipeline { count, args, .. } => {
                let mut buf = Vec::new();
                for i in 0..*count {
                    let a: Vec<Bytes> = args
                        .iter()
                        .map(|x| {
                            Bytes::from(String::from_utf8_lossy(x).replace("{i}", &i.to_string()))
                        })
                        .collect();
                    buf.extend_from_slice(&prescient::command::encode_request(&a));
                }
                cl.send_raw(&buf).await;
                for _ in 0..*count {
                    out.push((*line, cl.read().await));
                }
            }
        }
    }
    out
}

fn is_blocking(name: &[u8]) -> bool {
    const BLOCKING: [&str; 8] = [
        "blpop",
        "brpop",
        "blmove",
        "brpoplpush",
        "blmpop",
        "bzpopmin",
        "bzpopmax",
        "bzmpop",
    ];
    BLOCKING
        .iter()
        .any(|b| b.as_bytes().eq_ignore_ascii_case(name))
}

/// Polls `INFO clients` until the server has `want` blocked clients.
async fn wait_blocked(ctl: &mut Raw, want: usize, line: usize) {
    let end = std::time::Instant::now() + common::DEADLINE;
    loop {
        let info = ctl.text(&["INFO", "clients"]).await;
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("line {line}: no blocked_clients in {info}"));
        if blocked >= want {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "line {line}: {blocked} blocked clients, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_matches_redis_byte_for_byte() {
    let direct = Redis::start().await;
    let behind = Redis::start().await;
    let behind_z = Redis::start().await;
    // Compression off, and on at a threshold low enough to compress most corpus values.
    let with = |url: &str, on: bool| {
        let mut s = common::settings(url);
        s.compression.enabled = on;
        s.compression.threshold_bytes = prescient::config::MIN_COMPRESSION_THRESHOLD;
        s
    };
    let p = proxy_with(with(&behind.url(), false)).await;
    let pz = proxy_with(with(&behind_z.url(), true)).await;
    let m = proxy_with(with("memory://", false)).await;
    let mz = proxy_with(with("memory://", true)).await;
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus"))
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut compared = [0usize; 4];
    // Replies compared per corpus file and target: a file that disappears, or stops running
    // on a target, fails the guard below.
    let mut per_file: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    for f in files {
        let file = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&f).expect("corpus file");
        for seq in parse_corpus(&text) {
            for port in [
                direct.port,
                behind.port,
                behind_z.port,
                m.addr.port(),
                mz.addr.port(),
            ] {
                Raw::connect(port).await.cmd(&["FLUSHALL"]).await;
            }
            let want = run(&seq, direct.port, false).await;
            let redis_only: Vec<usize> = seq.steps.iter().filter(|s| s.1).map(|s| s.0).collect();
            let want_embedded: Vec<_> = want
                .iter()
                .filter(|(l, _)| !redis_only.contains(l))
                .cloned()
                .collect();
            let targets = [
                (
                    "prescient->redis",
                    run(&seq, p.addr.port(), false).await,
                    &want,
                ),
                (
                    "prescient memory://",
                    run(&seq, m.addr.port(), true).await,
                    &want_embedded,
                ),
                (
                    "prescient->redis, compressing",
                    run(&seq, pz.addr.port(), false).await,
                    &want,
                ),
                (
                    "prescient memory://, compressing",
                    run(&seq, mz.addr.port(), true).await,
                    &want_embedded,
                ),
            ];
            for (i, (target, got, want)) in targets.iter().enumerate() {
                assert_eq!(
                    want.len(),
                    got.len(),
                    "{}: {target}: reply counts differ",
                    seq.name
                );
                for ((line, w), (_, g)) in want.iter().zip(got) {
                    compared[i] += 1;
                    per_file.entry(file.clone()).or_default()[i] += 1;
                    if w != g {
                        failures.push(format!(
                            "{file}:{line} [{target}] ({}):\n  redis:     {}\n  prescient: {}",
                            seq.name,
                            show(w),
                            show(g)
                        ));
                    }
                }
            }
        }
    }
    println!(
        "compared replies: {} through the proxy to Redis, {} on the embedded store, {} and {} \
         with compression",
        compared[0], compared[1], compared[2], compared[3]
    );
    assert!(
        compared.iter().all(|&n| n > 3000),
        "the corpus ran ({compared:?} replies)"
    );
    for name in ["core.txt", "edges.txt", "compression.txt"] {
        let n = per_file.get(name).copied().unwrap_or_default();
        assert!(
            n.iter().all(|&k| k > 100),
            "{name} ran on every target ({n:?} replies; per file: {per_file:?})"
        );
    }
    // The compressing targets did compress (and decode) values.
    for server in [&pz, &mz] {
        let stats = Raw::to(server).await.text(&["PROXY", "STATS"]).await;
        let count = |k: &str| -> u64 {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        assert!(
            count("compression_values_compressed:") > 100 && count("compression_decoded:") > 100,
            "{stats}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} replies differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Replies of megabytes and hundreds of thousands of elements arrive at the proxy over many
/// reads (a shared upstream connection reads 128 KiB at a time): each must reach its client
/// whole and unchanged, and the reply after it must start where it ends, in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_arrive_whole_and_framed() {
    let redis = Redis::start().await;
    let p = proxy_with(common::settings(&redis.url())).await;
    let mut setup = Raw::connect(redis.port).await;
    for chunk in 0..30 {
        let mut list: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"big:list".to_vec()];
        let mut hash: Vec<Vec<u8>> = vec![b"HSET".to_vec(), b"big:hash".to_vec()];
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            list.push(format!("item:{i}").into_bytes());
            if i < 100_000 {
                hash.push(format!("field:{i}").into_bytes());
                hash.push(vec![b'v'; i % 50]);
            }
        }
        for args in [list, hash].iter().filter(|a| a.len() > 2) {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            setup.send(&args).await;
            let r = setup.read().await;
            assert!(r.starts_with(b":"), "{}", show(&r));
        }
    }
    for resp3 in [false, true] {
        let mut replies = Vec::new();
        for port in [redis.port, p.addr.port()] {
            let mut c = Raw::connect(port).await;
            if resp3 {
                c.proto = Proto::Resp3;
                c.cmd(&["HELLO", "3"]).await;
            }
            // One write: the PING's reply follows the large ones in the same reads.
            let mut batch = Vec::new();
            for args in [
                &["LRANGE", "big:list", "0", "-1"][..],
                &["HGETALL", "big:hash"],
                &["PING"],
            ] {
                let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(*a)).collect();
                batch.extend_from_slice(&prescient::command::encode_request(&args));
            }
            c.send_raw(&batch).await;
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(c.read().await);
            }
            replies.push(got);
        }
        let (direct, proxied) = (&replies[0], &replies[1]);
        assert!(direct[0].len() > 4_000_000, "{}", direct[0].len());
        assert!(direct[0].starts_with(b"*300000\r\n"));
        let map = if resp3 { "%100000\r\n" } else { "*200000\r\n" };
        assert!(
            direct[1].starts_with(map.as_bytes()),
            "{}",
            show(&direct[1][..20])
        );
        assert_eq!(&direct[2][..], b"+PONG\r\n");
        for (i, (d, g)) in direct.iter().zip(proxied).enumerate() {
            assert!(
                d == g,
                "resp3 {resp3}, reply {i}: {} bytes from Redis, {} through prescient",
                d.len(),
                g.len()
            );
        }
    }
}
