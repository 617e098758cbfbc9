//! A circuit breaker in front of a shared store (the object store): a store that hangs fails a
//! request within a bound instead of holding it through every timeout and retry, and after a
//! failure the next requests fail at once (for [`COOL_DOWN`]) instead of each waiting again.
//! While the breaker is open, `/readyz` reports not ready and no presigned redirect is handed
//! out (a client would be sent to a dead store); a local tier in front of this store still
//! serves what it holds. After the cool-down, the next request tries the store again: success
//! closes the breaker.
//!
//! Bounded: the quick calls (stat, open, small reads and writes, metadata, links, the
//! readiness probe). Not bounded, but counted: `ingest` (a large upload takes as long as it
//! takes), listing, and fill claims (which wait on purpose).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_oci::Digest;

use crate::{
    BlobEntry, BlobInfo, BlobStore, FileMaps, FillClaim, OpenedBlob, Result, StorageError,
};

/// How long the breaker stays open after a failure.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// Longest store silence after which a redirect is preceded by a lookup.
pub const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// A store behind a circuit breaker.
pub struct BreakerStore {
    inner: Arc<dyn BlobStore>,
    bound: Duration,
    open_until: Mutex<Option<Instant>>,
    /// When the store last answered; a redirect after a silence checks it first.
    last_ok: Mutex<Instant>,
}

impl BreakerStore {
    /// `inner` with quick calls bounded by `bound`.
    pub fn new(inner: Arc<dyn BlobStore>, bound: Duration) -> Self {
        BreakerStore {
            inner,
            bound,
            open_until: Mutex::new(None),
            last_ok: Mutex::new(Instant::now()),
        }
    }

    /// Whether requests currently fail at once.
    pub fn is_open(&self) -> bool {
        self.open_until
            .lock()
            .expect("breaker lock")
            .is_some_and(|t| Instant::now() < t)
    }

    fn refused(&self) -> StorageError {
        StorageError::Backend(format!(
            "the {} store failed within the last {} s; not asking it again yet",
            self.inner.kind(),
            COOL_DOWN.as_secs()
        ))
    }

    fn record<T>(&self, r: &Result<T>) {
        let mut open = self.open_until.lock().expect("breaker lock");
        match r {
            Ok(_) => {
                *open = None;
                *self.last_ok.lock().expect("breaker lock") = Instant::now();
            }
            // A bad key is the caller's mistake, not the store's health.
            Err(StorageError::InvalidKey(_)) => {}
            Err(e) => {
                if open.is_none() {
                    tracing::warn!(store = self.inner.kind(), error = %e, "store failed; failing its requests at once for {} s", COOL_DOWN.as_secs());
                }
                *open = Some(Instant::now() + COOL_DOWN);
            }
        }
    }

    /// Runs a quick call: refused while open, bounded, and recorded.
    async fn quick<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_open() {
            return Err(self.refused());
        }
        let r = match tokio::time::timeout(self.bound, call).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::Backend(format!(
                "the {} store did not answer within {} s",
                self.inner.kind(),
                self.bound.as_secs()
            ))),
        };
        self.record(&r);
        r
    }

    /// Runs a long call: refused while open, recorded, not bounded.
    async fn long<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_open() {
            return Err(self.refused());
        }
        let r = call.await;
        self.record(&r);
        r
    }
}

#[async_trait]
impl BlobStore for BreakerStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn file_maps(&self) -> Option<FileMaps> {
        self.inner.file_maps()
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        self.quick(self.inner.stat(digest)).await
    }

    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<OpenedBlob>> {
        self.quick(self.inner.open(digest, offset, len)).await
    }

    async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>> {
        self.quick(self.inner.read_all(digest)).await
    }

    async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.quick(self.inner.put_verified(digest, bytes)).await
    }

    async fn ingest(&self, digest: &Digest, spool: &Path) -> Result<()> {
        self.long(self.inner.ingest(digest, spool)).await
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.quick(self.inner.delete(digest)).await
    }

    async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<Option<String>> {
        if self.is_open() {
            return Ok(None);
        }
        // Signing needs no store request, so a dead store would still get clients sent to
        // it: after a silence, one bounded lookup first (at most one per HEALTH_EVERY).
        let quiet = self.last_ok.lock().expect("breaker lock").elapsed() > HEALTH_EVERY;
        if quiet && self.quick(self.inner.stat(digest)).await.is_err() {
            return Ok(None);
        }
        self.inner.presign(digest, ttl).await
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        self.long(self.inner.list()).await
    }

    async fn touch(&self, digests: &[Digest], when: SystemTime) -> Result<()> {
        self.long(self.inner.touch(digests, when)).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Bytes>> {
        self.quick(self.inner.get_meta(key)).await
    }

    async fn put_meta(&self, key: &str, value: Bytes) -> Result<()> {
        self.quick(self.inner.put_meta(key, value)).await
    }

    async fn delete_meta(&self, key: &str) -> Result<()> {
        self.quick(self.inner.delete_meta(key)).await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        self.long(self.inner.list_meta(prefix)).await
    }

    async fn put_links(&self, upstream: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        self.quick(self.inner.put_links(upstream, repository, digests))
            .await
    }

    async fn has_link(&self, upstream: &str, repository: &str, digest: &Digest) -> Result<bool> {
        self.quick(self.inner.has_link(upstream, repository, digest))
            .await
    }

    async fn list_links(&self, upstream: &str, repository: &str) -> Result<Vec<Digest>> {
        self.long(self.inner.list_links(upstream, repository)).await
    }

    fn spool_dir(&self) -> PathBuf {
        self.inner.spool_dir()
    }

    async fn claim_fill(&self, source: &str, digest: &Digest, wait: Duration) -> Result<FillClaim> {
        self.long(self.inner.claim_fill(source, digest, wait)).await
    }

    async fn check_writable(&self) -> Result<()> {
        self.quick(self.inner.check_writable()).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
