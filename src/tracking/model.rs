//! The Markov model over key accesses: which key follows which.
//!
//! Three tables of states, each bounded by `max_states` (when full, the least recently
//! updated of a few sampled states is dropped, as Redis's approximated LRU does):
//! - order 2 (optional): the last two keys -> next key;
//! - order 1: the last key -> next key;
//! - template: the last key's template -> [`Transition`] (next template and how to fill it),
//!   which predicts keys never seen before (`user:77:orders` after `user:77:profile`). Only
//!   templates with placeholders have states: a literal template (`/index.html`) names its
//!   one key, so every transition from it names one key too and its state would repeat the
//!   key's order-1 state (identically with `lookahead` 1; with more, the key's state also
//!   counts later reads, and a literal template's state was a second ranking of immediate
//!   successors, worth a little hit ratio for a quarter of the model's memory and time).
//!
//! Prediction is PPM style: the highest order whose state has at least `min_support`
//! observations speaks first; lower levels add candidates after it. With `lookahead` > 1 a
//! key read a few reads later also counts as a successor of the order-1 state. Counts age
//! with a half-life, applied lazily when a state is touched, so changed traffic is learned.
//! Each state keeps at most `2 * top_k` successors, strongest first (so ranking needs no
//! sort); a new successor replaces the weakest one.
//!
//! The tables never meet: [`Model::key_half`] and [`Model::template_half`] give the key
//! levels and the template level as two models that learn apart (the replay runs them on
//! two threads); the proxy keeps one.
//!
//! Pure and synchronous: the caller supplies the clock (seconds, any epoch), so the replay
//! simulator runs on trace time and the proxy on wall time.

use std::mem::size_of;
use std::sync::Arc;

use bytes::Bytes;

use super::table::Table;
use super::template::{hash_bytes, KeyBuf, ParsedKey, Transition, TransitionRef};
use crate::short_bytes::ShortBytes;
use smallvec::SmallVec;

/// A key-level successor, compared by its hash.
#[derive(Clone)]
struct Succ {
    hash: u64,
    key: ShortBytes,
}

/// A successor is identified by a 64-bit hash, so a state finds it without building it.
trait Id {
    fn id(&self) -> u64;
}

impl Id for Succ {
    fn id(&self) -> u64 {
        self.hash
    }
}

impl Id for Transition {
    fn id(&self) -> u64 {
        self.hash
    }
}

impl Succ {
    fn of(k: &ParsedKey) -> Succ {
        Succ {
            hash: k.hash,
            key: ShortBytes::new(&k.key),
        }
    }
}

/// The order-2 context of `prev` then `last` (their key hashes).
fn pair(prev: u64, last: u64) -> u64 {
    prev.rotate_left(23) ^ last.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// 1, or 2 for an order-2 context that falls back to order 1.
    pub order: u8,
    /// Learn and predict at template level too.
    pub templates: bool,
    /// Aged observations a state needs before it is trusted.
    pub min_support: f64,
    /// Seconds after which a count weighs half; 0 disables aging.
    pub half_life_secs: f64,
    /// Successors kept per state for prediction (twice as many are tracked).
    pub top_k: usize,
    /// States per table.
    pub max_states: usize,
    /// Predictions below this probability are not made.
    pub min_probability: f64,
    /// Predictions to fetch per access at most.
    pub max_predictions: usize,
    /// Predictions at or above this probability (and below `min_probability`, or beyond
    /// `max_predictions`) are offered for touching only: kept warm if already cached, never
    /// fetched, so they cost no origin load. Above `min_probability` it has no effect.
    pub touch_probability: f64,
    /// A key read within this many reads after another counts as its successor (1: only
    /// the next read, a plain Markov chain). Pages load their parts in any order; a window
    /// learns "the page is followed by these" rather than one arbitrary order.
    pub lookahead: usize,
}

impl ModelConfig {
    /// Predictions per access at most, to fetch or to touch.
    pub fn most_predictions(&self) -> usize {
        self.max_predictions + self.top_k
    }

    /// The lowest probability a prediction is made at.
    fn floor(&self) -> f64 {
        self.min_probability.min(self.touch_probability)
    }
}

/// The model's defaults, in one place: the `[tracking]` settings and `prescient replay`'s
/// flags start from these (the replay leaves aging off: see its `--half-life`). Aging: 2 h
/// keeps the origin load on the NASA trace under 1.3x (0.7725 at 1.256x; 1 h: 0.7712 at
/// 1.303x); docs/tracking.md has the trade-off.
pub const DEFAULTS: ModelConfig = ModelConfig {
    order: 2,
    templates: true,
    min_support: 2.0,
    half_life_secs: 7200.0,
    top_k: 4,
    max_states: 100_000,
    min_probability: 0.35,
    max_predictions: 2,
    touch_probability: 0.05,
    lookahead: 2,
};

impl Default for ModelConfig {
    fn default() -> Self {
        DEFAULTS
    }
}

/// Which table a prediction came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Order2,
    Key,
    Template,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Order2 => "order2",
            Level::Key => "key",
            Level::Template => "template",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub key: Bytes,
    /// `hash_bytes(key)`: predictions are compared by it.
    pub hash: u64,
    pub probability: f64,
    pub level: Level,
    /// Worth fetching (at or above `min_probability`, within `max_predictions`); otherwise
    /// only worth keeping warm if cached.
    pub fetch: bool,
}

/// A prediction as [`Model::predict_each`] hands it out: the key is borrowed.
pub struct Candidate<'a> {
    pub key: &'a [u8],
    pub hash: u64,
    pub probability: f64,
    pub level: Level,
    pub fetch: bool,
}

impl Candidate<'_> {
    pub fn to_prediction(&self) -> Prediction {
        Prediction {
            key: Bytes::copy_from_slice(self.key),
            hash: self.hash,
            probability: self.probability,
            level: self.level,
            fetch: self.fetch,
        }
    }
}

/// What [`Model::predict_each_then`] has handed out so far: each key once (and not the key
/// just read), at most `most`; the first `max_predictions` at `min_probability` or above
/// marked to fetch.
struct Offers<'c, F> {
    cfg: &'c ModelConfig,
    /// The hash of the key just read.
    last: u64,
    most: usize,
    made: SmallVec<[u64; 8]>,
    fetches: usize,
    emit: F,
}

impl<F: FnMut(&Candidate<'_>)> Offers<'_, F> {
    /// Inlined into each level's loop: a call per candidate cost more than the work.
    #[inline(always)]
    fn offer(&mut self, key: &[u8], hash: u64, probability: f64, level: Level) {
        if self.made.len() < self.most && hash != self.last && !self.made.contains(&hash) {
            let cfg = self.cfg;
            let fetch = probability >= cfg.min_probability && self.fetches < cfg.max_predictions;
            self.fetches += usize::from(fetch);
            self.made.push(hash);
            (self.emit)(&Candidate {
                key,
                hash,
                probability,
                level,
                fetch,
            });
        }
    }
}

/// A successor and its aged count.
struct Entry<S> {
    succ: S,
    count: f32,
    /// Where the successor arrived among the state's successors (a newcomer that replaces
    /// the weakest takes its place): equal counts rank by it, first arrived first.
    arrival: u32,
}

impl<S> Entry<S> {
    /// Whether `self` ranks before `other`: a higher count, or an equal one that arrived
    /// first.
    fn before(&self, other: &Entry<S>) -> bool {
        self.count > other.count || (self.count == other.count && self.arrival < other.arrival)
    }
}

/// One state's successor counts.
struct Counts<S> {
    /// Observations ever made in this state (not aged): the support that earns trust.
    seen: u32,
    /// Aged observations: the denominator of probabilities.
    total: f32,
    stamp: f64,
    /// Strongest first (see [`Entry::before`]), so ranking needs no sort. Inline while the
    /// state has one successor, as most states of a large trace do: no allocation of its
    /// own.
    succ: SmallVec<[Entry<S>; 1]>,
}

impl<S> Default for Counts<S> {
    fn default() -> Self {
        Counts::new(0.0)
    }
}

impl<S> Counts<S> {
    fn new(now: f64) -> Self {
        Counts {
            seen: 0,
            total: 0.0,
            stamp: now,
            succ: SmallVec::new(),
        }
    }
}

impl<S: Id> Counts<S> {
    #[inline]
    fn decay(&self, now: f64, half_life: f64) -> f32 {
        if half_life > 0.0 && now > self.stamp {
            0.5f64.powf((now - self.stamp) / half_life) as f32
        } else {
            1.0
        }
    }

    /// One more occurrence of the state, followed by the successor `id` (`make` builds it
    /// if the state does not know it yet).
    fn add(&mut self, id: u64, make: impl FnOnce() -> S, now: f64, cfg: &ModelConfig) {
        self.age(now, cfg);
        self.total += 1.0;
        self.seen = self.seen.saturating_add(1);
        self.follow(id, make, cfg);
    }

    /// The successor `id` followed an occurrence already counted (within the lookahead
    /// window).
    fn add_later(&mut self, id: u64, make: impl FnOnce() -> S, now: f64, cfg: &ModelConfig) {
        self.age(now, cfg);
        self.follow(id, make, cfg);
    }

    #[inline]
    fn age(&mut self, now: f64, cfg: &ModelConfig) {
        let f = self.decay(now, cfg.half_life_secs);
        if f < 1.0 {
            self.scale(f);
        }
        self.stamp = self.stamp.max(now);
    }

    /// Ages the counts by `f` < 1 (apart from [`Counts::age`], which runs at every count and
    /// is inlined, so its common case, nothing to age, costs a comparison).
    #[inline(never)]
    fn scale(&mut self, f: f32) {
        self.total *= f;
        self.succ.iter_mut().for_each(|e| e.count *= f);
        // Scaling keeps the order, but two counts may round to one: rank those by arrival
        // again.
        self.succ
            .sort_by(|a, b| b.count.total_cmp(&a.count).then(a.arrival.cmp(&b.arrival)));
    }

    fn follow(&mut self, id: u64, make: impl FnOnce() -> S, cfg: &ModelConfig) {
        let succ = &mut self.succ;
        let mut i = if let Some(i) = succ.iter().position(|e| e.succ.id() == id) {
            succ[i].count += 1.0;
            i
        } else if succ.len() < 2 * cfg.top_k {
            let arrival = succ.len() as u32;
            succ.push(Entry {
                succ: make(),
                count: 1.0,
                arrival,
            });
            succ.len() - 1
        } else {
            // The weakest: the lowest count (the last), the first arrived of equals. It
            // gives way only to a newcomer as strong as it (a count of 1 at most).
            let Some(low) = succ.last().map(|e| e.count).filter(|&c| c <= 1.0) else {
                return;
            };
            let mut i = succ.len() - 1;
            while i > 0 && succ[i - 1].count == low {
                i -= 1;
            }
            succ[i] = Entry {
                succ: make(),
                count: 1.0,
                arrival: succ[i].arrival,
            };
            i
        };
        // Its count grew: it can only move up.
        while i > 0 && succ[i].before(&succ[i - 1]) {
            succ.swap(i, i - 1);
            i -= 1;
        }
    }

    /// Hands `each` the top-k successors with their probabilities, most likely first
    /// (equal probabilities by arrival), if the state has the support to be trusted.
    fn ranked(&self, now: f64, cfg: &ModelConfig, mut each: impl FnMut(&S, f64)) {
        let f = self.decay(now, cfg.half_life_secs);
        let total = f64::from(self.total * f);
        if f64::from(self.seen) < cfg.min_support || total <= 0.0 {
            return;
        }
        let floor = cfg.floor();
        let p = |e: &Entry<S>| (f64::from(e.count * f) / total).min(1.0);
        let succ = &self.succ[..];
        let Some(first) = succ.first() else { return };
        let mut left = cfg.top_k;
        let (mut i, mut pi) = (0, p(first));
        // Successors are by count, so probabilities only fall along them; different counts
        // can give one probability (counts of a lookahead window clamp at 1), and such a
        // run ranks by arrival, as equal counts do. Each probability is computed once: the
        // one that ends a run starts the next.
        while left > 0 && i < succ.len() {
            if pi < floor {
                return;
            }
            let mut end = i + 1;
            let mut next = pi;
            while end < succ.len() {
                next = p(&succ[end]);
                if next != pi {
                    break;
                }
                end += 1;
            }
            let run = end - i;
            if run == 1 {
                each(&succ[i].succ, pi);
                left -= 1;
            } else {
                let group = &succ[i..i + run];
                let mut after = None;
                for _ in 0..run.min(left) {
                    let Some(next) = group
                        .iter()
                        .filter(|e| after.is_none_or(|a| e.arrival > a))
                        .min_by_key(|e| e.arrival)
                    else {
                        break;
                    };
                    each(&next.succ, pi);
                    after = Some(next.arrival);
                    left -= 1;
                }
            }
            (i, pi) = (end, next);
        }
    }
}

/// Sizes of the model, for metrics and `PROXY TRACKING STATS`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelSize {
    pub order2_states: usize,
    pub key_states: usize,
    pub template_states: usize,
    /// Estimated heap bytes held by all states.
    pub bytes: usize,
}

impl ModelSize {
    pub fn states(&self) -> usize {
        self.order2_states + self.key_states + self.template_states
    }
}

impl std::ops::Add for ModelSize {
    type Output = ModelSize;

    /// The size of a model in parts (see [`Model::key_half`]).
    fn add(self, o: ModelSize) -> ModelSize {
        ModelSize {
            order2_states: self.order2_states + o.order2_states,
            key_states: self.key_states + o.key_states,
            template_states: self.template_states + o.template_states,
            bytes: self.bytes + o.bytes,
        }
    }
}

pub struct Model {
    cfg: ModelConfig,
    /// Learns the key levels (order 2 and key): false for the template half of a split
    /// model.
    key_levels: bool,
    order2: Table<Counts<Succ>>,
    key: Table<Counts<Succ>>,
    template: Table<Counts<Transition>>,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Model {
        Model::with_capacity(cfg, 0)
    }

    /// A model whose key-level tables have room for the states of `states` keys (at most
    /// `max_states`) from the start: the replay knows how many distinct keys its trace
    /// holds, and growing a table of millions of bytes moves every state it holds.
    pub fn with_capacity(cfg: ModelConfig, states: usize) -> Model {
        let n = states.min(cfg.max_states);
        // Pairs of keys outnumber keys (3.4 to 1 on the NASA trace, 1.7 on cloudPhysics).
        let pairs = states.saturating_mul(2).min(cfg.max_states);
        Model {
            key_levels: true,
            order2: Table::with_capacity(if cfg.order >= 2 { pairs } else { 0 }),
            key: Table::with_capacity(n),
            template: Table::with_capacity(0),
            cfg,
        }
    }

    /// The key levels (order 2 and key, sized as [`Model::with_capacity`]) of one model in
    /// two halves that learn apart, the other being [`Model::template_half`]. Their tables
    /// never meet, so each half, fed the same reads, learns what the one model would; the
    /// key half's [`Model::predict_each_then`], given the template half's predictions,
    /// predicts what the one model would. The replay runs the halves on two threads, each
    /// building its own (a large half's tables take milliseconds to lay out).
    pub fn key_half(cfg: ModelConfig, states: usize) -> Model {
        Model::with_capacity(
            ModelConfig {
                templates: false,
                ..cfg
            },
            states,
        )
    }

    /// The template level of a model in two halves (see [`Model::key_half`]). With
    /// templates off it learns nothing.
    pub fn template_half(cfg: ModelConfig) -> Model {
        Model {
            key_levels: false,
            ..Model::with_capacity(cfg, 0)
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// How many of a context's last reads `observe` and `predict` use.
    pub fn history_len(&self) -> usize {
        self.cfg.lookahead.max(usize::from(self.cfg.order)).max(1)
    }

    /// Starts loading the states a read of the key hashed `key` after one hashed `prev`
    /// (by the same context) will use, so that [`Model::observe`] and
    /// [`Model::predict_each`] find them in the CPU cache: for a caller that knows its
    /// reads ahead, as the replay does. Changes nothing.
    pub fn warm_cache(&self, prev: Option<u64>, key: u64) {
        self.key.warm_cache(key);
        if let Some(prev) = prev.filter(|_| self.cfg.order >= 2) {
            self.order2.warm_cache(pair(prev, key));
        }
    }

    /// Records that `next` was read after `history` (oldest first; the last element is the
    /// key read just before).
    pub fn observe(&mut self, history: &[Arc<ParsedKey>], next: &ParsedKey, now: f64) {
        let Some(last) = history.last() else { return };
        if self.key_levels {
            self.observe_keys(history, last, next, now);
        }
        let cfg = &self.cfg;
        // A literal template's state would repeat the key's (see the module doc).
        if cfg.templates && last.template.literal().is_none() {
            let t = TransitionRef::between(last, next);
            self.template
                .touch(last.template.hash, cfg.max_states, || Counts::new(now))
                .add(t.hash, || t.keep(), now, cfg);
        }
    }

    fn observe_keys(
        &mut self,
        history: &[Arc<ParsedKey>],
        last: &ParsedKey,
        next: &ParsedKey,
        now: f64,
    ) {
        let cfg = &self.cfg;
        if cfg.order >= 2 && history.len() >= 2 {
            let ctx = pair(history[history.len() - 2].hash, last.hash);
            self.order2
                .touch(ctx, cfg.max_states, || Counts::new(now))
                .add(next.hash, || Succ::of(next), now, cfg);
        }
        self.key
            .touch(last.hash, cfg.max_states, || Counts::new(now))
            .add(next.hash, || Succ::of(next), now, cfg);
        // Earlier reads within the window: `next` followed them too, unless it was already
        // read in between (counted once per occurrence, so probabilities stay <= 1).
        let n = history.len();
        for j in 2..=cfg.lookahead.min(n) {
            let earlier = &history[n - j];
            if earlier.hash == next.hash || history[n - j + 1..].iter().any(|h| h.hash == next.hash)
            {
                continue;
            }
            if let Some(c) = self.key.get_mut(earlier.hash) {
                c.add_later(next.hash, || Succ::of(next), now, cfg);
            }
        }
    }

    /// Keys likely to be read after `history`, by level (order 2, key, template), each
    /// level's most likely first; at most `max_predictions` marked to fetch.
    pub fn predict(&self, history: &[Arc<ParsedKey>], now: f64) -> Vec<Prediction> {
        let mut out = Vec::new();
        self.predict_each(history, now, |c| out.push(c.to_prediction()));
        out
    }

    /// [`Model::predict`] without copies: each candidate is handed to `emit` in order, its
    /// key borrowed from the model (or built, for a template-level prediction), so a caller
    /// that needs only hashes (scoring, the replay's cache) clones no key.
    pub fn predict_each(
        &self,
        history: &[Arc<ParsedKey>],
        now: f64,
        emit: impl FnMut(&Candidate<'_>),
    ) {
        self.predict_each_then(history, now, [], emit);
    }

    /// [`Model::predict_each`], its candidates followed by `then` (the template half's
    /// predictions after the same reads: see [`Model::key_half`]) under the same limits: a
    /// key offered already or beyond the limit is dropped, and whether to fetch is decided
    /// here.
    pub fn predict_each_then<'t>(
        &self,
        history: &[Arc<ParsedKey>],
        now: f64,
        then: impl IntoIterator<Item = Candidate<'t>>,
        emit: impl FnMut(&Candidate<'_>),
    ) {
        let Some(last) = history.last() else {
            return;
        };
        let cfg = &self.cfg;
        let mut offers = Offers {
            cfg,
            last: last.hash,
            most: cfg.most_predictions(),
            made: SmallVec::new(),
            fetches: 0,
            emit,
        };
        if self.key_levels && cfg.order >= 2 && history.len() >= 2 {
            let ctx = pair(history[history.len() - 2].hash, last.hash);
            if let Some(c) = self.order2.peek(ctx) {
                c.ranked(now, cfg, |s, p| {
                    offers.offer(&s.key, s.hash, p, Level::Order2)
                });
            }
        }
        if let Some(c) = self.key.peek(last.hash).filter(|_| self.key_levels) {
            c.ranked(now, cfg, |s, p| offers.offer(&s.key, s.hash, p, Level::Key));
        }
        if cfg.templates && last.template.literal().is_none() {
            if let Some(c) = self.template.peek(last.template.hash) {
                let mut k = KeyBuf::new();
                c.ranked(now, cfg, |t, p| {
                    if let Some((key, hash)) = t.template.literal() {
                        offers.offer(key, hash, p, Level::Template);
                    } else if t.apply_into(last, &mut k).is_some() {
                        offers.offer(&k, hash_bytes(&k), p, Level::Template);
                    }
                });
            }
        }
        for c in then {
            offers.offer(c.key, c.hash, c.probability, c.level);
        }
    }

    pub fn size(&self) -> ModelSize {
        // The slot arrays of the tables in use (free slots included), then what states hold
        // on the heap.
        let cfg = &self.cfg;
        let order2 = self.key_levels && cfg.order >= 2;
        let key_slots = usize::from(order2) * self.order2.slots()
            + usize::from(self.key_levels) * self.key.slots();
        let mut bytes = key_slots * Table::<Counts<Succ>>::SLOT_BYTES
            + usize::from(cfg.templates)
                * self.template.slots()
                * Table::<Counts<Transition>>::SLOT_BYTES;
        // Successors beyond the first live on the heap.
        let spilled = |n: usize, size: usize| if n > 1 { n * size } else { 0 };
        let succ = |c: &Counts<Succ>| {
            spilled(c.succ.capacity(), size_of::<Entry<Succ>>())
                + c.succ
                    .iter()
                    .map(|e| e.succ.key.heap_bytes())
                    .sum::<usize>()
        };
        for c in self.order2.iter().chain(self.key.iter()) {
            bytes += succ(c);
        }
        for c in self.template.iter() {
            bytes += spilled(c.succ.capacity(), size_of::<Entry<Transition>>());
            bytes += c
                .succ
                .iter()
                .map(|e| e.succ.heap_bytes() + e.succ.template.heap_bytes())
                .sum::<usize>();
        }
        ModelSize {
            order2_states: self.order2.len(),
            key_states: self.key.len(),
            template_states: self.template.len(),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::template::Templater;

    fn key(k: &str) -> Arc<ParsedKey> {
        Arc::new(Templater::default().parse(Bytes::copy_from_slice(k.as_bytes())))
    }

    fn cfg() -> ModelConfig {
        ModelConfig {
            order: 1,
            templates: false,
            min_support: 2.0,
            half_life_secs: 0.0,
            top_k: 4,
            max_states: 1000,
            min_probability: 0.2,
            max_predictions: 3,
            touch_probability: 1.0,
            lookahead: 1,
        }
    }

    /// Feeds `seq` as one context's consecutive reads at time `now`.
    fn feed(m: &mut Model, seq: &[&str], now: f64) {
        let keys: Vec<_> = seq.iter().map(|k| key(k)).collect();
        for i in 1..keys.len() {
            let from = i.saturating_sub(2);
            m.observe(&keys[from..i], &keys[i], now);
        }
    }

    fn predicted(m: &Model, history: &[&str], now: f64) -> Vec<(String, Level)> {
        let h: Vec<_> = history.iter().map(|k| key(k)).collect();
        m.predict(&h, now)
            .into_iter()
            .map(|p| (String::from_utf8(p.key.to_vec()).unwrap(), p.level))
            .collect()
    }

    #[test]
    fn order1_learns_the_frequent_successor_and_needs_support() {
        let mut m = Model::new(cfg());
        feed(&mut m, &["a", "b"], 0.0);
        assert!(
            predicted(&m, &["a"], 0.0).is_empty(),
            "one observation is too few"
        );
        feed(&mut m, &["a", "b", "x", "a", "c", "y", "a", "b"], 0.0);
        let p = m.predict(&[key("a")], 0.0);
        assert_eq!(p[0].key, "b");
        assert!((p[0].probability - 0.75).abs() < 1e-6);
        assert_eq!(p[1].key, "c");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn order2_context_decides_and_falls_back_to_order1() {
        let mut m = Model::new(ModelConfig { order: 2, ..cfg() });
        // After x,a comes b; after y,a comes c.
        for _ in 0..3 {
            feed(&mut m, &["x", "a", "b"], 0.0);
            feed(&mut m, &["y", "a", "c"], 0.0);
        }
        assert_eq!(
            predicted(&m, &["x", "a"], 0.0)[0],
            ("b".into(), Level::Order2)
        );
        assert_eq!(
            predicted(&m, &["y", "a"], 0.0)[0],
            ("c".into(), Level::Order2)
        );
        // An unseen order-2 context falls back to order 1, which has both.
        let p = predicted(&m, &["z", "a"], 0.0);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|(_, l)| *l == Level::Key));
    }

    #[test]
    fn template_level_predicts_unseen_keys() {
        let mut m = Model::new(ModelConfig {
            templates: true,
            ..cfg()
        });
        for id in [1, 2, 3] {
            feed(
                &mut m,
                &[&format!("user:{id}:profile"), &format!("user:{id}:orders")],
                0.0,
            );
            feed(
                &mut m,
                &[&format!("feed:page:{id}"), &format!("feed:page:{}", id + 1)],
                0.0,
            );
        }
        assert_eq!(
            predicted(&m, &["user:77:profile"], 0.0),
            vec![("user:77:orders".into(), Level::Template)]
        );
        assert_eq!(
            predicted(&m, &["feed:page:41"], 0.0),
            vec![("feed:page:42".into(), Level::Template)]
        );
    }

    #[test]
    fn literal_templates_keep_no_state() {
        let mut m = Model::new(ModelConfig {
            templates: true,
            ..cfg()
        });
        for id in [1, 2, 3] {
            feed(&mut m, &["/index.html", "/logo.gif"], 0.0);
            feed(&mut m, &[&format!("user:{id}:profile"), "home"], 0.0);
        }
        // From a literal key only the key level speaks: its template would repeat it.
        assert_eq!(
            predicted(&m, &["/index.html"], 0.0),
            vec![("/logo.gif".into(), Level::Key)]
        );
        // A template with a placeholder learns, its literal successors included.
        assert_eq!(
            predicted(&m, &["user:9:profile"], 0.0),
            vec![("home".into(), Level::Template)]
        );
        let size = m.size();
        assert_eq!((size.key_states, size.template_states), (4, 1));
    }

    /// After 20 reads of a->old at t=0 and 5 of a->new at t=100, what follows a at t=100.
    fn after_old_then_new(half_life_secs: f64) -> String {
        let mut m = Model::new(ModelConfig {
            half_life_secs,
            max_predictions: 1,
            ..cfg()
        });
        for _ in 0..20 {
            feed(&mut m, &["a", "old"], 0.0);
        }
        for _ in 0..5 {
            feed(&mut m, &["a", "new"], 100.0);
        }
        predicted(&m, &["a"], 100.0).remove(0).0
    }

    #[test]
    fn aging_lets_new_traffic_win() {
        assert_eq!(after_old_then_new(10.0), "new");
        // Without aging the old successor still dominates.
        assert_eq!(after_old_then_new(0.0), "old");
        // Aging changes probabilities, not trust: support counts every observation.
        let mut m = Model::new(ModelConfig {
            half_life_secs: 10.0,
            ..cfg()
        });
        feed(&mut m, &["a", "b", "a", "b"], 0.0);
        assert_eq!(predicted(&m, &["a"], 1000.0)[0].0, "b");
    }

    /// What `Counts` ranked before successors were kept in order: successors in arrival
    /// order (a newcomer takes the weakest's place), ranked by a stable sort.
    #[derive(Default)]
    struct Reference {
        succ: Vec<(u64, f32)>,
        total: f32,
        seen: u32,
        stamp: f64,
    }

    impl Reference {
        fn add(&mut self, id: u64, now: f64, later: bool, cfg: &ModelConfig) {
            let f = decay(self.stamp, now, cfg.half_life_secs);
            if f < 1.0 {
                self.total *= f;
                self.succ.iter_mut().for_each(|e| e.1 *= f);
            }
            self.stamp = self.stamp.max(now);
            if !later {
                self.total += 1.0;
                self.seen += 1;
            }
            if let Some(e) = self.succ.iter_mut().find(|e| e.0 == id) {
                e.1 += 1.0;
            } else if self.succ.len() < 2 * cfg.top_k {
                self.succ.push((id, 1.0));
            } else if let Some(weakest) = self
                .succ
                .iter_mut()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .filter(|e| e.1 <= 1.0)
            {
                *weakest = (id, 1.0);
            }
        }

        fn ranked(&self, now: f64, cfg: &ModelConfig) -> Vec<(u64, f64)> {
            let f = decay(self.stamp, now, cfg.half_life_secs);
            let total = f64::from(self.total * f);
            if f64::from(self.seen) < cfg.min_support || total <= 0.0 {
                return Vec::new();
            }
            let mut v: Vec<(u64, f64)> = self
                .succ
                .iter()
                .map(|&(id, c)| (id, (f64::from(c * f) / total).min(1.0)))
                .filter(|e| e.1 >= cfg.floor())
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.truncate(cfg.top_k);
            v
        }
    }

    fn decay(stamp: f64, now: f64, half_life: f64) -> f32 {
        if half_life > 0.0 && now > stamp {
            0.5f64.powf((now - stamp) / half_life) as f32
        } else {
            1.0
        }
    }

    impl Id for u64 {
        fn id(&self) -> u64 {
            *self
        }
    }

    proptest::proptest! {
        /// Successors kept strongest first rank exactly as sorting them at each prediction
        /// did: the replay's figures must not move with the data structure.
        #[test]
        fn successors_kept_in_order_rank_as_a_stable_sort_does(
            top_k in 1usize..5,
            half_life in proptest::sample::select(vec![0.0, 5.0]),
            steps in proptest::collection::vec((0u64..12, 0u8..4, proptest::bool::ANY), 1..200),
        ) {
            let cfg = ModelConfig {
                top_k,
                half_life_secs: half_life,
                min_support: 1.0,
                touch_probability: 0.05,
                min_probability: 0.3,
                ..cfg()
            };
            let (mut counts, mut reference) = (Counts::<u64>::new(0.0), Reference::default());
            let mut now = 0.0;
            for (id, dt, later) in steps {
                now += f64::from(dt);
                if later {
                    counts.add_later(id, || id, now, &cfg);
                } else {
                    counts.add(id, || id, now, &cfg);
                }
                reference.add(id, now, later, &cfg);
                let mut ranked = Vec::new();
                counts.ranked(now, &cfg, |&id, p| ranked.push((id, p)));
                proptest::prop_assert_eq!(ranked, reference.ranked(now, &cfg));
            }
        }
    }

    #[test]
    fn states_and_successors_are_bounded() {
        let mut m = Model::new(ModelConfig {
            max_states: 10,
            top_k: 2,
            ..cfg()
        });
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let seq: Vec<&str> = keys.iter().map(String::as_str).collect();
        feed(&mut m, &seq, 0.0);
        for i in 0..100 {
            feed(&mut m, &["hub", &format!("s{i}")], 0.0);
        }
        let size = m.size();
        assert_eq!(size.key_states, 10);
        assert!(m.key.iter().all(|c| c.succ.len() <= 4));
        assert!(size.bytes > 0 && size.bytes < 10 * 1024, "{size:?}");
        // The most recently updated states survive.
        assert!(m.key.peek(key("hub").hash).is_some());
    }
}
