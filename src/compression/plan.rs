//! What compression does with each command, decided from the command alone.

use bytes::Bytes;

use super::reply::Shape;
use super::Compressor;
use crate::command::{Command, Values};

/// Commands whose stored values are encoded on the way in. APPEND and SETRANGE are not:
/// they edit a value's bytes and are byte-level commands.
const ENCODED: &[&str] = &[
    "set", "setnx", "setex", "psetex", "getset", "mset", "msetnx", "hset", "hmset", "hsetnx",
    "lpush", "rpush", "lpushx", "rpushx", "lset", "linsert", "lpos", "lrem",
];

/// Commands that read or edit the bytes of a string (or hash field) value, and so must see
/// the original bytes: on a Redis upstream they run as a read-modify-write (`rmw`); the
/// embedded store decodes envelopes itself.
pub const BYTE_LEVEL: &[&str] = &[
    "strlen",
    "getrange",
    "substr",
    "append",
    "setrange",
    "getbit",
    "setbit",
    "bitcount",
    "bitpos",
    "bitfield",
    "bitfield_ro",
    "lcs",
    "incrbyfloat",
    "hstrlen",
    "hincrbyfloat",
];

/// The arguments with every stored value encoded, or `None` when none changed. With
/// `compress` false, values are only escaped.
pub fn encode_args(c: &Compressor, cmd: &Command, compress: bool) -> Option<Vec<Bytes>> {
    let spec = cmd.spec?;
    // Most commands store no value: one field compare before any name lookup.
    if spec.values == Values::None || !ENCODED.contains(&spec.name) {
        return None;
    }
    let multi_key = matches!(spec.name, "mset" | "msetnx");
    let mut out: Option<Vec<Bytes>> = None;
    for i in spec.value_indexes(cmd.args.len()) {
        let key = if multi_key {
            &cmd.args[i - 1]
        } else {
            &cmd.args[1]
        };
        let v = &cmd.args[i];
        let e = c.encode_as(key, v, compress);
        if e.as_ptr() != v.as_ptr() || e.len() != v.len() {
            out.get_or_insert_with(|| cmd.args.clone())[i] = e;
        }
    }
    out
}

/// Where the stored values are in this command's reply, and the keys that name them.
pub fn decode_shape(cmd: &Command) -> Option<(Shape, Vec<Bytes>)> {
    let name = cmd.spec?.name;
    let a = &cmd.args;
    let first = || a.get(1).cloned().into_iter().collect::<Vec<_>>();
    let shape = match name {
        "get" | "getdel" | "getex" | "getset" | "set" | "lindex" | "lpop" | "rpop" | "lmove"
        | "rpoplpush" | "blmove" | "brpoplpush" | "hget" | "hmget" | "hvals" | "lrange" => {
            Shape::Values
        }
        "mget" => return Some((Shape::Values, a[1..].to_vec())),
        "blpop" | "brpop" => Shape::Second,
        "lmpop" | "blmpop" => Shape::MPop,
        "hgetall" => Shape::Pairs,
        "hrandfield" if a.len() == 4 => Shape::Pairs,
        "hscan" => Shape::Scan,
        _ => return None,
    };
    Some((shape, first()))
}

/// A byte-level command's values: string keys (LCS reads two), or a hash field (of one key;
/// of more only when a transaction moves values between them: see `Session::with_sources`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Strings(Vec<Bytes>),
    Field(Vec<Bytes>, Bytes),
}

/// The value a byte-level command works on; `None` for other commands (or too few
/// arguments, which the upstream rejects with its own arity error).
pub fn byte_target(cmd: &Command) -> Option<Target> {
    let spec = cmd.spec?;
    let name = spec.name;
    if !BYTE_LEVEL.contains(&name) || !spec.arity_ok(cmd.args.len()) {
        return None;
    }
    let a = &cmd.args;
    Some(match name {
        "lcs" => Target::Strings(vec![a[1].clone(), a[2].clone()]),
        "hstrlen" | "hincrbyfloat" => Target::Field(vec![a[1].clone()], a[2].clone()),
        _ => Target::Strings(vec![a[1].clone()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(args: &[&str]) -> Command {
        Command::from_args(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())))
    }

    fn comp(threshold: u64) -> Compressor {
        let cfg = crate::config::Compression {
            threshold_bytes: threshold,
            ..Default::default()
        };
        Compressor::new(&cfg, &Default::default(), &prometheus::Registry::new())
    }

    #[test]
    fn values_are_encoded_where_the_table_says_and_nowhere_else() {
        let c = comp(32);
        let big = "x".repeat(100);
        let cmd = mk(&["MSET", "k1", &big, "k2", "small"]);
        let args = encode_args(&c, &cmd, true).unwrap();
        assert!(super::super::envelope::is_enveloped(&args[2]));
        assert_eq!(&args[1][..], b"k1");
        assert_eq!(&args[4][..], b"small");
        // Keys and fields are never encoded; APPEND is byte-level.
        let cmd = mk(&["HSET", &big, &big, "v"]);
        assert!(encode_args(&c, &cmd, true).is_none());
        let cmd = mk(&["APPEND", "k", &big]);
        assert!(encode_args(&c, &cmd, true).is_none());
        // A small raw value that starts with the magic is escaped.
        let cmd = Command::from_args(
            [&b"SET"[..], &b"k"[..], &b"\xF5PZ!"[..]].map(Bytes::copy_from_slice),
        );
        let args = encode_args(&c, &cmd, true).unwrap();
        assert_eq!(args[2].len(), 4 + super::super::envelope::HEADER);
    }

    #[test]
    fn shapes_and_targets() {
        let cmd = Command::from_args(["MGET", "a", "b"]);
        assert_eq!(
            decode_shape(&cmd),
            Some((Shape::Values, vec![Bytes::from("a"), Bytes::from("b")]))
        );
        let cmd = Command::from_args(["HRANDFIELD", "h", "2"]);
        assert_eq!(decode_shape(&cmd), None);
        let cmd = Command::from_args(["LCS", "a", "b", "LEN"]);
        assert_eq!(
            byte_target(&cmd),
            Some(Target::Strings(vec![Bytes::from("a"), Bytes::from("b")]))
        );
        let cmd = Command::from_args(["STRLEN"]);
        assert_eq!(byte_target(&cmd), None);
    }
}
