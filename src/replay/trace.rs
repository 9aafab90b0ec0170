//! Trace readers: each format becomes a list of demand reads `(time, client, key, size)`.
//!
//! - `nasa`: the Internet Traffic Archive TSV (`host logname time method url response
//!   bytes`); only GETs answered 200 or 304; client = host, key = url.
//! - `oracle`: libCacheSim's oracleGeneral binary, 24-byte little-endian records
//!   `<u32 time, u64 id, u32 size, i64 next>`; one client; key = the id in decimal.
//! - `monitor`: `redis-cli MONITOR` output; client = the address; every key of a read
//!   command (the command table decides).
//! - `csv`: `time,client,key[,size]`, with or without a header.
//! - `accesslog`: the proxy's own access log (tracking/accesslog.rs).
//!
//! A line that does not parse is counted and skipped, not fatal: real logs have junk.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;

use crate::command::lookup;
use crate::tracking::template::hash_bytes;
use crate::tracking::{accesslog, is_tracked_read};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Nasa,
    Oracle,
    Monitor,
    Csv,
    AccessLog,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "nasa" => Format::Nasa,
            "oracle" => Format::Oracle,
            "monitor" => Format::Monitor,
            "csv" => Format::Csv,
            "accesslog" => Format::AccessLog,
            _ => {
                return Err(format!(
                    "unknown trace format '{s}' (nasa|oracle|monitor|csv|accesslog)"
                ))
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Access {
    pub time: f64,
    pub client: u32,
    pub key: Bytes,
    /// [`hash_bytes`] of the key: the model's identity for it, computed once as the trace
    /// is read rather than by each stage of the replay.
    pub hash: u64,
    pub size: u64,
}

impl Access {
    pub fn new(time: f64, client: u32, key: Bytes, size: u64) -> Access {
        Access {
            time,
            client,
            hash: hash_bytes(&key),
            key,
            size: size.max(1),
        }
    }
}

#[derive(Default, Debug)]
pub struct Trace {
    pub accesses: Vec<Access>,
    pub clients: usize,
    /// Lines or records that did not parse, or requests that are not demand reads.
    pub skipped: usize,
}

#[derive(Default)]
struct Builder {
    trace: Trace,
    clients: HashMap<Bytes, u32>,
}

impl Builder {
    fn push(&mut self, time: f64, client: &[u8], key: Bytes, size: u64) {
        let next = self.clients.len() as u32;
        let client = *self
            .clients
            .entry(Bytes::copy_from_slice(client))
            .or_insert(next);
        self.trace
            .accesses
            .push(Access::new(time, client, key, size));
    }

    fn finish(mut self) -> Trace {
        self.trace.clients = self.clients.len();
        self.trace
    }
}

pub fn read(data: &[u8], format: Format) -> Result<Trace, String> {
    let mut b = Builder::default();
    if format == Format::Oracle {
        if !data.len().is_multiple_of(24) {
            return Err(format!(
                "oracleGeneral trace length {} is not a multiple of 24 bytes",
                data.len()
            ));
        }
        for r in data.chunks_exact(24) {
            let le32 = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
            let id = u64::from_le_bytes(r[4..12].try_into().unwrap_or_default());
            b.push(
                f64::from(le32(&r[0..4])),
                b"",
                Bytes::from(id.to_string()),
                u64::from(le32(&r[12..16])),
            );
        }
        return Ok(b.finish());
    }
    let text = String::from_utf8_lossy(data);
    for (n, line) in text.lines().enumerate() {
        let ok = match format {
            Format::Nasa => n == 0 || nasa(&mut b, line),
            Format::Csv => csv(&mut b, line) || n == 0,
            Format::Monitor => monitor(&mut b, line),
            Format::AccessLog => match accesslog::parse(line) {
                Some((t, ctx, _, key)) => {
                    b.push(t, &ctx, key, 1);
                    true
                }
                None => false,
            },
            Format::Oracle => unreachable!("handled above"),
        };
        if !ok && !line.is_empty() {
            b.trace.skipped += 1;
        }
    }
    Ok(b.finish())
}

fn nasa(b: &mut Builder, line: &str) -> bool {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 7 {
        return false;
    }
    let Ok(time) = f[2].parse::<f64>() else {
        return false;
    };
    if f[3] != "GET" || !(f[5] == "200" || f[5] == "304") {
        return false;
    }
    let size = f[6].parse().unwrap_or(0);
    b.push(
        time,
        f[0].as_bytes(),
        Bytes::copy_from_slice(f[4].as_bytes()),
        size,
    );
    true
}

fn csv(b: &mut Builder, line: &str) -> bool {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() < 3 || f.len() > 4 {
        return false;
    }
    let Ok(time) = f[0].parse::<f64>() else {
        return false;
    };
    let size = match f.get(3) {
        Some(s) => match s.parse() {
            Ok(v) => v,
            Err(_) => return false,
        },
        None => 1,
    };
    b.push(
        time,
        f[1].as_bytes(),
        Bytes::copy_from_slice(f[2].as_bytes()),
        size,
    );
    true
}

/// `1339518083.107412 [0 127.0.0.1:60866] "GET" "key"`.
fn monitor(b: &mut Builder, line: &str) -> bool {
    let Some((time, rest)) = line.split_once(' ') else {
        return false;
    };
    let Ok(time) = time.parse::<f64>() else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('[') else {
        return false;
    };
    let Some((client, rest)) = rest.split_once("] ") else {
        return false;
    };
    let client = client.split_once(' ').map_or(client, |(_, addr)| addr);
    let Some(args) = monitor_args(rest.as_bytes()) else {
        return false;
    };
    let Some(spec) = args.first().and_then(|name| lookup(name)) else {
        return false;
    };
    if !is_tracked_read(spec) {
        return false;
    }
    for i in spec.key_indexes(&args) {
        b.push(time, client.as_bytes(), args[i].clone(), 1);
    }
    true
}

/// The quoted arguments of a MONITOR line, unescaped (`\"`, `\\`, `\n`, `\xHH`, ...).
fn monitor_args(mut s: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    loop {
        while s.first() == Some(&b' ') {
            s = &s[1..];
        }
        if s.is_empty() {
            return Some(args);
        }
        s = s.strip_prefix(b"\"")?;
        let mut arg = Vec::new();
        loop {
            match *s.first()? {
                b'"' => {
                    s = &s[1..];
                    break;
                }
                b'\\' => {
                    let (c, used) = match *s.get(1)? {
                        b'n' => (b'\n', 2),
                        b'r' => (b'\r', 2),
                        b't' => (b'\t', 2),
                        b'a' => (7, 2),
                        b'b' => (8, 2),
                        b'x' => {
                            let hex = std::str::from_utf8(s.get(2..4)?).ok()?;
                            (u8::from_str_radix(hex, 16).ok()?, 4)
                        }
                        c => (c, 2),
                    };
                    arg.push(c);
                    s = &s[used..];
                }
                c => {
                    arg.push(c);
                    s = &s[1..];
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(t: &Trace) -> Vec<(u32, &[u8])> {
        t.accesses.iter().map(|a| (a.client, &a.key[..])).collect()
    }

    #[test]
    fn nasa_keeps_successful_gets() {
        let data = "host\tlogname\ttime\tmethod\turl\tresponse\tbytes\t\t\n\
            a\t-\t1\tGET\t/x\t200\t10\t\t\n\
            b\t-\t2\tGET\t/y\t304\t0\t\t\n\
            a\t-\t3\tGET\t/z\t404\t0\t\t\n\
            a\t-\t4\tPOST\t/x\t200\t0\t\t\n\
            b\t-\t5\tGET\t/x\t200\t7\t\t\n";
        let t = read(data.as_bytes(), Format::Nasa).unwrap();
        assert_eq!(keys(&t), vec![(0, &b"/x"[..]), (1, b"/y"), (1, b"/x")]);
        assert_eq!(t.clients, 2);
        assert_eq!(t.skipped, 2);
    }

    #[test]
    fn oracle_records_are_24_bytes() {
        let mut d = Vec::new();
        for (ts, id, size) in [(5u32, 42u64, 512u32), (6, 43, 4096)] {
            d.extend_from_slice(&ts.to_le_bytes());
            d.extend_from_slice(&id.to_le_bytes());
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&(-1i64).to_le_bytes());
        }
        let t = read(&d, Format::Oracle).unwrap();
        assert_eq!(keys(&t), vec![(0, &b"42"[..]), (0, b"43")]);
        assert_eq!(t.accesses[1].size, 4096);
        assert!(read(&d[..30], Format::Oracle).is_err());
    }

    #[test]
    fn monitor_lines_give_the_keys_of_reads() {
        let data = "OK\n\
            1339518083.107412 [0 127.0.0.1:60866] \"GET\" \"user:1\"\n\
            1339518083.2 [0 127.0.0.1:60867] \"SET\" \"user:1\" \"x\"\n\
            1339518083.3 [0 127.0.0.1:60866] \"MGET\" \"a\\\"b\" \"c\\x00\"\n";
        let t = read(data.as_bytes(), Format::Monitor).unwrap();
        assert_eq!(
            keys(&t),
            vec![(0, &b"user:1"[..]), (0, b"a\"b"), (0, b"c\x00")]
        );
        assert_eq!(t.skipped, 2);
    }

    #[test]
    fn csv_with_and_without_header_and_sizes() {
        let t = read(
            b"time,client,key,size\n1,c1,k1,10\n2,c2,k2,20\nbad\n",
            Format::Csv,
        )
        .unwrap();
        assert_eq!(keys(&t), vec![(0, &b"k1"[..]), (1, b"k2")]);
        assert_eq!(t.accesses[1].size, 20);
        assert_eq!(t.skipped, 1);
        let t = read(b"1,c1,k1\n", Format::Csv).unwrap();
        assert_eq!(t.accesses.len(), 1);
    }

    #[test]
    fn access_logs_read_back() {
        let log = accesslog::line(10.0, b"7", "GET", b"k:1")
            + &accesslog::line(11.0, b"8", "HGET", b"k 2");
        let t = read(log.as_bytes(), Format::AccessLog).unwrap();
        assert_eq!(keys(&t), vec![(0, &b"k:1"[..]), (1, b"k 2")]);
    }
}
