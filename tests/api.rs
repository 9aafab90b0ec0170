//! The HTTP API (src/admin/api.rs) on a real proxy in front of Redis with a real origin: every
//! route the OpenAPI document names answers (and every route answering is named there), the
//! token rules hold, errors are JSON with the right status, and the calls do what they say.

mod common;

use common::origin::TestOrigin;
use common::{eventually, http, proxy_with, settings, Raw, Redis, DEADLINE};
use serde_json::Value as J;

const TOKEN: &str = "s3cret-token";

fn json(body: &str) -> J {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn api_proxy(url: &str, origin: &TestOrigin, token: &str) -> prescient::server::Server {
    let mut s = settings(url);
    s.server.admin_token = token.into();
    s.origin.routes = vec![origin.route("product")];
    s.origin.routes[0].tags = vec!["catalog".into()];
    s.tracking.min_support = 1.0;
    s.warming.tasks = vec![prescient::jobs::settings::WarmTask {
        name: "catalog".into(),
        route: "product".into(),
        keys: vec!["product:1".into()],
        ..Default::default()
    }];
    proxy_with(s).await
}

#[tokio::test]
async fn every_documented_route_answers_and_nothing_else_does() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let p = api_proxy(&redis.url(), &origin, TOKEN).await;
    let admin = p.admin_addr.unwrap();
    let (code, doc) = http(admin, "GET", "/api/v1/openapi.json", None, "").await;
    assert_eq!(code, 200);
    let doc = json(&doc);
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "cleanup");
            let url = match concrete.as_str() {
                "/api/v1/predictions" => format!("{concrete}?key=product:1"),
                _ => concrete,
            };
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/v1/prefetch/config") => r#"{"top_n": 5}"#,
                ("post", "/api/v1/record") => r#"{"client": "web", "key": "product:1"}"#,
                ("post", "/api/v1/invalidate") => r#"{"tag": "catalog"}"#,
                _ => "",
            };
            let (code, text) = http(admin, &method.to_uppercase(), &url, Some(TOKEN), body).await;
            assert!((200..300).contains(&code), "{method} {url}: {code} {text}");
            json(&text);
            seen += 1;
        }
    }
    assert_eq!(seen, prescient::admin::api::ROUTES.len());
    // What is not documented is not there, and says so in JSON.
    for (method, path) in [
        ("GET", "/api/v1/nosuch"),
        ("DELETE", "/api/v1/jobs"),
        ("GET", "/api/v2/status"),
    ] {
        let (code, text) = http(admin, method, path, Some(TOKEN), "").await;
        assert!(code == 404 || code == 405, "{method} {path}: {code}");
        if code == 404 {
            assert!(json(&text)["error"].is_string(), "{text}");
        }
    }
}

#[tokio::test]
async fn changes_need_the_token_and_reads_are_loopback_only_without_one() {
    let origin = TestOrigin::start().await;
    let p = api_proxy("memory://", &origin, TOKEN).await;
    let admin = p.admin_addr.unwrap();
    // A read on loopback needs no token.
    let (code, _) = http(admin, "GET", "/api/v1/status", None, "").await;
    assert_eq!(code, 200);
    // A change does.
    let body = r#"{"tag": "catalog"}"#;
    let (code, text) = http(admin, "POST", "/api/v1/invalidate", None, body).await;
    assert_eq!(code, 401, "{text}");
    assert!(json(&text)["error"].as_str().unwrap().contains("Bearer"));
    let (code, _) = http(admin, "POST", "/api/v1/invalidate", Some("wrong"), body).await;
    assert_eq!(code, 401);
    let (code, _) = http(admin, "POST", "/api/v1/invalidate", Some(TOKEN), body).await;
    assert_eq!(code, 200);

    // No token configured: changes are refused outright.
    let open = api_proxy("memory://", &origin, "").await;
    let oa = open.admin_addr.unwrap();
    let (code, text) = http(oa, "POST", "/api/v1/invalidate", Some(TOKEN), body).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("admin_token"));
    assert_eq!(http(oa, "GET", "/api/v1/jobs", None, "").await.0, 200);
}

/// This machine's address on a non-loopback interface, when it has one.
fn outside_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn reads_from_off_the_machine_need_the_token() {
    let Some(ip) = outside_ip() else {
        eprintln!("no non-loopback address here: nothing to check");
        return;
    };
    let origin = TestOrigin::start().await;
    let mut s = settings("memory://");
    s.server.admin_listen = "0.0.0.0:0".into();
    s.server.admin_token = TOKEN.into();
    s.origin.routes = vec![origin.route("product")];
    let p = proxy_with(s).await;
    let addr = std::net::SocketAddr::new(ip, p.admin_addr.unwrap().port());
    let (code, text) = http(addr, "GET", "/api/v1/status", None, "").await;
    assert_eq!(code, 401, "{text}");
    assert_eq!(
        http(addr, "GET", "/api/v1/status", Some(TOKEN), "").await.0,
        200
    );
    // Prometheus still scrapes without one.
    assert_eq!(http(addr, "GET", "/metrics", None, "").await.0, 200);
}

#[tokio::test]
async fn the_calls_do_what_they_say() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let p = api_proxy(&redis.url(), &origin, TOKEN).await;
    let admin = p.admin_addr.unwrap();
    let mut c = Raw::to(&p).await;
    // Teach a sequence through the proxy and through /record.
    for _ in 0..3 {
        c.text(&["GET", "product:1"]).await;
        c.text(&["GET", "product:2"]).await;
    }
    let rec = r#"{"client": "app-1", "key": "product:7", "hit": true}"#;
    let (code, text) = http(admin, "POST", "/api/v1/record", Some(TOKEN), rec).await;
    assert_eq!(code, 200, "{text}");
    let preds = eventually(DEADLINE, "a prediction after product:1", || async {
        let (_, t) = http(
            admin,
            "GET",
            "/api/v1/predictions?key=product:1&n=3",
            None,
            "",
        )
        .await;
        let j = json(&t);
        let hit = j["predictions"]
            .as_array()?
            .iter()
            .any(|p| p["key"] == "product:2");
        hit.then_some(j)
    })
    .await;
    assert!(preds["predictions"][0]["probability"].as_f64().unwrap() > 0.0);
    let (_, hot) = http(admin, "GET", "/api/v1/hotkeys?n=2", None, "").await;
    assert_eq!(json(&hot)["hotkeys"].as_array().unwrap().len(), 2, "{hot}");

    let (_, st) = http(admin, "GET", "/api/v1/status", None, "").await;
    let st = json(&st);
    assert_eq!(st["upstream"]["state"], "up");
    assert_eq!(st["learning"]["state"], "Learning");
    assert!(
        st["learning"]["queries_tracked"].as_u64().unwrap() >= 6,
        "{st}"
    );
    assert!(st["keys"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["hit_rate"].as_f64().is_some(), "{st}");
    assert_eq!(st["prefetch"]["enabled"], true);

    // Prefetch settings: set, read back, and a bad value is a 400 naming it.
    let body =
        r#"{"top_n": 20, "min_confidence": 0.6, "enabled": false, "hour_weights": "9-17=1.5"}"#;
    let (code, cfg) = http(admin, "POST", "/api/v1/prefetch/config", Some(TOKEN), body).await;
    assert_eq!(code, 200, "{cfg}");
    let cfg = json(&cfg);
    assert_eq!(cfg["top_n"], 20);
    assert_eq!(cfg["min_confidence"], 0.6);
    assert_eq!(cfg["enabled"], "false");
    assert!(
        cfg["hour_weights"].as_str().unwrap().contains("9-17"),
        "{cfg}"
    );
    let (code, text) = http(
        admin,
        "POST",
        "/api/v1/prefetch/config",
        Some(TOKEN),
        r#"{"top_n": -3}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        json(&text)["error"].as_str().unwrap().contains("top_n"),
        "{text}"
    );
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/prefetch/config",
        Some(TOKEN),
        "not json",
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = http(admin, "GET", "/api/v1/predictions", None, "").await;
    assert_eq!(code, 400, "key is required");
    let (code, _) = http(admin, "GET", "/api/v1/hotkeys?n=0", None, "").await;
    assert_eq!(code, 400);

    // Warm-up queues; jobs list and run; a missing job is a 404.
    let (code, w) = http(admin, "POST", "/api/v1/warmup", Some(TOKEN), r#"{"n": 5}"#).await;
    assert_eq!(code, 200, "{w}");
    assert!(json(&w)["queued"].is_array());
    let (_, jobs) = http(admin, "GET", "/api/v1/jobs", None, "").await;
    let jobs = json(&jobs);
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == "warm:catalog"));
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/jobs/warm:catalog/run",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(code, 202);
    let (code, text) = http(admin, "POST", "/api/v1/jobs/nosuch/run", Some(TOKEN), "").await;
    assert_eq!(code, 404, "{text}");

    // Invalidation by tag through the API.
    eventually(DEADLINE, "product:1 tagged", || async {
        let mut c = Raw::connect(p.addr.port()).await;
        let n = c
            .text(&["SISMEMBER", "prescient:tag:catalog", "product:1"])
            .await;
        (n == ":1\r\n").then_some(())
    })
    .await;
    let (code, inv) = http(
        admin,
        "POST",
        "/api/v1/invalidate",
        Some(TOKEN),
        r#"{"tag":"catalog"}"#,
    )
    .await;
    assert_eq!(code, 200, "{inv}");
    assert!(json(&inv)["removed"].as_u64().unwrap() >= 1, "{inv}");
    assert_eq!(c.text(&["EXISTS", "product:1"]).await, ":0\r\n");
    let (_, stats) = http(admin, "GET", "/api/v1/stats", None, "").await;
    let stats = json(&stats);
    for section in ["proxy", "cache", "prefetch", "tracking", "jobs", "origin"] {
        assert!(!stats[section].is_null(), "{section}: {stats}");
    }
}
