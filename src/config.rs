//! Typed settings: defaults, loading (file, then `PRESCIENT__SECTION__KEY` environment
//! variables, then command-line flags), validation once at load, and the few tunables that
//! `PROXY CONFIG SET` may change while running. Every key is documented in conf/prescient.toml.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: Server,
    pub limits: Limits,
    pub upstream: Upstream,
    pub memory: Memory,
    pub auth: Auth,
    pub compression: Compression,
    pub tracking: crate::tracking::settings::Tracking,
    pub origin: Origin,
    pub prefetch: crate::prefetch::settings::Prefetch,
    pub jobs: crate::jobs::settings::Jobs,
    pub warming: crate::jobs::settings::Warming,
    pub counters: crate::jobs::settings::Counters,
    pub expiry: crate::jobs::settings::Expiry,
}

/// The application's HTTP API, read through on misses (`[origin]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Origin {
    /// Per request, unless a route says otherwise.
    pub timeout_ms: u64,
    /// Concurrent requests per origin host.
    pub max_concurrency: u32,
    /// Consecutive failures that open a host's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before one probe request goes through (ms).
    pub breaker_cooldown_ms: u64,
    pub routes: Vec<OriginRoute>,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            timeout_ms: 2000,
            max_concurrency: 64,
            breaker_failures: 5,
            breaker_cooldown_ms: 5000,
            routes: Vec::new(),
        }
    }
}

/// One `[[origin.routes]]`: which keys, which URL, how long a fill is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginRoute {
    /// The label in metrics and PROXY ORIGIN.
    pub name: String,
    /// Key pattern: `product:{id}`; `{name*}` matches the rest of the key.
    pub key: String,
    /// URL template naming the key's placeholders: `http://127.0.0.1:8080/api/products/{id}`.
    pub url: String,
    /// Seconds a filled value is fresh (it is kept longer, for `stale` and `stale_if_error`;
    /// plus up to 10% jitter).
    pub ttl: u64,
    /// Seconds past `ttl` a value is still served, while one refresh runs in the background.
    pub stale: u64,
    /// Seconds past `ttl` a value is served while the origin fails.
    pub stale_if_error: u64,
    /// Seconds a 404 is remembered (0: not remembered).
    pub negative_ttl: u64,
    /// Largest body taken from the origin; a larger one is a failure.
    pub max_body_bytes: u64,
    /// Per request; 0: `origin.timeout_ms`.
    pub timeout_ms: u64,
    /// Headers sent with every request of the route (an API key, say). Their values are
    /// masked wherever settings are shown.
    pub headers: BTreeMap<String, String>,
    /// Optional: one URL for many keys, `{ids}` their placeholder values comma-separated,
    /// answering a JSON object keyed by id (an MGET's misses of this route use it).
    pub batch_url: String,
    /// Ids per batch request at most.
    pub batch_size: u32,
    /// Requests per second to the origin for this route at most; 0: no limit. A fill waits
    /// for its turn within its timeout.
    pub rate_limit: u32,
    /// Further tries of a failed GET (no answer, a 5xx), after 50 ms, then twice as long each
    /// time, all within the request's timeout.
    pub retries: u32,
    pub read_through: bool,
    /// Whether the prefetch workers may fill this route's keys ahead of reads ([prefetch]).
    pub prefetch: bool,
    /// What a miss gets when the origin fails: nil, or an error naming the route.
    pub on_error: OnError,
    /// `string`: the body is the value. `hash`: the body is a JSON object whose top-level
    /// fields become the hash's fields (HGET, HMGET, HGETALL read through).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Tags every key this route fills gets (placeholders filled from the key: `catalog`,
    /// `product:{id}`); `PROXY INVALIDATE TAG <tag>` removes the keys with a tag.
    pub tags: Vec<String>,
}

/// `origin.routes[].type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ValueType {
    String,
    Hash,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Hash => "hash",
        }
    }
}

impl TryFrom<String> for ValueType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        one_of(&s, &[ValueType::String, ValueType::Hash], ValueType::name)
    }
}

impl Default for OriginRoute {
    fn default() -> Self {
        OriginRoute {
            name: String::new(),
            key: String::new(),
            url: String::new(),
            ttl: 900,
            stale: 0,
            stale_if_error: 0,
            negative_ttl: 30,
            max_body_bytes: 1 << 20,
            timeout_ms: 0,
            headers: BTreeMap::new(),
            tags: Vec::new(),
            batch_url: String::new(),
            batch_size: 100,
            rate_limit: 0,
            retries: 1,
            read_through: true,
            prefetch: true,
            on_error: OnError::Nil,
            value_type: ValueType::String,
        }
    }
}

/// `origin.routes[].on_error`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OnError {
    Nil,
    Error,
}

impl OnError {
    pub fn name(self) -> &'static str {
        match self {
            OnError::Nil => "nil",
            OnError::Error => "error",
        }
    }
}

impl TryFrom<String> for OnError {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        one_of(&s, &[OnError::Nil, OnError::Error], OnError::name)
    }
}

/// Transparent value compression (`[compression]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    pub enabled: bool,
    pub codec: CodecName,
    pub level: i32,
    pub threshold_bytes: u64,
    pub min_saving_percent: u32,
    pub max_decompressed_bytes: u64,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Learn a zstd dictionary per key template from the values written (`dict.rs`).
    pub dictionaries: bool,
    /// Values sampled per template before its dictionary is trained.
    pub dictionary_samples: u32,
    /// Size of each dictionary in bytes.
    pub dictionary_bytes: u32,
    /// Dictionaries at most (they are never dropped: stored values use them).
    pub max_dictionaries: u32,
    /// The hash in the store that holds the dictionaries, shared by every prescient.
    pub dictionary_key: String,
    /// How often the store's copy of the dictionaries is checked (and a lost one written back).
    pub dictionary_check_secs: u64,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            codec: CodecName::Lz4,
            level: 0,
            threshold_bytes: 1024,
            min_saving_percent: 10,
            max_decompressed_bytes: 64 * 1024 * 1024,
            include: vec!["*".into()],
            exclude: Vec::new(),
            dictionaries: true,
            dictionary_samples: 100,
            dictionary_bytes: 16 * 1024,
            max_dictionaries: 64,
            dictionary_key: "prescient:dicts".into(),
            dictionary_check_secs: 60,
        }
    }
}

/// `compression.codec`: how new values are compressed (every stored value names its own codec,
/// so any of them reads back whatever this says).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum CodecName {
    Zlib,
    Zstd,
    Lz4,
}

impl CodecName {
    pub fn name(self) -> &'static str {
        match self {
            CodecName::Zlib => "zlib",
            CodecName::Zstd => "zstd",
            CodecName::Lz4 => "lz4",
        }
    }
}

/// `memory.maxmemory_policy`: what the embedded store evicts when `maxmemory` is reached, named
/// as Redis names its policies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum EvictionPolicy {
    #[serde(rename = "allkeys-lru")]
    AllkeysLru,
    #[serde(rename = "volatile-lru")]
    VolatileLru,
    #[serde(rename = "allkeys-random")]
    AllkeysRandom,
    #[serde(rename = "noeviction")]
    NoEviction,
}

impl EvictionPolicy {
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllkeysRandom => "allkeys-random",
            EvictionPolicy::NoEviction => "noeviction",
        }
    }
}

/// The `{name}` placeholders of a URL template, in order.
pub fn url_names(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = url;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(&rest[i + 1..i + j]);
        rest = &rest[i + j + 1..];
    }
    out
}

/// Reads a name from a closed set; the error lists the set (the loader adds the key).
pub(crate) fn one_of<T: Copy>(
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        format!("'{s}' is not one of {}", names.join(", "))
    })
}

impl TryFrom<String> for CodecName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use CodecName::*;
        one_of(&s, &[Zlib, Zstd, Lz4], CodecName::name)
    }
}

impl TryFrom<String> for EvictionPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use EvictionPolicy::*;
        let all = [AllkeysLru, VolatileLru, AllkeysRandom, NoEviction];
        one_of(&s, &all, EvictionPolicy::name)
    }
}

/// The smallest allowed `compression.threshold_bytes`: shorter values are never compressed, so
/// integers (at most 20 bytes) always stay raw and INCR and friends run natively.
pub const MIN_COMPRESSION_THRESHOLD: u64 = 32;

/// The embedded store (`upstream.url = "memory://"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Memory {
    pub maxmemory: u64,
    pub maxmemory_policy: EvictionPolicy,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            maxmemory: 1024 * 1024 * 1024,
            maxmemory_policy: EvictionPolicy::AllkeysLru,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub admin_listen: String,
    /// Bearer token for the HTTP API's changing calls (and its reads from off the machine);
    /// empty: changes refused, reads from loopback only. Masked wherever settings are shown.
    pub admin_token: String,
    pub max_clients: u64,
    pub idle_timeout_secs: u64,
    pub shutdown_timeout_ms: u64,
    pub log_level: String,
    /// "text" (for people) or "json" (one object per line, for log shippers).
    pub log_format: LogFormat,
    /// One log line per command (client, command, outcome, microseconds, reply bytes) at info
    /// under the target `prescient::request`. Tunable.
    pub request_log: bool,
    pub worker_threads: usize,
    pub deny_commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_bulk_len: u64,
    pub max_array_len: u64,
    pub max_pipeline: u64,
    pub client_output_buffer_limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    pub url: String,
    pub username: String,
    pub password: String,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub max_queued: usize,
    pub spare_dedicated: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub password: String,
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Rules applied in order: `+@all`, `+@read`, `+get`, `-@admin`, `-flushall`.
    pub commands: crate::command::acl::CommandRules,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:6380".into(),
            admin_listen: "127.0.0.1:9380".into(),
            admin_token: String::new(),
            max_clients: 10_000,
            idle_timeout_secs: 0,
            shutdown_timeout_ms: 5_000,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            request_log: false,
            worker_threads: 0,
            deny_commands: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        one_of(&s, &[LogFormat::Text, LogFormat::Json], LogFormat::name)
    }
}

/// Server-administration commands one client could use to harm a shared server.
pub const DEFAULT_DENY: &[&str] = &[
    "shutdown",
    "debug",
    "replicaof",
    "slaveof",
    "failover",
    "module",
    "sync",
    "psync",
    "save",
    "bgsave",
    "bgrewriteaof",
    "cluster",
    "acl|setuser",
    "acl|deluser",
    "acl|load",
    "acl|save",
    "config|set",
    "config|rewrite",
    "config|resetstat",
    "client|kill",
    "client|pause",
    "client|unpause",
    "script|kill",
    "function|kill",
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_pipeline: 1024,
            client_output_buffer_limit: 64 * 1024 * 1024,
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: "memory://".into(),
            username: String::new(),
            password: String::new(),
            pool_size: 1,
            connect_timeout_ms: 1_000,
            timeout_ms: 1_000,
            reconnect_min_ms: 20,
            reconnect_max_ms: 500,
            max_queued: 65_536,
            spare_dedicated: 16,
        }
    }
}

/// The common settings a command line may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub upstream: Option<String>,
}

impl Settings {
    /// Loads `file` (if any), then environment variables `PRESCIENT__SECTION__KEY`, then
    /// `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, overrides, std::env::vars())
    }

    /// As `load`, with the environment given explicitly (tests never touch the real one).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("PRESCIENT__"))
            .collect();
        let mut b = config::Config::builder();
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Load(format!("{}: no such file", f.display())));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        Self::build(b, overrides, env)
    }

    /// Settings from the text of a TOML file alone (no environment, no overrides), validated:
    /// what `check-config` does with a file, for callers that hold the text.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let b = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        Self::build(b, &Overrides::default(), Default::default())
    }

    fn build(
        mut b: config::ConfigBuilder<config::builder::DefaultState>,
        overrides: &Overrides,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        b = b.add_source(
            config::Environment::with_prefix("PRESCIENT")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.deny_commands")
                .source(Some(env)),
        );
        let set = |b: config::ConfigBuilder<_>, k: &str, v: &Option<String>| match v {
            Some(v) => b.set_override(k, v.as_str()),
            None => Ok(b),
        };
        let err = |e: config::ConfigError| ConfigError::Load(e.to_string());
        b = set(b, "server.listen", &overrides.listen).map_err(err)?;
        b = set(b, "server.admin_listen", &overrides.admin_listen).map_err(err)?;
        b = set(b, "upstream.url", &overrides.upstream).map_err(err)?;
        let s: Settings = b.build().and_then(|c| c.try_deserialize()).map_err(err)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks every value that has a valid range or form; the error names the key.
    fn validate_origin(&self) -> Result<(), ConfigError> {
        let o = &self.origin;
        if o.timeout_ms == 0 {
            return Err(invalid("origin.timeout_ms", "must be at least 1"));
        }
        if o.max_concurrency == 0 {
            return Err(invalid("origin.max_concurrency", "must be at least 1"));
        }
        if o.breaker_failures == 0 {
            return Err(invalid("origin.breaker_failures", "must be at least 1"));
        }
        if o.breaker_cooldown_ms == 0 {
            return Err(invalid("origin.breaker_cooldown_ms", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in o.routes.iter().enumerate() {
            let key = |k: &str| format!("origin.routes[{i}].{k}");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(invalid(&key("name"), "must be set and unique"));
            }
            let pattern = crate::tracking::template::KeyPattern::parse(&r.key)
                .map_err(|e| invalid(&key("key"), e))?;
            let url = url::Url::parse(&r.url.replace(['{', '}'], ""))
                .map_err(|e| invalid(&key("url"), format!("'{}' is not a URL ({e})", r.url)))?;
            if url.scheme() != "http" {
                return Err(invalid(&key("url"), "only http:// origins are supported"));
            }
            for name in url_names(&r.url) {
                if !pattern.names().any(|n| n == name) {
                    return Err(invalid(
                        &key("url"),
                        format!("{{{name}}} is not a placeholder of key '{}'", r.key),
                    ));
                }
            }
            if r.ttl == 0 {
                return Err(invalid(&key("ttl"), "must be at least 1 second"));
            }
            for t in &r.tags {
                for name in url_names(t) {
                    if !pattern.names().any(|n| n == name) {
                        return Err(invalid(
                            &key("tags"),
                            format!("{{{name}}} is not a placeholder of key '{}'", r.key),
                        ));
                    }
                }
            }
            for (h, v) in &r.headers {
                if hyper::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                    || hyper::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(invalid(
                        &key("headers"),
                        format!("'{h}' is not a valid header"),
                    ));
                }
            }
            if !r.batch_url.is_empty() {
                if pattern.names().count() != 1 {
                    return Err(invalid(
                        &key("batch_url"),
                        "needs a key pattern with exactly one placeholder (its values are the ids)",
                    ));
                }
                if url_names(&r.batch_url) != ["ids"] {
                    return Err(invalid(&key("batch_url"), "must name {ids}, and only it"));
                }
                let u = url::Url::parse(&r.batch_url.replace(['{', '}'], ""))
                    .map_err(|e| invalid(&key("batch_url"), format!("not a URL ({e})")))?;
                if u.scheme() != "http" {
                    return Err(invalid(
                        &key("batch_url"),
                        "only http:// origins are supported",
                    ));
                }
            }
            if r.value_type == ValueType::Hash {
                if !r.batch_url.is_empty() {
                    return Err(invalid(&key("batch_url"), "serves string routes only"));
                }
                if r.stale > 0 || r.stale_if_error > 0 {
                    return Err(invalid(
                        &key("stale"),
                        "hash routes expire by ttl alone (stale and stale_if_error are for string routes)",
                    ));
                }
            }
            if r.retries > 10 {
                return Err(invalid(&key("retries"), "must be 0 to 10"));
            }
            if r.batch_size == 0 {
                return Err(invalid(&key("batch_size"), "must be at least 1"));
            }
            if r.max_body_bytes == 0 || r.max_body_bytes > 512 << 20 {
                return Err(invalid(&key("max_body_bytes"), "must be 1 to 536870912"));
            }
        }
        Ok(())
    }

    fn validate_compression(&self) -> Result<(), ConfigError> {
        let c = &self.compression;
        let levels = match c.codec {
            CodecName::Zlib => 0..=9,
            CodecName::Zstd => 1..=22,
            CodecName::Lz4 => 0..=0,
        };
        if c.codec != CodecName::Lz4 && !levels.contains(&c.level) {
            return Err(invalid(
                "compression.level",
                format!(
                    "{} takes {} to {}",
                    c.codec.name(),
                    levels.start(),
                    levels.end()
                ),
            ));
        }
        if c.threshold_bytes < MIN_COMPRESSION_THRESHOLD {
            return Err(invalid(
                "compression.threshold_bytes",
                format!("must be at least {MIN_COMPRESSION_THRESHOLD}"),
            ));
        }
        if c.min_saving_percent > 99 {
            return Err(invalid("compression.min_saving_percent", "must be 0 to 99"));
        }
        if c.max_decompressed_bytes == 0 || c.max_decompressed_bytes > u32::MAX as u64 {
            return Err(invalid(
                "compression.max_decompressed_bytes",
                "must be between 1 and 4294967295",
            ));
        }
        if !(10..=100_000).contains(&c.dictionary_samples) {
            return Err(invalid(
                "compression.dictionary_samples",
                "must be 10 to 100000",
            ));
        }
        if !(1024..=1 << 20).contains(&c.dictionary_bytes) {
            return Err(invalid(
                "compression.dictionary_bytes",
                "must be 1024 to 1048576",
            ));
        }
        if !(1..=4096).contains(&c.max_dictionaries) {
            return Err(invalid("compression.max_dictionaries", "must be 1 to 4096"));
        }
        if c.dictionary_check_secs == 0 {
            return Err(invalid(
                "compression.dictionary_check_secs",
                "must be at least 1",
            ));
        }
        if c.dictionary_key.is_empty() {
            return Err(invalid("compression.dictionary_key", "must not be empty"));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.validate_origin()?;
        self.tracking
            .validate()
            .map_err(|(k, why)| invalid(k, why))?;
        self.prefetch
            .validate()
            .map_err(|(k, why)| invalid(k, why))?;
        crate::jobs::settings::validate(
            &self.jobs,
            &self.warming,
            &self.counters,
            &self.expiry,
            &self.origin.routes,
        )
        .map_err(|(k, why)| invalid(&k, why))?;
        if !self.server.admin_listen.is_empty() {
            self.server
                .admin_listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("server.admin_listen", format!("not host:port ({e})")))?;
        }
        if self.server.max_clients == 0 {
            return Err(invalid("server.max_clients", "must be at least 1"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.server.log_level)
            .map_err(|e| invalid("server.log_level", e.to_string()))?;
        for d in &self.server.deny_commands {
            let name = d.split('|').next().unwrap_or("");
            if crate::command::lookup(name.as_bytes()).is_none() {
                return Err(invalid(
                    "server.deny_commands",
                    format!("unknown command '{d}'"),
                ));
            }
        }
        if self.limits.max_bulk_len == 0 || self.limits.max_array_len == 0 {
            return Err(invalid("limits.max_bulk_len", "limits must be at least 1"));
        }
        if self.limits.max_pipeline == 0 {
            return Err(invalid("limits.max_pipeline", "must be at least 1"));
        }
        UpstreamUrl::parse(&self.upstream.url).map_err(|r| invalid("upstream.url", r))?;
        self.validate_compression()?;
        if self.upstream.pool_size == 0 || self.upstream.pool_size > 64 {
            return Err(invalid("upstream.pool_size", "must be between 1 and 64"));
        }
        if self.upstream.timeout_ms == 0 || self.upstream.connect_timeout_ms == 0 {
            return Err(invalid(
                "upstream.timeout_ms",
                "timeouts must be at least 1 ms",
            ));
        }
        if self.upstream.reconnect_min_ms > self.upstream.reconnect_max_ms {
            return Err(invalid(
                "upstream.reconnect_min_ms",
                "must not exceed upstream.reconnect_max_ms",
            ));
        }
        if self.upstream.max_queued == 0 {
            return Err(invalid("upstream.max_queued", "must be at least 1"));
        }
        for (i, u) in self.auth.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(invalid(
                    &format!("auth.users[{i}].name"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("not host:port ({e})")))
    }

    pub fn upstream_url(&self) -> UpstreamUrl {
        // Validated at load; a default keeps this infallible for callers.
        UpstreamUrl::parse(&self.upstream.url).unwrap_or(UpstreamUrl::Redis {
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
        })
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_timeout_ms)
    }

    /// The settings as `section.key = value` lines, secrets as they are (to compare two
    /// settings, never to show).
    pub fn flatten_unmasked(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let v = toml::Value::try_from(self).unwrap_or(toml::Value::Boolean(false));
        flatten_into("", &v, &mut out);
        out
    }

    /// The effective settings as `section.key = value` lines, secrets masked.
    pub fn flatten(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let v = toml::Value::try_from(self.masked()).unwrap_or(toml::Value::Boolean(false));
        flatten_into("", &v, &mut out);
        out
    }

    /// The effective settings as TOML, secrets masked, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.masked()).unwrap_or_default()
    }

    /// A copy with every secret masked: the passwords, and the password in the upstream URL.
    pub fn masked(&self) -> Settings {
        const MASK: &str = "********";
        let mut m = self.clone();
        for p in std::iter::once(&mut m.auth.password)
            .chain(std::iter::once(&mut m.upstream.password))
            .chain(std::iter::once(&mut m.server.admin_token))
            .chain(m.auth.users.iter_mut().map(|u| &mut u.password))
        {
            if !p.is_empty() {
                *p = MASK.into();
            }
        }
        for r in &mut m.origin.routes {
            for v in r.headers.values_mut() {
                *v = MASK.into();
            }
        }
        if let Ok(mut u) = url::Url::parse(&m.upstream.url) {
            if u.password().is_some() && u.set_password(Some(MASK)).is_ok() {
                m.upstream.url = u.to_string();
            }
        }
        m
    }
}

fn flatten_into(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamUrl {
    Redis {
        host: String,
        port: u16,
        username: Option<String>,
        password: Option<String>,
        db: u32,
    },
    /// The embedded store.
    Memory,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        if s == "memory://" || s == "memory:" {
            return Ok(UpstreamUrl::Memory);
        }
        let u = url::Url::parse(s).map_err(|e| format!("'{s}' is not a URL ({e})"))?;
        match u.scheme() {
            "redis" => {
                let host = u
                    .host_str()
                    .ok_or_else(|| format!("'{s}' has no host"))?
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_string();
                let port = u.port().unwrap_or(6379);
                let dec = |x: &str| {
                    percent_encoding::percent_decode_str(x)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                let username = Some(dec(u.username())).filter(|x| !x.is_empty());
                let password = u.password().map(dec);
                let path = u.path().trim_start_matches('/');
                let db = if path.is_empty() {
                    0
                } else {
                    path.parse::<u32>()
                        .map_err(|_| format!("database '{path}' is not a number"))?
                };
                Ok(UpstreamUrl::Redis {
                    host,
                    port,
                    username,
                    password,
                    db,
                })
            }
            other => Err(format!(
                "unsupported scheme '{other}' (expected memory:// or redis://host:port[/db])"
            )),
        }
    }

    /// A display form without credentials, used in error replies and logs.
    pub fn display(&self) -> String {
        match self {
            UpstreamUrl::Redis { host, port, db, .. } => {
                if *db == 0 {
                    format!("redis://{host}:{port}")
                } else {
                    format!("redis://{host}:{port}/{db}")
                }
            }
            UpstreamUrl::Memory => "memory://".into(),
        }
    }
}

/// Settings `PROXY CONFIG SET` may change while running; read on the hot path without locks.
#[derive(Debug)]
pub struct Tunables {
    pub max_clients: AtomicU64,
    /// `server.request_log`: 0 or 1.
    pub request_log: AtomicU64,
    pub idle_timeout_secs: AtomicU64,
    pub max_pipeline: AtomicU64,
    pub client_output_buffer_limit: AtomicU64,
    pub upstream_timeout_ms: AtomicU64,
}

/// The keys of `Tunables`, as `PROXY CONFIG SET` names them.
pub const TUNABLE_KEYS: &[&str] = &[
    "server.max_clients",
    "server.request_log",
    "server.idle_timeout_secs",
    "limits.max_pipeline",
    "limits.client_output_buffer_limit",
    "upstream.timeout_ms",
];

impl Tunables {
    pub fn new(s: &Settings) -> Self {
        Tunables {
            max_clients: AtomicU64::new(s.server.max_clients),
            request_log: AtomicU64::new(u64::from(s.server.request_log)),
            idle_timeout_secs: AtomicU64::new(s.server.idle_timeout_secs),
            max_pipeline: AtomicU64::new(s.limits.max_pipeline),
            client_output_buffer_limit: AtomicU64::new(s.limits.client_output_buffer_limit),
            upstream_timeout_ms: AtomicU64::new(s.upstream.timeout_ms),
        }
    }

    fn slot(&self, key: &str) -> Option<&AtomicU64> {
        Some(match key {
            "server.max_clients" => &self.max_clients,
            "server.request_log" => &self.request_log,
            "server.idle_timeout_secs" => &self.idle_timeout_secs,
            "limits.max_pipeline" => &self.max_pipeline,
            "limits.client_output_buffer_limit" => &self.client_output_buffer_limit,
            "upstream.timeout_ms" => &self.upstream_timeout_ms,
            _ => return None,
        })
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.slot(key).map(|a| a.load(Ordering::Relaxed))
    }

    /// Sets a tunable; the error says why the key or value is refused.
    pub fn set(&self, key: &str, value: &str) -> Result<(), String> {
        let slot = self.slot(key).ok_or_else(|| {
            format!(
                "'{key}' cannot be changed at run time (tunables: {})",
                TUNABLE_KEYS.join(", ")
            )
        })?;
        if key == "server.request_log" {
            let on = match value {
                "true" | "yes" | "on" | "1" => 1,
                "false" | "no" | "off" | "0" => 0,
                _ => return Err(format!("'{value}' for {key} must be true or false")),
            };
            slot.store(on, Ordering::Relaxed);
            return Ok(());
        }
        let v: u64 = value
            .parse()
            .map_err(|_| format!("'{value}' is not a non-negative integer"))?;
        let min = if key == "server.idle_timeout_secs" {
            0
        } else {
            1
        };
        if v < min {
            return Err(format!("'{key}' must be at least {min}"));
        }
        slot.store(v, Ordering::Relaxed);
        Ok(())
    }

    pub fn load(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_with_env(Some(&path), &Overrides::default(), env)
    }

    #[test]
    fn defaults_validate() {
        Settings::default().validate().unwrap();
        assert_eq!(load("", &[]).unwrap(), Settings::default());
    }

    #[test]
    fn file_then_env_then_flags() {
        let s = load(
            "[server]\nmax_clients = 7\nlisten = \"127.0.0.1:1\"\n",
            &[("PRESCIENT__SERVER__MAX_CLIENTS", "9"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(s.server.max_clients, 9);
        assert_eq!(s.server.listen, "127.0.0.1:1");
        let o = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let s = Settings::load_with_env(None, &o, Vec::new()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:2");
        let s = load(
            "",
            &[("PRESCIENT__SERVER__DENY_COMMANDS", "shutdown,debug")],
        )
        .unwrap();
        assert_eq!(s.server.deny_commands, vec!["shutdown", "debug"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load("[server]\nlisten_port = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = load("[server]\nlisten = \"nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = load("[upstream]\nurl = \"http://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.url") && e.contains("scheme"), "{e}");
        let e = load("[upstream]\npool_size = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.pool_size"), "{e}");
        let e = load("[server]\nmax_clients = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_clients"), "{e}");
        let e = load("[server]\ndeny_commands = [\"nosuch\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("deny_commands"), "{e}");
    }

    #[test]
    fn closed_sets_are_parsed_once_and_errors_list_them() {
        let e = Settings::from_toml("[compression]\ncodec = \"gzip\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("compression.codec") && e.contains("zlib, zstd, lz4"),
            "{e}"
        );
        let e = Settings::from_toml("[memory]\nmaxmemory_policy = \"allkeys-lfu\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("memory.maxmemory_policy") && e.contains("noeviction"),
            "{e}"
        );
        let s = Settings::from_toml(
            "[compression]\ncodec = \"zstd\"\nlevel = 3\n[memory]\nmaxmemory_policy = \"noeviction\"\n",
        )
        .unwrap();
        assert_eq!(s.compression.codec, CodecName::Zstd);
        assert_eq!(s.memory.maxmemory_policy, EvictionPolicy::NoEviction);
        // What check-config prints loads back to the same settings.
        assert_eq!(Settings::from_toml(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            UpstreamUrl::parse("redis://u:p%40ss@localhost:7000/3").unwrap(),
            UpstreamUrl::Redis {
                host: "localhost".into(),
                port: 7000,
                username: Some("u".into()),
                password: Some("p@ss".into()),
                db: 3
            }
        );
        assert!(UpstreamUrl::parse("redis://h:1/x").is_err());
    }

    #[test]
    fn flatten_masks_secrets_and_tunables_check_values() {
        let mut s = Settings::default();
        s.auth.password = "secret".into();
        s.upstream.password = "secret2".into();
        s.auth.users.push(Default::default());
        s.auth.users[0].password = "secret3".into();
        s.upstream.url = "redis://bob:secret4@127.0.0.1:6379/2".into();
        let f = s.flatten();
        assert_eq!(f["auth.password"], "\"********\"");
        assert_eq!(
            f["upstream.url"],
            "\"redis://bob:********@127.0.0.1:6379/2\""
        );
        let all = format!("{f:?}{}", s.to_toml());
        assert!(!all.contains("secret"), "a secret leaks: {all}");
        assert_eq!(f["server.max_clients"], "10000");
        let t = Tunables::new(&s);
        t.set("server.max_clients", "5").unwrap();
        assert_eq!(t.get("server.max_clients"), Some(5));
        assert!(t.set("server.listen", "x").is_err());
        assert!(t.set("server.max_clients", "0").is_err());
        assert!(t.set("server.max_clients", "-1").is_err());
    }
}
