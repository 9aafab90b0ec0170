//! Access tracking: key templates (template.rs), the Markov model (model.rs), the heavy-hitter
//! sketch behind `PROXY HOTKEYS` (hotkeys.rs), per-context histories and self-scoring
//! (context.rs), and the live tracker the proxy feeds through a bounded channel (tracker.rs).
//!
//! The replay simulator (src/replay/) uses the same model and contexts.

pub mod accesslog;
pub mod context;
pub mod hotkeys;
pub mod model;
pub mod settings;
pub(crate) mod table;
pub mod template;
pub mod tracker;

use crate::command::{flag, CommandSpec};

/// Whether a command's keys count as reads for the model: it reads and does not write.
pub fn is_tracked_read(spec: &CommandSpec) -> bool {
    spec.has(flag::READ) && !spec.has(flag::WRITE)
}
