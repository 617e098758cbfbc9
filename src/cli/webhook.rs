//! `ferry webhook --config FILE`: the Kubernetes mutating admission webhook.

use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the webhook until SIGTERM.
pub async fn run(config: PathBuf) -> ExitCode {
    crate::logging::init(ferry_config::LogFormat::Text, "info");
    match ferry_webhook::run(config, super::terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
