//! One sync run over a list, into the cache: expand every line, then walk the images with
//! bounded parallelism (at most `jobs` images in progress and `jobs` blob downloads in flight
//! across all of them). A failing image does not stop the others; cancellation (Ctrl-C,
//! shutdown) stops everything at once and leaves the cache consistent, because every blob
//! enters it only through the mirror's verified, atomic fill.

use std::sync::Arc;
use std::time::Instant;

use ferry_mirror::Mirror;
use ferry_upstream::Priority;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::{CacheTransfer, Claimed};
use crate::error::SyncError;
use crate::list::ListEntry;
use crate::plan::{self, Job};
use crate::progress::{Event, Reporter};
use crate::retry::RetryPolicy;
use crate::summary::{ImageResult, Summary};
use crate::walk::Walk;

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Images and blob downloads in parallel.
    pub jobs: usize,
    /// Platforms for lines that name none (empty: every platform).
    pub platforms: Vec<String>,
    /// Retries of each step.
    pub retry: RetryPolicy,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            jobs: 4,
            platforms: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Syncs `entries` into the cache of `mirror`. Its upstream requests are background work
/// ([`Priority::Background`]): they leave each account's last requests to client pulls.
pub async fn sync(
    mirror: &Mirror,
    entries: &[ListEntry],
    opts: &SyncOptions,
    reporter: Arc<dyn Reporter>,
    cancel: &CancellationToken,
) -> Summary {
    Priority::Background
        .scope(sync_all(mirror, entries, opts, reporter, cancel))
        .await
}

async fn sync_all(
    mirror: &Mirror,
    entries: &[ListEntry],
    opts: &SyncOptions,
    reporter: Arc<dyn Reporter>,
    cancel: &CancellationToken,
) -> Summary {
    let jobs = opts.jobs.max(1);
    let (planned, failed) = expand_all(mirror, entries, opts, cancel).await;
    reporter.event(Event::Planned {
        images: planned.len() + failed.len(),
    });
    for (_, f) in &failed {
        reporter.event(Event::ImageDone {
            image: f.image.as_str().into(),
            result: f.result.clone(),
        });
    }
    let runner = Runner {
        mirror,
        opts,
        reporter,
        cancel,
        permits: Arc::new(Semaphore::new(jobs)),
        claimed: Claimed::default(),
    };
    let runner = &runner;
    // Unordered, so that one slow image never holds back the next ones; sorted afterwards.
    let done: Vec<((usize, usize), ImageResult)> = futures_util::stream::iter(planned)
        .enumerate()
        .map(|(seq, (line, job))| async move { ((line, seq), runner.image(job).await) })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let failed = failed.into_iter().map(|(line, r)| ((line, 0), r));
    let mut images: Vec<_> = done.into_iter().chain(failed).collect();
    images.sort_by_key(|(key, _)| *key); // list order, then tag order
    Summary {
        images: images.into_iter().map(|(_, r)| r).collect(),
    }
}

/// Images keyed by the position of their list entry.
type Numbered<T> = Vec<(usize, T)>;

/// Expands every entry; entries that fail become failed results named by their line.
async fn expand_all(
    mirror: &Mirror,
    entries: &[ListEntry],
    opts: &SyncOptions,
    cancel: &CancellationToken,
) -> (Numbered<Job>, Numbered<ImageResult>) {
    // Collected first: a lazy `map` over borrowed entries would make the future's type
    // higher-ranked and not provably `Send` (rust-lang/rust#102211).
    let expansions: Vec<_> = entries
        .iter()
        .map(|e| expand_one(mirror, e, opts, cancel))
        .collect();
    let results: Vec<_> = futures_util::stream::iter(expansions)
        .buffered(opts.jobs.max(1))
        .collect()
        .await;
    let mut jobs = Vec::new();
    let mut failed = Vec::new();
    for (i, (entry, r, elapsed)) in results.into_iter().enumerate() {
        match r {
            Ok(j) => jobs.extend(j.into_iter().map(|j| (i, j))),
            Err(e) => failed.push((
                i,
                ImageResult {
                    image: format!("{} (line {})", entry.label(), entry.line),
                    result: Err(e),
                    elapsed,
                },
            )),
        }
    }
    // An image named by two lines is synced once.
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|(_, j)| seen.insert(j.label.clone()));
    (jobs, failed)
}

async fn expand_one<'a>(
    mirror: &Mirror,
    entry: &'a ListEntry,
    opts: &SyncOptions,
    cancel: &CancellationToken,
) -> (
    &'a ListEntry,
    Result<Vec<Job>, SyncError>,
    std::time::Duration,
) {
    let start = Instant::now();
    let r = tokio::select! {
        r = plan::expand(mirror, entry, &opts.platforms, opts.retry) => r,
        () = cancel.cancelled() => Err(SyncError::Cancelled),
    };
    (entry, r, start.elapsed())
}

/// Shared state of a run's image tasks.
struct Runner<'a> {
    mirror: &'a Mirror,
    opts: &'a SyncOptions,
    reporter: Arc<dyn Reporter>,
    cancel: &'a CancellationToken,
    permits: Arc<Semaphore>,
    claimed: Claimed,
}

impl Runner<'_> {
    async fn image(&self, job: Job) -> ImageResult {
        let start = Instant::now();
        if self.cancel.is_cancelled() {
            return ImageResult {
                image: job.label.to_string(),
                result: Err(SyncError::Cancelled),
                elapsed: start.elapsed(),
            };
        }
        self.reporter.event(Event::ImageStarted {
            image: job.label.clone(),
        });
        let transfer = CacheTransfer::new(
            self.mirror.clone(),
            job.target.clone(),
            self.claimed.clone(),
            job.label.clone(),
        );
        let walk = Walk {
            image: job.label.clone(),
            reporter: self.reporter.clone(),
            platforms: job.platforms.clone(),
            single_platform: false,
            retry: self.opts.retry,
            permits: self.permits.clone(),
            parallel: self.opts.jobs.max(1),
            with_referrers: true,
        };
        let result = tokio::select! {
            r = walk.run(&transfer, &job.reference, &job.reference) => r,
            () = self.cancel.cancelled() => Err(SyncError::Cancelled),
        };
        self.reporter.event(Event::ImageDone {
            image: job.label.clone(),
            result: result.clone(),
        });
        ImageResult {
            image: job.label.to_string(),
            result,
            elapsed: start.elapsed(),
        }
    }
}
