//! Bit commands on strings: GETBIT, SETBIT, BITCOUNT, BITPOS, BITFIELD, BITFIELD_RO. Ported
//! from Redis 7.0's bitops.c, replies and errors included; they work on the original bytes of
//! a value stored compressed (the store decodes it first and stores the result re-encoded).

use bytes::Bytes;

use super::strings::{set_keep_ttl, string_of};
use super::{parse_i64, Ctx, Handler, Out, NOT_INT, SYNTAX};

/// The family's commands and their handlers.
pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("getbit", cmd_getbit),
    ("setbit", cmd_setbit),
    ("bitcount", cmd_bitcount),
    ("bitpos", cmd_bitpos),
    ("bitfield", cmd_bitfield),
    ("bitfield_ro", cmd_bitfield),
];

const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
/// proto-max-bulk-len: the largest string, in bytes.
const MAX_BYTES: i64 = 512 * 1024 * 1024;

/// A bit offset argument; `#n` (BITFIELD) counts in units of `bits`.
fn bit_offset(arg: &[u8], hash_bits: Option<u32>) -> Result<u64, &'static str> {
    let (digits, unit) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (&arg[1..], bits as i64),
        _ => (arg, 1),
    };
    let n = parse_i64(digits).ok_or(BAD_OFFSET)?.wrapping_mul(unit);
    if n < 0 || (n >> 3) >= MAX_BYTES {
        return Err(BAD_OFFSET);
    }
    Ok(n as u64)
}

fn bit_at(v: &[u8], offset: u64) -> u8 {
    let byte = (offset >> 3) as usize;
    let bit = 7 - (offset & 7);
    v.get(byte).map_or(0, |b| (b >> bit) & 1)
}

fn cmd_getbit(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let off = match bit_offset(&a[2], None) {
        Ok(o) => o,
        Err(e) => return out.err(e),
    };
    match string_of(ctx, &a[1]) {
        Err(e) => out.err(&e),
        Ok(v) => out.int(v.map_or(0, |v| bit_at(&v, off)) as i64),
    }
}

fn cmd_setbit(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    const BAD_BIT: &str = "ERR bit is not an integer or out of range";
    let off = match bit_offset(&a[2], None) {
        Ok(o) => o,
        Err(e) => return out.err(e),
    };
    let on = match parse_i64(&a[3]) {
        Some(b @ (0 | 1)) => b as u8,
        _ => return out.err(BAD_BIT),
    };
    let cur = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(v) => v,
    };
    let byte = (off >> 3) as usize;
    let existed = cur.is_some();
    let mut v = cur.map(|b| b.to_vec()).unwrap_or_default();
    let grew = v.len() < byte + 1;
    if grew {
        v.resize(byte + 1, 0);
    }
    let old = bit_at(&v, off);
    // As Redis: only a change (or a new or longer string) is a write.
    if !existed || grew || old != on {
        let bit = 7 - (off & 7);
        v[byte] = (v[byte] & !(1 << bit)) | (on << bit);
        set_keep_ttl(ctx, &a[1], v);
    }
    out.int(old as i64);
}

/// A start/end range over `len` bytes, as BITCOUNT and BITPOS read it: (start byte, end
/// byte, first byte's mask of bits outside the range, last byte's), or None when empty.
/// `end` None: to the end of the string.
fn range(len: i64, start: i64, end: Option<i64>, bit_unit: bool) -> (i64, i64, u8, u8) {
    let total = if bit_unit { len << 3 } else { len };
    let mut end = end.unwrap_or(if bit_unit { (len << 3) + 7 } else { len - 1 });
    let mut start = start;
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first, mut last) = (0u8, 0u8);
    if bit_unit && start <= end {
        first = (!((1u32 << (8 - (start & 7))) - 1) & 0xFF) as u8;
        last = ((1u32 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    (start, end, first, last)
}

fn unit(arg: &[u8]) -> Option<bool> {
    match arg.to_ascii_lowercase().as_slice() {
        b"bit" => Some(true),
        b"byte" => Some(false),
        _ => None,
    }
}

fn cmd_bitcount(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let v = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(None) => return out.int(0),
        Ok(Some(v)) => v,
    };
    let len = v.len() as i64;
    let (start, end, first, last) = match a.len() {
        2 => (0, len - 1, 0, 0),
        4 | 5 => {
            let (Some(s), Some(e)) = (parse_i64(&a[2]), parse_i64(&a[3])) else {
                return out.err(NOT_INT);
            };
            if s < 0 && e < 0 && s > e {
                return out.int(0);
            }
            let bits = match a.get(4) {
                None => false,
                Some(u) => match unit(u) {
                    Some(b) => b,
                    None => return out.err(SYNTAX),
                },
            };
            range(len, s, Some(e), bits)
        }
        _ => return out.err(SYNTAX),
    };
    if start > end {
        return out.int(0);
    }
    let (s, e) = (start as usize, end as usize);
    let mut count: i64 = v[s..=e].iter().map(|b| b.count_ones() as i64).sum();
    if first != 0 {
        count -= (v[s] & first).count_ones() as i64;
    }
    if last != 0 {
        count -= (v[e] & last).count_ones() as i64;
    }
    out.int(count);
}

/// Redis's redisBitpos: the first bit equal to `bit` in `s`; for 0 and none found, the bit
/// after the end (the string is zero padded on the right); for 1 and none found, -1.
fn bitpos_in(s: &[u8], bit: u8) -> i64 {
    for (i, &b) in s.iter().enumerate() {
        let b = if bit == 1 { b } else { !b };
        if b != 0 {
            return (i as i64) * 8 + b.leading_zeros() as i64;
        }
    }
    if bit == 1 {
        -1
    } else {
        (s.len() as i64) * 8
    }
}

fn cmd_bitpos(ctx: &mut Ctx, _name: &'static str, a: &[Bytes], out: &mut Out) {
    let bit = match parse_i64(&a[2]) {
        Some(b @ (0 | 1)) => b as u8,
        Some(_) => return out.err("ERR The bit argument must be 1 or 0."),
        None => return out.err(NOT_INT),
    };
    let v = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(None) => return out.int(if bit == 1 { -1 } else { 0 }),
        Ok(Some(v)) => v,
    };
    let len = v.len() as i64;
    let mut end_given = false;
    let (mut start, end, first, last) = match a.len() {
        3 => (0, len - 1, 0, 0),
        4..=6 => {
            let Some(s) = parse_i64(&a[3]) else {
                return out.err(NOT_INT);
            };
            let bits = match a.get(5) {
                None => false,
                Some(u) => match unit(u) {
                    Some(b) => b,
                    None => return out.err(SYNTAX),
                },
            };
            let e = match a.get(4) {
                None => None,
                Some(e) => match parse_i64(e) {
                    Some(e) => {
                        end_given = true;
                        Some(e)
                    }
                    None => return out.err(NOT_INT),
                },
            };
            range(len, s, e, bits)
        }
        _ => return out.err(SYNTAX),
    };
    if start > end {
        return out.int(-1);
    }
    // The scan of bitops.c, step for step: the first byte (masked), the whole bytes, the last
    // byte (masked); `bytes` is what is left when a step ends it.
    let mut bytes = end - start + 1;
    let masked = |b: u8, mask: u8| if bit == 1 { b & !mask } else { b | mask };
    let pos = 'found: {
        if first != 0 {
            let mut t = masked(v[start as usize], first);
            if last != 0 && bytes == 1 {
                t = masked(t, last);
            }
            let pos = bitpos_in(&[t], bit);
            if bytes == 1 || (pos != -1 && pos != 8) {
                break 'found pos;
            }
            start += 1;
            bytes -= 1;
        }
        let whole = bytes - i64::from(last != 0);
        if whole > 0 {
            let s = start as usize;
            let pos = bitpos_in(&v[s..s + whole as usize], bit);
            if bytes == whole || (pos != -1 && pos != whole << 3) {
                break 'found pos;
            }
            start += whole;
            bytes -= whole;
        }
        bitpos_in(&[masked(v[end as usize], last)], bit)
    };
    if end_given && bit == 0 && pos == bytes << 3 {
        return out.int(-1);
    }
    out.int(if pos == -1 { -1 } else { pos + (start << 3) });
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

enum Op {
    Get,
    Set(i64),
    Incr(i64),
}

struct Field {
    op: Op,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

fn field_type(arg: &[u8]) -> Result<(bool, u32), &'static str> {
    const BAD: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(BAD),
    };
    match parse_i64(&arg[1..]) {
        Some(n) if n >= 1 && (signed && n <= 64 || !signed && n <= 63) => Ok((signed, n as u32)),
        _ => Err(BAD),
    }
}

fn get_unsigned(p: &[u8], offset: u64, bits: u32) -> u64 {
    (0..bits as u64).fold(0, |v, j| (v << 1) | bit_at(p, offset + j) as u64)
}

fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let mut v = get_unsigned(p, offset, bits) as i64;
    if bits < 64 && v & (1i64 << (bits - 1)) != 0 {
        v |= -1i64 << bits;
    }
    v
}

fn set_unsigned(p: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..bits as u64 {
        let on = ((value >> (bits as u64 - 1 - j)) & 1) as u8;
        let off = offset + j;
        let (byte, bit) = ((off >> 3) as usize, 7 - (off & 7));
        p[byte] = (p[byte] & !(1 << bit)) | (on << bit);
    }
}

/// checkUnsignedBitfieldOverflow: (overflowed, the value to store instead under WRAP/SAT).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> (bool, u64) {
    let max: u64 = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = value.wrapping_neg() as i64;
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX.checked_shl(bits).unwrap_or(0));
    if value > max || (incr > 0 && incr > maxincr) {
        return (true, if ow == Overflow::Sat { max } else { wrap() });
    }
    if incr < 0 && incr < minincr {
        return (true, if ow == Overflow::Sat { 0 } else { wrap() });
    }
    (false, 0)
}

/// checkSignedBitfieldOverflow.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> (bool, i64) {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        return (true, if ow == Overflow::Sat { max } else { wrap() });
    }
    if value < min || (bits != 64 && incr < minincr) || (value < 0 && incr < 0 && incr < minincr) {
        return (true, if ow == Overflow::Sat { min } else { wrap() });
    }
    (false, 0)
}

fn parse_fields(a: &[Bytes]) -> Result<Vec<Field>, String> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < a.len() {
        let rest = a.len() - j - 1;
        let sub = a[j].to_ascii_lowercase();
        let op = match sub.as_slice() {
            b"get" if rest >= 2 => Op::Get,
            b"set" if rest >= 3 => Op::Set(0),
            b"incrby" if rest >= 3 => Op::Incr(0),
            b"overflow" if rest >= 1 => {
                overflow = match a[j + 1].to_ascii_lowercase().as_slice() {
                    b"wrap" => Overflow::Wrap,
                    b"sat" => Overflow::Sat,
                    b"fail" => Overflow::Fail,
                    _ => return Err("ERR Invalid OVERFLOW type specified".into()),
                };
                j += 2;
                continue;
            }
            _ => return Err(SYNTAX.into()),
        };
        let (signed, bits) = field_type(&a[j + 1])?;
        let offset = bit_offset(&a[j + 2], Some(bits))?;
        let op = match op {
            Op::Get => Op::Get,
            other => {
                let n = parse_i64(&a[j + 3]).ok_or_else(|| NOT_INT.to_string())?;
                match other {
                    Op::Set(_) => Op::Set(n),
                    _ => Op::Incr(n),
                }
            }
        };
        j += if matches!(op, Op::Get) { 3 } else { 4 };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
    }
    Ok(fields)
}

fn cmd_bitfield(ctx: &mut Ctx, name: &'static str, a: &[Bytes], out: &mut Out) {
    let fields = match parse_fields(a) {
        Ok(f) => f,
        Err(e) => return out.err(&e),
    };
    let writes = fields.iter().any(|f| !matches!(f.op, Op::Get));
    if writes && name == "bitfield_ro" {
        // The key's type is not looked at first, as in Redis.
        return out.err("ERR BITFIELD_RO only supports the GET subcommand");
    }
    let cur = match string_of(ctx, &a[1]) {
        Err(e) => return out.err(&e),
        Ok(v) => v,
    };
    let existed = cur.is_some();
    let mut v = cur.map(|b| b.to_vec()).unwrap_or_default();
    let mut dirty = false;
    if writes {
        let highest = fields
            .iter()
            .filter(|f| !matches!(f.op, Op::Get))
            .map(|f| f.offset + f.bits as u64 - 1)
            .max()
            .unwrap_or(0);
        let need = (highest >> 3) as usize + 1;
        if v.len() < need {
            v.resize(need, 0);
            dirty = true;
        }
        dirty |= !existed;
    }
    let mut changes = 0;
    out.array(fields.len());
    for f in &fields {
        match f.op {
            Op::Get if f.signed => out.int(get_signed(&v, f.offset, f.bits)),
            Op::Get => out.int(get_unsigned(&v, f.offset, f.bits) as i64),
            Op::Set(n) | Op::Incr(n) if f.signed => {
                let old = get_signed(&v, f.offset, f.bits);
                let (overflowed, new, reply) = match f.op {
                    Op::Incr(_) => {
                        let (o, w) = signed_overflow(old, n, f.bits, f.overflow);
                        let new = if o { w } else { old.wrapping_add(n) };
                        (o, new, new)
                    }
                    _ => {
                        let (o, w) = signed_overflow(n, 0, f.bits, f.overflow);
                        (o, if o { w } else { n }, old)
                    }
                };
                if overflowed && f.overflow == Overflow::Fail {
                    out.nil();
                } else {
                    out.int(reply);
                    set_unsigned(&mut v, f.offset, f.bits, new as u64);
                    changes += usize::from(dirty || old != new);
                }
            }
            Op::Set(n) | Op::Incr(n) => {
                let old = get_unsigned(&v, f.offset, f.bits);
                let (overflowed, new, reply) = match f.op {
                    Op::Incr(_) => {
                        let (o, w) = unsigned_overflow(old, n, f.bits, f.overflow);
                        let new = if o { w } else { old.wrapping_add(n as u64) };
                        (o, new, new)
                    }
                    _ => {
                        let (o, w) = unsigned_overflow(n as u64, 0, f.bits, f.overflow);
                        (o, if o { w } else { n as u64 }, old)
                    }
                };
                if overflowed && f.overflow == Overflow::Fail {
                    out.nil();
                } else {
                    out.int(reply as i64);
                    set_unsigned(&mut v, f.offset, f.bits, new);
                    changes += usize::from(dirty || old != new);
                }
            }
        }
    }
    // Redis creates or grows the string before the operations, even when every one fails.
    if changes > 0 || (writes && dirty) {
        set_keep_ttl(ctx, &a[1], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfield_overflow_follows_redis() {
        // u8 at 255, +1: wraps to 0, saturates at 255.
        assert_eq!(unsigned_overflow(255, 1, 8, Overflow::Wrap), (true, 0));
        assert_eq!(unsigned_overflow(255, 1, 8, Overflow::Sat), (true, 255));
        assert_eq!(unsigned_overflow(0, -1, 8, Overflow::Sat), (true, 0));
        assert_eq!(unsigned_overflow(0, -1, 8, Overflow::Wrap), (true, 255));
        assert_eq!(unsigned_overflow(10, 5, 8, Overflow::Wrap), (false, 0));
        // i8 at 127, +1: wraps to -128, saturates at 127.
        assert_eq!(signed_overflow(127, 1, 8, Overflow::Wrap), (true, -128));
        assert_eq!(signed_overflow(127, 1, 8, Overflow::Sat), (true, 127));
        assert_eq!(signed_overflow(-128, -1, 8, Overflow::Sat), (true, -128));
        assert_eq!(
            signed_overflow(i64::MAX, 1, 64, Overflow::Wrap),
            (true, i64::MIN)
        );
        assert_eq!(signed_overflow(5, -3, 64, Overflow::Wrap), (false, 0));
    }

    #[test]
    fn bitpos_scans_as_redis() {
        assert_eq!(bitpos_in(&[0xff, 0xf0], 0), 12);
        assert_eq!(bitpos_in(&[0xff], 0), 8);
        assert_eq!(bitpos_in(&[0x00, 0x01], 1), 15);
        assert_eq!(bitpos_in(&[0x00], 1), -1);
    }
}
