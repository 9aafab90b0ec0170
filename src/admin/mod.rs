//! Administration: the client registry, PROXY commands, the INFO section and
//! the HTTP endpoints.
pub mod clients;
pub mod http;
pub mod info;
pub mod proxy_cmd;
