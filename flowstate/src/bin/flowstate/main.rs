//! `flowstate`: the demo and the operations commands.
//!
//! ```text
//! flowstate demo [--dir DIR] [--requests N] [--crash-rate PER_MILLE] [--seed S] [--workers W]
//! flowstate recover --store URL [--demo-functions]
//! flowstate gc --store URL [--window DURATION]
//! flowstate inspect --store URL INSTANCE
//! ```
//!
//! `--store` falls back to `FLOWSTATE_STORE` (and `FLOWSTATE_CONFIG`, a TOML
//! settings file). Exit codes: 0 success, 1 failure or a demo violation,
//! 2 bad usage.

mod demo;
mod ops;
mod travel;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flowstate::{OpenError, Settings};

#[derive(Debug, Parser)]
#[command(name = "flowstate", version, about = "Exactly-once stateful functions on your own database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run travel reservations on embedded SQLite with crashes injected, recover, and verify every effect.
    Demo(DemoArgs),
    /// One collector pass: re-drive unfinished instances whose lease expired.
    Recover {
        #[command(flatten)]
        store: StoreArgs,
        /// Register the demo's functions (reserve, pay, confirm_order), so a demo database can be recovered.
        #[arg(long)]
        demo_functions: bool,
    },
    /// One garbage-collection pass over finished instances.
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// Collect instances finished longer ago than this (default: the engine's gc_window, 15m).
        /// Never shorter than any execution can still run.
        #[arg(long, value_name = "DURATION", value_parser = flowstate::parse_duration)]
        window: Option<Duration>,
        /// Scan every intent instead of the queue of finished instances (a repair pass for backlogs).
        #[arg(long)]
        full: bool,
    },
    /// Show an instance's intent and its step log.
    Inspect {
        #[command(flatten)]
        store: StoreArgs,
        /// Instance id (a called instance: PARENT/STEP, as printed).
        instance: String,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Keep the database in DIR (default: a temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Reservation requests to send.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,
    /// Chance that a worker's store call kills the worker, per mille.
    #[arg(long, value_name = "PER_MILLE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=500))]
    crash_rate: u32,
    /// Seed of the workload and of the crash points.
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u64,
    /// Concurrent workers.
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Hotel rooms on sale.
    #[arg(long, value_name = "N", default_value_t = 50)]
    rooms: u32,
    /// Flight seats on sale.
    #[arg(long, value_name = "N", default_value_t = 60)]
    seats: u32,
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Store URL, e.g. sqlite://flowstate.db [default: $FLOWSTATE_STORE]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// TOML settings file: `store = "URL"` and an [engine] table [default: $FLOWSTATE_CONFIG]
    #[arg(long, value_name = "FILE", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// Give up opening the store after this long [default: 10s, or the config file's connect_timeout]
    #[arg(long, value_name = "DURATION", value_parser = flowstate::parse_duration)]
    connect_timeout: Option<Duration>,
}

impl StoreArgs {
    fn settings(&self) -> CliResult<Settings> {
        let settings = match (&self.store, &self.config) {
            (Some(url), _) => Settings::from_url(url),
            (None, Some(path)) => Settings::from_toml_file(path),
            (None, None) => Settings::from_env(),
        };
        let mut settings = settings.map_err(|e| match e {
            OpenError::MissingEnv { .. } => CliError::msg(
                "no store given: pass --store URL (e.g. sqlite://flowstate.db) or set FLOWSTATE_STORE".to_string(),
            ),
            e => CliError::from(e),
        })?;
        if let Some(t) = self.connect_timeout {
            settings.connect_timeout = t;
        }
        Ok(settings)
    }
}

/// A failure to report: one message, with the error's causes appended.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    /// A plain message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(&format!("\n  caused by: {text}"));
            }
            source = s.source();
        }
        Self(message)
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run(cli: Cli) -> CliResult<bool> {
    // Unlocked: the demo's progress bar writes to stdout from worker threads.
    let mut out = std::io::stdout();
    match cli.command {
        Command::Demo(a) => {
            let opts = demo::DemoOptions {
                dir: a.dir,
                requests: a.requests as usize,
                crash_rate: a.crash_rate,
                seed: a.seed,
                workers: a.workers as usize,
                rooms: i64::from(a.rooms),
                seats: i64::from(a.seats),
            };
            demo::run(opts, &mut out).await
        }
        Command::Recover { store, demo_functions } => {
            ops::recover(&store.settings()?, demo_functions, &mut out).await.map(|()| true)
        }
        Command::Gc { store, window, full } => ops::gc(&store.settings()?, window, full, &mut out).await.map(|()| true),
        Command::Inspect { store, instance } => {
            ops::inspect(&store.settings()?, &instance, &mut out).await.map(|()| true)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    let _ = std::io::stdout().flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: the demo found violations (see the checks above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
