//! Inspection and control: INFO with the proxy section, PROXY commands, the HTTP endpoints,
//! the deny list, and `prescient check-config`.

mod common;

use common::{eventually, http_get, proxy, Raw, Redis, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_upstream_sections_and_the_proxy_section() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    let all = c.text(&["INFO"]).await;
    assert!(
        all.contains("# Server\r\n") && all.contains("redis_version:"),
        "{all}"
    );
    assert!(all.contains("\r\n# Proxy\r\nproxy_version:"), "{all}");
    assert!(all.contains("proxy_upstream_state:up"), "{all}");
    let server = c.text(&["INFO", "server"]).await;
    assert!(server.contains("# Server") && !server.contains("# Proxy"));
    let proxy_only = c.text(&["INFO", "proxy"]).await;
    assert!(
        proxy_only.starts_with('$')
            && proxy_only.contains("# Proxy")
            && !proxy_only.contains("# Server")
    );
    // The bulk length header matches the body (redis-cli relies on it).
    let header_len: usize = all[1..all.find('\r').unwrap()].parse().unwrap();
    assert_eq!(header_len + all.find('\n').unwrap() + 3, all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_commands() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    c.cmd(&["SET", "a", "1"]).await;
    let help = c.text(&["PROXY", "HELP"]).await;
    assert!(help.contains("CONFIG GET <pattern>"));
    let stats = c.text(&["PROXY", "STATS"]).await;
    assert!(
        stats.contains("commands_processed:") && stats.contains("upstream_state:up"),
        "{stats}"
    );
    let got = c.text(&["PROXY", "CONFIG", "GET", "server.max_*"]).await;
    assert_eq!(got, "*2\r\n$18\r\nserver.max_clients\r\n$5\r\n10000\r\n");
    assert_eq!(
        c.text(&["PROXY", "CONFIG", "SET", "server.max_clients", "50"])
            .await,
        "+OK\r\n"
    );
    let got = c
        .text(&["PROXY", "CONFIG", "GET", "server.max_clients"])
        .await;
    assert!(got.ends_with("$2\r\n50\r\n"), "{got}");
    let e = c
        .text(&["PROXY", "CONFIG", "SET", "server.listen", "x"])
        .await;
    assert!(
        e.starts_with("-ERR 'server.listen' cannot be changed"),
        "{e}"
    );
    let e = c
        .text(&["PROXY", "CONFIG", "SET", "server.max_clients", "lots"])
        .await;
    assert!(e.starts_with("-ERR 'lots' is not"), "{e}");
    let clients = c.text(&["PROXY", "CLIENTS"]).await;
    assert!(clients.contains("cmd=proxy"), "{clients}");
    assert!(c
        .text(&["PROXY", "NOPE"])
        .await
        .starts_with("-ERR unknown subcommand"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_health_and_ready() {
    let mut redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let admin = p.admin_addr.expect("admin server");
    let mut c = Raw::to(&p).await;
    c.cmd(&["GET", "x"]).await;
    c.cmd(&["NOSUCH"]).await;
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for want in [
        "prescient_commands_total{command=\"get\",outcome=\"ok\"} 1",
        "prescient_commands_total{command=\"unknown\",outcome=\"error\"} 1",
        "prescient_command_duration_seconds_bucket{class=\"read\"",
        "prescient_clients_connected 1",
        "prescient_upstream_connections{kind=\"shared\"} 2",
        "prescient_client_bytes_received_total",
        "prescient_upstream_up",
    ] {
        assert!(body.contains(want), "missing {want}");
    }
    assert_eq!(http_get(admin, "/health").await.0, 200);
    assert_eq!(http_get(admin, "/ready").await.0, 200);
    redis.kill();
    eventually(
        DEADLINE,
        "/ready reports the upstream down",
        || async move { (http_get(admin, "/ready").await.0 == 503).then_some(()) },
    )
    .await;
    let r = c.text(&["GET", "x"]).await;
    assert!(r.starts_with("-ERR upstream redis://127.0.0.1:"), "{r}");
    redis.restart().await;
    eventually(DEADLINE, "/ready again", || async move {
        (http_get(admin, "/ready").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_are_denied_and_data_commands_pass() {
    let redis = Redis::start().await;
    let p = proxy(&redis.url()).await;
    let mut c = Raw::to(&p).await;
    for cmd in [
        &["SHUTDOWN"][..],
        &["DEBUG", "SLEEP", "0"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["REPLICAOF", "no", "one"],
        &["ACL", "SETUSER", "x"],
    ] {
        let r = c.text(cmd).await;
        assert!(
            r.starts_with("-ERR command '") && r.contains("disabled by the proxy"),
            "{cmd:?}: {r}"
        );
    }
    assert_eq!(c.text(&["FLUSHALL"]).await, "+OK\r\n");
    assert_eq!(c.text(&["FLUSHDB"]).await, "+OK\r\n");
    assert!(c
        .text(&["CONFIG", "GET", "maxmemory"])
        .await
        .starts_with("*2"));
    // Redis is still running.
    assert_eq!(c.text(&["PING"]).await, "+PONG\r\n");
}

#[test]
fn check_config_validates_and_names_the_bad_key() {
    let bin = env!("CARGO_BIN_EXE_prescient");
    // The shipped configuration, and the read-through example the docs walk through.
    for (conf, shows) in [
        ("conf/prescient.toml", "[upstream]"),
        ("conf/origin-example.toml", "[[origin.routes]]"),
    ] {
        let path = format!("{}/{conf}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(bin)
            .args(["--config", &path, "check-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(shows),
            "{conf}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upstream]\npool_size = 0\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.pool_size"));
    let out = std::process::Command::new(bin)
        .args(["check-config"])
        .env("PRESCIENT__SERVER__NO_SUCH_KEY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}
