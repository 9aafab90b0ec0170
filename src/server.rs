//! The accept loop, the client limit and graceful shutdown.
//!
//! Shutdown order, in one place: the signal cancels `shutdown`; the accept loop stops taking
//! connections; each client stops reading new commands, answers what it has in flight, flushes
//! and closes; `Server::wait` returns when every client is gone or the deadline passes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{Parts, View};
use crate::clients::Registry;
use crate::command::acl::{Denylist, Rules};
use crate::compression::Compressor;
use crate::config::{Settings, Tunables};
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::tracking::tracker::Tracker;
use crate::upstream::Upstream;

/// A named user allowed to authenticate to the proxy.
pub struct User {
    pub name: String,
    pub password: String,
    pub rules: Rules,
}

/// State every connection shares.
pub struct Shared {
    pub settings: Settings,
    pub tunables: Arc<Tunables>,
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    /// The compression policy (envelopes are decoded even when compression is off).
    pub compressor: Arc<Compressor>,
    /// Learns from every key read (tracking/).
    pub tracker: Arc<Tracker>,
    pub clients: Arc<Registry>,
    /// What INFO, PROXY and the admin HTTP server see: no secrets.
    pub admin: Arc<View>,
    pub deny: Denylist,
    pub users: Vec<User>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Shared> {
        let tunables = Arc::new(Tunables::new(&settings));
        let upstream = Arc::new(Upstream::new(&settings, tunables.clone(), metrics.clone()));
        let compressor = Arc::new(Compressor::new(&settings.compression, &metrics.registry));
        if let Some(store) = upstream.memory() {
            let _ = store.compressor.set(compressor.clone());
        }
        let users = settings
            .auth
            .users
            .iter()
            .map(|u| User {
                name: u.name.clone(),
                password: u.password.clone(),
                rules: u.commands.rules().clone(),
            })
            .collect();
        let tracker = Arc::new(Tracker::start(&settings.tracking, &metrics.registry)?);
        let clients = Arc::new(Registry::default());
        let admin = Arc::new(View::new(
            &settings,
            Parts {
                metrics: metrics.clone(),
                tunables: tunables.clone(),
                health: upstream.connector.health.clone(),
                clients: clients.clone(),
                compressor: compressor.clone(),
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        Ok(Shared {
            admin,
            clients,
            tracker,
            deny: Denylist::new(&settings.server.deny_commands),
            limits: Limits {
                max_bulk_len: settings.limits.max_bulk_len as usize,
                max_array_len: settings.limits.max_array_len as usize,
            },
            tunables,
            metrics,
            upstream,
            compressor,
            users,
            settings,
            shutdown,
        })
    }
}

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

    /// Waits for every client to finish after `shutdown`, at most `deadline`. Returns whether
    /// all of them finished in time.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
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
