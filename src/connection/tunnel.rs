//! The tunnel: a client in pub/sub or MONITOR mode gets its own upstream connection and the
//! proxy relays bytes both ways. Replies and messages cannot be matched to requests one to one
//! in these modes (one SUBSCRIBE with three channels is three replies; messages arrive at any
//! time), so the proxy stops matching and forwards frames in order.
//!
//! The tunnel lasts until the client disconnects, the upstream closes (after QUIT), or RESET
//! comes back from the upstream, which returns the client to ordinary request/reply service.
//! Denied commands are still refused; their error is written at once.

use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Client;
use crate::config::Tunables;
use crate::metrics::Outcome;
use crate::protocol::reply::ReplyScanner;
use crate::protocol::Value;
use crate::session::{Pending, Stop, TunnelStart, Wire};

/// Reading from one side pauses while this much waits to be written to the other.
const SOFT: usize = 256 * 1024;

pub(crate) enum TunnelEnd {
    /// Back to ordinary service (after RESET, or when the tunnel could not be opened).
    Resume,
    /// Close the client; the reason, if the proxy chose to.
    Close(Option<&'static str>),
}

pub(crate) async fn run(c: &mut Client, start: TunnelStart) -> TunnelEnd {
    // Every reply owed goes out first, each as soon as it is ready.
    match c.wire.barrier(&mut c.session).await {
        Ok(()) => {}
        Err(Stop::Shutdown) => return TunnelEnd::Close(Some("shutdown")),
        Err(Stop::Closed(r)) => return TunnelEnd::Close(r),
    }
    let proto = c.session.proto();
    let mut up = match c.sh.upstream.raw(proto, start.db).await {
        Ok(s) => s,
        Err(e) => {
            let now = Instant::now();
            let p = Pending::ready(
                start.first.spec,
                now,
                Value::err(e.to_string()).encode(proto),
                Outcome::UpstreamFailed,
            );
            c.wire.finish(&mut c.session, p, now);
            return TunnelEnd::Resume;
        }
    };
    c.sh.metrics
        .upstream_connections
        .with_label_values(&["tunnel"])
        .inc();
    if let Some(id) = c.sh.upstream.connector.client_id(&mut up, proto).await {
        c.entry.upstream_id.store(id, Ordering::Relaxed);
    }
    let subscribing = start
        .first
        .known_name()
        .is_some_and(|n| n.ends_with("subscribe"));
    c.entry.subscribed.store(subscribing, Ordering::Relaxed);
    let end = relay(c, &mut up, start).await;
    c.entry.upstream_id.store(-1, Ordering::Relaxed);
    c.entry.subscribed.store(false, Ordering::Relaxed);
    c.sh.metrics
        .upstream_connections
        .with_label_values(&["tunnel"])
        .dec();
    if matches!(end, TunnelEnd::Resume) {
        c.session.after_tunnel_reset();
    }
    end
}

async fn relay(c: &mut Client, up: &mut tokio::net::TcpStream, start: TunnelStart) -> TunnelEnd {
    let proto = c.session.proto();
    let io: &mut Wire = &mut c.wire;
    let (mut urd, mut uwr) = up.split();
    let mut ubuf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = ReplyScanner::default();
    let mut uout = BytesMut::new();
    uout.extend_from_slice(&start.first.raw);
    c.sh.metrics.command(start.first.spec, Outcome::Ok);
    let mut expect_reset = false;
    let limit = Tunables::load(&c.sh.tunables.client_output_buffer_limit) as usize;
    let shutdown = c.sh.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        // Commands already buffered behind the one that opened the tunnel go through it too.
        loop {
            match c.parser.next(&mut io.inbuf) {
                Ok(Some(cmd)) => {
                    c.sh.metrics.command(cmd.spec, Outcome::Ok);
                    let name = cmd.known_name();
                    if let Some(e) = c.sh.deny.load().refusal(&cmd) {
                        io.out.extend_from_slice(&Value::err(e).encode(proto));
                        continue;
                    }
                    expect_reset |= name == Some("reset");
                    uout.extend_from_slice(&cmd.raw);
                }
                Ok(None) => break,
                Err(e) => {
                    io.out
                        .extend_from_slice(&Value::err(format!("ERR {e}")).encode(proto));
                    let _ = io.wr.write_all(&io.out).await;
                    return TunnelEnd::Close(Some("protocol_error"));
                }
            }
        }
        if io.out.len() > limit {
            return TunnelEnd::Close(Some("output_buffer_limit"));
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                let _ = io.wr.write_all(&io.out).await;
                return TunnelEnd::Close(Some("shutdown"));
            }
            _ = c.entry.killed.cancelled() => return TunnelEnd::Close(Some("killed")),
            r = urd.read_buf(&mut ubuf), if io.out.len() < SOFT => {
                if !matches!(r, Ok(n) if n > 0) {
                    // The upstream closed (QUIT, or it went away): the client follows.
                    let _ = io.wr.write_all(&io.out).await;
                    return TunnelEnd::Close(None);
                }
                loop {
                    let n = match scanner.next_len(&ubuf, proto) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        // Not RESP: nothing after it can be framed, so nothing is forwarded.
                        Err(e) => {
                            tracing::warn!(error = %e, "bad reply from the upstream in a tunnel");
                            let _ = io.wr.write_all(&io.out).await;
                            return TunnelEnd::Close(Some("upstream_protocol_error"));
                        }
                    };
                    let frame = ubuf.split_to(n);
                    io.out.extend_from_slice(&frame);
                    if expect_reset && &frame[..] == b"+RESET\r\n" {
                        return TunnelEnd::Resume;
                    }
                }
            }
            w = io.wr.write(&io.out), if !io.out.is_empty() => match w {
                Ok(n) if n > 0 => {
                    io.out.advance(n);
                    c.sh.metrics.bytes_out.inc_by(n as u64);
                }
                _ => return TunnelEnd::Close(None),
            },
            w = uwr.write(&uout), if !uout.is_empty() => match w {
                Ok(n) if n > 0 => uout.advance(n),
                _ => {
                    let _ = io.wr.write_all(&io.out).await;
                    return TunnelEnd::Close(None);
                }
            },
            r = io.rd.read_buf(&mut io.inbuf), if uout.len() < SOFT => match r {
                Ok(n) if n > 0 => c.sh.metrics.bytes_in.inc_by(n as u64),
                _ => return TunnelEnd::Close(None),
            },
        }
    }
}
