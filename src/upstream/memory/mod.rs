//! The embedded store (`memory://`): a Redis-compatible, in-process cache, so prescient runs
//! with no Redis at hand. It is an upstream like any other: the session hands it commands and
//! queues its replies in order. No persistence: it is a cache.
//!
//! One lock guards the keyspace, so MULTI/EXEC and multi-key commands are atomic with respect
//! to every other client; critical sections are a hash lookup and a copy. Expiry is lazy on
//! access plus an active, sampled sweep; `maxmemory` evicts by sampled LRU (as Redis does).

mod bits;
mod blocking;
mod conn;
mod db;
mod hashes;
mod keys;
mod lists;
mod out;
mod pubsub;
mod scripts;
mod server;
mod sets;
mod strings;
mod zset;
mod zsets;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use conn::{Exec, MemConn};
use db::{entry_cost, Db, Entry, Key, Value};
pub use out::Out;
pub use server::COMPAT_VERSION;

/// Databases, as Redis's default `databases 16`.
pub const DATABASES: usize = 16;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const SYNTAX: &str = "ERR syntax error";
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Most elements a sampling reply with repetition (SRANDMEMBER and HRANDFIELD with a negative
/// count) may hold. Redis builds whatever count it is given; the proxy's clients are cut off
/// past `limits.client_output_buffer_limit` (64 MiB by default), which 16 M elements of at
/// least 6 bytes each pass anyway, and building them first would hold the store's lock and
/// take gigabytes for one request (`SRANDMEMBER s -2000000000` was enough to get the process
/// killed). Past it the command gets [`TOO_MANY`].
pub const MAX_SAMPLED: u64 = 16 << 20;

/// The error for a sampling count over [`MAX_SAMPLED`].
pub const TOO_MANY: &str =
    "ERR count is too large for the embedded store (at most 16777216 elements with repetition)";

/// What to evict when `maxmemory` is reached (parsed once, with the settings).
pub use crate::config::EvictionPolicy as Policy;

/// The store's notion of now. Tests pause it.
#[derive(Debug, Default)]
pub struct Clock {
    /// 0 = the system clock; otherwise a fixed Unix time in milliseconds.
    fixed_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        match self.fixed_ms.load(Ordering::Relaxed) {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            t => t,
        }
    }

    /// Stops the clock at `ms` (tests).
    pub fn set(&self, ms: u64) {
        self.fixed_ms.store(ms, Ordering::Relaxed);
    }
}

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct Stats {
    pub expired_keys: AtomicU64,
    pub evicted_keys: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    pub commands: AtomicU64,
    pub connections: AtomicU64,
    /// Connections open now.
    pub connected: AtomicU64,
}

/// Everything under the lock.
pub struct Inner {
    pub dbs: Vec<Db>,
    pub used: usize,
    next_version: u64,
    pub waiters: blocking::Waiters,
    rng: rand::rngs::SmallRng,
}

pub struct Store {
    inner: Mutex<Inner>,
    pub maxmemory: AtomicU64,
    policy: Mutex<Policy>,
    pub clock: Clock,
    pub stats: Stats,
    pub pubsub: pubsub::Registry,
    pub started: std::time::Instant,
    /// Bumped when a list or sorted set grows: blocked clients re-check their keys.
    pub wake: tokio::sync::watch::Sender<u64>,
    /// Set when compression is on: byte-level commands (APPEND, STRLEN, INCRBYFLOAT, ...)
    /// decode enveloped values and re-encode what they write.
    pub compressor: std::sync::OnceLock<Arc<crate::compression::Compressor>>,
}

impl Store {
    pub fn new(maxmemory: u64, policy: Policy) -> Arc<Store> {
        use rand::SeedableRng;
        Arc::new(Store {
            inner: Mutex::new(Inner {
                dbs: (0..DATABASES).map(|_| Db::default()).collect(),
                used: 0,
                next_version: 1,
                waiters: blocking::Waiters::default(),
                rng: rand::rngs::SmallRng::from_os_rng(),
            }),
            maxmemory: AtomicU64::new(maxmemory),
            policy: Mutex::new(policy),
            clock: Clock::default(),
            stats: Stats::default(),
            pubsub: pubsub::Registry::default(),
            started: std::time::Instant::now(),
            wake: tokio::sync::watch::channel(0).0,
            compressor: std::sync::OnceLock::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn policy(&self) -> Policy {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes blocked clients if lists or sorted sets grew.
    pub fn notify(&self, touched: &[(usize, Bytes)]) {
        if !touched.is_empty() {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn used_memory(&self) -> usize {
        self.lock().used
    }

    /// Starts the active expiry sweep: every 100 ms, sample keys with a TTL in each database
    /// and remove the expired ones, repeating while more than a quarter of a sample expired,
    /// for at most ~25 ms per tick (as Redis's activeExpireCycle bounds its work).
    pub fn start_expiry(self: &Arc<Store>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.expire_cycle(Duration::from_millis(25));
            }
        });
    }

    /// One bounded active-expiry pass; returns keys removed.
    pub fn expire_cycle(&self, budget: Duration) -> usize {
        let start = std::time::Instant::now();
        let now = self.clock.now_ms();
        let mut removed = 0;
        let mut inner = self.lock();
        for db in 0..DATABASES {
            loop {
                let mut expired = 0;
                let sample = 20.min(inner.dbs[db].volatile.len());
                for _ in 0..sample {
                    let Inner { dbs, rng, .. } = &mut *inner;
                    let Some(k) = dbs[db].random_volatile(rng).map(Bytes::copy_from_slice) else {
                        break;
                    };
                    let dead = dbs[db]
                        .keys
                        .get(&k[..])
                        .is_some_and(|e| e.expire_at.is_some_and(|t| t <= now));
                    if dead {
                        inner.remove_key(db, &k);
                        expired += 1;
                    }
                }
                removed += expired;
                if sample == 0 || expired * 4 <= sample || start.elapsed() > budget {
                    break;
                }
            }
        }
        self.stats
            .expired_keys
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }
}

impl Inner {
    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Removes a key, keeping `used` true.
    pub fn remove_key(&mut self, db: usize, key: &[u8]) -> Option<Entry> {
        let e = self.dbs[db].remove(key)?;
        self.used = self.used.saturating_sub(e.cost);
        Some(e)
    }
}

/// A command's view of the store: the locked state, its database and the time.
/// Runs one command of a family; the name is the command's (several share a handler).
pub(crate) type Handler = fn(&mut Ctx, &'static str, &[Bytes], &mut Out);

pub struct Ctx<'a> {
    pub inner: &'a mut Inner,
    pub store: &'a Store,
    pub db: usize,
    pub now: u64,
    /// Keys written that a blocked client may be waiting on (its pop is retried).
    pub touched: Vec<(usize, Bytes)>,
}

impl<'a> Ctx<'a> {
    /// The original bytes of a stored value: decoded when it is an envelope and compression
    /// is configured; the error reply (naming the key) when it cannot be decoded.
    pub fn plain(&self, key: &[u8], v: Bytes) -> Result<Bytes, String> {
        match self.store.compressor.get() {
            Some(c) if crate::compression::envelope::is_enveloped(&v) => c
                .decode(&v)
                .map(|d| Bytes::from(d.into_owned()))
                .map_err(|e| crate::compression::Compressor::error_text(key, &e)),
            _ => Ok(v),
        }
    }

    /// The bytes to store for a value a byte-level command computed (compressed when
    /// compression is configured and pays).
    pub fn stored(&self, key: &[u8], v: Vec<u8>) -> Bytes {
        let v = Bytes::from(v);
        match self.store.compressor.get() {
            Some(c) if v.len() >= c.threshold || crate::compression::envelope::is_enveloped(&v) => {
                c.encode(key, &v)
            }
            _ => v,
        }
    }

    pub fn new(store: &'a Store, inner: &'a mut Inner, db: usize) -> Ctx<'a> {
        Ctx::at(store, inner, db, store.clock.now_ms())
    }

    /// [`Ctx::new`] at a time the caller read (`now_ms`, Unix milliseconds).
    pub fn at(store: &'a Store, inner: &'a mut Inner, db: usize, now_ms: u64) -> Ctx<'a> {
        Ctx {
            now: now_ms,
            inner,
            store,
            db,
            touched: Vec::new(),
        }
    }

    /// The live entry for `key` (expired ones are removed on the way), its LRU clock updated.
    /// One hash lookup.
    pub fn get(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let (db, now) = (self.db, self.now);
        let idx = self.inner.dbs[db].keys.get_index_of(key)?;
        let expired = self.inner.dbs[db].keys[idx]
            .expire_at
            .is_some_and(|t| t <= now);
        if expired {
            self.inner.remove_key(db, key);
            self.store
                .stats
                .expired_keys
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let e = &mut self.inner.dbs[db].keys[idx];
        e.lru = now;
        Some(e)
    }

    pub fn exists(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// A read: the value, counted as a hit or a miss.
    pub fn read(&mut self, key: &[u8]) -> Option<&Value> {
        let stats = &self.store.stats;
        match self.get(key) {
            Some(e) => {
                stats.keyspace_hits.fetch_add(1, Ordering::Relaxed);
                Some(&e.value)
            }
            None => {
                stats.keyspace_misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `value` at `key`, replacing any value and TTL (`keep_ttl` keeps the TTL).
    /// An existing entry is replaced in place: one hash lookup.
    pub fn set(&mut self, key: &Bytes, value: Value, expire_at: Option<u64>, keep_ttl: bool) {
        self.put(key, |_| value, expire_at, keep_ttl);
    }

    /// [`Ctx::set`] of a string copied from `v` (every string write from a client's
    /// arguments: SET, SETEX, MSET, ...). The string it replaces, when of the same length and
    /// not shared, takes the new bytes in place: an overwrite (the common case of a cache)
    /// frees and allocates nothing.
    pub fn set_str(&mut self, key: &Bytes, v: &[u8], expire_at: Option<u64>, keep_ttl: bool) {
        self.put(
            key,
            |old| {
                let reusable = match old {
                    Some(Value::Str(b)) if b.len() == v.len() && b.is_unique() => {
                        std::mem::take(b).try_into_mut().ok()
                    }
                    _ => None,
                };
                Value::Str(match reusable {
                    Some(mut m) => {
                        m.copy_from_slice(v);
                        m.freeze()
                    }
                    None => own(v),
                })
            },
            expire_at,
            keep_ttl,
        );
    }

    /// Stores the value `make` builds (given the value it replaces, if any) at `key`.
    fn put(
        &mut self,
        key: &Bytes,
        make: impl FnOnce(Option<&mut Value>) -> Value,
        expire_at: Option<u64>,
        keep_ttl: bool,
    ) {
        let old_ttl = if keep_ttl {
            self.get(key).and_then(|e| e.expire_at)
        } else {
            None
        };
        let ttl = if keep_ttl { old_ttl } else { expire_at };
        let (db, now) = (self.db, self.now);
        let version = self.inner.version();
        let d = &mut self.inner.dbs[db];
        match d.keys.get_index_of(&key[..]) {
            Some(i) => {
                let e = &mut d.keys[i];
                if e.expire_at.is_some_and(|t| t <= now) {
                    // Overwritten unread: it expired all the same (Redis counts it too).
                    self.store
                        .stats
                        .expired_keys
                        .fetch_add(1, Ordering::Relaxed);
                }
                let value = make(Some(&mut e.value));
                let cost = entry_cost(key, &value);
                let old_cost = std::mem::replace(&mut e.cost, cost);
                e.value = value;
                e.version = version;
                e.lru = now;
                let had_ttl = std::mem::replace(&mut e.expire_at, ttl).is_some();
                match (had_ttl, ttl.is_some()) {
                    (false, true) => {
                        d.volatile.insert(own(key));
                    }
                    (true, false) => {
                        d.volatile.swap_remove(&key[..]);
                    }
                    _ => {}
                }
                self.inner.used = (self.inner.used + cost).saturating_sub(old_cost);
            }
            None => {
                let value = make(None);
                let cost = entry_cost(key, &value);
                let entry = Entry {
                    value,
                    expire_at: ttl,
                    lru: now,
                    version,
                    cost,
                };
                self.inner.used += cost;
                if ttl.is_some() {
                    d.volatile.insert(own(key));
                }
                d.keys.insert(Key::new(key), entry);
            }
        }
    }

    /// Applies `f` to the live value at `key`, creating it with `make` when missing; keeps the
    /// entry's cost, version and emptiness (an emptied container is deleted) in order.
    /// `f` returns its result and the change in the value's cost.
    pub fn modify<T>(
        &mut self,
        key: &Bytes,
        make: Option<fn() -> Value>,
        f: impl FnOnce(&mut Value) -> (T, isize),
    ) -> Option<T> {
        if self.get(key).is_none() {
            let make = make?;
            self.set(key, make(), None, false);
        }
        let version = self.inner.version();
        let db = self.db;
        let e = self.inner.dbs[db].keys.get_mut(&key[..])?;
        let (r, delta) = f(&mut e.value);
        e.version = version;
        e.cost = (e.cost as isize + delta).max(0) as usize;
        self.inner.used = (self.inner.used as isize + delta).max(0) as usize;
        if e.value.is_empty_container() {
            self.inner.remove_key(db, key);
        }
        Some(r)
    }

    /// Marks a key changed (for WATCH) without touching its value.
    pub fn touch_version(&mut self, key: &[u8]) {
        let v = self.inner.version();
        if let Some(e) = self.inner.dbs[self.db].keys.get_mut(key) {
            e.version = v;
        }
    }

    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some() && self.inner.remove_key(self.db, key).is_some()
    }

    /// The version of a key for WATCH (0 when missing).
    pub fn version_of(&mut self, key: &[u8]) -> u64 {
        self.get(key).map_or(0, |e| e.version)
    }

    /// Evicts until under `maxmemory`; false if that is impossible (OOM for the command).
    pub fn make_room(&mut self) -> bool {
        let max = self.store.maxmemory.load(Ordering::Relaxed) as usize;
        if max == 0 || self.inner.used <= max {
            return true;
        }
        let policy = self.store.policy();
        while self.inner.used > max {
            let victim = match policy {
                Policy::NoEviction => return false,
                Policy::AllkeysRandom => self.pick(false, false),
                Policy::AllkeysLru => self.pick(false, true),
                Policy::VolatileLru => self.pick(true, true),
            };
            let Some((db, key)) = victim else {
                return false;
            };
            self.inner.remove_key(db, &key);
            self.store
                .stats
                .evicted_keys
                .fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// A victim: 5 sampled keys (with a TTL only, if `volatile`), the least recently used of
    /// them when `lru`, else the first.
    fn pick(&mut self, volatile: bool, lru: bool) -> Option<(usize, Bytes)> {
        let Inner { dbs, rng, .. } = &mut *self.inner;
        let mut best: Option<(u64, usize, Bytes)> = None;
        for (i, db) in dbs.iter().enumerate() {
            let n = if volatile {
                db.volatile.len()
            } else {
                db.len()
            };
            for _ in 0..n.min(5) {
                let k = if volatile {
                    db.random_volatile(rng)
                } else {
                    db.random_key(rng)
                };
                let Some(k) = k else { break };
                let at = db.keys.get(k).map_or(0, |e| e.lru);
                if best.as_ref().is_none_or(|b| lru && at < b.0) {
                    best = Some((at, i, Bytes::copy_from_slice(k)));
                }
            }
        }
        best.map(|(_, db, k)| (db, k))
    }
}

/// A value's own copy of bytes that may be a slice of a larger request buffer, so a stored
/// value never keeps a whole network read alive.
pub fn own(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// Parses an integer argument as Redis's string2ll does.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 || b[0] == b'+' || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    if b.len() > 1 && b[0] == b'-' && b[1] == b'0' {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses a float argument as Redis's string2ld/strtod accept it (inf allowed, NaN not).
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => s.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// Keyspace lines for INFO.
pub fn keyspace_info(inner: &Inner) -> Vec<String> {
    inner
        .dbs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.is_empty())
        .map(|(i, d)| {
            format!(
                "db{i}:keys={},expires={},avg_ttl=0",
                d.len(),
                d.volatile.len()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::protocol::Proto;

    fn run(c: &mut MemConn, args: &[&str]) -> String {
        let cmd = Command::from_args(args.iter().map(|a| a.as_bytes().to_vec()));
        match c.execute(&cmd, Proto::Resp2) {
            Exec::Ready(b) => String::from_utf8_lossy(&b).into_owned(),
            Exec::Later(_) => "(blocked)".into(),
        }
    }

    #[test]
    fn lazy_expiry_with_a_paused_clock() {
        let store = Store::new(0, Policy::NoEviction);
        store.clock.set(1_000_000);
        let mut c = MemConn::new(store.clone());
        assert_eq!(run(&mut c, &["SET", "k", "v", "PX", "1500"]), "+OK\r\n");
        assert_eq!(run(&mut c, &["PTTL", "k"]), ":1500\r\n");
        store.clock.set(1_001_499);
        assert_eq!(run(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
        assert_eq!(run(&mut c, &["TTL", "k"]), ":0\r\n");
        store.clock.set(1_001_500);
        assert_eq!(run(&mut c, &["GET", "k"]), "$-1\r\n");
        assert_eq!(run(&mut c, &["DBSIZE"]), ":0\r\n");
        assert_eq!(store.stats.expired_keys.load(Ordering::Relaxed), 1);
        assert_eq!(
            store.used_memory(),
            0,
            "an expired key gives its memory back"
        );
    }

    #[test]
    fn an_overwrite_of_the_same_length_reuses_the_value_unless_it_is_shared() {
        let store = Store::new(0, Policy::NoEviction);
        store.clock.set(1_000_000);
        let mut c = MemConn::new(store.clone());
        let stored = |store: &Store| match &store.lock().dbs[0].keys.get(&b"k"[..]).unwrap().value {
            Value::Str(b) => (b.as_ptr() as usize, b.clone()),
            _ => panic!("not a string"),
        };
        run(&mut c, &["SET", "k", "aaaa"]);
        let (before, _) = stored(&store);
        assert_eq!(run(&mut c, &["SET", "k", "bbbb"]), "+OK\r\n");
        let (after, value) = stored(&store);
        assert_eq!(
            (after, &value[..]),
            (before, &b"bbbb"[..]),
            "rewritten in place"
        );
        // `value` shares it now: the next overwrite must not write through the share.
        assert_eq!(run(&mut c, &["SET", "k", "cccc"]), "+OK\r\n");
        assert_eq!(&value[..], b"bbbb");
        drop(value);
        // SET ... GET replies with the old value after writing the new one.
        assert_eq!(run(&mut c, &["SET", "k", "dddd", "GET"]), "$4\r\ncccc\r\n");
        assert_eq!(run(&mut c, &["GET", "k"]), "$4\r\ndddd\r\n");
        // Another length, a TTL kept or replaced, an expired value overwritten: as before.
        assert_eq!(run(&mut c, &["SET", "k", "ee", "PX", "100"]), "+OK\r\n");
        assert_eq!(run(&mut c, &["SET", "k", "ff", "KEEPTTL"]), "+OK\r\n");
        assert_eq!(run(&mut c, &["PTTL", "k"]), ":100\r\n");
        store.clock.set(1_000_100);
        assert_eq!(run(&mut c, &["SET", "k", "gg"]), "+OK\r\n");
        assert_eq!(run(&mut c, &["GET", "k"]), "$2\r\ngg\r\n");
        assert_eq!(run(&mut c, &["PTTL", "k"]), ":-1\r\n");
        assert_eq!(store.stats.expired_keys.load(Ordering::Relaxed), 1);
        assert_eq!(run(&mut c, &["SET", "k", "hh", "XX"]), "+OK\r\n");
        assert_eq!(run(&mut c, &["SET", "k", "ii", "NX"]), "$-1\r\n");
        assert_eq!(run(&mut c, &["SET", "n", "jj", "XX"]), "$-1\r\n");
        // Only SET ... GET reads (counted): plain, NX and XX SETs only write or look.
        assert_eq!(store.stats.keyspace_hits.load(Ordering::Relaxed), 3);
        assert_eq!(store.stats.keyspace_misses.load(Ordering::Relaxed), 0);
        let n = run(&mut c, &["DBSIZE"]);
        assert_eq!(n, ":1\r\n");
        assert_eq!(store.used_memory(), {
            let inner = store.lock();
            inner.dbs[0].keys.values().map(|e| e.cost).sum::<usize>()
        });
    }

    #[test]
    fn active_expiry_frees_keys_nobody_reads() {
        let store = Store::new(0, Policy::NoEviction);
        store.clock.set(5_000_000);
        let mut c = MemConn::new(store.clone());
        for i in 0..1000 {
            run(&mut c, &["SET", &format!("t{i}"), "v", "PX", "100"]);
        }
        for i in 0..10 {
            run(&mut c, &["SET", &format!("p{i}"), "v"]);
        }
        store.clock.set(5_000_200);
        let mut removed = 0;
        for _ in 0..200 {
            removed += store.expire_cycle(Duration::from_millis(25));
            if removed == 1000 {
                break;
            }
        }
        assert_eq!(removed, 1000, "every expired key swept without being read");
        assert_eq!(store.lock().dbs[0].len(), 10);
    }

    #[test]
    fn maxmemory_evicts_least_recently_used_or_refuses() {
        let value = "x".repeat(1000);
        let store = Store::new(200_000, Policy::AllkeysLru);
        let mut c = MemConn::new(store.clone());
        for i in 0..1000 {
            assert_eq!(run(&mut c, &["SET", &format!("k{i}"), &value]), "+OK\r\n");
        }
        let used = store.used_memory();
        assert!(used <= 200_000 + 2_000, "used {used} stays near maxmemory");
        assert!(store.stats.evicted_keys.load(Ordering::Relaxed) > 700);
        let kept = store.lock().dbs[0].len();
        assert!(kept > 100 && kept < 200, "{kept} keys kept");

        let strict = Store::new(50_000, Policy::NoEviction);
        let mut c = MemConn::new(strict.clone());
        let mut refused = 0;
        for i in 0..100 {
            if run(&mut c, &["SET", &format!("k{i}"), &value]).starts_with("-OOM") {
                refused += 1;
            }
        }
        assert!(refused > 40, "noeviction refuses writes past maxmemory");
        assert_eq!(run(&mut c, &["GET", "k0"]).len(), 1009, "reads still work");
        assert_eq!(run(&mut c, &["DEL", "k0"]), ":1\r\n", "and deletes");
    }

    #[test]
    fn volatile_lru_only_evicts_keys_with_a_ttl() {
        let value = "x".repeat(1000);
        let store = Store::new(100_000, Policy::VolatileLru);
        let mut c = MemConn::new(store.clone());
        for i in 0..50 {
            run(&mut c, &["SET", &format!("keep{i}"), &value]);
        }
        for i in 0..200 {
            run(&mut c, &["SET", &format!("tmp{i}"), &value, "EX", "1000"]);
        }
        for i in 0..50 {
            assert!(run(&mut c, &["EXISTS", &format!("keep{i}")]) == ":1\r\n");
        }
    }

    #[test]
    fn memory_accounting_returns_to_zero() {
        let store = Store::new(0, Policy::NoEviction);
        let mut c = MemConn::new(store.clone());
        run(&mut c, &["RPUSH", "l", "a", "bb", "ccc"]);
        run(&mut c, &["HSET", "h", "f", "v", "g", "w"]);
        run(&mut c, &["SADD", "s", "1", "2"]);
        run(&mut c, &["ZADD", "z", "1", "a", "2", "b"]);
        run(&mut c, &["SET", "k", "v"]);
        run(&mut c, &["APPEND", "k", "more"]);
        run(&mut c, &["LPOP", "l"]);
        run(&mut c, &["HDEL", "h", "f"]);
        run(&mut c, &["ZREM", "z", "a"]);
        assert!(store.used_memory() > 0);
        run(&mut c, &["DEL", "l", "h", "s", "z", "k"]);
        assert_eq!(store.used_memory(), 0);
    }
}
