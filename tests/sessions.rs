//! Connection state through the proxy: authentication, HELLO/RESP3, CLIENT subcommands,
//! dedicated connections (SELECT, transactions, tracking pushes), tunnels (MONITOR, RESET out
//! of pub/sub), upstream credentials, and a real client library.

mod common;

use common::{proxy, proxy_with, settings, Raw, Redis};
use prescient::config::User;
use prescient::protocol::reply::Proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_users() {
    let redis = Redis::start().await;
    let mut s = settings(&redis.url());
    s.auth.password = "sesame".into();
    s.auth.users = vec![User {
        name: "reader".into(),
        password: "r".into(),
        commands: vec!["+@read".to_string(), "+ping".to_string()]
            .try_into()
            .expect("valid rules"),
    }];
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    assert_eq!(
        c.text(&["GET", "a"]).await,
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        c.text(&["AUTH", "wrong"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.text(&["AUTH", "sesame"]).await, "+OK\r\n");
    assert_eq!(c.text(&["SET", "a", "1"]).await, "+OK\r\n");
    let mut r = Raw::to(&p).await;
    assert_eq!(r.text(&["AUTH", "reader", "r"]).await, "+OK\r\n");
    assert_eq!(r.text(&["GET", "a"]).await, "$1\r\n1\r\n");
    assert_eq!(
        r.text(&["SET", "a", "2"]).await,
        "-NOPERM User reader has no permissions to run the 'set' command\r\n"
    );
    let mut h = Raw::to(&p).await;
    h.send(&[
        b"HELLO", b"3", b"AUTH", b"default", b"sesame", b"SETNAME", b"app",
    ])
    .await;
    h.proto = Proto::Resp3;
    let hello = String::from_utf8_lossy(&h.read().await).into_owned();
    assert!(
        hello.starts_with("%7\r\n") && hello.contains("proto\r\n:3"),
        "{hello}"
    );
    assert_eq!(h.text(&["CLIENT", "GETNAME"]).await, "$3\r\napp\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credentials_are_separate_from_clients() {
    let redis = Redis::start_with(&["--requirepass", "upstream-secret"]).await;
    let mut s = settings(&format!(
        "redis://:upstream-secret@127.0.0.1:{}",
        redis.port
    ));
    s.auth.password = "client-secret".into();
    let p = proxy_with(s).await;
    let mut c = Raw::to(&p).await;
    assert_eq!(
        c.text(&["AUTH", "upstream-secret"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.text(&["AUTH", "client-secret"]).await, "+OK\r\n");
    assert_eq!(c.text(&["SET", "k", "v"]).await, "+OK\r\n");
    assert_eq!(c.text(&["SELECT", "2"]).await, "+OK\r\n");
    assert_eq!(c.text(&["BLPOP", "none", "0.01"]).await, "*-1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommands_answer_for_the_proxy_client() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    let id = c.text(&["CLIENT", "ID"]).await;
    assert!(id.starts_with(':'));
    assert_eq!(c.text(&["CLIENT", "GETNAME"]).await, "$-1\r\n");
    assert_eq!(c.text(&["CLIENT", "SETNAME", "worker-1"]).await, "+OK\r\n");
    assert_eq!(
        c.text(&["CLIENT", "SETNAME", "bad name"]).await,
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    let info = c.text(&["CLIENT", "INFO"]).await;
    assert!(
        info.contains(&format!("id={} ", &id[1..id.len() - 2])) && info.contains("name=worker-1"),
        "{info}"
    );
    assert!(c.text(&["CLIENT", "LIST"]).await.contains("name=worker-1"));
    // CLIENT REPLY OFF: commands run, replies are not sent, until ON.
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]).await;
    c.send(&[b"SET", b"quiet", b"1"]).await;
    c.send(&[b"CLIENT", b"REPLY", b"ON"]).await;
    assert_eq!(&c.read().await[..], b"+OK\r\n");
    assert_eq!(c.text(&["GET", "quiet"]).await, "$1\r\n1\r\n");
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]).await;
    c.send(&[b"SET", b"skipped", b"1"]).await;
    assert_eq!(c.text(&["GET", "skipped"]).await, "$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_connections_are_taken_and_given_back() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let m = p.shared.metrics.clone();
    let mut c = Raw::to(&p).await;
    assert_eq!(c.text(&["SELECT", "5"]).await, "+OK\r\n");
    assert_eq!(m.pinned_clients.get(), 1);
    assert_eq!(c.text(&["SET", "in5", "x"]).await, "+OK\r\n");
    assert_eq!(c.text(&["SELECT", "0"]).await, "+OK\r\n");
    assert_eq!(c.text(&["GET", "in5"]).await, "$-1\r\n");
    assert_eq!(m.pinned_clients.get(), 0, "back on the shared pool");
    // Pipelined MULTI ... EXEC all take the same route.
    c.send_raw(b"MULTI\r\nSET t 1\r\nINCR t\r\nEXEC\r\nGET t\r\n")
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8_lossy(&c.read().await).into_owned());
    }
    assert_eq!(
        got,
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n+OK\r\n:2\r\n",
            "$1\r\n2\r\n"
        ]
    );
    assert_eq!(m.pinned_clients.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_tracking_pushes_reach_the_client() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    c.send(&[b"HELLO", b"3"]).await;
    c.proto = Proto::Resp3;
    c.read().await;
    assert_eq!(c.text(&["CLIENT", "TRACKING", "ON"]).await, "+OK\r\n");
    assert_eq!(c.text(&["GET", "tracked"]).await, "_\r\n");
    let mut other = Raw::to(&p).await;
    assert_eq!(other.text(&["SET", "tracked", "1"]).await, "+OK\r\n");
    let push = String::from_utf8_lossy(&c.read().await).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$7\r\ntracked\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_and_reset_out_of_pubsub() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut mon = Raw::to(&p).await;
    assert_eq!(mon.text(&["MONITOR"]).await, "+OK\r\n");
    let mut c = Raw::to(&p).await;
    c.cmd(&["SET", "watched", "1"]).await;
    let line = String::from_utf8_lossy(&mon.read().await).into_owned();
    assert!(line.contains("\"SET\" \"watched\" \"1\""), "{line}");
    let mut s = Raw::to(&p).await;
    assert!(s
        .text(&["SUBSCRIBE", "x"])
        .await
        .starts_with("*3\r\n$9\r\nsubscribe"));
    assert_eq!(s.text(&["RESET"]).await, "+RESET\r\n");
    assert_eq!(s.text(&["SET", "after", "reset"]).await, "+OK\r\n");
    assert_eq!(s.text(&["GET", "after"]).await, "$5\r\nreset\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_crate_works_through_the_proxy() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut con = common::redis_client(p.addr).await;
    let _: () = redis::cmd("SET")
        .arg("lib")
        .arg("works")
        .query_async(&mut con)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("lib")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "works");
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("INCR").arg("n").ignore();
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    pipe.cmd("GET").arg("n");
    let (n,): (i64,) = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(n, 100);
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("t")
        .cmd("INCR")
        .arg("t")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_connection_left_behind_is_not_reused() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let m = p.shared.metrics.clone();
    let mut a = Raw::to(&p).await;
    a.send(&[b"BLPOP", b"never", b"0"]).await;
    common::eventually(common::DEADLINE, "BLPOP pinned", || {
        let n = m.pinned_clients.get();
        async move { (n == 1).then_some(()) }
    })
    .await;
    drop(a);
    common::eventually(
        common::DEADLINE,
        "client gone and its connection closed",
        || {
            let n = m.pinned_clients.get()
                + m.upstream_connections
                    .with_label_values(&["dedicated"])
                    .get();
            async move { (n == 0).then_some(()) }
        },
    )
    .await;
    let mut b = Raw::to(&p).await;
    assert_eq!(b.text(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(b.text(&["EXEC"]).await, "*0\r\n");
    // And a pushed element goes nowhere: the abandoned BLPOP is gone with its connection.
    assert_eq!(b.text(&["RPUSH", "never", "x"]).await, ":1\r\n");
    assert_eq!(b.text(&["LLEN", "never"]).await, ":1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_names_each_clients_user() {
    let mut s = settings("memory://");
    s.auth.users = vec![User {
        name: "reader".into(),
        password: "pw".into(),
        commands: vec!["+@all".to_string()].try_into().expect("valid rules"),
    }];
    let p = proxy_with(s).await;
    let mut r = Raw::to(&p).await;
    assert_eq!(r.text(&["AUTH", "reader", "pw"]).await, "+OK\r\n");
    let mine = r.text(&["CLIENT", "INFO"]).await;
    assert!(mine.contains(" user=reader "), "{mine}");
    let mut d = Raw::to(&p).await;
    let list = d.text(&["CLIENT", "LIST"]).await;
    assert!(
        list.contains(" user=reader ") && list.contains(" user=default "),
        "{list}"
    );
}

/// The proxy's internal client (read-through, prefetch and jobs write through it) behaves the
/// same on both backends: its writes are what a client reads, error replies come back as
/// replies, a pipeline answers in order, and on Redis a dead server is an error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_client_speaks_to_both_backends_alike() {
    use bytes::Bytes;
    use prescient::upstream::Internal;
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let mut redis = Redis::start().await;
    for url in [redis.url(), "memory://".to_string()] {
        let p = proxy(&url).await;
        let mut i = Internal::new(p.shared.upstream.clone());
        let set = vec![b("SET"), b("internal:k"), b("v1")];
        // On Redis the shared connection may still be connecting: retry until it answers.
        common::eventually(std::time::Duration::from_secs(10), "a SET", || {
            let mut i = Internal::new(p.shared.upstream.clone());
            let set = set.clone();
            async move { i.call(&set).await.ok() }
        })
        .await;
        let got = i
            .pipeline(&[
                vec![b("GET"), b("internal:k")],
                vec![b("INCR"), b("internal:k")],
                vec![b("RPUSH"), b("internal:l"), b("a"), b("b")],
            ])
            .await
            .expect("replies");
        assert_eq!(got[0], b("$2\r\nv1\r\n"), "{url}");
        assert!(got[1].starts_with(b"-ERR value is not an integer"), "{url}");
        assert_eq!(got[2], b(":2\r\n"), "{url}");
        let mut c = Raw::to(&p).await;
        assert_eq!(
            c.text(&["GET", "internal:k"]).await,
            "$2\r\nv1\r\n",
            "{url}"
        );
        assert_eq!(c.text(&["LLEN", "internal:l"]).await, ":2\r\n", "{url}");
    }
    // Redis gone: an error within the upstream deadline, not a hang.
    let p = proxy(&redis.url()).await;
    redis.kill();
    let mut i = Internal::new(p.shared.upstream.clone());
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        i.call(&[b("GET"), b("x")]),
    )
    .await
    .expect("an answer within 30 s");
    assert!(r.is_err(), "{r:?}");
}
