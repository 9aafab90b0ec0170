//! The envelope that marks a stored value as prescient's: pure functions, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     3  magic: F5 50 5A ("\xF5PZ"; 0xF5 never occurs in UTF-8 text)
//!      3     1  format version: 1, or 2 for a value filled from the origin (below)
//!      4     1  codec id: 0 stored (an escaped raw value), 1 zlib, 2 zstd, 3 lz4 (block),
//!                 4 zstd with a dictionary
//!      5     4  original length, u32 little-endian
//!      9     4  CRC-32 (IEEE) of the original bytes, u32 little-endian
//!     13     4  codec 4 only: the dictionary's id, u32 little-endian (see `dict.rs`)
//!      -     8  version 2 only: fresh until, unix ms, u64 little-endian (after the id)
//!      -     -  payload: the original bytes, compressed by the codec (as is for codec 0)
//! ```
//!
//! Version 2 marks a value filled from the origin with the time it stays fresh; a value a
//! client wrote is version 1 (or raw) and never goes stale.
//!
//! A value that does not begin with the magic is returned as it is. A raw value that happens to
//! begin with the magic is written with codec 0, so it too reads back unchanged. The codec id
//! travels with every value: changing the codec setting leaves old values readable.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

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
    static ZSTD_CCTX: RefCell<zstd::zstd_safe::CCtx<'static>> =
        RefCell::new(zstd::zstd_safe::CCtx::create());
    static ZSTD_DCTX: RefCell<zstd::zstd_safe::DCtx<'static>> =
        RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// A compression dictionary, prepared for both directions. Its id is a checksum of its bytes,
/// so every prescient names the same dictionary the same way and a fetched copy can be checked.
pub struct Dict {
    pub id: u32,
    pub raw: Bytes,
    cdict: zstd::zstd_safe::CDict<'static>,
    ddict: zstd::zstd_safe::DDict<'static>,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dict({:08x}, {} bytes)", self.id, self.raw.len())
    }
}

impl Dict {
    /// The id of a dictionary with these bytes (never 0).
    pub fn id_of(raw: &[u8]) -> u32 {
        crc32fast::hash(raw).max(1)
    }

    /// Prepares `raw` for compressing at `level`; None when zstd will not load it.
    pub fn new(raw: Bytes, level: i32) -> Option<Dict> {
        if raw.is_empty() {
            return None;
        }
        let cdict = zstd::zstd_safe::CDict::try_create(&raw, level)?;
        let ddict = zstd::zstd_safe::DDict::try_create(&raw)?;
        Some(Dict {
            id: Dict::id_of(&raw),
            raw,
            cdict,
            ddict,
        })
    }
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

/// Inflates into `dst`, at most its length: the output buffer is the bound, so a payload that
/// expands past it stops there (and the caller sees the length differ).
fn inflate(payload: &[u8], dst: &mut [u8]) -> Result<usize, DecodeError> {
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        loop {
            let (in_before, out_before) = (d.total_in() as usize, d.total_out() as usize);
            let status = d
                .decompress(
                    &payload[in_before..],
                    &mut dst[out_before..],
                    FlushDecompress::Finish,
                )
                .map_err(|e| DecodeError::Payload(e.to_string()))?;
            let out_now = d.total_out() as usize;
            match status {
                Status::StreamEnd => return Ok(out_now),
                _ if out_now == dst.len() => return Ok(out_now),
                _ if d.total_in() as usize == in_before && out_now == out_before => {
                    return Err(DecodeError::Payload("truncated stream".into()))
                }
                _ => continue,
            }
        }
    })
}

pub const MAGIC: &[u8; 3] = b"\xF5PZ";
pub const VERSION: u8 = 1;
/// The version of a value filled from the origin: version 1 plus its fresh-until time.
pub const VERSION_FRESH: u8 = 2;
pub const HEADER: usize = 13;
/// The header of a value compressed with a dictionary (codec 4): the id follows.
pub const DICT_HEADER: usize = HEADER + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Stored = 0,
    Zlib = 1,
    Zstd = 2,
    Lz4 = 3,
    ZstdDict = 4,
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
            4 => Codec::ZstdDict,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Stored => "stored",
            Codec::Zlib => "zlib",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::ZstdDict => "zstd+dictionary",
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
    #[error("dictionary {0:08x} is not known (not in the store's prescient:dicts)")]
    UnknownDictionary(u32),
}

/// What the header of an enveloped value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub codec: Codec,
    pub original_len: usize,
    pub crc: u32,
    /// The dictionary's id (codec 4), else 0.
    pub dict: u32,
    /// Version 2: until when (unix ms) the value is fresh.
    pub fresh_until: Option<u64>,
}

impl Header {
    /// Where the payload starts.
    pub fn payload_at(&self) -> usize {
        self.fresh_at() + if self.fresh_until.is_some() { 8 } else { 0 }
    }

    /// Where a version 2 value's fresh-until time is.
    fn fresh_at(&self) -> usize {
        match self.codec {
            Codec::ZstdDict => DICT_HEADER,
            _ => HEADER,
        }
    }
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

/// Marks a stored value as filled from the origin, fresh until `until` (unix ms): an envelope
/// becomes version 2; a raw value is first wrapped with codec 0. A damaged envelope is returned
/// as it is (it reads back as the damage it is).
pub fn with_freshness(stored: &[u8], until: u64) -> Vec<u8> {
    let env;
    let v = if is_enveloped(stored) {
        stored
    } else {
        env = escape(stored);
        &env
    };
    let Ok(Some(h)) = header(v) else {
        return stored.to_vec();
    };
    if h.fresh_until.is_some() {
        let mut out = v.to_vec();
        let at = h.fresh_at();
        out[at..at + 8].copy_from_slice(&until.to_le_bytes());
        return out;
    }
    let at = h.fresh_at();
    let mut out = Vec::with_capacity(v.len() + 8);
    out.extend_from_slice(&v[..at]);
    out.extend_from_slice(&until.to_le_bytes());
    out.extend_from_slice(&v[at..]);
    out[3] = VERSION_FRESH;
    out
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
        // Needs the dictionary: `compress_with`.
        Codec::ZstdDict => return None,
    }
    Some(out)
}

/// Compresses `data` with a dictionary (codec 4), at the level the dictionary was prepared for.
pub fn compress_with(dict: &Dict, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() > u32::MAX as usize {
        return None;
    }
    let bound = zstd::zstd_safe::compress_bound(data.len());
    let mut out = vec![0u8; DICT_HEADER + bound];
    out[..HEADER].copy_from_slice(&header_bytes(Codec::ZstdDict, data));
    out[HEADER..DICT_HEADER].copy_from_slice(&dict.id.to_le_bytes());
    let n = ZSTD_CCTX
        .with(|c| {
            c.borrow_mut()
                .compress_using_cdict(&mut out[DICT_HEADER..], data, &dict.cdict)
        })
        .ok()?;
    out.truncate(DICT_HEADER + n);
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
    if v[3] != VERSION && v[3] != VERSION_FRESH {
        return Err(DecodeError::Version(v[3]));
    }
    let codec = Codec::from_id(v[4]).ok_or(DecodeError::UnknownCodec(v[4]))?;
    let original_len = u32::from_le_bytes([v[5], v[6], v[7], v[8]]) as usize;
    let crc = u32::from_le_bytes([v[9], v[10], v[11], v[12]]);
    let dict = match codec {
        Codec::ZstdDict if v.len() < DICT_HEADER => return Err(DecodeError::Truncated),
        Codec::ZstdDict => u32::from_le_bytes([v[13], v[14], v[15], v[16]]),
        _ => 0,
    };
    let mut h = Header {
        codec,
        original_len,
        crc,
        dict,
        fresh_until: None,
    };
    if v[3] == VERSION_FRESH {
        let at = h.fresh_at();
        let b = v.get(at..at + 8).ok_or(DecodeError::Truncated)?;
        h.fresh_until = Some(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    }
    Ok(Some(h))
}

/// The original bytes of a stored value: borrowed when it is raw, inflated when enveloped.
/// Never allocates more than `max` bytes for the result (a stored bomb is an error). A value
/// compressed with a dictionary cannot be decoded here: `decode_with`.
pub fn decode(v: &[u8], max: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    decode_with(v, max, &|_| None)
}

/// [`decode`], finding dictionaries by id with `dicts`.
pub fn decode_with<'a>(
    v: &'a [u8],
    max: usize,
    dicts: &dyn Fn(u32) -> Option<Arc<Dict>>,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let Some(h) = header(v)? else {
        return Ok(Cow::Borrowed(v));
    };
    check_len(&h, max)?;
    // One byte more than recorded: a payload that expands past the length is caught there.
    let mut out = vec![0u8; h.original_len + 1];
    let n = decode_slice(&h, &v[h.payload_at()..], &mut out, dicts)?;
    out.truncate(n);
    check_out(&h, &out)?;
    Ok(Cow::Owned(out))
}

/// Decodes an enveloped value and appends the original bytes to `out` (a reply being built:
/// no buffer of its own, no copy). `Ok(false)` for a raw value: nothing appended. On an
/// error `out` is as it was.
pub fn decode_append(
    v: &[u8],
    max: usize,
    dicts: &dyn Fn(u32) -> Option<Arc<Dict>>,
    out: &mut BytesMut,
) -> Result<bool, DecodeError> {
    let Some(h) = header(v)? else {
        return Ok(false);
    };
    check_len(&h, max)?;
    let start = out.len();
    out.resize(start + h.original_len + 1, 0);
    let r = decode_slice(&h, &v[h.payload_at()..], &mut out[start..], dicts).and_then(|n| {
        out.truncate(start + n);
        check_out(&h, &out[start..])
    });
    if r.is_err() {
        out.truncate(start);
    }
    r.map(|()| true)
}

fn check_len(h: &Header, max: usize) -> Result<(), DecodeError> {
    if h.original_len > max {
        return Err(DecodeError::TooLarge {
            len: h.original_len,
            max,
        });
    }
    Ok(())
}

fn check_out(h: &Header, out: &[u8]) -> Result<(), DecodeError> {
    if out.len() != h.original_len {
        return Err(DecodeError::Length {
            got: out.len(),
            want: h.original_len,
        });
    }
    if crc32fast::hash(out) != h.crc {
        return Err(DecodeError::Checksum);
    }
    Ok(())
}

/// Decodes a payload into `dst` (the recorded length plus one byte): how many bytes it gave.
fn decode_slice(
    h: &Header,
    payload: &[u8],
    dst: &mut [u8],
    dicts: &dyn Fn(u32) -> Option<Arc<Dict>>,
) -> Result<usize, DecodeError> {
    let failed = |e: String| DecodeError::Payload(e);
    match h.codec {
        Codec::Stored => {
            let n = payload.len().min(dst.len());
            dst[..n].copy_from_slice(&payload[..n]);
            Ok(n)
        }
        Codec::Zlib => inflate(payload, dst),
        Codec::Zstd => ZSTD_D
            .with(|d| d.borrow_mut().decompress_to_buffer(payload, dst))
            .map_err(|e| failed(e.to_string())),
        Codec::Lz4 => {
            lz4_flex::block::decompress_into(payload, dst).map_err(|e| failed(e.to_string()))
        }
        Codec::ZstdDict => {
            let d = dicts(h.dict).ok_or(DecodeError::UnknownDictionary(h.dict))?;
            ZSTD_DCTX
                .with(|c| {
                    c.borrow_mut()
                        .decompress_using_ddict(dst, payload, &d.ddict)
                })
                .map_err(|e| failed(zstd::zstd_safe::get_error_name(e).to_string()))
        }
    }
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

    fn test_dict() -> Arc<Dict> {
        static D: std::sync::OnceLock<Arc<Dict>> = std::sync::OnceLock::new();
        D.get_or_init(train_test_dict).clone()
    }

    fn train_test_dict() -> Arc<Dict> {
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!(
                    "{{\"order_id\":{i},\"status\":\"paid\",\"sku\":\"SKU-{:06}\",\"qty\":{}}}",
                    i * 7919 % 1_000_000,
                    i % 5
                )
                .into_bytes()
            })
            .collect();
        let raw = zstd::dict::from_samples(&samples, 4096).expect("trained");
        Arc::new(Dict::new(Bytes::from(raw), 1).expect("loads"))
    }

    #[test]
    fn a_dictionary_value_names_its_dictionary_and_needs_it() {
        let d = test_dict();
        let data = b"{\"order_id\":90210,\"status\":\"paid\",\"sku\":\"SKU-123456\",\"qty\":3}";
        let env = compress_with(&d, data).unwrap();
        let h = header(&env).unwrap().unwrap();
        assert_eq!(
            (h.codec, h.dict, h.payload_at()),
            (Codec::ZstdDict, d.id, DICT_HEADER)
        );
        assert!(env.len() < data.len(), "{} of {}", env.len(), data.len());
        let found = |id: u32| (id == d.id).then(|| d.clone());
        assert_eq!(&decode_with(&env, 1 << 20, &found).unwrap()[..], &data[..]);
        assert_eq!(
            decode(&env, 1 << 20),
            Err(DecodeError::UnknownDictionary(d.id))
        );
        // Another dictionary under the id: the payload or the checksum says so.
        let other = test_dict_other();
        let wrong = |_: u32| Some(other.clone());
        assert!(decode_with(&env, 1 << 20, &wrong).is_err());
        assert_eq!(decode(&env[..15], 1 << 20), Err(DecodeError::Truncated));
        assert_eq!(Dict::id_of(&d.raw), d.id);
    }

    fn test_dict_other() -> Arc<Dict> {
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("user:{i}:name=ada lovelace;city=lisbon;n={}", i * 31).into_bytes())
            .collect();
        let raw = zstd::dict::from_samples(&samples, 4096).expect("trained");
        Arc::new(Dict::new(Bytes::from(raw), 1).expect("loads"))
    }

    #[test]
    fn a_fresh_until_time_travels_with_any_value_and_leaves_its_bytes_alone() {
        let d = test_dict();
        let data = b"{\"order_id\":1,\"status\":\"paid\"}".repeat(20);
        let found = |_: u32| Some(d.clone());
        for stored in [
            data.clone(),
            compress(Codec::Lz4, 0, &data).unwrap(),
            compress(Codec::Zlib, 1, &data).unwrap(),
            compress_with(&d, &data).unwrap(),
            escape(b"\xF5PZ raw with the magic"),
        ] {
            let fresh = with_freshness(&stored, 1_700_000_000_123);
            let h = header(&fresh).unwrap().unwrap();
            assert_eq!(h.fresh_until, Some(1_700_000_000_123));
            let want = decode_with(&stored, usize::MAX, &found)
                .unwrap()
                .into_owned();
            assert_eq!(
                decode_with(&fresh, usize::MAX, &found)
                    .unwrap()
                    .into_owned(),
                want
            );
            // Marking again replaces the time.
            let again = with_freshness(&fresh, 5);
            assert_eq!(header(&again).unwrap().unwrap().fresh_until, Some(5));
            assert_eq!(again.len(), fresh.len());
        }
        let mut cut = with_freshness(&data, 9);
        cut.truncate(16);
        assert_eq!(header(&cut), Err(DecodeError::Truncated));
    }

    proptest! {
        #[test]
        fn dictionary_round_trip_and_hostile_payloads(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                                      tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let d = test_dict();
            let found = |_: u32| Some(d.clone());
            let env = compress_with(&d, &data).unwrap();
            prop_assert_eq!(&decode_with(&env, usize::MAX, &found).unwrap()[..], &data[..]);
            let mut v = env[..DICT_HEADER].to_vec();
            v.extend_from_slice(&tail);
            let _ = decode_with(&v, 1 << 16, &found);
        }

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
