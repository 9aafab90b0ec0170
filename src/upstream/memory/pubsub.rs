//! Pub/sub for the embedded store: who is subscribed to what, and delivery of messages to
//! each subscriber's push channel, encoded for its protocol version. A subscriber whose
//! channel is full loses the message (counted), rather than stalling the publisher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Out;
use crate::protocol::Proto;

#[derive(Clone)]
struct Sub {
    proto: Proto,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Maps>,
    pub dropped: AtomicU64,
}

#[derive(Default)]
struct Maps {
    channels: HashMap<Bytes, HashMap<u64, Sub>>,
    patterns: HashMap<Bytes, HashMap<u64, Sub>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(
        &self,
        pattern: bool,
        name: &Bytes,
        id: u64,
        proto: Proto,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let mut m = self.lock();
        let map = if pattern {
            &mut m.patterns
        } else {
            &mut m.channels
        };
        map.entry(name.clone()).or_default().insert(
            id,
            Sub {
                proto,
                tx: tx.clone(),
            },
        );
    }

    pub fn unsubscribe(&self, pattern: bool, name: &[u8], id: u64) {
        let mut m = self.lock();
        let map = if pattern {
            &mut m.patterns
        } else {
            &mut m.channels
        };
        if let Some(subs) = map.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Delivers a message; returns how many subscribers it was addressed to.
    pub fn publish(&self, channel: &Bytes, msg: &Bytes) -> i64 {
        let m = self.lock();
        let mut n = 0;
        if let Some(subs) = m.channels.get(channel) {
            for s in subs.values() {
                let mut o = Out::new(s.proto);
                o.push(3);
                o.bulk(b"message");
                o.bulk(channel);
                o.bulk(msg);
                self.deliver(s, o);
                n += 1;
            }
        }
        for (p, subs) in &m.patterns {
            if !crate::redis_glob::matches(p, channel) {
                continue;
            }
            for s in subs.values() {
                let mut o = Out::new(s.proto);
                o.push(4);
                o.bulk(b"pmessage");
                o.bulk(p);
                o.bulk(channel);
                o.bulk(msg);
                self.deliver(s, o);
                n += 1;
            }
        }
        n
    }

    fn deliver(&self, s: &Sub, o: Out) {
        if s.tx.try_send(o.buf.freeze()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Active channels matching `pattern` (all when None).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let m = self.lock();
        m.channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::redis_glob::matches(p, c)))
            .cloned()
            .collect()
    }

    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.lock().channels.get(channel).map_or(0, |s| s.len())
    }

    pub fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }
}
