//! The sampler behind the console's charts: every [`SAMPLE_EVERY`] it drains the running
//! totals of [`ferry_metrics::Totals`] into the time series, and every [`SAVE_EVERY`] (and at
//! shutdown) it saves them to `<cache root>/_console/series.json` and, with `redis:`, to Redis
//! (under [`redis_name`]), so they survive a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_metrics::series::Series;
use tokio_util::sync::CancellationToken;

use super::Console;
use crate::App;

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

/// The Redis key (after `access.quotas.redis_prefix`) of this replica's series:
/// `console:series:<host name>:<listen address>`, stable across restarts of one replica.
pub fn redis_name(listen: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_owned());
    format!("console:series:{host}:{listen}")
}

/// Reads this replica's series from Redis (empty when there are none or Redis fails).
pub async fn load_shared(access: &ferry_access::Access, name: &str) -> Series {
    let Some(text) = access.shared_get(name).await else {
        return Series::default();
    };
    Series::from_json(&text, unix_now()).unwrap_or_else(|e| {
        tracing::warn!(key = name, error = %e, "console time series in redis are not readable; starting empty");
        Series::default()
    })
}

async fn save(console: &Console, app: &App, path: Option<&std::path::Path>, redis: Option<&str>) {
    let series = console.series.lock().expect("series lock").clone();
    if let Some(path) = path
        && let Err(e) = series.save(path)
    {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the console time series");
    }
    if let Some(name) = redis
        && let Err(e) = app.access.shared_set(name, &series.to_json()).await
    {
        tracing::warn!(key = name, error = %e, "cannot save the console time series in redis");
    }
}

/// Samples until `stop`, then saves once more. Runs on the engine's task tracker.
pub async fn run(
    app: Arc<App>,
    path: Option<PathBuf>,
    redis: Option<String>,
    stop: CancellationToken,
) {
    let console = app.console.clone();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        console.sample(&app.metrics.totals.drain(), unix_now());
        if stopping || last_save.elapsed() >= SAVE_EVERY {
            save(&console, &app, path.as_deref(), redis.as_deref()).await;
            last_save = tokio::time::Instant::now();
        }
        if stopping {
            return;
        }
    }
}
