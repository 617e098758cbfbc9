//! The sampler behind the console's charts: every [`SAMPLE_EVERY`] it drains the running
//! totals of [`ferry_metrics::Totals`] into the time series, and every [`SAVE_EVERY`] (and at
//! shutdown) it saves them to `<cache root>/_console/series.json`, so they survive a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_metrics::Metrics;
use ferry_metrics::series::Series;
use tokio_util::sync::CancellationToken;

use super::Console;

/// How often the totals are drained.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often the series are saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads saved series from `path`; a corrupt or unreadable file is logged and the series
/// start empty.
pub fn load(path: &std::path::Path) -> Series {
    match Series::load(path, unix_now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "console time series start empty");
            Series::default()
        }
    }
}

fn save(console: &Console, path: &std::path::Path) {
    let series = console.series.lock().expect("series lock").clone();
    if let Err(e) = series.save(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the console time series");
    }
}

/// Samples until `stop`, then saves once more. Runs on the engine's task tracker.
pub async fn run(
    console: Arc<Console>,
    metrics: Arc<Metrics>,
    path: Option<PathBuf>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        console.sample(&metrics.totals.drain(), unix_now());
        if let Some(p) = &path
            && (stopping || last_save.elapsed() >= SAVE_EVERY)
        {
            save(&console, p);
            last_save = tokio::time::Instant::now();
        }
        if stopping {
            return;
        }
    }
}
