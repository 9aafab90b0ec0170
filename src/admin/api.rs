//! The HTTP API under `/api/v1`, JSON in and out, described by the OpenAPI document it serves
//! (`/api/v1/openapi.json`, admin/openapi.json). Reads: status, stats, prefetch settings,
//! predictions, hot keys, jobs. Changes: prefetch settings, warm-up, recording reads, running
//! a job, invalidating a tag.
//!
//! Access: a changing call (POST) needs `Authorization: Bearer <server.admin_token>`; with no
//! token configured, changes are refused. A read is answered on loopback without a token, and
//! from elsewhere only with it. Errors are `{"error": "<message>"}` with the status that fits
//! (400 bad input, 401 no or wrong token, 403 not allowed from here, 404 no such thing or not
//! configured here, 503 the store did not answer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value as J};

use super::View;

/// Every route of the API (method, path as the OpenAPI document writes it). The router is built
/// from the same paths, and a test checks this list against the document both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/prefetch/config"),
    ("POST", "/api/v1/prefetch/config"),
    ("POST", "/api/v1/warmup"),
    ("POST", "/api/v1/record"),
    ("GET", "/api/v1/predictions"),
    ("GET", "/api/v1/hotkeys"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/{id}/run"),
    ("POST", "/api/v1/invalidate"),
    ("GET", "/api/v1/openapi.json"),
];

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The API's routes, to merge into the admin server's router.
pub fn router() -> Router<Arc<View>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/stats", get(stats))
        .route(
            "/api/v1/prefetch/config",
            get(prefetch_config).post(set_prefetch_config),
        )
        .route("/api/v1/warmup", post(warmup))
        .route("/api/v1/record", post(record))
        .route("/api/v1/predictions", get(predictions))
        .route("/api/v1/hotkeys", get(hotkeys))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}/run", post(run_job))
        .route("/api/v1/invalidate", post(invalidate))
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(not_found)
}

/// An API error: a status and a message, sent as `{"error": message}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type Answer = Result<Json<J>, ApiError>;

/// An extractor that lets a read through: from loopback, or with the token.
pub struct Read;

/// An extractor that lets a change through: with the token only.
pub struct Change;

impl FromRequestParts<Arc<View>> for Read {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, sh: &Arc<View>) -> Result<Self, ApiError> {
        allow(sh, parts, false).map(|()| Read)
    }
}

impl FromRequestParts<Arc<View>> for Change {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, sh: &Arc<View>) -> Result<Self, ApiError> {
        allow(sh, parts, true).map(|()| Change)
    }
}

/// Whether the caller may: reads from loopback freely, everything else with the token.
fn allow(sh: &View, parts: &Parts, changes: bool) -> Result<(), ApiError> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| ApiError(StatusCode::FORBIDDEN, "no peer address".into()))?;
    let headers = &parts.headers;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let good = !sh.token.is_empty() && given.is_some_and(|g| constant_eq(g, &sh.token));
    if good || (!changes && peer.ip().is_loopback()) {
        return Ok(());
    }
    match (sh.token.is_empty(), given) {
        (true, _) if changes => Err(ApiError(
            StatusCode::FORBIDDEN,
            "changes need server.admin_token to be configured".into(),
        )),
        (true, _) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "with no server.admin_token, the API answers on loopback only".into(),
        )),
        (false, None) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer <token> header is needed".into(),
        )),
        (false, Some(_)) => Err(ApiError(StatusCode::UNAUTHORIZED, "wrong token".into())),
    }
}

/// Compares without stopping at the first difference (the time does not tell how much of a
/// guess was right).
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `k:v` lines as a JSON object, numbers as numbers.
fn lines_json(text: &str) -> J {
    let mut m = serde_json::Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            m.insert(k.to_string(), scalar(v));
        }
    }
    J::Object(m)
}

fn pairs_json<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, String)>) -> J {
    J::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), scalar(&v)))
            .collect(),
    )
}

fn scalar(v: &str) -> J {
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => f.into(),
        _ => J::String(v.to_string()),
    }
}

/// The store's INFO fields and DBSIZE.
async fn store_info(sh: &View) -> Result<BTreeMap<String, String>, ApiError> {
    let down = |e: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}"));
    let cmds = [
        vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"stats")],
        vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"memory")],
        vec![Bytes::from_static(b"DBSIZE")],
    ];
    let replies = crate::jobs::pipeline(&sh.store, &cmds)
        .await
        .map_err(down)?;
    let mut out = BTreeMap::new();
    for r in replies {
        match r {
            crate::jobs::Frame::BulkString(b) => {
                for line in String::from_utf8_lossy(&b).lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        out.insert(k.to_string(), v.trim().to_string());
                    }
                }
            }
            crate::jobs::Frame::Integer(n) => {
                out.insert("keys".into(), n.to_string());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The seed's learning state by reads tracked.
pub fn learning_state(reads: u64) -> &'static str {
    match reads {
        0..1_000 => "Learning",
        1_000..10_000 => "Good",
        10_000..100_000 => "Excellent",
        _ => "Optimal",
    }
}

fn tracked_reads(sh: &View) -> u64 {
    sh.tracker
        .stats()
        .iter()
        .find(|(k, _)| *k == "reads")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn status(_: Read, State(sh): State<Arc<View>>) -> Answer {
    let info = store_info(&sh).await.ok();
    let num = |k: &str| -> Option<u64> { info.as_ref()?.get(k)?.parse().ok() };
    let (hits, misses) = (num("keyspace_hits"), num("keyspace_misses"));
    let hit_rate = match (hits, misses) {
        (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
        _ => None,
    };
    let reads = tracked_reads(&sh);
    let jobs = sh.jobs.load_full();
    let origin = sh.origin.load().as_ref().map(|o| {
        json!({
            "routes": o.routes().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "report": o.report(),
        })
    });
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": sh.started.elapsed().as_secs(),
        "upstream": {
            "url": sh.upstream,
            "state": if sh.health.is_up() { "up" } else { "down" },
            "version": sh.health.version(),
        },
        "origin": origin,
        "hit_rate": hit_rate,
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "memory_used_bytes": num("used_memory"),
        "keys": num("keys"),
        "prefetch": {
            "configured": sh.prefetch.is_some(),
            "enabled": sh.prefetch.as_ref().is_some_and(|p| p.enabled()),
        },
        "learning": {
            "state": learning_state(reads),
            "queries_tracked": reads,
        },
        "jobs": {
            "leader": jobs.leading(),
            "ready_gate": if jobs.gate.is_open() { J::Null } else { jobs.gate.why().into() },
        },
    })))
}

async fn stats(_: Read, State(sh): State<Arc<View>>) -> Answer {
    let proxy = lines_json(&super::proxy_cmd::stats(&sh));
    let store = store_info(&sh).await.ok();
    let num = |k: &str| -> J {
        store
            .as_ref()
            .and_then(|s| s.get(k))
            .map_or(J::Null, |v| scalar(v))
    };
    Ok(Json(json!({
        "proxy": proxy,
        "cache": {
            "keyspace_hits": num("keyspace_hits"),
            "keyspace_misses": num("keyspace_misses"),
            "evicted_keys": num("evicted_keys"),
            "expired_keys": num("expired_keys"),
            "used_memory": num("used_memory"),
            "keys": num("keys"),
        },
        "prefetch": sh.prefetch.as_ref().map(|p| pairs_json(p.stats())),
        "origin": sh.origin.load().as_ref().map(|o| o.report()),
        "tracking": pairs_json(sh.tracker.stats()),
        "jobs": sh.jobs.load().status(),
    })))
}

fn prefetcher(sh: &View) -> Result<&Arc<crate::prefetch::Prefetcher>, ApiError> {
    sh.prefetch.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "prefetching is not configured here (it needs origin routes and tracking)".into(),
        )
    })
}

async fn prefetch_config(_: Read, State(sh): State<Arc<View>>) -> Answer {
    Ok(Json(pairs_json(prefetcher(&sh)?.config())))
}

/// A JSON object body with no fields but `known`, or a 400 saying why not.
fn fields(body: &Bytes, known: &[&str]) -> Result<serde_json::Map<String, J>, ApiError> {
    let m = object(body)?;
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "unknown field '{k}' (known: {})",
            known.join(", ")
        ))),
        None => Ok(m),
    }
}

/// A JSON object body, or a 400 saying why not.
fn object(body: &Bytes) -> Result<serde_json::Map<String, J>, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<J>(body) {
        Ok(J::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

async fn set_prefetch_config(_: Change, State(sh): State<Arc<View>>, body: Bytes) -> Answer {
    let p = prefetcher(&sh)?;
    let changes = object(&body)?;
    if changes.is_empty() {
        return Err(bad("no settings given"));
    }
    for (k, v) in &changes {
        let value = match (k.as_str(), v) {
            ("enabled" | "hour_weights_utc", J::Bool(b)) => b.to_string(),
            ("enabled" | "hour_weights_utc", _) => {
                return Err(bad(format!("{k} must be true or false")))
            }
            ("min_probability" | "min_confidence", J::String(s)) if s == "adaptive" => s.clone(),
            ("hour_weights", J::String(s)) => s.clone(),
            ("hour_weights", _) => return Err(bad("hour_weights must be \"9-17=1.5,...\"")),
            (_, J::Number(n)) => n.to_string(),
            _ => return Err(bad(format!("{k}: {v} is not a number"))),
        };
        p.set(k, &value).map_err(bad)?;
    }
    Ok(Json(pairs_json(p.config())))
}

async fn warmup(_: Change, State(sh): State<Arc<View>>, body: Bytes) -> Answer {
    let p = prefetcher(&sh)?;
    let b = fields(&body, &["n", "min_confidence"])?;
    let n = match b.get("n") {
        None => 20,
        Some(v) => {
            v.as_u64()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| bad("n must be an integer from 1 to 10000"))? as usize
        }
    };
    let min = match b.get("min_confidence") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|m| (0.0..=1.0).contains(m))
                .ok_or_else(|| bad("min_confidence must be a number from 0 to 1"))?,
        ),
    };
    let keys = p
        .warm_up(n, min)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let keys: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    Ok(Json(json!({ "queued": keys })))
}

async fn record(_: Change, State(sh): State<Arc<View>>, body: Bytes) -> Answer {
    if !sh.tracker.enabled() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "tracking is disabled here (tracking.enabled)".into(),
        ));
    }
    let b = fields(&body, &["client", "key", "hit"])?;
    let key = b
        .get("key")
        .and_then(J::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad("key (a non-empty string) is required"))?;
    let client = b
        .get("client")
        .and_then(J::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("client (a non-empty string) is required"))?;
    let hit = match b.get("hit") {
        None => None,
        Some(J::Bool(h)) => Some(*h),
        Some(_) => return Err(bad("hit must be true or false")),
    };
    // Recorded as a read under the client's name, as a named connection's reads are.
    let cmd = crate::command::Command::from_args([
        Bytes::from_static(b"GET"),
        Bytes::copy_from_slice(key.as_bytes()),
    ]);
    let name = Bytes::copy_from_slice(client.as_bytes());
    sh.tracker.record(api_client_id(client), Some(&name), &cmd);
    Ok(Json(
        json!({ "recorded": key, "client": client, "hit": hit }),
    ))
}

/// A stable id for an API client's name, far from the connection ids the registry hands out.
fn api_client_id(name: &str) -> u64 {
    (1 << 63) | (crate::tracking::template::hash_bytes(name.as_bytes()) >> 1)
}

/// A query string's parameters (the last of a repeated name wins).
fn params(q: Option<String>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn count(n: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match n {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| bad("n must be an integer from 1 to 10000")),
    }
}

async fn predictions(_: Read, State(sh): State<Arc<View>>, RawQuery(q): RawQuery) -> Answer {
    let q = params(q);
    let key = q
        .get("key")
        .filter(|k| !k.is_empty())
        .cloned()
        .ok_or_else(|| bad("key is required: /api/v1/predictions?key=<key>&n=<count>"))?;
    let n = count(q.get("n").map(String::as_str), 10)?;
    let list: Vec<J> = sh
        .tracker
        .predict(&Bytes::from(key.clone()), n)
        .into_iter()
        .map(|p| {
            json!({
                "key": String::from_utf8_lossy(&p.key),
                "probability": p.probability,
                "level": p.level.name(),
                "action": if p.fetch { "fetch" } else { "touch" },
            })
        })
        .collect();
    Ok(Json(json!({ "key": key, "predictions": list })))
}

async fn hotkeys(_: Read, State(sh): State<Arc<View>>, RawQuery(q): RawQuery) -> Answer {
    let n = count(params(q).get("n").map(String::as_str), 10)?;
    let list: Vec<J> = sh
        .tracker
        .hotkeys(n)
        .into_iter()
        .map(|(k, reads)| json!({ "key": String::from_utf8_lossy(&k), "reads": reads }))
        .collect();
    Ok(Json(json!({ "hotkeys": list })))
}

async fn jobs(_: Read, State(sh): State<Arc<View>>) -> Answer {
    Ok(Json(sh.jobs.load().status()))
}

async fn run_job(
    _: Change,
    State(sh): State<Arc<View>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<J>), ApiError> {
    match sh.jobs.load().run_now(&id) {
        true => Ok((StatusCode::ACCEPTED, Json(json!({ "started": id })))),
        false => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no job '{id}' (GET /api/v1/jobs lists them)"),
        )),
    }
}

async fn invalidate(_: Change, State(sh): State<Arc<View>>, body: Bytes) -> Answer {
    let b = fields(&body, &["tag"])?;
    let tag = b
        .get("tag")
        .and_then(J::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("tag (a non-empty string) is required"))?;
    let jobs = sh.jobs.load_full();
    let removed = jobs
        .invalidate(tag)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({ "tag": tag, "removed": removed })))
}

async fn openapi() -> ([(&'static str, &'static str); 1], &'static str) {
    ([("content-type", "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such route (GET /api/v1/openapi.json lists them)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: J = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn learning_states_follow_the_reads() {
        assert_eq!(learning_state(0), "Learning");
        assert_eq!(learning_state(5_000), "Good");
        assert_eq!(learning_state(50_000), "Excellent");
        assert_eq!(learning_state(500_000), "Optimal");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_eq("abc", "abc"));
        assert!(!constant_eq("abc", "abd"));
        assert!(!constant_eq("abc", "ab"));
    }
}
