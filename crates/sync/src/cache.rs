//! Syncing into the cache: a [`Transfer`] over the same [`Mirror`] that `ferry serve` uses, so a
//! pre-fetched image goes through exactly the on-demand path — the same verification, the same
//! coalescing with concurrent client pulls, the same on-disk layout.
//!
//! A manifest is fetched with [`Mirror::manifest`] (which stores it and, for a tag, records the
//! tag answer). A blob is requested with [`Mirror::blob`]: a cached blob answers at once and is
//! skipped; a missing one starts (or joins) the verified fill. The fill holds the last byte
//! back until the digest checked out, but may release it before the blob is stored (the fsync
//! of a large file, an object-store upload), so after draining the stream the transfer waits
//! for the fill to settle ([`Mirror::settle_blob`]) and fails if the blob did not get stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_mirror::FillError;
use ferry_mirror::{BlobBody, Delivery, Mirror, Target, Ungated};
use ferry_oci::manifest::Descriptor;
use ferry_oci::{Digest, Reference};
use futures_util::StreamExt;

use crate::error::SyncError;
use crate::progress::{BlobOutcome, BlobProgress};
use crate::referrers::{self, Referrers};
use crate::walk::{Fetched, Transfer};

/// Which image of the current run first asked for each blob: shared layers are fetched once
/// and counted (and shown) once, for that image.
pub type Claimed = Arc<Mutex<HashMap<Digest, Arc<str>>>>;

/// Transfers an upstream repository's images into the cache.
pub struct CacheTransfer {
    mirror: Mirror,
    target: Target,
    claimed: Claimed,
    image: Arc<str>,
}

impl CacheTransfer {
    /// For `image` in repository `target` (from [`Mirror::resolve`]).
    pub fn new(mirror: Mirror, target: Target, claimed: Claimed, image: Arc<str>) -> Self {
        CacheTransfer {
            mirror,
            target,
            claimed,
            image,
        }
    }

    /// Whether this image is the first of the run to want blob `d` (still true on a retry).
    fn claim(&self, d: &Digest) -> bool {
        let mut claimed = self.claimed.lock().expect("claimed lock");
        let owner = claimed
            .entry(d.clone())
            .or_insert_with(|| self.image.clone());
        *owner == self.image
    }
}

impl Transfer for CacheTransfer {
    async fn manifest(&self, reference: &Reference) -> Result<Fetched, SyncError> {
        let answer = self
            .mirror
            .manifest(&self.target, reference, &Ungated)
            .await?;
        let m = answer.manifest;
        Ok(Fetched {
            bytes: m.bytes.clone(),
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
        })
    }

    async fn blob(
        &self,
        blob: &Descriptor,
        progress: &BlobProgress,
    ) -> Result<BlobOutcome, SyncError> {
        let first = self.claim(&blob.digest);
        let answer = self
            .mirror
            .blob(&self.target, &blob.digest, None, Delivery::Stream, &Ungated)
            .await?;
        if answer.outcome.is_hit() {
            return Ok(BlobOutcome::Present);
        }
        let BlobBody::Stream(mut stream) = answer.body else {
            return Ok(BlobOutcome::Present);
        };
        if first {
            progress.started(answer.size);
        }
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fill_error(&blob.digest, e))?;
            got += chunk.len() as u64;
            if first {
                progress.advance(chunk.len() as u64);
            }
        }
        if got != answer.size {
            return Err(SyncError::Transient(format!(
                "download ended after {got} of {} bytes",
                answer.size
            )));
        }
        if !self.mirror.settle_blob(&blob.digest).await {
            return Err(SyncError::Transient(format!(
                "{} was downloaded and verified but could not be stored in the cache (see the log)",
                blob.digest
            )));
        }
        Ok(if first {
            BlobOutcome::Fetched
        } else {
            BlobOutcome::Present
        })
    }

    async fn put_manifest(&self, _: &Fetched, _: &Reference) -> Result<(), SyncError> {
        // `manifest` already stored it in the cache.
        Ok(())
    }

    async fn referrers(&self, subject: &Digest) -> Result<Option<Referrers>, SyncError> {
        match self.mirror.referrers(&self.target, subject, None).await {
            Ok(Some(a)) => {
                let list = referrers::listed(&a.body, Some(&a.content_type))?;
                return Ok((!list.is_empty()).then_some(Referrers {
                    list,
                    tag_index: None,
                }));
            }
            Ok(None) => {}
            Err(e) => none_or(e.into())?,
        }
        // The fallback tag, HEAD first (a HEAD is not a pull on Docker Hub). `manifest` then
        // stores the tag in the cache, so clients using the tag scheme find it in ferry.
        let tag = Reference::Tag(referrers::fallback_tag(subject));
        let (up, repo) = (&self.target.upstream, &self.target.repo);
        if let Err(e) = up.manifest_head(repo, &tag).await {
            none_or(e.into())?;
            return Ok(None);
        }
        let index = self.manifest(&tag).await?;
        let list = referrers::listed(&index.bytes, Some(&index.media_type))?;
        Ok(Some(Referrers {
            list,
            tag_index: None,
        }))
    }
}

/// `Ok` when a failed referrers lookup just means there are none.
pub(crate) fn none_or(e: SyncError) -> Result<(), SyncError> {
    if referrers::means_none(&e) {
        Ok(())
    } else {
        Err(e)
    }
}

/// A download that failed while we followed it: the fill's own error says why.
fn fill_error(d: &Digest, e: std::io::Error) -> SyncError {
    match FillError::of_io(&e) {
        Some(FillError::DigestMismatch { .. }) => SyncError::DigestMismatch(e.to_string()),
        _ => SyncError::Transient(format!("download of {d} failed: {e}")),
    }
}
