//! Blobs: a stored blob is read from the store (or redirected to it); a missing one joins or
//! starts the streaming fill of [`crate::fill`] and is read from the spool file as it grows.
//! Either way, only under a repository known to hold it ([`crate::links`]).

use std::sync::Arc;

use ferry_oci::Digest;
use ferry_oci::range::{self, ByteRange, RangeError};
use ferry_storage::{ByteStream, ChunkReader, FillError};

use crate::error::{MirrorError, Result};
use crate::fill::{Fill, FillContext, Joined, Started};
use crate::links::Kind;
use crate::{Delivery, Mirror, MissGate, Outcome, Target};

/// How a blob's bytes reach the client.
pub enum BlobBody {
    /// Streamed through ferry.
    Stream(ByteStream),
    /// A URL (presigned object-store URL) the client should fetch instead.
    Redirect(String),
}

/// A blob answer.
pub struct BlobAnswer {
    /// Size of the whole blob.
    pub size: u64,
    /// The range served, if the request had one.
    pub range: Option<ByteRange>,
    /// The bytes or a redirect.
    pub body: BlobBody,
    /// How it was obtained.
    pub outcome: Outcome,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>> {
    header
        .map(|h| range::parse(h, size))
        .transpose()
        .map_err(|e| {
            let message = match e {
                RangeError::Malformed(m) => format!("malformed Range {m:?}"),
                RangeError::Unsatisfiable(m, _) => format!("Range {m:?} starts beyond the end"),
            };
            MirrorError::Range { size, message }
        })
}

pub(crate) fn extent(range: Option<ByteRange>, size: u64) -> (u64, u64) {
    range.map_or((0, size), |r| (r.start, r.len()))
}

impl Mirror {
    /// Waits until no download of `d` is in flight any more and says whether the blob is in
    /// the cache. A client draining a cold blob may get its last byte before the blob is stored
    /// (a large file's fsync, an object-store upload): callers that must know the blob is
    /// cached (`ferry sync`) wait here after draining.
    pub async fn settle_blob(&self, d: &Digest) -> bool {
        for fill in self.inner.fills.all_of(d) {
            fill.settled().await;
        }
        self.inner.index.contains(d)
    }

    /// A blob, or the `Range` of it named by `range_header`, delivered as `delivery` allows.
    /// The blob is served only when the repository is known to hold it (see [`crate::links`]):
    /// a cached blob the repository has no link for is confirmed with one upstream `HEAD`
    /// first. `gate` is asked before a download of the blob is started (not for a stored
    /// blob, nor to join a download in flight). When the store fails, the blob comes from the
    /// upstream, uncached (`storage.unavailable`, see [`crate::store_down`]), after asking
    /// `gate`.
    pub async fn blob(
        &self,
        t: &Target,
        d: &Digest,
        range_header: Option<&str>,
        delivery: Delivery,
        gate: &dyn MissGate,
    ) -> Result<BlobAnswer> {
        match self
            .blob_via_cache(t, d, range_header, delivery, gate)
            .await
        {
            Err(e) if self.bypasses_store(&e) => {
                tracing::warn!(digest = %d, error = %e, "the store failed: serving the blob from the upstream, uncached");
                gate.admit_miss().await?;
                self.blob_past_store(t, d, range_header).await
            }
            r => r,
        }
    }

    async fn blob_via_cache(
        &self,
        t: &Target,
        d: &Digest,
        range_header: Option<&str>,
        delivery: Delivery,
        gate: &dyn MissGate,
    ) -> Result<BlobAnswer> {
        let known = self.is_linked(&t.name, &t.repo, d).await?;
        let mut confirmed = known;
        if !confirmed && self.needs_confirmation(t, d).await? {
            self.confirm(t, d, Kind::Blob).await?;
            confirmed = true;
        }
        if let Some(mut a) = self.stored_blob(d, range_header, delivery).await? {
            if !confirmed && !self.is_linked(&t.name, &t.repo, d).await? {
                // Stored since the check above, by a download through another repository.
                self.confirm(t, d, Kind::Blob).await?;
            }
            if !known {
                a.outcome = Outcome::Revalidated;
            }
            self.inner.metrics.cache(&t.name, "blob", true);
            return Ok(a);
        }
        if self.inner.fills.get(&t.name, d).is_none() {
            gate.admit_miss().await?;
        }
        let answer = self.fill_blob(t, d, range_header, confirmed).await?;
        self.inner
            .metrics
            .cache(&t.name, "blob", answer.outcome.is_hit());
        Ok(answer)
    }

    /// Whether serving `d` under a repository with no link for it must wait for an upstream
    /// `HEAD`: it is stored, or downloading through another repository of the same upstream
    /// (downloads through other upstreams are never joined). A download through the same
    /// repository proves the link itself once the upstream answers (see `fill_blob`), and a
    /// blob that is nowhere is fetched through the repository.
    async fn needs_confirmation(&self, t: &Target, d: &Digest) -> Result<bool> {
        if let Some(fill) = self.inner.fills.get(&t.name, d) {
            return Ok(!fill.fetches_from(&t.name, &t.repo));
        }
        Ok(self.inner.index.contains(d) || self.inner.store.stat(d).await?.is_some())
    }

    /// Joins or starts the download of `d` through the request's repository. `confirmed`: the
    /// repository is known to hold the blob; if not, a download from this repository proves it
    /// once the upstream answers, and one from elsewhere needs an upstream `HEAD`.
    async fn fill_blob(
        &self,
        t: &Target,
        d: &Digest,
        range_header: Option<&str>,
        confirmed: bool,
    ) -> Result<BlobAnswer> {
        let ctx = self.fill_context();
        let fill = match self
            .inner
            .fills
            .join_or_start(&ctx, t.upstream.clone(), t.repo.clone(), d)
        {
            Joined::Fill(f, joined) => {
                tracing::debug!(digest = %d, joined, "serving blob from a download in progress");
                f
            }
            Joined::Stored => {
                if !confirmed && !self.is_linked(&t.name, &t.repo, d).await? {
                    self.confirm(t, d, Kind::Blob).await?;
                }
                return self
                    .stored_blob(d, range_header, Delivery::Stream)
                    .await?
                    .ok_or_else(|| MirrorError::Fill {
                        digest: d.to_string(),
                        error: FillError::Vanished,
                    });
            }
        };
        let started = fill.started().await.map_err(|e| with_digest(e, d))?;
        if !confirmed {
            if fill.fetches_from(&t.name, &t.repo) {
                self.link(&t.name, &t.repo, std::slice::from_ref(d)).await;
            } else {
                self.confirm(t, d, Kind::Blob).await?;
            }
        }
        self.follow_fill(&fill, started, t, d, range_header).await
    }

    /// Reads a download in progress from the spool file it writes.
    async fn follow_fill(
        &self,
        fill: &Fill,
        started: Started,
        t: &Target,
        d: &Digest,
        range_header: Option<&str>,
    ) -> Result<BlobAnswer> {
        let Some(size) = started.size else {
            // No Content-Length upstream: wait until the blob is complete and verified, then
            // serve the spool file (it may still be on its way into the store).
            fill.finished().await.map_err(|e| with_digest(e, d))?;
            let size = started.file.metadata()?.len();
            let range = parse_range(range_header, size)?;
            let (offset, len) = extent(range, size);
            let stream = ChunkReader::new(started.file, offset, len).into_stream();
            return Ok(BlobAnswer {
                size,
                range,
                body: BlobBody::Stream(stream),
                outcome: Outcome::Miss,
            });
        };
        let range = parse_range(range_header, size)?;
        let (offset, len) = extent(range, size);
        if let Some(r) = range
            && let Some(forwarded) = self.forward_range(fill, t, d, r, size).await
        {
            return Ok(forwarded);
        }
        let stream = ChunkReader::growing(
            started.file,
            offset,
            len,
            fill.progress(),
            offset + len == size,
        )
        .with_maps(self.inner.store.file_maps())
        .with_tail(fill.tail())
        .into_stream();
        Ok(BlobAnswer {
            size,
            range,
            body: BlobBody::Stream(stream),
            outcome: Outcome::Miss,
        })
    }

    /// A client range that starts beyond what the download has written, asked of the upstream
    /// at once (`cache.cold_ranges: forward`, for lazy-pulling clients), while the whole
    /// download goes on for the cache. `None`: follow the download instead (forwarding is
    /// off, the range has started to arrive, or the upstream did not answer that range).
    /// A forwarded range is the upstream's bytes as they come: a piece of a blob cannot be
    /// checked against the blob's digest (the cached copy is verified as always).
    async fn forward_range(
        &self,
        fill: &Fill,
        t: &Target,
        d: &Digest,
        r: ByteRange,
        size: u64,
    ) -> Option<BlobAnswer> {
        if !self.settings().forward_cold_ranges {
            return None;
        }
        let written = match *fill.progress().borrow() {
            ferry_storage::Progress::Growing(n) => n,
            _ => return None,
        };
        if r.start < written {
            return None;
        }
        let dl = t
            .upstream
            .blob_range(&t.repo, d, r.start, Some(r.end))
            .await
            .ok()?;
        if dl.offset != r.start || dl.size != Some(size) {
            return None;
        }
        tracing::debug!(digest = %d, start = r.start, end = r.end, written, "cold range forwarded upstream");
        Some(BlobAnswer {
            size,
            range: Some(r),
            body: BlobBody::Stream(limit(dl.stream, r.len())),
            outcome: Outcome::Miss,
        })
    }

    /// A stored blob, or `None` when it is not in the store.
    async fn stored_blob(
        &self,
        d: &Digest,
        range_header: Option<&str>,
        delivery: Delivery,
    ) -> Result<Option<BlobAnswer>> {
        let store = &self.inner.store;
        let Some(size) = self.stored_size(d).await? else {
            return Ok(None);
        };
        let range = parse_range(range_header, size)?;
        let may_redirect = delivery == Delivery::MayRedirect;
        if let Some(ttl) = self.settings().redirect_ttl.filter(|_| may_redirect)
            && let Some(url) = store.presign(d, ttl).await?
        {
            self.inner.index.touch(d);
            return Ok(Some(BlobAnswer {
                size,
                range,
                body: BlobBody::Redirect(url),
                outcome: Outcome::Hit,
            }));
        }
        let (offset, len) = extent(range, size);
        match store.open(d, offset, Some(len)).await? {
            Some(body) => {
                self.inner.index.touch(d);
                Ok(Some(BlobAnswer {
                    size: body.size,
                    range,
                    body: BlobBody::Stream(body.stream),
                    outcome: Outcome::Hit,
                }))
            }
            None => {
                self.inner.index.remove(d);
                Ok(None)
            }
        }
    }

    /// A blob's size. A repository not known to hold the blob is asked first (one upstream
    /// `HEAD`, which also gives the size); otherwise the upstream is asked only when the blob is
    /// neither stored nor downloading.
    pub async fn blob_head(&self, t: &Target, d: &Digest) -> Result<(u64, Outcome)> {
        match self.blob_head_via_cache(t, d).await {
            Err(e) if self.bypasses_store(&e) => self.blob_head_past_store(t, d).await,
            r => r,
        }
    }

    async fn blob_head_via_cache(&self, t: &Target, d: &Digest) -> Result<(u64, Outcome)> {
        let known = self.is_linked(&t.name, &t.repo, d).await?;
        let confirmed = match known {
            true => None,
            false => Some(self.confirm(t, d, Kind::Blob).await?),
        };
        if let Some(size) = self.stored_size(d).await? {
            let outcome = if known {
                Outcome::Hit
            } else {
                Outcome::Revalidated
            };
            return Ok((size, outcome));
        }
        if let Some(fill) = self.inner.fills.get(&t.name, d)
            && let Ok(Some(size)) = fill.started().await.map(|s| s.size)
        {
            return Ok((size, Outcome::Miss));
        }
        let size = match confirmed {
            Some(size) => size,
            None => t.upstream.blob_head(&t.repo, d).await?,
        };
        size.map(|s| (s, Outcome::Miss))
            .ok_or_else(|| no_length(t, d))
    }

    /// The size of a stored blob, from the index or the store.
    async fn stored_size(&self, d: &Digest) -> Result<Option<u64>> {
        if let Some(size) = self.inner.index.size(d) {
            return Ok(Some(size));
        }
        let info = self.inner.store.stat(d).await?;
        if let Some(info) = info {
            self.inner.index.insert(d.clone(), info.size);
        }
        Ok(info.map(|i| i.size))
    }

    fn fill_context(&self) -> FillContext {
        FillContext {
            store: self.inner.store.clone(),
            index: Arc::clone(&self.inner.index),
            metrics: self.inner.metrics.clone(),
            timeout: self.settings().fill_timeout,
            tasks: self.inner.tasks.clone(),
            stop: self.inner.stop.clone(),
        }
    }
}

/// An upstream answer for blob `d` that did not say its length.
pub(crate) fn no_length(t: &Target, d: &Digest) -> MirrorError {
    MirrorError::Upstream(crate::UpstreamError::Invalid {
        upstream: t.name.clone(),
        message: format!("no Content-Length in the answer for {d}"),
    })
}

fn with_digest(e: MirrorError, d: &Digest) -> MirrorError {
    match e {
        MirrorError::Fill { digest, error } if digest.is_empty() => MirrorError::Fill {
            digest: d.to_string(),
            error,
        },
        other => other,
    }
}

/// The first `len` bytes of `stream` (an upstream may send past the range's end).
pub(crate) fn limit(stream: ByteStream, len: u64) -> ByteStream {
    use futures_util::StreamExt;
    stream
        .scan(len, |left, item| {
            let out = match item {
                Ok(_) if *left == 0 => None,
                Ok(b) => {
                    let n = (b.len() as u64).min(*left);
                    *left -= n;
                    Some(Ok(b.slice(..n as usize)))
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .boxed()
}
