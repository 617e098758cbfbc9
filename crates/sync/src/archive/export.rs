//! `ferry export`: the images of a sync list into one OCI image-layout archive. Each image is
//! walked like `ferry sync` walks it ([`crate::walk::Walk`]), through the [`Mirror`], so
//! content the cache has is read from it and the rest is fetched from the upstream (and
//! cached on the way). Everything is written into a staging layout next to the output
//! (`<output>.partial.d/`); a re-run skips blobs already there and verified; only when every
//! image is complete is the layout tarred into the output and the staging removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_mirror::{BlobBody, Delivery, Mirror, Outcome, Target, Ungated};
use ferry_oci::Reference;
use ferry_oci::manifest::Descriptor;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ArchiveError;
use super::layout::{IndexEntry, LayoutDir, tar_layout};
use crate::error::SyncError;
use crate::list::ListEntry;
use crate::plan::{self, Job};
use crate::progress::{BlobOutcome, BlobProgress, Event, Reporter};
use crate::run::SyncOptions;
use crate::summary::{ImageResult, Summary};
use crate::walk::{Fetched, Transfer, Walk};

/// The staging directory of an export to `output`: `<output>.partial.d`.
pub fn staging_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial.d");
    output.with_file_name(name)
}

/// Moves one image from the mirror into the staging layout.
struct ExportTransfer {
    mirror: Mirror,
    target: Target,
    layout: Arc<LayoutDir>,
    top: Reference,
    published: Mutex<Option<Fetched>>,
}

impl Transfer for ExportTransfer {
    async fn manifest(&self, reference: &Reference) -> Result<Fetched, SyncError> {
        let m = self
            .mirror
            .manifest(&self.target, reference, &Ungated)
            .await?
            .manifest;
        self.layout
            .write_bytes(&m.digest, &m.bytes)
            .map_err(|e| SyncError::Storage(e.to_string()))?;
        Ok(Fetched {
            bytes: m.bytes.clone(),
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
        })
    }

    async fn blob(
        &self,
        b: &Descriptor,
        progress: &BlobProgress,
    ) -> Result<BlobOutcome, SyncError> {
        if self.layout.has_verified(&b.digest) {
            return Ok(BlobOutcome::Present);
        }
        let answer = self
            .mirror
            .blob(&self.target, &b.digest, None, Delivery::Stream, &Ungated)
            .await?;
        let BlobBody::Stream(stream) = answer.body else {
            return Err(SyncError::Invalid(
                "the cache answered with a redirect".into(),
            ));
        };
        progress.started(answer.size);
        self.layout
            .write_stream(&b.digest, answer.size, stream, |n| progress.advance(n))
            .await
            .map_err(|e| SyncError::Transient(e.to_string()))?;
        Ok(match answer.outcome {
            Outcome::Miss => BlobOutcome::Fetched,
            _ => BlobOutcome::Present,
        })
    }

    async fn put_manifest(&self, m: &Fetched, reference: &Reference) -> Result<(), SyncError> {
        if *reference == self.top {
            *self.published.lock().expect("published lock") = Some(m.clone());
        }
        Ok(())
    }
}

/// Exports `entries` into the archive `output`; the summary names every image's result.
pub async fn export(
    mirror: &Mirror,
    entries: &[ListEntry],
    opts: &SyncOptions,
    reporter: Arc<dyn Reporter>,
    cancel: &CancellationToken,
    output: &Path,
) -> (Summary, Result<(), ArchiveError>) {
    let layout = match LayoutDir::create(&staging_dir(output)) {
        Ok(l) => Arc::new(l),
        Err(e) => return (Summary { images: vec![] }, Err(e)),
    };
    let (jobs, mut images) = expand(mirror, entries, opts).await;
    reporter.event(Event::Planned {
        images: jobs.len() + images.len(),
    });
    let permits = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let ctx = Ctx {
        mirror,
        opts,
        reporter: &reporter,
        cancel,
        layout: &layout,
        permits: &permits,
    };
    let results: Vec<(ImageResult, Option<IndexEntry>)> = futures_util::stream::iter(jobs)
        .map(|job| ctx.image(job))
        .buffered(opts.jobs.max(1))
        .collect()
        .await;
    let mut index = Vec::new();
    for (r, entry) in results {
        images.push(r);
        index.extend(entry);
    }
    let summary = Summary { images };
    if summary.has_failures() {
        return (summary, Ok(()));
    }
    let finished = layout
        .write_index(&index)
        .and_then(|()| tar_layout(layout.root(), output))
        .and_then(|()| {
            std::fs::remove_dir_all(layout.root()).map_err(ArchiveError::io(layout.root()))
        });
    (summary, finished)
}

/// Every entry's images, deduplicated; entries that fail become failed results.
async fn expand(
    mirror: &Mirror,
    entries: &[ListEntry],
    opts: &SyncOptions,
) -> (Vec<Job>, Vec<ImageResult>) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut failed = Vec::new();
    for entry in entries {
        let start = Instant::now();
        match plan::expand(mirror, entry, &opts.platforms, opts.retry).await {
            Ok(js) => jobs.extend(js),
            Err(e) => failed.push(ImageResult {
                image: format!("{} (line {})", entry.label(), entry.line),
                result: Err(e),
                elapsed: start.elapsed(),
            }),
        }
    }
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert(j.label.clone()));
    (jobs, failed)
}

struct Ctx<'a> {
    mirror: &'a Mirror,
    opts: &'a SyncOptions,
    reporter: &'a Arc<dyn Reporter>,
    cancel: &'a CancellationToken,
    layout: &'a Arc<LayoutDir>,
    permits: &'a Arc<Semaphore>,
}

impl Ctx<'_> {
    async fn image(&self, job: Job) -> (ImageResult, Option<IndexEntry>) {
        let start = Instant::now();
        self.reporter.event(Event::ImageStarted {
            image: job.label.clone(),
        });
        let transfer = ExportTransfer {
            mirror: self.mirror.clone(),
            target: job.target.clone(),
            layout: self.layout.clone(),
            top: job.reference.clone(),
            published: Mutex::new(None),
        };
        let walk = Walk {
            image: job.label.clone(),
            reporter: self.reporter.clone(),
            single_platform: !job.platforms.is_empty(),
            platforms: job.platforms.clone(),
            retry: self.opts.retry,
            permits: self.permits.clone(),
            parallel: self.opts.jobs.max(1),
            // Archives carry the images only; referrers travel between registries.
            with_referrers: false,
        };
        let result = tokio::select! {
            r = walk.run(&transfer, &job.reference, &job.reference) => r,
            () = self.cancel.cancelled() => Err(SyncError::Cancelled),
        };
        self.reporter.event(Event::ImageDone {
            image: job.label.clone(),
            result: result.clone(),
        });
        let published = transfer.published.lock().expect("published lock").take();
        let entry = published.filter(|_| result.is_ok()).map(|m| IndexEntry {
            name: job.label.to_string(),
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
        });
        let r = ImageResult {
            image: job.label.to_string(),
            result,
            elapsed: start.elapsed(),
        };
        (r, entry)
    }
}
