//! Transparent compression against a real Redis: what Redis holds, corrupt and bomb values
//! planted behind the proxy's back, concurrent APPENDs, WATCH, PROXY KEYINFO and STATS.

mod common;

use bytes::Bytes;
use common::{proxy_with, settings, Raw, Redis};
use prescient::compression::envelope::{self, Codec};
use prescient::server::Server;

/// Compression with zlib, which shrinks even hex digits (lz4, the default, does not).
async fn compressing(url: &str) -> Server {
    let mut s = settings(url);
    s.compression.threshold_bytes = 64;
    s.compression.codec = prescient::config::CodecName::Zlib;
    s.compression.level = 1;
    proxy_with(s).await
}

fn json(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\",\"tags\":[\"a\",\"b\"]}},"))
        .collect()
}

/// Sends a command with binary arguments and returns the reply's bytes.
async fn bin(c: &mut Raw, args: &[&[u8]]) -> Bytes {
    c.send(args).await;
    c.read().await
}

fn bulk(v: &[u8]) -> Vec<u8> {
    let mut o = format!("${}\r\n", v.len()).into_bytes();
    o.extend_from_slice(v);
    o.extend_from_slice(b"\r\n");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_envelopes_and_clients_read_their_bytes() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    let mut direct = redis.client().await;
    let doc = json(40);
    assert_eq!(c.text(&["SET", "doc", &doc]).await, "+OK\r\n");
    let stored = direct.cmd(&["GET", "doc"]).await;
    let stored = &stored[stored.iter().position(|&b| b == b'\n').unwrap() + 1..stored.len() - 2];
    let h = envelope::header(stored)
        .unwrap()
        .expect("Redis holds an envelope");
    assert_eq!((h.codec, h.original_len), (Codec::Zlib, doc.len()));
    assert!(
        stored.len() * 4 < doc.len(),
        "stored {} bytes",
        stored.len()
    );
    assert_eq!(&c.cmd(&["GET", "doc"]).await[..], &bulk(doc.as_bytes())[..]);

    // Values written straight to Redis (no envelope) come back as they are.
    direct.cmd(&["SET", "plain", &doc]).await;
    assert_eq!(
        &c.cmd(&["GET", "plain"]).await[..],
        &bulk(doc.as_bytes())[..]
    );
    assert_eq!(
        c.text(&["STRLEN", "plain"]).await,
        format!(":{}\r\n", doc.len())
    );

    // PROXY KEYINFO and PROXY STATS say what happened.
    let info = c.text(&["PROXY", "KEYINFO", "doc"]).await;
    for want in [
        "enveloped:yes",
        "codec:zlib",
        &format!("original_bytes:{}", doc.len()),
        &format!("stored_bytes:{}", stored.len()),
        "integrity:ok",
    ] {
        assert!(info.contains(want), "{want} in {info}");
    }
    assert!(c
        .text(&["PROXY", "KEYINFO", "plain"])
        .await
        .contains("enveloped:no"));
    assert!(c
        .text(&["PROXY", "KEYINFO", "nosuch"])
        .await
        .starts_with("-ERR no such key"));
    let stats = c.text(&["PROXY", "STATS"]).await;
    assert!(
        stats.contains("compression_values_compressed:1\r\n"),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_values_planted_in_redis_get_an_error_naming_the_key() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    let mut direct = redis.client().await;
    let doc = json(20);
    let good = envelope::compress(Codec::Zlib, 1, doc.as_bytes()).unwrap();
    let mut bad_crc = good.clone();
    bad_crc[9] ^= 0x55;
    let truncated = good[..good.len() / 2].to_vec();
    let mut unknown_codec = good.clone();
    unknown_codec[4] = 9;
    // A bomb: 65 MiB of zeros, a few hundred KB stored, over the 64 MiB inflate limit.
    let bomb = envelope::compress(Codec::Zlib, 1, &vec![0u8; 65 << 20]).unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("crc", &bad_crc, "checksum mismatch"),
        ("cut", &truncated, "does not decompress"),
        ("codec", &unknown_codec, "unknown codec id 9"),
        ("bomb", &bomb, "over compression.max_decompressed_bytes"),
    ];
    for (key, value, why) in cases {
        bin(&mut direct, &[b"SET", key.as_bytes(), value]).await;
        bin(&mut direct, &[b"HSET", b"h", key.as_bytes(), value]).await;
        bin(&mut direct, &[b"RPUSH", b"l", value]).await;
        let want = format!("-ERR prescient cannot decode the stored value of key '{key}'");
        for cmd in [&["GET", key][..], &["STRLEN", key], &["APPEND", key, "x"]] {
            let got = c.text(cmd).await;
            assert!(
                got.starts_with(&want) && got.contains(why),
                "{cmd:?}: {got}"
            );
        }
        let got = c.text(&["MGET", "nosuch", key]).await;
        assert!(got.starts_with(&want), "MGET: {got}");
        let got = c.text(&["HGET", "h", key]).await;
        assert!(
            got.starts_with("-ERR prescient") && got.contains(why),
            "{got}"
        );
        let got = c.text(&["LRANGE", "l", "0", "-1"]).await;
        assert!(got.starts_with("-ERR prescient cannot decode the stored value of key 'l'"));
        bin(&mut direct, &[b"DEL", b"l"]).await;
    }
    // The bad values are still there, unchanged: nothing was written over them.
    assert_eq!(
        &direct.cmd(&["STRLEN", "crc"]).await[..],
        format!(":{}\r\n", bad_crc.len()).as_bytes()
    );
    // Counted (a missing line fails too).
    assert!(stat(&mut c, "compression_corrupt").await >= 4);
}

/// Several clients APPEND to one compressed key at once: every append lands exactly once.
async fn concurrent_appends(p: &Server) {
    let mut c = Raw::to(p).await;
    let base = json(20);
    c.text(&["SET", "log", &base]).await;
    let mut tasks = Vec::new();
    for w in 0..6 {
        let mut c = Raw::to(p).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = c.text(&["APPEND", "log", &format!("<{w}:{i}>")]).await;
                assert!(r.starts_with(':'), "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = c.cmd(&["GET", "log"]).await;
    let text = String::from_utf8_lossy(&got);
    for w in 0..6 {
        for i in 0..25 {
            assert_eq!(text.matches(&format!("<{w}:{i}>")).count(), 1, "<{w}:{i}>");
        }
    }
    assert!(text.contains(&base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_to_a_compressed_key_lose_nothing_on_redis() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    concurrent_appends(&p).await;
    // Re-encoded after the appends: stored compressed again.
    let mut c = Raw::to(&p).await;
    assert!(c
        .text(&["PROXY", "KEYINFO", "log"])
        .await
        .contains("enveloped:yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_to_a_compressed_key_lose_nothing_on_memory() {
    let p = compressing("memory://").await;
    concurrent_appends(&p).await;
    // Stored compressed, as on Redis.
    let mut c = Raw::to(&p).await;
    assert!(c
        .text(&["PROXY", "KEYINFO", "log"])
        .await
        .contains("enveloped:yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_level_command_in_multi_voids_a_watch_once_and_the_retry_succeeds() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    let doc = json(10);
    c.text(&["SET", "w", &doc]).await;
    let mut execs = Vec::new();
    for _attempt in 0..2 {
        c.text(&["WATCH", "w"]).await;
        c.text(&["GET", "w"]).await;
        c.text(&["MULTI"]).await;
        assert_eq!(c.text(&["APPEND", "w", "!"]).await, "+QUEUED\r\n");
        execs.push(c.text(&["EXEC"]).await);
    }
    // The first is voided by prescient's own rewrite of the key; the retry commits (the key
    // is stored uncompressed by then, so it needs no rewrite).
    let appended = format!(":{}\r\n", doc.len() + 1);
    assert_eq!(execs, ["*-1\r\n".to_string(), format!("*1\r\n{appended}")]);
    assert_eq!(
        &c.cmd(&["GET", "w"]).await[..],
        &bulk(format!("{doc}!").as_bytes())[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_level_command_on_another_database_leaves_no_connection_on_it() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    let mut a = Raw::to(&p).await;
    let doc = json(10);
    a.text(&["SELECT", "3"]).await;
    a.text(&["SET", "big", &doc]).await;
    assert_eq!(
        a.text(&["STRLEN", "big"]).await,
        format!(":{}\r\n", doc.len())
    );
    // The next transaction (on a spare dedicated connection) must run in database 0.
    let mut b = Raw::to(&p).await;
    b.text(&["MULTI"]).await;
    b.text(&["SET", "k", "v"]).await;
    b.text(&["EXEC"]).await;
    assert_eq!(b.text(&["GET", "k"]).await, "$1\r\nv\r\n");
}

/// Compressing a value of megabytes takes the proxy longer than the upstream timeout (in a
/// debug build, several times): that time is the proxy's, not the upstream's, so the SET
/// succeeds and the shared connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressing_a_large_value_does_not_count_against_the_upstream_timeout() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.upstream.timeout_ms = 100;
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    let value = json(150_000);
    assert!(value.len() > 6_000_000);
    let r = bin(&mut c, &[b"SET", b"big", value.as_bytes()]).await;
    assert_eq!(&r[..], b"+OK\r\n", "{}", String::from_utf8_lossy(&r));
    assert_eq!(
        bin(&mut c, &[b"GET", b"big"]).await,
        Bytes::from(bulk(value.as_bytes()))
    );
    // Stored compressed.
    let stored = stored_len(&redis, b"big").await;
    assert!(stored < value.len() / 4, "{stored}");
    assert_eq!(p.shared.metrics.upstream_errors("timeout"), 0);
}

/// The length of `key`'s value as Redis holds it (STRLEN straight to Redis).
async fn stored_len(redis: &Redis, key: &[u8]) -> usize {
    let mut direct = Raw::connect(redis.port).await;
    let r = bin(&mut direct, &[b"STRLEN", key]).await;
    String::from_utf8_lossy(&r[1..]).trim().parse().unwrap()
}

/// Hex digits of a pseudo-random sequence: they compress to about half.
fn noisy(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

/// Replies of 64 KiB or more (as stored) are decoded on another thread, off the event
/// loop: pipelined with small replies, transactions (an EXEC's shapes are taken as it is
/// delivered) and a SUBSCRIBE (whose tunnel starts only once every reply owed has gone
/// out), each still arrives whole and in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_decoded_off_the_event_loop_arrive_whole_and_in_order() {
    let redis = Redis::start().await;
    let p = compressing(&redis.url()).await;
    let (a, b) = large_values(&p).await;
    // Stored compressed, and still large enough to be decoded on another thread.
    let stored = stored_len(&redis, b"a").await;
    assert!(stored < a.len() && stored > 64 << 10, "{stored}");
    pipelined_large_replies(&p, &a, &b).await;
    assert_decoded_off_loop(&p).await;
}

/// The large replies of `pipelined_large_replies` were decoded off the event loop: GET a, GET
/// b, MGET, EXEC and the last GET a (the incompressible one is stored raw: no thread).
async fn assert_decoded_off_loop(p: &Server) {
    let mut c = Raw::to(p).await;
    assert_eq!(stat(&mut c, "compression_decoded_off_loop").await, 5);
}

/// The same on the embedded store, where the first GET's reply is written on the spot
/// (nothing is queued before it) unless it is large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_from_the_embedded_store_arrive_whole_and_in_order() {
    let p = compressing("memory://").await;
    let (a, b) = large_values(&p).await;
    let mut c = Raw::to(&p).await;
    let info = c.text(&["PROXY", "KEYINFO", "a"]).await;
    assert!(info.contains("enveloped:yes"), "{info}");
    pipelined_large_replies(&p, &a, &b).await;
    assert_decoded_off_loop(&p).await;
}

/// SETs `a` and `b` (noisy, 400 and 600 KB: they compress to about half), `small`, and
/// `raw`, 200 KB that do not compress (stored as they are: no thread decodes them).
async fn large_values(p: &Server) -> (String, String) {
    let mut c = Raw::to(p).await;
    let (a, b) = (noisy(400_000, 7), noisy(600_000, 11));
    for (k, v) in [("a", &a), ("b", &b), ("small", &"x".repeat(100))] {
        assert_eq!(
            &bin(&mut c, &[b"SET", k.as_bytes(), v.as_bytes()]).await[..],
            b"+OK\r\n"
        );
    }
    assert_eq!(
        &bin(&mut c, &[b"SET", b"raw", &incompressible()]).await[..],
        b"+OK\r\n"
    );
    (a, b)
}

/// 200 KB of pseudo-random bytes.
fn incompressible() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

async fn pipelined_large_replies(p: &Server, a: &str, b: &str) {
    let mut c = Raw::to(p).await;
    let small = bulk("x".repeat(100).as_bytes());
    let mut mget = b"*3\r\n".to_vec();
    for v in [a.as_bytes(), b"x".repeat(100).as_slice(), b.as_bytes()] {
        mget.extend_from_slice(&bulk(v));
    }
    let mut exec = b"*2\r\n".to_vec();
    exec.extend_from_slice(&bulk(a.as_bytes()));
    exec.extend_from_slice(&small);
    let ok = || b"+OK\r\n".to_vec();
    let queued = || b"+QUEUED\r\n".to_vec();
    let sent: [(&[&[u8]], Vec<u8>); 15] = [
        (&[b"GET", b"a"], bulk(a.as_bytes())),
        (&[b"GET", b"small"], small.clone()),
        (&[b"GET", b"raw"], bulk(&incompressible())),
        (&[b"GET", b"b"], bulk(b.as_bytes())),
        (&[b"PING"], b"+PONG\r\n".to_vec()),
        (&[b"MGET", b"a", b"small", b"b"], mget),
        // A large EXEC reply, then a transaction after it, whose shapes are its own.
        (&[b"MULTI"], ok()),
        (&[b"GET", b"a"], queued()),
        (&[b"GET", b"small"], queued()),
        (&[b"EXEC"], exec),
        (&[b"MULTI"], ok()),
        (&[b"GET", b"small"], queued()),
        (&[b"EXEC"], [b"*1\r\n".as_slice(), &small].concat()),
        (&[b"GET", b"a"], bulk(a.as_bytes())),
        (
            &[b"SUBSCRIBE", b"ch"],
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".to_vec(),
        ),
    ];
    for (args, _) in &sent {
        c.send(args).await;
    }
    for (i, (args, expected)) in sent.iter().enumerate() {
        let got = c.read().await;
        assert!(
            got[..] == expected[..],
            "reply {i} ({}): {} bytes, starting {:?}",
            String::from_utf8_lossy(args[0]),
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
    }
    // The tunnel works: a message published now arrives.
    let mut other = Raw::to(p).await;
    assert_eq!(
        &bin(&mut other, &[b"PUBLISH", b"ch", b"hi"]).await[..],
        b":1\r\n"
    );
    assert_eq!(
        &c.read().await[..],
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    );
}

/// An order record of about 1-2 KB, dense in numbers and ids: where dictionaries gain most.
fn order(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let statuses = ["pending", "paid", "shipped", "delivered", "cancelled"];
    let lines: Vec<String> = (0..6 + next(10))
        .map(|_| {
            let (q, p) = (1 + next(5), next(40000));
            format!(
                "{{\"sku\":\"SKU-{:06}\",\"variant_id\":{},\"qty\":{q},\"unit_price\":{}.{:02},\"total\":{}}}",
                next(1_000_000),
                next(10_000_000),
                p / 100,
                p % 100,
                q * p
            )
        })
        .collect();
    format!(
        "{{\"order_id\":{},\"customer_id\":{},\"status\":\"{}\",\"created_at\":{},\"lines\":[{}],\"shipping\":{{\"carrier\":\"ups\",\"tracking\":\"1Z{:012X}\"}}}}",
        1_000_000_000 + i,
        next(10_000_000),
        statuses[next(5) as usize],
        1_780_000_000 + next(10_000_000),
        lines.join(","),
        next(1 << 48)
    )
}

async fn stat(c: &mut Raw, name: &str) -> u64 {
    let s = c.text(&["PROXY", "STATS"]).await;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in PROXY STATS: {s}"))
}

fn dictionary_settings(url: &str) -> prescient::config::Settings {
    let mut s = settings(url);
    s.compression.threshold_bytes = 64;
    s.compression.dictionary_samples = 20;
    s.compression.dictionary_check_secs = 1;
    s
}

/// Dictionaries on a Redis upstream: trained from the first values of a template, stored in
/// Redis, used for the template's later values (which then take far less room), and read by
/// other prescients that never saw them: a GET, an MGET and a byte-level command (APPEND,
/// run as a read-modify-write) through prescients started before the dictionary existed. A
/// dictionary deleted from Redis is written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionaries_are_learned_stored_in_redis_and_read_by_every_prescient() {
    use std::time::Duration;
    let redis = Redis::start().await;
    let a = proxy_with(dictionary_settings(&redis.url())).await;
    // Started before any dictionary exists: they learn of it only when they read a value.
    let b = proxy_with(dictionary_settings(&redis.url())).await;
    let c = proxy_with(dictionary_settings(&redis.url())).await;
    let mut ca = Raw::to(&a).await;
    let mut direct = redis.client().await;
    for i in 0..20 {
        assert_eq!(
            ca.text(&["SET", &format!("order:{i}"), &order(i)]).await,
            "+OK\r\n"
        );
    }
    common::eventually(Duration::from_secs(20), "a dictionary trained", || {
        let ca = Raw::to(&a);
        async move { (stat(&mut ca.await, "dictionaries_trained").await >= 1).then_some(()) }
    })
    .await;
    assert_eq!(direct.text(&["HLEN", "prescient:dicts"]).await, ":1\r\n");
    for i in 20..60 {
        assert_eq!(
            ca.text(&["SET", &format!("order:{i}"), &order(i)]).await,
            "+OK\r\n"
        );
    }
    let info = ca.text(&["PROXY", "KEYINFO", "order:59"]).await;
    assert!(
        info.contains("codec:zstd+dictionary") && info.contains("dictionary:"),
        "{info}"
    );
    // Far smaller than the first values, stored with the plain codec (lz4).
    let (plain, with_dict): (usize, usize) = {
        let mut p = 0;
        let mut d = 0;
        for i in 0..10 {
            p += stored_len(&redis, format!("order:{i}").as_bytes()).await;
            d += stored_len(&redis, format!("order:{}", 50 + i).as_bytes()).await;
        }
        (p, d)
    };
    assert!(
        with_dict * 10 < plain * 7,
        "plain {plain}, with the dictionary {with_dict}"
    );

    let mut cb = Raw::to(&b).await;
    assert_eq!(stat(&mut cb, "dictionaries_known").await, 0);
    assert_eq!(
        &cb.cmd(&["GET", "order:55"]).await[..],
        &bulk(order(55).as_bytes())[..]
    );
    let mut mget = b"*40\r\n".to_vec();
    let mut args = vec!["MGET".to_string()];
    for i in 20..60 {
        args.push(format!("order:{i}"));
        mget.extend_from_slice(&bulk(order(i).as_bytes()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(&cb.cmd(&args).await[..], &mget[..]);
    assert_eq!(stat(&mut cb, "dictionaries_fetched").await, 1);

    let mut cc = Raw::to(&c).await;
    let appended = format!("{}tail", order(57));
    assert_eq!(
        cc.text(&["APPEND", "order:57", "tail"]).await,
        format!(":{}\r\n", appended.len())
    );
    assert_eq!(
        &cc.cmd(&["GET", "order:57"]).await[..],
        &bulk(appended.as_bytes())[..]
    );
    assert_eq!(
        &ca.cmd(&["GET", "order:57"]).await[..],
        &bulk(appended.as_bytes())[..]
    );

    // Lost from Redis (an eviction, a DEL): written back by the prescients that know it.
    assert_eq!(direct.text(&["DEL", "prescient:dicts"]).await, ":1\r\n");
    common::eventually(
        Duration::from_secs(20),
        "the dictionary written back",
        || {
            let direct = redis.client();
            async move {
                (direct.await.text(&["HLEN", "prescient:dicts"]).await == ":1\r\n").then_some(())
            }
        },
    )
    .await;
}

/// On the embedded store the dictionary values are read by every command, byte-level ones
/// and transactions included, with Redis's replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_values_on_the_embedded_store_read_back_through_every_command() {
    use std::time::Duration;
    let p = proxy_with(dictionary_settings("memory://")).await;
    let mut c = Raw::to(&p).await;
    for i in 0..20 {
        assert_eq!(
            c.text(&["SET", &format!("order:{i}"), &order(i)]).await,
            "+OK\r\n"
        );
    }
    common::eventually(Duration::from_secs(20), "a dictionary trained", || {
        let c = Raw::to(&p);
        async move { (stat(&mut c.await, "dictionaries_trained").await >= 1).then_some(()) }
    })
    .await;
    assert_eq!(c.text(&["HLEN", "prescient:dicts"]).await, ":1\r\n");
    let v = order(30);
    assert_eq!(c.text(&["SET", "order:30", &v]).await, "+OK\r\n");
    let info = c.text(&["PROXY", "KEYINFO", "order:30"]).await;
    assert!(info.contains("codec:zstd+dictionary"), "{info}");
    assert_eq!(
        &c.cmd(&["GET", "order:30"]).await[..],
        &bulk(v.as_bytes())[..]
    );
    assert_eq!(
        c.text(&["STRLEN", "order:30"]).await,
        format!(":{}\r\n", v.len())
    );
    assert_eq!(
        &c.cmd(&["GETRANGE", "order:30", "0", "11"]).await[..],
        &bulk(&v.as_bytes()[..12])[..]
    );
    assert_eq!(
        c.text(&["APPEND", "order:30", "!"]).await,
        format!(":{}\r\n", v.len() + 1)
    );
    c.send(&[b"MULTI"]).await;
    c.send(&[b"GET", b"order:30"]).await;
    c.send(&[b"EXEC"]).await;
    assert_eq!(&c.read().await[..], b"+OK\r\n");
    assert_eq!(&c.read().await[..], b"+QUEUED\r\n");
    let exec = c.read().await;
    let want = [b"*1\r\n".as_slice(), &bulk(format!("{v}!").as_bytes())].concat();
    assert_eq!(&exec[..], &want[..]);
}
