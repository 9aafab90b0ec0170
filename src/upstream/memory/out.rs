//! Reply encoding for the embedded store: RESP2 or RESP3 written straight into a buffer, with
//! Redis's exact forms (null bulk vs null array in RESP2, maps as flat arrays in RESP2,
//! doubles as Redis 7.0 prints them).

use bytes::{BufMut, BytesMut};

use crate::protocol::Proto;

pub struct Out {
    pub buf: BytesMut,
    pub proto: Proto,
}

impl Out {
    pub fn new(proto: Proto) -> Out {
        Out {
            buf: BytesMut::with_capacity(64),
            proto,
        }
    }

    fn line(&mut self, prefix: u8, n: impl itoa::Integer) {
        self.buf.put_u8(prefix);
        self.buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, s: &str) {
        self.buf.put_u8(b'+');
        self.buf.put_slice(s.as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    /// An error; `msg` includes its code (`ERR ...`, `WRONGTYPE ...`).
    pub fn err(&mut self, msg: &str) {
        self.buf.put_u8(b'-');
        self.buf
            .put_slice(crate::protocol::reply::error_line(msg).as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.line(b'$', b.len() as i64);
        self.buf.put_slice(b);
        self.buf.put_slice(b"\r\n");
    }

    /// A missing value: `$-1` in RESP2.
    pub fn nil(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// A missing array: `*-1` in RESP2.
    pub fn nil_array(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.put_slice(b"*-1\r\n"),
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map of `n` pairs: `%n` in RESP3, `*2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.line(b'*', 2 * n as i64),
            Proto::Resp3 => self.line(b'%', n as i64),
        }
    }

    /// A set of `n` members: `~n` in RESP3, `*n` in RESP2.
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.line(b'*', n as i64),
            Proto::Resp3 => self.line(b'~', n as i64),
        }
    }

    /// A push frame (pub/sub messages): `>n` in RESP3, `*n` in RESP2.
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.line(b'*', n as i64),
            Proto::Resp3 => self.line(b'>', n as i64),
        }
    }

    /// A double as Redis 7.0 replies: a bulk string of `%.17g` in RESP2, `,` in RESP3.
    pub fn double(&mut self, d: f64) {
        let s = fmt_double(d);
        match self.proto {
            Proto::Resp2 => self.bulk(s.as_bytes()),
            Proto::Resp3 => {
                self.buf.put_u8(b',');
                self.buf.put_slice(s.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    pub fn bulks<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.array(items.len());
        for i in items {
            self.bulk(i);
        }
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }
}

/// Redis 7.0's `%.17g` for scores, with `inf`/`-inf` spelled as Redis spells them.
pub fn fmt_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // %.17g: 17 significant digits; exponent form when exp < -4 or exp >= 17; trailing zeros
    // (and a trailing point) removed.
    let sci = format!("{:.16e}", d);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = (16 - exp).max(0) as usize;
    trim_zeros(&format!("{:.*}", decimals, d)).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Redis's human-friendly long double (INCRBYFLOAT, HINCRBYFLOAT): the shortest decimal that
/// reads back as the same double, never in exponent form.
pub fn fmt_human(d: f64) -> String {
    let s = format!("{d}");
    if s.contains('e') {
        format!("{d:.17}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_as_redis_7_0_prints_them() {
        assert_eq!(fmt_double(1.5), "1.5");
        assert_eq!(fmt_double(1.1), "1.1000000000000001");
        assert_eq!(fmt_double(3.0), "3");
        assert_eq!(fmt_double(-2.25), "-2.25");
        assert_eq!(fmt_double(1e20), "1e+20");
        assert_eq!(fmt_double(0.0001), "0.0001");
        assert_eq!(fmt_double(0.00001), "1.0000000000000001e-05");
        assert_eq!(fmt_double(f64::INFINITY), "inf");
        assert_eq!(fmt_double(123456789.0), "123456789");
        assert_eq!(fmt_human(10.6), "10.6");
        assert_eq!(fmt_human(3.0), "3");
    }

    #[test]
    fn integers() {
        let mut o = Out::new(Proto::Resp2);
        o.int(-42);
        o.int(i64::MIN);
        assert_eq!(&o.buf[..], b":-42\r\n:-9223372036854775808\r\n");
    }
}
