//! The command line: one subcommand per job, each in its own module.

mod admin;
mod check;
mod client_config;
mod copy;
mod export;
mod gc;
mod import;
mod serve;
mod sync;
mod sync_progress;
#[cfg(feature = "webhook")]
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// ferry — a container registry mirror: proxies, caches, pre-syncs and copies OCI images.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the mirror (with no --config: 0.0.0.0:5000, cache in ./ferry-data, eight public registries).
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Pre-fetch the images of a list into the cache (exit 1 if any image failed).
    Sync(sync::Args),
    /// Copy an image (all platforms of an index) from one registry to another.
    Copy(copy::Args),
    /// Write the images of a sync list into one OCI image-layout archive (offline transport).
    Export(export::Args),
    /// Load an OCI image-layout or `docker save` archive into the cache.
    Import(import::Args),
    /// Validate a configuration file and explain every error by key and line.
    CheckConfig {
        /// Configuration file (YAML).
        file: PathBuf,
    },
    /// Print (or write) client configuration that points Docker, containerd, Podman, CRI-O,
    /// BuildKit, k3s/RKE2 or Testcontainers at ferry.
    ClientConfig(client_config::Args),
    /// List what the cache holds, or evict by last-served age or by repository.
    Gc(gc::Args),
    /// Show a running server's top talkers by client, user, upstream, repository or blob
    /// (admin API).
    Usage(admin::UsageArgs),
    /// List or lift the bans and slow-downs of a running server (admin API).
    Bans(admin::BansArgs),
    /// Run the Kubernetes mutating admission webhook that rewrites pod images to the mirror.
    #[cfg(feature = "webhook")]
    Webhook {
        /// Webhook configuration file (YAML, usually a mounted ConfigMap).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    // `serve` logs the warning through its logger once that is set up.
    if matches!(
        cli.command,
        Command::Sync(_)
            | Command::Export(_)
            | Command::Import(_)
            | Command::CheckConfig { .. }
            | Command::ClientConfig(_)
            | Command::Gc(_)
    ) && let Some(w) = foreign_env_warning()
    {
        eprintln!("warning: {w}");
    }
    match cli.command {
        Command::Serve { config, log_format } => serve::run(config, log_format).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Copy(args) => copy::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::CheckConfig { file } => check::run(&file),
        Command::ClientConfig(args) => client_config::run(args),
        Command::Gc(args) => gc::run(args).await,
        Command::Usage(args) => admin::usage(args).await,
        Command::Bans(args) => admin::bans(args).await,
        #[cfg(feature = "webhook")]
        Command::Webhook { config } => webhook::run(config).await,
    }
}

/// The one-line warning about `FERRY_*` variables that are not configuration overrides
/// (a script's `FERRY_BIN`, Kubernetes service links such as `FERRY_PORT`), if there are any;
/// they are ignored. Shown once at startup by the commands that read ferry's configuration.
pub fn foreign_env_warning() -> Option<String> {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().unwrap_or_default())));
    ferry_config::env::foreign_warning(vars)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
