//! Every prefetch, accounted: each one issued ends in exactly one class.
//!
//! - `useful`: a demand read found the value before it left the store;
//! - `late`: a demand read came while the fetch was in flight and joined it (it still waited,
//!   though less);
//! - `wasted_overwritten`: a client wrote the key first (before the value landed, so the fill
//!   kept the client's value, or after, before any read);
//! - `wasted_expired`: its TTL passed unread;
//! - `wasted_evicted`: the store dropped it unread before its TTL (seen by a periodic check);
//! - `wasted_unused`: nothing to read (the origin had no such key), or forgotten unread (the
//!   ledger is bounded, prefetching was turned off, or prescient stopped).
//!
//! A fetch that failed (no answer from the origin) and that no demand read joined is not
//! issued: it is counted as failed by the workers. So `issued` = useful + late + the wasted
//! classes, at any moment, plus the entries still open (`open()`): a landed value not read
//! yet, or one still in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub issued: u64,
    pub useful: u64,
    pub late: u64,
    pub evicted: u64,
    pub expired: u64,
    pub overwritten: u64,
    pub unused: u64,
}

impl Counts {
    /// Issued prefetches whose class is known.
    pub fn closed(&self) -> u64 {
        self.useful + self.late + self.evicted + self.expired + self.overwritten + self.unused
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wasted {
    Evicted,
    Expired,
    Overwritten,
    Unused,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Fetching; `read` when a demand read found the key meanwhile (it was cached after all,
    /// or the value landed a moment before the ledger heard).
    Flying {
        read: bool,
        written: bool,
    },
    Landed {
        at: Instant,
        expires: Instant,
    },
}

pub struct Ledger {
    open: HashMap<Bytes, State>,
    max: usize,
    pub counts: Counts,
}

impl Ledger {
    pub fn new(max: usize) -> Ledger {
        Ledger {
            open: HashMap::new(),
            max: max.max(1),
            counts: Counts::default(),
        }
    }

    /// Entries not closed yet.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Fetches still in flight.
    pub fn flying(&self) -> usize {
        self.open
            .values()
            .filter(|s| matches!(s, State::Flying { .. }))
            .count()
    }

    pub fn is_open(&self, key: &[u8]) -> bool {
        self.open.contains_key(key)
    }

    fn close(&mut self, w: Wasted) {
        let c = &mut self.counts;
        match w {
            Wasted::Evicted => c.evicted += 1,
            Wasted::Expired => c.expired += 1,
            Wasted::Overwritten => c.overwritten += 1,
            Wasted::Unused => c.unused += 1,
        }
    }

    /// A worker starts fetching `key`; false if the key is already open (not fetched again).
    pub fn start(&mut self, key: &Bytes) -> bool {
        if self.open.contains_key(key) {
            return false;
        }
        if self.open.len() >= self.max {
            // Bounded: forget an arbitrary landed entry as unused.
            let victim = self
                .open
                .iter()
                .find(|(_, s)| matches!(s, State::Landed { .. }))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    self.open.remove(&k);
                    self.close(Wasted::Unused);
                }
                None => return false,
            }
        }
        self.counts.issued += 1;
        self.open.insert(
            key.clone(),
            State::Flying {
                read: false,
                written: false,
            },
        );
        true
    }

    /// A started fetch failed and nobody joined it: not issued after all.
    pub fn failed(&mut self, key: &[u8]) {
        if let Some(State::Flying { .. }) = self.open.get(key) {
            self.open.remove(key);
            self.counts.issued -= 1;
        }
    }

    /// A demand read joined the fetch while in flight.
    pub fn late(&mut self, key: &[u8]) {
        if self.open.remove(key).is_some() {
            self.counts.late += 1;
        }
    }

    /// The fetch ended with nothing of ours in the store: `w` says why.
    pub fn ended_wasted(&mut self, key: &[u8], w: Wasted) {
        if self.open.remove(key).is_some() {
            self.close(w);
        }
    }

    /// The value landed at `now`, kept until `expires`.
    pub fn landed(&mut self, key: &Bytes, now: Instant, expires: Instant) {
        match self.open.get(key).copied() {
            Some(State::Flying { read: true, .. }) => {
                self.open.remove(key);
                self.counts.useful += 1;
            }
            Some(State::Flying { written: true, .. }) => {
                self.open.remove(key);
                self.close(Wasted::Overwritten);
            }
            Some(_) => {
                self.open
                    .insert(key.clone(), State::Landed { at: now, expires });
            }
            None => {}
        }
    }

    /// A demand read found `key` in the store; the lead time (landing to read) when it was a
    /// landed prefetch.
    pub fn read(&mut self, key: &[u8], now: Instant) -> Option<Duration> {
        match self.open.get_mut(key)? {
            State::Flying { read, .. } => {
                *read = true;
                None
            }
            State::Landed { at, .. } => {
                let lead = now.saturating_duration_since(*at);
                self.open.remove(key);
                self.counts.useful += 1;
                Some(lead)
            }
        }
    }

    /// A client wrote `key`.
    pub fn written(&mut self, key: &[u8]) {
        match self.open.get_mut(key) {
            Some(State::Flying { written, .. }) => *written = true,
            Some(State::Landed { .. }) => {
                self.open.remove(key);
                self.close(Wasted::Overwritten);
            }
            None => {}
        }
    }

    /// Closes the landed entries past their expiry as expired; returns their keys.
    pub fn expire(&mut self, now: Instant) -> Vec<Bytes> {
        let gone: Vec<Bytes> = self
            .open
            .iter()
            .filter(|(_, s)| matches!(s, State::Landed { expires, .. } if *expires <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.open.remove(k);
            self.close(Wasted::Expired);
        }
        gone
    }

    /// Up to `n` landed keys, oldest landing first, for the eviction check.
    pub fn landed_keys(&self, n: usize) -> Vec<Bytes> {
        let mut v: Vec<(Instant, &Bytes)> = self
            .open
            .iter()
            .filter_map(|(k, s)| match s {
                State::Landed { at, .. } => Some((*at, k)),
                State::Flying { .. } => None,
            })
            .collect();
        v.sort_unstable_by_key(|(at, _)| *at);
        v.into_iter().take(n).map(|(_, k)| k.clone()).collect()
    }

    /// A landed key the store no longer holds, unread and before its expiry: evicted.
    pub fn evicted(&mut self, key: &[u8], now: Instant) -> bool {
        match self.open.get(key) {
            Some(State::Landed { expires, .. }) if *expires > now => {
                self.open.remove(key);
                self.close(Wasted::Evicted);
                true
            }
            _ => false,
        }
    }

    /// Forgets every landed entry as unused (prefetch turned off, shutdown); returns how many.
    pub fn forget_landed(&mut self) -> usize {
        let before = self.open.len();
        self.open.retain(|_, s| matches!(s, State::Flying { .. }));
        let n = before - self.open.len();
        self.counts.unused += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A synthetic run with a known answer for every prefetch: the classes come out as
    /// expected and always sum to the issued count with the open entries.
    #[test]
    fn every_issued_prefetch_ends_in_exactly_one_class() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut l = Ledger::new(100);
        let check = |l: &Ledger| assert_eq!(l.counts.issued, l.counts.closed() + l.open() as u64);
        for key in [
            "used", "late", "expires", "evicted", "written", "lost", "404", "failed",
        ] {
            assert!(l.start(&k(key)));
            check(&l);
        }
        assert!(!l.start(&k("used")), "an open key is not fetched twice");
        l.late(b"late");
        l.failed(b"failed");
        l.ended_wasted(b"lost", Wasted::Overwritten);
        l.ended_wasted(b"404", Wasted::Unused);
        check(&l);
        for key in ["used", "expires", "evicted", "written"] {
            l.landed(&k(key), at(10), at(1000));
        }
        assert_eq!(l.read(b"used", at(30)), Some(Duration::from_millis(20)));
        assert_eq!(l.read(b"used", at(40)), None, "counted once");
        l.written(b"written");
        assert_eq!(l.landed_keys(10).len(), 2);
        assert!(l.evicted(b"evicted", at(500)));
        assert!(!l.evicted(b"expires", at(1000)), "at its expiry it expired");
        assert_eq!(l.expire(at(1000)), vec![k("expires")]);
        check(&l);
        assert_eq!(
            l.counts,
            Counts {
                issued: 7,
                useful: 1,
                late: 1,
                evicted: 1,
                expired: 1,
                overwritten: 2,
                unused: 1,
            }
        );
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn reads_and_writes_during_the_flight_decide_the_landing() {
        let now = Instant::now();
        let mut l = Ledger::new(100);
        l.start(&k("a"));
        l.start(&k("b"));
        l.read(b"a", now);
        l.written(b"b");
        l.landed(&k("a"), now, now);
        l.landed(&k("b"), now, now);
        assert_eq!((l.counts.useful, l.counts.overwritten, l.open()), (1, 1, 0));
        // Bounded: a full ledger forgets a landed entry as unused to open a new one.
        let mut l = Ledger::new(1);
        l.start(&k("x"));
        assert!(!l.start(&k("y")), "nothing landed to forget");
        l.landed(&k("x"), now, now + Duration::from_secs(9));
        assert!(l.start(&k("y")));
        assert_eq!((l.counts.unused, l.counts.issued, l.open()), (1, 2, 1));
        l.failed(b"y");
        assert_eq!(l.forget_landed(), 0);
        assert_eq!(l.counts.issued, l.counts.closed());
    }
}
