//! The scheduled sync inside `ferry serve` (`sync: {list: FILE, interval: 6h, jobs: 4}`): runs
//! the list at start-up and then every `interval`, through the server's own [`Mirror`], so it
//! shares downloads with client pulls. The list file is read again for every run (edit it
//! without a restart); a bad line is logged and skipped, the rest still syncs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferry_config::SyncConfig;
use ferry_mirror::Mirror;
use tokio_util::sync::CancellationToken;

use crate::list::parse_list;
use crate::progress::LogReporter;
use crate::run::{SyncOptions, sync};
use crate::summary::human_bytes;

/// Most problems kept in a [`RunRecord`].
pub const MAX_ERRORS: usize = 20;

/// What one scheduled run did (for the web console's sync page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub took: Duration,
    /// The list file.
    pub list: PathBuf,
    /// Images in the list.
    pub images: usize,
    /// Images that failed.
    pub failed: usize,
    /// Bytes fetched from upstreams.
    pub bytes_fetched: u64,
    /// Lines skipped and images failed, with why (at most [`MAX_ERRORS`]).
    pub errors: Vec<String>,
}

/// Runs the list on schedule until `stop` is cancelled; `on_run` hears of every run.
pub async fn run_scheduled(
    mirror: Mirror,
    config: SyncConfig,
    stop: CancellationToken,
    on_run: impl Fn(RunRecord) + Send + 'static,
) {
    let interval = config.interval.0.max(Duration::from_secs(1));
    tracing::info!(list = %config.list.display(), every = %config.interval, "scheduled sync enabled");
    loop {
        on_run(run_once(&mirror, &config.list, config.jobs, &stop).await);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One scheduled run: read the list, sync it, log a summary line (and each failure).
pub async fn run_once(
    mirror: &Mirror,
    list: &Path,
    jobs: usize,
    stop: &CancellationToken,
) -> RunRecord {
    let mut record = RunRecord {
        started: SystemTime::now(),
        took: Duration::ZERO,
        list: list.to_owned(),
        images: 0,
        failed: 0,
        bytes_fetched: 0,
        errors: Vec::new(),
    };
    let text = match tokio::fs::read_to_string(list).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(list = %list.display(), error = %e, "scheduled sync: cannot read the list");
            record.errors.push(format!("cannot read the list: {e}"));
            return record;
        }
    };
    let (entries, errors) = parse_list(&text);
    for e in &errors {
        tracing::error!(list = %list.display(), "scheduled sync: skipping {e}");
        record.errors.push(format!("skipped {e}"));
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
    record.took = start.elapsed();
    record.images = summary.images.len();
    record.failed = failed;
    record.bytes_fetched = summary.bytes_fetched();
    record
        .errors
        .extend(summary.failures().map(|(image, e)| format!("{image}: {e}")));
    record.errors.truncate(MAX_ERRORS);
    record
}
