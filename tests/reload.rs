//! Reloading the configuration while running: PROXY CONFIG RELOAD in process and SIGHUP to the
//! binary apply the live keys (prefetch settings, tunables, the deny list, the jobs), report
//! the rest as needing a restart, and an invalid file changes nothing.

mod common;

use common::origin::TestOrigin;
use common::process::Instance;
use common::{Raw, Redis, DEADLINE};
use std::time::{Duration, Instant};

/// The settings with no origin routes.
fn head(redis: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{redis}\"\n\
         [tracking]\nlearner_priority = \"normal\"\n"
    )
}

/// The settings with one route, product:{id}, to `origin`.
fn base(redis: &str, origin: &TestOrigin) -> String {
    head(redis)
        + &format!(
            "[[origin.routes]]\nname = \"product\"\nkey = \"product:{{id}}\"\nurl = \"http://{}/api/products/{{id}}\"\n",
            origin.addr
        )
}

#[tokio::test]
async fn proxy_config_reload_applies_live_keys_and_reports_the_rest() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prescient.toml");
    std::fs::write(&file, base(&redis.url(), &origin)).unwrap();
    let settings = prescient::config::Settings::load(Some(&file), &Default::default()).unwrap();
    let p = common::proxy_with(settings).await;
    p.shared.set_source(Some(file.clone()), Default::default());
    let mut c = Raw::to(&p).await;
    assert!(c.text(&["KEYS", "*"]).await.starts_with('*'));

    // New prefetch and counter sections; a tunable and the deny list changed in [server]; the
    // upstream's pool size, which needs a restart.
    let changed = (base(&redis.url(), &origin)
        + "[prefetch]\nmax_requests_per_second = 77\n\
           [counters]\nsink_url = \"http://127.0.0.1:9/views\"\npatterns = [\"views:{id}\"]\n")
        .replace(
            "admin_listen = \"127.0.0.1:0\"\n",
            "admin_listen = \"127.0.0.1:0\"\nmax_clients = 123\ndeny_commands = [\"keys\"]\n",
        )
        .replace("[upstream]\n", "[upstream]\npool_size = 3\n");
    std::fs::write(&file, changed).unwrap();
    let r = c.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    let applied = r
        .lines()
        .find(|l| l.starts_with("applied:"))
        .unwrap_or_else(|| panic!("{r}"));
    for k in [
        "prefetch.max_requests_per_second",
        "server.deny_commands",
        "server.max_clients",
        "counters.patterns",
        "counters.sink_url",
    ] {
        assert!(applied.contains(k), "{k}: {r}");
    }
    let restart = r
        .lines()
        .find(|l| l.starts_with("restart needed:"))
        .unwrap();
    assert!(restart.contains("upstream.pool_size"), "{r}");
    assert!(!applied.contains("upstream.pool_size"), "{r}");

    assert!(c
        .text(&["KEYS", "*"])
        .await
        .contains("disabled by the proxy"));
    let rate = c
        .text(&["PROXY", "PREFETCH", "CONFIG", "GET", "rate"])
        .await;
    assert!(rate.contains("77"), "{rate}");
    let max = c
        .text(&["PROXY", "CONFIG", "GET", "server.max_clients"])
        .await;
    assert!(max.contains("123"), "{max}");
    let shown = c
        .text(&["PROXY", "CONFIG", "GET", "prefetch.max_requests_per_second"])
        .await;
    assert!(shown.contains("77"), "{shown}");
    let jobs = c.text(&["PROXY", "JOBS"]).await;
    assert!(
        jobs.contains("job:counters"),
        "the jobs restarted with the counters: {jobs}"
    );

    // An invalid file changes nothing and says why.
    std::fs::write(
        &file,
        base(&redis.url(), &origin) + "[prefetch]\nmax_load_factor = -1\n",
    )
    .unwrap();
    let r = c.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    assert!(
        r.starts_with("-ERR configuration not reloaded, nothing changed"),
        "{r}"
    );
    assert!(r.contains("max_load_factor"), "{r}");
    assert!(
        c.text(&["KEYS", "*"]).await.contains("disabled"),
        "the deny list stands"
    );
    assert!(c
        .text(&["PROXY", "PREFETCH", "CONFIG", "GET", "rate"])
        .await
        .contains("77"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let redis = Redis::start().await;
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = base(&redis.url(), &origin);
    let inst = Instance::start(dir.path(), "hup", &conf).await;
    let mut c = inst.client().await;
    assert!(c.text(&["KEYS", "*"]).await.starts_with('*'));
    let changed = conf.replace(
        "admin_listen = \"127.0.0.1:0\"\n",
        "admin_listen = \"127.0.0.1:0\"\ndeny_commands = [\"keys\"]\n",
    );
    std::fs::write(dir.path().join("hup.toml"), changed).unwrap();
    inst.signal("-HUP");
    let end = Instant::now() + DEADLINE;
    while !c.text(&["KEYS", "*"]).await.contains("disabled") {
        assert!(
            Instant::now() < end,
            "SIGHUP did not apply the deny list: {}",
            inst.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(inst.log_text().contains("configuration reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_a_request_log_switched_on_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let conf = "[server]\nlog_format = \"json\"\n[upstream]\nurl = \"memory://\"\n";
    let inst = Instance::start(dir.path(), "logs", conf).await;
    let mut c = inst.client().await;
    c.text(&["GET", "before"]).await;
    assert_eq!(
        c.text(&["PROXY", "CONFIG", "SET", "server.request_log", "yes"])
            .await,
        "+OK\r\n"
    );
    c.text(&["SET", "k", "v"]).await;
    c.text(&["GET", "k"]).await;
    let end = Instant::now() + DEADLINE;
    let lines = loop {
        let text = inst.log_text();
        let requests: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|j| j["target"] == "prescient::request")
            .filter(|j| j["fields"]["command"] != "proxy")
            .collect();
        if requests.len() >= 2 {
            break requests;
        }
        assert!(Instant::now() < end, "no request log lines: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines[0]["fields"]["command"], "set", "{lines:?}");
    assert_eq!(lines[1]["fields"]["command"], "get");
    assert!(lines[1]["fields"]["micros"].is_u64());
    // Every line is JSON, and the request log was off before it was switched on.
    for l in inst.log_text().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    assert!(!inst.log_text().contains("\"before\""));
}

#[tokio::test]
async fn a_reload_changes_users_and_their_connected_clients_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prescient.toml");
    let head = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"memory://\"\n";
    let users = |reader: &str, extra: &str| {
        format!(
            "{head}[[auth.users]]\nname = \"reader\"\npassword = \"r\"\ncommands = {reader}\n{extra}"
        )
    };
    std::fs::write(&file, users("[\"+@read\", \"+ping\"]", "")).unwrap();
    let settings = prescient::config::Settings::load(Some(&file), &Default::default()).unwrap();
    let p = common::proxy_with(settings).await;
    p.shared.set_source(Some(file.clone()), Default::default());
    let mut admin = Raw::to(&p).await;
    let mut reader = Raw::to(&p).await;
    assert_eq!(reader.text(&["AUTH", "reader", "r"]).await, "+OK\r\n");
    assert!(reader.text(&["SET", "k", "v"]).await.starts_with("-NOPERM"));
    // The reader may write now, and a second user appears.
    let more = "[[auth.users]]\nname = \"writer\"\npassword = \"w\"\ncommands = [\"+@all\"]\n";
    std::fs::write(&file, users("[\"+@all\"]", more)).unwrap();
    let r = admin.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    assert!(r.contains("applied: auth.users"), "{r}");
    assert_eq!(
        reader.text(&["SET", "k", "v"]).await,
        "+OK\r\n",
        "the connected client's new rules"
    );
    let mut writer = Raw::to(&p).await;
    assert_eq!(writer.text(&["AUTH", "writer", "w"]).await, "+OK\r\n");
    let list = admin.text(&["CLIENT", "LIST"]).await;
    assert!(
        list.contains("user=writer") && list.contains("user=reader"),
        "{list}"
    );
    // The reader is removed: its connected client can do nothing more.
    std::fs::write(&file, format!("{head}{more}")).unwrap();
    admin.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    assert!(reader.text(&["GET", "k"]).await.starts_with("-NOPERM"));
    let mut again = Raw::to(&p).await;
    assert!(again
        .text(&["AUTH", "reader", "r"])
        .await
        .starts_with("-WRONGPASS"));
    assert_eq!(writer.text(&["GET", "k"]).await, "$1\r\nv\r\n");
}

#[tokio::test]
async fn origin_routes_reload_live_and_a_read_in_flight_keeps_its_origin() {
    let redis = Redis::start().await;
    let a = TestOrigin::start().await;
    let b = TestOrigin::start().await;
    b.b.version.store(2, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prescient.toml");
    std::fs::write(&file, base(&redis.url(), &a)).unwrap();
    let settings = prescient::config::Settings::load(Some(&file), &Default::default()).unwrap();
    let p = common::proxy_with(settings).await;
    p.shared.set_source(Some(file.clone()), Default::default());
    let mut admin = Raw::to(&p).await;
    let mut c = Raw::to(&p).await;
    assert!(c.text(&["GET", "product:1"]).await.contains("product 1"));
    // A read whose fill is slow at the old origin when the routes change.
    a.b.delay_ms
        .store(500, std::sync::atomic::Ordering::Relaxed);
    c.send(&[b"GET", b"product:2"]).await;
    common::eventually(DEADLINE, "the fill in flight", || {
        let n = a.b.hits("/api/products/2");
        async move { (n == 1).then_some(()) }
    })
    .await;
    // The route now points at another origin, and a second route appears.
    let mut conf = base(&redis.url(), &b);
    conf.push_str(&format!(
        "[[origin.routes]]\nname = \"item\"\nkey = \"item:{{id}}\"\nurl = \"http://{}/api/products/{{id}}\"\n",
        b.addr
    ));
    std::fs::write(&file, conf).unwrap();
    let r = admin.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    assert!(r.contains("applied: origin.routes"), "{r}");
    // The read in flight is answered from the origin it started on.
    let v = c.read().await;
    assert!(String::from_utf8_lossy(&v).contains("product 2"), "{v:?}");
    // New reads go to the new origin and the new route.
    assert!(c.text(&["GET", "product:3"]).await.contains("\"v\":2"));
    assert!(c.text(&["GET", "item:4"]).await.contains("\"v\":2"));
    assert_eq!(a.b.hits("/api/products/3"), 0);
    let routes = admin.text(&["PROXY", "ORIGIN"]).await;
    assert!(routes.contains("route:item"), "{routes}");
    // Routes removed: misses are misses again.
    std::fs::write(
        &file,
        base(&redis.url(), &b)
            .replace("[[origin.routes]]", "[[unused]]")
            .split("[[unused]]")
            .next()
            .unwrap(),
    )
    .unwrap();
    let r = admin.text(&["PROXY", "CONFIG", "RELOAD"]).await;
    assert!(r.contains("applied: origin.routes"), "{r}");
    assert_eq!(c.text(&["GET", "product:9"]).await, "$-1\r\n");
}
