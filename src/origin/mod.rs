//! The origin: the application's HTTP API, read through when a routed key is missing.
//!
//! A route (`[[origin.routes]]`) maps a key pattern (`product:{id}`) to a URL template. A GET
//! of a routed key that the store does not hold is answered from the origin: the reply waits in
//! the client's reply queue (the replies before it still go out, other clients are not held)
//! while one fill runs per key, whoever else asks for it meanwhile (single-flight). The fill
//! fetches the URL, stores the body (compressed as any write is) with the route's TTL plus up
//! to 10% jitter, and answers every waiter with the body. A fill runs in a task of its own: a
//! client that goes away does not cancel it, and it always ends (the request has a timeout), so
//! no key is left stuck in flight.
//!
//! A fill never overwrites a newer write: it stores with `SET ... NX GET`, so a value a client
//! wrote meanwhile (through any prescient) stays and is the answer; and a write through this
//! prescient to a key being filled (SET, DEL, EXPIRE, ...) drops the fill's write altogether.
//! A 404 is remembered for `negative_ttl` (a nil answer without asking the origin); a client
//! write to the key forgets it at once. When the origin fails (refused, timeout, 5xx, a body
//! over `max_body_bytes`), the miss gets nil or an error naming the route (`on_error`).
//!
//! An MGET's routed misses are filled the same way, all at once (`read_through_many`).
//!
//! Filled values carry their fresh-until time (envelope version 2): past it a read is served
//! the stored value while one refresh runs (`stale`), or, past that, is a miss that may still
//! be served the stored value while the origin fails (`stale_if_error`).
//!
//! A route with a `batch_url` serves an MGET's misses with one request per `batch_size`.
//!
//! Hash routes (`type = "hash"`) store a JSON object's fields; HGET, HMGET and HGETALL read
//! them through (`read_through_hash`).
//!
//! Each route may have a rate limit and retries (`request`). GETEX reads through as GET does
//! (the session runs it again after the fill, so its options apply).

pub mod client;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::{HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use rand::Rng;
use tokio::sync::oneshot;

use crate::compression::Compressor;
use crate::config::{OnError, Origin as Settings, OriginRoute, ValueType};
use crate::protocol::reply::Proto;
use crate::tracking::template::KeyPattern;
use crate::upstream::{Internal, Upstream};

/// A refresh on Redis: replaces the value only if the key still holds the stale bytes.
const REPLACE_IF_SAME: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) else return false end";

/// A fill after a value expired (past `stale`) on Redis: writes if the key is absent or still
/// holds a filled value (an envelope of version 2, "\xF5PZ\x02"); a client's value stays.
const REPLACE_EXPIRED: &[u8] = b"local v = redis.call('GET', KEYS[1]) \
if v == false or string.sub(v, 1, 4) == '\\245PZ\\2' then \
return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) else return false end";

/// A hash route's fill on Redis: the fields, with the TTL, only if the key is absent.
const HSET_IF_ABSENT: &[u8] = b"if redis.call('EXISTS', KEYS[1]) == 0 then \
redis.call('HSET', KEYS[1], unpack(ARGV, 2)) \
redis.call('EXPIRE', KEYS[1], ARGV[1]) return 1 else return 0 end";

/// Fields a hash route's body may have (Lua's `unpack` takes a few thousand values).
const MAX_HASH_FIELDS: usize = 3000;

/// Negative entries kept at most; past it the oldest half is forgotten.
const MAX_NEGATIVE: usize = 100_000;

/// What a fill found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The value the key holds now: the origin's body, or a client's write that won.
    Value(Bytes),
    /// The origin has no such thing (404).
    NotFound,
    /// The origin failed: why.
    Failed(String),
    /// A hash route's fields, stored.
    Fields(Arc<Vec<(Bytes, Bytes)>>),
    /// A hash route's answer, not stored: the key was written meanwhile (its reply stands).
    Kept,
}

/// What a hash read asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashRead {
    Get(Bytes),
    MGet(Vec<Bytes>),
    All,
}

pub struct Route {
    pub cfg: OriginRoute,
    pattern: KeyPattern,
    timeout: Duration,
    /// `rate_limit`, when set.
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// `headers`, parsed (validated at load).
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// After a refresh was skipped (no free slot at the origin host), refreshes of this route
    /// wait until then (unix ms): stale reads meanwhile cost no more than hits.
    refresh_after: AtomicU64,
}

/// How long a route's refreshes pause after one was skipped.
const REFRESH_PAUSE_MS: u64 = 50;

impl Route {
    /// The URL for `key`, when the route's pattern matches it.
    fn url_for(&self, key: &[u8]) -> Option<String> {
        let caps = self.pattern.captures(key)?;
        let mut url = self.cfg.url.clone();
        for (name, value) in caps {
            let enc = percent_encoding::percent_encode(value, client::COMPONENT).to_string();
            url = url.replace(&format!("{{{name}}}"), &enc);
        }
        Some(url)
    }
}

struct Flight {
    waiters: Vec<oneshot::Sender<Found>>,
    /// A client wrote the key through this prescient while the fill ran: do not store.
    overwritten: bool,
    /// A prefetch's flight: set when a demand miss joins it (the prefetch was late).
    prefetch: Option<Arc<AtomicBool>>,
}

/// What a prefetch did ([`Origin::prefetch`]).
#[derive(Debug, Clone)]
pub struct Prefetched {
    pub found: Found,
    /// A demand miss joined the fetch while in flight.
    pub late: bool,
    /// The value was stored (not refused because a client wrote the key first).
    pub stored: bool,
    /// How long the store keeps it (the route's ttl and stale windows).
    pub kept: Duration,
}

/// What a fill replaces: nothing (a miss), or a stale value (a refresh), which it overwrites
/// only if the key still holds exactly those bytes.
#[derive(Clone)]
enum Replaces {
    Nothing,
    Stale(Bytes),
}

/// A routed key's stored value, as the read path finds it.
pub enum Hit {
    /// A client's value, or a filled one still fresh: served as it is.
    Fresh,
    /// Past its freshness but within `stale`: served, and one refresh runs meanwhile.
    Stale,
    /// Past `stale`: a miss. Should the fill fail, the stored value may still be served until
    /// this time (unix ms; `stale_if_error`).
    Expired { fallback_until: u64 },
}

/// Now, in unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The origin's metrics, registered once: an Origin rebuilt by a reload keeps the series.
pub struct Metrics {
    /// Demand misses of routed keys (the prefetch controller's baseline).
    pub misses: AtomicU64,
    requests: IntCounterVec,
    coalesced: IntCounterVec,
    negative_hits: IntCounterVec,
    stale_served: IntCounterVec,
    inflight: IntGauge,
    duration: prometheus::HistogramVec,
    /// Per route: 1 when its last request got an answer (a body or a 404), 0 when it failed.
    up: prometheus::IntGaugeVec,
    /// Per origin host: 0 closed, 1 open, 2 half-open (updated as requests and PROXY ORIGIN
    /// see it).
    breaker: prometheus::IntGaugeVec,
}

impl Metrics {
    pub fn new(r: &Registry) -> Arc<Metrics> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(v.clone())).expect("unique metric");
            v
        };
        let inflight = IntGauge::new(
            "prescient_origin_inflight",
            "Origin requests in flight (fills).",
        )
        .expect("valid metric");
        r.register(Box::new(inflight.clone()))
            .expect("unique metric");
        let duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "prescient_origin_request_duration_seconds",
                "Time of origin requests, body and retries included, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let up = prometheus::IntGaugeVec::new(
            Opts::new(
                "prescient_origin_up",
                "Per route: 1 when its last origin request got an answer (a body or a 404), 0 when it failed.",
            ),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(up.clone())).expect("unique metric");
        r.register(Box::new(duration.clone()))
            .expect("unique metric");
        let breaker = prometheus::IntGaugeVec::new(
            Opts::new(
                "prescient_origin_breaker_state",
                "Circuit breaker per origin host: 0 closed, 1 open, 2 half-open.",
            ),
            &["origin"],
        )
        .expect("valid metric");
        r.register(Box::new(breaker.clone()))
            .expect("unique metric");
        Arc::new(Metrics {
            misses: AtomicU64::new(0),
            breaker,
            requests: vec(
                "prescient_origin_requests_total",
                "Origin requests by route and outcome (ok, not_found, error; skipped: a refresh with no free slot).",
                &["route", "outcome"],
            ),
            coalesced: vec(
                "prescient_origin_coalesced_total",
                "Misses that joined a fill already in flight instead of asking the origin.",
                &["route"],
            ),
            stale_served: vec(
                "prescient_origin_stale_served_total",
                "Values served past their freshness: while a refresh runs (swr) or while the origin fails (error).",
                &["route", "reason"],
            ),
            negative_hits: vec(
                "prescient_origin_negative_hits_total",
                "Misses answered nil from a remembered 404, without asking the origin.",
                &["route"],
            ),
            inflight,
            duration,
            up,
        })
    }
}

/// The origin a request's route was decided against, kept until its reply (a reload may
/// replace the shared one meanwhile). Compared by identity.
#[derive(Clone)]
pub struct Pinned(pub Arc<Origin>);

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinned(origin)")
    }
}

impl PartialEq for Pinned {
    fn eq(&self, other: &Pinned) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Pinned {}

/// The origin as the request path sees it.
pub struct Origin {
    routes: Vec<Route>,
    http: client::Http,
    up: Arc<Upstream>,
    compressor: Arc<Compressor>,
    flights: Mutex<HashMap<Bytes, Flight>>,
    /// Keys whose 404 is remembered, until when.
    negative: Mutex<HashMap<Bytes, Instant>>,
    /// Flights open now (a lock-free look before the write path takes the lock).
    open: AtomicU64,
    /// 404s remembered now (the same, for the negative map).
    remembered: AtomicU64,
    /// Demand reads of routed keys that found them missing (and did not get a remembered
    /// 404): what prefetching's load is measured against.
    pub metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Origin {
    /// The origin of `s`; None without routes. Validated settings: patterns parse.
    pub fn new(
        s: &Settings,
        up: Arc<Upstream>,
        compressor: Arc<Compressor>,
        metrics: Arc<Metrics>,
    ) -> Option<Arc<Origin>> {
        if s.routes.is_empty() {
            return None;
        }
        let routes = s
            .routes
            .iter()
            .filter_map(|r| {
                Some(Route {
                    refresh_after: AtomicU64::new(0),
                    limiter: std::num::NonZeroU32::new(r.rate_limit)
                        .map(|n| governor::RateLimiter::direct(governor::Quota::per_second(n))),
                    pattern: KeyPattern::parse(&r.key).ok()?,
                    headers: r
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((
                                hyper::header::HeaderName::from_bytes(k.as_bytes()).ok()?,
                                hyper::header::HeaderValue::from_str(v).ok()?,
                            ))
                        })
                        .collect(),
                    timeout: Duration::from_millis(match r.timeout_ms {
                        0 => s.timeout_ms,
                        t => t,
                    }),
                    cfg: r.clone(),
                })
            })
            .collect();
        Some(Arc::new(Origin {
            routes,
            http: client::Http::new(
                s.max_concurrency as usize,
                client::BreakerConfig {
                    failures: s.breaker_failures,
                    cooldown: Duration::from_millis(s.breaker_cooldown_ms),
                },
            ),
            up,
            compressor,
            flights: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            open: AtomicU64::new(0),
            remembered: AtomicU64::new(0),
            metrics,
        }))
    }

    /// The first route that reads `key` through as a string (GET, MGET), if any.
    pub fn route_for(&self, key: &[u8]) -> Option<usize> {
        self.first_route(key, ValueType::String)
    }

    /// The first route that reads `key` through as a hash (HGET, HMGET, HGETALL), if any.
    pub fn hash_route_for(&self, key: &[u8]) -> Option<usize> {
        self.first_route(key, ValueType::Hash)
    }

    /// The first route that reads `key` through and lets the prefetch workers fill it.
    pub fn prefetch_route_for(&self, key: &[u8]) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.cfg.read_through && r.cfg.prefetch && r.pattern.matches(key))
    }

    /// Whether a fill of `key` is in flight.
    pub fn in_flight(&self, key: &[u8]) -> bool {
        self.open.load(Ordering::Relaxed) > 0 && lock(&self.flights).contains_key(key)
    }

    /// Whether the route's origin host takes requests now (its breaker is not open).
    pub fn route_available(&self, route: usize) -> bool {
        let url = &self.routes[route].cfg.url;
        let host = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        !self.http.is_open(host)
    }

    /// Prefetches `key` on `route` as background work: it never waits for the origin host's
    /// capacity ahead of demand misses (with no free slot it is skipped, `Found::Failed`
    /// with [`client::SKIPPED`]), and it is a flight like any fill, so a demand miss that
    /// comes meanwhile joins it (and then, should it have been skipped, it is fetched as a
    /// demand miss would be). Stored as a miss's fill is: only if the key is still absent.
    /// None when a fill of the key is already in flight.
    pub async fn prefetch(self: &Arc<Self>, route: usize, key: Bytes) -> Option<Prefetched> {
        let late = Arc::new(AtomicBool::new(false));
        {
            let mut flights = lock(&self.flights);
            if flights.contains_key(&key) {
                return None;
            }
            flights.insert(
                key.clone(),
                Flight {
                    waiters: Vec::new(),
                    overwritten: false,
                    prefetch: Some(late.clone()),
                },
            );
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        let mut guard = self.landing(&key);
        let (mut found, mut stored) = self.fill(route, &key, Replaces::Nothing, true).await;
        if matches!(&found, Found::Failed(e) if e == client::SKIPPED)
            && late.load(Ordering::Relaxed)
        {
            (found, stored) = self.fill(route, &key, Replaces::Nothing, false).await;
        }
        guard.found = found.clone();
        drop(guard);
        let cfg = &self.routes[route].cfg;
        Some(Prefetched {
            found,
            late: late.load(Ordering::Relaxed),
            stored,
            kept: Duration::from_secs(cfg.ttl + cfg.stale.max(cfg.stale_if_error)),
        })
    }

    fn first_route(&self, key: &[u8], t: ValueType) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.cfg.read_through && r.cfg.value_type == t && r.pattern.matches(key))
    }

    /// Answers a hash read of a missing key (`raw`: the store's reply, in the client's
    /// protocol) from the origin: the fields it stored, shaped as the read asked; the store's
    /// own reply when nothing was stored (404, the key written meanwhile, a failure with
    /// `on_error = "nil"`).
    pub fn read_through_hash(
        self: &Arc<Self>,
        route: usize,
        key: Bytes,
        read: HashRead,
        raw: Bytes,
        proto: Proto,
    ) -> oneshot::Receiver<crate::upstream::Reply> {
        let (tx, rx) = oneshot::channel();
        let name = self.routes[route].cfg.name.clone();
        let on_error = self.routes[route].cfg.on_error;
        if self.remembered_missing(&key) {
            self.metrics.negative_hits.with_label_values(&[&name]).inc();
            let _ = tx.send(Ok(raw));
            return rx;
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let found = self.join(route, key, Replaces::Nothing);
        tokio::spawn(async move {
            let reply = match found.await {
                Ok(Found::Fields(f)) => hash_reply(&f, &read, proto),
                Ok(Found::Failed(why)) if on_error == OnError::Error => {
                    let line = crate::protocol::reply::error_line(&format!(
                        "ERR origin route '{name}' failed: {why}"
                    ))
                    .into_owned();
                    Bytes::from(format!("-{line}\r\n"))
                }
                _ => raw,
            };
            let _ = tx.send(Ok(reply));
        });
        rx
    }

    /// The index of the route named `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.cfg.name == name)
    }

    /// Every route's settings, in order.
    pub fn routes(&self) -> impl Iterator<Item = &OriginRoute> {
        self.routes.iter().map(|r| &r.cfg)
    }

    pub fn route(&self, i: usize) -> &OriginRoute {
        &self.routes[i].cfg
    }

    /// A client wrote `key` (through this prescient): a fill in flight does not store its
    /// result, and a remembered 404 is forgotten.
    pub fn note_write(&self, key: &[u8]) {
        if self.open.load(Ordering::Relaxed) > 0 {
            if let Some(f) = lock(&self.flights).get_mut(key) {
                f.overwritten = true;
            }
        }
        // Most writes find no 404 remembered: they take no lock for it.
        if self.remembered.load(Ordering::Relaxed) > 0 {
            let mut neg = lock(&self.negative);
            neg.remove(key);
            self.remembered.store(neg.len() as u64, Ordering::Relaxed);
        }
    }

    /// Answers a miss of `key` on `route`: the reply for the client in `proto`, once the fill
    /// this miss started or joined ends. `nil` is the reply the store gave (in the client's
    /// protocol), returned for a 404 and, with `on_error = "nil"`, for a failure.
    /// `fallback`: an expired value (original bytes) served instead, until a time, should the
    /// fill fail (`stale_if_error`).
    pub fn read_through(
        self: &Arc<Self>,
        route: usize,
        key: Bytes,
        nil: Bytes,
        fallback: Option<(Bytes, u64)>,
    ) -> oneshot::Receiver<crate::upstream::Reply> {
        let (tx, rx) = oneshot::channel();
        let name = self.routes[route].cfg.name.clone();
        let on_error = self.routes[route].cfg.on_error;
        if fallback.is_none() && self.remembered_missing(&key) {
            self.metrics.negative_hits.with_label_values(&[&name]).inc();
            let _ = tx.send(Ok(nil));
            return rx;
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let replaces = match &fallback {
            Some(_) => Replaces::Stale(Bytes::new()),
            None => Replaces::Nothing,
        };
        let found = self.join(route, key, replaces);
        let me = self.clone();
        tokio::spawn(async move {
            let reply = match found.await {
                Ok(Found::Value(v)) => bulk(&v),
                // (Not for a string route's read.)
                Ok(Found::NotFound | Found::Fields(_) | Found::Kept) => nil,
                Ok(Found::Failed(_)) if fallback.as_ref().is_some_and(|f| now_ms() <= f.1) => {
                    me.metrics
                        .stale_served
                        .with_label_values(&[&name, "error"])
                        .inc();
                    fallback.map_or(nil, |f| bulk(&f.0))
                }
                Ok(Found::Failed(why)) => match on_error {
                    OnError::Nil => nil,
                    OnError::Error => {
                        let line = crate::protocol::reply::error_line(&format!(
                            "ERR origin route '{name}' failed: {why}"
                        ))
                        .into_owned();
                        Bytes::from(format!("-{line}\r\n"))
                    }
                },
                // The fill task always answers; should it not, the client is not left waiting.
                Err(_) => nil,
            };
            let _ = tx.send(Ok(reply));
        });
        rx
    }

    /// How fresh a routed key's stored value (as stored: the envelope) is.
    pub fn on_hit(&self, route: usize, stored: &[u8]) -> Hit {
        let Ok(Some(h)) = crate::compression::envelope::header(stored) else {
            return Hit::Fresh;
        };
        let Some(until) = h.fresh_until else {
            return Hit::Fresh;
        };
        let cfg = &self.routes[route].cfg;
        let now = now_ms();
        if now <= until {
            Hit::Fresh
        } else if now <= until + cfg.stale * 1000 {
            Hit::Stale
        } else {
            Hit::Expired {
                fallback_until: until + cfg.stale_if_error * 1000,
            }
        }
    }

    /// A stale value is being served: one refresh of `key` runs (however many readers see it
    /// stale), replacing `stored` only if the key still holds it.
    pub fn refresh(self: &Arc<Self>, route: usize, key: Bytes, stored: Bytes) {
        let name = &self.routes[route].cfg.name;
        self.metrics
            .stale_served
            .with_label_values(&[name, "swr"])
            .inc();
        if now_ms() < self.routes[route].refresh_after.load(Ordering::Relaxed) {
            return;
        }
        // Nobody waits for the refresh: the reader was served the stale value.
        drop(self.join(route, key, Replaces::Stale(stored)));
    }

    /// Whether an MGET reply has a nil element whose key a route reads through.
    pub fn any_routed_nil(&self, raw: &[u8], routes: &[Option<usize>]) -> bool {
        let Some(spans) = crate::compression::reply::array_elements(raw) else {
            return false;
        };
        spans
            .iter()
            .zip(routes)
            .any(|(&(s, e), r)| r.is_some() && is_nil(&raw[s..e]))
    }

    /// Answers an MGET's routed misses from the origin: each joins (or starts) its key's fill,
    /// all at once; the reply is the MGET's (hits already decoded) with the filled values in
    /// place. A miss whose fill finds nothing or fails stays nil (one failing key does not fail
    /// the others).
    pub fn read_through_many(
        self: &Arc<Self>,
        keys: Vec<Bytes>,
        routes: Vec<Option<usize>>,
        decoded: Bytes,
    ) -> oneshot::Receiver<crate::upstream::Reply> {
        let (tx, rx) = oneshot::channel();
        let Some(spans) = crate::compression::reply::array_elements(&decoded) else {
            let _ = tx.send(Ok(decoded));
            return rx;
        };
        let mut fills = Vec::new();
        // Misses of routes with a batch URL, gathered per route: (element index, key).
        let mut batched: HashMap<usize, Vec<(usize, Bytes)>> = HashMap::new();
        for (i, &(s, e)) in spans.iter().enumerate() {
            let (Some(Some(route)), Some(key)) = (routes.get(i), keys.get(i)) else {
                continue;
            };
            if !is_nil(&decoded[s..e]) {
                continue;
            }
            if self.remembered_missing(key) {
                let name = &self.routes[*route].cfg.name;
                self.metrics.negative_hits.with_label_values(&[name]).inc();
                continue;
            }
            self.metrics.misses.fetch_add(1, Ordering::Relaxed);
            if self.routes[*route].cfg.batch_url.is_empty() {
                fills.push((i, self.join(*route, key.clone(), Replaces::Nothing)));
            } else {
                batched.entry(*route).or_default().push((i, key.clone()));
            }
        }
        for (route, misses) in batched {
            fills.extend(self.join_batch(route, misses));
        }
        tokio::spawn(async move {
            let mut filled: HashMap<usize, Bytes> = HashMap::new();
            for (i, rx) in fills {
                if let Ok(Found::Value(v)) = rx.await {
                    filled.insert(i, v);
                }
            }
            let mut out = Vec::with_capacity(
                decoded.len() + filled.values().map(|v| v.len() + 16).sum::<usize>(),
            );
            let first = spans.first().map_or(decoded.len(), |s| s.0);
            out.extend_from_slice(&decoded[..first]);
            for (i, &(s, e)) in spans.iter().enumerate() {
                match filled.get(&i) {
                    Some(v) => out.extend_from_slice(&bulk(v)),
                    None => out.extend_from_slice(&decoded[s..e]),
                }
            }
            let last = spans.last().map_or(decoded.len(), |s| s.1);
            out.extend_from_slice(&decoded[last..]);
            let _ = tx.send(Ok(Bytes::from(out)));
        });
        rx
    }

    fn remembered_missing(&self, key: &[u8]) -> bool {
        let mut neg = lock(&self.negative);
        match neg.get(key) {
            Some(&until) if Instant::now() < until => true,
            Some(_) => {
                neg.remove(key);
                self.remembered.store(neg.len() as u64, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Joins the fill of `key`, starting it if none is in flight.
    fn join(
        self: &Arc<Self>,
        route: usize,
        key: Bytes,
        replaces: Replaces,
    ) -> oneshot::Receiver<Found> {
        let (tx, rx) = oneshot::channel();
        if !self.join_or_open(&mut lock(&self.flights), route, &key, tx) {
            return rx;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut guard = me.landing(&key);
            // A refresh of a value still being served is background work: it never waits
            // for the origin host's capacity ahead of demand misses.
            let background = matches!(&replaces, Replaces::Stale(old) if !old.is_empty());
            guard.found = me.fill(route, &key, replaces, background).await.0;
        });
        rx
    }

    /// Adds a waiter to `key`'s flight; true when there was none and this opened it (the
    /// caller then runs the fill, holding a [`Landing`]).
    fn join_or_open(
        &self,
        flights: &mut HashMap<Bytes, Flight>,
        route: usize,
        key: &Bytes,
        tx: oneshot::Sender<Found>,
    ) -> bool {
        if let Some(f) = flights.get_mut(key) {
            f.waiters.push(tx);
            if let Some(late) = &f.prefetch {
                late.store(true, Ordering::Relaxed);
            }
            let name = &self.routes[route].cfg.name;
            self.metrics.coalesced.with_label_values(&[name]).inc();
            return false;
        }
        flights.insert(
            key.clone(),
            Flight {
                waiters: vec![tx],
                overwritten: false,
                prefetch: None,
            },
        );
        self.open.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Ends `key`'s flight whatever happens to its fill (a panic included): no key stuck.
    fn landing(self: &Arc<Self>, key: &Bytes) -> Landing {
        Landing {
            origin: self.clone(),
            key: key.clone(),
            found: Found::Failed("the fill ended early".into()),
        }
    }

    /// Joins the fills of an MGET's misses on a batch route: keys already in flight are joined;
    /// the rest get flights of their own, filled by one batch request per `batch_size` of them.
    fn join_batch(
        self: &Arc<Self>,
        route: usize,
        misses: Vec<(usize, Bytes)>,
    ) -> Vec<(usize, oneshot::Receiver<Found>)> {
        let mut out = Vec::with_capacity(misses.len());
        let mut owned = Vec::new();
        {
            let mut flights = lock(&self.flights);
            for (i, key) in misses {
                let (tx, rx) = oneshot::channel();
                out.push((i, rx));
                if self.join_or_open(&mut flights, route, &key, tx) {
                    owned.push(key);
                }
            }
        }
        let size = self.routes[route].cfg.batch_size.max(1) as usize;
        for chunk in owned.chunks(size) {
            let me = self.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                let mut guards: Vec<Landing> = chunk.iter().map(|k| me.landing(k)).collect();
                let found = me.fill_batch(route, &chunk).await;
                for (g, f) in guards.iter_mut().zip(found) {
                    g.found = f;
                }
            });
        }
        out
    }

    /// One batch request for `keys` (all of one route): each key's outcome, in order.
    async fn fill_batch(&self, route: usize, keys: &[Bytes]) -> Vec<Found> {
        let r = &self.routes[route];
        let name = r.cfg.name.as_str();
        let ids: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                r.pattern
                    .captures(k)
                    .and_then(|c| c.first().map(|(_, v)| v.to_vec()))
                    .unwrap_or_default()
            })
            .collect();
        let joined = ids
            .iter()
            .map(|id| percent_encoding::percent_encode(id, client::COMPONENT).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let url = r.cfg.batch_url.replace("{ids}", &joined);
        // A batch body holds many values: its limit is the route's per value, times them.
        let limit = (r.cfg.max_body_bytes as usize).saturating_mul(keys.len());
        let got = self.request(r, &url, limit, false).await;
        let parsed = match got {
            Ok(client::Fetched::Body(body)) => {
                serde_json::from_slice::<HashMap<String, Box<serde_json::value::RawValue>>>(&body)
                    .map_err(|e| format!("the batch URL's answer is not a JSON object ({e})"))
            }
            Ok(client::Fetched::NotFound) => Ok(HashMap::new()),
            Err(e) => Err(e),
        };
        let outcome = if parsed.is_ok() { "ok" } else { "error" };
        self.metrics
            .requests
            .with_label_values(&[name, outcome])
            .inc();
        let obj = match parsed {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(route = name, url, error = %e, "origin batch request failed");
                return keys.iter().map(|_| Found::Failed(e.clone())).collect();
            }
        };
        // The values found, stored in one pipeline (each written as a single fill would be).
        let mut out = Vec::with_capacity(keys.len());
        let mut writes = Vec::new();
        let mut tags = Vec::new();
        for (key, id) in keys.iter().zip(&ids) {
            let found = obj.get(String::from_utf8_lossy(id).as_ref());
            match found {
                Some(raw) if raw.get().len() <= r.cfg.max_body_bytes as usize => {
                    let body = Bytes::copy_from_slice(raw.get().as_bytes());
                    if !lock(&self.flights).get(key).is_some_and(|f| f.overwritten) {
                        for set in self.tag_sets(route, key, &[]) {
                            tags.push(vec![Bytes::from_static(b"SADD"), set, key.clone()]);
                        }
                        writes.push(self.fill_write(route, key, &body));
                    }
                    out.push(Found::Value(body));
                }
                Some(_) => out.push(Found::Failed(format!(
                    "a value over max_body_bytes ({})",
                    r.cfg.max_body_bytes
                ))),
                None => {
                    self.remember_missing(route, key);
                    out.push(Found::NotFound);
                }
            }
        }
        if !writes.is_empty() {
            let mut client = Internal::new(self.up.clone());
            // Tags before values, as a single fill does.
            tags.extend(writes);
            let _ = client.pipeline(&tags).await;
        }
        out
    }

    /// The SET of a miss's fill: fresh for the route's ttl, kept for its stale windows, only if
    /// the key is absent.
    fn fill_write(&self, route: usize, key: &Bytes, body: &Bytes) -> Vec<Bytes> {
        let (stored, ex) = self.fresh_stored(route, key, body);
        set_nx(key, stored, ex)
    }

    /// A body as a fill stores it (compressed as any write, fresh for the route's `ttl`), and
    /// how long it is kept: `ttl + max(stale, stale_if_error)` plus up to 10% jitter.
    fn fresh_stored(&self, route: usize, key: &Bytes, body: &Bytes) -> (Bytes, Bytes) {
        let cfg = &self.routes[route].cfg;
        let keep = cfg.ttl + cfg.stale.max(cfg.stale_if_error);
        let jitter = rand::rng().random_range(0..=keep / 10);
        let stored = self.compressor.encode(key, body);
        let stored =
            crate::compression::envelope::with_freshness(&stored, now_ms() + cfg.ttl * 1000);
        (
            Bytes::from(stored),
            Bytes::from((keep + jitter).to_string()),
        )
    }

    /// The tag-index sets `key` joins when `route` fills it: the route's tags and `extra`,
    /// placeholders filled from the key.
    pub fn tag_sets(&self, route: usize, key: &[u8], extra: &[String]) -> Vec<Bytes> {
        let r = &self.routes[route];
        if r.cfg.tags.is_empty() && extra.is_empty() {
            return Vec::new();
        }
        let caps = r.pattern.captures(key).unwrap_or_default();
        r.cfg
            .tags
            .iter()
            .chain(extra)
            .map(|t| {
                let mut t = t.clone();
                for (name, value) in &caps {
                    t = t.replace(&format!("{{{name}}}"), &String::from_utf8_lossy(value));
                }
                crate::jobs::tags::set_key(&t)
            })
            .collect()
    }

    /// Adds `key` to its tag sets, before the value is written: a key is never in the store
    /// without its tags (a tag entry without its key is cleaned up later).
    async fn tag(&self, client: &mut Internal, route: usize, key: &Bytes, extra: &[String]) {
        let sets = self.tag_sets(route, key, extra);
        if sets.is_empty() {
            return;
        }
        let cmds: Vec<Vec<Bytes>> = sets
            .into_iter()
            .map(|s| vec![Bytes::from_static(b"SADD"), s, key.clone()])
            .collect();
        let _ = client.pipeline(&cmds).await;
    }

    /// Warms `key` on `route`: fetched as background work (never ahead of demand misses; with
    /// no free slot at the host it waits and tries again, up to the route's timeout), tagged
    /// with the route's tags and `tags`, and written whether or not the key holds a value (a
    /// warming refreshes). With `fence`, the write is refused once that fencing token is stale
    /// (`FENCED ...`). Whether a value was stored; Err when the fetch or the write failed.
    pub async fn warm(
        &self,
        route: usize,
        key: &Bytes,
        tags: &[String],
        fence: Option<u64>,
    ) -> Result<bool, String> {
        let r = &self.routes[route];
        let url = r
            .url_for(key)
            .ok_or_else(|| "the key does not match the route".to_string())?;
        let give_up = Instant::now() + r.timeout;
        let got = loop {
            match self
                .request(r, &url, r.cfg.max_body_bytes as usize, true)
                .await
            {
                Err(e) if e == client::SKIPPED && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => break other,
            }
        };
        let outcome = match &got {
            Ok(client::Fetched::Body(_)) => "ok",
            Ok(client::Fetched::NotFound) => "not_found",
            Err(_) => "error",
        };
        self.metrics
            .requests
            .with_label_values(&[r.cfg.name.as_str(), outcome])
            .inc();
        let body = match got? {
            client::Fetched::Body(b) => b,
            client::Fetched::NotFound => return Ok(false),
        };
        if r.cfg.value_type == ValueType::Hash {
            return Err("warming fills string routes only".into());
        }
        let (stored, ex) = self.fresh_stored(route, key, &body);
        let mut client = Internal::new(self.up.clone());
        self.tag(&mut client, route, key, tags).await;
        let set = vec![
            Bytes::from_static(b"SET"),
            key.clone(),
            stored,
            Bytes::from_static(b"EX"),
            ex,
        ];
        let args = match fence {
            Some(t) => crate::jobs::lease::Lease::fenced(t, std::slice::from_ref(key), set),
            None => set,
        };
        match client.call(&args).await {
            Ok(r) if r.starts_with(b"+") => Ok(true),
            Ok(r) => Err(String::from_utf8_lossy(&r[1..]).trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn remember_missing(&self, route: usize, key: &Bytes) {
        let ttl = self.routes[route].cfg.negative_ttl;
        if ttl > 0 {
            let mut neg = lock(&self.negative);
            if neg.len() >= MAX_NEGATIVE {
                neg.clear();
            }
            neg.insert(key.clone(), Instant::now() + Duration::from_secs(ttl));
            self.remembered.store(neg.len() as u64, Ordering::Relaxed);
        }
    }

    /// One GET for a route: its turn under `rate_limit`, then the request, tried again after a
    /// failure with no answer or a 5xx (`retries`, backing off from 50 ms), all within the
    /// route's timeout.
    async fn request(
        &self,
        r: &Route,
        url: &str,
        max_body: usize,
        background: bool,
    ) -> Result<client::Fetched, String> {
        self.metrics.inflight.inc();
        let started = Instant::now();
        let got = self.request_inner(r, url, max_body, background).await;
        self.metrics.inflight.dec();
        let name = r.cfg.name.as_str();
        self.metrics
            .duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if !matches!(&got, Err(e) if e == client::SKIPPED) {
            self.metrics
                .up
                .with_label_values(&[name])
                .set(i64::from(got.is_ok()));
        }
        got
    }

    async fn request_inner(
        &self,
        r: &Route,
        url: &str,
        max_body: usize,
        background: bool,
    ) -> Result<client::Fetched, String> {
        let deadline = Instant::now() + r.timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut backoff = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            if let Some(l) = &r.limiter {
                if tokio::time::timeout(left(), l.until_ready()).await.is_err() {
                    return Err(format!(
                        "rate limited ({}/s) past the timeout",
                        r.cfg.rate_limit
                    ));
                }
            }
            let got = match self
                .http
                .get(url, &r.headers, left(), max_body, background)
                .await
            {
                // The whole request's time, retries included, is the route's timeout.
                Err(e) if e.starts_with("timed out") => {
                    Err(format!("timed out after {} ms", r.timeout.as_millis()))
                }
                other => other,
            };
            let retry = match &got {
                Err(e) => e.starts_with("request failed") || e.starts_with("status 5"),
                Ok(_) => false,
            };
            if !retry || tries >= r.cfg.retries || left() <= backoff {
                return got;
            }
            tries += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// Fetches and stores `key`: what was found, and whether this fill stored it.
    async fn fill(
        &self,
        route: usize,
        key: &Bytes,
        replaces: Replaces,
        background: bool,
    ) -> (Found, bool) {
        let r = &self.routes[route];
        let name = r.cfg.name.as_str();
        let Some(url) = r.url_for(key) else {
            return (
                Found::Failed("the key does not match the route".into()),
                false,
            );
        };
        let got = self
            .request(r, &url, r.cfg.max_body_bytes as usize, background)
            .await;
        let outcome = match &got {
            Ok(client::Fetched::Body(_)) => "ok",
            Ok(client::Fetched::NotFound) => "not_found",
            Err(e) if e == client::SKIPPED => {
                r.refresh_after
                    .store(now_ms() + REFRESH_PAUSE_MS, Ordering::Relaxed);
                "skipped"
            }
            Err(_) => "error",
        };
        self.metrics
            .requests
            .with_label_values(&[name, outcome])
            .inc();
        for (host, state) in self.http.breakers() {
            self.metrics
                .breaker
                .with_label_values(&[&host])
                .set(state.code());
        }
        match got {
            Ok(client::Fetched::Body(body)) if r.cfg.value_type == ValueType::Hash => {
                let found = self.store_hash(route, key, &body).await;
                let stored = matches!(found, Found::Fields(_));
                (found, stored)
            }
            Ok(client::Fetched::Body(body)) => self.store(route, key, body, replaces).await,
            Ok(client::Fetched::NotFound) => {
                self.remember_missing(route, key);
                (Found::NotFound, false)
            }
            Err(e) => {
                tracing::debug!(route = name, url, error = %e, "origin request failed");
                (Found::Failed(e), false)
            }
        }
    }

    /// Stores a body, marked fresh for the route's `ttl` and kept for `ttl + max(stale,
    /// stale_if_error)` plus jitter, unless a client wrote the key meanwhile. A miss's fill
    /// stores only if the key is still absent (the value the key holds is then the answer); a
    /// refresh only if the key still holds the stale bytes it replaces (on Redis a
    /// compare-and-set script; on the embedded store, whose every writer is this prescient,
    /// the write flag suffices).
    async fn store(
        &self,
        route: usize,
        key: &Bytes,
        body: Bytes,
        replaces: Replaces,
    ) -> (Found, bool) {
        if lock(&self.flights).get(key).is_some_and(|f| f.overwritten) {
            return (Found::Value(body), false);
        }
        let (stored, ex) = self.fresh_stored(route, key, &body);
        let mut client = Internal::new(self.up.clone());
        self.tag(&mut client, route, key, &[]).await;
        let args: Vec<Bytes> = match (&replaces, self.up.memory().is_some()) {
            (Replaces::Nothing, _) => {
                let mut a = set_nx(key, stored, ex);
                a.push(Bytes::from_static(b"GET"));
                a
            }
            (Replaces::Stale(_), true) => vec![
                Bytes::from_static(b"SET"),
                key.clone(),
                stored,
                Bytes::from_static(b"EX"),
                ex,
                Bytes::from_static(b"XX"),
            ],
            (Replaces::Stale(old), false) if old.is_empty() => vec![
                // An expired value (a miss past `stale`): it may be overwritten, not a newer
                // client value, which carries no freshness; the script checks that.
                Bytes::from_static(b"EVAL"),
                Bytes::from_static(REPLACE_EXPIRED),
                Bytes::from_static(b"1"),
                key.clone(),
                stored,
                ex,
            ],
            (Replaces::Stale(old), false) => vec![
                Bytes::from_static(b"EVAL"),
                Bytes::from_static(REPLACE_IF_SAME),
                Bytes::from_static(b"1"),
                key.clone(),
                old.clone(),
                stored,
                ex,
            ],
        };
        match client.call(&args).await {
            Ok(r) => match crate::compression::reply::bulk_payload(&r) {
                // Someone wrote the key first: theirs is the value.
                Some(Some(theirs)) if matches!(replaces, Replaces::Nothing) => {
                    match self.compressor.decode(theirs) {
                        Ok(v) => (Found::Value(Bytes::copy_from_slice(&v)), false),
                        Err(_) => (Found::Value(body), false),
                    }
                }
                // A refresh's script answers false (nil) when the key changed meanwhile.
                Some(None) if !matches!(replaces, Replaces::Nothing) => (Found::Value(body), false),
                _ => (Found::Value(body), true),
            },
            // Not stored (the store failed): the client still gets the origin's answer.
            Err(_) => (Found::Value(body), false),
        }
    }

    /// Stores a hash route's body (a JSON object: its top-level fields, in their order; a
    /// string value as its text, any other as its JSON) with the route's ttl, only if the key
    /// is absent (a script on Redis; on the embedded store, the write flag).
    async fn store_hash(&self, route: usize, key: &Bytes, body: &[u8]) -> Found {
        let obj = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => return Found::Failed("the answer is not a JSON object (a hash route)".into()),
        };
        if obj.is_empty() {
            return Found::NotFound;
        }
        if obj.len() > MAX_HASH_FIELDS {
            return Found::Failed(format!("over {MAX_HASH_FIELDS} fields"));
        }
        let fields: Vec<(Bytes, Bytes)> = obj
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => Bytes::from(s),
                    other => Bytes::from(other.to_string()),
                };
                (Bytes::from(k), v)
            })
            .collect();
        if lock(&self.flights).get(key).is_some_and(|f| f.overwritten) {
            return Found::Kept;
        }
        let cfg = &self.routes[route].cfg;
        let ex = cfg.ttl + rand::rng().random_range(0..=cfg.ttl / 10);
        let encoded = fields
            .iter()
            .flat_map(|(f, v)| [f.clone(), self.compressor.encode(key, v)]);
        let mut client = Internal::new(self.up.clone());
        self.tag(&mut client, route, key, &[]).await;
        let stored = if self.up.memory().is_some() {
            let exists = [Bytes::from_static(b"EXISTS"), key.clone()];
            let mut hset = vec![Bytes::from_static(b"HSET"), key.clone()];
            hset.extend(encoded);
            match client.call(&exists).await {
                Ok(r) if &r[..] == b":0\r\n" => {
                    let expire = [
                        Bytes::from_static(b"EXPIRE"),
                        key.clone(),
                        Bytes::from(ex.to_string()),
                    ];
                    client.pipeline(&[hset, expire.to_vec()]).await.is_ok()
                }
                _ => false,
            }
        } else {
            let mut eval = vec![
                Bytes::from_static(b"EVAL"),
                Bytes::from_static(HSET_IF_ABSENT),
                Bytes::from_static(b"1"),
                key.clone(),
                Bytes::from(ex.to_string()),
            ];
            eval.extend(encoded);
            matches!(client.call(&eval).await, Ok(r) if &r[..] == b":1\r\n")
        };
        match stored {
            true => Found::Fields(Arc::new(fields)),
            false => Found::Kept,
        }
    }

    /// Lines for `PROXY ORIGIN`.
    pub fn report(&self) -> Vec<String> {
        let mut lines = vec![
            format!("routes:{}", self.routes.len()),
            format!("inflight:{}", self.metrics.inflight.get()),
            format!("negative_entries:{}", lock(&self.negative).len()),
        ];
        for (host, state) in self.http.breakers() {
            lines.push(format!("breaker:{host} {}", state.name()));
            self.metrics
                .breaker
                .with_label_values(&[&host])
                .set(state.code());
        }
        for r in &self.routes {
            let n = &r.cfg.name;
            let count = |o: &str| self.metrics.requests.with_label_values(&[n, o]).get();
            lines.push(format!(
                "route:{n} key={} url={} ttl={} read_through={} on_error={} requests_ok={} requests_not_found={} requests_error={} coalesced={} negative_hits={}",
                r.cfg.key,
                r.cfg.url,
                r.cfg.ttl,
                r.cfg.read_through,
                r.cfg.on_error.name(),
                count("ok"),
                count("not_found"),
                count("error"),
                self.metrics.coalesced.with_label_values(&[n]).get(),
                self.metrics.negative_hits.with_label_values(&[n]).get(),
            ));
        }
        lines
    }
}

/// Ends a flight: answers its waiters with what the fill found (or the failure left in it).
struct Landing {
    origin: Arc<Origin>,
    key: Bytes,
    found: Found,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let flight = lock(&self.origin.flights).remove(&self.key);
        self.origin.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(f) = flight {
            for w in f.waiters {
                let _ = w.send(self.found.clone());
            }
        }
    }
}

fn bulk(v: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(v.len() + 16);
    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// A hash read's reply from the fields a fill stored, in the client's protocol.
fn hash_reply(fields: &[(Bytes, Bytes)], read: &HashRead, proto: Proto) -> Bytes {
    use crate::protocol::Value;
    let find = |f: &[u8]| {
        fields
            .iter()
            .find(|(k, _)| &k[..] == f)
            .map(|(_, v)| v.clone())
    };
    let value = |f: &[u8]| find(f).map_or(Value::Nil, Value::Bulk);
    let v = match read {
        HashRead::Get(f) => value(f),
        HashRead::MGet(fs) => Value::Array(fs.iter().map(|f| value(f)).collect()),
        HashRead::All => Value::Map(
            fields
                .iter()
                .map(|(k, v)| (Value::Bulk(k.clone()), Value::Bulk(v.clone())))
                .collect(),
        ),
    };
    v.encode(proto)
}

/// `SET key stored EX ex NX`: a fill's write, which never replaces a value.
fn set_nx(key: &Bytes, stored: Bytes, ex: Bytes) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"SET"),
        key.clone(),
        stored,
        Bytes::from_static(b"EX"),
        ex,
        Bytes::from_static(b"NX"),
    ]
}

/// Whether a reply (or an array element) is RESP2's or RESP3's nil.
pub fn is_nil(element: &[u8]) -> bool {
    element == b"$-1\r\n" || element == b"_\r\n"
}

/// The nil reply of a protocol (what a GET of a missing key returns).
pub fn nil(proto: Proto) -> Bytes {
    match proto {
        Proto::Resp2 => Bytes::from_static(b"$-1\r\n"),
        Proto::Resp3 => Bytes::from_static(b"_\r\n"),
    }
}
