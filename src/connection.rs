//! One client connection: read requests, dispatch them, write replies in request order.
//!
//! The task owns both socket halves and its buffers (so every read is cancel safe) and runs
//! one `select!` loop: shutdown first, then replies that are ready, pushes from a dedicated
//! connection, writes, and reads. Reading pauses while `limits.max_pipeline` requests are in
//! flight or unwritten output passes a soft mark; a client whose unwritten output passes
//! `limits.client_output_buffer_limit` is disconnected, as Redis does, so a client that never
//! reads cannot grow the proxy's memory without bound.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::admin::clients::ClientEntry;
use crate::command::CommandSpec;
use crate::config::Tunables;
use crate::metrics::Outcome;
use crate::protocol::{RequestParser, Value};
use crate::server::Shared;
use crate::session::{Effect, Session};
use crate::upstream::Reply;

/// Reading pauses while this much output waits to be written.
const OUT_SOFT: usize = 256 * 1024;

/// A reply owed to the client, in request order.
pub(crate) struct Pending {
    slot: Slot,
    spec: Option<&'static CommandSpec>,
    start: Instant,
    pub(crate) effect: Effect,
    /// CLIENT REPLY OFF/SKIP: the command runs but its reply is not sent.
    suppress: bool,
}

enum Slot {
    Ready(Bytes, Outcome),
    Waiting(oneshot::Receiver<Reply>),
}

impl Pending {
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(self.slot, Slot::Waiting(_))
    }

    pub(crate) fn ready(
        spec: Option<&'static CommandSpec>,
        start: Instant,
        raw: Bytes,
        outcome: Outcome,
    ) -> Self {
        Pending {
            slot: Slot::Ready(raw, outcome),
            spec,
            start,
            effect: Effect::None,
            suppress: false,
        }
    }

    /// A reply at hand whose `effect` is still to be applied (when it is delivered).
    pub(crate) fn undecoded(
        spec: Option<&'static CommandSpec>,
        start: Instant,
        raw: Bytes,
        effect: Effect,
    ) -> Self {
        Pending {
            effect,
            ..Pending::ready(spec, start, raw, Outcome::Ok)
        }
    }

    pub(crate) fn waiting(
        spec: Option<&'static CommandSpec>,
        start: Instant,
        rx: oneshot::Receiver<Reply>,
        effect: Effect,
    ) -> Self {
        Pending {
            slot: Slot::Waiting(rx),
            spec,
            start,
            effect,
            suppress: false,
        }
    }
}

/// The client's socket and buffers.
pub(crate) struct Io {
    pub(crate) rd: OwnedReadHalf,
    pub(crate) wr: OwnedWriteHalf,
    pub(crate) inbuf: BytesMut,
    pub(crate) out: BytesMut,
}

/// Serves one client until it disconnects, breaks the protocol, or the proxy shuts down.
pub async fn serve(sh: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let laddr = stream.local_addr().unwrap_or(peer);
    let entry = sh.clients.register(peer, laddr);
    let (rd, wr) = stream.into_split();
    let mut io = Io {
        rd,
        wr,
        inbuf: BytesMut::with_capacity(16 * 1024),
        out: BytesMut::with_capacity(16 * 1024),
    };
    let mut c = Client {
        session: Session::new(sh.clone(), entry.clone()),
        parser: RequestParser::new(sh.limits),
        pending: VecDeque::new(),
        sh: sh.clone(),
        entry,
        closing: false,
    };
    let reason = c.run(&mut io).await;
    if let Some(r) = reason {
        sh.metrics.client_closed(r);
    }
    c.session.finish(c.pending.is_empty());
    sh.clients.remove(c.entry.id);
}

pub(crate) struct Client {
    pub(crate) session: Session,
    pub(crate) parser: RequestParser,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) sh: Arc<Shared>,
    entry: Arc<ClientEntry>,
    /// No more requests are read; the connection closes once replies are written.
    closing: bool,
}

impl Client {
    /// The main loop; returns the proxy's reason for closing, if it closed the connection.
    async fn run(&mut self, io: &mut Io) -> Option<&'static str> {
        let mut reason = None;
        // Made once: polling a fresh `cancelled()` each turn would register a waiter under the
        // token's lock every time, on every connection.
        let shutdown = self.sh.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let idle_timer = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(idle_timer);
        let mut idle_armed: Option<Instant> = None;
        loop {
            if let Err(r) = self.process_input(io).await {
                reason = Some(r);
            }
            self.session.take_direct(&mut io.out);
            if self.closing && self.pending.is_empty() && io.out.is_empty() {
                return reason;
            }
            if let Some(tunnel) = self.session.take_tunnel() {
                match crate::tunnel::run(self, io, tunnel).await {
                    crate::tunnel::TunnelEnd::Resume => continue,
                    crate::tunnel::TunnelEnd::Close(r) => return r.or(reason),
                }
            }
            let max_pipeline = Tunables::load(&self.sh.tunables.max_pipeline) as usize;
            let can_read =
                !self.closing && self.pending.len() < max_pipeline && io.out.len() < OUT_SOFT;
            let idle = self.idle_deadline();
            if idle.is_some() && idle != idle_armed {
                idle_timer.as_mut().reset(idle.unwrap_or_else(Instant::now));
            }
            idle_armed = idle;
            tokio::select! {
                biased;
                _ = &mut shutdown, if !self.closing => {
                    self.closing = true;
                    reason = Some("shutdown");
                }
                _ = front_ready(&mut self.pending), if !self.pending.is_empty() => {
                    if let Err(r) = self.deliver(io) {
                        return Some(r);
                    }
                    // Nothing else owed: write now, saving a trip through the loop. With more
                    // replies owed, the loop comes back here first while they are ready, and
                    // writes them together once none is.
                    if self.pending.is_empty() {
                        match io.wr.try_write(&io.out) {
                            Ok(n) => {
                                io.out.advance(n);
                                self.sh.metrics.bytes_out.inc_by(n as u64);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return reason,
                        }
                    }
                }
                p = self.session.next_push() => {
                    io.out.extend_from_slice(&p);
                }
                w = io.wr.write(&io.out), if !io.out.is_empty() => match w {
                    Ok(n) if n > 0 => {
                        io.out.advance(n);
                        self.sh.metrics.bytes_out.inc_by(n as u64);
                    }
                    _ => return reason,
                },
                r = io.rd.read_buf(&mut io.inbuf), if can_read => match r {
                    Ok(n) if n > 0 => self.sh.metrics.bytes_in.inc_by(n as u64),
                    _ => return reason, // the client closed its side or reset
                },
                _ = &mut idle_timer, if idle.is_some() => {
                    return Some("idle_timeout");
                }
            }
        }
    }

    /// When an idle client is closed: only with a timeout set, nothing in flight, and no
    /// state that legitimately idles (a blocking command, a transaction).
    fn idle_deadline(&self) -> Option<Instant> {
        let secs = Tunables::load(&self.sh.tunables.idle_timeout_secs);
        if secs == 0 || !self.pending.is_empty() || self.session.holds_state() {
            return None;
        }
        let last = self.entry.last_active_ms.load(Ordering::Relaxed);
        let base = self.entry.connected + Duration::from_millis(last);
        Some(Instant::from_std(base) + Duration::from_secs(secs))
    }

    /// Parses and dispatches buffered requests while the pipeline has room. A protocol error
    /// queues Redis's error reply and marks the connection closing.
    async fn process_input(&mut self, io: &mut Io) -> Result<(), &'static str> {
        let max_pipeline = Tunables::load(&self.sh.tunables.max_pipeline) as usize;
        // One clock reading for the commands that arrived together: their latency is counted
        // from when this batch was read (measured: three clock reads per command were 4% of
        // the cycles of pipelined GETs on memory://).
        let arrived = Instant::now();
        self.session.begin_batch();
        while !self.closing && self.pending.len() < max_pipeline && !self.session.tunnel_pending() {
            let cmd = match self.parser.next(&mut io.inbuf) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    let want = self.parser.wanted(io.inbuf.len());
                    if want > 0 {
                        io.inbuf.reserve(want);
                    }
                    return Ok(());
                }
                Err(e) => {
                    let start = Instant::now();
                    let raw = Value::err(format!("ERR {e}")).encode(self.session.proto());
                    self.pending
                        .push_back(Pending::ready(None, start, raw, Outcome::Refused));
                    self.closing = true;
                    return Err("protocol_error");
                }
            };
            let quit = cmd.spec.is_some_and(|s| s.name == "quit");
            self.session.dispatch(cmd, arrived, &mut self.pending).await;
            if quit {
                self.closing = true;
            }
        }
        Ok(())
    }

    /// Moves every ready reply at the front of the queue into the output buffer.
    pub(crate) fn deliver(&mut self, io: &mut Io) -> Result<(), &'static str> {
        let limit = Tunables::load(&self.sh.tunables.client_output_buffer_limit) as usize;
        let now = Instant::now();
        self.session.take_direct(&mut io.out);
        while let Some(p) = self.pending.front_mut() {
            let Slot::Ready(raw, outcome) = &p.slot else {
                break;
            };
            // A large reply to decode goes to another thread; the replies after it wait.
            if *outcome == Outcome::Ok {
                if let Some(rx) = self.session.decode_later(&mut p.effect, raw) {
                    p.slot = Slot::Waiting(rx);
                    break;
                }
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.finish(p, now, &mut io.out);
            if io.out.len() > limit {
                tracing::warn!(
                    client = self.entry.id,
                    bytes = io.out.len(),
                    "client output buffer limit reached, closing"
                );
                return Err("output_buffer_limit");
            }
        }
        Ok(())
    }

    /// Records one completed reply (delivered at `now`) and appends it to `out` (unless
    /// suppressed).
    pub(crate) fn finish(&mut self, p: Pending, now: Instant, out: &mut BytesMut) {
        let Slot::Ready(raw, outcome) = p.slot else {
            return;
        };
        let raw = self.session.apply(p.effect, raw);
        let secs = (now - p.start).as_secs_f64();
        self.sh.metrics.reply(p.spec, outcome, &raw, secs);
        if !p.suppress {
            out.extend_from_slice(&raw);
        }
    }

    /// Waits until every reply in flight is ready, so the next command can go to another
    /// upstream connection without overtaking them. Every slot is checked, not only the
    /// last: a large reply at the front may be out for decoding while those after it are
    /// ready.
    pub(crate) async fn drain(pending: &mut VecDeque<Pending>) {
        all_ready(pending).await;
    }
}

/// Marks a pending reply suppressed (CLIENT REPLY OFF/SKIP).
pub(crate) fn suppress_last(pending: &mut VecDeque<Pending>) {
    if let Some(p) = pending.back_mut() {
        p.suppress = true;
    }
}

/// Resolves when the front reply is ready (and stores it).
///
/// # Cancel safety
/// Cancel safe: a received reply is stored in the queue before this returns.
async fn front_ready(pending: &mut VecDeque<Pending>) {
    poll_fn(|cx| {
        let Some(front) = pending.front_mut() else {
            return Poll::Pending;
        };
        poll_slot(&mut front.slot, cx)
    })
    .await
}

/// Resolves when every reply up to the last is ready.
async fn all_ready(pending: &mut VecDeque<Pending>) {
    poll_fn(|cx| {
        for p in pending.iter_mut() {
            if poll_slot(&mut p.slot, cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    })
    .await
}

fn poll_slot(slot: &mut Slot, cx: &mut std::task::Context<'_>) -> Poll<()> {
    let Slot::Waiting(rx) = slot else {
        return Poll::Ready(());
    };
    match std::pin::Pin::new(rx).poll(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(r) => {
            let (raw, outcome) = match r {
                Ok(Ok(raw)) => (raw, Outcome::Ok),
                Ok(Err(e)) => (Bytes::from(format!("-{e}\r\n")), Outcome::UpstreamFailed),
                Err(_) => (
                    Bytes::from_static(b"-ERR upstream connection closed\r\n"),
                    Outcome::UpstreamFailed,
                ),
            };
            *slot = Slot::Ready(raw, outcome);
            Poll::Ready(())
        }
    }
}
