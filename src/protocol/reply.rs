//! Replies: finding where one upstream reply ends (so it can be forwarded as raw bytes), and
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

/// The length of the first complete reply in `buf`, or `None` if it has not fully arrived.
pub fn reply_len(buf: &[u8], proto: Proto) -> Result<Option<usize>, String> {
    let r = match proto {
        Proto::Resp2 => resp2::decode::decode_range(buf).map(|o| o.map(|(_, n)| n)),
        Proto::Resp3 => resp3::decode::complete::decode_range(buf).map(|o| o.map(|(_, n)| n)),
    };
    r.map_err(|e| e.to_string())
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
    s.replace(['\r', '\n'], " ")
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
