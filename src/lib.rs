//! prescient: a Redis-protocol proxy.
//!
//! ```text
//! client socket
//!   -> connection  (connection/): requests parsed once (protocol/request.rs) into a Command
//!                  (command/), pipelined; the reply queue (connection/wire.rs) writes each
//!                  reply once it and those before it are ready, also while a command waits
//!                  its turn at a barrier (a route change, a tunnel, RESET)
//!   -> session     (session/): AUTH/HELLO (auth.rs), CLIENT (client.rs; KILL, UNBLOCK and
//!                  TRACKING REDIRECT by prescient ids: peers.rs), INFO/PROXY answered here;
//!                  the deny list and user rules (command/acl.rs); a pure routing decision
//!                  (routing.rs) sends each command to the shared or a dedicated connection,
//!                  a tunnel, or out of band (SCRIPT KILL and the like)
//!   -> compression (compression/, session/compress.rs): values encoded into envelopes on
//!                  writes, replies decoded by shape, byte-level commands on original bytes;
//!                  a request of 1 MiB or a compressed reply of 64 KiB is coded on tokio's
//!                  blocking pool, off the event loop
//!   -> upstream    (upstream/): for redis://, shared pipelined connections, or a dedicated one
//!                  while the client holds state, their replies framed as they arrive
//!                  (protocol/reply.rs: ReplyScanner); pub/sub and MONITOR become a tunnel
//!                  (tunnel.rs). For memory:// (the default), the embedded store
//!                  (upstream/memory/): each client's MemConn runs commands in-process.
//!   <- replies travel back in order
//! tracking/: the session hands every key read to the tracker (try_send on a bounded channel);
//!                  a learner thread keeps contexts, the Markov model, hot keys, the access log.
//! replay/: `prescient replay`, the what-if simulator on the same model.
//! metrics.rs: one Metrics struct; admin/http.rs serves /metrics, /health, /ready.
//! alloc.rs: the global allocator (mimalloc, asked for alignment only where needed).
//! fuzz_checks.rs: the properties the fuzz targets (fuzz/) check, shared with cargo test.
//! ```
pub mod admin;
pub mod alloc;
pub mod clients;
pub mod command;
pub mod compression;
pub mod config;
pub mod connection;
pub mod fuzz_checks;
pub mod metrics;
pub mod protocol;
pub mod redis_glob;
pub mod replay;
pub mod server;
pub(crate) mod session;
pub mod short_bytes;
pub mod tracking;
pub mod upstream;
pub(crate) mod wire;
