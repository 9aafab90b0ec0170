//! Replies: finding where each upstream reply ends as its bytes arrive (so it can be forwarded
//! as raw bytes; [`ReplyScanner`]), and
//! `Value`, the small tree of replies the proxy composes itself (errors, INFO, PROXY, HELLO),
//! encoded for the client's protocol version through redis-protocol's encoders.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{OwnedFrame as F2, Resp2Frame};
use redis_protocol::resp3::types::{FrameMap, OwnedFrame as F3, Resp3Frame, VerbatimStringFormat};
use redis_protocol::{resp2, resp3};

/// The RESP version a client (or an upstream connection) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Resp2,
    Resp3,
}

impl Proto {
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// The length of the first complete reply in `buf`, or `None` if it has not fully arrived:
/// for a reply read whole (a handshake). A connection reading replies as they arrive keeps a
/// [`ReplyScanner`] instead.
pub fn reply_len(buf: &[u8], proto: Proto) -> Result<Option<usize>, String> {
    ReplyScanner::default().next_len(buf, proto)
}

/// The length of the first complete reply in `buf`, by redis-protocol's decoder, which
/// starts from the reply's first byte at every call: what the tests compare the scanner to.
#[cfg(test)]
fn decoded_len(buf: &[u8], proto: Proto) -> Result<Option<usize>, String> {
    let r = match proto {
        Proto::Resp2 => resp2::decode::decode_range(buf).map(|o| o.map(|(_, n)| n)),
        Proto::Resp3 => resp3::decode::complete::decode_range(buf).map(|o| o.map(|(_, n)| n)),
    };
    r.map_err(|e| e.to_string())
}

/// Finds where each reply ends in a buffer that fills over many reads, resuming where the
/// last call stopped: a reply of a million elements arriving in a hundred reads is scanned
/// once, where a decoder that starts over at each read scans it fifty times (redis-protocol
/// has no resumable decoder). Only frame boundaries are found, and each header checked; the
/// bytes are forwarded as they came.
///
/// Between calls the buffer may only grow at its end, until a call returns `Some(n)`; the
/// caller then removes those `n` bytes from its front, and the next reply starts afresh.
/// After an error the buffer's contents are not replies: drop it, or [`ReplyScanner::reset`].
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Where the next element of the reply in progress starts.
    pos: usize,
    /// Elements still to come in each aggregate open around `pos`, outermost first.
    open: Vec<u64>,
}

/// One element's header, as [`ReplyScanner`] reads it.
enum Element {
    /// Complete, ending at the offset.
    Done(usize),
    /// An aggregate of this many elements, its header ending at the offset.
    Open(usize, u64),
}

impl ReplyScanner {
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }

    /// The length of the first reply in `buf` if it is complete by now.
    pub fn next_len(&mut self, buf: &[u8], proto: Proto) -> Result<Option<usize>, String> {
        let r = self.scan(buf, proto);
        if !matches!(r, Ok(None)) {
            self.reset();
        }
        r
    }

    fn scan(&mut self, buf: &[u8], proto: Proto) -> Result<Option<usize>, String> {
        loop {
            match element(buf, self.pos, proto)? {
                None => return Ok(None),
                Some(Element::Open(end, n)) => {
                    self.pos = end;
                    self.open.push(n);
                }
                Some(Element::Done(end)) => {
                    self.pos = end;
                    // The element completes its aggregate, and maybe that one its own.
                    loop {
                        let Some(left) = self.open.last_mut() else {
                            return Ok(Some(end));
                        };
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// The header of the element starting at `at`, or `None` if it has not fully arrived.
fn element(buf: &[u8], at: usize, proto: Proto) -> Result<Option<Element>, String> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let resp3 = proto == Proto::Resp3;
    let Some(nl) = memchr::memchr(b'\n', &buf[at..]).map(|i| at + i) else {
        return Ok(None);
    };
    // `nl == at`: the element's type byte is itself a newline.
    if nl <= at + 1 || buf[nl - 1] != b'\r' {
        return Err(format!(
            "line not ended by CRLF in a {:?} frame",
            kind as char
        ));
    }
    let line = &buf[at + 1..nl - 1];
    let end = nl + 1;
    let done = |ok: bool| match ok {
        true => Ok(Some(Element::Done(end))),
        false => Err(format!(
            "invalid {:?} frame: {:?}",
            kind as char,
            String::from_utf8_lossy(line)
        )),
    };
    match kind {
        b'+' | b'-' => done(true),
        b':' => done(number(line).is_some()),
        b'_' if resp3 => done(line.is_empty()),
        b'#' if resp3 => done(line == b"t" || line == b"f"),
        b',' if resp3 => done(std::str::from_utf8(line).is_ok_and(|s| s.parse::<f64>().is_ok())),
        b'(' if resp3 => done(!line.is_empty()),
        // RESP3's streamed strings and aggregates (`$?`, `*?`): Redis sends none, and
        // redis-protocol's decoder, which framed replies before, refused them too.
        b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|' if resp3 && line == b"?" => Err(
            format!("streamed {:?} frames are not supported", kind as char),
        ),
        b'$' | b'!' | b'=' if kind == b'$' || resp3 => match number(line) {
            Some(-1) if kind == b'$' => done(true),
            Some(n) if n >= 0 => {
                let n = n as usize;
                let Some(stop) = end.checked_add(n).and_then(|s| s.checked_add(2)) else {
                    return done(false);
                };
                if buf.len() < stop {
                    return Ok(None);
                }
                if &buf[stop - 2..stop] != b"\r\n" {
                    return Err(format!(
                        "{:?} frame of {n} bytes not ended by CRLF",
                        kind as char
                    ));
                }
                Ok(Some(Element::Done(stop)))
            }
            _ => done(false),
        },
        b'*' | b'%' | b'~' | b'>' | b'|' if kind == b'*' || resp3 => match number(line) {
            Some(-1) if kind == b'*' => done(true),
            Some(0) if kind != b'|' => done(true),
            // A map's and an attribute's entries are pairs; an attribute comes before the
            // reply it annotates, which is part of the same frame.
            Some(n) if n >= 0 => {
                let n = n as u64;
                let elements = match kind {
                    b'%' => n.checked_mul(2),
                    b'|' => n.checked_mul(2).and_then(|e| e.checked_add(1)),
                    _ => Some(n),
                };
                match elements {
                    Some(e) => Ok(Some(Element::Open(end, e))),
                    None => done(false),
                }
            }
            _ => done(false),
        },
        _ => Err(format!("unknown frame type {:?}", kind as char)),
    }
}

/// A RESP integer: an optional sign, then decimal digits (as an `i64` parses).
fn number(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// Whether a raw reply is a RESP3 push (`>`), which arrives outside request/reply order.
pub fn is_push(raw: &[u8]) -> bool {
    raw.first() == Some(&b'>')
}

/// Whether a raw reply is an error (`-` or the RESP3 blob error `!`).
pub fn is_error(raw: &[u8]) -> bool {
    matches!(raw.first(), Some(b'-') | Some(b'!'))
}

/// A reply composed by the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Value>),
    /// A map in RESP3, a flat array of alternating keys and values in RESP2.
    Map(Vec<(Value, Value)>),
    /// Text for humans: a verbatim string in RESP3, a bulk string in RESP2 (as Redis's INFO).
    Verbatim(String),
}

impl Value {
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error reply; `msg` starts with its code (`ERR ...`, `NOAUTH ...`).
    pub fn err(msg: impl Into<String>) -> Value {
        Value::Error(msg.into())
    }

    pub fn bulk(b: impl Into<Bytes>) -> Value {
        Value::Bulk(b.into())
    }

    pub fn text(s: impl AsRef<str>) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_ref().as_bytes()))
    }

    /// Encodes the value for `proto`, appended to `out`.
    pub fn encode_into(&self, proto: Proto, out: &mut BytesMut) {
        // Encoding an in-memory frame into a buffer of its own encoded length cannot fail.
        let start = out.len();
        let r = match proto {
            Proto::Resp2 => {
                let f = self.to_resp2();
                out.resize(start + f.encode_len(false), 0);
                resp2::encode::encode(&mut out[start..], &f, false)
            }
            Proto::Resp3 => {
                let f = self.to_resp3();
                out.resize(start + f.encode_len(false), 0);
                resp3::encode::complete::encode(&mut out[start..], &f, false)
            }
        };
        debug_assert!(r.is_ok(), "encoding a composed reply failed: {r:?}");
    }

    pub fn encode(&self, proto: Proto) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(proto, &mut out);
        out.freeze()
    }

    fn to_resp2(&self) -> F2 {
        match self {
            Value::Simple(s) => F2::SimpleString(s.clone().into_bytes()),
            Value::Error(s) => F2::Error(one_line(s)),
            Value::Int(i) => F2::Integer(*i),
            Value::Bulk(b) => F2::BulkString(b.to_vec()),
            Value::Nil => F2::Null,
            Value::Array(v) => F2::Array(v.iter().map(Value::to_resp2).collect()),
            Value::Map(kv) => F2::Array(
                kv.iter()
                    .flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()])
                    .collect(),
            ),
            Value::Verbatim(s) => F2::BulkString(s.clone().into_bytes()),
        }
    }

    fn to_resp3(&self) -> F3 {
        match self {
            Value::Simple(s) => F3::SimpleString {
                data: s.clone().into_bytes(),
                attributes: None,
            },
            Value::Error(s) => F3::SimpleError {
                data: one_line(s),
                attributes: None,
            },
            Value::Int(i) => F3::Number {
                data: *i,
                attributes: None,
            },
            Value::Bulk(b) => F3::BlobString {
                data: b.to_vec(),
                attributes: None,
            },
            Value::Nil => F3::Null,
            Value::Array(v) => F3::Array {
                data: v.iter().map(Value::to_resp3).collect(),
                attributes: None,
            },
            Value::Map(kv) => {
                let mut m = FrameMap::default();
                for (k, v) in kv {
                    m.insert(k.to_resp3(), v.to_resp3());
                }
                F3::Map {
                    data: m,
                    attributes: None,
                }
            }
            Value::Verbatim(s) => F3::VerbatimString {
                data: s.clone().into_bytes(),
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
        }
    }
}

/// Simple strings and errors cannot hold line breaks.
fn one_line(s: &str) -> String {
    error_line(s).into_owned()
}

/// An error or status message made one RESP line as Redis makes it (`addReplyErrorFormat`):
/// line breaks at the end trimmed, those inside turned to spaces, so text a client sent (an
/// option name with a newline in it) cannot break the reply's framing.
pub fn error_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\r', '\n']) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.trim_end_matches(['\r', '\n']).replace(['\r', '\n'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_len_finds_frame_ends() {
        assert_eq!(reply_len(b"+OK\r\n+O", Proto::Resp2).unwrap(), Some(5));
        assert_eq!(reply_len(b"$3\r\nab", Proto::Resp2).unwrap(), None);
        assert_eq!(
            reply_len(b"*2\r\n$1\r\na\r\n:1\r\n", Proto::Resp2).unwrap(),
            Some(15)
        );
        assert_eq!(reply_len(b"$-1\r\n", Proto::Resp2).unwrap(), Some(5));
        assert_eq!(
            reply_len(b"%1\r\n+a\r\n:1\r\n", Proto::Resp3).unwrap(),
            Some(12)
        );
        assert_eq!(reply_len(b">2\r\n+a\r\n", Proto::Resp3).unwrap(), None);
        assert!(reply_len(b"?what\r\n", Proto::Resp2).is_err());
    }

    #[test]
    fn scanner_resumes_where_it_stopped_and_starts_afresh_after_each_reply() {
        let mut s = ReplyScanner::default();
        let buf = b"*3\r\n$1\r\na\r\n*1\r\n:7\r\n$2\r\nbc\r\n+OK\r\n";
        assert_eq!(s.next_len(&buf[..12], Proto::Resp2).unwrap(), None);
        // The first element is behind it: the scan goes on from the second.
        assert_eq!(s.pos, 11);
        assert_eq!(s.open, [2]);
        assert_eq!(s.next_len(&buf[..20], Proto::Resp2).unwrap(), None);
        assert_eq!(s.next_len(&buf[..], Proto::Resp2).unwrap(), Some(27));
        assert_eq!((s.pos, s.open.len()), (0, 0));
        assert_eq!(s.next_len(&buf[27..], Proto::Resp2).unwrap(), Some(5));
        // An attribute comes with the reply it annotates; streamed aggregates are refused,
        // as redis-protocol refused them.
        let attr = b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n";
        assert_eq!(reply_len(attr, Proto::Resp3).unwrap(), Some(attr.len()));
        assert_eq!(reply_len(&attr[..17], Proto::Resp3).unwrap(), None);
        let streamed = b"*?\r\n:1\r\n.\r\n";
        assert!(reply_len(streamed, Proto::Resp3).is_err());
        assert!(decoded_len(streamed, Proto::Resp3).is_err());
    }

    #[test]
    fn error_lines_are_one_line() {
        assert_eq!(error_line("ERR fine"), "ERR fine");
        assert_eq!(
            error_line("ERR Unsupported option \nN"),
            "ERR Unsupported option  N"
        );
        assert_eq!(error_line("ERR x\r\n"), "ERR x");
    }

    #[test]
    fn scanner_refuses_bad_frames() {
        for bad in [
            &b"$3\r\nabcd\r\n"[..],
            b":12a\r\n",
            b"+OK\n",
            b"*x\r\n",
            b"$-2\r\n",
            b"?\r\n",
            // A newline as the type byte (found by the reply_scanner fuzz target: the line
            // check read the byte before the buffer).
            b"\n",
            b"\n+OK\r\n",
            b"*2\r\n+a\r\n\n",
        ] {
            assert!(reply_len(bad, Proto::Resp2).is_err(), "{bad:?}");
        }
        // RESP3 types are not RESP2's.
        assert!(reply_len(b"_\r\n", Proto::Resp2).is_err());
        assert!(reply_len(b"#x\r\n", Proto::Resp3).is_err());
        assert!(reply_len(b"%-1\r\n", Proto::Resp3).is_err());
    }

    /// Encodes `body` as a blob of type `kind`.
    fn blob(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(format!("{}\r\n", body.len()).as_bytes());
        v.extend_from_slice(body);
        v.extend_from_slice(b"\r\n");
        v
    }

    fn aggregate(kind: u8, count: usize, parts: Vec<Vec<u8>>) -> Vec<u8> {
        let mut v = format!("{}{count}\r\n", kind as char).into_bytes();
        parts.into_iter().for_each(|p| v.extend(p));
        v
    }

    /// Any reply a Redis server may send in `proto`.
    fn any_reply(proto: Proto) -> proptest::strategy::BoxedStrategy<Vec<u8>> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        let text = "[a-zA-Z0-9 :.]{0,12}";
        let mut leaves = vec![
            text.prop_map(|s| format!("+{s}\r\n").into_bytes()).boxed(),
            text.prop_map(|s| format!("-ERR {s}\r\n").into_bytes())
                .boxed(),
            any::<i64>()
                .prop_map(|n| format!(":{n}\r\n").into_bytes())
                .boxed(),
            vec(any::<u8>(), 0..40).prop_map(|b| blob(b'$', &b)).boxed(),
        ];
        if proto == Proto::Resp2 {
            leaves.push(Just(b"$-1\r\n".to_vec()).boxed());
            leaves.push(Just(b"*-1\r\n".to_vec()).boxed());
        } else {
            leaves.push(Just(b"_\r\n".to_vec()).boxed());
            leaves.push(
                any::<bool>()
                    .prop_map(|b| {
                        if b {
                            b"#t\r\n".to_vec()
                        } else {
                            b"#f\r\n".to_vec()
                        }
                    })
                    .boxed(),
            );
            leaves.push(
                any::<f64>()
                    .prop_map(|f| format!(",{f}\r\n").into_bytes())
                    .boxed(),
            );
            leaves.push(
                any::<i128>()
                    .prop_map(|n| format!("({n}\r\n").into_bytes())
                    .boxed(),
            );
            leaves.push(vec(any::<u8>(), 0..40).prop_map(|b| blob(b'!', &b)).boxed());
            leaves.push(
                "[a-z ]{0,20}"
                    .prop_map(|s| blob(b'=', format!("txt:{s}").as_bytes()))
                    .boxed(),
            );
        }
        // Set members and map keys are strings and integers (redis-protocol refuses
        // aggregates and doubles there, and Redis sends none).
        let keys = proptest::strategy::Union::new(leaves[..4].to_vec()).boxed();
        let leaf = proptest::strategy::Union::new(leaves);
        leaf.prop_recursive(4, 64, 6, move |inner| {
            let mut nodes = vec![vec(inner.clone(), 0..6)
                .prop_map(|v| aggregate(b'*', v.len(), v))
                .boxed()];
            if proto == Proto::Resp3 {
                nodes.push(
                    vec(inner.clone(), 0..6)
                        .prop_map(|v| aggregate(b'>', v.len(), v))
                        .boxed(),
                );
                nodes.push(
                    vec(keys.clone(), 0..6)
                        .prop_map(|v| aggregate(b'~', v.len(), v))
                        .boxed(),
                );
                nodes.push(
                    vec((keys.clone(), inner.clone()), 0..4)
                        .prop_map(|v| {
                            let n = v.len();
                            aggregate(b'%', n, v.into_iter().flat_map(|(k, v)| [k, v]).collect())
                        })
                        .boxed(),
                );
            }
            proptest::strategy::Union::new(nodes)
        })
        .boxed()
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn scanner_agrees_with_redis_protocol_however_the_reply_is_cut(
            (proto, reply) in proptest::prop_oneof![
                any_reply(Proto::Resp2).prop_map(|r| (Proto::Resp2, r)),
                any_reply(Proto::Resp3).prop_map(|r| (Proto::Resp3, r)),
            ],
            step in 1usize..8,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let mut buf = reply.clone();
            buf.extend_from_slice(&tail);
            // Whole, and what redis-protocol says.
            proptest::prop_assert_eq!(decoded_len(&buf, proto), Ok(Some(reply.len())));
            proptest::prop_assert_eq!(reply_len(&buf, proto), Ok(Some(reply.len())));
            // Arriving a few bytes at a time, to one scanner.
            let mut s = ReplyScanner::default();
            let mut cut = 0;
            while cut + step < reply.len() {
                cut += step;
                proptest::prop_assert_eq!(s.next_len(&buf[..cut], proto), Ok(None));
            }
            proptest::prop_assert_eq!(s.next_len(&buf, proto), Ok(Some(reply.len())));
        }

        #[test]
        fn scanner_never_panics_and_agrees_on_what_both_accept(
            resp3 in proptest::prelude::any::<bool>(),
            kind in proptest::sample::select(b"+-:$*_#,(!=%~>|?".to_vec()),
            body in proptest::collection::vec(proptest::sample::select(b"0123456789-?\r\n*$:+abc".to_vec()), 0..40),
        ) {
            let proto = if resp3 { Proto::Resp3 } else { Proto::Resp2 };
            let mut buf = vec![kind];
            buf.extend_from_slice(&body);
            let ours = reply_len(&buf, proto);
            if let Ok(Some(n)) = ours {
                proptest::prop_assert!(n <= buf.len());
                if let Ok(Some(m)) = decoded_len(&buf, proto) {
                    proptest::prop_assert_eq!(n, m);
                }
            }
        }
    }

    #[test]
    fn values_encode_per_protocol() {
        let m = Value::Map(vec![(Value::text("a"), Value::Int(1))]);
        assert_eq!(&m.encode(Proto::Resp2)[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&m.encode(Proto::Resp3)[..], b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&Value::Nil.encode(Proto::Resp2)[..], b"$-1\r\n");
        assert_eq!(&Value::Nil.encode(Proto::Resp3)[..], b"_\r\n");
        assert_eq!(
            &Value::err("ERR x\ny").encode(Proto::Resp2)[..],
            b"-ERR x y\r\n"
        );
        assert_eq!(
            &Value::Verbatim("hi".into()).encode(Proto::Resp3)[..],
            b"=6\r\ntxt:hi\r\n"
        );
    }
}
