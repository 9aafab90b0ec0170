//! Heavy hitters over a sliding window, in bounded memory: `PROXY HOTKEYS [n]`.
//!
//! Each half-window has a count-min sketch (4 rows) estimating every key's reads, and a
//! small candidate table of the keys whose estimate is highest. The window is the current
//! half plus the previous one: every `window / 2` seconds the previous half is dropped. Memory
//! is the sketch (fixed) plus at most `capacity` candidate keys per half, whatever the
//! number of distinct keys. Estimates never undercount; they may overcount by collisions.

use std::collections::HashMap;
use std::hash::BuildHasher;

use bytes::Bytes;

const ROWS: usize = 4;
const WIDTH: usize = 4096;

/// The sketch cell of `hash` in `row` (double hashing over the two halves of the hash).
fn slot(row: usize, hash: u64) -> usize {
    let (h1, h2) = (hash as u32 as usize, (hash >> 32) as usize | 1);
    row * WIDTH + h1.wrapping_add(row.wrapping_mul(h2)) % WIDTH
}

struct Half {
    sketch: Vec<u32>,
    candidates: HashMap<Bytes, u32>,
    /// The smallest estimate among the candidates when the table is full.
    floor: u32,
}

impl Half {
    fn new() -> Half {
        Half {
            sketch: vec![0; ROWS * WIDTH],
            candidates: HashMap::new(),
            floor: 0,
        }
    }

    fn add(&mut self, key: &Bytes, hash: u64, capacity: usize) {
        let mut est = u32::MAX;
        for row in 0..ROWS {
            let i = slot(row, hash);
            self.sketch[i] = self.sketch[i].saturating_add(1);
            est = est.min(self.sketch[i]);
        }
        if let Some(c) = self.candidates.get_mut(key) {
            *c = est;
        } else if self.candidates.len() < capacity {
            self.candidates.insert(key.clone(), est);
        } else if est > self.floor {
            if let Some(weakest) = self
                .candidates
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(k, _)| k.clone())
            {
                self.candidates.remove(&weakest);
            }
            self.candidates.insert(key.clone(), est);
            self.floor = self.candidates.values().copied().min().unwrap_or(0);
        }
    }

    fn estimate(&self, hash: u64) -> u32 {
        (0..ROWS)
            .map(|row| self.sketch[slot(row, hash)])
            .min()
            .unwrap_or(0)
    }
}

pub struct HotKeys {
    capacity: usize,
    half_secs: f64,
    started: f64,
    current: Half,
    previous: Half,
    hasher: foldhash::fast::FixedState,
}

impl HotKeys {
    /// Tracks up to `capacity` candidate keys over a window of `window_secs`.
    pub fn new(capacity: usize, window_secs: f64) -> HotKeys {
        HotKeys {
            capacity: capacity.max(1),
            half_secs: (window_secs / 2.0).max(0.001),
            started: f64::NAN,
            current: Half::new(),
            previous: Half::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
        }
    }

    fn rotate(&mut self, now: f64) {
        if self.started.is_nan() {
            self.started = now;
        }
        let halves = ((now - self.started) / self.half_secs).floor();
        if halves >= 1.0 {
            let fresh = std::mem::replace(&mut self.current, Half::new());
            self.previous = if halves >= 2.0 { Half::new() } else { fresh };
            self.started += halves * self.half_secs;
        }
    }

    pub fn add(&mut self, key: &Bytes, now: f64) {
        self.rotate(now);
        let hash = self.hasher.hash_one(key);
        self.current.add(key, hash, self.capacity);
    }

    /// The `n` keys read most in the window, with their estimated reads, most first.
    pub fn top(&mut self, n: usize, now: f64) -> Vec<(Bytes, u64)> {
        self.rotate(now);
        let mut keys: Vec<&Bytes> = self.current.candidates.keys().collect();
        keys.extend(
            self.previous
                .candidates
                .keys()
                .filter(|k| !self.current.candidates.contains_key(*k)),
        );
        let mut out: Vec<(Bytes, u64)> = keys
            .into_iter()
            .map(|k| {
                let h = self.hasher.hash_one(k);
                let reads =
                    u64::from(self.current.estimate(h)) + u64::from(self.previous.estimate(h));
                (k.clone(), reads)
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(n);
        out
    }

    /// Heap bytes held (sketches and candidate keys).
    pub fn bytes(&self) -> usize {
        let half = |h: &Half| {
            h.sketch.len() * 4 + h.candidates.keys().map(|k| k.len() + 48).sum::<usize>()
        };
        half(&self.current) + half(&self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn heavy_hitters_surface_among_many_distinct_keys() {
        let mut h = HotKeys::new(16, 60.0);
        for i in 0..50_000 {
            h.add(&k(&format!("cold:{i}")), 1.0);
            if i % 10 == 0 {
                h.add(&k("hot:a"), 1.0);
            }
            if i % 20 == 0 {
                h.add(&k("hot:b"), 1.0);
            }
        }
        let top = h.top(2, 1.0);
        assert_eq!(top[0].0, "hot:a");
        assert!(top[0].1 >= 5000, "{top:?}");
        assert_eq!(top[1].0, "hot:b");
        assert!(h.current.candidates.len() <= 16);
    }

    #[test]
    fn the_window_slides() {
        let mut h = HotKeys::new(8, 10.0);
        for _ in 0..100 {
            h.add(&k("old"), 0.0);
        }
        h.add(&k("new"), 6.0);
        // 6 s later "old" is in the previous half, still in the window.
        assert_eq!(h.top(1, 6.0)[0].0, "old");
        // Two half-windows later it has left.
        let top = h.top(5, 11.0);
        assert!(top.iter().all(|(key, _)| key != "old"), "{top:?}");
        assert_eq!(h.top(5, 30.0), vec![]);
    }
}
