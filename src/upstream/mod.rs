//! The upstream: where commands go. A [`Backend`]: a Redis server (`redis://`), reached through
//! a small pool of shared, pipelined connections per protocol version, plus dedicated
//! connections for clients that hold connection state (transactions, blocking commands, a
//! non-default database, pub/sub); or the embedded store (`memory://`), where each client's
//! `MemConn` runs commands in-process.
//!
//! Every client is assigned one shared connection for its whole life, so its own commands
//! reach Redis in the order it sent them. The proxy's own work (read-through, prefetch, jobs)
//! goes through [`Internal`], which speaks to either backend the same way.

mod conn;
mod internal;
pub mod memory;
pub mod scripts;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

pub use conn::{ConnHandle, Patience, Reply};
pub use internal::Internal;

use crate::command::encode_request;
use crate::config::{Settings, Tunables, UpstreamUrl};
use crate::metrics::Metrics;
use crate::protocol::reply::{is_error, reply_len, Proto};

/// How long a command sent out of band (SCRIPT KILL and the like) may take, handshake and
/// reply each: longer than Redis's default `busy-reply-threshold`, before which a script
/// holding Redis keeps it from reading anything.
const OUT_OF_BAND_PATIENCE: Duration = Duration::from_secs(30);

/// Why the upstream could not answer. The display form is the error reply's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("ERR upstream {0}")]
    Unavailable(String),
    #[error("ERR upstream {0} did not answer within {1} ms")]
    Timeout(String, u64),
    #[error("ERR upstream connection is busy, try again")]
    Busy,
    #[error("ERR upstream connection closed")]
    Closed,
}

/// Whether the upstream is reachable: shared connections report in, `/ready` reads it.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicI64,
    /// Commands in flight that may hold Redis for long (scripts, KEYS), on any connection.
    holding: AtomicUsize,
    /// When the last such command's reply came (ms since `epoch`; 0: never): replies queued
    /// behind it on other connections follow within an event-loop turn of Redis's, and are
    /// not to be failed in between.
    hold_ended_ms: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
    pub version: Mutex<String>,
}

impl Health {
    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn is_up(&self) -> bool {
        self.connected.load(Ordering::Relaxed) > 0
    }

    fn hold(&self, n: usize) {
        self.holding.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.holding.fetch_sub(n, Ordering::Relaxed);
            let ms = self.since_epoch().as_millis().max(1) as u64;
            self.hold_ended_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn since_epoch(&self) -> Duration {
        self.epoch.get_or_init(std::time::Instant::now).elapsed()
    }

    /// Commands in flight that may hold the upstream for long.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::Relaxed)
    }

    /// Whether the upstream's silence is explained: a command holding it is in flight, or one
    /// ended less than `grace` ago (the replies queued behind it are on their way).
    pub fn busy_within(&self, grace: Duration) -> bool {
        if self.holding() > 0 {
            return true;
        }
        let ended = self.hold_ended_ms.load(Ordering::Relaxed);
        ended > 0 && self.since_epoch().as_millis() as u64 <= ended + grace.as_millis() as u64
    }

    /// The upstream's version as it reports it ("" until learned).
    pub fn version(&self) -> String {
        self.version.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Everything needed to open and authenticate an upstream connection.
pub struct Connector {
    /// Where a Redis server listens and how to log in; None for the embedded store, which has
    /// no connections to open.
    addr: Option<Addr>,
    pub db: u32,
    pub display: String,
    connect_timeout: Duration,
    tunables: Arc<Tunables>,
    backoff_min: Duration,
    backoff_max: Duration,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

struct Addr {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Connector {
    fn timeout_ms(&self) -> u64 {
        Tunables::load(&self.tunables.upstream_timeout_ms)
    }

    fn io_error(&self, what: &str) -> UpstreamError {
        self.metrics.upstream_error("io");
        UpstreamError::Unavailable(format!("{}: {what}", self.display))
    }

    /// Opens a connection speaking `proto`, authenticated and on database `db`.
    pub async fn connect_db(&self, proto: Proto, db: u32) -> Result<TcpStream, UpstreamError> {
        self.connect_with(proto, db, self.connect_timeout).await
    }

    /// As [`Self::connect_db`], giving each handshake step up to `handshake` to answer (the
    /// TCP connect still gets `connect_timeout`).
    async fn connect_with(
        &self,
        proto: Proto,
        db: u32,
        handshake: Duration,
    ) -> Result<TcpStream, UpstreamError> {
        let fail = |what: String| {
            self.metrics.upstream_error("connect");
            UpstreamError::Unavailable(format!("{} unavailable: {what}", self.display))
        };
        let Some(a) = &self.addr else {
            return Err(UpstreamError::Unavailable(format!(
                "{} has no connections to open",
                self.display
            )));
        };
        let addr = format!("{}:{}", a.host, a.port);
        let mut s = match timeout(self.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail("connect timed out".into())),
        };
        let _ = s.set_nodelay(true);
        let mut hello: Vec<Bytes> = Vec::new();
        if proto == Proto::Resp3 {
            hello.extend([Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")]);
            if let Some(p) = &a.password {
                let u = a.username.clone().unwrap_or_else(|| "default".into());
                hello.extend([Bytes::from_static(b"AUTH"), u.into(), p.clone().into()]);
            }
        } else if let Some(p) = &a.password {
            hello.push(Bytes::from_static(b"AUTH"));
            if let Some(u) = &a.username {
                hello.push(u.clone().into());
            }
            hello.push(p.clone().into());
        }
        let mut steps = Vec::new();
        if !hello.is_empty() {
            steps.push(hello);
        }
        if db != 0 {
            steps.push(vec![Bytes::from_static(b"SELECT"), db.to_string().into()]);
        }
        for step in steps {
            let reply = timeout(handshake, roundtrip(&mut s, &step, proto))
                .await
                .map_err(|_| fail("handshake timed out".into()))?
                .map_err(fail)?;
            if is_error(&reply) {
                let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
                return Err(fail(format!(
                    "{} refused: {text}",
                    String::from_utf8_lossy(&step[0])
                )));
            }
        }
        Ok(s)
    }

    pub async fn connect(&self, proto: Proto) -> Result<TcpStream, UpstreamError> {
        self.connect_db(proto, self.db).await
    }

    /// Redis's id for an established connection with nothing in flight (`CLIENT ID`); None
    /// when it does not answer with one in time.
    pub async fn client_id(&self, s: &mut TcpStream, proto: Proto) -> Option<i64> {
        let args = [Bytes::from_static(b"CLIENT"), Bytes::from_static(b"ID")];
        let r = timeout(self.connect_timeout, roundtrip(s, &args, proto))
            .await
            .ok()?
            .ok()?;
        std::str::from_utf8(r.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
            .ok()?
            .parse()
            .ok()
    }
}

/// Sends one command on a fresh connection and reads its reply (handshakes, version probe).
async fn roundtrip(s: &mut TcpStream, args: &[Bytes], proto: Proto) -> Result<Bytes, String> {
    s.write_all(&encode_request(args))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(n) = reply_len(&buf, proto)? {
            return Ok(buf.split_to(n).freeze());
        }
        if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during handshake".into());
        }
    }
}

/// The upstream as the rest of the proxy sees it.
pub struct Upstream {
    pub connector: Arc<Connector>,
    pub backend: Backend,
    next: AtomicU64,
}

/// Where the data lives.
pub enum Backend {
    Redis(Pools),
    /// The embedded store (`upstream.url = "memory://"`).
    Memory(Arc<memory::Store>),
}

/// A Redis server's connections: shared ones per protocol (never empty), spare dedicated ones.
pub struct Pools {
    shared2: Vec<ConnHandle>,
    shared3: Vec<ConnHandle>,
    spare: Mutex<Vec<Dedicated>>,
    spare_max: usize,
}

/// A dedicated connection and the channel its RESP3 pushes arrive on.
pub struct Dedicated {
    pub conn: ConnHandle,
    pub pushes: mpsc::Receiver<Bytes>,
    pub proto: Proto,
    /// Redis's id for the connection (`CLIENT ID`), when it gave one.
    pub redis_id: Option<i64>,
}

impl Upstream {
    /// Builds the pools; their connections connect in the background.
    pub fn new(settings: &Settings, tunables: Arc<Tunables>, metrics: Arc<Metrics>) -> Upstream {
        let url = settings.upstream_url();
        let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        let (addr, db) = match url.clone() {
            UpstreamUrl::Redis {
                host,
                port,
                username,
                password,
                db,
            } => {
                let a = Addr {
                    host,
                    port,
                    username: nonempty(&settings.upstream.username).or(username),
                    password: nonempty(&settings.upstream.password).or(password),
                };
                (Some(a), db)
            }
            UpstreamUrl::Memory => (None, 0),
        };
        let connector = Arc::new(Connector {
            addr,
            db,
            display: url.display(),
            connect_timeout: Duration::from_millis(settings.upstream.connect_timeout_ms),
            tunables,
            backoff_min: Duration::from_millis(settings.upstream.reconnect_min_ms),
            backoff_max: Duration::from_millis(settings.upstream.reconnect_max_ms),
            metrics,
            health: Arc::new(Health::default()),
        });
        let backend = if url == UpstreamUrl::Memory {
            let m = &settings.memory;
            let store = memory::Store::new(m.maxmemory, m.maxmemory_policy);
            store.start_expiry();
            connector.health.connected();
            *connector
                .health
                .version
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = memory::COMPAT_VERSION.to_string();
            Backend::Memory(store)
        } else {
            // At least one shared connection per protocol: a client's slot indexes the pool.
            let size = settings.upstream.pool_size.max(1);
            let pool = |proto| {
                (0..size)
                    .map(|_| {
                        conn::spawn_shared(connector.clone(), proto, settings.upstream.max_queued)
                    })
                    .collect()
            };
            Backend::Redis(Pools {
                shared2: pool(Proto::Resp2),
                shared3: pool(Proto::Resp3),
                spare: Mutex::new(Vec::new()),
                spare_max: settings.upstream.spare_dedicated,
            })
        };
        let up = Upstream {
            connector,
            backend,
            next: AtomicU64::new(0),
        };
        if up.memory().is_none() {
            up.probe_version();
        }
        up
    }

    /// The embedded store, when that is the backend.
    pub fn memory(&self) -> Option<&Arc<memory::Store>> {
        match &self.backend {
            Backend::Memory(s) => Some(s),
            Backend::Redis(_) => None,
        }
    }

    fn pools(&self) -> Result<&Pools, UpstreamError> {
        match &self.backend {
            Backend::Redis(p) => Ok(p),
            Backend::Memory(_) => Err(UpstreamError::Unavailable(format!(
                "{} has no connections",
                self.connector.display
            ))),
        }
    }

    /// Learns the upstream's version (for HELLO replies) in the background.
    fn probe_version(&self) {
        let c = self.connector.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                if let Ok(mut s) = c.connect(Proto::Resp2).await {
                    let args = [Bytes::from_static(b"INFO"), Bytes::from_static(b"server")];
                    if let Ok(r) = roundtrip(&mut s, &args, Proto::Resp2).await {
                        let text = String::from_utf8_lossy(&r);
                        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("redis_version:"))
                        {
                            *c.health.version.lock().unwrap_or_else(|p| p.into_inner()) =
                                v.trim().to_string();
                        }
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// A shared connection slot for a new client; the client keeps it for life.
    pub fn assign(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// The shared connection for slot `slot` speaking `proto` (a Redis backend's).
    pub fn shared(&self, slot: usize, proto: Proto) -> Result<&ConnHandle, UpstreamError> {
        let p = self.pools()?;
        let pool = match proto {
            Proto::Resp2 => &p.shared2,
            Proto::Resp3 => &p.shared3,
        };
        Ok(&pool[slot % pool.len()])
    }

    /// The deadline of an ordinary command handed to an upstream connection at `start`.
    pub fn deadline(&self, start: Instant) -> Instant {
        start + Duration::from_millis(self.connector.timeout_ms())
    }

    /// A dedicated connection on database `db`: from the spare list when that is the default
    /// database, otherwise new.
    pub async fn dedicated(&self, proto: Proto, db: u32) -> Result<Dedicated, UpstreamError> {
        let pools = self.pools()?;
        if db == self.connector.db {
            let mut spare = pools.spare.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(i) = spare.iter().position(|d| d.proto == proto) {
                let d = spare.swap_remove(i);
                if !d.conn.is_closed() {
                    return Ok(d);
                }
            }
        }
        let mut stream = self.connector.connect_db(proto, db).await?;
        let redis_id = self.connector.client_id(&mut stream, proto).await;
        let (ptx, prx) = mpsc::channel(1024);
        let conn = conn::spawn_dedicated(self.connector.clone(), stream, proto, ptx);
        Ok(Dedicated {
            conn,
            pushes: prx,
            proto,
            redis_id,
        })
    }

    /// Returns a dedicated connection whose state is clean (no transaction, watch, block,
    /// default database) for reuse; otherwise, or when the spare list is full, it is closed.
    pub fn release(&self, d: Dedicated) {
        let Ok(pools) = self.pools() else {
            return;
        };
        let mut spare = pools.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < pools.spare_max && !d.conn.is_closed() {
            spare.push(d);
        }
    }

    /// Runs one command on a connection of its own, opened for it and closed after: for the
    /// commands Redis runs while a script holds it (SCRIPT KILL), which on a shared connection
    /// would queue behind that very script. Redis reads nothing from a new connection until
    /// the script passes `busy-reply-threshold` (5 s by default), so the handshake and the
    /// reply get `OUT_OF_BAND_PATIENCE` (30 s); the attempt ends early if the client goes away.
    pub fn out_of_band(&self, args: Vec<Bytes>, proto: Proto) -> oneshot::Receiver<Reply> {
        let (mut tx, rx) = oneshot::channel();
        let c = self.connector.clone();
        tokio::spawn(async move {
            let work = async {
                let mut s = c.connect_with(proto, 0, OUT_OF_BAND_PATIENCE).await?;
                match timeout(OUT_OF_BAND_PATIENCE, roundtrip(&mut s, &args, proto)).await {
                    Ok(Ok(r)) => Ok(r),
                    // SHUTDOWN succeeds by closing the connection, as it does for a client.
                    Ok(Err(_)) => Err(UpstreamError::Closed),
                    Err(_) => Err(UpstreamError::Timeout(
                        c.display.clone(),
                        OUT_OF_BAND_PATIENCE.as_millis() as u64,
                    )),
                }
            };
            let r = tokio::select! {
                r = work => r,
                _ = tx.closed() => return,
            };
            let _ = tx.send(r);
        });
        rx
    }

    /// A raw, authenticated connection for a tunnel (pub/sub, MONITOR).
    pub async fn raw(&self, proto: Proto, db: u32) -> Result<TcpStream, UpstreamError> {
        self.connector.connect_db(proto, db).await
    }
}

#[cfg(test)]
mod health_tests {
    use super::Health;
    use std::time::Duration;

    #[test]
    fn silence_is_explained_while_a_hold_lasts_and_for_a_grace_after() {
        let h = Health::default();
        let grace = Duration::from_secs(60);
        assert!(!h.busy_within(grace), "nothing held yet");
        h.hold(2);
        assert!(h.busy_within(Duration::ZERO));
        h.release(1);
        assert!(h.busy_within(Duration::ZERO), "one still held");
        h.release(1);
        assert_eq!(h.holding(), 0);
        assert!(h.busy_within(grace), "just ended");
        // A release of nothing (a connection ending with none held) ends no hold.
        let fresh = Health::default();
        fresh.release(0);
        assert!(!fresh.busy_within(grace));
    }
}
