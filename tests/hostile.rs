//! Hostile input and reply order: a NUL in a request line, ready replies held behind a
//! blocking command, a script that holds Redis, client ids that Redis does not know. Redis
//! itself is the reference: each input goes to a real redis-server directly and through
//! prescient (on Redis and on `memory://`), and the replies are compared byte for byte.

mod common;

use std::time::{Duration, Instant};

use common::{proxy_with, settings, Raw, Redis, DEADLINE};
use prescient::server::Server;

/// Polls `f` (which may borrow clients mutably) until it holds; panics after [`DEADLINE`].
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Redis directly, prescient in front of Redis, prescient on the embedded store.
struct Targets {
    redis: Redis,
    via_redis: Server,
    via_memory: Server,
}

impl Targets {
    async fn start() -> Targets {
        let redis = Redis::start().await;
        let via_redis = proxy_with(settings(&redis.url())).await;
        let via_memory = proxy_with(settings("memory://")).await;
        Targets {
            redis,
            via_redis,
            via_memory,
        }
    }

    fn ports(&self) -> [(&'static str, u16); 3] {
        [
            ("redis", self.redis.port),
            ("prescient->redis", self.via_redis.addr.port()),
            ("prescient->memory", self.via_memory.addr.port()),
        ]
    }
}

/// What a connection gets for `input`: every reply until the server closes it.
async fn replies_until_closed(port: u16, input: &[u8]) -> Vec<u8> {
    let mut c = Raw::connect(port).await;
    c.send_raw(input).await;
    let mut got = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(DEADLINE, c.try_read()).await {
        got.extend_from_slice(&r);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_hides_the_line_end_as_in_redis_and_touches_no_one_else() {
    let t = Targets::start().await;
    // Redis finds line ends with strchr, which stops at a NUL: the command is not complete
    // until the line limit passes, and then it is a protocol error. A PING after the NUL is
    // part of that hidden line, never answered on its own.
    let pad = vec![b'x'; 70 * 1024];
    let cases: [&[u8]; 4] = [
        b"a\x00b\r\nPING\r\n",
        b"\x00\r\nPING\r\n",
        b"*1\x00\r\n$4\r\nPING\r\n",
        b"*1\r\n$4\x00\r\nPING\r\n",
    ];
    for case in cases {
        let mut want: Option<Vec<u8>> = None;
        for (name, port) in t.ports() {
            // The hostile connection waits; everyone else is served meanwhile.
            let mut hostile = Raw::connect(port).await;
            hostile.send_raw(case).await;
            let mut other = Raw::connect(port).await;
            assert_eq!(other.text(&["PING"]).await, "+PONG\r\n", "{name}");
            assert_eq!(other.text(&["SET", "k", "v"]).await, "+OK\r\n", "{name}");
            drop(hostile);
            let mut input = case.to_vec();
            input.extend_from_slice(&pad);
            let got = replies_until_closed(port, &input).await;
            match &want {
                None => {
                    assert!(
                        !got.is_empty(),
                        "Redis answers {case:?} past the line limit"
                    );
                    want = Some(got);
                }
                Some(w) => assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(w),
                    "{name}: {case:?}"
                ),
            }
        }
    }
}

/// Pipelines `GET a`, a blocking command, and `tail`; the GET's reply must arrive while the
/// block still holds. The block waits 30 s and the read gives up after DEADLINE (10 s), so a
/// proxy that held the GET's reply until the block ended fails; a push then ends the block
/// with data, which it could not have if the block had timed out.
async fn ready_reply_leaves_before_the_block(port: u16, tail: &[&str], name: &str) {
    let mut c = Raw::connect(port).await;
    let mut other = Raw::connect(port).await;
    other.cmd(&["DEL", "q", "a"]).await;
    let mut pipeline = prescient::command::encode_request(&[
        bytes::Bytes::from_static(b"GET"),
        bytes::Bytes::from_static(b"a"),
    ])
    .to_vec();
    for args in [&["BLPOP", "q", "30"][..], tail] {
        let args: Vec<bytes::Bytes> = args
            .iter()
            .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        pipeline.extend_from_slice(&prescient::command::encode_request(&args));
    }
    c.send_raw(&pipeline).await;
    assert_eq!(&c.read().await[..], b"$-1\r\n", "{name}: GET's reply first");
    assert_eq!(other.text(&["RPUSH", "q", "v"]).await, ":1\r\n", "{name}");
    assert_eq!(
        &c.read().await[..],
        b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n",
        "{name}: the block ended with the push"
    );
    let _ = c.read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_reply_leaves_while_a_blocking_command_waits() {
    let t = Targets::start().await;
    for (name, port) in t.ports() {
        // The GET after the block goes back to the shared connection: a barrier.
        ready_reply_leaves_before_the_block(port, &["GET", "a"], name).await;
        // HELLO waits for every reply in flight.
        ready_reply_leaves_before_the_block(port, &["HELLO", "2"], name).await;
        // RESET too.
        ready_reply_leaves_before_the_block(port, &["RESET"], name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_seen_while_waiting_behind_a_blocking_command() {
    for upstream in ["redis", "memory"] {
        let redis = Redis::start().await;
        let url = if upstream == "redis" {
            redis.url()
        } else {
            "memory://".to_string()
        };
        let p = proxy_with(settings(&url)).await;
        let mut c = Raw::to(&p).await;
        // The last GET waits for the BLPOP to end before it may be sent. Shutdown comes
        // meanwhile: the BLPOP is still answered (it times out), the GET is never sent.
        c.send_raw(b"GET a\r\nBLPOP q 3\r\nGET a\r\n").await;
        assert_eq!(&c.read().await[..], b"$-1\r\n");
        p.shutdown();
        assert_eq!(
            &c.read().await[..],
            b"*-1\r\n",
            "{upstream}: BLPOP answered"
        );
        assert!(c.closed().await, "{upstream}: closed with the GET not sent");
        assert!(p.wait(DEADLINE).await, "{upstream}: shutdown completes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_holding_redis_does_not_fail_commands_on_other_connections() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"]).await;
    let mut s = settings(&redis.url());
    s.server.deny_commands.clear();
    s.upstream.timeout_ms = 100;
    // Two shared connections: consecutive clients get different ones.
    s.upstream.pool_size = 2;
    let p = proxy_with(s).await;
    let mut sleeper = Raw::to(&p).await;
    let mut other = Raw::to(&p).await;
    // The GET must reach Redis after the sleep began; a round in which it got there first
    // proves nothing and is run again.
    for _ in 0..5 {
        // DEBUG SLEEP holds Redis as KEYS on a huge keyspace does: nobody is answered.
        sleeper.send(&[b"DEBUG", b"SLEEP", b"1"]).await;
        until("Redis asleep", async || {
            let mut probe = Raw::connect(redis.port).await;
            probe.send(&[b"PING"]).await;
            tokio::time::timeout(Duration::from_millis(50), probe.try_read())
                .await
                .is_err()
        })
        .await;
        other.send(&[b"GET", b"k"]).await;
        assert_eq!(
            &other.read().await[..],
            b"$-1\r\n",
            "waited for, not failed"
        );
        assert_eq!(&sleeper.read().await[..], b"+OK\r\n");
        if p.shared.metrics.upstream_busy_waits.get() > 0 {
            break;
        }
    }
    assert_eq!(p.shared.metrics.upstream_errors("timeout"), 0);
    assert!(p.shared.metrics.upstream_busy_waits.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_script_can_be_killed_and_queued_commands_are_not_failed() {
    // Redis answers others BUSY (and reads SCRIPT KILL) once a script has run this long.
    let redis = Redis::start_with(&["--busy-reply-threshold", "50"]).await;
    let mut s = settings(&redis.url());
    s.server.deny_commands.clear();
    s.upstream.timeout_ms = 50;
    let p = proxy_with(s).await;
    let mut direct = redis.client().await;
    for (spin, kill, killed) in [
        (
            vec!["EVAL", "while true do end", "0"],
            "SCRIPT",
            "-ERR Script killed by user with SCRIPT KILL",
        ),
        (
            vec!["FCALL", "spin", "0"],
            "FUNCTION",
            // Redis 7.0 words it as for SCRIPT KILL.
            "-ERR Script killed by user",
        ),
    ] {
        let mut setup = Raw::to(&p).await;
        let lib =
            "#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)";
        setup.cmd(&["FUNCTION", "LOAD", "REPLACE", lib]).await;
        let mut runner = Raw::to(&p).await;
        let args: Vec<&[u8]> = spin.iter().map(|a| a.as_bytes()).collect();
        runner.send(&args).await;
        // The script runs: Redis answers a direct PING with BUSY.
        until("script running", async || {
            direct.text(&["PING"]).await.starts_with("-BUSY")
        })
        .await;
        // Another client's command queues behind the script on the shared connection.
        let mut queued = Raw::to(&p).await;
        queued.send(&[b"GET", b"k"]).await;
        let mut killer = Raw::to(&p).await;
        assert_eq!(killer.text(&[kill, "KILL"]).await, "+OK\r\n", "{kill} KILL");
        let got = String::from_utf8_lossy(&runner.read().await).into_owned();
        assert!(
            got.starts_with(killed),
            "{kill}: the script's client got {got}"
        );
        assert_eq!(&queued.read().await[..], b"$-1\r\n", "queued GET answered");
    }
    assert_eq!(p.shared.metrics.upstream_errors("timeout"), 0);
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
}

/// Reads `:<n>\r\n`.
fn int(reply: &[u8]) -> i64 {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|s| s.strip_prefix(':'))
        .and_then(|s| s.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_name_prescient_clients_and_reach_redis_translated() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.server.deny_commands.clear();
    let p = proxy_with(s).await;
    let mut ctl = Raw::to(&p).await;

    for (mode, want) in [
        (None, "*-1\r\n"),
        (
            Some("ERROR"),
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
        ),
    ] {
        let mut blocked = Raw::to(&p).await;
        let id = int(&blocked.cmd(&["CLIENT", "ID"]).await);
        blocked.send(&[b"BLPOP", b"l", b"0"]).await;
        let id_s = id.to_string();
        let mut args = vec!["CLIENT", "UNBLOCK", id_s.as_str()];
        args.extend(mode);
        // :0 until the BLPOP has reached Redis, then :1.
        until("CLIENT UNBLOCK unblocks", async || {
            ctl.text(&args).await == ":1\r\n"
        })
        .await;
        assert_eq!(String::from_utf8_lossy(&blocked.read().await), want);
    }
    assert_eq!(ctl.text(&["CLIENT", "UNBLOCK", "999999"]).await, ":0\r\n");
    assert_eq!(
        ctl.text(&["CLIENT", "UNBLOCK", "1", "NOW"]).await,
        "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"
    );

    // KILL acts on prescient's clients, by the ids and addresses CLIENT LIST shows.
    let mut victim = Raw::to(&p).await;
    let id = int(&victim.cmd(&["CLIENT", "ID"]).await);
    let id_s = id.to_string();
    assert_eq!(ctl.text(&["CLIENT", "KILL", "ID", &id_s]).await, ":1\r\n");
    assert!(victim.closed().await, "the killed client is disconnected");
    assert_eq!(ctl.text(&["CLIENT", "KILL", "ID", &id_s]).await, ":0\r\n");
    assert_eq!(
        ctl.text(&["CLIENT", "KILL", "127.0.0.1:1"]).await,
        "-ERR No such client\r\n"
    );
    assert_eq!(
        ctl.text(&["CLIENT", "KILL", "ID", "0"]).await,
        "-ERR client-id should be greater than 0\r\n"
    );

    // TRACKING's REDIRECT names a prescient client; invalidations reach it.
    let mut listener = Raw::to(&p).await;
    let lid = int(&listener.cmd(&["CLIENT", "ID"]).await).to_string();
    let sub = listener.text(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    assert!(sub.contains("subscribe"), "{sub}");
    let mut reader = Raw::to(&p).await;
    assert_eq!(
        reader
            .text(&["CLIENT", "TRACKING", "on", "REDIRECT", "999999"])
            .await,
        "-ERR The client ID you want redirect to does not exist\r\n"
    );
    until("tracking redirect accepted", async || {
        reader
            .text(&["CLIENT", "TRACKING", "on", "REDIRECT", &lid])
            .await
            == "+OK\r\n"
    })
    .await;
    reader.cmd(&["GET", "tracked"]).await;
    ctl.cmd(&["SET", "tracked", "1"]).await;
    let msg = String::from_utf8_lossy(&listener.read().await).into_owned();
    assert!(
        msg.contains("__redis__:invalidate") && msg.contains("tracked"),
        "invalidation reached the redirect client: {msg}"
    );

    // TYPE: the subscriber is pubsub, the others normal; no client is a replica.
    assert_eq!(
        ctl.text(&["CLIENT", "KILL", "TYPE", "replica"]).await,
        ":0\r\n"
    );
    assert_eq!(
        ctl.text(&["CLIENT", "KILL", "TYPE", "pubsub"]).await,
        ":1\r\n"
    );
    assert!(listener.closed().await, "the subscriber is killed");
    // The reader at least (clients dropped earlier may not be gone from the registry yet).
    let n = int(&ctl
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await);
    assert!(n >= 1, "{n}");
    assert!(reader.closed().await);
    assert_eq!(ctl.text(&["PING"]).await, "+PONG\r\n", "SKIPME spared ctl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_and_kill_answer_on_the_embedded_store() {
    let mut s = settings("memory://");
    s.server.deny_commands.clear();
    let q = proxy_with(s).await;
    let mut c = Raw::to(&q).await;
    // The store has no CLIENT UNBLOCK: an error, never a hang.
    assert!(c.text(&["CLIENT", "UNBLOCK", "1"]).await.starts_with('-'));
    let mut victim = Raw::to(&q).await;
    let id = int(&victim.cmd(&["CLIENT", "ID"]).await).to_string();
    assert_eq!(c.text(&["CLIENT", "KILL", "ID", &id]).await, ":1\r\n");
    assert!(victim.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sampling_command_cannot_exhaust_the_embedded_store() {
    let p = proxy_with(settings("memory://")).await;
    let mut c = Raw::to(&p).await;
    c.cmd(&["SADD", "s", "a"]).await;
    c.cmd(&["HSET", "h", "f", "v"]).await;
    // Redis would build two billion elements; the store refuses instead of being killed.
    for args in [
        &["SRANDMEMBER", "s", "-2000000000"][..],
        &["HRANDFIELD", "h", "-2000000000"][..],
        &["HRANDFIELD", "h", "-2000000000", "WITHVALUES"][..],
    ] {
        let got = c.text(args).await;
        assert!(
            got.starts_with("-ERR count is too large"),
            "{args:?}: {got}"
        );
    }
    assert_eq!(
        c.text(&["SRANDMEMBER", "s", "-3"]).await,
        "*3\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"
    );
    assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
}
