//! A real HTTP origin for the read-through tests: an axum server on a free port that counts
//! requests per path and can be told to be slow, to fail, or to send a huge body.
//!
//! `GET /api/products/{id}`: `{"id":"<id>","name":"product <id>"}`; ids starting `missing` are
//! 404. `GET /api/big`: 2 MiB. Everything else: 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

#[derive(Default)]
pub struct Behaviour {
    pub hits: Mutex<HashMap<String, u64>>,
    /// Every answer waits this long first.
    pub delay_ms: AtomicU64,
    /// Non-zero: every answer is this status.
    pub status: AtomicU16,
    /// The `x-api-key` header of the last product request.
    pub api_key: Mutex<Option<String>>,
    /// The next this many answers are 503.
    pub fail_next: AtomicU64,
    /// Non-zero: product bodies carry it (`"v":N`), to tell a refreshed value from the old.
    pub version: AtomicU64,
    /// Paths in the order their requests arrived.
    pub order: Mutex<Vec<String>>,
    /// What the count sink and the expiry webhook received, deduplicated on Idempotency-Key.
    pub posts: Mutex<Posts>,
}

#[derive(Default)]
pub struct Posts {
    /// Count batches by idempotency key: the sum of their deltas per counter key.
    pub batches: HashMap<String, HashMap<String, i64>>,
    /// Expiry webhooks by idempotency key: (arrival unix ms, member, expires_at).
    pub expired: HashMap<String, (u64, String, i64)>,
    /// Requests whose key had been seen (a retry after a crash).
    pub duplicates: u64,
    /// The next this many POSTs fail with 503 (a sink outage).
    pub fail_next: u64,
}

impl Posts {
    pub fn total(&self) -> i64 {
        self.batches.values().flat_map(|b| b.values()).sum()
    }
    pub fn per_key(&self) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        for b in self.batches.values() {
            for (k, v) in b {
                *out.entry(k.clone()).or_default() += v;
            }
        }
        out
    }
}

impl Behaviour {
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.hits.lock().unwrap().values().sum()
    }
}

pub struct TestOrigin {
    pub addr: SocketAddr,
    pub b: Arc<Behaviour>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn body_of(id: &str) -> String {
    format!("{{\"id\":\"{id}\",\"name\":\"product {id}\"}}")
}

async fn behave(b: &Behaviour, path: String) -> Option<StatusCode> {
    b.order.lock().unwrap().push(path.clone());
    *b.hits.lock().unwrap().entry(path).or_default() += 1;
    let delay = b.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if b.fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        return Some(StatusCode::SERVICE_UNAVAILABLE);
    }
    match b.status.load(Ordering::Relaxed) {
        0 => None,
        s => Some(StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),
    }
}

async fn product(
    State(b): State<Arc<Behaviour>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    *b.api_key.lock().unwrap() = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if let Some(s) = behave(&b, format!("/api/products/{id}")).await {
        return (s, "failing".into());
    }
    if id.starts_with("missing") {
        return (StatusCode::NOT_FOUND, "no such product".into());
    }
    match b.version.load(Ordering::Relaxed) {
        0 => (StatusCode::OK, body_of(&id)),
        v => (StatusCode::OK, versioned(&id, v)),
    }
}

pub fn versioned(id: &str, v: u64) -> String {
    format!("{{\"id\":\"{id}\",\"v\":{v}}}")
}

/// `GET /api/products?ids=a,b`: `{"a":<a's body>,"b":<b's body>}`, leaving out the ids a single
/// GET would 404; `ids=bad-json...` answers something that is not JSON.
async fn batch(State(b): State<Arc<Behaviour>>, uri: axum::http::Uri) -> (StatusCode, String) {
    if let Some(s) = behave(&b, "/api/products".into()).await {
        return (s, "failing".into());
    }
    let ids = uri
        .query()
        .and_then(|q| q.strip_prefix("ids="))
        .unwrap_or("")
        .to_string();
    if ids.starts_with("bad-json") {
        return (StatusCode::OK, "{not json".into());
    }
    let parts: Vec<String> = ids
        .split(',')
        .filter(|id| !id.is_empty() && !id.starts_with("missing"))
        .map(|id| format!("\"{id}\":{}", body_of(id)))
        .collect();
    (StatusCode::OK, format!("{{{}}}", parts.join(",")))
}

async fn big(State(b): State<Arc<Behaviour>>) -> (StatusCode, String) {
    if let Some(s) = behave(&b, "/api/big".into()).await {
        return (s, "failing".into());
    }
    (StatusCode::OK, "x".repeat(2 << 20))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `POST /api/views`: a count batch, `{"batch": id, "counts": {key: delta}}`; `POST
/// /api/offers/expired`: `{"member": m, "expires_at": t}`. Both dedupe on Idempotency-Key.
async fn post(
    State(b): State<Arc<Behaviour>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
    else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut p = b.posts.lock().unwrap();
    if p.fail_next > 0 {
        p.fail_next -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match uri.path() {
        "/api/views" => {
            if p.batches.contains_key(&key) {
                p.duplicates += 1;
                return StatusCode::OK;
            }
            let counts = v["counts"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, n)| (k.clone(), n.as_i64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            p.batches.insert(key, counts);
        }
        _ => {
            if p.expired.contains_key(&key) {
                p.duplicates += 1;
                return StatusCode::OK;
            }
            let member = v["member"].as_str().unwrap_or("").to_string();
            let at = v["expires_at"].as_i64().unwrap_or(-1);
            p.expired.insert(key, (unix_ms(), member, at));
        }
    }
    StatusCode::OK
}

impl TestOrigin {
    pub async fn start() -> TestOrigin {
        let b = Arc::new(Behaviour::default());
        let app = Router::new()
            .route("/api/products/{id}", get(product))
            .route("/api/products", get(batch))
            .route("/api/big", get(big))
            .route("/api/views", axum::routing::post(post))
            .route("/api/offers/expired", axum::routing::post(post))
            .with_state(b.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestOrigin {
            addr,
            b,
            stop: Some(tx),
        }
    }

    /// A route to this origin's products.
    pub fn route(&self, name: &str) -> prescient::config::OriginRoute {
        prescient::config::OriginRoute {
            name: name.into(),
            key: "product:{id}".into(),
            url: format!("http://{}/api/products/{{id}}", self.addr),
            ..Default::default()
        }
    }
}
