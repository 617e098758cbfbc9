//! Walking one image ("how to copy", independent of where it goes): fetch the top manifest;
//! for an index, fetch the chosen platforms' manifests; transfer every blob with bounded
//! parallelism and retries; then publish the manifests, children before the index.
//!
//! With [`Walk::referrers`] set, the image's referrers (signatures, SBOMs) follow it
//! ([`crate::referrers`]).
//!
//! Where manifests come from and where blobs go is a [`Transfer`]: the cache
//! ([`crate::cache::CacheTransfer`], for `ferry sync` and the scheduled sync) or another
//! registry ([`crate::copy::RegistryTransfer`], for `ferry copy`). Both share this walk.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::manifest::{self, Descriptor, Parsed};
use ferry_oci::{Digest, Reference};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::error::SyncError;
use crate::progress::{BlobOutcome, BlobProgress, Event, Reporter};
pub use crate::referrers::Referrers;
use crate::retry::RetryPolicy;
use crate::summary::ImageStats;

/// A manifest as fetched: exact bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The registry's bytes.
    pub bytes: Bytes,
    /// Media type.
    pub media_type: String,
    /// Digest of `bytes`.
    pub digest: Digest,
}

/// Where an image comes from and where it goes.
pub trait Transfer: Send + Sync {
    /// Fetches a manifest from the source (for the cache this also stores it).
    fn manifest(
        &self,
        reference: &Reference,
    ) -> impl Future<Output = Result<Fetched, SyncError>> + Send;

    /// Makes a blob present at the destination, reporting bytes to `progress`.
    fn blob(
        &self,
        blob: &Descriptor,
        progress: &BlobProgress,
    ) -> impl Future<Output = Result<BlobOutcome, SyncError>> + Send;

    /// Publishes a manifest at the destination under `reference` (after its content).
    fn put_manifest(
        &self,
        manifest: &Fetched,
        reference: &Reference,
    ) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// The source's referrers of manifest `subject` (`None`: none, or no way to ask).
    fn referrers(
        &self,
        subject: &Digest,
    ) -> impl Future<Output = Result<Option<Referrers>, SyncError>> + Send {
        let _ = subject;
        std::future::ready(Ok(None))
    }
}

/// Settings and context of one image walk.
pub struct Walk {
    /// The image's label for progress events.
    pub image: Arc<str>,
    /// Where progress goes.
    pub reporter: Arc<dyn Reporter>,
    /// Platform filters (`os/arch[/variant]`); empty: all.
    pub platforms: Vec<String>,
    /// Publish the single chosen platform manifest under the tag instead of the index (a copy
    /// with `--platform`: a subset of an index would need a new index, and ferry never
    /// rewrites manifests).
    pub single_platform: bool,
    /// Retries of each step.
    pub retry: RetryPolicy,
    /// Blob transfers in flight, shared by every image of a run.
    pub permits: Arc<Semaphore>,
    /// Blob transfers started at once per image.
    pub parallel: usize,
    /// Also transfer the referrers (signatures, SBOMs) of the image's manifests.
    pub with_referrers: bool,
}

/// What an image consists of, in publishing order.
struct Plan {
    /// Manifests and the reference to publish each under: children first, the top last.
    manifests: Vec<(Fetched, Reference)>,
    /// Distinct blobs.
    blobs: Vec<Descriptor>,
}

impl Walk {
    /// Transfers the image `reference` names, publishing its top manifest as `publish_as`,
    /// then (with `with_referrers`) the referrers of its manifests.
    pub async fn run<T: Transfer>(
        &self,
        t: &T,
        reference: &Reference,
        publish_as: &Reference,
    ) -> Result<ImageStats, SyncError> {
        let (mut stats, subjects) = self.transfer(t, reference, publish_as, true).await?;
        if self.with_referrers {
            let extra = self.referrers(t, &subjects).await?;
            stats.add(&extra);
        }
        Ok(stats)
    }

    /// One image without its referrers; also returns the digests of its manifests.
    pub(crate) async fn transfer<T: Transfer>(
        &self,
        t: &T,
        reference: &Reference,
        publish_as: &Reference,
        announce: bool,
    ) -> Result<(ImageStats, Vec<Digest>), SyncError> {
        let plan = self.plan(t, reference, publish_as).await?;
        let bytes_total = plan.blobs.iter().map(|b| b.size).sum();
        if announce {
            self.reporter.event(Event::ImageResolved {
                image: self.image.clone(),
                manifests: plan.manifests.len(),
                blobs: plan.blobs.len(),
                bytes: bytes_total,
            });
        }
        let mut stats = self.blobs(t, plan.blobs).await?;
        stats.bytes_total = bytes_total;
        stats.manifests = plan.manifests.len();
        for (m, r) in &plan.manifests {
            let what = format!("manifest {r}");
            self.retry(&what, || t.put_manifest(m, r)).await?;
        }
        stats.digest = plan.manifests.last().map(|(m, _)| m.digest.clone());
        let digests = plan.manifests.into_iter().map(|(m, _)| m.digest).collect();
        Ok((stats, digests))
    }

    async fn plan<T: Transfer>(
        &self,
        t: &T,
        reference: &Reference,
        publish_as: &Reference,
    ) -> Result<Plan, SyncError> {
        let top = self
            .retry(&format!("manifest {reference}"), || t.manifest(reference))
            .await?;
        let mut blobs = Blobs::default();
        match parse(&top)? {
            Parsed::Index { manifests, .. } => {
                let chosen = select(&manifests, &self.platforms)?;
                let children = self.children(t, &chosen).await?;
                let mut out = Vec::new();
                for child in children {
                    blobs.add_image(&child)?;
                    out.push((child.clone(), Reference::Digest(child.digest)));
                }
                if self.single_platform && !self.platforms.is_empty() {
                    let (first, _) = out.swap_remove(0);
                    out = vec![(first, publish_as.clone())];
                } else {
                    out.push((top, publish_as.clone()));
                }
                Ok(Plan {
                    manifests: out,
                    blobs: blobs.list,
                })
            }
            Parsed::Image { .. } => {
                blobs.add_image(&top)?;
                Ok(Plan {
                    manifests: vec![(top, publish_as.clone())],
                    blobs: blobs.list,
                })
            }
        }
    }

    async fn children<T: Transfer>(
        &self,
        t: &T,
        chosen: &[&Descriptor],
    ) -> Result<Vec<Fetched>, SyncError> {
        let fetches: Vec<_> = chosen
            .iter()
            .map(|d| self.child(t, d.digest.clone()))
            .collect();
        futures_util::stream::iter(fetches)
            .buffered(self.parallel.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    async fn child<T: Transfer>(&self, t: &T, digest: Digest) -> Result<Fetched, SyncError> {
        let what = format!("manifest {digest}");
        let r = Reference::Digest(digest);
        self.retry(&what, || t.manifest(&r)).await
    }

    /// Transfers every blob (all of them, even after a failure, so that a rerun has less to
    /// do), then reports the first failure.
    async fn blobs<T: Transfer>(
        &self,
        t: &T,
        blobs: Vec<Descriptor>,
    ) -> Result<ImageStats, SyncError> {
        let jobs: Vec<_> = blobs
            .into_iter()
            .map(|b| async move {
                let _permit = self.permits.acquire().await.expect("semaphore open");
                let progress =
                    BlobProgress::new(self.reporter.clone(), self.image.clone(), b.digest.clone());
                let what = format!("blob {}", b.digest);
                let r = self.retry(&what, || t.blob(&b, &progress)).await;
                if let Ok(outcome) = &r {
                    self.reporter.event(Event::BlobDone {
                        image: self.image.clone(),
                        digest: b.digest.clone(),
                        size: b.size,
                        outcome: *outcome,
                    });
                }
                (b.size, r)
            })
            .collect();
        let results: Vec<_> = futures_util::stream::iter(jobs)
            .buffer_unordered(self.parallel.max(1))
            .collect()
            .await;
        let mut stats = ImageStats::default();
        for (size, r) in results {
            match r? {
                BlobOutcome::Fetched => {
                    stats.blobs_fetched += 1;
                    stats.bytes_fetched += size;
                }
                BlobOutcome::Present => stats.blobs_present += 1,
                BlobOutcome::Mounted => stats.blobs_mounted += 1,
            }
        }
        Ok(stats)
    }

    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, SyncError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        let on_retry = |attempt: u32, wait: Duration, error: &SyncError| {
            self.reporter.event(Event::Retrying {
                image: self.image.clone(),
                what: what.to_owned(),
                attempt,
                wait,
                error: error.clone(),
            });
        };
        self.retry.run(op, on_retry).await.map_err(|e| {
            if e == SyncError::Cancelled {
                e
            } else {
                e.about(what)
            }
        })
    }
}

fn parse(m: &Fetched) -> Result<Parsed, SyncError> {
    manifest::parse(&m.bytes, Some(&m.media_type))
        .map_err(|e| SyncError::Invalid(format!("manifest {}: {e}", m.digest)))
}

/// The index entries matching any of `platforms` (all when empty).
pub fn select<'a>(
    children: &'a [Descriptor],
    platforms: &[String],
) -> Result<Vec<&'a Descriptor>, SyncError> {
    if platforms.is_empty() {
        return Ok(children.iter().collect());
    }
    let chosen: Vec<&Descriptor> = children
        .iter()
        .filter(|c| {
            c.platform
                .as_ref()
                .is_some_and(|p| platforms.iter().any(|f| p.matches(f)))
        })
        .collect();
    if chosen.is_empty() {
        let have: Vec<String> = children
            .iter()
            .filter_map(|c| c.platform.as_ref().map(|p| p.to_string()))
            .collect();
        return Err(SyncError::NotFound(format!(
            "no manifest for platform {} in the index (it has {})",
            platforms.join(", "),
            have.join(", ")
        )));
    }
    Ok(chosen)
}

/// Distinct blobs of the image manifests of a walk.
#[derive(Default)]
struct Blobs {
    seen: HashSet<Digest>,
    list: Vec<Descriptor>,
}

impl Blobs {
    fn add_image(&mut self, m: &Fetched) -> Result<(), SyncError> {
        let Parsed::Image { config, layers, .. } = parse(m)? else {
            return Err(SyncError::Invalid(format!(
                "manifest {}: an index inside an index is not supported",
                m.digest
            )));
        };
        for d in config.into_iter().chain(layers) {
            if !is_foreign(&d) && self.seen.insert(d.digest.clone()) {
                self.list.push(d);
            }
        }
        Ok(())
    }
}

/// Foreign (non-distributable) layers live elsewhere and are never copied by registries.
fn is_foreign(d: &Descriptor) -> bool {
    d.media_type.contains("foreign") || d.media_type.contains("nondistributable")
}

#[cfg(test)]
mod tests;
