//! Runs the webhook as `ferry webhook --config FILE` will, for local trials and
//! `scripts/webhook-e2e.sh` before the CLI subcommand exists:
//! `cargo run -p ferry-webhook --example serve -- path/to/webhook.yaml`.
//! Logs go to stderr (`RUST_LOG` filters them); Ctrl-C or SIGTERM stops it gracefully.

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(config) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: serve CONFIG_FILE");
        return ExitCode::from(2);
    };
    match ferry_webhook::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
