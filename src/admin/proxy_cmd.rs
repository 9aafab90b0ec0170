//! `PROXY <subcommand>`: the operator's view of the proxy from redis-cli.

use super::View;
use crate::command::Command;
use crate::compression::Compressor;
use crate::config::TUNABLE_KEYS;
use crate::protocol::Value;

const HELP: &[&str] = &[
    "PROXY <subcommand> [<arg> ...]. Subcommands are:",
    "HELP",
    "    Print this help.",
    "INFO",
    "    The proxy's INFO section (also part of INFO).",
    "STATS",
    "    Counters: commands, clients, bytes, upstream state and errors, compression.",
    "CONFIG GET <pattern>",
    "    Effective settings whose key (section.key) matches the glob pattern.",
    "CONFIG SET <key> <value>",
    "    Change a tunable while running.",
    "CONFIG RELOAD",
    "    Read the configuration again (as SIGHUP): apply what can change live, list what needs a restart.",
    "CLIENTS",
    "    Connected clients, one per line, as CLIENT LIST prints them.",
    "KEYINFO <key>",
    "    How a string value is stored: enveloped or raw, codec, original and stored size.",
    "PREDICT <key> [<count>]",
    "    What the model expects to be read after <key>: key, probability, level, and (with",
    "    prefetching set up) what the scheduler would do with it now, and why.",
    "PREFETCH ON|OFF|CLEAR|STATS",
    "    Switch prefetching, empty its queue, or show its counters (issued, useful, late, wasted).",
    "PREFETCH CONFIG GET <pattern> | CONFIG SET <key> <value>",
    "    Prefetch settings while running: min_confidence, top_n, rate, workers, hour_weights, ...",
    "WARMUP [<n>] [<min_confidence>]",
    "    Queue the hot keys and their likely successors that are not cached; answers the keys.",
    "TRACKING STATS",
    "    The tracker: reads, drops, contexts, prediction accuracy, model size.",
    "ORIGIN",
    "    The origin's routes (read-through), with requests, coalesced misses, 404s remembered.",
    "HOTKEYS [<count>]",
    "    The keys read most in the hot-key window, with estimated reads.",
    "JOBS",
    "    Background jobs: schedule, last run, outcome, runs, failures; leadership; warming tasks.",
    "JOB RUN <id>",
    "    Run a job now (ids as JOBS lists them: warm:<task>, counters, expiry:<set>, cleanup).",
    "WARM <task> | WARM USER <id>",
    "    Run a warming task now; or fill every {user}/{uid} route for a user (once per 5 min).",
    "INVALIDATE TAG <tag>",
    "    Remove every key filled with the tag; answers how many were removed.",
    "EXPIRING <set> <seconds>",
    "    Members of an expiry set due within <seconds>: member and expires_at.",
];

/// PROXY KEYINFO's answer, from the reply to a GET of the stored bytes.
pub fn keyinfo(c: &Compressor, key: &[u8], stored: &[u8]) -> Value {
    use crate::compression::envelope;
    let v = match crate::compression::reply::bulk_payload(stored) {
        Some(Some(v)) => v,
        Some(None) => return Value::err("ERR no such key"),
        None if stored.starts_with(b"-WRONGTYPE") => {
            return Value::err(
                "ERR PROXY KEYINFO describes string values; this key holds another type",
            )
        }
        None => {
            return Value::err(
                String::from_utf8_lossy(stored)
                    .trim_start_matches('-')
                    .trim_end()
                    .to_string(),
            )
        }
    };
    let mut lines = vec![format!("key:{}", String::from_utf8_lossy(key))];
    match envelope::header(v) {
        Ok(None) => {
            lines.push("enveloped:no".into());
            lines.push(format!("original_bytes:{}", v.len()));
            lines.push(format!("stored_bytes:{}", v.len()));
        }
        Ok(Some(h)) => {
            lines.push("enveloped:yes".into());
            lines.push(format!("codec:{}", h.codec.name()));
            if h.dict != 0 {
                lines.push(format!("dictionary:{:08x}", h.dict));
            }
            lines.push(format!("original_bytes:{}", h.original_len));
            lines.push(format!("stored_bytes:{}", v.len()));
            let ratio = v.len() as f64 / h.original_len.max(1) as f64;
            lines.push(format!("ratio:{ratio:.4}"));
            let check = match c.decode(v) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            lines.push(format!("integrity:{check}"));
        }
        Err(e) => {
            lines.push("enveloped:yes".into());
            lines.push(format!("stored_bytes:{}", v.len()));
            lines.push(format!("integrity:{e}"));
        }
    }
    Value::Verbatim(lines.iter().map(|l| format!("{l}\n")).collect())
}

pub fn handle(sh: &View, cmd: &Command) -> Value {
    let sub = cmd.subcommand().unwrap_or_default();
    let argc = cmd.args.len();
    match (sub.as_str(), argc) {
        ("help", 2) => Value::Array(HELP.iter().map(|l| Value::Simple(l.to_string())).collect()),
        ("info", 2) => Value::Verbatim(crate::admin::info::proxy_section(sh)),
        ("stats", 2) => Value::Verbatim(stats(sh)),
        ("clients", 2) => Value::Verbatim(sh.clients.list()),
        ("predict", 3 | 4) => match count_arg(cmd, 3, 10) {
            Ok(k) => predict(sh, &cmd.args[2], k),
            Err(e) => e,
        },
        ("tracking", 3) if cmd.arg_is(2, "stats") => Value::Verbatim(
            sh.tracker
                .stats()
                .iter()
                .map(|(k, v)| format!("tracking_{k}:{v}\r\n"))
                .collect(),
        ),
        ("hotkeys", 2 | 3) => match count_arg(cmd, 2, 10) {
            Ok(n) => Value::Array(
                sh.tracker
                    .hotkeys(n)
                    .into_iter()
                    .map(|(k, reads)| Value::Array(vec![Value::Bulk(k), Value::Int(reads as i64)]))
                    .collect(),
            ),
            Err(e) => e,
        },
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

/// The optional count at `at`: a positive integer, `default` when absent.
fn count_arg(cmd: &Command, at: usize, default: usize) -> Result<usize, Value> {
    count(cmd.args.get(at), default)
}

/// An optional count argument: an integer from 1 to 10000, `default` when absent.
pub(crate) fn count(arg: Option<&bytes::Bytes>, default: usize) -> Result<usize, Value> {
    match arg {
        None => Ok(default),
        Some(a) => std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| Value::err("ERR count must be an integer between 1 and 10000")),
    }
}

fn predict(sh: &View, key: &bytes::Bytes, k: usize) -> Value {
    if !sh.tracker.enabled() {
        return Value::err("ERR tracking is disabled (tracking.enabled)");
    }
    Value::Array(
        sh.tracker
            .predict(key, k)
            .into_iter()
            .map(|p| {
                Value::Array(vec![
                    Value::Bulk(p.key),
                    Value::text(format!("{:.4}", p.probability)),
                    Value::text(p.level.name()),
                    Value::text(if p.fetch { "fetch" } else { "touch" }),
                ])
            })
            .collect(),
    )
}

fn config_get(sh: &View, pattern: &str) -> Value {
    let mut flat = sh
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for k in TUNABLE_KEYS {
        if let Some(v) = sh.tunables.get(k) {
            flat.insert(k.to_string(), v.to_string());
        }
    }
    Value::Map(
        flat.into_iter()
            .filter(|(k, _)| crate::redis_glob::matches_key(pattern.as_bytes(), k.as_bytes()))
            .map(|(k, v)| (Value::text(k), Value::text(v.trim_matches('"'))))
            .collect(),
    )
}

pub(crate) fn stats(sh: &View) -> String {
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
            if sh.health.is_up() { "up" } else { "down" }
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
    lines.push(format!(
        "upstream_busy_waits:{}",
        m.upstream_busy_waits.get()
    ));
    for (k, v) in sh.compressor.report() {
        lines.push(format!("{k}:{v}"));
    }
    for (k, v) in sh.tracker.stats() {
        lines.push(format!("tracking_{k}:{v}"));
    }
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}
