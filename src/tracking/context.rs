//! Per-context access histories, and the model's score against what each context reads next.
//!
//! A context is whatever groups one client's reads (a connection, a client name, a user id
//! captured from the key; a host in a trace). Each keeps its last few keys (as many as the
//! model uses: its order or lookahead) and the predictions made after them. A context idle
//! for longer than the stale gap starts afresh, and the proxy's table holds at most
//! `max_contexts` (least recently active dropped), so neither a client that never returns
//! nor a flood of contexts grows memory. The replay's table is unbounded: a trace's clients
//! are known and finite.
//!
//! A read of the key just read (HGET then HMGET on one hash) is not a transition: it is
//! neither learned nor scored.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use lru::LruCache;
use smallvec::SmallVec;

use super::model::{Candidate, Model};
use super::template::ParsedKey;

/// How well the model predicted each context's next read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Transitions seen (reads of a key other than the context's previous one).
    pub transitions: u64,
    /// Transitions that had a prediction before them.
    pub predicted: u64,
    /// ... whose first prediction was the key read.
    pub top1: u64,
    /// ... where any prediction was the key read.
    pub topk: u64,
}

impl Score {
    /// Top-1 accuracy over the transitions that had a prediction.
    pub fn top1_ratio(&self) -> f64 {
        ratio(self.top1, self.predicted)
    }

    pub fn topk_ratio(&self) -> f64 {
        ratio(self.topk, self.predicted)
    }
}

pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

struct Context {
    history: Vec<Arc<ParsedKey>>,
    last_seen: f64,
    /// The hashes of the predictions to fetch made after the last read, most likely first:
    /// only those are scored (a touch-only prediction is not a claim). Inline up to the
    /// default two, so a new context allocates nothing for them.
    predicted: SmallVec<[u64; 2]>,
}

/// Where the contexts are kept.
enum Table<C: Hash + Eq> {
    /// At most `max` contexts, the least recently active dropped first (the proxy's).
    Lru {
        table: LruCache<C, Context>,
        max: usize,
    },
    /// Unbounded, so no order is kept (the replay's: a trace's clients are finite, and an
    /// LRU's list costs more than the lookup).
    Map(HashMap<C, Context, foldhash::fast::FixedState>),
}

pub struct Contexts<C: Hash + Eq> {
    table: Table<C>,
    stale_gap_secs: f64,
    pub score: Score,
}

/// What one access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The key repeats the context's previous read: nothing learned or predicted.
    Repeat,
    /// A transition: learned, and the predictions after it handed out.
    Moved,
}

impl<C: Hash + Eq> Contexts<C> {
    pub fn new(max_contexts: usize, stale_gap_secs: f64) -> Self {
        Contexts {
            table: Table::Lru {
                table: LruCache::unbounded(),
                max: max_contexts.max(1),
            },
            stale_gap_secs,
            score: Score::default(),
        }
    }

    /// Contexts without a bound: for a finite set of them (a trace's clients).
    pub fn unbounded(stale_gap_secs: f64) -> Self {
        Contexts {
            table: Table::Map(HashMap::default()),
            stale_gap_secs,
            score: Score::default(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.table {
            Table::Lru { table, .. } => table.len(),
            Table::Map(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every context starts afresh, as after an idle gap: when the tracker's learning sample
    /// widens, contexts that were left out kept a history from before, and their next read
    /// must not be learned as following it.
    pub fn restart_all(&mut self) {
        let restart = |c: &mut Context| {
            c.history.clear();
            c.predicted.clear();
        };
        match &mut self.table {
            Table::Lru { table, .. } => table.iter_mut().for_each(|(_, c)| restart(c)),
            Table::Map(t) => t.values_mut().for_each(restart),
        }
    }

    /// Records that `ctx` read `key` at `now`: scores the predictions made after its
    /// previous read, teaches the model, and predicts what follows, handing each prediction
    /// to `on_prediction`.
    pub fn access(
        &mut self,
        model: &mut Model,
        ctx: C,
        key: Arc<ParsedKey>,
        now: f64,
        on_prediction: impl FnMut(&Candidate<'_>),
    ) -> Step {
        self.access_then(model, ctx, key, now, [], on_prediction)
    }

    /// [`Contexts::access`] for the key half of a split model (see
    /// [`Model::key_half`]), given what the template half predicted after this read: its
    /// predictions end the model's.
    pub fn access_then<'t>(
        &mut self,
        model: &mut Model,
        ctx: C,
        key: Arc<ParsedKey>,
        now: f64,
        then: impl IntoIterator<Item = Candidate<'t>>,
        mut on_prediction: impl FnMut(&Candidate<'_>),
    ) -> Step {
        let new = || Context {
            history: Vec::with_capacity(2),
            last_seen: now,
            predicted: SmallVec::new(),
        };
        let c = match &mut self.table {
            Table::Lru { table, max } => {
                if !table.contains(&ctx) && table.len() >= *max {
                    table.pop_lru();
                }
                table.get_or_insert_mut(ctx, new)
            }
            Table::Map(t) => t.entry(ctx).or_insert_with(new),
        };
        if now - c.last_seen > self.stale_gap_secs {
            c.history.clear();
            c.predicted.clear();
        }
        c.last_seen = now;
        if c.history.last().is_some_and(|k| k.hash == key.hash) {
            return Step::Repeat;
        }
        if !c.history.is_empty() {
            self.score.transitions += 1;
        }
        if let Some(&first) = c.predicted.first() {
            self.score.predicted += 1;
            if first == key.hash {
                self.score.top1 += 1;
            }
            if c.predicted.contains(&key.hash) {
                self.score.topk += 1;
            }
        }
        model.observe(&c.history, &key, now);
        if c.history.len() >= model.history_len() {
            c.history.remove(0);
        }
        c.history.push(key);
        c.predicted.clear();
        let predicted = &mut c.predicted;
        model.predict_each_then(&c.history, now, then, |p| {
            if p.fetch {
                predicted.push(p.hash);
            }
            on_prediction(p);
        });
        Step::Moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::model::{Level, ModelConfig};
    use crate::tracking::template::Templater;
    use bytes::Bytes;

    fn key(k: &str) -> Arc<ParsedKey> {
        Arc::new(Templater::default().parse(Bytes::copy_from_slice(k.as_bytes())))
    }

    fn model() -> Model {
        Model::new(ModelConfig {
            order: 1,
            templates: false,
            min_support: 1.0,
            half_life_secs: 0.0,
            ..ModelConfig::default()
        })
    }

    #[test]
    fn contexts_are_learned_apart_and_scored() {
        let mut m = model();
        let mut cx = Contexts::new(10, 60.0);
        // Two clients interleave a->b; per context the model sees a->b, never a->a or b->a.
        for _ in 0..3 {
            for client in [1, 2] {
                cx.access(&mut m, client, key("a"), 0.0, |_| {});
            }
            for client in [1, 2] {
                cx.access(&mut m, client, key("b"), 0.0, |_| {});
            }
        }
        let p = m.predict(&[key("a")], 0.0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "b");
        assert!((p[0].probability - 1.0).abs() < 1e-9);
        // After the first round each a->b was predicted.
        assert_eq!(cx.score.transitions, 10);
        assert!(cx.score.top1 >= 4, "{:?}", cx.score);
    }

    #[test]
    fn repeats_are_not_transitions_and_stale_contexts_restart() {
        for mut cx in [Contexts::new(10, 60.0), Contexts::unbounded(60.0)] {
            repeats_and_stale_gaps(&mut cx);
        }
    }

    fn repeats_and_stale_gaps(cx: &mut Contexts<u32>) {
        let mut m = model();
        cx.access(&mut m, 1, key("a"), 0.0, |_| {});
        assert_eq!(cx.access(&mut m, 1, key("a"), 1.0, |_| {}), Step::Repeat);
        cx.access(&mut m, 1, key("b"), 2.0, |_| {});
        // After an idle gap, b is not learned as following a.
        cx.access(&mut m, 1, key("c"), 1000.0, |_| {});
        assert!(m.predict(&[key("b")], 1000.0).is_empty());
        assert_eq!(m.predict(&[key("a")], 1000.0)[0].key, "b");
    }

    #[test]
    fn restarted_contexts_learn_no_transition_across_the_restart() {
        for mut cx in [Contexts::new(10, 60.0), Contexts::unbounded(60.0)] {
            let mut m = model();
            cx.access(&mut m, 1u32, key("a"), 0.0, |_| {});
            cx.restart_all();
            cx.access(&mut m, 1, key("b"), 1.0, |_| {});
            assert!(m.predict(&[key("a")], 1.0).is_empty());
            cx.access(&mut m, 1, key("c"), 2.0, |_| {});
            assert_eq!(m.predict(&[key("b")], 2.0)[0].key, "c");
        }
    }

    /// A model split in halves (the template half first, its predictions handed to the
    /// key half, as the replay's threads do) predicts and scores what the one model does.
    #[test]
    fn a_split_model_predicts_what_the_whole_model_does() {
        let cfg = ModelConfig {
            order: 2,
            templates: true,
            min_support: 1.0,
            half_life_secs: 0.0,
            lookahead: 2,
            max_predictions: 2,
            top_k: 3,
            ..ModelConfig::default()
        };
        let mut whole = Model::new(cfg.clone());
        let (mut keys, mut templates) =
            (Model::key_half(cfg.clone(), 0), Model::template_half(cfg));
        // The halves keep contexts as the replay does (unbounded), the whole as the proxy.
        let (mut cw, mut ck, mut ct) = (
            Contexts::new(10, 60.0),
            Contexts::unbounded(60.0),
            Contexts::unbounded(60.0),
        );
        let mut rng = 7u64;
        let mut predicted = 0;
        for i in 0..2000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let (client, user, page) = (rng % 4, rng % 50, (rng >> 8) % 3);
            let k = match (i + client) % 4 {
                0 => format!("user:{user}:profile"),
                1 => format!("user:{user}:orders"),
                2 => format!("feed:page:{page}"),
                _ => format!("item:{}", (rng >> 16) % 20),
            };
            let mut expected = Vec::new();
            let step = cw.access(&mut whole, client, key(&k), i as f64, |p| {
                expected.push(p.to_prediction())
            });
            let mut half = Vec::new();
            ct.access(&mut templates, client, key(&k), i as f64, |p| {
                half.push(p.to_prediction())
            });
            let then = half.iter().map(|p| Candidate {
                key: &p.key,
                hash: p.hash,
                probability: p.probability,
                level: p.level,
                fetch: p.fetch,
            });
            let mut got = Vec::new();
            let split_step = ck.access_then(&mut keys, client, key(&k), i as f64, then, |p| {
                got.push(p.to_prediction())
            });
            assert_eq!((split_step, &got), (step, &expected), "read {i}: {k}");
            predicted += usize::from(expected.iter().any(|p| p.level == Level::Template));
        }
        assert_eq!(ck.score, cw.score);
        assert!(
            predicted >= 20,
            "templates predicted after {predicted} reads"
        );
        assert_eq!(keys.size() + templates.size(), whole.size());
    }

    #[test]
    fn the_context_table_is_bounded() {
        let mut m = model();
        let mut cx = Contexts::new(5, 60.0);
        for client in 0..100 {
            cx.access(&mut m, client, key("a"), 0.0, |_| {});
        }
        assert_eq!(cx.len(), 5);
    }
}
