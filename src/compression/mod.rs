//! Transparent value compression.
//!
//! - `envelope`: the stored format and the codecs (pure functions);
//! - this module: the policy (threshold, minimum saving, key patterns, inflate limit) and its
//!   counters;
//! - `reply`: which parts of which replies are stored values, and their rewriting;
//! - `plan`: what the session does with each command (encode values, decode the reply, or
//!   run a byte-level command on the original bytes).

pub mod dict;
pub mod envelope;
pub mod plan;
pub mod reply;

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use prometheus::{Counter, IntCounter, IntCounterVec, Opts, Registry};

pub use envelope::{Codec, DecodeError};

use crate::config;

/// Why a value was or was not compressed (`prescient_compression_values_total{result}`).
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Compressed = 0,
    Small = 1,
    NoGain = 2,
    Escaped = 3,
    Excluded = 4,
}

const OUTCOMES: [&str; 5] = [
    "compressed",
    "below_threshold",
    "no_gain",
    "escaped",
    "excluded",
];

pub struct Stats {
    values: [IntCounter; 5],
    pub bytes_before: IntCounter,
    pub bytes_after: IntCounter,
    pub decoded: IntCounter,
    /// Replies decoded on the blocking pool, off the event loop (large ones).
    pub decoded_off_loop: IntCounter,
    pub corrupt: IntCounter,
    pub compress_seconds: Counter,
    pub decompress_seconds: Counter,
}

impl Stats {
    fn new(r: &Registry) -> Stats {
        let vec = IntCounterVec::new(
            Opts::new(
                "prescient_compression_values_total",
                "Values written through the proxy, by what compression did with them.",
            ),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(vec.clone())).expect("unique metric");
        let int = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let secs = |name: &str, help: &str| {
            let c = Counter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        Stats {
            values: OUTCOMES.map(|o| vec.with_label_values(&[o])),
            bytes_before: int(
                "prescient_compression_bytes_before_total",
                "Original bytes of the values that were compressed.",
            ),
            bytes_after: int(
                "prescient_compression_bytes_after_total",
                "Stored bytes (envelope included) of the values that were compressed.",
            ),
            decoded: int(
                "prescient_decompressions_total",
                "Enveloped values decoded on the way back to a client.",
            ),
            decoded_off_loop: int(
                "prescient_decompressions_off_loop_total",
                "Replies with stored values decoded on the blocking pool, off the event loop (64 KiB or more as stored).",
            ),
            corrupt: int(
                "prescient_compression_corrupt_total",
                "Stored values that could not be decoded (bad checksum, truncated, unknown codec, over the inflate limit).",
            ),
            compress_seconds: secs(
                "prescient_compression_seconds_total",
                "Time spent compressing values.",
            ),
            decompress_seconds: secs(
                "prescient_decompression_seconds_total",
                "Time spent decompressing values.",
            ),
        }
    }

    pub fn count(&self, o: Outcome) -> u64 {
        self.values[o as usize].get()
    }
}

/// The compression policy, built once from `[compression]`.
pub struct Compressor {
    pub enabled: bool,
    pub codec: Codec,
    pub level: i32,
    pub threshold: usize,
    pub min_saving_percent: u32,
    pub max_decompressed: usize,
    include: Vec<Vec<u8>>,
    exclude: Vec<Vec<u8>>,
    pub stats: Stats,
    /// Dictionaries learned per key template (`dict.rs`).
    pub dicts: std::sync::Arc<dict::Dictionaries>,
}

impl Compressor {
    /// `templater` groups values by their key's template, for dictionaries (the tracker's).
    pub fn new(
        c: &config::Compression,
        templater: &crate::tracking::template::Templater,
        r: &Registry,
    ) -> Compressor {
        Compressor {
            enabled: c.enabled,
            codec: c.codec.into(),
            level: c.level,
            threshold: c.threshold_bytes as usize,
            min_saving_percent: c.min_saving_percent,
            max_decompressed: c.max_decompressed_bytes as usize,
            include: c.include.iter().map(|p| p.as_bytes().to_vec()).collect(),
            exclude: c.exclude.iter().map(|p| p.as_bytes().to_vec()).collect(),
            stats: Stats::new(r),
            dicts: std::sync::Arc::new(dict::Dictionaries::new(
                dict::DictConfig {
                    enabled: c.dictionaries,
                    samples: c.dictionary_samples as usize,
                    bytes: c.dictionary_bytes as usize,
                    max: c.max_dictionaries as usize,
                    // Dictionaries are zstd's: at the configured level when the codec is
                    // zstd, else at level 1.
                    level: if c.codec == config::CodecName::Zstd {
                        c.level
                    } else {
                        1
                    },
                    key: Bytes::from(c.dictionary_key.clone()),
                    check_every: std::time::Duration::from_secs(c.dictionary_check_secs),
                    plain: (c.codec.into(), c.level),
                },
                templater.clone(),
            )),
        }
    }

    /// Whether values of `key` may be compressed (include/exclude glob patterns).
    pub fn covers(&self, key: &[u8]) -> bool {
        (self.include.is_empty()
            || self
                .include
                .iter()
                .any(|p| crate::redis_glob::matches_key(p, key)))
            && !self
                .exclude
                .iter()
                .any(|p| crate::redis_glob::matches_key(p, key))
    }

    /// The bytes to store for `value` written to `key`: an envelope when compression pays,
    /// an escaped envelope when a raw value begins with the magic, else the value itself.
    pub fn encode(&self, key: &[u8], value: &Bytes) -> Bytes {
        self.encode_as(key, value, true)
    }

    /// `encode`, or with `compress` false only the escaping.
    pub fn encode_as(&self, key: &[u8], value: &Bytes, compress: bool) -> Bytes {
        if envelope::is_enveloped(value) {
            self.stats.values[Outcome::Escaped as usize].inc();
            return Bytes::from(envelope::escape(value));
        }
        let outcome = if !self.enabled || !compress || !self.covers(key) {
            Outcome::Excluded
        } else if value.len() < self.threshold {
            Outcome::Small
        } else if value.len() > self.max_decompressed {
            // It could never be read back.
            Outcome::NoGain
        } else {
            let t = Instant::now();
            let (group, dict) = self.dicts.for_value(key, value);
            let c = match &dict {
                Some(d) => envelope::compress_with(d, value),
                None => envelope::compress(self.codec, self.level, value),
            };
            self.stats
                .compress_seconds
                .inc_by(t.elapsed().as_secs_f64());
            if let (Some(_), Some(c)) = (&dict, &c) {
                self.dicts.observe(group, value.len(), c.len());
            }
            let limit = value.len() as u64 * (100 - self.min_saving_percent.min(100)) as u64 / 100;
            match c {
                Some(c) if (c.len() as u64) <= limit => {
                    self.stats.values[Outcome::Compressed as usize].inc();
                    self.stats.bytes_before.inc_by(value.len() as u64);
                    self.stats.bytes_after.inc_by(c.len() as u64);
                    return Bytes::from(c);
                }
                _ => Outcome::NoGain,
            }
        };
        self.stats.values[outcome as usize].inc();
        value.clone()
    }

    /// The original bytes of a stored value (raw values are borrowed).
    pub fn decode<'a>(&self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
        if !envelope::is_enveloped(stored) {
            return Ok(Cow::Borrowed(stored));
        }
        self.counted(|| {
            envelope::decode_with(stored, self.max_decompressed, &|id| self.dicts.get(id))
        })
    }

    /// Appends the original bytes of an enveloped stored value to `out`; `Ok(false)` (nothing
    /// appended) for a raw one. On an error `out` is unchanged.
    pub fn decode_append(
        &self,
        stored: &[u8],
        out: &mut bytes::BytesMut,
    ) -> Result<bool, DecodeError> {
        if !envelope::is_enveloped(stored) {
            return Ok(false);
        }
        self.counted(|| {
            envelope::decode_append(stored, self.max_decompressed, &|id| self.dicts.get(id), out)
        })
    }

    /// Runs a decode, counting its time and whether it succeeded.
    fn counted<T>(&self, f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
        let t = Instant::now();
        let r = f();
        self.stats
            .decompress_seconds
            .inc_by(t.elapsed().as_secs_f64());
        match &r {
            Ok(_) => self.stats.decoded.inc(),
            Err(_) => self.stats.corrupt.inc(),
        }
        r
    }

    /// The error reply text for a value at `key` that cannot be decoded.
    pub fn error_text(key: &[u8], e: &DecodeError) -> String {
        format!(
            "ERR prescient cannot decode the stored value of key '{}': {e}",
            String::from_utf8_lossy(key)
        )
    }

    /// Lines for `PROXY STATS`.
    pub fn report(&self) -> Vec<(String, String)> {
        let s = &self.stats;
        let before = s.bytes_before.get();
        let after = s.bytes_after.get();
        let ratio = if before == 0 {
            0.0
        } else {
            after as f64 / before as f64
        };
        let mut v = vec![
            ("compression_enabled".into(), self.enabled.to_string()),
            ("compression_codec".into(), self.codec.name().into()),
            ("compression_bytes_before".into(), before.to_string()),
            ("compression_bytes_after".into(), after.to_string()),
            ("compression_ratio".into(), format!("{ratio:.4}")),
        ];
        for (i, o) in OUTCOMES.iter().enumerate() {
            v.push((
                format!("compression_values_{o}"),
                s.values[i].get().to_string(),
            ));
        }
        v.extend(self.dicts.report());
        v.push(("compression_decoded".into(), s.decoded.get().to_string()));
        v.push((
            "compression_decoded_off_loop".into(),
            s.decoded_off_loop.get().to_string(),
        ));
        v.push(("compression_corrupt".into(), s.corrupt.get().to_string()));
        v.push((
            "compression_compress_seconds".into(),
            format!("{:.6}", s.compress_seconds.get()),
        ));
        v.push((
            "compression_decompress_seconds".into(),
            format!("{:.6}", s.decompress_seconds.get()),
        ));
        v
    }
}
