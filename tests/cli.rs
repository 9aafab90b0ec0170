//! The operator verbs (`prescient status | stats | warmup | prefetch-config | jobs`), run as the
//! binary against a running proxy's API: readable tables by default, the API's JSON with
//! `--json`, the token from PRESCIENT_ADMIN_TOKEN, and clear errors.

mod common;

use common::origin::TestOrigin;
use common::{eventually, proxy_with, settings, Raw, DEADLINE};

/// Runs the binary with `args` (off the runtime's threads): (success, stdout, stderr).
async fn cli(args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let token = token.map(String::from);
    tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_prescient"));
        c.args(&args).env_remove("PRESCIENT_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("PRESCIENT_ADMIN_TOKEN", t);
        }
        let out = c.output().expect("run prescient");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verbs_print_what_an_operator_asks_for() {
    let origin = TestOrigin::start().await;
    let mut s = settings("memory://");
    s.server.admin_token = "tok".into();
    s.origin.routes = vec![origin.route("product")];
    s.tracking.min_support = 1.0;
    s.warming.tasks = vec![prescient::jobs::settings::WarmTask {
        name: "catalog".into(),
        route: "product".into(),
        keys: vec!["product:9".into()],
        ..Default::default()
    }];
    let p = proxy_with(s).await;
    let admin = format!("http://{}", p.admin_addr.unwrap());
    let mut c = Raw::to(&p).await;
    for _ in 0..3 {
        c.text(&["GET", "product:1"]).await;
        c.text(&["GET", "product:2"]).await;
    }
    // The model learned product:1 -> product:2; status shows it among the top predictions.
    let out = eventually(DEADLINE, "a prediction in status", || {
        let admin = admin.clone();
        async move {
            let (ok, out, _) = cli(&["--admin", &admin, "status"], None).await;
            (ok && out.contains("product:1 [") && out.contains("-> product:2 (")).then_some(out)
        }
    })
    .await;
    for want in [
        "hit rate",
        "prefetch  enabled",
        "learning  Learning",
        "the embedded store",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let (ok, json, _) = cli(&["--admin", &admin, "--json", "status"], None).await;
    assert!(ok);
    let j: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(j["status"]["learning"]["state"], "Learning");

    let (ok, out, _) = cli(&["--admin", &admin, "stats"], None).await;
    assert!(
        ok && out.contains("Prefetch:") && out.contains("issued") && out.contains("Jobs"),
        "{out}"
    );

    // Changing needs the token.
    let set = [
        "--admin",
        &admin,
        "prefetch-config",
        "--top",
        "20",
        "--confidence",
        "0.6",
    ];
    let (ok, _, err) = cli(&set, None).await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = cli(&set, Some("tok")).await;
    assert!(ok, "{err}");
    assert!(out.contains("top_n") && out.contains("20"), "{out}");
    assert!(out.contains("min_confidence         0.6"), "{out}");
    let (ok, out, _) = cli(&["--admin", &admin, "prefetch-config"], None).await;
    assert!(ok && out.contains("0.6"), "{out}");

    let (ok, out, err) = cli(&["--admin", &admin, "warmup", "5"], Some("tok")).await;
    assert!(ok && out.starts_with("Warm-up: "), "{out}{err}");

    let (ok, out, _) = cli(&["--admin", &admin, "jobs"], None).await;
    assert!(
        ok && out.contains("warm:catalog") && out.contains("last outcome"),
        "{out}"
    );
    let (ok, out, _) = cli(
        &["--admin", &admin, "jobs", "--run", "warm:catalog"],
        Some("tok"),
    )
    .await;
    assert!(ok && out.contains("started warm:catalog"), "{out}");
    let (ok, _, err) = cli(&["--admin", &admin, "jobs", "--run", "nosuch"], Some("tok")).await;
    assert!(
        !ok && err.contains("404") && err.contains("nosuch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_instance_is_a_clear_error() {
    let port = common::free_port();
    let (ok, _, err) = cli(&["--admin", &format!("127.0.0.1:{port}"), "status"], None).await;
    assert!(!ok);
    assert!(err.contains("cannot reach prescient"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_table() {
    let (ok, out, err) = cli(&["demo", "--users", "40", "--concurrency", "10"], None).await;
    assert!(ok, "{err}");
    for row in [
        "prefetch off   prefetch on",
        "hit ratio",
        "mean latency (ms)",
        "p99 latency (ms)",
        "origin requests",
        "prefetch precision",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    // Every key is new: with prefetching off, each read is one origin request.
    let reads: u64 = out
        .split(" reads, every key new")
        .next()
        .and_then(|h| h.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let origin: Vec<u64> = out
        .lines()
        .find(|l| l.starts_with("origin requests"))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(origin[0], reads, "{out}");
    let hits: Vec<f64> = out
        .lines()
        .find(|l| l.starts_with("hit ratio"))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(hits[0], 0.0, "nothing to hit without prefetching: {out}");
    assert!(hits[1] > 0.0, "prefetching served some reads: {out}");
}
