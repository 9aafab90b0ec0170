//! The what-if simulator: demand reads replayed in order through an LRU cache, with or
//! without prefetching what the model predicts.
//!
//! Per read: a hit or a miss (a miss inserts the key); then the client's context learns the
//! transition and predicts; each predicted key already cached is touched (moved to the most
//! recently used end, as a TOUCH would in Redis: no origin load), and each prediction marked
//! to fetch that is not cached is inserted as a prefetch (one origin fetch). A prefetched entry that a demand read finds is a prefetch hit (counted
//! once); one evicted before any read was wasted. The model and contexts are the proxy's own
//! (src/tracking/).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;

use super::trace::Access;
use crate::tracking::context::{Contexts, Score, Step};
use crate::tracking::model::{Model, ModelConfig, ModelSize};
use crate::tracking::template::{ParsedKey, Templater};

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
}

impl SimResult {
    pub fn hit_ratio(&self) -> f64 {
        crate::tracking::context::ratio(self.hits, self.accesses)
    }

    pub fn precision(&self) -> f64 {
        crate::tracking::context::ratio(self.prefetch_hits, self.prefetches)
    }
}

struct Entry {
    size: u64,
    prefetched: bool,
}

struct Cache {
    lru: LruCache<u32, Entry>,
    capacity: u64,
    by_bytes: bool,
    used: u64,
    wasted: u64,
}

impl Cache {
    fn weight(&self, size: u64) -> u64 {
        if self.by_bytes {
            size
        } else {
            1
        }
    }

    /// Inserts at the most recently used end, evicting from the other; an object larger
    /// than the whole cache is not cached.
    fn insert(&mut self, id: u32, size: u64, prefetched: bool) {
        let w = self.weight(size);
        if w > self.capacity {
            return;
        }
        while self.used + w > self.capacity {
            match self.lru.pop_lru() {
                Some((_, e)) => {
                    self.used -= self.weight(e.size);
                    self.wasted += u64::from(e.prefetched);
                }
                None => break,
            }
        }
        self.used += w;
        self.lru.put(id, Entry { size, prefetched });
    }
}

/// Interned keys: each distinct key parsed once.
#[derive(Default)]
struct Keys {
    ids: HashMap<Bytes, u32, foldhash::fast::FixedState>,
    parsed: Vec<Arc<ParsedKey>>,
    sizes: Vec<u64>,
}

impl Keys {
    fn intern(&mut self, key: &Bytes, templater: &Templater) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.parsed.len() as u32;
        self.ids.insert(key.clone(), id);
        self.parsed.push(Arc::new(templater.parse(key.clone())));
        self.sizes.push(0);
        id
    }
}

pub fn simulate(trace: &[Access], opts: &SimOptions) -> SimResult {
    let (capacity, by_bytes) = match opts.capacity {
        Capacity::Keys(n) => (n, false),
        Capacity::Bytes(n) => (n, true),
    };
    let mut cache = Cache {
        lru: LruCache::unbounded(),
        capacity,
        by_bytes,
        used: 0,
        wasted: 0,
    };
    let mut keys = Keys::default();
    let mut model = Model::new(opts.model.clone());
    let mut contexts = Contexts::new(usize::MAX, opts.stale_gap_secs);
    let mut r = SimResult::default();
    for a in trace {
        r.accesses += 1;
        let id = keys.intern(&a.key, &opts.templater);
        keys.sizes[id as usize] = a.size;
        let found = cache
            .lru
            .get_mut(&id)
            .map(|e| (std::mem::take(&mut e.prefetched), e.size));
        match found {
            Some((was_prefetched, size)) => {
                r.hits += 1;
                r.prefetch_hits += u64::from(was_prefetched);
                if size != a.size {
                    // The object changed size: re-insert at its new weight.
                    cache.used -= cache.weight(size);
                    cache.lru.pop(&id);
                    cache.insert(id, a.size, false);
                }
            }
            None => {
                r.misses += 1;
                cache.insert(id, a.size, false);
            }
        }
        if !opts.prefetch {
            continue;
        }
        let ctx = if opts.per_client { a.client } else { 0 };
        let parsed = keys.parsed[id as usize].clone();
        let Step::Moved(predictions) = contexts.access(&mut model, ctx, parsed, a.time) else {
            continue;
        };
        for p in predictions {
            let pid = keys.intern(&p.key, &opts.templater);
            if cache.lru.promote(&pid) {
                r.promotions += 1;
            } else if p.fetch {
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
