//! The what-if simulator: demand reads replayed in order through an LRU cache, with or
//! without prefetching what the model predicts.
//!
//! Per read: a hit or a miss (a miss inserts the key); then the client's context learns the
//! transition and predicts; each predicted key already cached is touched (moved to the most
//! recently used end, as a TOUCH would in Redis: no origin load), and each prediction marked
//! to fetch that is not cached is inserted as a prefetch (one origin fetch). A prefetched entry that a demand read finds is a prefetch hit (counted
//! once); one evicted before any read was wasted. The model and contexts are the proxy's own
//! (src/tracking/).

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::trace::Access;
use crate::prefetch::controller::{Controller, Feedback};
use crate::tracking::context::{Contexts, Score};
use crate::tracking::model::{Candidate, Level, Model, ModelConfig, ModelSize};
use crate::tracking::table::{home_slot, prefetch_line};
use crate::tracking::template::{ParsedKey, Templater, Templates};

/// Cache capacity: a number of keys, or bytes (each key weighs its size).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Capacity {
    Keys(u64),
    Bytes(u64),
}

#[derive(Clone)]
pub struct SimOptions {
    pub capacity: Capacity,
    pub prefetch: bool,
    pub model: ModelConfig,
    /// Group reads by client (false: one context for the whole trace).
    pub per_client: bool,
    pub stale_gap_secs: f64,
    pub templater: Templater,
    /// Distinct keys the trace holds, if known (0 if not): tables are made that large up
    /// front rather than grown (and rehashed) while the replay runs.
    pub distinct_keys: usize,
    /// The adaptive threshold, under this origin budget (`max_load_factor`): the proxy's
    /// controller moves the fetch threshold every [`EPOCH_READS`] reads, and
    /// `model.min_probability` is only the lowest it may go. None: the model's threshold.
    pub adaptive: Option<f64>,
}

/// Reads per controller epoch in the replay.
pub const EPOCH_READS: u64 = 500;

#[derive(Clone, Debug, Default)]
pub struct SimResult {
    pub accesses: u64,
    pub hits: u64,
    pub misses: u64,
    pub prefetches: u64,
    pub prefetch_hits: u64,
    pub prefetches_wasted: u64,
    /// Predicted keys already cached, moved to the most recently used end (no origin load).
    pub promotions: u64,
    pub score: Score,
    pub model: ModelSize,
    /// With the adaptive threshold: (reads so far, threshold) whenever it moved.
    pub thresholds: Vec<(u64, f64)>,
    /// Time spent replaying the reads (not counting the set-up, the model's size walk or
    /// its teardown).
    pub elapsed: Duration,
}

impl SimResult {
    pub fn hit_ratio(&self) -> f64 {
        crate::tracking::context::ratio(self.hits, self.accesses)
    }

    pub fn precision(&self) -> f64 {
        crate::tracking::context::ratio(self.prefetch_hits, self.prefetches)
    }
}

/// No id: the end of the list.
const NIL: u32 = u32::MAX;

/// A key's place in the cache: a node of an intrusive doubly linked list over the dense key
/// ids (most recently used at `head`), so a lookup is an index, not a hash probe.
#[derive(Clone)]
struct Slot {
    prev: u32,
    next: u32,
    size: u64,
    cached: bool,
    prefetched: bool,
}

const EMPTY: Slot = Slot {
    prev: NIL,
    next: NIL,
    size: 0,
    cached: false,
    prefetched: false,
};

struct Cache {
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    capacity: u64,
    by_bytes: bool,
    used: u64,
    wasted: u64,
}

impl Cache {
    fn new(capacity: u64, by_bytes: bool, room: usize) -> Cache {
        Cache {
            slots: Vec::with_capacity(room),
            head: NIL,
            tail: NIL,
            capacity,
            by_bytes,
            used: 0,
            wasted: 0,
        }
    }

    fn weight(&self, size: u64) -> u64 {
        if self.by_bytes {
            size
        } else {
            1
        }
    }

    fn slot(&mut self, id: u32) -> &mut Slot {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize((i + 1).max(self.slots.capacity()), EMPTY);
        }
        &mut self.slots[i]
    }

    fn cached(&self, id: u32) -> bool {
        self.slots.get(id as usize).is_some_and(|s| s.cached)
    }

    fn unlink(&mut self, id: u32) {
        let Slot { prev, next, .. } = self.slots[id as usize];
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn link_front(&mut self, id: u32) {
        let head = self.head;
        let s = &mut self.slots[id as usize];
        s.prev = NIL;
        s.next = head;
        match head {
            NIL => self.tail = id,
            h => self.slots[h as usize].prev = id,
        }
        self.head = id;
    }

    /// Moves a cached key to the most recently used end; false if it is not cached.
    fn promote(&mut self, id: u32) -> bool {
        if !self.cached(id) {
            return false;
        }
        if self.head != id {
            self.unlink(id);
            self.link_front(id);
        }
        true
    }

    fn remove(&mut self, id: u32) {
        self.unlink(id);
        let s = &mut self.slots[id as usize];
        s.cached = false;
        let (size, prefetched) = (s.size, s.prefetched);
        self.used -= self.weight(size);
        self.wasted += u64::from(prefetched);
    }

    /// Inserts a key not cached at the most recently used end, evicting from the other; an
    /// object larger than the whole cache is not cached.
    fn insert(&mut self, id: u32, size: u64, prefetched: bool) {
        let w = self.weight(size);
        if w > self.capacity {
            return;
        }
        while self.used + w > self.capacity && self.tail != NIL {
            self.remove(self.tail);
        }
        self.used += w;
        let s = self.slot(id);
        s.size = size;
        s.prefetched = prefetched;
        s.cached = true;
        self.link_front(id);
    }
}

/// The cache's key ids, interned by key hash (the model's identity for keys: template.rs,
/// `hash_bytes`), and each key's last known size.
struct Ids {
    ids: IdMap,
    sizes: Vec<u64>,
}

impl Ids {
    fn intern(&mut self, hash: u64) -> u32 {
        let next = self.sizes.len() as u32;
        let id = self.ids.get_or_insert(hash, next);
        if id == next {
            self.sizes.push(0);
        }
        id
    }
}

/// The model's side: each key read, parsed once, found by its hash. The bytes are copied
/// into 64 KiB arena chunks: no allocation per key, and each key's `Bytes` counts its
/// reference on its chunk's count, which stays cached, rather than on one allocated per key.
struct ParsedKeys {
    ids: IdMap,
    arena: BytesMut,
    parsed: Vec<Arc<ParsedKey>>,
    templates: Templates,
}

const ARENA_CHUNK: usize = 64 << 10;

impl ParsedKeys {
    fn get(&mut self, hash: u64, key: &[u8], templater: &Templater) -> Arc<ParsedKey> {
        let next = self.parsed.len() as u32;
        let id = self.ids.get_or_insert(hash, next);
        if id == next {
            if self.arena.capacity() < key.len() {
                self.arena = BytesMut::with_capacity(key.len().max(ARENA_CHUNK));
            }
            self.arena.extend_from_slice(key);
            let key = self.arena.split().freeze();
            let parsed = templater.parse_with(key, hash, Some(&mut self.templates));
            self.parsed.push(Arc::new(parsed));
        }
        self.parsed[id as usize].clone()
    }
}

/// Key ids by key hash: open addressing over (hash, id) pairs, at most half full, so the
/// slot a hash is found in is known before looking, and can be prefetched.
struct IdMap {
    slots: Vec<(u64, u32)>,
    len: usize,
    /// `64 - log2(slots)`.
    shift: u32,
}

impl IdMap {
    fn with_capacity(n: usize) -> IdMap {
        let slots = (2 * n).next_power_of_two().max(16);
        IdMap {
            slots: vec![(0, NIL); slots],
            len: 0,
            shift: 64 - slots.trailing_zeros(),
        }
    }

    fn home(&self, hash: u64) -> usize {
        home_slot(hash, self.shift)
    }

    /// The slot holding `hash`, or the free one ending its probe.
    fn probe(&self, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        while self.slots[i].1 != NIL && self.slots[i].0 != hash {
            i = (i + 1) & mask;
        }
        i
    }

    fn get(&self, hash: u64) -> Option<u32> {
        match self.slots[self.probe(hash)].1 {
            NIL => None,
            id => Some(id),
        }
    }

    /// The id of `hash`, given `id` if it had none.
    fn get_or_insert(&mut self, hash: u64, id: u32) -> u32 {
        let i = self.probe(hash);
        if self.slots[i].1 != NIL {
            return self.slots[i].1;
        }
        self.slots[i] = (hash, id);
        self.len += 1;
        if 2 * self.len > self.slots.len() {
            let grown = vec![(0, NIL); 2 * self.slots.len()];
            let old = std::mem::replace(&mut self.slots, grown);
            self.shift -= 1;
            for (h, id) in old.into_iter().filter(|s| s.1 != NIL) {
                let i = self.probe(h);
                self.slots[i] = (h, id);
            }
        }
        id
    }

    fn warm_cache(&self, hash: u64) {
        prefetch_line(self.slots.as_ptr().wrapping_add(self.home(hash)));
    }
}

/// Reads ahead of the current one whose model states and key slots are prefetched: far
/// enough for the loads to finish (a read takes about a microsecond), near enough that they
/// are still cached when the read comes.
const READ_AHEAD: usize = 8;

/// Keys the replay makes room for up front, at most.
const MAX_ROOM: usize = 4 << 20;

/// Reads the model's thread hands the cache's at a time.
const BATCH: usize = 1024;

/// Batches in flight between the threads, at most (the model's thread waits beyond).
const BATCHES_IN_FLIGHT: usize = 4;

/// Tells `ahead` of each read [`READ_AHEAD`] reads before it comes (to prefetch what it
/// will need), in order: before read `i` is taken, of read `i + READ_AHEAD` (and at the
/// start, of the first ones).
fn read_ahead<'t>(trace: &'t [Access], i: usize, mut ahead: impl FnMut(&'t Access)) {
    if i == 0 {
        trace.iter().take(READ_AHEAD).for_each(&mut ahead);
    }
    if let Some(a) = trace.get(i + READ_AHEAD) {
        ahead(a);
    }
}

/// What the model predicted after each read of a stretch of the trace: key hashes, and
/// whether each is to be fetched or only kept warm.
#[derive(Default)]
struct Batch {
    /// Per read, where its predictions end in `predictions`.
    ends: Vec<u32>,
    /// Key hash, probability, marked to fetch by the model.
    predictions: Vec<(u64, f64, bool)>,
}

impl Batch {
    /// A batch with room for all the predictions `cfg` can make after each read, so it
    /// never grows as it fills (growing one from empty, doubling, cost the model's thread
    /// 3% of its work on NASA).
    fn with_room(cfg: &ModelConfig) -> Batch {
        Batch {
            ends: Vec::with_capacity(BATCH),
            predictions: Vec::with_capacity(cfg.most_predictions() * BATCH),
        }
    }
}

/// A stretch of the trace as the template stage hands it on: each read's parsed key, and
/// what the template half of the model predicted after each read.
#[derive(Default)]
struct Parsed {
    keys: Vec<Arc<ParsedKey>>,
    /// Per read, where its predictions end in `predictions`.
    ends: Vec<u32>,
    /// Key hash and probability. Not the key: the cache goes by hashes alone, so copying
    /// each predicted key's bytes over (a URL of tens of bytes, several per read) would buy
    /// nothing.
    predictions: Vec<(u64, f64)>,
}

impl Parsed {
    /// The template half's predictions after read `i` of the stretch, without their keys
    /// (empty).
    fn predictions(&self, i: usize) -> impl Iterator<Item = Candidate<'_>> {
        let from = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.predictions[from..self.ends[i] as usize]
            .iter()
            .map(|&(hash, probability)| Candidate {
                key: &[],
                hash,
                probability,
                level: Level::Template,
                fetch: false,
            })
    }
}

/// Replays the trace through an LRU cache and, with `opts.prefetch`, through the model.
/// With prefetching the work runs in three stages, each a thread going through the trace in
/// order and handing the next one batches (the model and the contexts depend only on the
/// trace, not on the cache): one parses the keys (once per key) and runs the template half
/// of the model, one runs its key half (see [`Model::key_half`]) and makes the predictions,
/// one runs the cache on the reads and the predictions after each. The result is the same
/// as one thread's.
pub fn simulate(trace: &[Access], opts: &SimOptions) -> SimResult {
    let room = opts.distinct_keys.min(MAX_ROOM);
    let started = Instant::now();
    if !opts.prefetch {
        let mut r = run_cache(trace, opts, room, None);
        r.elapsed = started.elapsed();
        return r;
    }
    let (to_cache, from_learner) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
    // Emptied batches go back, so their buffers are reused rather than reallocated.
    let (to_learner, from_cache) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT + 1);
    let (to_learner_parsed, parsed) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let (mut r, learned, (_keys, templates_half)) = std::thread::scope(|s| {
        // Named, so a profile (`perf report --comm replay-model`) tells the stages apart.
        let stage = |name: &str| std::thread::Builder::new().name(name.to_string());
        let parser = stage("replay-templates")
            .spawn_scoped(s, || {
                let model = Model::template_half(opts.model.clone());
                template_stage(trace, opts, room, model, to_learner_parsed)
            })
            .expect("spawn the replay's template stage");
        let learner = stage("replay-model")
            .spawn_scoped(s, || {
                // Built here, so laying out its tables overlaps the template stage's
                // first batch.
                let model = Model::key_half(opts.model.clone(), room);
                learn(trace, opts, model, to_cache, from_cache, parsed)
            })
            .expect("spawn the replay's model thread");
        let r = run_cache(trace, opts, room, Some((from_learner, to_learner)));
        let learned = learner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let keys = parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (r, learned, keys)
    });
    r.elapsed = started.elapsed();
    r.score = learned.score;
    r.model = learned.model.size() + templates_half.size();
    r
}

/// The context a read belongs to: its client's, or the one context of the whole trace.
fn context_of(opts: &SimOptions, a: &Access) -> u32 {
    if opts.per_client {
        a.client
    } else {
        0
    }
}

/// What the model's thread leaves: its model and score (the model is measured and freed
/// after the replay is timed, as are the template stage's keys and model).
struct Learned {
    model: Model,
    score: Score,
}

/// The model's thread: the key half of the model learns from each read in order (its key
/// parsed by the template stage) and predicts after it, ending with the template half's
/// predictions; what it predicts goes to the cache's thread.
fn learn(
    trace: &[Access],
    opts: &SimOptions,
    mut model: Model,
    out: SyncSender<Batch>,
    emptied: Receiver<Batch>,
    parsed_batches: Receiver<Parsed>,
) -> Learned {
    let mut contexts = Contexts::unbounded(opts.stale_gap_secs);
    let context = |a: &Access| context_of(opts, a);
    // Each context's last key as far as the read-ahead got, for its order-2 state.
    let mut last_ahead: Vec<Option<u64>> = Vec::new();
    let mut ahead_of = |a: &Access, model: &Model| {
        let c = context(a) as usize;
        if c >= last_ahead.len() {
            last_ahead.resize(c + 1, None);
        }
        model.warm_cache(last_ahead[c].replace(a.hash), a.hash);
    };
    let mut batch = Batch::with_room(&opts.model);
    let mut parsed = Parsed::default();
    let mut at = 0;
    // The batch's keys are moved out, not cloned: the template stage changes their
    // reference counts too, and each change here would pull the count's cache line over
    // from the other core.
    let mut keys = Vec::new().into_iter();
    for (i, a) in trace.iter().enumerate() {
        read_ahead(trace, i, |a| ahead_of(a, &model));
        if at == parsed.ends.len() {
            // Every read comes parsed, unless the template stage failed (its join says).
            let Ok(next) = parsed_batches.recv() else {
                break;
            };
            (parsed, at) = (next, 0);
            keys = std::mem::take(&mut parsed.keys).into_iter();
        }
        let Some(key) = keys.next() else { break };
        let predictions = &mut batch.predictions;
        let templates = parsed.predictions(at);
        contexts.access_then(&mut model, context(a), key, a.time, templates, |p| {
            predictions.push((p.hash, p.probability, p.fetch));
        });
        at += 1;
        batch.ends.push(batch.predictions.len() as u32);
        if batch.ends.len() == BATCH {
            let next = emptied
                .try_recv()
                .unwrap_or_else(|_| Batch::with_room(&opts.model));
            if out.send(std::mem::replace(&mut batch, next)).is_err() {
                break;
            }
        }
    }
    if !batch.ends.is_empty() {
        let _ = out.send(batch);
    }
    Learned {
        model,
        score: contexts.score,
    }
}

/// The template stage: parses each read's key (once per key), and, with templates on, the
/// template half of the model learns from it and predicts after it, as the model's thread
/// will do with the key half; both go to that thread in batches.
fn template_stage(
    trace: &[Access],
    opts: &SimOptions,
    room: usize,
    mut model: Model,
    out: SyncSender<Parsed>,
) -> (ParsedKeys, Model) {
    let mut keys = ParsedKeys {
        ids: IdMap::with_capacity(room),
        arena: BytesMut::new(),
        parsed: Vec::with_capacity(room),
        templates: Templates::default(),
    };
    let mut contexts = Contexts::unbounded(opts.stale_gap_secs);
    // Room for all the predictions after each read, so the buffers never grow while filled.
    let new_batch = || Parsed {
        keys: Vec::with_capacity(BATCH),
        ends: Vec::with_capacity(BATCH),
        predictions: Vec::with_capacity(opts.model.most_predictions() * BATCH),
    };
    let mut batch = new_batch();
    for (i, a) in trace.iter().enumerate() {
        read_ahead(trace, i, |b| keys.ids.warm_cache(b.hash));
        let key = keys.get(a.hash, &a.key, &opts.templater);
        if opts.model.templates {
            let ctx = context_of(opts, a);
            let predictions = &mut batch.predictions;
            contexts.access(&mut model, ctx, key.clone(), a.time, |p| {
                predictions.push((p.hash, p.probability));
            });
        }
        batch.keys.push(key);
        batch.ends.push(batch.predictions.len() as u32);
        if batch.keys.len() == BATCH
            && out
                .send(std::mem::replace(&mut batch, new_batch()))
                .is_err()
        {
            return (keys, model);
        }
    }
    if !batch.keys.is_empty() {
        let _ = out.send(batch);
    }
    (keys, model)
}

/// The cache's side: demand reads in order, each followed by the predictions made after it
/// (if `predictions` is given).
fn run_cache(
    trace: &[Access],
    opts: &SimOptions,
    room: usize,
    predictions: Option<(Receiver<Batch>, SyncSender<Batch>)>,
) -> SimResult {
    let (capacity, by_bytes) = match opts.capacity {
        Capacity::Keys(n) => (n, false),
        Capacity::Bytes(n) => (n, true),
    };
    let mut cache = Cache::new(capacity, by_bytes, room);
    let mut keys = Ids {
        ids: IdMap::with_capacity(room),
        sizes: Vec::with_capacity(room),
    };
    let mut r = SimResult::default();
    let mut batch = Batch::default();
    let (mut at, mut from) = (0, 0);
    let mut control = opts
        .adaptive
        .map(|budget| (Controller::new(budget), Feedback::default()));
    let mut threshold = match &control {
        Some((c, _)) => c.threshold(),
        None => opts.model.min_probability,
    };
    if control.is_some() {
        r.thresholds.push((0, threshold));
    }
    for (i, a) in trace.iter().enumerate() {
        r.accesses += 1;
        if let Some((c, last)) = control.as_mut().filter(|_| r.accesses % EPOCH_READS == 0) {
            let now = Feedback {
                misses: r.misses,
                issued: r.prefetches,
                used: r.prefetch_hits,
                late: 0,
            };
            let t = c.observe(Feedback {
                misses: now.misses - last.misses,
                issued: now.issued - last.issued,
                used: now.used - last.used,
                late: 0,
            });
            *last = now;
            if t != threshold {
                threshold = t;
                r.thresholds.push((r.accesses, t));
            }
        }
        read_ahead(trace, i, |b| keys.ids.warm_cache(b.hash));
        let id = keys.intern(a.hash);
        keys.sizes[id as usize] = a.size;
        if cache.cached(id) {
            r.hits += 1;
            let s = &mut cache.slots[id as usize];
            r.prefetch_hits += u64::from(std::mem::take(&mut s.prefetched));
            if s.size != a.size {
                // The object changed size: re-insert at its new weight.
                cache.remove(id);
                cache.insert(id, a.size, false);
            } else {
                cache.promote(id);
            }
        } else {
            r.misses += 1;
            cache.insert(id, a.size, false);
        }
        let Some((batches, emptied)) = &predictions else {
            continue;
        };
        if at == batch.ends.len() {
            // The model's thread sends every read's predictions unless it failed, which
            // its join reports.
            let Ok(next) = batches.recv() else { break };
            let mut done = std::mem::replace(&mut batch, next);
            done.ends.clear();
            done.predictions.clear();
            let _ = emptied.try_send(done);
            (at, from) = (0, 0);
        }
        let to = batch.ends[at] as usize;
        at += 1;
        let predicted = &batch.predictions[from..to];
        from = to;
        // Start every prediction's key-slot lookup before acting on the first.
        for &(hash, _, _) in predicted {
            keys.ids.warm_cache(hash);
        }
        let mut fetches = 0;
        for &(hash, probability, marked) in predicted {
            // The model marks what its threshold allows; a live threshold decides here, in
            // the model's order, as the proxy's scheduler does.
            let fetch = match control {
                None => marked,
                Some(_) => {
                    let f = probability >= threshold && fetches < opts.model.max_predictions;
                    fetches += usize::from(f);
                    f
                }
            };
            let known = keys.ids.get(hash);
            if known.is_some_and(|pid| cache.promote(pid)) {
                r.promotions += 1;
            } else if fetch {
                let pid = known.unwrap_or_else(|| keys.intern(hash));
                // A key never read has no known size: assume the current read's.
                let size = match keys.sizes[pid as usize] {
                    0 => a.size,
                    s => s,
                };
                r.prefetches += 1;
                cache.insert(pid, size, true);
            }
        }
    }
    r.prefetches_wasted = cache.wasted;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn trace(seq: &[(u32, &str)]) -> Vec<Access> {
        seq.iter()
            .enumerate()
            .map(|(i, (c, k))| Access::new(i as f64, *c, Bytes::copy_from_slice(k.as_bytes()), 1))
            .collect()
    }

    fn opts(capacity: u64, prefetch: bool) -> SimOptions {
        SimOptions {
            capacity: Capacity::Keys(capacity),
            prefetch,
            model: ModelConfig {
                order: 1,
                templates: false,
                min_support: 1.0,
                half_life_secs: 0.0,
                ..ModelConfig::default()
            },
            per_client: true,
            stale_gap_secs: 1e9,
            templater: Templater::default(),
            distinct_keys: 0,
            adaptive: None,
        }
    }

    #[test]
    fn template_predictions_reach_the_cache_with_their_read() {
        // Each user's orders follow their profile, the next user's profile the orders, and
        // no key comes back: only the template level (the template stage's half of the
        // model) predicts these. 3,000 reads cross batches; a prediction handed on with
        // another read would be of a key already read or not yet due (no hit).
        let keys: Vec<String> = (0..1500)
            .flat_map(|i| [format!("user:{i}:profile"), format!("user:{i}:orders")])
            .collect();
        let seq: Vec<(u32, &str)> = keys.iter().map(|k| (0, k.as_str())).collect();
        let t = trace(&seq);
        let mut o = opts(3, true);
        o.model.templates = true;
        let with = simulate(&t, &o);
        assert!(with.hit_ratio() > 0.9, "{with:?}");
        assert_eq!(with.prefetch_hits, with.hits);
        o.model.templates = false;
        assert_eq!(simulate(&t, &o).hits, 0);
    }

    #[test]
    fn lru_hits_and_misses() {
        // Capacity 2: a b a c b -> miss miss hit miss(evicts b) miss.
        let t = trace(&[(0, "a"), (0, "b"), (0, "a"), (0, "c"), (0, "b")]);
        let r = simulate(&t, &opts(2, false));
        assert_eq!((r.hits, r.misses, r.prefetches), (1, 4, 0));
    }

    #[test]
    fn byte_capacity_weighs_sizes_and_skips_objects_larger_than_the_cache() {
        let mut t = trace(&[(0, "a"), (0, "big"), (0, "a"), (0, "b"), (0, "a")]);
        t[1].size = 100;
        t[3].size = 6;
        let mut o = opts(10, false);
        o.capacity = Capacity::Bytes(10);
        // a(1) miss; big(100) miss, not cached; a hit; b(6) miss; a hit.
        let r = simulate(&t, &o);
        assert_eq!((r.hits, r.misses), (2, 3));
    }

    #[test]
    fn prefetching_a_learned_sequence_turns_misses_into_hits() {
        // A cycle longer than the cache: LRU alone never hits. 3,000 reads: predictions
        // cross from the model's thread to the cache's in three batches, and a prediction
        // acted on after the wrong read would be of a key already read (no hit).
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let mut seq = Vec::new();
        for _ in 0..300 {
            seq.extend(keys.iter().map(|k| (0, k.as_str())));
        }
        let t = trace(&seq);
        let base = simulate(&t, &opts(3, false));
        assert_eq!(base.hits, 0);
        let with = simulate(&t, &opts(3, true));
        assert!(with.hit_ratio() > 0.8, "{with:?}");
        assert_eq!(with.prefetch_hits, with.hits);
        assert!(with.precision() > 0.9, "{with:?}");
    }
}
