//! The keyspace: databases of entries with values, expiry and per-entry accounting.
//! Pure data structures and synchronous operations; no I/O, no locking (the store locks).

use std::collections::VecDeque;

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};
use rand::Rng;

use super::zset::ZSet;

/// Bytes an entry costs beyond its key and value: the entry struct, the key slot, the
/// index slot and allocator headers. Counted so that `maxmemory` is honest for small values.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 48;
/// Per element of a list, hash, set or sorted set, beyond the element's bytes.
pub const ELEM_OVERHEAD: usize = 32;

#[derive(Debug, Clone)]
pub enum Value {
    Str(Bytes),
    List(VecDeque<Bytes>),
    Hash(IndexMap<Bytes, Bytes>),
    Set(IndexSet<Bytes>),
    ZSet(ZSet),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// The bytes this value costs (payload plus per-element overhead).
    pub fn cost(&self) -> usize {
        match self {
            Value::Str(b) => b.len() + 16,
            Value::List(l) => l.iter().map(|e| e.len() + ELEM_OVERHEAD).sum(),
            Value::Hash(h) => h
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * ELEM_OVERHEAD)
                .sum(),
            Value::Set(s) => s.iter().map(|e| e.len() + ELEM_OVERHEAD).sum(),
            Value::ZSet(z) => z.cost(),
        }
    }

    /// Whether the container is empty (Redis deletes empty containers).
    pub fn is_empty_container(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Absolute expiry in Unix milliseconds.
    pub expire_at: Option<u64>,
    /// Last access, in the store's LRU clock (milliseconds), for eviction.
    pub lru: u64,
    /// Changes on every write; WATCH compares it.
    pub version: u64,
    /// What this entry is counted as in `used_memory`.
    pub cost: usize,
}

/// The keyspace's hasher: foldhash, randomly seeded per map (SipHash showed at ~2% of a
/// pipelined GET profile for no benefit here).
pub type Hasher = foldhash::fast::RandomState;

/// A keyspace key: short keys live inline in the map's entry (see [`ShortBytes`]). An
/// inline key spares every lookup the cache miss of following a pointer to compare the bytes
/// (the keyspace lookup is the largest cost of a pipelined GET), and each key an allocation.
pub use crate::short_bytes::ShortBytes as Key;

#[derive(Debug, Default)]
pub struct Db {
    pub keys: IndexMap<Key, Entry, Hasher>,
    /// Keys with a TTL, for sampling by active expiry and volatile eviction.
    pub volatile: IndexSet<Bytes, Hasher>,
}

impl Db {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Removes a key; returns its cost. Order of small containers does not matter here: the
    /// keyspace order is a hash order in Redis too.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.keys.swap_remove(key)?;
        if e.expire_at.is_some() {
            self.volatile.swap_remove(key);
        }
        Some(e)
    }

    pub fn set_expire(&mut self, key: &Bytes, at: Option<u64>) {
        if let Some(e) = self.keys.get_mut(&key[..]) {
            if e.expire_at.is_none() && at.is_none() {
                return;
            }
            match (e.expire_at.is_some(), at.is_some()) {
                (false, true) => {
                    self.volatile.insert(key.clone());
                }
                (true, false) => {
                    self.volatile.swap_remove(key);
                }
                _ => {}
            }
            e.expire_at = at;
        }
    }

    /// A random key, or None when empty.
    pub fn random_key(&self, rng: &mut impl Rng) -> Option<&[u8]> {
        if self.keys.is_empty() {
            return None;
        }
        self.keys
            .get_index(rng.random_range(0..self.keys.len()))
            .map(|(k, _)| &k[..])
    }

    /// A random key with a TTL.
    pub fn random_volatile(&self, rng: &mut impl Rng) -> Option<&[u8]> {
        if self.volatile.is_empty() {
            return None;
        }
        self.volatile
            .get_index(rng.random_range(0..self.volatile.len()))
            .map(|k| &k[..])
    }

    /// One SCAN step over positions below `cursor` (0 = start), newest first, so that a
    /// removal (which moves the last entry into the hole) never hides an entry the scan has not
    /// reached: entries present for the whole scan are returned at least once, as in Redis.
    /// Returns the next cursor (0 when done) and the positions visited.
    pub fn scan_positions(len: usize, cursor: u64, count: usize) -> (u64, std::ops::Range<usize>) {
        let hi = if cursor == 0 {
            len
        } else {
            (cursor as usize).min(len)
        };
        let lo = hi.saturating_sub(count.max(1));
        let next = if lo == 0 { 0 } else { lo as u64 };
        (next, lo..hi)
    }
}

/// The memory an entry costs in total.
pub fn entry_cost(key: &[u8], value: &Value) -> usize {
    ENTRY_OVERHEAD + key.len() + value.cost()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_inline_and_on_the_heap_are_found_by_their_bytes() {
        let mut db = Db::default();
        let short = b"key:000000012345".to_vec();
        let edge = vec![b'x'; crate::short_bytes::INLINE];
        let long = vec![b'y'; crate::short_bytes::INLINE + 1];
        for (i, k) in [&short, &edge, &long, &Vec::new()].into_iter().enumerate() {
            let e = Entry {
                value: Value::Str(Bytes::from(vec![i as u8])),
                expire_at: None,
                lru: 0,
                version: 0,
                cost: 0,
            };
            db.keys.insert(Key::new(k), e);
        }
        assert!(matches!(Key::new(&edge), Key::Inline(..)));
        assert!(matches!(Key::new(&long), Key::Heap(_)));
        for (i, k) in [&short, &edge, &long, &Vec::new()].into_iter().enumerate() {
            let e = db.keys.get(&k[..]).expect("found by its bytes");
            assert!(matches!(&e.value, Value::Str(v) if v[..] == [i as u8]));
            assert_eq!(&Key::new(k)[..], &k[..]);
        }
        // A prefix or an extension of a key is another key.
        assert!(db.keys.get(&short[..5]).is_none());
        assert!(db.keys.get(&[&long[..], b"z"].concat()[..]).is_none());
        assert!(db.remove(&edge).is_some());
        assert_eq!(db.len(), 3);
    }

    #[test]
    fn scan_positions_walk_down_to_zero() {
        let (c, r) = Db::scan_positions(25, 0, 10);
        assert_eq!((c, r), (15, 15..25));
        let (c, r) = Db::scan_positions(25, 15, 10);
        assert_eq!((c, r), (5, 5..15));
        let (c, r) = Db::scan_positions(25, 5, 10);
        assert_eq!((c, r), (0, 0..5));
        // The keyspace shrank under the cursor: clamp.
        let (c, r) = Db::scan_positions(3, 15, 10);
        assert_eq!((c, r), (0, 0..3));
    }
}
