//! Compression dictionaries learned from the values, per key template.
//!
//! Small JSON documents compress poorly on their own: each one has to spell out its field
//! names once. A zstd dictionary trained on a few values of the same shape holds those, and
//! values of 1-2 KB then compress to a quarter of their size or less, faster than without.
//! Values are grouped by their key's template (`order:{}` for `order:17`; the tracker's
//! templater). For a template without a dictionary, values of up to 64 KiB are sampled (a copy
//! each, bounded per template and in all); once enough are in, a dictionary is trained on
//! tokio's blocking pool, measured on its samples against the configured codec (it must beat
//! it well: [`GAIN`]), written to the store (`HSET prescient:dicts <id> <bytes>`), and only once
//! the store has it, used for the template's new values. Until then, and for templates whose
//! values gain nothing from one, values are compressed with the configured codec.
//!
//! A dictionary is named by a checksum of its bytes, in every envelope that uses it, so any
//! prescient in front of the store can decode any value: one it does not know it fetches from
//! `prescient:dicts` (checking the bytes against the id) before decoding. Dictionaries are
//! never dropped: values may use them for as long as they live. Their number is bounded
//! (`compression.max_dictionaries`); a template whose values drift away from its dictionary
//! (stored size grows by a third over what it was when the dictionary was new) is sampled and
//! trained again while that bound allows, at most once per `RETRAIN_EVERY`. The trainer writes
//! every dictionary it knows back to the store when the hash loses one (an eviction, a
//! FLUSHALL), so a value stays readable while any prescient that knew its dictionary runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::envelope::{self, Dict};
use crate::tracking::template::Templater;
use crate::upstream::{Internal, Upstream};

/// Values larger than this are not sampled (a dictionary gains little on them).
const MAX_SAMPLE: usize = 64 << 10;
/// Sampled bytes per template at most: enough for a 16 KiB dictionary (zstd suggests ~100x).
const GROUP_SAMPLE_BYTES: usize = 2 << 20;
/// Sampled bytes in all at most, across templates still waiting for a dictionary.
const ALL_SAMPLE_BYTES: usize = 16 << 20;
/// Templates sampled at once at most.
const MAX_SAMPLING: usize = 256;
/// Values encoded with a new dictionary that set its baseline ratio.
const BASELINE_VALUES: u32 = 64;
/// A template is retrained at most this often.
const RETRAIN_EVERY: Duration = Duration::from_secs(600);

/// `[compression]`'s dictionary settings.
#[derive(Debug, Clone)]
pub struct DictConfig {
    pub enabled: bool,
    /// Values sampled per template before training.
    pub samples: usize,
    /// Dictionary size in bytes.
    pub bytes: usize,
    /// Dictionaries at most, in all.
    pub max: usize,
    /// zstd level dictionaries compress at.
    pub level: i32,
    /// The hash in the store that holds them.
    pub key: Bytes,
    /// How often the trainer checks that the store still has every dictionary.
    pub check_every: Duration,
    /// The plain codec and level a template uses without a dictionary: a dictionary is used
    /// only where it beats them (`GAIN`).
    pub plain: (envelope::Codec, i32),
}

/// A trained dictionary is used only when, on its own samples, it stores them in at most 90%
/// of what the plain codec takes and saves at least 5% of their original size over it: values
/// the plain codec already shrinks to nothing (a repeated filler) keep the faster codec.
const GAIN: (u64, u64) = (90, 5);

/// Whether a dictionary pays, from the samples' sizes: original, with the plain codec, with
/// the dictionary.
fn pays(original: u64, plain: u64, with_dict: u64) -> bool {
    with_dict * 100 <= plain * GAIN.0
        && (plain.saturating_sub(with_dict)) * 100 >= original * GAIN.1
}

/// A template's dictionary in use, and how well it still fits.
struct Group {
    dict: Arc<Dict>,
    /// Stored/original in thousandths: the mean over the first values, then a moving average.
    baseline: AtomicU32,
    recent: AtomicU32,
    seen: AtomicU32,
    trained: Instant,
    drifting: AtomicBool,
}

#[derive(Default)]
struct Sampling {
    groups: HashMap<u64, Samples>,
    bytes: usize,
}

#[derive(Default)]
struct Samples {
    values: Vec<Bytes>,
    bytes: usize,
    /// A training job for this template is out.
    training: bool,
    /// After a failed training, no sampling before this.
    retry_at: Option<Instant>,
}

/// Values of one template, to train a dictionary on.
pub struct Job {
    group: u64,
    template: String,
    samples: Vec<Bytes>,
}

#[derive(Default)]
pub struct DictStats {
    pub trained: AtomicU64,
    pub fetched: AtomicU64,
    pub failed: AtomicU64,
    pub encoded: AtomicU64,
}

/// The dictionaries known to this prescient, and the templates' current ones.
pub struct Dictionaries {
    pub cfg: DictConfig,
    templater: Templater,
    by_id: RwLock<HashMap<u32, Arc<Dict>>>,
    groups: RwLock<HashMap<u64, Arc<Group>>>,
    sampling: Mutex<Sampling>,
    trainer: OnceLock<mpsc::Sender<Job>>,
    pub stats: DictStats,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The field of `prescient:dicts` that holds dictionary `id`.
pub fn field(id: u32) -> Bytes {
    Bytes::from(format!("{id:08x}"))
}

impl Dictionaries {
    pub fn new(cfg: DictConfig, templater: Templater) -> Dictionaries {
        Dictionaries {
            cfg,
            templater,
            by_id: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            sampling: Mutex::new(Sampling::default()),
            trainer: OnceLock::new(),
            stats: DictStats::default(),
        }
    }

    /// A dictionary by id, if known here.
    pub fn get(&self, id: u32) -> Option<Arc<Dict>> {
        read(&self.by_id).get(&id).cloned()
    }

    pub fn count(&self) -> usize {
        read(&self.by_id).len()
    }

    /// Registers a dictionary for decoding; returns the one known under its id.
    fn register(&self, d: Dict) -> Arc<Dict> {
        write(&self.by_id)
            .entry(d.id)
            .or_insert_with(|| Arc::new(d))
            .clone()
    }

    /// The dictionary to compress a value of `key` with, if its template has one. Without,
    /// the value may be kept as a sample. Returns the template's group for [`Self::observe`].
    pub fn for_value(&self, key: &[u8], value: &Bytes) -> (u64, Option<Arc<Dict>>) {
        if !self.cfg.enabled {
            return (0, None);
        }
        let group = self.templater.template_hash(key);
        let current = read(&self.groups).get(&group).cloned();
        match current {
            Some(g) => {
                if g.drifting.load(Ordering::Relaxed) {
                    self.sample(group, key, value);
                }
                (group, Some(g.dict.clone()))
            }
            None => {
                self.sample(group, key, value);
                (group, None)
            }
        }
    }

    /// Notes how a value compressed with its template's dictionary came out.
    pub fn observe(&self, group: u64, original: usize, stored: usize) {
        self.stats.encoded.fetch_add(1, Ordering::Relaxed);
        let Some(g) = read(&self.groups).get(&group).cloned() else {
            return;
        };
        let ratio = (stored as u64 * 1000 / original.max(1) as u64).min(u32::MAX as u64) as u32;
        let seen = g.seen.fetch_add(1, Ordering::Relaxed);
        if seen < BASELINE_VALUES {
            // The running mean of the first values.
            let b = g.baseline.load(Ordering::Relaxed) as u64;
            let mean = (b * seen as u64 + ratio as u64) / (seen as u64 + 1);
            g.baseline.store(mean as u32, Ordering::Relaxed);
            g.recent.store(mean as u32, Ordering::Relaxed);
            return;
        }
        // A moving average over ~64 values (races between threads lose an update, no more).
        let r = g.recent.load(Ordering::Relaxed) as u64;
        let recent = (r * 63 + ratio as u64) / 64;
        g.recent.store(recent as u32, Ordering::Relaxed);
        let base = g.baseline.load(Ordering::Relaxed) as u64;
        if recent * 3 > base * 4
            && g.trained.elapsed() >= RETRAIN_EVERY
            && self.count() < self.cfg.max
            && !g.drifting.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                group,
                baseline = base,
                recent,
                "values drifted from their dictionary; sampling to train another"
            );
        }
    }

    fn sample(&self, group: u64, key: &[u8], value: &Bytes) {
        if value.len() > MAX_SAMPLE || self.trainer.get().is_none() || self.count() >= self.cfg.max
        {
            return;
        }
        let mut s = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
        if !s.groups.contains_key(&group) && s.groups.len() >= MAX_SAMPLING {
            return;
        }
        if s.bytes + value.len() > ALL_SAMPLE_BYTES {
            return;
        }
        let samples = s.groups.entry(group).or_default();
        if samples.training || samples.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // A copy: a slice of the client's read buffer would keep all of it alive.
        samples.values.push(Bytes::copy_from_slice(value));
        samples.bytes += value.len();
        let full = samples.values.len() >= self.cfg.samples || samples.bytes >= GROUP_SAMPLE_BYTES;
        let added = value.len();
        s.bytes += added;
        if !full {
            return;
        }
        let Some(samples) = s.groups.get_mut(&group) else {
            return;
        };
        let job = Job {
            group,
            template: String::from_utf8_lossy(
                &self
                    .templater
                    .parse(Bytes::copy_from_slice(key))
                    .template
                    .text()[..],
            )
            .into_owned(),
            samples: std::mem::take(&mut samples.values),
        };
        let taken = std::mem::take(&mut samples.bytes);
        samples.training = true;
        s.bytes -= taken;
        if let Some(tx) = self.trainer.get() {
            if tx.try_send(job).is_err() {
                // The trainer is busy: this template samples again.
                if let Some(samples) = s.groups.get_mut(&group) {
                    samples.training = false;
                }
            }
        }
    }

    /// Makes `d` the dictionary of `group` (it is in the store by now).
    fn install(&self, group: u64, d: Arc<Dict>) {
        let g = Arc::new(Group {
            dict: d,
            baseline: AtomicU32::new(0),
            recent: AtomicU32::new(0),
            seen: AtomicU32::new(0),
            trained: Instant::now(),
            drifting: AtomicBool::new(false),
        });
        write(&self.groups).insert(group, g);
        self.end_sampling(group);
    }

    fn end_sampling(&self, group: u64) {
        let mut s = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(samples) = s.groups.remove(&group) {
            s.bytes -= samples.bytes;
        }
    }

    /// Training failed: the template keeps its plain codec (or its old dictionary) and is
    /// not sampled again for a while, so a template whose values admit no dictionary does not
    /// cost a training every few hundred writes.
    fn sampling_failed(&self, group: u64) {
        let mut s = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
        let freed = match s.groups.get_mut(&group) {
            Some(samples) => {
                samples.values.clear();
                samples.training = false;
                samples.retry_at = Some(Instant::now() + RETRAIN_EVERY);
                std::mem::take(&mut samples.bytes)
            }
            None => 0,
        };
        s.bytes -= freed;
        if let Some(g) = read(&self.groups).get(&group) {
            g.drifting.store(false, Ordering::Relaxed);
        }
    }

    /// The ids of dictionaries named by envelopes in `raw` (a reply, or a value) that are not
    /// known here. Anything that looks like an envelope header counts; a false match costs
    /// one lookup in the store.
    pub fn missing_in(&self, raw: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        for at in memchr::memmem::find_iter(raw, envelope::MAGIC) {
            let h = &raw[at..];
            if h.len() < envelope::DICT_HEADER
                || (h[3] != envelope::VERSION && h[3] != envelope::VERSION_FRESH)
                || h[4] != envelope::Codec::ZstdDict as u8
            {
                continue;
            }
            let id = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
            if !out.contains(&id) && self.get(id).is_none() {
                out.push(id);
            }
        }
        out
    }

    /// Fetches dictionaries from the store and registers those whose bytes match their id.
    /// Returns how many it found.
    pub async fn fetch(&self, up: &Arc<Upstream>, ids: &[u32]) -> usize {
        let mut client = Internal::new(up.clone());
        let mut found = 0;
        for &id in ids {
            let args = [Bytes::from_static(b"HGET"), self.cfg.key.clone(), field(id)];
            let Ok(reply) = client.call(&args).await else {
                continue;
            };
            let Some(Some(raw)) = super::reply::bulk_payload(&reply) else {
                continue;
            };
            if Dict::id_of(raw) != id {
                tracing::warn!(
                    id,
                    "a dictionary in the store does not match its id; ignored"
                );
                continue;
            }
            if let Some(d) = Dict::new(Bytes::copy_from_slice(raw), self.cfg.level) {
                self.register(d);
                self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                found += 1;
            }
        }
        found
    }

    /// Starts the trainer: it trains dictionaries from the samples, writes them to the store,
    /// installs them, and keeps the store's copy whole. Without a trainer nothing is sampled.
    pub fn start_trainer(self: &Arc<Self>, up: Arc<Upstream>) {
        if !self.cfg.enabled {
            return;
        }
        let (tx, rx) = mpsc::channel(16);
        if self.trainer.set(tx).is_err() {
            return;
        }
        tokio::spawn(trainer(self.clone(), up, rx));
    }

    /// Lines for `PROXY STATS`.
    pub fn report(&self) -> Vec<(String, String)> {
        let s = &self.stats;
        let sampling = self.sampling.lock().map(|s| s.groups.len()).unwrap_or(0);
        vec![
            ("dictionaries_enabled".into(), self.cfg.enabled.to_string()),
            ("dictionaries_known".into(), self.count().to_string()),
            (
                "dictionaries_templates".into(),
                read(&self.groups).len().to_string(),
            ),
            ("dictionaries_sampling".into(), sampling.to_string()),
            (
                "dictionaries_trained".into(),
                s.trained.load(Ordering::Relaxed).to_string(),
            ),
            (
                "dictionaries_fetched".into(),
                s.fetched.load(Ordering::Relaxed).to_string(),
            ),
            (
                "dictionaries_failed".into(),
                s.failed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "dictionaries_values_encoded".into(),
                s.encoded.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }
}

async fn trainer(d: Arc<Dictionaries>, up: Arc<Upstream>, mut rx: mpsc::Receiver<Job>) {
    let mut client = Internal::new(up.clone());
    load_all(&d, &mut client).await;
    let mut check = tokio::time::interval(d.cfg.check_every);
    check.tick().await;
    loop {
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => train(&d, &mut client, job).await,
                None => return,
            },
            _ = check.tick() => keep_stored(&d, &mut client).await,
        }
    }
}

/// Learns the dictionaries already in the store (written by earlier or other prescients).
async fn load_all(d: &Dictionaries, client: &mut Internal) {
    let args = [Bytes::from_static(b"HGETALL"), d.cfg.key.clone()];
    // The upstream may still be connecting: a few tries, then the lazy fetch covers it.
    for _ in 0..20 {
        if let Ok(reply) = client.call(&args).await {
            let mut n = 0;
            for raw in bulks(&reply).into_iter().skip(1).step_by(2) {
                if let Some(dict) = Dict::new(raw, d.cfg.level) {
                    d.register(dict);
                    n += 1;
                }
            }
            if n > 0 {
                tracing::info!(
                    dictionaries = n,
                    "loaded compression dictionaries from the store"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn train(d: &Dictionaries, client: &mut Internal, job: Job) {
    let (size, level, (codec, plain_level)) = (d.cfg.bytes, d.cfg.level, d.cfg.plain);
    let samples = job.samples;
    let trained = tokio::task::spawn_blocking(move || {
        let raw = zstd::dict::from_samples(&samples, size).ok()?;
        let dict = Dict::new(Bytes::from(raw), level)?;
        let size = |v: Option<Vec<u8>>, s: &Bytes| v.map_or(s.len(), |v| v.len()) as u64;
        let (mut original, mut plain, mut with_dict) = (0, 0, 0);
        for s in &samples {
            original += s.len() as u64;
            plain += size(envelope::compress(codec, plain_level, s), s);
            with_dict += size(envelope::compress_with(&dict, s), s);
        }
        tracing::debug!(
            original,
            plain,
            with_dict,
            "dictionary measured on its samples"
        );
        pays(original, plain, with_dict).then_some(dict)
    })
    .await
    .ok()
    .flatten();
    let Some(dict) = trained else {
        // Too few or too alike samples, or no gain over the plain codec: the template keeps
        // the plain codec.
        d.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(template = %job.template, "no dictionary that pays could be trained");
        d.sampling_failed(job.group);
        return;
    };
    let args = [
        Bytes::from_static(b"HSET"),
        d.cfg.key.clone(),
        field(dict.id),
        dict.raw.clone(),
    ];
    match client.call(&args).await {
        Ok(r) if r.starts_with(b":") => {
            let id = dict.id;
            let dict = d.register(dict);
            d.install(job.group, dict);
            d.stats.trained.fetch_add(1, Ordering::Relaxed);
            tracing::info!(template = %job.template, id = format!("{id:08x}"), "compression dictionary trained");
        }
        other => {
            d.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(template = %job.template, reply = ?other, "could not store a compression dictionary; not used");
            d.sampling_failed(job.group);
        }
    }
}

/// Writes back any dictionary the store's hash has lost.
async fn keep_stored(d: &Dictionaries, client: &mut Internal) {
    let args = [Bytes::from_static(b"HKEYS"), d.cfg.key.clone()];
    let Ok(reply) = client.call(&args).await else {
        return;
    };
    let stored: Vec<Bytes> = bulks(&reply);
    let known: Vec<Arc<Dict>> = read(&d.by_id).values().cloned().collect();
    for dict in known {
        if !stored.iter().any(|f| f[..] == field(dict.id)[..]) {
            let args = [
                Bytes::from_static(b"HSET"),
                d.cfg.key.clone(),
                field(dict.id),
                dict.raw.clone(),
            ];
            let _ = client.call(&args).await;
            tracing::warn!(
                id = format!("{:08x}", dict.id),
                "a compression dictionary was missing from the store; written back"
            );
        }
    }
}

/// The bulk strings of an array reply (RESP2), in order.
fn bulks(reply: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut i = match reply.iter().position(|&b| b == b'\n') {
        Some(n) if reply.first() == Some(&b'*') => n + 1,
        _ => return out,
    };
    while i < reply.len() && reply[i] == b'$' {
        let Some(nl) = reply[i..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&reply[i + 1..i + nl - 1])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let start = i + nl + 1;
        if start + len + 2 > reply.len() {
            break;
        }
        out.push(Bytes::copy_from_slice(&reply[start..start + len]));
        i = start + len + 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_pays_only_well_past_the_plain_codec() {
        // JSON orders: lz4 keeps 60%, the dictionary 30%.
        assert!(pays(1000, 600, 300));
        // A repeated filler: lz4 keeps 2%, the dictionary 1%: not worth zstd's time.
        assert!(!pays(1000, 20, 10));
        // Barely better than the plain codec.
        assert!(!pays(1000, 400, 380));
    }

    #[test]
    fn bulks_reads_an_array_and_stops_at_damage() {
        assert_eq!(
            bulks(b"*2\r\n$3\r\nabc\r\n$0\r\n\r\n"),
            vec![Bytes::from_static(b"abc"), Bytes::new()]
        );
        assert!(bulks(b"*1\r\n$9\r\nabc\r\n").is_empty());
        assert!(bulks(b"-ERR x\r\n").is_empty());
        assert!(bulks(b"*1\r\n$-1\r\n").is_empty());
    }

    #[test]
    fn missing_in_names_unknown_dictionaries_once() {
        let d = Dictionaries::new(
            DictConfig {
                enabled: true,
                samples: 10,
                bytes: 1024,
                max: 4,
                level: 1,
                key: Bytes::from_static(b"prescient:dicts"),
                check_every: Duration::from_secs(60),
                plain: (envelope::Codec::Lz4, 0),
            },
            Templater::default(),
        );
        let mut v = envelope::MAGIC.to_vec();
        v.extend_from_slice(&[envelope::VERSION, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        let twice = [v.clone(), v.clone(), b"tail".to_vec()].concat();
        assert_eq!(d.missing_in(&twice), vec![0xdead_beef]);
        assert!(d.missing_in(&v[..10]).is_empty(), "too short to name one");
        assert!(d.missing_in(b"no envelope").is_empty());
    }
}
