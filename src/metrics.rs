//! The one `Metrics` struct: every stage updates it, the admin HTTP server renders its registry.
//! Labels come from closed sets only (command names from the command table, fixed outcome and
//! class names), never from keys or client input. Per-command series are resolved once at
//! start, so the request path touches no label map.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::sync::OnceLock;

use crate::command::{self, CommandSpec};

/// How a command ended, as counted in `prescient_commands_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    /// The upstream (or the proxy) answered with an error reply.
    Error = 1,
    /// Refused by the proxy: denied command, missing authentication, bad arity.
    Refused = 2,
    /// The upstream could not be reached or did not answer in time.
    UpstreamFailed = 3,
}

const OUTCOMES: [&str; 4] = ["ok", "error", "refused", "upstream_failed"];

/// Latency classes for `prescient_command_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read = 0,
    Write = 1,
    Admin = 2,
    Blocking = 3,
    PubSub = 4,
    Transaction = 5,
    Local = 6,
    Other = 7,
}

const CLASSES: [&str; 8] = [
    "read",
    "write",
    "admin",
    "blocking",
    "pubsub",
    "transaction",
    "local",
    "other",
];

/// Why a client connection was closed by the proxy.
pub const CLOSE_REASONS: [&str; 6] = [
    "protocol_error",
    "output_buffer_limit",
    "idle_timeout",
    "shutdown",
    "max_clients",
    "killed",
];

/// Upstream error kinds.
pub const UPSTREAM_ERRORS: [&str; 4] = ["connect", "io", "timeout", "protocol"];

pub struct Metrics {
    pub registry: Registry,
    commands_vec: IntCounterVec,
    /// Per table row and outcome, resolved on first use so /metrics lists only commands seen.
    commands: Vec<[OnceLock<IntCounter>; 4]>,
    unknown_commands: [OnceLock<IntCounter>; 4],
    durations: Vec<Histogram>,
    pub clients_connected: IntGauge,
    pub clients_accepted: IntCounter,
    clients_closed: IntCounterVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub upstream_connections: IntGaugeVec,
    upstream_errors: IntCounterVec,
    pub upstream_up: IntGauge,
    pub upstream_busy_waits: IntCounter,
    pub pinned_clients: IntGauge,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(v.clone())).expect("unique metric");
    v
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let cmds = counter_vec(
            &r,
            "prescient_commands_total",
            "Commands processed, by command and outcome.",
            &["command", "outcome"],
        );
        let commands = command::all()
            .iter()
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect();
        let unknown_commands = std::array::from_fn(|_| OnceLock::new());
        let hist = HistogramVec::new(
            HistogramOpts::new(
                "prescient_command_duration_seconds",
                "Time from a request's arrival to its reply being queued for the client, by class.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["class"],
        )
        .expect("valid metric");
        r.register(Box::new(hist.clone())).expect("unique metric");
        let durations = CLASSES
            .iter()
            .map(|c| hist.with_label_values(&[c]))
            .collect();
        let upstream_connections = IntGaugeVec::new(
            Opts::new(
                "prescient_upstream_connections",
                "Open upstream connections, by kind (shared pool or dedicated to one client).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        r.register(Box::new(upstream_connections.clone()))
            .expect("unique metric");
        Metrics {
            commands_vec: cmds,
            commands,
            unknown_commands,
            durations,
            clients_connected: gauge(&r, "prescient_clients_connected", "Connected clients."),
            clients_accepted: counter(
                &r,
                "prescient_clients_accepted_total",
                "Client connections accepted.",
            ),
            clients_closed: counter_vec(
                &r,
                "prescient_clients_closed_total",
                "Client connections closed by the proxy, by reason.",
                &["reason"],
            ),
            bytes_in: counter(
                &r,
                "prescient_client_bytes_received_total",
                "Bytes read from clients.",
            ),
            bytes_out: counter(
                &r,
                "prescient_client_bytes_sent_total",
                "Bytes written to clients.",
            ),
            upstream_connections,
            upstream_errors: counter_vec(
                &r,
                "prescient_upstream_errors_total",
                "Upstream failures, by kind.",
                &["kind"],
            ),
            upstream_up: gauge(
                &r,
                "prescient_upstream_up",
                "1 when the upstream answers, 0 while it is unreachable.",
            ),
            upstream_busy_waits: counter(
                &r,
                "prescient_upstream_busy_waits_total",
                "Overdue commands waited for rather than failed, because a script or KEYS held the upstream.",
            ),
            pinned_clients: gauge(
                &r,
                "prescient_clients_pinned",
                "Clients holding a dedicated upstream connection (transaction, pub/sub, blocking, db).",
            ),
            registry: r,
        }
    }

    fn command_counter(&self, spec: Option<&'static CommandSpec>, outcome: Outcome) -> &IntCounter {
        let (row, name) = match spec {
            Some(s) => (&self.commands[command::index_of(s)], s.name),
            None => (&self.unknown_commands, "unknown"),
        };
        row[outcome as usize].get_or_init(|| {
            self.commands_vec
                .with_label_values(&[name, OUTCOMES[outcome as usize]])
        })
    }

    pub fn command(&self, spec: Option<&'static CommandSpec>, outcome: Outcome) {
        self.command_counter(spec, outcome).inc();
    }

    pub fn command_count(&self, name: &str, outcome: Outcome) -> u64 {
        self.command_counter(command::lookup(name.as_bytes()), outcome)
            .get()
    }

    /// Commands processed so far, all outcomes.
    pub fn commands_processed(&self) -> u64 {
        self.commands
            .iter()
            .chain(std::iter::once(&self.unknown_commands))
            .flat_map(|r| r.iter())
            .filter_map(|c| c.get().map(|c| c.get()))
            .sum()
    }

    /// One reply delivered after `secs`: counted by outcome (an `Ok` that is an error reply
    /// counts as `Error`) and timed by class.
    pub fn reply(
        &self,
        spec: Option<&'static CommandSpec>,
        outcome: Outcome,
        raw: &[u8],
        secs: f64,
    ) {
        self.record(spec, Self::outcome_of(outcome, raw), secs);
    }

    /// The outcome to count for a reply: an error reply to a command that ran is an error.
    pub fn outcome_of(outcome: Outcome, raw: &[u8]) -> Outcome {
        if outcome == Outcome::Ok && crate::protocol::reply::is_error(raw) {
            Outcome::Error
        } else {
            outcome
        }
    }

    /// [`Metrics::reply`] with the outcome already resolved.
    pub fn record(&self, spec: Option<&'static CommandSpec>, outcome: Outcome, secs: f64) {
        self.command(spec, outcome);
        self.observe(class_of(spec), secs);
    }

    /// The request log's line for one command (`server.request_log`).
    pub fn log_request(
        client: u64,
        spec: Option<&'static CommandSpec>,
        outcome: Outcome,
        secs: f64,
        bytes: Option<usize>,
    ) {
        tracing::info!(
            target: "prescient::request",
            client,
            command = spec.map_or("unknown", |c| c.name),
            outcome = ?outcome,
            micros = (secs * 1e6) as u64,
            bytes,
        );
    }

    pub fn observe(&self, class: Class, secs: f64) {
        self.durations[class as usize].observe(secs);
    }

    pub fn client_closed(&self, reason: &str) {
        debug_assert!(CLOSE_REASONS.contains(&reason));
        self.clients_closed.with_label_values(&[reason]).inc();
    }

    pub fn clients_closed(&self, reason: &str) -> u64 {
        self.clients_closed.with_label_values(&[reason]).get()
    }

    pub fn upstream_error(&self, kind: &str) {
        debug_assert!(UPSTREAM_ERRORS.contains(&kind));
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    pub fn upstream_errors(&self, kind: &str) -> u64 {
        self.upstream_errors.with_label_values(&[kind]).get()
    }

    /// The registry in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The latency class of a command.
pub fn class_of(spec: Option<&'static CommandSpec>) -> Class {
    use crate::command::{flag, State};
    let Some(s) = spec else { return Class::Other };
    match s.state {
        State::Transaction => return Class::Transaction,
        State::PubSub | State::Monitor => return Class::PubSub,
        State::Local | State::Client | State::Reset | State::Select => return Class::Local,
        _ => {}
    }
    if s.has(flag::BLOCKING) {
        Class::Blocking
    } else if s.has(flag::ADMIN) {
        Class::Admin
    } else if s.has(flag::WRITE) {
        Class::Write
    } else if s.has(flag::READ) {
        Class::Read
    } else {
        Class::Other
    }
}

/// Registers a collector with `r` and hands it back (each name once per registry).
pub fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_unique_and_prefixed() {
        let m = Metrics::new();
        m.command(command::lookup(b"get"), Outcome::Ok);
        m.observe(Class::Read, 0.001);
        m.client_closed("idle_timeout");
        m.upstream_error("io");
        let mut names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("prescient_")),
            "{names:?}"
        );
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        assert_eq!(m.command_count("get", Outcome::Ok), 1);
        assert_eq!(m.commands_processed(), 1);
        assert!(m
            .render()
            .contains("prescient_commands_total{command=\"get\",outcome=\"ok\"} 1"));
    }
}
