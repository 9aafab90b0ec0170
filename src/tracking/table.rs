//! The model's bounded state table: open addressing with linear probing, found by a 64-bit
//! context hash (template.rs: `hash_bytes`), with sampled-LRU eviction.
//!
//! Written here rather than taken from std's map for two things a large model needs: a
//! state's place is computable from its context alone, so a caller that knows which states
//! it will need soon (the replay reads its trace ahead) can [`Table::warm_cache`] them while
//! it works on the current read; and eviction samples slots directly, reading each
//! candidate's last use from the slot array instead of probing the map for it. Hashes and
//! last uses live in one dense array (probing reads few cache lines); the states in a
//! parallel one, one cache line each.
//!
//! When full (`max` states), the least recently used of a few sampled states is dropped, as
//! Redis's approximated LRU does: an exact LRU list pays an update of two neighbouring nodes
//! at every touch, cache misses on a model far larger than the CPU cache.

/// Slots sampled to choose the state to drop when a table is full.
const EVICTION_SAMPLE: usize = 5;

/// A free slot's `used`: a taken slot's is the tick of a touch, which counts from 1.
const FREE: u64 = 0;

/// The table grows before more than 13/16 of its slots are taken.
const LOAD_NUM: usize = 13;
const LOAD_DEN: usize = 16;

const MIN_SLOTS: usize = 16;

#[derive(Clone, Copy)]
struct Meta {
    ctx: u64,
    /// The table's tick when the state was last touched; [`FREE`] for a free slot.
    used: u64,
}

const NO_STATE: Meta = Meta { ctx: 0, used: FREE };

impl Meta {
    fn taken(&self) -> bool {
        self.used != FREE
    }
}

/// A state padded to a cache line of its own: one probe's worth of state is one line.
#[repr(align(64))]
#[derive(Default)]
struct Line<V>(V);

pub struct Table<V> {
    meta: Vec<Meta>,
    /// `states[i]` belongs to `meta[i]`; a free slot holds `V::default()`.
    states: Vec<Line<V>>,
    len: usize,
    /// `64 - log2(slots)`: a context's home slot is the top bits of its mixed hash.
    shift: u32,
    /// Advances at every touch.
    tick: u64,
    /// xorshift64 state: eviction, and so the replay, stays deterministic.
    rng: u64,
}

/// Where the probe for `hash` starts in a power-of-two table of `2^(64 - shift)` slots: the
/// top bits of the hash times 2^64 / φ (Fibonacci hashing), so poorly mixed hashes spread.
pub fn home_slot(hash: u64, shift: u32) -> usize {
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

fn slots_for(states: usize) -> usize {
    (states * LOAD_DEN / LOAD_NUM + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

impl<V: Default> Table<V> {
    /// A table with room for `states` states before it grows.
    pub fn with_capacity(states: usize) -> Self {
        let slots = slots_for(states);
        Table {
            meta: vec![NO_STATE; slots],
            states: (0..slots).map(|_| Line::default()).collect(),
            len: 0,
            shift: 64 - slots.trailing_zeros(),
            tick: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for memory accounting).
    pub fn slots(&self) -> usize {
        self.meta.len()
    }

    /// Bytes a slot takes in the table's arrays.
    pub const SLOT_BYTES: usize = size_of::<Meta>() + size_of::<Line<V>>();

    fn mask(&self) -> usize {
        self.meta.len() - 1
    }

    fn home(&self, ctx: u64) -> usize {
        home_slot(ctx, self.shift)
    }

    /// The slot holding `ctx`, or the free slot ending its probe.
    fn probe(&self, ctx: u64) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.home(ctx);
        loop {
            let m = self.meta[i];
            if !m.taken() {
                return (i, false);
            }
            if m.ctx == ctx {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    fn find(&self, ctx: u64) -> Option<usize> {
        match self.probe(ctx) {
            (i, true) => Some(i),
            _ => None,
        }
    }

    pub fn peek(&self, ctx: u64) -> Option<&V> {
        self.find(ctx).map(|i| &self.states[i].0)
    }

    /// The state for `ctx`, marked used, if it exists.
    pub fn get_mut(&mut self, ctx: u64) -> Option<&mut V> {
        self.tick += 1;
        let i = self.find(ctx)?;
        self.meta[i].used = self.tick;
        Some(&mut self.states[i].0)
    }

    /// The state for `ctx`, created by `make` if missing (dropping one when the table holds
    /// `max`), marked used.
    pub fn touch(&mut self, ctx: u64, max: usize, make: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        let i = match self.probe(ctx) {
            (i, true) => i,
            _ => {
                if self.len >= max.max(1) {
                    self.evict();
                }
                if (self.len + 1) * LOAD_DEN > self.meta.len() * LOAD_NUM {
                    self.grow();
                }
                // Eviction and growth move states: probe again.
                let (i, _) = self.probe(ctx);
                self.meta[i] = Meta {
                    ctx,
                    used: self.tick,
                };
                self.states[i].0 = make();
                self.len += 1;
                i
            }
        };
        self.meta[i].used = self.tick;
        &mut self.states[i].0
    }

    /// Asks the CPU to start loading the cache lines `ctx`'s state would be found in, so a
    /// lookup soon after finds them loaded. No effect on the table's contents.
    pub fn warm_cache(&self, ctx: u64) {
        let i = self.home(ctx);
        prefetch_line(self.meta.as_ptr().wrapping_add(i));
        prefetch_line(self.states.as_ptr().wrapping_add(i));
    }

    fn grow(&mut self) {
        let slots = self.meta.len() * 2;
        let meta = std::mem::replace(&mut self.meta, vec![NO_STATE; slots]);
        let states = std::mem::replace(
            &mut self.states,
            (0..slots).map(|_| Line::default()).collect(),
        );
        self.shift -= 1;
        for (m, s) in meta.into_iter().zip(states) {
            if m.taken() {
                let (i, _) = self.probe(m.ctx);
                self.meta[i] = m;
                self.states[i] = s;
            }
        }
    }

    /// Drops the least recently used of a few sampled states.
    fn evict(&mut self) {
        if self.len == 0 {
            return;
        }
        let mask = self.mask();
        let mut victim: Option<(usize, u64)> = None;
        for _ in 0..EVICTION_SAMPLE.min(self.len) {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            // The first taken slot from a random one (the table is at most 13/16 full, so
            // the walk is short).
            let mut i = (self.rng as usize) & mask;
            while !self.meta[i].taken() {
                i = (i + 1) & mask;
            }
            let used = self.meta[i].used;
            if victim.is_none_or(|(_, u)| used < u) {
                victim = Some((i, used));
            }
        }
        if let Some((i, _)) = victim {
            self.remove_at(i);
        }
    }

    /// Empties slot `i`, shifting later states of its probe run back so every state stays
    /// reachable from its home slot (no tombstones).
    fn remove_at(&mut self, i: usize) {
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if !self.meta[j].taken() {
                break;
            }
            // The state at j may fill the hole if the hole lies on its probe path
            // (between its home and j, cyclically).
            let home = self.home(self.meta[j].ctx);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.meta[hole] = self.meta[j];
                self.states.swap(hole, j);
                hole = j;
            }
        }
        self.meta[hole] = NO_STATE;
        self.states[hole] = Line::default();
        self.len -= 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.meta
            .iter()
            .zip(&self.states)
            .filter(|(m, _)| m.taken())
            .map(|(_, s)| &s.0)
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: any address is allowed).
#[cfg(target_arch = "x86_64")]
pub fn prefetch_line<T>(p: *const T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: SSE is part of x86_64's baseline, and a prefetch is a hint that neither reads
    // into the program nor faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
}

#[cfg(not(target_arch = "x86_64"))]
pub fn prefetch_line<T>(_: *const T) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn finds_what_it_holds_through_growth_and_removals() {
        // Random inserts, lookups and removals against std's map; small hashes collide
        // into long probe runs, zero is a context like any other.
        let mut t: Table<u64> = Table::with_capacity(0);
        let mut reference = HashMap::new();
        let mut rng = 0x1234_5678_9abc_def1u64;
        for step in 0..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ctx = if rng.is_multiple_of(3) {
                rng % 64
            } else {
                rng % 5000
            };
            if rng.is_multiple_of(5) {
                if let Some(i) = t.find(ctx) {
                    t.remove_at(i);
                }
                reference.remove(&ctx);
            } else {
                *t.touch(ctx, usize::MAX, || 0) += step;
                *reference.entry(ctx).or_insert(0) += step;
            }
            if step % 1000 == 0 {
                assert_eq!(t.len(), reference.len());
                for (k, v) in &reference {
                    assert_eq!(t.peek(*k), Some(v), "context {k}");
                }
            }
        }
        assert_eq!(t.len(), reference.len());
        assert_eq!(t.iter().count(), reference.len());
        for (k, v) in &reference {
            assert_eq!(t.peek(*k), Some(v));
        }
        assert_eq!(t.peek(1 << 40), None);
    }

    #[test]
    fn a_full_table_drops_a_least_recently_used_state() {
        let mut t: Table<u32> = Table::with_capacity(0);
        for ctx in 0..100 {
            t.touch(ctx, 100, || 0);
        }
        // Keep 0..50 in use; each new state then drops one of the others more often than
        // not (5 samples: an unused one is the victim unless all five are used ones).
        for round in 0..20 {
            for ctx in 0..50 {
                t.get_mut(ctx);
            }
            t.touch(1000 + round, 100, || 0);
            assert_eq!(t.len(), 100);
        }
        let kept = (0..50).filter(|c| t.peek(*c).is_some()).count();
        assert!(kept >= 45, "{kept} of the 50 states in use kept");
        let slots = t.slots();
        for ctx in 2000..10_000 {
            t.touch(ctx, 100, || 0);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.slots(), slots, "a bounded table stops growing");
    }
}
