//! Log output: text or JSON lines on stderr, filtered by `RUST_LOG` or the config's level.
//! ANSI colours are used only when stderr is a terminal (they cost time and clutter files).
//! Lines are written synchronously: when a response is complete, its log line is on stderr.

use std::io::IsTerminal;

use ferry_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once per process).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
