//! Copying an image from one registry to another (`ferry copy`): a [`Transfer`] whose source is
//! a registry's pull API and whose destination is another registry's push API.
//!
//! Per blob: `HEAD` at the destination (present: skip); when both sides are one registry, a
//! cross-repository mount; otherwise the source download streams straight into the upload
//! (one `PUT`, or `PATCH` chunks for blobs above the chunk size), hashed on the way so a source
//! that sends wrong bytes is named a digest mismatch. Manifests are pushed with their exact
//! source bytes and media type, platform manifests before the index.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use ferry_oci::manifest::Descriptor;
use ferry_oci::{Digest, DigestVerifier, ImageRef, Reference, RepoName};
use ferry_upstream::Upstream;
use ferry_upstream::push::{Mount, PushStream};
use futures_util::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::none_or;
use crate::error::SyncError;
use crate::progress::{BlobOutcome, BlobProgress, Event, Reporter};
use crate::referrers::{self, Referrers};
use crate::retry::RetryPolicy;
use crate::summary::ImageResult;
use crate::walk::{Fetched, Transfer, Walk};

/// One side of a copy: a registry client and a repository in it.
#[derive(Clone)]
pub struct Side {
    /// The registry client (the destination's asks for push tokens).
    pub client: Arc<Upstream>,
    /// The repository.
    pub repo: RepoName,
}

/// Source and destination of a copy.
pub struct RegistryTransfer {
    src: Side,
    dst: Side,
    mount: bool,
    chunk_size: u64,
}

impl RegistryTransfer {
    /// Copies from `src` to `dst`; `same_registry` enables cross-repository mounts.
    pub fn new(src: Side, dst: Side, same_registry: bool, chunk_size: u64) -> Self {
        let mount = same_registry && src.repo != dst.repo;
        RegistryTransfer {
            src,
            dst,
            mount,
            chunk_size,
        }
    }

    async fn upload(
        &self,
        blob: &Descriptor,
        progress: &BlobProgress,
    ) -> Result<BlobOutcome, SyncError> {
        let session = if self.mount {
            match self
                .dst
                .client
                .mount_blob(&self.dst.repo, &blob.digest, &self.src.repo)
                .await?
            {
                Mount::Mounted => return Ok(BlobOutcome::Mounted),
                Mount::Session(s) => s,
            }
        } else {
            self.dst.client.start_upload(&self.dst.repo).await?
        };
        let dl = self
            .src
            .client
            .blob(&self.src.repo, &blob.digest, 0)
            .await?;
        let size = dl.size.unwrap_or(blob.size);
        if blob.size != 0 && size != blob.size {
            return Err(SyncError::Invalid(format!(
                "the source sends {size} bytes, the manifest says {}",
                blob.size
            )));
        }
        progress.started(size);
        let mismatch = Arc::new(AtomicBool::new(false));
        let body = Verified::new(dl.stream, &blob.digest, size, progress.clone(), &mismatch);
        let r = self
            .dst
            .client
            .upload_blob(
                &self.dst.repo,
                session,
                &blob.digest,
                size,
                body.boxed(),
                self.chunk_size,
            )
            .await;
        match r {
            Err(_) if mismatch.load(Ordering::SeqCst) => Err(SyncError::DigestMismatch(
                "the source registry sent content that does not hash to the digest".into(),
            )),
            r => r.map(|()| BlobOutcome::Fetched).map_err(SyncError::from),
        }
    }
}

impl Transfer for RegistryTransfer {
    async fn manifest(&self, reference: &Reference) -> Result<Fetched, SyncError> {
        let m = self.src.client.manifest(&self.src.repo, reference).await?;
        Ok(Fetched {
            bytes: m.bytes,
            media_type: m.media_type,
            digest: m.digest,
        })
    }

    async fn blob(
        &self,
        blob: &Descriptor,
        progress: &BlobProgress,
    ) -> Result<BlobOutcome, SyncError> {
        if self
            .dst
            .client
            .has_blob(&self.dst.repo, &blob.digest)
            .await?
        {
            return Ok(BlobOutcome::Present);
        }
        self.upload(blob, progress).await
    }

    async fn put_manifest(&self, m: &Fetched, reference: &Reference) -> Result<(), SyncError> {
        self.dst
            .client
            .put_manifest(&self.dst.repo, reference, &m.media_type, m.bytes.clone())
            .await?;
        Ok(())
    }

    async fn referrers(&self, subject: &Digest) -> Result<Option<Referrers>, SyncError> {
        let (src, repo) = (&self.src.client, &self.src.repo);
        let api = match src.referrers(repo, subject, None).await {
            Ok(a) => a,
            Err(e) => none_or(e.into()).map(|()| None)?,
        };
        if let Some((body, content_type)) = api {
            let list = referrers::listed(&body, Some(&content_type))?;
            if list.is_empty() {
                return Ok(None);
            }
            // A destination without the API finds referrers only by the fallback tag.
            let dst_api = self
                .dst
                .client
                .referrers(&self.dst.repo, subject, None)
                .await;
            let tag_index = (!matches!(dst_api, Ok(Some(_)))).then(|| referrers::api_index(body));
            return Ok(Some(Referrers { list, tag_index }));
        }
        let tag = Reference::Tag(referrers::fallback_tag(subject));
        if let Err(e) = src.manifest_head(repo, &tag).await {
            none_or(e.into())?;
            return Ok(None);
        }
        let index = self.manifest(&tag).await?;
        let list = referrers::listed(&index.bytes, Some(&index.media_type))?;
        Ok(Some(Referrers {
            list,
            tag_index: Some(index),
        }))
    }
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Copy only this platform's manifest of an index (published under the tag).
    pub platform: Option<String>,
    /// Blobs above this size are uploaded in `PATCH` chunks of this size.
    pub chunk_size: u64,
    /// Blob transfers in parallel.
    pub jobs: usize,
    /// Retries.
    pub retry: RetryPolicy,
}

/// Copies `src` to `dst` (clients already built for each registry).
pub async fn copy_image(
    (src, src_client): (&ImageRef, Arc<Upstream>),
    (dst, dst_client): (&ImageRef, Arc<Upstream>),
    opts: &CopyOptions,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> ImageResult {
    let label: Arc<str> = format!("{src} -> {dst}").into();
    let start = Instant::now();
    reporter.event(Event::ImageStarted {
        image: label.clone(),
    });
    let same_registry = src.registry == dst.registry;
    let transfer = RegistryTransfer::new(
        Side {
            client: src_client,
            repo: src.repository.clone(),
        },
        Side {
            client: dst_client,
            repo: dst.repository.clone(),
        },
        same_registry,
        opts.chunk_size,
    );
    let walk = Walk {
        image: label.clone(),
        reporter: reporter.clone(),
        platforms: opts.platform.iter().cloned().collect(),
        single_platform: true,
        retry: opts.retry,
        permits: Arc::new(Semaphore::new(opts.jobs.max(1))),
        parallel: opts.jobs.max(1),
        with_referrers: true,
    };
    let (reference, publish_as) = (src.reference(), destination_reference(src, dst));
    let result = tokio::select! {
        r = walk.run(&transfer, &reference, &publish_as) => r,
        () = cancel.cancelled() => Err(SyncError::Cancelled),
    };
    reporter.event(Event::ImageDone {
        image: label.clone(),
        result: result.clone(),
    });
    ImageResult {
        image: label.to_string(),
        result,
        elapsed: start.elapsed(),
    }
}

/// The destination's tag (or digest); when it names neither, the source's.
pub fn destination_reference(src: &ImageRef, dst: &ImageRef) -> Reference {
    match (&dst.tag, &dst.digest) {
        (Some(t), _) => Reference::Tag(t.clone()),
        (None, Some(d)) => Reference::Digest(d.clone()),
        (None, None) => src.reference(),
    }
}

/// A blob stream that hashes and counts what passes, reports progress, and turns a wrong
/// digest or length at the end into an error (so the upload is aborted, never committed).
struct Verified {
    inner: PushStream,
    hasher: Option<DigestVerifier>,
    expected: Digest,
    size: u64,
    seen: u64,
    progress: BlobProgress,
    mismatch: Arc<AtomicBool>,
}

impl Verified {
    fn new(
        inner: PushStream,
        expected: &Digest,
        size: u64,
        progress: BlobProgress,
        mismatch: &Arc<AtomicBool>,
    ) -> Self {
        Verified {
            inner,
            hasher: Some(DigestVerifier::for_digest(expected)),
            expected: expected.clone(),
            size,
            seen: 0,
            progress,
            mismatch: mismatch.clone(),
        }
    }

    fn check_end(&mut self) -> Option<std::io::Result<Bytes>> {
        let hasher = self.hasher.take()?;
        if self.seen != self.size {
            return Some(Err(std::io::Error::other(format!(
                "source sent {} of {} bytes",
                self.seen, self.size
            ))));
        }
        if hasher.finish() != self.expected {
            self.mismatch.store(true, Ordering::SeqCst);
            return Some(Err(std::io::Error::other("digest mismatch")));
        }
        None
    }
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "source sent more bytes than the blob's size",
                    ))));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                this.progress.advance(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => Poll::Ready(this.check_end()),
            other => other,
        }
    }
}
