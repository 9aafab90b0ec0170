//! prescient: a Redis-protocol proxy.
pub mod command;
pub mod protocol;
