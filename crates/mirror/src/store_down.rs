//! When the store fails (a hung or dead object store behind its circuit breaker, a broken
//! disk), blob and manifest requests go straight to the upstream, through the request's own
//! repository, and nothing is cached (`storage.unavailable: upstream`, the default; `fail`
//! answers 503 instead). A client with `redirect: true` is then served by ferry itself rather
//! than sent to a dead store. A whole blob is still checked against its digest: its last
//! chunk is held back until the hash matches, so a client never receives a complete wrong blob.

use std::sync::Arc;

use bytes::Bytes;
use ferry_oci::{Digest, DigestVerifier, Reference};
use ferry_storage::{ByteStream, FillError};
use futures_util::StreamExt;

use crate::blobs::{BlobAnswer, BlobBody, extent, limit, no_length, parse_range};
use crate::error::{MirrorError, Result};
use crate::manifests::{CachedManifest, ManifestAnswer};
use crate::{Mirror, Outcome, Target};

impl Mirror {
    /// Whether a failing store leaves this replica in service: requests go to the upstream
    /// when the store fails (`storage.unavailable: upstream`) and the store is shared by every
    /// replica (an object store), so taking them all out of service would turn a store outage
    /// into a mirror outage. A broken local disk still makes `/readyz` say not ready (other
    /// replicas have their own).
    pub fn serves_past_failing_store(&self) -> bool {
        self.settings().upstream_when_store_fails && self.inner.store.is_shared()
    }

    /// Whether a request that failed with `e` goes to the upstream past the store instead.
    pub(crate) fn bypasses_store(&self, e: &MirrorError) -> bool {
        let store_failed = matches!(
            e,
            MirrorError::Storage(_)
                | MirrorError::Fill {
                    error: FillError::Storage(_),
                    ..
                }
        );
        store_failed && self.settings().upstream_when_store_fails
    }

    /// Blob `d` (or the range asked) from the upstream, uncached.
    pub(crate) async fn blob_past_store(
        &self,
        t: &Target,
        d: &Digest,
        range_header: Option<&str>,
    ) -> Result<BlobAnswer> {
        tracing::debug!(digest = %d, upstream = %t.name, "store failing: blob from the upstream, uncached");
        let (size, range, stream) = match range_header {
            None => {
                let dl = t.upstream.blob(&t.repo, d, 0).await?;
                let size = dl.size.ok_or_else(|| no_length(t, d))?;
                (size, None, verified(dl.stream, d.clone(), size))
            }
            Some(_) => {
                let size = t.upstream.blob_head(&t.repo, d).await?;
                let size = size.ok_or_else(|| no_length(t, d))?;
                let range = parse_range(range_header, size)?;
                let (offset, len) = extent(range, size);
                let dl = t
                    .upstream
                    .blob_range(&t.repo, d, offset, Some(offset + len - 1));
                let dl = dl.await?;
                let skip = offset.saturating_sub(dl.offset);
                (size, range, limit(skipped(dl.stream, skip), len))
            }
        };
        self.inner.metrics.cache(&t.name, "blob", false);
        Ok(BlobAnswer {
            size,
            range,
            body: BlobBody::Stream(stream),
            outcome: Outcome::Bypass,
        })
    }

    /// A blob's size from the upstream (`HEAD`).
    pub(crate) async fn blob_head_past_store(
        &self,
        t: &Target,
        d: &Digest,
    ) -> Result<(u64, Outcome)> {
        let size = t.upstream.blob_head(&t.repo, d).await?;
        Ok((size.ok_or_else(|| no_length(t, d))?, Outcome::Bypass))
    }

    /// A manifest from the upstream (checked against a digest reference), uncached.
    pub(crate) async fn manifest_past_store(
        &self,
        t: &Target,
        reference: &Reference,
    ) -> Result<ManifestAnswer> {
        tracing::debug!(%reference, upstream = %t.name, "store failing: manifest from the upstream, uncached");
        let m = t.upstream.manifest(&t.repo, reference).await?;
        self.inner.metrics.cache(&t.name, "manifest", false);
        let m = Arc::new(CachedManifest {
            bytes: m.bytes,
            media_type: m.media_type,
            digest: m.digest,
        });
        Ok(ManifestAnswer::new((m, Outcome::Bypass)))
    }
}

/// `stream` without its first `n` bytes (an upstream that ignored `Range`).
fn skipped(stream: ByteStream, n: u64) -> ByteStream {
    stream
        .scan(n, |left, item| {
            let out = match item {
                Ok(b) if *left >= b.len() as u64 => {
                    *left -= b.len() as u64;
                    Bytes::new()
                }
                Ok(b) => {
                    let cut = std::mem::take(left) as usize;
                    b.slice(cut..)
                }
                Err(e) => return std::future::ready(Some(Err(e))),
            };
            std::future::ready(Some(Ok(out)))
        })
        .filter(|r| std::future::ready(!matches!(r, Ok(b) if b.is_empty())))
        .boxed()
}

/// The whole blob's bytes, hashed as they pass; the last chunk is held back until the
/// stream ended with `size` bytes hashing to `d`, and replaced by an error otherwise.
fn verified(stream: ByteStream, d: Digest, size: u64) -> ByteStream {
    struct State {
        inner: ByteStream,
        hasher: Option<DigestVerifier>,
        held: Option<Bytes>,
        seen: u64,
    }
    let state = State {
        hasher: Some(DigestVerifier::for_digest(&d)),
        inner: stream,
        held: None,
        seen: 0,
    };
    futures_util::stream::unfold(state, move |mut st| {
        let d = d.clone();
        async move {
            loop {
                let hasher = st.hasher.as_mut()?;
                match st.inner.next().await {
                    Some(Ok(b)) => {
                        hasher.update(&b);
                        st.seen += b.len() as u64;
                        if let Some(prev) = st.held.replace(b) {
                            return Some((Ok(prev), st));
                        }
                    }
                    Some(Err(e)) => {
                        st.hasher = None;
                        return Some((Err(e), st));
                    }
                    None => {
                        let hashed = st.hasher.take()?.finish();
                        let ok = st.seen == size && hashed == d;
                        let last = match (ok, st.held.take()) {
                            (true, Some(b)) => Ok(b),
                            (true, None) => return None,
                            (false, _) => Err(std::io::Error::other(format!(
                                "the upstream's bytes for {d} do not match the digest ({} of {size} bytes)",
                                st.seen
                            ))),
                        };
                        return Some((last, st));
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let v: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures_util::stream::iter(v).boxed()
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let items: Vec<_> = s.collect().await;
        for i in items {
            match i {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_matching_blob_passes_whole() {
        let d = Digest::sha256_of(b"hello world");
        let (body, err) = collect(verified(chunks(&[b"hello", b" ", b"world"]), d, 11)).await;
        assert_eq!(body, b"hello world");
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn wrong_bytes_lose_their_last_chunk_to_an_error() {
        let d = Digest::sha256_of(b"hello world");
        let (body, err) = collect(verified(chunks(&[b"hello", b" ", b"WORLD"]), d, 11)).await;
        assert_eq!(body, b"hello ", "the last chunk is held back");
        assert!(err.unwrap().contains("do not match the digest"));
        let d = Digest::sha256_of(b"hello world");
        let (_, err) = collect(verified(chunks(&[b"hello"]), d, 11)).await;
        assert!(err.unwrap().contains("5 of 11 bytes"));
    }

    #[tokio::test]
    async fn skipping_drops_a_prefix_across_chunks() {
        let (body, _) = collect(skipped(chunks(&[b"abc", b"def", b"gh"]), 4)).await;
        assert_eq!(body, b"efgh");
    }
}
