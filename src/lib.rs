//! prescient: a Redis-protocol proxy.
//!
//! ```text
//! client socket
//!   -> connection  (connection/): the client loop; requests parsed once (protocol/request.rs)
//!                  into a Command (command/), pipelined. wire.rs is the socket and the reply
//!                  queue: it writes each reply once it and those before it are ready, also
//!                  while a command waits its turn at a barrier (a route change, a tunnel,
//!                  RESET); it knows replies' effects only through its Owner trait. Pub/sub and
//!                  MONITOR become a tunnel (connection/tunnel.rs).
//!   -> session     (session/): AUTH/HELLO (auth.rs), CLIENT (client.rs; KILL, UNBLOCK and
//!                  TRACKING REDIRECT by prescient ids: peers.rs), INFO/PROXY answered by the
//!                  admin face; the deny list and user rules (command/acl.rs); a pure routing
//!                  decision (routing.rs) sends each command to the shared or a dedicated
//!                  connection, a tunnel, or out of band (SCRIPT KILL and the like)
//!   -> compression (compression/, session/compress.rs, session/rmw.rs): values encoded into
//!                  envelopes on writes, replies decoded by shape, byte-level commands on
//!                  original bytes (on Redis as a read-modify-write); zstd dictionaries
//!                  learned per key template, kept in the store (compression/dict.rs); a
//!                  request of 1 MiB or a compressed reply of 64 KiB is coded on tokio's
//!                  blocking pool
//!   -> upstream    (upstream/): one Upstream over a Backend. Redis (redis://): shared
//!                  pipelined connections, or a dedicated one while the client holds state,
//!                  their replies framed as they arrive (protocol/reply.rs: ReplyScanner).
//!                  Memory (memory://, the default): the embedded store (upstream/memory/),
//!                  each client's MemConn runs commands in-process. upstream::Internal is the
//!                  proxy's own client of either, for work no application asked for.
//!   -> origin      (origin/): a GET of a routed key that the store lacks goes back to
//!                  waiting in the reply queue while one fill per key (single-flight) fetches
//!                  the route's URL and stores the body through upstream::Internal
//!   <- replies travel back in order
//! shared.rs: what every connection shares, built once from the settings; reload.rs replaces
//!                  parts of it (SIGHUP, PROXY CONFIG RELOAD) and bumps a generation number
//!                  at which sessions take their new copies.
//! admin/: INFO, PROXY and the HTTP server (/metrics, /health, /ready, the API under /api/v1
//!                  with its OpenAPI document), through admin::View: no settings, secrets
//!                  masked, the store reached only through upstream::Internal.
//! cli.rs: the operator verbs (status, stats, warmup, prefetch-config, jobs) over the API.
//! demo.rs: `prescient demo`, prefetching off and on against a built-in origin and users.
//! tracking/: the session hands every key read to the tracker (try_send on a bounded channel);
//!                  a learner thread keeps contexts, the Markov model, hot keys, the access log.
//! prefetch/: the learner's predictions (try_send) -> scheduler (threshold, EXISTS pipeline,
//!                  TOUCH) -> bounded priority queue -> workers (token bucket, back-off) ->
//!                  origin fills as background work; every prefetch accounted (ledger.rs), the
//!                  fetch threshold moved by a feedback controller (controller.rs) that the
//!                  replay runs too; PROXY PREFETCH, PREDICT, WARMUP.
//! jobs/: background jobs on the same upstream and origin: a runner (PROXY JOBS), a lease with
//!                  a fencing token for the singletons (warming, cleanup), the count sync
//!                  (the session rewrites a counter's INCR into the COUNT script, which records
//!                  its delta), expiry sweeps (atomic claims), tags and PROXY INVALIDATE TAG.
//!                  upstream/scripts.rs: the proxy's own atomic operations, Lua on Redis and
//!                  native on the embedded store (upstream/memory/scripts.rs).
//! replay/: `prescient replay`, the what-if simulator on the same model.
//! metrics.rs: one Metrics struct. clients.rs: the client registry (CLIENT LIST, KILL).
//! alloc.rs: the global allocator (mimalloc, asked for alignment only where needed).
//! fuzz_checks.rs: the properties the fuzz targets (fuzz/) check, shared with cargo test.
//! ```
pub mod admin;
pub mod alloc;
pub mod cli;
pub mod clients;
pub mod command;
pub mod compression;
pub mod config;
pub mod connection;
pub mod demo;
pub mod fuzz_checks;
pub mod jobs;
pub mod metrics;
pub mod origin;
pub mod prefetch;
pub mod protocol;
pub mod redis_glob;
pub mod reload;
pub mod replay;
pub mod server;
pub(crate) mod session;
pub mod shared;
pub mod short_bytes;
pub mod tracking;
pub mod upstream;
pub(crate) mod wire;
