//! The registry of connected clients, for `CLIENT LIST`, `PROXY CLIENTS` and the INFO section.
//! Each client updates its own entry with atomics; the map is locked only on connect,
//! disconnect and listing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use crate::command::CommandSpec;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub connected: Instant,
    /// Milliseconds since `connected` of the last command.
    pub last_active_ms: AtomicU64,
    pub commands: AtomicU64,
    pub db: AtomicU32,
    pub resp: AtomicU32,
    pub pinned: AtomicBool,
    pub name: Mutex<String>,
    /// Table index of the last command (usize::MAX: unknown; past the table: none yet).
    pub last_command: AtomicUsize,
    /// Cancelled by a proxy-side `CLIENT KILL`: the connection closes.
    pub killed: CancellationToken,
    /// Redis's id for the upstream connection this client has to itself (dedicated or
    /// tunnel), -1 when it has none: `CLIENT UNBLOCK` and `CLIENT TRACKING ... REDIRECT` name
    /// clients by prescient's ids, which Redis must be given as its own.
    pub upstream_id: AtomicI64,
    /// The user it authenticated as, "default" for the default user (CLIENT LIST, CLIENT
    /// KILL USER).
    pub user: Mutex<String>,
    /// Subscribed to channels (its connection relayed to Redis in a tunnel): CLIENT KILL TYPE
    /// pubsub.
    pub subscribed: AtomicBool,
}

impl ClientEntry {
    /// Records a command arriving at `now` (`spec` None for one the table does not know).
    pub fn touch(&self, spec: Option<&'static CommandSpec>, now: Instant) {
        let ms = now.saturating_duration_since(self.connected).as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
        self.commands.fetch_add(1, Ordering::Relaxed);
        let idx = spec.map_or(usize::MAX, crate::command::index_of);
        self.last_command.store(idx, Ordering::Relaxed);
    }

    pub fn set_name(&self, name: &str) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    pub fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_user(&self, name: &str) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One line in the format of Redis's `CLIENT LIST`.
    pub fn line(&self) -> String {
        let user = self.user();
        let age = self.connected.elapsed().as_secs();
        let idle_ms = (self.connected.elapsed().as_millis() as u64)
            .saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        let flags = if self.pinned.load(Ordering::Relaxed) {
            "P"
        } else {
            "N"
        };
        let cmd = match self.last_command.load(Ordering::Relaxed) {
            usize::MAX => "unknown",
            i => crate::command::all().get(i).map_or("NULL", |c| c.name),
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr,
            self.name(),
            age,
            idle_ms / 1000,
            flags,
            self.db.load(Ordering::Relaxed),
            cmd,
            user,
            self.resp.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn register(&self, addr: SocketAddr, laddr: SocketAddr) -> Arc<ClientEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let e = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            connected: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            db: AtomicU32::new(0),
            resp: AtomicU32::new(2),
            pinned: AtomicBool::new(false),
            name: Mutex::new(String::new()),
            last_command: AtomicUsize::new(usize::MAX - 1),
            killed: CancellationToken::new(),
            upstream_id: AtomicI64::new(-1),
            user: Mutex::new("default".into()),
            subscribed: AtomicBool::new(false),
        });
        self.lock().insert(id, e.clone());
        e
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.lock().get(&id).cloned()
    }

    /// Every entry, in id order.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        self.lock().values().cloned().collect()
    }

    /// `CLIENT LIST`'s text: a line per client, each ended by a newline.
    pub fn list(&self) -> String {
        self.lock()
            .values()
            .map(|e| format!("{}\n", e.line()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientEntry>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}
