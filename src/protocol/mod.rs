//! The wire protocol: client requests in (`request`), replies out (`reply`).

pub mod reply;
pub mod request;

pub use reply::{Proto, Value};
pub use request::{Limits, ProtocolError, RequestParser};
