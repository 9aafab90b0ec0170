//! `PROXY <subcommand>`: the operator's view of the proxy from redis-cli.

use crate::command::Command;
use crate::config::TUNABLE_KEYS;
use crate::protocol::Value;
use crate::server::Shared;

const HELP: &[&str] = &[
    "PROXY <subcommand> [<arg> ...]. Subcommands are:",
    "HELP",
    "    Print this help.",
    "INFO",
    "    The proxy's INFO section (also part of INFO).",
    "STATS",
    "    Counters: commands, clients, bytes, upstream state and errors.",
    "CONFIG GET <pattern>",
    "    Effective settings whose key (section.key) matches the glob pattern.",
    "CONFIG SET <key> <value>",
    "    Change a tunable while running.",
    "CLIENTS",
    "    Connected clients, one per line, as CLIENT LIST prints them.",
];

pub fn handle(sh: &Shared, cmd: &Command) -> Value {
    let sub = cmd.subcommand().unwrap_or_default();
    let argc = cmd.args.len();
    match (sub.as_str(), argc) {
        ("help", 2) => Value::Array(HELP.iter().map(|l| Value::Simple(l.to_string())).collect()),
        ("info", 2) => Value::Verbatim(crate::admin::info::proxy_section(sh)),
        ("stats", 2) => Value::Verbatim(stats(sh)),
        ("clients", 2) => Value::Verbatim(
            sh.clients
                .lines()
                .iter()
                .map(|l| format!("{l}\n"))
                .collect(),
        ),
        ("config", 4) if cmd.arg_is(2, "get") => {
            config_get(sh, &String::from_utf8_lossy(&cmd.args[3]))
        }
        ("config", 5) if cmd.arg_is(2, "set") => {
            let key = String::from_utf8_lossy(&cmd.args[3]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&cmd.args[4]);
            match sh.tunables.set(&key, &value) {
                Ok(()) => {
                    tracing::info!(key, %value, "tunable changed by PROXY CONFIG SET");
                    Value::ok()
                }
                Err(e) => Value::err(format!("ERR {e}")),
            }
        }
        _ => Value::err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'PROXY {}'. Try PROXY HELP.",
            sub.to_uppercase()
        )),
    }
}

fn config_get(sh: &Shared, pattern: &str) -> Value {
    let Ok(pat) = glob::Pattern::new(pattern) else {
        return Value::err("ERR invalid pattern");
    };
    let mut flat = sh.settings.flatten();
    for k in TUNABLE_KEYS {
        if let Some(v) = sh.tunables.get(k) {
            flat.insert(k.to_string(), v.to_string());
        }
    }
    Value::Map(
        flat.into_iter()
            .filter(|(k, _)| pat.matches(k))
            .map(|(k, v)| (Value::text(k), Value::text(v.trim_matches('"'))))
            .collect(),
    )
}

fn stats(sh: &Shared) -> String {
    use crate::metrics::{CLOSE_REASONS, UPSTREAM_ERRORS};
    let m = &sh.metrics;
    let mut lines = vec![
        format!("uptime_seconds:{}", sh.started.elapsed().as_secs()),
        format!("commands_processed:{}", m.commands_processed()),
        format!("clients_connected:{}", m.clients_connected.get()),
        format!("clients_accepted:{}", m.clients_accepted.get()),
        format!("clients_pinned:{}", m.pinned_clients.get()),
        format!("client_bytes_in:{}", m.bytes_in.get()),
        format!("client_bytes_out:{}", m.bytes_out.get()),
        format!(
            "upstream_state:{}",
            if sh.upstream.connector.health.is_up() {
                "up"
            } else {
                "down"
            }
        ),
    ];
    for kind in ["shared", "dedicated", "tunnel"] {
        let n = m.upstream_connections.with_label_values(&[kind]).get();
        lines.push(format!("upstream_connections_{kind}:{n}"));
    }
    for e in UPSTREAM_ERRORS {
        lines.push(format!("upstream_errors_{e}:{}", m.upstream_errors(e)));
    }
    for r in CLOSE_REASONS {
        lines.push(format!("clients_closed_{r}:{}", m.clients_closed(r)));
    }
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}
