//! Progress events of a sync or copy, for whoever displays them: the CLI draws progress bars
//! (or prints plain lines), the scheduled sync inside `ferry serve` writes log lines. The engine
//! never depends on a display crate; it calls a [`Reporter`].

use std::sync::Arc;
use std::time::Duration;

use ferry_oci::Digest;

use crate::error::SyncError;
use crate::summary::ImageStats;

/// What a blob transfer amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Downloaded (and, for a copy, uploaded).
    Fetched,
    /// Already at the destination (or fetched by another image of the same run).
    Present,
    /// Linked from another repository of the destination registry.
    Mounted,
}

/// One progress event. `image` is the image's label (e.g. `ghcr.io/org/app:1.2`).
#[derive(Debug, Clone)]
pub enum Event {
    /// The list was expanded into this many images.
    Planned {
        /// Number of images.
        images: usize,
    },
    /// Work on an image begins.
    ImageStarted {
        /// Image label.
        image: Arc<str>,
    },
    /// An image's manifests are known: how many manifests and blobs, and the blobs' bytes.
    ImageResolved {
        /// Image label.
        image: Arc<str>,
        /// Manifests (index and platform manifests).
        manifests: usize,
        /// Distinct blobs.
        blobs: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A blob download starts (again, after a retry).
    BlobStarted {
        /// Image label.
        image: Arc<str>,
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// More bytes of a blob arrived.
    BlobProgress {
        /// Image label.
        image: Arc<str>,
        /// The blob.
        digest: Digest,
        /// Bytes since the last event.
        bytes: u64,
    },
    /// A blob is done.
    BlobDone {
        /// Image label.
        image: Arc<str>,
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// What happened.
        outcome: BlobOutcome,
    },
    /// A step failed transiently and will be tried again.
    Retrying {
        /// Image label.
        image: Arc<str>,
        /// What is retried (`blob sha256:...`, `manifest 1.2`).
        what: String,
        /// Attempt number that failed (1-based).
        attempt: u32,
        /// Wait before the next attempt.
        wait: Duration,
        /// Why.
        error: SyncError,
    },
    /// An image is done.
    ImageDone {
        /// Image label.
        image: Arc<str>,
        /// Its result.
        result: Result<ImageStats, SyncError>,
    },
}

/// Receives progress events (from many tasks at once).
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

/// Ignores everything.
pub struct Quiet;

impl Reporter for Quiet {
    fn event(&self, _: Event) {}
}

/// Writes image-level events as `tracing` log lines (for the scheduled sync in `ferry serve`).
pub struct LogReporter;

impl Reporter for LogReporter {
    fn event(&self, event: Event) {
        match event {
            Event::ImageDone {
                image,
                result: Ok(s),
            } => {
                tracing::info!(image = %image, fetched_blobs = s.blobs_fetched, present_blobs = s.blobs_present, fetched_bytes = s.bytes_fetched, "sync: image done")
            }
            Event::ImageDone {
                image,
                result: Err(e),
            } => {
                tracing::warn!(image = %image, reason = e.reason(), error = %e, "sync: image failed")
            }
            Event::Retrying {
                image,
                what,
                attempt,
                wait,
                error,
            } => {
                tracing::info!(image = %image, what, attempt, ?wait, error = %error, "sync: retrying")
            }
            _ => {}
        }
    }
}

/// A handle a transfer uses to report one blob's progress.
#[derive(Clone)]
pub struct BlobProgress {
    reporter: Arc<dyn Reporter>,
    image: Arc<str>,
    digest: Digest,
}

impl BlobProgress {
    /// For blob `digest` of `image`.
    pub fn new(reporter: Arc<dyn Reporter>, image: Arc<str>, digest: Digest) -> Self {
        BlobProgress {
            reporter,
            image,
            digest,
        }
    }

    /// The download (re)starts with `size` bytes to go.
    pub fn started(&self, size: u64) {
        self.reporter.event(Event::BlobStarted {
            image: self.image.clone(),
            digest: self.digest.clone(),
            size,
        });
    }

    /// `bytes` more arrived.
    pub fn advance(&self, bytes: u64) {
        self.reporter.event(Event::BlobProgress {
            image: self.image.clone(),
            digest: self.digest.clone(),
            bytes,
        });
    }
}
