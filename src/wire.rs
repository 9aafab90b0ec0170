//! The client's side of a connection: its socket halves, its buffers, and the replies it is
//! owed, in request order (the reply queue).
//!
//! A reply is ready (bytes at hand) or waiting (a receiver: the upstream, the embedded store's
//! blocked command, a decode on another thread). Delivery moves every ready reply at the front
//! into the output buffer, applying its effect through the session; a ready reply may go back
//! to waiting there (a large compressed value sent off to be decoded).
//!
//! Some commands may only start once every reply before them is in: a route change (shared to
//! dedicated connection), a tunnel, RESET, HELLO, a read-modify-write. [`Wire::barrier`] waits
//! for that *while delivering and writing* the replies as they come, and while watching for
//! shutdown and for the client going away, so a blocked BLPOP never holds back the GET reply
//! queued before it.
//!
//! The queue knows nothing of sessions: what a reply's effect does is its owner's business,
//! through [`Owner`]. The session implements it and calls the queue with itself; the
//! connection loop drives both. So this module sits below both, and imports neither.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::command::CommandSpec;
use crate::config::Tunables;
use crate::metrics::{Metrics, Outcome};
use crate::upstream::Reply;

/// What the reply queue needs from whoever owns the replies' effects (the session).
pub(crate) trait Owner {
    /// Work to do on a reply when it is delivered; `Default` is "none".
    type Effect: Default;
    /// Applies a reply's effect; returns the bytes the client gets.
    fn apply(&mut self, effect: Self::Effect, raw: Bytes) -> Bytes;
    /// For a ready reply at the front: a receiver when it is to be worked on elsewhere first
    /// (a large value decoded on another thread), which spends `effect`; None to apply it now.
    fn decode_later(
        &mut self,
        effect: &mut Self::Effect,
        raw: &Bytes,
    ) -> Option<oneshot::Receiver<Reply>>;
    /// Moves replies the owner wrote straight out, ahead of the queue, into `out`.
    fn take_direct(&mut self, out: &mut BytesMut);
}

/// While a barrier waits, the client's bytes are still read (to notice it leave) up to this
/// many buffered; past it reading pauses until the barrier is passed.
const BARRIER_READ_MAX: usize = 256 * 1024;

/// Why waiting at a barrier ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The proxy is shutting down: the command that waited is not sent.
    Shutdown,
    /// The client is gone or must be cut off; the proxy's reason, if it chose to.
    Closed(Option<&'static str>),
}

/// A reply owed to the client, in request order.
pub(crate) struct Pending<E> {
    slot: Slot,
    spec: Option<&'static CommandSpec>,
    start: Instant,
    pub(crate) effect: E,
    /// CLIENT REPLY OFF/SKIP: the command runs but its reply is not sent.
    suppress: bool,
}

enum Slot {
    Ready(Bytes, Outcome),
    Waiting(oneshot::Receiver<Reply>),
}

impl<E: Default> Pending<E> {
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
            effect: E::default(),
            suppress: false,
        }
    }

    /// A reply at hand whose `effect` is still to be applied (when it is delivered).
    pub(crate) fn undecoded(
        spec: Option<&'static CommandSpec>,
        start: Instant,
        raw: Bytes,
        effect: E,
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
        effect: E,
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

/// The client's socket, buffers and reply queue.
pub(crate) struct Wire<E> {
    pub(crate) rd: OwnedReadHalf,
    pub(crate) wr: OwnedWriteHalf,
    pub(crate) inbuf: BytesMut,
    pub(crate) out: BytesMut,
    pub(crate) pending: VecDeque<Pending<E>>,
    metrics: Arc<Metrics>,
    tunables: Arc<Tunables>,
    client: u64,
    /// The proxy's shutdown signal.
    shutdown: CancellationToken,
    /// The client's CLIENT KILL signal.
    killed: CancellationToken,
}

/// What a [`Wire`] watches and counts, besides its socket.
pub(crate) struct WireContext {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tunables: Arc<Tunables>,
    /// The client's id, for logs.
    pub(crate) client: u64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) killed: CancellationToken,
}

impl<E: Default> Wire<E> {
    pub(crate) fn new(cx: WireContext, rd: OwnedReadHalf, wr: OwnedWriteHalf) -> Wire<E> {
        Wire {
            client: cx.client,
            killed: cx.killed,
            shutdown: cx.shutdown,
            metrics: cx.metrics,
            tunables: cx.tunables,
            rd,
            wr,
            inbuf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
            pending: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, p: Pending<E>) {
        self.pending.push_back(p);
    }

    /// Marks the last reply queued suppressed (CLIENT REPLY OFF/SKIP).
    pub(crate) fn suppress_last(&mut self) {
        if let Some(p) = self.pending.back_mut() {
            p.suppress = true;
        }
    }

    /// Moves every ready reply at the front of the queue into the output buffer. Fails when
    /// the output passes the client output buffer limit.
    pub(crate) fn deliver<S: Owner<Effect = E>>(&mut self, s: &mut S) -> Result<(), &'static str> {
        let limit = Tunables::load(&self.tunables.client_output_buffer_limit) as usize;
        let now = Instant::now();
        s.take_direct(&mut self.out);
        while let Some(p) = self.pending.front_mut() {
            let Slot::Ready(raw, outcome) = &p.slot else {
                break;
            };
            // A large reply to decode goes to another thread; the replies after it wait.
            if *outcome == Outcome::Ok {
                if let Some(rx) = s.decode_later(&mut p.effect, raw) {
                    p.slot = Slot::Waiting(rx);
                    break;
                }
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.finish(s, p, now);
            if self.out.len() > limit {
                tracing::warn!(
                    client = self.client,
                    bytes = self.out.len(),
                    "client output buffer limit reached, closing"
                );
                return Err("output_buffer_limit");
            }
        }
        Ok(())
    }

    /// Records one completed reply (delivered at `now`) and appends it to the output (unless
    /// suppressed).
    pub(crate) fn finish<S: Owner<Effect = E>>(&mut self, s: &mut S, p: Pending<E>, now: Instant) {
        let Slot::Ready(raw, outcome) = p.slot else {
            return;
        };
        let raw = s.apply(p.effect, raw);
        let secs = (now - p.start).as_secs_f64();
        self.metrics.reply(p.spec, outcome, &raw, secs);
        if self
            .tunables
            .request_log
            .load(std::sync::atomic::Ordering::Relaxed)
            != 0
        {
            let outcome = Metrics::outcome_of(outcome, &raw);
            Metrics::log_request(self.client, p.spec, outcome, secs, Some(raw.len()));
        }
        if !p.suppress {
            self.out.extend_from_slice(&raw);
        }
    }

    /// Writes what the socket takes now without waiting. `Err` when the client is gone.
    pub(crate) fn try_flush(&mut self) -> Result<(), ()> {
        if self.out.is_empty() {
            return Ok(());
        }
        match self.wr.try_write(&self.out) {
            Ok(n) => {
                self.out.advance(n);
                self.metrics.bytes_out.inc_by(n as u64);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(()),
        }
    }

    /// Waits until every reply owed has been delivered, writing each to the client as soon as
    /// it and those before it are ready. Ends early on shutdown, when the client goes away, or
    /// when its output passes the limit.
    ///
    /// # Cancel safety
    /// Cancel safe: replies received are stored in the queue or the output buffer.
    pub(crate) async fn barrier<S: Owner<Effect = E>>(&mut self, s: &mut S) -> Result<(), Stop> {
        // Boxed: the wait is rare, and its select! state would otherwise be part of the
        // future of every command's dispatch, moved and laid out on the hot path.
        Box::pin(self.serve_until(s, None::<std::future::Pending<()>>))
            .await
            .map(|_| ())
    }

    /// Awaits `work` (the proxy's own work for the command being dispatched: compressing a
    /// large value, a read-modify-write's round trips) while the replies owed before it are
    /// written as they become ready. Ends early as [`Wire::barrier`] does.
    ///
    /// # Cancel safety
    /// Cancel safe as far as the queue goes; `work` is dropped.
    pub(crate) async fn while_serving<T, S: Owner<Effect = E>>(
        &mut self,
        s: &mut S,
        work: impl Future<Output = T>,
    ) -> Result<T, Stop> {
        match Box::pin(self.serve_until(s, Some(work))).await? {
            Some(v) => Ok(v),
            // serve_until returns None only without work.
            None => Err(Stop::Closed(None)),
        }
    }

    /// Delivers and writes replies until `work` is done (`Some` of its output) or, without
    /// work, until every reply owed is delivered (`None`).
    async fn serve_until<T, S: Owner<Effect = E>>(
        &mut self,
        s: &mut S,
        work: Option<impl Future<Output = T>>,
    ) -> Result<Option<T>, Stop> {
        let shutdown = self.shutdown.clone();
        let killed = self.killed.clone();
        let has_work = work.is_some();
        let work = async move {
            match work {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(work);
        loop {
            self.deliver(s).map_err(|r| Stop::Closed(Some(r)))?;
            if !has_work && self.pending.is_empty() {
                return Ok(None);
            }
            let can_read = self.inbuf.len() < BARRIER_READ_MAX;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = killed.cancelled() => return Err(Stop::Closed(Some("killed"))),
                v = &mut work => return Ok(Some(v)),
                _ = front_ready(&mut self.pending), if !self.pending.is_empty() => {}
                w = self.wr.write(&self.out), if !self.out.is_empty() => match w {
                    Ok(n) if n > 0 => {
                        self.out.advance(n);
                        self.metrics.bytes_out.inc_by(n as u64);
                    }
                    _ => return Err(Stop::Closed(None)),
                },
                r = self.rd.read_buf(&mut self.inbuf), if can_read => match r {
                    Ok(n) if n > 0 => self.metrics.bytes_in.inc_by(n as u64),
                    _ => return Err(Stop::Closed(None)),
                },
            }
        }
    }
}

/// Resolves when the front reply is ready (and stores it).
///
/// # Cancel safety
/// Cancel safe: a received reply is stored in the queue before this returns.
pub(crate) async fn front_ready<E>(pending: &mut VecDeque<Pending<E>>) {
    poll_fn(|cx| {
        let Some(front) = pending.front_mut() else {
            return Poll::Pending;
        };
        poll_slot(&mut front.slot, cx)
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
                Ok(Err(e)) => {
                    let line = crate::protocol::reply::error_line(&e.to_string()).into_owned();
                    (Bytes::from(format!("-{line}\r\n")), Outcome::UpstreamFailed)
                }
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
