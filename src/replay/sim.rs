//! The what-if simulator: demand reads replayed in order through an LRU cache, with or
//! without prefetching what the model predicts.
//!
//! Per read: a hit or a miss (a miss inserts the key); then the client's context learns the
//! transition and predicts; each predicted key already cached is touched (moved to the most
//! recently used end, as a TOUCH would in Redis: no origin load), and each prediction marked
//! to fetch that is not cached is inserted as a prefetch (one origin fetch). A prefetched entry that a demand read finds is a prefetch hit (counted
//! once); one evicted before any read was wasted. The model and contexts are the proxy's own
//! (src/tracking/).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::trace::Access;
use crate::tracking::context::{Contexts, Score};
use crate::tracking::model::{Model, ModelConfig, ModelSize};
use crate::tracking::table::prefetch_line;
use crate::tracking::template::{hash_bytes, ParsedKey, Templater};

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
}

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

/// Interned keys, found by their hash (the model's identity for keys: template.rs,
/// `hash_bytes`); each parsed once, when first read (a predicted key may never be).
/// Their bytes are copied into 64 KiB arena chunks: no allocation per key, and the parsed
/// key's slices of it count references on a chunk's count, which stays cached, rather than
/// on one allocated for each key at its first slicing.
struct Keys {
    ids: IdMap,
    arena: BytesMut,
    keys: Vec<Bytes>,
    parsed: Vec<Option<Arc<ParsedKey>>>,
    sizes: Vec<u64>,
}

const ARENA_CHUNK: usize = 64 << 10;

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

    /// Where the probe for `hash` starts.
    fn home(&self, hash: u64) -> usize {
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
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

    fn prefetch(&self, hash: u64) {
        prefetch_line(self.slots.as_ptr().wrapping_add(self.home(hash)));
    }
}

/// Reads ahead of the current one whose model states are prefetched: far enough for the
/// loads to finish (a read takes about a microsecond), near enough that they are still
/// cached when the read comes.
const READ_AHEAD: usize = 8;

/// Keys the replay makes room for up front, at most.
const MAX_ROOM: usize = 4 << 20;

impl Keys {
    fn with_capacity(n: usize) -> Keys {
        Keys {
            ids: IdMap::with_capacity(n),
            arena: BytesMut::new(),
            keys: Vec::with_capacity(n),
            parsed: Vec::with_capacity(n),
            sizes: Vec::with_capacity(n),
        }
    }

    fn find(&self, hash: u64) -> Option<u32> {
        self.ids.get(hash)
    }

    fn intern(&mut self, hash: u64, key: &[u8]) -> u32 {
        let next = self.keys.len() as u32;
        let id = self.ids.get_or_insert(hash, next);
        if id != next {
            return id;
        }
        if self.arena.capacity() < key.len() {
            self.arena = BytesMut::with_capacity(key.len().max(ARENA_CHUNK));
        }
        self.arena.extend_from_slice(key);
        self.keys.push(self.arena.split().freeze());
        self.parsed.push(None);
        self.sizes.push(0);
        id
    }

    fn parsed(&mut self, id: u32, templater: &Templater) -> Arc<ParsedKey> {
        let i = id as usize;
        self.parsed[i]
            .get_or_insert_with(|| Arc::new(templater.parse(self.keys[i].clone())))
            .clone()
    }
}

pub fn simulate(trace: &[Access], opts: &SimOptions) -> SimResult {
    let (capacity, by_bytes) = match opts.capacity {
        Capacity::Keys(n) => (n, false),
        Capacity::Bytes(n) => (n, true),
    };
    let room = opts.distinct_keys.min(MAX_ROOM);
    let mut cache = Cache::new(capacity, by_bytes, room);
    let mut keys = Keys::with_capacity(room);
    let mut model = Model::with_capacity(opts.model.clone(), room);
    let mut contexts = Contexts::new(usize::MAX, opts.stale_gap_secs);
    let mut r = SimResult::default();
    let started = Instant::now();
    // Key hashes of the reads ahead (ring by index), and each context's last key as far as
    // the read-ahead got, to prefetch the model states a read will need.
    let mut ahead = [0u64; READ_AHEAD];
    let mut last_ahead: Vec<Option<u64>> = Vec::new();
    let context = |a: &Access| if opts.per_client { a.client } else { 0 };
    let mut look_ahead = |i: usize, ahead: &mut [u64; READ_AHEAD], model: &Model, keys: &Keys| {
        let Some(a) = trace.get(i) else { return };
        let h = hash_bytes(&a.key);
        ahead[i % READ_AHEAD] = h;
        keys.ids.prefetch(h);
        if opts.prefetch {
            let c = context(a) as usize;
            if c >= last_ahead.len() {
                last_ahead.resize(c + 1, None);
            }
            model.prefetch(last_ahead[c].replace(h), h);
        }
    };
    for i in 0..READ_AHEAD {
        look_ahead(i, &mut ahead, &model, &keys);
    }
    let mut predicted: Vec<(u64, bool, std::ops::Range<usize>)> = Vec::new();
    let mut fetch_keys: Vec<u8> = Vec::new();
    for (i, a) in trace.iter().enumerate() {
        r.accesses += 1;
        let hash = ahead[i % READ_AHEAD];
        look_ahead(i + READ_AHEAD, &mut ahead, &model, &keys);
        let id = keys.intern(hash, &a.key);
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
        if !opts.prefetch {
            continue;
        }
        let ctx = context(a);
        let parsed = keys.parsed(id, &opts.templater);
        // The predictions are gathered first, their key slots prefetched together, then
        // acted on in order: their lookups overlap instead of waiting one after another.
        predicted.clear();
        fetch_keys.clear();
        contexts.access(&mut model, ctx, parsed, a.time, |p| {
            keys.ids.prefetch(p.hash);
            let at = fetch_keys.len();
            if p.fetch {
                fetch_keys.extend_from_slice(p.key);
            }
            predicted.push((p.hash, p.fetch, at..fetch_keys.len()));
        });
        for (hash, fetch, at) in predicted.drain(..) {
            let known = keys.find(hash);
            if known.is_some_and(|pid| cache.promote(pid)) {
                r.promotions += 1;
            } else if fetch {
                let pid = known.unwrap_or_else(|| keys.intern(hash, &fetch_keys[at]));
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
    r.elapsed = started.elapsed();
    r.prefetches_wasted = cache.wasted;
    r.score = contexts.score;
    r.model = model.size();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(seq: &[(u32, &str)]) -> Vec<Access> {
        seq.iter()
            .enumerate()
            .map(|(i, (c, k))| Access {
                time: i as f64,
                client: *c,
                key: Bytes::copy_from_slice(k.as_bytes()),
                size: 1,
            })
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
        }
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
        // A cycle longer than the cache: LRU alone never hits.
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let mut seq = Vec::new();
        for _ in 0..20 {
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
