//! The client's way to the upstream: its own connection to the embedded store, or, on Redis,
//! a slot of the shared connections and, while it holds connection state, a dedicated one.
//! What differs between the two backends is decided here and in `forward.rs`, once per
//! command; the rest of the session asks the link what it can do.

use bytes::Bytes;

use crate::upstream::memory::MemConn;
use crate::upstream::{Dedicated, Upstream};

// One per client, inside its session: the store's variant is kept inline, not boxed, to save
// a pointer chase on every command.
#[allow(clippy::large_enum_variant)]
pub(super) enum Link {
    Redis(RedisLink),
    Memory(MemConn),
}

pub(super) struct RedisLink {
    /// The shared connection slot, kept for the client's life (its commands stay in order).
    pub(super) slot: usize,
    pub(super) dedicated: Option<Dedicated>,
    /// Whether the last command sent went on the dedicated connection.
    pub(super) on_dedicated: bool,
}

impl Link {
    pub(super) fn new(up: &Upstream) -> Link {
        match up.memory() {
            Some(store) => Link::Memory(MemConn::new(store.clone())),
            None => Link::Redis(RedisLink {
                slot: up.assign(),
                dedicated: None,
                on_dedicated: false,
            }),
        }
    }

    /// The embedded store: client ids are prescient's own, there is no upstream connection.
    pub(super) fn embedded(&self) -> bool {
        matches!(self, Link::Memory(_))
    }

    /// Whether byte-level commands read envelopes themselves (the embedded store does; Redis
    /// runs them on whatever bytes are stored).
    pub(super) fn reads_envelopes(&self) -> bool {
        self.embedded()
    }

    /// The commands from here to the next call arrived together (one read).
    pub(super) fn begin_batch(&mut self) {
        if let Link::Memory(m) = self {
            m.begin_batch();
        }
    }

    /// Whether the client holds state that may legitimately sit idle.
    pub(super) fn holds_state(&self) -> bool {
        match self {
            Link::Redis(r) => r.dedicated.is_some(),
            Link::Memory(m) => m.subscribed(),
        }
    }

    /// The next RESP3 push (client-side caching invalidations, or the store's messages).
    ///
    /// # Cancel safety
    /// Cancel safe: it only receives from a channel.
    pub(super) async fn next_push(&mut self) -> Bytes {
        let rx = match self {
            Link::Memory(m) => Some(&mut m.pushes),
            Link::Redis(r) => r.dedicated.as_mut().map(|d| &mut d.pushes),
        };
        match rx {
            Some(rx) => match rx.recv().await {
                Some(p) => p,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}
