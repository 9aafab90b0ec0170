//! The envelope that marks a stored value as prescient's: pure functions, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     3  magic: F5 50 5A ("\xF5PZ"; 0xF5 never occurs in UTF-8 text)
//!      3     1  format version: 1
//!      4     1  codec id: 0 stored (an escaped raw value), 1 zlib, 2 zstd, 3 lz4 (block)
//!      5     4  original length, u32 little-endian
//!      9     4  CRC-32 (IEEE) of the original bytes, u32 little-endian
//!     13     -  payload: the original bytes, compressed by the codec (as is for codec 0)
//! ```
//!
//! A value that does not begin with the magic is returned as it is. A raw value that happens to
//! begin with the magic is written with codec 0, so it too reads back unchanged. The codec id
//! travels with every value: changing the codec setting leaves old values readable.

use std::borrow::Cow;
use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

// Codec contexts are reused per thread: a fresh deflate state is hundreds of KB to allocate
// and zero, which would cost more than compressing a 1 KB value.
thread_local! {
    static DEFLATE: RefCell<Option<(i32, Compress)>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
    static ZSTD_C: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_D: RefCell<zstd::bulk::Decompressor<'static>> =
        RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
}

fn deflate(level: i32, data: &[u8], out: &mut Vec<u8>) -> Option<()> {
    DEFLATE.with(|c| {
        let mut c = c.borrow_mut();
        let level = level.clamp(0, 9);
        match c.as_mut() {
            Some((l, z)) if *l == level => z.reset(),
            _ => {
                *c = Some((
                    level,
                    Compress::new(flate2::Compression::new(level as u32), true),
                ))
            }
        }
        let (_, z) = c.as_mut()?;
        loop {
            out.reserve(data.len() / 2 + 64);
            let consumed = z.total_in() as usize;
            match z.compress_vec(&data[consumed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Some(()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
}

/// Inflates at most `len + 1` bytes: the output buffer is the bound, so a payload that
/// expands past its recorded length stops there.
fn inflate(payload: &[u8], len: usize) -> Result<Vec<u8>, DecodeError> {
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        let mut out = Vec::with_capacity(len + 1);
        loop {
            let (in_before, out_before) = (d.total_in(), out.len());
            let consumed = in_before as usize;
            let status = d
                .decompress_vec(&payload[consumed..], &mut out, FlushDecompress::Finish)
                .map_err(|e| DecodeError::Payload(e.to_string()))?;
            match status {
                Status::StreamEnd => return Ok(out),
                _ if out.len() == out.capacity() => return Ok(out),
                _ if d.total_in() == in_before && out.len() == out_before => {
                    return Err(DecodeError::Payload("truncated stream".into()))
                }
                _ => continue,
            }
        }
    })
}

pub const MAGIC: &[u8; 3] = b"\xF5PZ";
pub const VERSION: u8 = 1;
pub const HEADER: usize = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Stored = 0,
    Zlib = 1,
    Zstd = 2,
    Lz4 = 3,
}

impl From<crate::config::CodecName> for Codec {
    fn from(c: crate::config::CodecName) -> Codec {
        match c {
            crate::config::CodecName::Zlib => Codec::Zlib,
            crate::config::CodecName::Zstd => Codec::Zstd,
            crate::config::CodecName::Lz4 => Codec::Lz4,
        }
    }
}

impl Codec {
    pub fn from_id(id: u8) -> Option<Codec> {
        Some(match id {
            0 => Codec::Stored,
            1 => Codec::Zlib,
            2 => Codec::Zstd,
            3 => Codec::Lz4,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Stored => "stored",
            Codec::Zlib => "zlib",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated envelope")]
    Truncated,
    #[error("unknown envelope version {0}")]
    Version(u8),
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    #[error("original length {len} is over compression.max_decompressed_bytes ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("payload does not decompress ({0})")]
    Payload(String),
    #[error("decompressed length {got} differs from the recorded {want}")]
    Length { got: usize, want: usize },
    #[error("checksum mismatch")]
    Checksum,
}

/// What the header of an enveloped value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub codec: Codec,
    pub original_len: usize,
    pub crc: u32,
}

/// Whether `b` contains the envelope magic anywhere (a reply that does not needs no
/// decoding). The searcher is built once: `memmem::find` builds one per call, which showed
/// at 1% of a pipelined GET.
pub fn has_magic(b: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MAGIC));
    FINDER.find(b).is_some()
}

pub fn is_enveloped(v: &[u8]) -> bool {
    v.starts_with(MAGIC)
}

fn header_bytes(codec: Codec, data: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..3].copy_from_slice(MAGIC);
    h[3] = VERSION;
    h[4] = codec as u8;
    h[5..9].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[9..13].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    h
}

/// Wraps `data` with codec 0 (no compression): how a raw value that begins with the magic is
/// stored.
pub fn escape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(&header_bytes(Codec::Stored, data));
    out.extend_from_slice(data);
    out
}

/// Compresses `data` into an envelope. `level` is the codec's own scale (zlib 0-9, zstd
/// 1-22; lz4 has none). Values over 4 GiB cannot be described by the header: `None`.
pub fn compress(codec: Codec, level: i32, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() > u32::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER + data.len() / 2 + 64);
    out.extend_from_slice(&header_bytes(codec, data));
    match codec {
        Codec::Stored => out.extend_from_slice(data),
        Codec::Zlib => deflate(level, data, &mut out)?,
        Codec::Zstd => ZSTD_C.with(|z| -> Option<()> {
            let mut z = z.borrow_mut();
            if z.as_ref().is_none_or(|(l, _)| *l != level) {
                *z = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, c) = z.as_mut()?;
            out.extend_from_slice(&c.compress(data).ok()?);
            Some(())
        })?,
        Codec::Lz4 => out.extend_from_slice(&lz4_flex::block::compress(data)),
    }
    Some(out)
}

/// Reads the header of an enveloped value; `Ok(None)` for a raw value.
pub fn header(v: &[u8]) -> Result<Option<Header>, DecodeError> {
    if !is_enveloped(v) {
        return Ok(None);
    }
    if v.len() < HEADER {
        return Err(DecodeError::Truncated);
    }
    if v[3] != VERSION {
        return Err(DecodeError::Version(v[3]));
    }
    let codec = Codec::from_id(v[4]).ok_or(DecodeError::UnknownCodec(v[4]))?;
    let original_len = u32::from_le_bytes([v[5], v[6], v[7], v[8]]) as usize;
    let crc = u32::from_le_bytes([v[9], v[10], v[11], v[12]]);
    Ok(Some(Header {
        codec,
        original_len,
        crc,
    }))
}

/// The original bytes of a stored value: borrowed when it is raw, inflated when enveloped.
/// Never allocates more than `max` bytes for the result (a stored bomb is an error).
pub fn decode(v: &[u8], max: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    let Some(h) = header(v)? else {
        return Ok(Cow::Borrowed(v));
    };
    if h.original_len > max {
        return Err(DecodeError::TooLarge {
            len: h.original_len,
            max,
        });
    }
    let payload = &v[HEADER..];
    let out: Vec<u8> = match h.codec {
        Codec::Stored => payload.to_vec(),
        Codec::Zlib => inflate(payload, h.original_len)?,
        Codec::Zstd => ZSTD_D
            .with(|d| d.borrow_mut().decompress(payload, h.original_len))
            .map_err(|e| DecodeError::Payload(e.to_string()))?,
        Codec::Lz4 => lz4_flex::block::decompress(payload, h.original_len)
            .map_err(|e| DecodeError::Payload(e.to_string()))?,
    };
    if out.len() != h.original_len {
        return Err(DecodeError::Length {
            got: out.len(),
            want: h.original_len,
        });
    }
    if crc32fast::hash(&out) != h.crc {
        return Err(DecodeError::Checksum);
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [Codec; 4] = [Codec::Stored, Codec::Zlib, Codec::Zstd, Codec::Lz4];

    #[test]
    fn raw_values_pass_through_borrowed() {
        let v = b"plain value";
        assert!(matches!(decode(v, 100), Ok(Cow::Borrowed(b)) if b == v));
        assert_eq!(header(v), Ok(None));
    }

    #[test]
    fn every_codec_round_trips_and_says_what_it_is() {
        let data = "{\"user\":42,\"name\":\"ada\"}".repeat(100);
        for c in CODECS {
            let env = compress(c, 3, data.as_bytes()).unwrap();
            let h = header(&env).unwrap().unwrap();
            assert_eq!((h.codec, h.original_len), (c, data.len()));
            assert_eq!(
                &decode(&env, usize::MAX).unwrap()[..],
                data.as_bytes(),
                "{c:?}"
            );
            if c != Codec::Stored {
                assert!(
                    env.len() < data.len() / 4,
                    "{c:?} compressed to {}",
                    env.len()
                );
            }
        }
    }

    #[test]
    fn damage_is_named() {
        let data = b"abcdefgh".repeat(64);
        let env = compress(Codec::Zlib, 6, &data).unwrap();
        assert_eq!(decode(&env[..8], 1 << 20), Err(DecodeError::Truncated));
        let mut v = env.clone();
        v[3] = 9;
        assert_eq!(decode(&v, 1 << 20), Err(DecodeError::Version(9)));
        let mut v = env.clone();
        v[4] = 77;
        assert_eq!(decode(&v, 1 << 20), Err(DecodeError::UnknownCodec(77)));
        let mut v = env.clone();
        v[9] ^= 1;
        assert_eq!(decode(&v, 1 << 20), Err(DecodeError::Checksum));
        assert!(matches!(
            decode(&env[..env.len() - 3], 1 << 20),
            Err(DecodeError::Payload(_) | DecodeError::Length { .. })
        ));
        assert_eq!(
            decode(&env, 100),
            Err(DecodeError::TooLarge {
                len: data.len(),
                max: 100
            })
        );
    }

    #[test]
    fn a_header_that_understates_the_length_is_caught_without_inflating_everything() {
        // A bomb: 64 MiB of zeros whose header claims 10 bytes.
        let big = vec![0u8; 64 << 20];
        let mut env = compress(Codec::Zlib, 1, &big).unwrap();
        env[5..9].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(
            decode(&env, 1 << 20),
            Err(DecodeError::Length { got: 11, want: 10 })
        );
    }

    proptest! {
        #[test]
        fn round_trip_any_bytes_any_codec(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                          c in 0usize..4, level in 1i32..9) {
            let env = compress(CODECS[c], level, &data).unwrap();
            prop_assert_eq!(&decode(&env, usize::MAX).unwrap()[..], &data[..]);
            let esc = escape(&data);
            prop_assert_eq!(&decode(&esc, usize::MAX).unwrap()[..], &data[..]);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512),
                                                 codec in 0u8..6) {
            let mut v = MAGIC.to_vec();
            v.push(VERSION);
            v.push(codec);
            v.extend_from_slice(&tail);
            let _ = decode(&v, 1 << 16);
            let _ = decode(&tail, 1 << 16);
        }
    }
}
