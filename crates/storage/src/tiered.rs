//! A local-disk tier of hot blobs in front of a shared store (an object store): the intranet
//! cache layer in front of a central mirror's bucket.
//!
//! - Reads look on local disk first; a blob found only in the shared store is served from
//!   there (streamed, or redirected when presigning is on) and copied to local disk in the
//!   background, verified against its digest, so the next request is served locally.
//! - Writes go to the shared store first (where the other replicas see them), then the verified
//!   spool file is renamed into the local tier: a freshly downloaded blob is hot.
//! - Metadata, listing (for the cache-wide eviction), fill claims and presigning of blobs that
//!   are not local belong to the shared store. A blob on local disk is never redirected: it is
//!   served from here, which is the point of the tier.
//! - The tier has its own size limit: above it, the least recently served blobs leave the local
//!   disk only (they stay in the shared store). Deleting a blob (cache-wide eviction) removes it
//!   from both.

mod lru;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_oci::{Digest, DigestVerifier};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fs::FsStore;
use crate::spool::temp_path;
use crate::{
    BlobEntry, BlobInfo, BlobStore, FileMaps, FillClaim, OpenedBlob, Result, StorageError,
};

/// Background copies from the shared store to local disk at once.
const COPIES: usize = 2;

/// A local [`FsStore`] tier over a shared store.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

struct Inner {
    local: FsStore,
    remote: Arc<dyn BlobStore>,
    lru: Mutex<lru::Lru>,
    copying: Mutex<HashSet<Digest>>,
    copies: Semaphore,
    /// The background copies, waited for by [`BlobStore::close`].
    copying_tasks: TaskTracker,
    stop: CancellationToken,
}

impl TieredStore {
    /// A tier of at most `max_bytes` in `local` over `remote`, indexing what `local` holds.
    pub async fn new(local: FsStore, remote: Arc<dyn BlobStore>, max_bytes: u64) -> Result<Self> {
        let entries = local.list().await?;
        let store = TieredStore {
            inner: Arc::new(Inner {
                local,
                remote,
                lru: Mutex::new(lru::Lru::new(max_bytes, entries)),
                copying: Mutex::default(),
                copies: Semaphore::new(COPIES),
                copying_tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        };
        store.trim().await;
        Ok(store)
    }

    /// Bytes held on local disk.
    pub fn local_bytes(&self) -> u64 {
        self.lru().total()
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, lru::Lru> {
        self.inner.lru.lock().expect("tier lock")
    }

    fn is_local(&self, d: &Digest) -> bool {
        self.lru().contains(d)
    }

    /// Records a blob now on local disk and drops the coldest ones above the limit.
    async fn admit(&self, d: &Digest, size: u64) {
        self.lru().insert(d.clone(), size, SystemTime::now());
        self.trim().await;
    }

    async fn trim(&self) {
        let victims = self.lru().victims();
        for d in victims {
            if let Err(e) = self.inner.local.delete(&d).await {
                tracing::warn!(digest = %d, error = %e, "could not drop a blob from the local tier");
            }
        }
    }

    /// Copies a blob from the shared store to local disk in the background (once at a time).
    fn copy_in_background(&self, d: &Digest) {
        if !self
            .inner
            .copying
            .lock()
            .expect("tier lock")
            .insert(d.clone())
        {
            return;
        }
        let (this, d) = (self.clone(), d.clone());
        self.inner.copying_tasks.spawn(async move {
            let tmp = temp_path(&this.inner.local.spool_dir());
            let copied = tokio::select! {
                _ = this.inner.stop.cancelled() => None,
                r = async {
                    let _permit = this.inner.copies.acquire().await;
                    this.copy_local(&d, &tmp).await
                } => Some(r),
            };
            match copied {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(digest = %d, error = %e, "could not copy a blob to the local tier")
                }
                None => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                }
            }
            this.inner.copying.lock().expect("tier lock").remove(&d);
        });
    }

    async fn copy_local(&self, d: &Digest, tmp: &Path) -> Result<()> {
        if self.is_local(d) {
            return Ok(());
        }
        let Some(body) = self.inner.remote.open(d, 0, None).await? else {
            return Ok(());
        };
        let written = write_verified(body, d, tmp).await;
        match written {
            Ok(size) => {
                self.inner.local.ingest(d, tmp).await?;
                self.admit(d, size).await;
                Ok(())
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(tmp).await;
                Err(e)
            }
        }
    }
}

/// Writes a blob's stream to `path`, checking length and digest; fsyncs. Returns the size.
async fn write_verified(body: OpenedBlob, d: &Digest, path: &Path) -> Result<u64> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = DigestVerifier::for_digest(d);
    let mut stream = body.stream;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    file.sync_all().await?;
    if n != body.size || hasher.finish() != *d {
        return Err(StorageError::Backend(format!(
            "copy of {d} from the shared store did not verify"
        )));
    }
    Ok(n)
}

#[async_trait]
impl BlobStore for TieredStore {
    fn kind(&self) -> &'static str {
        "tiered"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn file_maps(&self) -> Option<FileMaps> {
        self.inner.local.file_maps()
    }

    async fn stat(&self, d: &Digest) -> Result<Option<BlobInfo>> {
        match self.inner.local.stat(d).await? {
            Some(info) => Ok(Some(info)),
            None => self.inner.remote.stat(d).await,
        }
    }

    async fn open(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<Option<OpenedBlob>> {
        if let Some(body) = self.inner.local.open(d, offset, len).await? {
            self.lru().touch(d, SystemTime::now());
            return Ok(Some(body));
        }
        self.lru().remove(d);
        let body = self.inner.remote.open(d, offset, len).await?;
        if body.is_some() {
            self.copy_in_background(d);
        }
        Ok(body)
    }

    async fn read_all(&self, d: &Digest) -> Result<Option<Bytes>> {
        match self.inner.local.read_all(d).await? {
            Some(b) => Ok(Some(b)),
            None => self.inner.remote.read_all(d).await,
        }
    }

    async fn put_verified(&self, d: &Digest, bytes: Bytes) -> Result<()> {
        self.inner.remote.put_verified(d, bytes.clone()).await?;
        let size = bytes.len() as u64;
        self.inner.local.put_verified(d, bytes).await?;
        self.admit(d, size).await;
        Ok(())
    }

    async fn ingest(&self, d: &Digest, spool: &Path) -> Result<()> {
        // The shared store consumes its own link to the spool file; the tier keeps the file.
        let link = temp_path(&self.inner.local.spool_dir());
        let linked = std::fs::hard_link(spool, &link);
        if let Err(e) = linked {
            let _ = std::fs::remove_file(spool);
            return Err(e.into());
        }
        if let Err(e) = self.inner.remote.ingest(d, &link).await {
            let _ = std::fs::remove_file(spool);
            return Err(e);
        }
        let size = std::fs::metadata(spool)?.len();
        self.inner.local.ingest(d, spool).await?;
        self.admit(d, size).await;
        Ok(())
    }

    async fn delete(&self, d: &Digest) -> Result<()> {
        self.inner.remote.delete(d).await?;
        self.lru().remove(d);
        self.inner.local.delete(d).await
    }

    async fn presign(&self, d: &Digest, ttl: Duration) -> Result<Option<String>> {
        if self.is_local(d) && self.inner.local.stat(d).await?.is_some() {
            return Ok(None);
        }
        let url = self.inner.remote.presign(d, ttl).await?;
        if url.is_some() {
            self.copy_in_background(d);
        }
        Ok(url)
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        self.inner.remote.list().await
    }

    async fn touch(&self, digests: &[Digest], when: SystemTime) -> Result<()> {
        let local: Vec<Digest> = digests
            .iter()
            .filter(|d| self.is_local(d))
            .cloned()
            .collect();
        self.inner.local.touch(&local, when).await?;
        self.inner.remote.touch(digests, when).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.remote.get_meta(key).await
    }

    async fn put_meta(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner.remote.put_meta(key, value).await
    }

    async fn delete_meta(&self, key: &str) -> Result<()> {
        self.inner.remote.delete_meta(key).await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.remote.list_meta(prefix).await
    }

    async fn put_links(&self, upstream: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        self.inner
            .remote
            .put_links(upstream, repository, digests)
            .await
    }

    async fn has_link(&self, upstream: &str, repository: &str, digest: &Digest) -> Result<bool> {
        self.inner
            .remote
            .has_link(upstream, repository, digest)
            .await
    }

    async fn list_links(&self, upstream: &str, repository: &str) -> Result<Vec<Digest>> {
        self.inner.remote.list_links(upstream, repository).await
    }

    fn spool_dir(&self) -> PathBuf {
        self.inner.local.spool_dir()
    }

    async fn check_writable(&self) -> Result<()> {
        self.inner.local.check_writable().await?;
        self.inner.remote.check_writable().await
    }

    async fn claim_fill(&self, source: &str, d: &Digest, wait: Duration) -> Result<FillClaim> {
        self.inner.remote.claim_fill(source, d, wait).await
    }

    /// Stops the copies to local disk (a copy cut short removes its temporary file), waits for
    /// them, then closes the shared store.
    async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.copying_tasks.close();
        self.inner.copying_tasks.wait().await;
        self.inner.remote.close().await;
    }
}

#[cfg(test)]
mod tests;
