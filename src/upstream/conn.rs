//! One upstream connection, owned by one task: requests come in through a bounded channel,
//! are written in batches (many clients' commands in one write), and replies are matched to
//! requests strictly in order. RESP3 pushes, which belong to no request, go to a push channel.
//!
//! A shared connection outlives failures: it fails every pending request with an error naming
//! the upstream, answers new requests with that error at once while down, and reconnects with
//! backoff. A dedicated connection (one client's transaction, blocking command, database) dies
//! with its socket, because the state it carried is gone.
//!
//! A request whose deadline passes fails the whole connection (the replies still owed cannot
//! be told apart from later ones, so the socket is dropped), but only when the upstream is
//! also silent: nothing has arrived on this connection for the timeout, and no command that
//! may legitimately hold Redis (a script, KEYS: [`Patience::HoldsServer`]) is in flight on any
//! connection to it. A paused or hung Redis is detected; a busy one is waited for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use super::{Connector, UpstreamError};
use crate::protocol::reply::{is_push, Proto, ReplyScanner};

/// A reply from the upstream: the raw RESP bytes.
pub type Reply = Result<Bytes, UpstreamError>;

/// How long a request may wait for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// An ordinary command: overdue after this instant (when the upstream is also silent).
    Until(Instant),
    /// A blocking command (BLPOP): may wait for data forever while Redis serves others.
    Blocking,
    /// A command that may hold Redis itself for long (a script, KEYS, a synchronous FLUSHALL):
    /// no deadline, and while it is in flight the upstream's silence is not a fault.
    HoldsServer,
}

impl Patience {
    fn deadline(self) -> Option<Instant> {
        match self {
            Patience::Until(d) => Some(d),
            _ => None,
        }
    }
}

/// One request: its raw bytes, where the reply goes, and how long it may wait.
#[derive(Debug)]
pub struct Request {
    pub raw: Bytes,
    pub reply: oneshot::Sender<Reply>,
    pub patience: Patience,
}

/// Write batches stop growing at this size so one burst cannot hold the reader back.
const WRITE_HIGH: usize = 256 * 1024;

/// A handle to a connection task.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    tx: mpsc::Sender<Request>,
}

impl ConnHandle {
    /// Queues a request. Fails at once if the connection task is gone or its queue is full.
    pub fn send(
        &self,
        raw: Bytes,
        patience: Patience,
    ) -> Result<oneshot::Receiver<Reply>, UpstreamError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                raw,
                reply: tx,
                patience,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => UpstreamError::Busy,
                mpsc::error::TrySendError::Closed(_) => UpstreamError::Closed,
            })?;
        Ok(rx)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Spawns a shared connection task that connects, serves and reconnects until `handle` and
/// every clone of it are dropped.
pub fn spawn_shared(connector: Arc<Connector>, proto: Proto, queue: usize) -> ConnHandle {
    let (tx, rx) = mpsc::channel(queue);
    tokio::spawn(run_shared(connector, proto, rx));
    ConnHandle { tx }
}

/// Spawns a dedicated connection task over an established stream. Pushes go to `pushes`.
pub fn spawn_dedicated(
    connector: Arc<Connector>,
    stream: TcpStream,
    proto: Proto,
    pushes: mpsc::Sender<Bytes>,
) -> ConnHandle {
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let m = &connector.metrics;
        m.upstream_connections
            .with_label_values(&["dedicated"])
            .inc();
        let mut pending = VecDeque::new();
        let err = serve(
            stream,
            proto,
            &mut rx,
            &mut pending,
            Some(&pushes),
            &connector,
        )
        .await;
        m.upstream_connections
            .with_label_values(&["dedicated"])
            .dec();
        fail_all(&mut pending, &err);
        rx.close();
        while let Ok(r) = rx.try_recv() {
            let _ = r.reply.send(Err(err.clone()));
        }
    });
    ConnHandle { tx }
}

async fn run_shared(connector: Arc<Connector>, proto: Proto, mut rx: mpsc::Receiver<Request>) {
    let m = connector.metrics.clone();
    let mut backoff = connector.backoff_min;
    let mut pending = VecDeque::new();
    loop {
        let err = match connector.connect(proto).await {
            Ok(stream) => {
                backoff = connector.backoff_min;
                connector.health.connected();
                m.upstream_connections.with_label_values(&["shared"]).inc();
                let served = serve(stream, proto, &mut rx, &mut pending, None, &connector);
                // A panic while serving (a bug: nothing read may cause one) fails this
                // connection's requests and reconnects, as any other failure does, rather
                // than leaving every client of the pool without an upstream.
                let err = match Supervised(Box::pin(served)).await {
                    Ok(err) => err,
                    Err(()) => {
                        connector.metrics.upstream_error("protocol");
                        UpstreamError::Unavailable(format!(
                            "{}: internal error serving the connection",
                            connector.display
                        ))
                    }
                };
                m.upstream_connections.with_label_values(&["shared"]).dec();
                connector.health.disconnected();
                fail_all(&mut pending, &err);
                if matches!(err, UpstreamError::Closed) {
                    return; // every handle dropped: the proxy is shutting down
                }
                tracing::warn!(upstream = %connector.display, error = %err, "upstream connection lost");
                err
            }
            Err(e) => e,
        };
        // Down: answer everything that arrives with the error until the backoff expires.
        let until = Instant::now() + backoff;
        backoff = (backoff * 2).min(connector.backoff_max);
        loop {
            tokio::select! {
                _ = sleep_until(until) => break,
                r = rx.recv() => match r {
                    Some(r) => { let _ = r.reply.send(Err(err.clone())); }
                    None => return,
                },
            }
        }
    }
}

fn fail_all(pending: &mut VecDeque<oneshot::Sender<Reply>>, err: &UpstreamError) {
    for p in pending.drain(..) {
        let _ = p.send(Err(err.clone()));
    }
}

/// Serves one established connection until it fails; returns why.
///
/// # Cancel safety
/// Not cancel safe; it is only ever awaited to completion by its own task.
async fn serve(
    mut stream: TcpStream,
    proto: Proto,
    rx: &mut mpsc::Receiver<Request>,
    pending: &mut VecDeque<oneshot::Sender<Reply>>,
    pushes: Option<&mpsc::Sender<Bytes>>,
    connector: &Connector,
) -> UpstreamError {
    let (mut rd, mut wr) = stream.split();
    // Shared connections read big chunks: every reply in a read is handed out before any
    // client writes, so clients get their pipelined replies together. Dedicated ones (there
    // may be thousands, mostly idle) stay small.
    let read_chunk = if pushes.is_some() {
        16 * 1024
    } else {
        128 * 1024
    };
    let mut rbuf = BytesMut::with_capacity(read_chunk);
    // Where the reply at the front of `rbuf` has been scanned to: a large reply arrives over
    // many reads, and each read scans only what it added.
    let mut scanner = ReplyScanner::default();
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    // Patience of pending requests, front first.
    let mut deadlines: VecDeque<Patience> = VecDeque::new();
    // Commands holding the server in flight here, also counted in the upstream's health (for
    // every connection to it); given back when this connection ends.
    let holding = HoldGuard::new(&connector.health);
    // One timer, armed for the front request's deadline. It is not moved when the front moves
    // on (deadlines only grow), only re-armed after it fires: one timer operation per timeout
    // period instead of one per reply.
    let timer = sleep_until(Instant::now() + Duration::from_secs(86_400));
    tokio::pin!(timer);
    let mut armed = false;
    // When bytes last arrived. Replies come in order, so bytes arriving while the front
    // request is overdue are its reply on its way (a reply of many megabytes over a slow
    // link), or the replies ahead of it: the connection fails only when the upstream has
    // also been silent for the timeout.
    let mut last_read = Instant::now();
    loop {
        if !armed {
            if let Some(d) = deadlines.front().and_then(|p| p.deadline()) {
                timer.as_mut().reset(d);
                armed = true;
            }
        }
        tokio::select! {
            biased;
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => return connector.io_error("connection closed by server"),
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => return connector.io_error(&e.to_string()),
                }
                loop {
                    let n = match scanner.next_len(&rbuf, proto) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            connector.metrics.upstream_error("protocol");
                            return UpstreamError::Unavailable(format!("{}: bad reply: {e}", connector.display));
                        }
                    };
                    let raw = rbuf.split_to(n).freeze();
                    if proto == Proto::Resp3 && is_push(&raw) {
                        if let Some(p) = pushes {
                            let _ = p.try_send(raw);
                        }
                        continue;
                    }
                    match pending.pop_front() {
                        Some(tx) => {
                            if deadlines.pop_front() == Some(Patience::HoldsServer) {
                                holding.release();
                            }
                            let _ = tx.send(Ok(raw));
                        }
                        None => {
                            connector.metrics.upstream_error("protocol");
                            return UpstreamError::Unavailable(format!("{}: reply with no request", connector.display));
                        }
                    }
                }
                if rbuf.capacity() - rbuf.len() < read_chunk / 4 {
                    rbuf.reserve(read_chunk);
                }
            }
            w = wr.write(&wbuf), if !wbuf.is_empty() => {
                match w {
                    Ok(0) => return connector.io_error("write returned 0"),
                    Ok(n) => { let _ = wbuf.split_to(n); }
                    Err(e) => return connector.io_error(&e.to_string()),
                }
            }
            r = rx.recv(), if wbuf.len() < WRITE_HIGH => {
                let Some(first) = r else { return UpstreamError::Closed };
                // Let the other clients that are ready this turn queue their commands too, so
                // one write (and one read on the Redis side) carries many of them.
                tokio::task::yield_now().await;
                let mut next = Some(first);
                while let Some(req) = next.take() {
                    // Sent even if the client has gone: Redis runs what a client sent before
                    // it disconnected, and so does the proxy.
                    wbuf.extend_from_slice(&req.raw);
                    pending.push_back(req.reply);
                    if req.patience == Patience::HoldsServer {
                        holding.hold();
                    }
                    deadlines.push_back(req.patience);
                    if wbuf.len() < WRITE_HIGH {
                        next = rx.try_recv().ok();
                    }
                }
                // Write now if the socket takes it, saving a trip through the loop.
                match wr.try_write(&wbuf) {
                    Ok(n) => { let _ = wbuf.split_to(n); }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return connector.io_error(&e.to_string()),
                }
            }
            _ = &mut timer, if armed => {
                armed = false;
                let now = Instant::now();
                if deadlines.front().and_then(|p| p.deadline()).is_some_and(|d| d <= now) {
                    let period = Duration::from_millis(connector.timeout_ms());
                    let silent_until = last_read + period;
                    if silent_until > now {
                        timer.as_mut().reset(silent_until);
                        armed = true;
                    } else if connector.health.busy_within(period) {
                        // A script or KEYS holds Redis: its silence is expected. Look again
                        // in a period (the hold may end with this request still unanswered).
                        connector.metrics.upstream_busy_waits.inc();
                        timer.as_mut().reset(now + period);
                        armed = true;
                    } else {
                        connector.metrics.upstream_error("timeout");
                        return UpstreamError::Timeout(connector.display.clone(), connector.timeout_ms());
                    }
                }
            }
        }
    }
}

/// This connection's share of the upstream's count of commands holding the server: each
/// `hold` is matched by a `release` when its reply arrives, and whatever is still held when
/// the connection ends (failed, closed) is given back on drop.
struct HoldGuard<'a> {
    health: &'a super::Health,
    here: std::cell::Cell<usize>,
}

impl<'a> HoldGuard<'a> {
    fn new(health: &'a super::Health) -> Self {
        HoldGuard {
            health,
            here: std::cell::Cell::new(0),
        }
    }

    fn hold(&self) {
        self.here.set(self.here.get() + 1);
        self.health.hold(1);
    }

    fn release(&self) {
        if self.here.get() > 0 {
            self.here.set(self.here.get() - 1);
            self.health.release(1);
        }
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.health.release(self.here.get());
    }
}

/// A future whose panic is caught and returned as `Err(())` (the panic hook has already
/// reported it).
struct Supervised<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Supervised<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Supervised;

    #[tokio::test]
    async fn a_panic_while_serving_is_a_failure_not_the_end() {
        let ok = Supervised(Box::pin(async { 7 })).await;
        assert_eq!(ok, Ok(7));
        let bad = Supervised(Box::pin(async {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("a bug while serving");
            }
            7
        }))
        .await;
        assert_eq!(bad, Err(()));
    }
}
