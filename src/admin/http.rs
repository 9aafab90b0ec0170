//! The admin HTTP server: `/metrics` (Prometheus text), `/health` (the process is up), the API
//! under `/api/v1` (api.rs),
//! `/ready` (the upstream answers and critical warming ran: 200, else 503).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::View;

pub async fn serve(listener: TcpListener, sh: Arc<View>) {
    let shutdown = sh.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .merge(super::api::router())
        .with_state(sh);
    let r = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

async fn metrics(State(sh): State<Arc<View>>) -> ([(&'static str, &'static str); 1], String) {
    sh.metrics.upstream_up.set(i64::from(sh.health.is_up()));
    (
        [("content-type", "text/plain; version=0.0.4")],
        sh.metrics.render(),
    )
}

async fn ready(State(sh): State<Arc<View>>) -> (StatusCode, String) {
    if !sh.health.is_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("upstream {} unreachable\n", sh.upstream),
        );
    }
    let jobs = sh.jobs.load();
    if !jobs.gate.is_open() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", jobs.gate.why()),
        );
    }
    match jobs.gate.why() {
        // Critical warming gave up at its deadline: ready, and saying so.
        why if !why.is_empty() => (StatusCode::OK, format!("ready ({why})\n")),
        _ => (StatusCode::OK, "ready\n".into()),
    }
}
