//! Test harness: a real `redis-server` on a free port, prescient in-process in front of it,
//! and a raw RESP client that returns replies as the exact bytes received. No fixed ports, no
//! fixed sleeps: everything that waits polls against a deadline.
#![allow(dead_code)]

pub mod origin;
pub mod process;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prescient::config::Settings;
use prescient::protocol::reply::{Proto, ReplyScanner};
use prescient::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A `redis` crate connection to `addr` that waits up to [`DEADLINE`] for each reply (the
/// crate's own default, 500 ms, fails a test on a moment's stall of this shared machine, as a
/// debug build under CI's load once showed).
pub async fn redis_client(addr: std::net::SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(DEADLINE));
    redis::Client::open(format!("redis://{addr}"))
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real redis-server, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(&[]).await
    }

    /// Starts redis-server with extra arguments (`--requirepass x`, ...).
    pub async fn start_with(extra: &[&str]) -> Redis {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            let mut r = Redis {
                port,
                child: None,
                extra: extra.clone(),
            };
            if r.spawn().await {
                return r;
            }
        }
        panic!("could not start redis-server (is it installed? apt-get install redis-server)");
    }

    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return false };
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: the port was taken
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after `kill`).
    pub async fn restart(&mut self) {
        self.kill();
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    pub async fn client(&self) -> Raw {
        Raw::connect(self.port).await
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// Settings for an in-process proxy on free ports in front of `upstream`.
pub fn settings(upstream: &str) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.admin_listen = "127.0.0.1:0".into();
    s.upstream.url = upstream.into();
    // The tests wait for what the learner learned; at the default idle priority it would run
    // only when the machine is idle, which a parallel test run rarely is. The unit test
    // `an_idle_priority_learner_still_learns` (src/tracking/tracker.rs) covers the default.
    s.tracking.learner_priority = prescient::tracking::settings::LearnerPriority::Normal;
    s
}

pub async fn proxy(upstream: &str) -> Server {
    proxy_with(settings(upstream)).await
}

/// Starts the proxy and waits until its upstream is up.
pub async fn proxy_with(s: Settings) -> Server {
    s.validate().expect("test settings are valid");
    let server = Server::start(s).await.expect("proxy starts");
    let sh = server.shared.clone();
    eventually(DEADLINE, "proxy upstream up", || {
        let up = sh.upstream.connector.health.is_up();
        async move { up.then_some(()) }
    })
    .await;
    server
}

/// A raw RESP client: commands out, replies back as the exact bytes received.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    scanner: ReplyScanner,
    pub proto: Proto,
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).ok();
        Raw {
            stream,
            buf: BytesMut::new(),
            scanner: ReplyScanner::default(),
            proto: Proto::Resp2,
        }
    }

    pub async fn to(server: &Server) -> Raw {
        Raw::connect(server.addr.port()).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, args: &[&[u8]]) {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let raw = prescient::command::encode_request(&args);
        self.send_raw(&raw).await;
    }

    /// Reads one reply; panics after the deadline.
    pub async fn read(&mut self) -> Bytes {
        match tokio::time::timeout(DEADLINE, self.try_read()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed while waiting for a reply"),
            Err(_) => panic!("no reply within {DEADLINE:?}"),
        }
    }

    /// Reads one reply, or `None` when the connection closes.
    pub async fn try_read(&mut self) -> Option<Bytes> {
        loop {
            if let Ok(Some(n)) = self.scanner.next_len(&self.buf, self.proto) {
                return Some(self.buf.split_to(n).freeze());
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Whether the server closes the connection (before the deadline), discarding any data.
    pub async fn closed(&mut self) -> bool {
        let mut scratch = vec![0u8; 64 * 1024];
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            match tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut scratch))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                _ => {}
            }
        }
        false
    }

    pub async fn cmd(&mut self, args: &[&str]) -> Bytes {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a).await;
        self.read().await
    }

    /// Sends a command and returns the reply as text (for readable assertions).
    pub async fn text(&mut self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cmd(args).await).into_owned()
    }
}

/// A minimal HTTP GET against the admin server: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, "").await
}

/// A minimal HTTP/1.1 request to the admin server: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("admin connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("admin write");
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("admin reply in time")
        .expect("admin read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
