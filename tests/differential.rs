//! The differential corpus (tests/corpus/*.txt): every sequence runs against Redis directly and
//! through prescient (in front of a second Redis of the same version), and every reply must
//! match byte for byte.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{proxy, Raw, Redis};
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
    steps: Vec<(usize, Step)>,
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
        seq.steps.push((n + 1, parse_step(line, n + 1)));
    }
    seqs
}

fn parse_step(line: &str, n: usize) -> Step {
    let args =
        |s: &str| split_args(s.as_bytes()).unwrap_or_else(|| panic!("line {n}: bad quoting"));
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
async fn run(seq: &Sequence, port: u16) -> Vec<(usize, Bytes)> {
    let mut clients: BTreeMap<char, Raw> = BTreeMap::new();
    let mut out = Vec::new();
    for (line, step) in &seq.steps {
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
                }
            }
            Step::Recv { .. } => out.push((*line, cl.read().await)),
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

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_matches_redis_byte_for_byte() {
    let direct = Redis::start().await;
    let behind = Redis::start().await;
    let p = proxy(&behind.url()).await;
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus"))
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut compared = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).expect("corpus file");
        for seq in parse_corpus(&text) {
            for r in [&direct, &behind] {
                r.client().await.cmd(&["FLUSHALL"]).await;
            }
            let want = run(&seq, direct.port).await;
            let got = run(&seq, p.addr.port()).await;
            assert_eq!(want.len(), got.len(), "{}: reply counts differ", seq.name);
            for ((line, w), (_, g)) in want.iter().zip(&got) {
                compared += 1;
                if w != g {
                    failures.push(format!(
                        "{} (line {line}):\n  redis:     {}\n  prescient: {}",
                        f.file_name().unwrap_or_default().to_string_lossy(),
                        show(w),
                        show(g)
                    ));
                }
            }
        }
    }
    println!("compared {compared} replies");
    assert!(compared > 3000, "the corpus ran ({compared} replies)");
    assert!(
        failures.is_empty(),
        "{} replies differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
