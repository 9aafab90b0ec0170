//! The `# Proxy` INFO section, and merging it into the upstream's INFO reply.

use std::fmt::Write;

use bytes::Bytes;

use super::View;
use crate::command::Command;
use crate::config::Tunables;
use crate::protocol::reply::Proto;
use crate::protocol::Value;

/// Which parts an INFO command asks for: (the upstream's sections, the proxy's section).
pub fn sections(cmd: &Command) -> (bool, bool) {
    let args: Vec<String> = cmd.args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    if args.is_empty() {
        return (true, true);
    }
    let proxy = args
        .iter()
        .any(|a| matches!(a.as_str(), "proxy" | "all" | "everything" | "default"));
    let upstream = args.iter().any(|a| a != "proxy");
    (upstream, proxy)
}

/// The proxy's section, with the `# Proxy` header, CRLF line ends as in Redis's INFO.
pub fn proxy_section(sh: &View) -> String {
    let up = sh.health.is_up();
    let version = sh.health.version();
    let mut s = String::from("# Proxy\r\n");
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(s, "{k}:{v}\r\n");
    };
    line("proxy_version", &env!("CARGO_PKG_VERSION"));
    line("proxy_uptime_in_seconds", &sh.started.elapsed().as_secs());
    line(
        "proxy_connected_clients",
        &sh.metrics.clients_connected.get(),
    );
    line(
        "proxy_max_clients",
        &Tunables::load(&sh.tunables.max_clients),
    );
    line("proxy_pinned_clients", &sh.metrics.pinned_clients.get());
    line("proxy_upstream", &sh.upstream);
    line("proxy_upstream_state", &if up { "up" } else { "down" });
    line("proxy_upstream_version", &version);
    line("proxy_upstream_pool_size", &sh.pool_size);
    line(
        "proxy_total_commands_processed",
        &sh.metrics.commands_processed(),
    );
    line(
        "proxy_total_connections_received",
        &sh.metrics.clients_accepted.get(),
    );
    line("proxy_total_net_input_bytes", &sh.metrics.bytes_in.get());
    line("proxy_total_net_output_bytes", &sh.metrics.bytes_out.get());
    s
}

/// `INFO proxy` answered without the upstream.
pub fn proxy_only(sh: &View) -> Value {
    Value::Verbatim(proxy_section(sh))
}

/// Appends the proxy section to an upstream INFO reply (a bulk or verbatim string). Any other
/// reply (an error, `+QUEUED` inside MULTI) passes unchanged.
pub fn append_proxy_section(sh: &View, raw: Bytes, proto: Proto) -> Bytes {
    let Some(text) = string_payload(&raw) else {
        return raw;
    };
    let mut text = text.to_string();
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    text.push_str(&proxy_section(sh));
    Value::Verbatim(text).encode(proto)
}

/// The text of a RESP bulk (`$`) or verbatim (`=`, with its `txt:` prefix removed) string.
fn string_payload(raw: &[u8]) -> Option<&str> {
    let kind = *raw.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let nl = raw.iter().position(|&b| b == b'\n')?;
    let len: usize = std::str::from_utf8(&raw[1..nl - 1]).ok()?.parse().ok()?;
    let body = raw.get(nl + 1..nl + 1 + len)?;
    let body = if kind == b'=' { body.get(4..)? } else { body };
    std::str::from_utf8(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(string_payload(b"$5\r\nhello\r\n"), Some("hello"));
        assert_eq!(string_payload(b"=9\r\ntxt:hello\r\n"), Some("hello"));
        assert_eq!(string_payload(b"+QUEUED\r\n"), None);
        assert_eq!(string_payload(b"$-1\r\n"), None);
    }

    #[test]
    fn which_sections() {
        let c = |a: &[&str]| sections(&Command::from_args(a.iter().map(|s| s.as_bytes().to_vec())));
        assert_eq!(c(&["INFO"]), (true, true));
        assert_eq!(c(&["INFO", "proxy"]), (false, true));
        assert_eq!(c(&["INFO", "server"]), (true, false));
        assert_eq!(c(&["INFO", "all"]), (true, true));
    }
}
