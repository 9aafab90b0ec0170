//! Client request parsing: RESP multibulk arrays of bulk strings and inline commands, exactly
//! as Redis accepts them, with Redis's own protocol error strings and the configured limits.
//!
//! Written by hand rather than with redis-protocol's decoder because a request is a restricted
//! subset of RESP (a flat array of bulk strings, or an inline line), Redis answers each violation
//! with a specific error, and the limits must be checked from the length headers before the
//! body arrives: a generic decoder would buffer a 4 GB bulk before saying anything.
//!
//! The parser is resumable: a large request arriving in many reads is scanned once, not once per
//! read.

use bytes::{Bytes, BytesMut};

use crate::command::Command;

/// Longest inline line or length header Redis accepts before the newline (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Room made for a large argument before any of its bytes have arrived (see
/// [`RequestParser::wanted`]).
pub const PREALLOC_FREE: usize = 1 << 20;

/// Limits a request must respect.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string, in bytes (Redis's `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most arguments in one request.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
        }
    }
}

/// A request that breaks the protocol. The message is Redis's, without the `ERR ` prefix; the
/// connection answers `-ERR <message>` and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Progress through a multibulk request that has not fully arrived.
#[derive(Debug, Default)]
struct Partial {
    /// Arguments announced by the `*<n>` header.
    argc: usize,
    /// Argument ranges found so far, relative to the start of the buffer.
    args: Vec<(usize, usize)>,
    /// Where scanning resumes.
    pos: usize,
    /// Buffer length the argument being read needs, once its header has been read.
    need: usize,
}

/// Splits a stream of client bytes into commands.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            partial: None,
        }
    }

    /// Takes the next complete command off the front of `buf`. `Ok(None)` means more bytes are
    /// needed. Empty requests (`*0`, a blank inline line) are consumed silently, as in Redis.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            let parsed = if buf[0] == b'*' || self.partial.is_some() {
                self.multibulk(buf)?
            } else {
                inline(buf)?
            };
            match parsed {
                Parsed::Incomplete => return Ok(None),
                Parsed::Empty => continue,
                Parsed::Command(c) => return Ok(Some(c)),
            }
        }
    }

    /// How many more bytes to make room for, for the request in progress: what it is known to
    /// need, so a large argument is read into one allocation, but never more than
    /// [`PREALLOC_FREE`] or what has already arrived, whichever is more. A length header alone
    /// (`$536870912`) is twenty bytes a client can send on every connection: room follows the
    /// bytes that come, doubling at most, not the header's promise.
    pub fn wanted(&self, buffered: usize) -> usize {
        self.partial
            .as_ref()
            .map(|p| p.need.saturating_sub(buffered))
            .unwrap_or(0)
            .min(PREALLOC_FREE.max(buffered))
    }

    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Parsed, ProtocolError> {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some((line, next)) = line_at(buf, 1) else {
                    if buf.len() > INLINE_MAX {
                        return perr("too big mbulk count string");
                    }
                    return Ok(Parsed::Incomplete);
                };
                let n = parse_len(line);
                match n {
                    Some(n) if n > self.limits.max_array_len as i64 => {
                        return perr("invalid multibulk length")
                    }
                    Some(n) if n <= 0 => {
                        let _ = buf.split_to(next);
                        return Ok(Parsed::Empty);
                    }
                    Some(n) => Partial {
                        argc: n as usize,
                        // Never trust the header for an allocation.
                        args: Vec::with_capacity((n as usize).min(1024)),
                        pos: next,
                        need: 0,
                    },
                    None => return perr("invalid multibulk length"),
                }
            }
        };
        while p.args.len() < p.argc {
            if p.pos >= buf.len() {
                self.partial = Some(p);
                return Ok(Parsed::Incomplete);
            }
            if buf[p.pos] != b'$' {
                return perr(format!("expected '$', got '{}'", buf[p.pos] as char));
            }
            let Some((line, next)) = line_at(buf, p.pos + 1) else {
                if buf.len() - p.pos > INLINE_MAX {
                    return perr("too big bulk count string");
                }
                self.partial = Some(p);
                return Ok(Parsed::Incomplete);
            };
            let len = match parse_len(line) {
                Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 => n as usize,
                _ => return perr("invalid bulk length"),
            };
            // Redis skips the two bytes after the payload without checking they are CRLF.
            let end = next + len + 2;
            if buf.len() < end {
                // Resume at this argument's header (cheap to re-read); `wanted` reports the rest.
                p.need = end;
                self.partial = Some(p);
                return Ok(Parsed::Incomplete);
            }
            p.args.push((next, next + len));
            p.pos = end;
        }
        let raw = buf.split_to(p.pos).freeze();
        let args = p.args.iter().map(|&(a, b)| raw.slice(a..b)).collect();
        Ok(Parsed::Command(Command::new(raw, args)))
    }
}

enum Parsed {
    Incomplete,
    Empty,
    Command(Command),
}

/// The line starting at `from`, without its CRLF, and the index after the CRLF.
fn line_at(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = c_strchr(&buf[from.min(buf.len())..], b'\r')?;
    let cr = from + rel;
    if cr + 1 >= buf.len() {
        return None;
    }
    Some((&buf[from..cr], cr + 2))
}

/// Where `needle` first occurs in `hay`, as C's `strchr` finds it: Redis searches its query
/// buffer (a NUL-terminated string) with `strchr`, so a NUL byte before the needle hides it,
/// and Redis waits for more bytes (until the line limit) rather than answering. `None` then.
fn c_strchr(hay: &[u8], needle: u8) -> Option<usize> {
    let i = memchr::memchr2(needle, 0, hay)?;
    (hay[i] == needle).then_some(i)
}

/// Parses a decimal length as Redis's `string2ll` does (no sign but '-', no spaces).
fn parse_len(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    std::str::from_utf8(s)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|_| {
            // "+5" and "05" are not what Redis's string2ll accepts.
            s[0] != b'+' && !(s.len() > 1 && s[0] == b'0')
        })
}

/// Parses one inline command line (`SET a b\r\n`, as telnet sends it).
fn inline(buf: &mut BytesMut) -> Result<Parsed, ProtocolError> {
    let Some(nl) = c_strchr(buf, b'\n') else {
        if buf.len() > INLINE_MAX {
            return perr("too big inline request");
        }
        return Ok(Parsed::Incomplete);
    };
    let line = buf.split_to(nl + 1);
    let mut text = &line[..nl];
    if text.last() == Some(&b'\r') {
        text = &text[..text.len() - 1];
    }
    let args =
        split_args(text).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    if args.is_empty() {
        return Ok(Parsed::Empty);
    }
    Ok(Parsed::Command(Command::from_args(args)))
}

/// Splits a line into arguments the way Redis's `sdssplitargs` does: whitespace separates,
/// "double quotes" understand \n \r \t \b \a \\ \" and \xHH, 'single quotes' only \'.
/// `None` on unbalanced quotes or a closing quote not followed by a space.
///
/// The line is read as the C string it is in Redis: it ends at its first NUL byte, if any.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = &line[..memchr::memchr(0, line).unwrap_or(line.len())];
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && c_isspace(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if line[i] == b'"' {
                    if i + 1 < n && !c_isspace(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if line[i] == b'\'' {
                    if i + 1 < n && !c_isspace(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(cur));
    }
}

/// C's `isspace` in the "C" locale, as `sdssplitargs` uses it (Rust's `is_ascii_whitespace`
/// leaves out the vertical tab).
fn c_isspace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    (c as char).to_digit(16).unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(c) = p.next(&mut buf)? {
            out.push(c.args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline() {
        let got =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\nset k \"a b\\x41\"\n\r\n*0\r\n")
                .unwrap();
        assert_eq!(
            got,
            vec![
                args(&["GET", "a"]),
                args(&["PING"]),
                args(&["set", "k", "a bA"])
            ]
        );
    }

    #[test]
    fn byte_at_a_time_gives_the_same_commands() {
        let input = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$10\r\n0123456789\r\nPING\r\n";
        let mut p = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Some(c) = p.next(&mut buf).unwrap() {
                out.push(c.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
            }
        }
        assert_eq!(
            out,
            vec![args(&["SET", "hello", "0123456789"]), args(&["PING"])]
        );
    }

    #[test]
    fn raw_bytes_are_the_request() {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let c = p.next(&mut buf).unwrap().unwrap();
        assert_eq!(&c.raw[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(buf.len(), 14);
    }

    #[test]
    fn redis_protocol_errors() {
        let e = |i: &[u8]| parse_all(i).unwrap_err().to_string();
        assert_eq!(e(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(e(b"*1\r\n+OK\r\n"), "Protocol error: expected '$', got '+'");
        assert_eq!(e(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"*1\r\n$999999999999\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"set a \"b\n"),
            "Protocol error: unbalanced quotes in request"
        );
        let long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(e(&long), "Protocol error: too big inline request");
        let mut long = b"*1\r\n$".to_vec();
        long.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(e(&long), "Protocol error: too big bulk count string");
    }

    #[test]
    fn room_follows_the_bytes_not_the_header() {
        let mut big = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\nab"[..]);
        assert!(big.next(&mut buf).unwrap().is_none());
        assert_eq!(big.wanted(buf.len()), PREALLOC_FREE);
        // Once many bytes are in, room may double them.
        assert_eq!(big.wanted(4 << 20), 4 << 20);
        let mut small = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$100\r\nab"[..]);
        assert!(small.next(&mut buf).unwrap().is_none());
        assert_eq!(small.wanted(buf.len()), 4 + 6 + 102 - buf.len());
    }

    #[test]
    fn a_nul_hides_the_line_end_as_in_redis() {
        let e = |i: &[u8]| parse_all(i).map_err(|e| e.to_string());
        // Incomplete until the line limit, whatever follows.
        assert_eq!(e(b"a\x00b\r\nPING\r\n"), Ok(vec![]));
        assert_eq!(e(b"*1\x00\r\n$4\r\nPING\r\n"), Ok(vec![]));
        assert_eq!(e(b"*1\r\n$4\x00\r\nPING\r\n"), Ok(vec![]));
        let mut long = b"a\x00b\r\n".to_vec();
        long.extend(vec![b'x'; INLINE_MAX]);
        assert_eq!(
            e(&long),
            Err("Protocol error: too big inline request".to_string())
        );
        let mut long = b"*1\x00\r\n".to_vec();
        long.extend(vec![b'x'; INLINE_MAX]);
        assert_eq!(
            e(&long),
            Err("Protocol error: too big mbulk count string".to_string())
        );
        // After a line end, a NUL is an argument byte like any other.
        assert_eq!(
            e(b"*1\r\n$3\r\na\x00b\r\n"),
            Ok(vec![vec![b"a\x00b".to_vec()]])
        );
        // split_args reads a C string: it ends at the NUL.
        assert_eq!(split_args(b"a \x00 b").map(|v| v.len()), Some(1));
        assert_eq!(split_args(b"a\x0bb").map(|v| v.len()), Some(1));
        assert_eq!(split_args(b"\x0ba").map(|v| v.len()), Some(1));
    }

    #[test]
    fn limits_are_configurable() {
        let mut p = RequestParser::new(Limits {
            max_bulk_len: 4,
            max_array_len: 2,
        });
        let mut buf = BytesMut::from(&b"*1\r\n$5\r\nhello\r\n"[..]);
        assert!(p.next(&mut buf).is_err());
        let mut p = RequestParser::new(Limits {
            max_bulk_len: 4,
            max_array_len: 2,
        });
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert!(p.next(&mut buf).is_err());
    }

    #[test]
    fn split_args_like_sdssplitargs() {
        let s = |l: &str| {
            split_args(l.as_bytes()).map(|v| v.iter().map(|a| a.to_vec()).collect::<Vec<_>>())
        };
        assert_eq!(
            s("  a  'b c'  \"d\\ne\" "),
            Some(args(&["a", "b c", "d\ne"]))
        );
        assert_eq!(s("'it\\'s'"), Some(args(&["it's"])));
        assert_eq!(s("\"a\"b"), None);
        assert_eq!(s(""), Some(vec![]));
    }
}
