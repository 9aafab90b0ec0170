//! The properties the fuzz targets (`fuzz/`) check, one function per target, in the library
//! so that `tests/fuzz_regressions.rs` runs every saved input through the same code under a
//! plain `cargo test` on stable: each crash a fuzzer finds stays a regression test.
//!
//! Each function takes arbitrary bytes and panics only when a property fails: a parser that
//! gives different results for the same bytes split differently, a decoder that returns more
//! than its bound, a proxy that stops serving other clients after one client's input.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::compression::envelope::{self, Codec};
use crate::config::Settings;
use crate::protocol::reply::{reply_len, Proto, ReplyScanner};
use crate::protocol::request::{Limits, RequestParser};
use crate::replay::trace::{self, Format};

/// What parsing a stream gave: each command's arguments, then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    commands: Vec<Vec<Vec<u8>>>,
    error: Option<String>,
    left: usize,
}

fn parse_in_pieces(data: &[u8], piece: usize, limits: Limits) -> Parsed {
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Parsed {
        commands: Vec::new(),
        error: None,
        left: 0,
    };
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            // Every command takes at least one byte: more commands than bytes is a loop.
            assert!(out.commands.len() <= data.len(), "parser loops");
            match p.next(&mut buf) {
                Ok(Some(c)) => out
                    .commands
                    .push(c.args.iter().map(|a| a.to_vec()).collect()),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e.to_string());
                    out.left = buf.len();
                    return out;
                }
            }
        }
    }
    out.left = buf.len();
    out
}

/// The request parser: the same commands and the same error whether the bytes arrive in one
/// buffer or in pieces of any size (the first byte picks it), and never a loop.
pub fn request_parser(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_bulk_len: 4096,
        max_array_len: 128,
    };
    let whole = parse_in_pieces(rest, rest.len(), limits);
    let pieces = parse_in_pieces(rest, first as usize % 13 + 1, limits);
    // The commands and the error must agree. What is left unparsed agrees only without an
    // error: in pieces, the bytes after the error never arrived.
    assert_eq!(whole.commands, pieces.commands);
    assert_eq!(whole.error, pieces.error);
    if whole.error.is_none() {
        assert_eq!(whole.left, pieces.left);
    }
}

/// The reply scanner: framing a stream fed in pieces finds the same replies as framing it
/// whole, never past the end of the buffer; and where redis-protocol's decoder frames a reply,
/// the scanner frames it at the same length or refuses it (never waits for more).
pub fn reply_scanner(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let proto = if first & 1 == 0 {
        Proto::Resp2
    } else {
        Proto::Resp3
    };
    let piece = (first >> 1) as usize % 11 + 1;
    // Whole: reply after reply from the front.
    let mut whole = Vec::new();
    let mut at = 0;
    let whole_end = loop {
        match reply_len(&rest[at..], proto) {
            Ok(Some(n)) => {
                assert!(
                    n > 0 && at + n <= rest.len(),
                    "reply length past the buffer"
                );
                whole.push(n);
                at += n;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // In pieces, with one scanner resuming.
    let mut scanner = ReplyScanner::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut pieces = Vec::new();
    let pieces_end = 'feed: loop {
        loop {
            match scanner.next_len(&buf, proto) {
                Ok(Some(n)) => {
                    assert!(n > 0 && n <= buf.len(), "reply length past the buffer");
                    pieces.push(n);
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => break 'feed Err(e),
            }
        }
        if fed >= rest.len() {
            break Ok(());
        }
        let end = (fed + piece).min(rest.len());
        buf.extend_from_slice(&rest[fed..end]);
        fed = end;
    };
    assert_eq!(whole, pieces, "replies framed differently in pieces");
    assert_eq!(whole_end.is_err(), pieces_end.is_err());
    // Anything redis-protocol frames, the scanner frames alike.
    let decoded = match proto {
        Proto::Resp2 => {
            redis_protocol::resp2::decode::decode_range(rest).map(|o| o.map(|(_, n)| n))
        }
        Proto::Resp3 => {
            redis_protocol::resp3::decode::complete::decode_range(rest).map(|o| o.map(|(_, n)| n))
        }
    };
    // The scanner may refuse what redis-protocol lets through (it checks that a blob ends in
    // CRLF; redis-protocol skips those two bytes unread), but where both frame a reply they
    // agree on its end, and the scanner never waits for more after a complete frame.
    if let Ok(Some(n)) = decoded {
        match reply_len(rest, proto) {
            Ok(Some(m)) => assert_eq!(m, n, "framed at a different length"),
            Ok(None) => panic!("waits for more after a complete {n}-byte reply"),
            Err(_) => {}
        }
    }
}

/// Decoding bound for the envelope target: small, so that a header claiming more is refused.
const ENVELOPE_MAX: usize = 1 << 20;

/// The envelope: decoding arbitrary stored bytes never panics and never returns more than the
/// bound; what is compressed decodes to the same bytes.
pub fn envelope(data: &[u8]) {
    let decoded = envelope::decode(data, ENVELOPE_MAX);
    if let Ok(v) = &decoded {
        assert!(v.len() <= ENVELOPE_MAX.max(data.len()));
        if envelope::is_enveloped(data) {
            let h = envelope::header(data).ok().flatten();
            assert_eq!(h.map(|h| h.original_len), Some(v.len()));
        }
    }
    // Decoding into a reply being built agrees, and leaves it as it was on an error.
    let mut out = bytes::BytesMut::from(&b"before"[..]);
    match envelope::decode_append(data, ENVELOPE_MAX, &|_| None, &mut out) {
        Ok(true) => assert_eq!(decoded.as_deref().ok(), Some(&out[6..])),
        Ok(false) => assert!(&out[..] == b"before" && !envelope::is_enveloped(data)),
        Err(e) => {
            assert_eq!(&out[..], b"before");
            assert_eq!(decoded.err(), Some(e));
        }
    }
    // A fresh-until time on any value leaves its bytes as they were.
    if let Ok(v) = envelope::decode(data, ENVELOPE_MAX) {
        let fresh = envelope::with_freshness(data, 42);
        if envelope::header(data).is_ok() {
            assert_eq!(
                envelope::decode(&fresh, ENVELOPE_MAX).ok().as_deref(),
                Some(&v[..])
            );
        }
    }
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let codec = match first % 4 {
        0 => Codec::Stored,
        1 => Codec::Zlib,
        2 => Codec::Zstd,
        _ => Codec::Lz4,
    };
    if let Some(packed) = envelope::compress(codec, 1, rest) {
        let back = envelope::decode(&packed, ENVELOPE_MAX.max(rest.len()));
        assert_eq!(
            back.as_deref().ok(),
            Some(rest),
            "round trip through {codec:?}"
        );
    }
}

/// The trace readers: any bytes in any format give a trace or an error, never a panic.
pub fn trace_readers(data: &[u8]) {
    for f in [
        Format::Nasa,
        Format::Oracle,
        Format::Monitor,
        Format::Csv,
        Format::AccessLog,
    ] {
        let _ = trace::read(data, f);
    }
}

/// The config loader: any text gives settings or an error naming the problem; settings that
/// load are valid and their upstream URL can be read.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Settings::from_toml(text) {
        assert!(s.validate().is_ok(), "loaded settings must be valid");
        let _ = s.upstream_url();
    }
}

/// How long one session input may take before the proxy counts as wedged.
const SESSION_DEADLINE: Duration = Duration::from_secs(5);

/// A proxy on `memory://` that whole request streams are run through, one connection each.
pub struct SessionHarness {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    _server: crate::server::Server,
}

impl Default for SessionHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionHarness {
    /// Starts the proxy with the default settings (deny list included) and small limits.
    pub fn new() -> SessionHarness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut s = Settings::default();
        s.server.listen = "127.0.0.1:0".into();
        s.server.admin_listen = String::new();
        s.upstream.url = "memory://".into();
        s.limits.max_bulk_len = 64 * 1024;
        s.limits.max_array_len = 1024;
        let server = rt
            .block_on(crate::server::Server::start(s))
            .expect("proxy starts");
        SessionHarness {
            rt,
            addr: server.addr,
            _server: server,
        }
    }

    /// Sends `data` on a fresh connection in pieces (the first byte picks their size), closes
    /// the sending side and reads until the proxy closes. Whatever it sent must frame as
    /// replies, and another client must then get PONG: one client's bytes never stop the
    /// proxy serving anyone else.
    pub fn run(&self, data: &[u8]) {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        let piece = first as usize % 64 + 1;
        self.rt.block_on(async {
            let got = tokio::time::timeout(SESSION_DEADLINE, self.exchange(rest, piece))
                .await
                .expect("the proxy closes a connection whose client closed");
            let mut scanner = ReplyScanner::default();
            let mut at = 0;
            while at < got.len() {
                match scanner.next_len(&got[at..], Proto::Resp3) {
                    Ok(Some(n)) => at += n,
                    // Cut short: the connection closed as the client's side did.
                    Ok(None) => break,
                    Err(e) => panic!("the proxy sent something that is not RESP: {e}"),
                }
            }
            let pong = tokio::time::timeout(SESSION_DEADLINE, self.ping())
                .await
                .expect("another client is served after this input");
            assert_eq!(pong, b"+PONG\r\n");
        });
    }

    async fn exchange(&self, data: &[u8], piece: usize) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        let (mut rd, mut wr) = s.split();
        let send = async {
            for chunk in data.chunks(piece) {
                if wr.write_all(chunk).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        let mut got = Vec::new();
        let recv = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::join!(send, recv);
        got
    }

    async fn ping(&self) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(b"PING\r\n").await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    }
}
