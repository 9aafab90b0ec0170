//! Rewriting replies: the stored values in a reply (which ones, the command's `Shape` says)
//! are replaced by their original bytes. Replies with no envelope in them (one `memmem` scan)
//! pass through untouched and uncopied.

use std::fmt::Write;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::Compressor;

/// Where the stored values are in a command's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A bulk string, or an array of them: GET, MGET, HMGET, HVALS, LRANGE, LPOP with a count.
    Values,
    /// `[key, value]`: BLPOP, BRPOP.
    Second,
    /// `[key, [value, ...]]`: LMPOP, BLMPOP.
    MPop,
    /// Field/value pairs: a flat array, a RESP3 map, or an array of `[field, value]` pairs
    /// (HGETALL, HRANDFIELD ... WITHVALUES).
    Pairs,
    /// `[cursor, [field, value, ...]]`: HSCAN.
    Scan,
    /// EXEC: one shape (with its keys) per queued command; `None` where nothing is decoded.
    Exec(Vec<Option<(Shape, Vec<Bytes>)>>),
}

/// The reply with every stored value at `shape`'s positions decoded. A value that cannot be
/// decoded turns the reply (for EXEC: that command's element) into an error naming its key.
/// `keys[i]` names the i-th value of an array reply (MGET); otherwise `keys[0]` does.
pub fn decode(c: &Compressor, raw: &Bytes, shape: &Shape, keys: &[Bytes]) -> Bytes {
    if !super::envelope::has_magic(raw) {
        return raw.clone();
    }
    let mut out = BytesMut::new();
    decode_into(c, raw, shape, keys, &mut out);
    out.freeze()
}

/// [`decode`], appending the reply to `out` (the embedded store's replies are written into
/// one buffer: decoding there saves a buffer and a copy per reply).
pub fn decode_into(c: &Compressor, raw: &[u8], shape: &Shape, keys: &[Bytes], out: &mut BytesMut) {
    let Some(end) = skip(raw, 0) else {
        return out.extend_from_slice(raw);
    };
    rewrite(c, raw, 0, end, shape, keys, out);
    out.extend_from_slice(&raw[end..]);
}

/// Appends the element at `pos..end`, decoded, to `out`.
fn rewrite(
    c: &Compressor,
    buf: &[u8],
    pos: usize,
    end: usize,
    shape: &Shape,
    keys: &[Bytes],
    out: &mut BytesMut,
) {
    if let Shape::Exec(parts) = shape {
        let Some((kind, n, mut p)) = header(buf, pos) else {
            return out.extend_from_slice(&buf[pos..end]);
        };
        if kind != b'*' || n < 0 {
            return out.extend_from_slice(&buf[pos..end]);
        }
        out.extend_from_slice(&buf[pos..p]);
        for i in 0..n as usize {
            let Some(e) = skip(buf, p) else { break };
            match parts.get(i) {
                Some(Some((s, k))) => rewrite(c, buf, p, e, s, k, out),
                _ => out.extend_from_slice(&buf[p..e]),
            }
            p = e;
        }
        return;
    }
    // Most replies hold one value (GET) or a few: no allocation for them.
    let mut targets: Targets = SmallVec::new();
    collect(buf, pos, shape, &mut targets);
    // Each enveloped value is decoded straight into the reply (no buffer of its own); the
    // bytes between values are copied as they are. A value that cannot be decoded turns the
    // whole element into the error naming its key.
    let mark = out.len();
    let mut at = pos;
    for &(i, start, data, data_end) in &targets {
        let v = &buf[data..data_end];
        let header = match super::envelope::header(v) {
            Ok(None) => continue,
            Ok(Some(h)) => Ok(h),
            Err(e) => {
                c.stats.corrupt.inc();
                Err(e)
            }
        };
        let r = header.and_then(|h| {
            out.extend_from_slice(&buf[at..start]);
            let _ = write!(out, "${}\r\n", h.original_len);
            c.decode_append(v, out)
        });
        if let Err(e) = r {
            out.truncate(mark);
            let key = keys.get(i).or(keys.first()).map_or(&b""[..], |k| &k[..]);
            let text = Compressor::error_text(key, &e).replace(['\r', '\n'], " ");
            out.extend_from_slice(b"-");
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
        out.extend_from_slice(b"\r\n");
        at = data_end + 2;
    }
    out.extend_from_slice(&buf[at..end]);
}

/// Bulk strings at the shape's value positions: (value index, element start, data start,
/// data end).
/// (value index, element start, data start, data end) of each value to decode.
type Targets = SmallVec<[(usize, usize, usize, usize); 4]>;

fn collect(buf: &[u8], pos: usize, shape: &Shape, t: &mut Targets) {
    let Some((kind, n, first)) = header(buf, pos) else {
        return;
    };
    let bulk = |i: usize, p: usize, t: &mut Targets| {
        if let Some((b'$', len, data)) = header(buf, p) {
            if len >= 0 {
                t.push((i, p, data, data + len as usize));
            }
        }
    };
    let children = |count: usize| -> Vec<usize> {
        let mut v = Vec::with_capacity(count);
        let mut p = first;
        for _ in 0..count {
            v.push(p);
            match skip(buf, p) {
                Some(e) => p = e,
                None => break,
            }
        }
        v
    };
    let is_array = matches!(kind, b'*' | b'~') && n >= 0;
    match shape {
        Shape::Values if kind == b'$' => bulk(0, pos, t),
        Shape::Values if is_array => {
            for (i, p) in children(n as usize).into_iter().enumerate() {
                bulk(i, p, t);
            }
        }
        Shape::Second if is_array && n == 2 => bulk(0, children(2)[1], t),
        Shape::MPop if is_array && n == 2 => collect(buf, children(2)[1], &Shape::Values, t),
        Shape::Scan if is_array && n == 2 => collect(buf, children(2)[1], &Shape::Pairs, t),
        Shape::Pairs if kind == b'%' && n >= 0 => {
            for (i, p) in children(2 * n as usize).into_iter().enumerate() {
                if i % 2 == 1 {
                    bulk(0, p, t);
                }
            }
        }
        Shape::Pairs if is_array => {
            let kids = children(n as usize);
            for (i, p) in kids.into_iter().enumerate() {
                if buf.get(p) == Some(&b'*') {
                    collect(buf, p, &Shape::Second, t);
                } else if i % 2 == 1 {
                    bulk(0, p, t);
                }
            }
        }
        _ => {}
    }
}

/// The payload of a bulk-string reply: `Some(None)` for a null, `None` for another type.
pub fn bulk_payload(raw: &[u8]) -> Option<Option<&[u8]>> {
    match header(raw, 0)? {
        (b'$', n, data) if n >= 0 => raw.get(data..data + n as usize).map(Some),
        (b'$', _, _) | (b'_', _, _) => Some(None),
        _ => None,
    }
}

/// Byte range of element `i` of a top-level array reply.
pub fn array_element(raw: &[u8], i: usize) -> Option<(usize, usize)> {
    let (kind, n, mut p) = header(raw, 0)?;
    if kind != b'*' || n < 0 || i >= n as usize {
        return None;
    }
    for _ in 0..i {
        p = skip(raw, p)?;
    }
    Some((p, skip(raw, p)?))
}

/// The spans of a top-level array's elements (`*n` or RESP3 `~n`), or None for another reply.
pub fn array_elements(buf: &[u8]) -> Option<Vec<(usize, usize)>> {
    let (kind, n, mut p) = header(buf, 0)?;
    if !matches!(kind, b'*' | b'~') || n < 0 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let e = skip(buf, p)?;
        out.push((p, e));
        p = e;
    }
    Some(out)
}

/// Type byte, length (or count; -1 for null) and the offset after the header line.
fn header(buf: &[u8], pos: usize) -> Option<(u8, i64, usize)> {
    let kind = *buf.get(pos)?;
    let nl = memchr::memchr(b'\n', buf.get(pos..)?)? + pos;
    let line = buf.get(pos + 1..nl.checked_sub(1)?)?;
    let n = match kind {
        b'$' | b'*' | b'%' | b'~' | b'>' | b'|' | b'=' | b'!' => {
            std::str::from_utf8(line).ok()?.parse::<i64>().ok()?
        }
        _ => 0,
    };
    Some((kind, n, nl + 1))
}

/// The end of the element that starts at `pos`.
fn skip(buf: &[u8], pos: usize) -> Option<usize> {
    let (kind, n, after) = header(buf, pos)?;
    match kind {
        b'$' | b'=' | b'!' if n >= 0 => Some(after + n as usize + 2).filter(|&e| e <= buf.len()),
        b'*' | b'~' | b'>' | b'%' | b'|' if n >= 0 => {
            let count = if matches!(kind, b'%' | b'|') {
                2 * n as usize
            } else {
                n as usize
            };
            let mut p = after;
            for _ in 0..count {
                p = skip(buf, p)?;
            }
            // An attribute precedes the element it describes.
            if kind == b'|' {
                return skip(buf, p);
            }
            Some(p)
        }
        _ => Some(after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::envelope::{compress, Codec};

    fn comp() -> Compressor {
        let cfg = crate::config::Compression::default();
        Compressor::new(&cfg, &Default::default(), &prometheus::Registry::new())
    }

    fn env(s: &str) -> Vec<u8> {
        compress(Codec::Zlib, 1, s.as_bytes()).unwrap()
    }

    fn bulk(v: &[u8]) -> Vec<u8> {
        let mut o = format!("${}\r\n", v.len()).into_bytes();
        o.extend_from_slice(v);
        o.extend_from_slice(b"\r\n");
        o
    }

    #[test]
    fn values_in_every_shape_are_decoded_and_the_rest_kept() {
        let c = comp();
        let e = env("hello hello hello");
        let keys = [Bytes::from("k")];
        let one = Bytes::from(bulk(&e));
        assert_eq!(
            &decode(&c, &one, &Shape::Values, &keys)[..],
            b"$17\r\nhello hello hello\r\n"
        );
        let mut arr = b"*3\r\n".to_vec();
        arr.extend(bulk(&e));
        arr.extend(b"$-1\r\n");
        arr.extend(bulk(b"raw"));
        assert_eq!(
            &decode(&c, &Bytes::from(arr), &Shape::Values, &keys)[..],
            b"*3\r\n$17\r\nhello hello hello\r\n$-1\r\n$3\r\nraw\r\n"
        );
        // A field that carries the magic is a field, not a value: left alone.
        let mut map = b"%1\r\n".to_vec();
        map.extend(bulk(&e));
        map.extend(bulk(&e));
        let got = decode(&c, &Bytes::from(map), &Shape::Pairs, &keys);
        let mut want = b"%1\r\n".to_vec();
        want.extend(bulk(&e));
        want.extend(b"$17\r\nhello hello hello\r\n");
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn a_corrupt_value_becomes_an_error_naming_its_key() {
        let c = comp();
        let mut e = env("hello hello hello");
        e[9] ^= 0xff;
        let mut arr = b"*2\r\n".to_vec();
        arr.extend(bulk(b"fine"));
        arr.extend(bulk(&e));
        let keys = [Bytes::from("a"), Bytes::from("b")];
        let got = decode(&c, &Bytes::from(arr), &Shape::Values, &keys);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "-ERR prescient cannot decode the stored value of key 'b': checksum mismatch\r\n"
        );
        // Inside EXEC only that command's element becomes the error.
        let mut exec = b"*2\r\n+OK\r\n".to_vec();
        exec.extend(bulk(&e));
        let shape = Shape::Exec(vec![None, Some((Shape::Values, vec![Bytes::from("z")]))]);
        let got = decode(&c, &Bytes::from(exec), &shape, &[]);
        assert!(String::from_utf8_lossy(&got).starts_with("*2\r\n+OK\r\n-ERR prescient"));
    }
}
