//! The scheduled sync inside `ferry serve` (`sync: {list: FILE, interval: 6h, jobs: 4}`): runs
//! the list at start-up and then every `interval`, through the server's own [`Mirror`], so it
//! shares downloads with client pulls. The list file is read again for every run (edit it
//! without a restart); a bad line is logged and skipped, the rest still syncs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_config::SyncConfig;
use ferry_mirror::Mirror;
use tokio_util::sync::CancellationToken;

use crate::list::parse_list;
use crate::progress::LogReporter;
use crate::run::{SyncOptions, sync};
use crate::summary::human_bytes;

/// Runs the list on schedule until `stop` is cancelled.
pub async fn run_scheduled(mirror: Mirror, config: SyncConfig, stop: CancellationToken) {
    let interval = config.interval.0.max(Duration::from_secs(1));
    tracing::info!(list = %config.list.display(), every = %config.interval, "scheduled sync enabled");
    loop {
        run_once(&mirror, &config.list, config.jobs, &stop).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One scheduled run: read the list, sync it, log a summary line (and each failure).
pub async fn run_once(mirror: &Mirror, list: &Path, jobs: usize, stop: &CancellationToken) {
    let text = match tokio::fs::read_to_string(list).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(list = %list.display(), error = %e, "scheduled sync: cannot read the list");
            return;
        }
    };
    let (entries, errors) = parse_list(&text);
    for e in &errors {
        tracing::error!(list = %list.display(), "scheduled sync: skipping {e}");
    }
    let start = Instant::now();
    let opts = SyncOptions {
        jobs,
        ..SyncOptions::default()
    };
    let summary = sync(mirror, &entries, &opts, Arc::new(LogReporter), stop).await;
    let failed = summary.failures().count();
    tracing::info!(
        list = %list.display(),
        images = summary.images.len(),
        failed,
        fetched = %human_bytes(summary.bytes_fetched()),
        secs = start.elapsed().as_secs(),
        "scheduled sync finished"
    );
}
