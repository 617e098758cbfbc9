//! The [`Transfer`] of a `ferry copy` with a local end: from a registry or local files
//! ([`LocalImage`]) to a registry or a local layout ([`LayoutDir`]). Registry to registry is
//! [`crate::copy::RegistryTransfer`] (with its cross-repository mounts). Blobs already at the
//! destination are skipped (a registry `HEAD`, or a staged file that re-hashes right); local
//! writes are verified before the blob gets its name, registries check the digest on `PUT`.

use std::sync::{Arc, Mutex};

use ferry_oci::Reference;
use ferry_oci::manifest::Descriptor;
use ferry_upstream::push::PushStream;
use futures_util::{StreamExt, TryStreamExt};

use super::layout::LayoutDir;
use super::local::LocalImage;
use crate::copy::Side;
use crate::error::SyncError;
use crate::progress::{BlobOutcome, BlobProgress};
use crate::walk::{Fetched, Transfer};

/// Where a copy reads from.
pub enum Src {
    /// A registry repository.
    Registry(Side),
    /// Local files.
    Local(Arc<LocalImage>),
}

/// Where a copy writes to.
pub enum Dst {
    /// A registry repository (a push client).
    Registry(Side),
    /// A local layout.
    Local(Arc<LayoutDir>),
}

/// A copy with at least one local end.
pub struct MixedTransfer {
    src: Src,
    dst: Dst,
    chunk_size: u64,
    top: Reference,
    /// The manifest published under `top`, once published.
    pub published: Mutex<Option<Fetched>>,
}

impl MixedTransfer {
    /// Copies from `src` to `dst`; `top` is the reference the image is published under.
    pub fn new(src: Src, dst: Dst, chunk_size: u64, top: Reference) -> Self {
        MixedTransfer {
            src,
            dst,
            chunk_size,
            top,
            published: Mutex::new(None),
        }
    }

    /// The blob's bytes from the source, and its size.
    async fn open(&self, b: &Descriptor) -> Result<(PushStream, u64), SyncError> {
        match &self.src {
            Src::Registry(side) => {
                let dl = side.client.blob(&side.repo, &b.digest, 0).await?;
                Ok((dl.stream, dl.size.unwrap_or(b.size)))
            }
            Src::Local(img) => {
                let path = img.path(&b.digest).ok_or_else(|| {
                    SyncError::NotFound(format!("blob {} is not in the source files", b.digest))
                })?;
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| SyncError::Storage(format!("{}: {e}", path.display())))?;
                let size = file.metadata().await.map(|m| m.len()).unwrap_or(b.size);
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
                Ok((stream.boxed(), size))
            }
        }
    }
}

impl Transfer for MixedTransfer {
    async fn manifest(&self, reference: &Reference) -> Result<Fetched, SyncError> {
        match &self.src {
            Src::Registry(side) => {
                let m = side.client.manifest(&side.repo, reference).await?;
                Ok(Fetched {
                    bytes: m.bytes,
                    media_type: m.media_type,
                    digest: m.digest,
                })
            }
            Src::Local(img) => {
                let Reference::Digest(d) = reference else {
                    return Err(SyncError::Usage(format!(
                        "{reference}: local images are read by digest"
                    )));
                };
                let (bytes, mut media_type) = img
                    .manifest(d)
                    .map_err(|e| SyncError::NotFound(e.to_string()))?;
                if media_type.is_empty() {
                    media_type = ferry_oci::manifest::parse(&bytes, None)
                        .map(|p| p.media_type().to_owned())
                        .map_err(|e| SyncError::Invalid(format!("manifest {d}: {e}")))?;
                }
                Ok(Fetched {
                    bytes,
                    media_type,
                    digest: d.clone(),
                })
            }
        }
    }

    async fn blob(
        &self,
        b: &Descriptor,
        progress: &BlobProgress,
    ) -> Result<BlobOutcome, SyncError> {
        match &self.dst {
            Dst::Local(layout) => {
                if layout.has_verified(&b.digest) {
                    return Ok(BlobOutcome::Present);
                }
                let (stream, size) = self.open(b).await?;
                progress.started(size);
                layout
                    .write_stream(&b.digest, size, stream, |n| progress.advance(n))
                    .await
                    .map_err(|e| SyncError::DigestMismatch(e.to_string()))?;
            }
            Dst::Registry(side) => {
                if side.client.has_blob(&side.repo, &b.digest).await? {
                    return Ok(BlobOutcome::Present);
                }
                let session = side.client.start_upload(&side.repo).await?;
                let (stream, size) = self.open(b).await?;
                progress.started(size);
                let p = progress.clone();
                let body = stream
                    .inspect_ok(move |c| p.advance(c.len() as u64))
                    .boxed();
                side.client
                    .upload_blob(&side.repo, session, &b.digest, size, body, self.chunk_size)
                    .await?;
            }
        }
        Ok(BlobOutcome::Fetched)
    }

    async fn put_manifest(&self, m: &Fetched, reference: &Reference) -> Result<(), SyncError> {
        match &self.dst {
            Dst::Registry(side) => {
                side.client
                    .put_manifest(&side.repo, reference, &m.media_type, m.bytes.clone())
                    .await?;
            }
            Dst::Local(layout) => layout
                .write_bytes(&m.digest, &m.bytes)
                .map_err(|e| SyncError::Storage(e.to_string()))?,
        }
        if *reference == self.top {
            *self.published.lock().expect("published lock") = Some(m.clone());
        }
        Ok(())
    }
}
