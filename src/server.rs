//! The accept loop, the client limit and graceful shutdown.
//!
//! Shutdown order, in one place: the signal cancels `shutdown`; the accept loop stops taking
//! connections; each client stops reading new commands, answers what it has in flight, flushes
//! and closes; when every client is gone (or the deadline passes) the background jobs stop,
//! the count sync flushing one last time, and `Server::wait` returns.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::Metrics;
pub use crate::shared::{Shared, User};

/// A running proxy.
pub struct Server {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Server {
    /// Binds the listeners and starts serving in the background.
    pub async fn start(settings: Settings) -> std::io::Result<Server> {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind(&settings.server.listen).await?;
        let addr = listener.local_addr()?;
        let admin = if settings.server.admin_listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind(&settings.server.admin_listen).await?)
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared::new(settings, metrics, shutdown.clone())?);
        let tracker = TaskTracker::new();
        if let Some(l) = admin {
            tokio::spawn(crate::admin::http::serve(l, shared.admin.clone()));
        }
        tokio::spawn(accept_loop(listener, shared.clone(), tracker.clone()));
        tracing::info!(%addr, upstream = %shared.upstream.connector.display, "prescient listening");
        Ok(Server {
            addr,
            admin_addr,
            shared,
            tracker,
        })
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Waits for every client to finish after `shutdown`, at most `deadline`, then stops the
    /// background jobs (the count sync runs one last time). Returns whether all the clients
    /// finished in time.
    pub async fn wait(&self, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let jobs = self.shared.jobs.load_full();
        jobs.stop(left.max(Duration::from_secs(1))).await;
        drained
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let max = shared.tunables.max_clients.load(Ordering::Relaxed);
        if shared.metrics.clients_connected.get() as u64 >= max {
            shared.metrics.client_closed("max_clients");
            tokio::spawn(refuse(stream));
            continue;
        }
        shared.metrics.clients_accepted.inc();
        shared.metrics.clients_connected.inc();
        let sh = shared.clone();
        tracker.spawn(async move {
            crate::connection::serve(sh.clone(), stream, peer).await;
            sh.metrics.clients_connected.dec();
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}
