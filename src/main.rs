//! The `prescient` command: `run` (the default) serves; `check-config` validates and prints
//! the effective configuration; `replay` runs the what-if prefetch simulator on a trace;
//! `status`, `stats`, `warmup`, `prefetch-config` and `jobs` ask a running instance (cli.rs).

use std::path::PathBuf;

// mimalloc serves the whole binary (see src/alloc.rs for how it is called). It was chosen for
// the tracking model's many small buffers (`prescient replay` on cloudPhysics: 0.26 -> 0.41 M
// reads/s), and it helps the request path too: bench/core.py, alternating builds with and
// without it, gave prescient/direct 0.56-0.59x against 0.47-0.50x for GET -P 16 in front of
// Redis and 0.98-1.07x against 0.80-0.87x on memory://, the other rows level or better.
#[global_allocator]
static ALLOC: prescient::alloc::Allocator = prescient::alloc::Allocator;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prescient::cli::Verb;
use prescient::config::{Overrides, Settings};
use prescient::server::Server;

#[derive(Parser)]
#[command(name = "prescient", version, about = "A Redis-protocol proxy")]
struct Cli {
    /// Configuration file (TOML); without it, defaults plus PRESCIENT__SECTION__KEY variables.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Client listen address (server.listen).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Upstream URL (upstream.url), e.g. redis://127.0.0.1:6379.
    #[arg(long, global = true)]
    upstream: Option<String>,
    /// Admin HTTP address (server.admin_listen); empty disables it.
    #[arg(long, global = true)]
    admin_listen: Option<String>,
    /// For the operator verbs (status, stats, ...): the running instance's admin URL; by
    /// default http:// plus the configuration's server.admin_listen. The token comes from
    /// PRESCIENT_ADMIN_TOKEN, else the configuration's server.admin_token.
    #[arg(long, global = true)]
    admin: Option<String>,
    /// For the operator verbs: print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Log format: text or json (server.log_format).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (the default).
    Run,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Replay a trace through an LRU cache with and without prefetching (a what-if).
    Replay(Box<prescient::replay::ReplayArgs>),
    /// Prefetching off and on, side by side: a built-in origin and simulated users against
    /// prescient on its embedded store, in under a minute.
    Demo(prescient::demo::DemoArgs),
    /// A running instance: version, upstream, hit rate, memory, prefetching, learning state,
    /// top predictions.
    Status,
    /// A running instance's counters: proxy, cache, prefetch, tracking, origin, jobs.
    Stats,
    /// Queue the hot keys and their likely successors for prefetching.
    Warmup {
        /// Keys at most.
        #[arg(default_value_t = 20)]
        n: u32,
        /// Lowest probability of a successor (default: the live threshold).
        #[arg(long)]
        confidence: Option<f64>,
    },
    /// Show, or change, the prefetch settings of a running instance.
    PrefetchConfig {
        /// Keys fetched per read at most (top_n).
        #[arg(long)]
        top: Option<u32>,
        /// The fetch threshold: a probability in (0, 1], or "adaptive".
        #[arg(long)]
        confidence: Option<String>,
        /// Turn prefetching on or off.
        #[arg(long)]
        enable: Option<bool>,
        /// Prefetch requests per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// A running instance's background jobs; `--run <id>` runs one now.
    Jobs {
        #[arg(long)]
        run: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Demo(args)) = &cli.command {
        return match prescient::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("prescient demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Replay(args)) = &cli.command {
        return match prescient::replay::run(args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("prescient replay: {e}");
                ExitCode::from(2)
            }
        };
    }
    let overrides = Overrides {
        listen: cli.listen.clone(),
        admin_listen: cli.admin_listen.clone(),
        upstream: cli.upstream.clone(),
    };
    let mut settings = match Settings::load(cli.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("prescient: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = &cli.log_format {
        settings.server.log_format = match prescient::config::LogFormat::try_from(f.clone()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("prescient: --log-format: {e}");
                return ExitCode::from(2);
            }
        };
    }
    let (cli_admin, json) = (cli.admin.clone(), cli.json);
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::CheckConfig => {
            println!(
                "# configuration is valid; effective settings:\n{}",
                settings.to_toml()
            );
            ExitCode::SUCCESS
        }
        Cmd::Run => run(settings, cli.config.clone(), overrides),
        Cmd::Replay(_) | Cmd::Demo(_) => {
            unreachable!("handled before the configuration is loaded")
        }
        Cmd::Status => operate(&cli_admin, &settings, Verb::Status, json),
        Cmd::Stats => operate(&cli_admin, &settings, Verb::Stats, json),
        Cmd::Warmup { n, confidence } => {
            operate(&cli_admin, &settings, Verb::Warmup { n, confidence }, json)
        }
        Cmd::PrefetchConfig {
            top,
            confidence,
            enable,
            rate,
        } => operate(
            &cli_admin,
            &settings,
            Verb::PrefetchConfig {
                top,
                confidence,
                enable,
                rate,
            },
            json,
        ),
        Cmd::Jobs { run } => operate(&cli_admin, &settings, Verb::Jobs { run }, json),
    }
}

/// An operator verb against a running instance's API.
fn operate(admin: &Option<String>, settings: &Settings, verb: Verb, json: bool) -> ExitCode {
    let url = match admin {
        Some(u) if u.contains("://") => u.clone(),
        Some(u) => format!("http://{u}"),
        None if settings.server.admin_listen.is_empty() => {
            eprintln!(
                "prescient: no admin address (server.admin_listen is empty); give --admin URL"
            );
            return ExitCode::from(2);
        }
        None => format!("http://{}", settings.server.admin_listen),
    };
    let token = std::env::var("PRESCIENT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| Some(settings.server.admin_token.clone()).filter(|t| !t.is_empty()));
    match prescient::cli::run(&url, token.as_deref(), &verb, json) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prescient: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings, file: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.server.log_level));
    match settings.server.log_format {
        prescient::config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init(),
        prescient::config::LogFormat::Text => {
            tracing_subscriber::fmt().with_env_filter(filter).init()
        }
    }
    let workers = match settings.server.worker_threads {
        // Measured (bench/core.py): on 2 cores, which the proxy shares with Redis and the
        // clients, one thread beats two; with more cores, one per core.
        0 => match std::thread::available_parallelism().map_or(1, |n| n.get()) {
            n if n <= 2 => 1,
            n => n,
        },
        n => n,
    };
    // One worker: a current-thread runtime, with no work-stealing or cross-thread wakeups.
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("prescient: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let deadline = settings.shutdown_timeout();
        let server = match Server::start(settings).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("prescient: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        server.shared.set_source(file, overrides);
        tokio::spawn(reload_on_hangup(server.shared.clone()));
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections, answering what is in flight");
        server.shutdown();
        if server.wait(deadline).await {
            tracing::info!("all clients finished; bye");
        } else {
            tracing::warn!(
                ?deadline,
                "shutdown deadline passed with clients still open"
            );
        }
        ExitCode::SUCCESS
    })
}

/// SIGHUP: read the configuration again (reload.rs); the outcome is logged.
async fn reload_on_hangup(shared: std::sync::Arc<prescient::shared::Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        if let Err(e) = shared.reload().await {
            tracing::error!(error = %e, "configuration not reloaded, nothing changed");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
