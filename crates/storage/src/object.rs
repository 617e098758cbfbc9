//! The object-store backend: blobs and metadata in an S3-compatible bucket, through Apache
//! OpenDAL (AWS S3, MinIO, Ceph RGW, Alibaba OSS, Tencent COS, Cloudflare R2, SeaweedFS, ...).
//!
//! Several stateless replicas can share one bucket: everything a replica needs is in the store
//! (layout in [`keys`]); the local disk only holds spool files of downloads in progress.
//!
//! - Writing: the cache engine verifies a download in a local spool file, then [`ingest`]
//!   uploads it (a multipart upload in parts of `part_size`, so memory stays bounded whatever
//!   the blob size) and deletes the spool file. An object becomes visible only when its upload
//!   completes (S3 semantics), so no partial blob is ever readable; an interrupted upload
//!   leaves at most an incomplete multipart upload, which the store never lists as an object.
//! - Reading: ranged GETs streamed in large chunks, or a presigned GET URL ([`presign`]) that
//!   the server answers with a 307 redirect, so the bytes flow from the store.
//! - Every request has a timeout and is retried with backoff on temporary failures (OpenDAL's
//!   timeout and retry layers); failures become [`StorageError::Backend`] naming the
//!   operation and key.
//! - Replicas coordinate cold downloads with expiring claims ([`lease`]).
//!
//! [`ingest`]: BlobStore::ingest
//! [`presign`]: BlobStore::presign

pub mod keys;
pub mod lease;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_oci::Digest;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use crate::spool::Spool;
use crate::{BlobEntry, BlobInfo, BlobStore, FillClaim, OpenedBlob, Result, StorageError};

/// Link markers written at once (the links of one manifest's blobs).
const LINK_WRITES: usize = 16;

/// How to reach an S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL; `None` means AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (signing region for S3-compatible stores).
    pub region: String,
    /// Key prefix inside the bucket (`""`: the bucket root).
    pub prefix: String,
    /// Static credentials; `None` means the usual AWS chain (environment, profile, IMDS).
    pub access_key_id: Option<String>,
    /// Secret of `access_key_id`.
    pub secret_access_key: Option<String>,
    /// `bucket.endpoint` addressing instead of `endpoint/bucket`.
    pub virtual_host_style: bool,
}

/// Behaviour that does not depend on the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Longest time one request (or one chunk of a transfer) may take.
    pub timeout: Duration,
    /// Retries of a request that failed temporarily.
    pub retries: usize,
    /// Part size of multipart uploads (at least 5 MiB on S3).
    pub part_size: usize,
    /// Parts uploaded at once (memory of one upload: about `part_size * (concurrency + 1)`).
    pub upload_concurrency: usize,
    /// Local directory under which this process claims its spool directory.
    pub spool_dir: PathBuf,
}

impl ObjectOptions {
    /// Defaults with spool files in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        ObjectOptions {
            timeout: Duration::from_secs(30),
            retries: 3,
            part_size: 8 << 20,
            upload_concurrency: 2,
            spool_dir: spool_dir.into(),
        }
    }
}

/// Blobs and metadata in an object store.
#[derive(Clone)]
pub struct ObjectStore {
    op: Operator,
    opts: Arc<ObjectOptions>,
    spool: Arc<Spool>,
    kind: &'static str,
    leases: lease::Leases,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("kind", &self.kind)
            .field("info", &self.op.info())
            .finish()
    }
}

/// A backend error naming the operation and key.
pub(crate) fn backend(op: &str, key: &str, e: opendal::Error) -> StorageError {
    StorageError::Backend(format!("object store {op} {key}: {e}"))
}

/// `Ok(None)` for a missing object.
pub(crate) fn found<T>(r: opendal::Result<T>, op: &str, key: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend(op, key, e)),
    }
}

impl ObjectStore {
    /// Connects to an S3-compatible bucket (no request is made until the first operation).
    pub fn s3(s3: &S3Options, opts: ObjectOptions) -> Result<Self> {
        let mut b = opendal::services::S3::default()
            .bucket(&s3.bucket)
            .region(&s3.region)
            .root(&format!("/{}", s3.prefix.trim_matches('/')));
        if let Some(ep) = &s3.endpoint {
            b = b.endpoint(ep).disable_ec2_metadata();
        }
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            b = b.access_key_id(id).secret_access_key(secret);
        }
        if s3.virtual_host_style {
            b = b.enable_virtual_host_style();
        }
        opendal::install_default();
        let op = Operator::new(b).map_err(|e| backend("configure", &s3.bucket, e))?;
        Self::from_operator(op, "s3", opts)
    }

    /// Wraps any OpenDAL operator (tests use the in-memory service), adding the timeout and
    /// retry layers, and claims this process's spool directory under `opts.spool_dir`
    /// (removing what crashed processes left there; see [`crate::spool`]).
    pub fn from_operator(op: Operator, kind: &'static str, opts: ObjectOptions) -> Result<Self> {
        let spool = Arc::new(Spool::claim(&opts.spool_dir)?);
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(opts.timeout)
                    .with_io_timeout(opts.timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(opts.retries)
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_jitter(),
            );
        Ok(ObjectStore {
            leases: lease::Leases::new(op.clone()),
            op,
            opts: Arc::new(opts),
            spool,
            kind,
        })
    }

    /// The OpenDAL operator (with layers).
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// Checks that the store answers and holds the bucket, and whether it honours conditional
    /// writes (needed for cross-replica fill claims; without them claims are disabled and
    /// concurrent cold requests on different replicas may each download the blob once).
    pub async fn connect(&self) -> Result<()> {
        self.check_writable().await?;
        let supported = self.leases.probe().await?;
        if !supported {
            tracing::warn!(
                "the object store ignores conditional writes (If-None-Match): replicas \
                 cannot coordinate downloads, so a cold blob requested on several replicas at \
                 once may be fetched once per replica"
            );
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<Option<u64>> {
        let meta = found(self.op.stat(key).await, "stat", key)?;
        Ok(meta.filter(|m| m.is_file()).map(|m| m.content_length()))
    }

    async fn read_key(&self, key: &str) -> Result<Option<Bytes>> {
        let buf = found(self.op.read(key).await, "read", key)?;
        Ok(buf.map(|b| b.to_bytes()))
    }

    async fn write_key(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.op
            .write(key, bytes)
            .await
            .map(|_| ())
            .map_err(|e| backend("write", key, e))
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        found(self.op.delete(key).await, "delete", key).map(|_| ())
    }

    /// Files under `dir` (recursively), as `(key, size, modified)`.
    async fn list_dir(&self, dir: &str) -> Result<Vec<(String, u64, SystemTime)>> {
        let entries =
            found(self.op.list_with(dir).recursive(true).await, "list", dir)?.unwrap_or_default();
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| {
                let m = e.metadata();
                let modified = m
                    .last_modified()
                    .map(SystemTime::from)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (e.path().to_owned(), m.content_length(), modified)
            })
            .collect())
    }
}

#[async_trait]
impl BlobStore for ObjectStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let size = self.exists(&keys::blob(digest)).await?;
        Ok(size.map(|size| BlobInfo { size }))
    }

    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<OpenedBlob>> {
        let key = keys::blob(digest);
        let Some(size) = self.exists(&key).await? else {
            return Ok(None);
        };
        let start = offset.min(size);
        let len = len.unwrap_or(size - start).min(size - start);
        let stream = transfer::read_range(&self.op, &key, start, len).await?;
        Ok(Some(OpenedBlob { size, stream }))
    }

    async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>> {
        self.read_key(&keys::blob(digest)).await
    }

    async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.write_key(&keys::blob(digest), bytes).await
    }

    async fn ingest(&self, digest: &Digest, spool: &Path) -> Result<()> {
        let result = self.upload_once(digest, spool).await;
        let _ = tokio::fs::remove_file(spool).await;
        result
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.delete_key(&keys::blob(digest)).await?;
        for (key, _, _) in self.list_dir(&keys::access_dir(digest)).await? {
            self.delete_key(&key).await?;
        }
        Ok(())
    }

    async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<Option<String>> {
        if !self.op.info().capability().presign_read {
            return Ok(None);
        }
        let key = keys::blob(digest);
        let req = self
            .op
            .presign_read(&key, ttl)
            .await
            .map_err(|e| backend("presign", &key, e))?;
        Ok(Some(req.uri().to_string()))
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        let access = self.last_accesses().await?;
        let blobs = self.list_dir(keys::BLOBS).await?;
        Ok(blobs
            .into_iter()
            .filter_map(|(key, size, modified)| {
                let digest = keys::parse_blob(&key)?;
                let last_access = access.get(&digest).copied().unwrap_or(modified);
                Some(BlobEntry {
                    digest,
                    size,
                    last_access,
                })
            })
            .collect())
    }

    async fn touch(&self, digests: &[Digest], when: SystemTime) -> Result<()> {
        for d in digests {
            self.touch_one(d, when).await?;
        }
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Bytes>> {
        self.read_key(&keys::meta(key)?).await
    }

    async fn put_meta(&self, key: &str, value: Bytes) -> Result<()> {
        self.write_key(&keys::meta(key)?, value).await
    }

    async fn delete_meta(&self, key: &str) -> Result<()> {
        self.delete_key(&keys::meta(key)?).await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = match prefix.rfind('/') {
            Some(i) => format!("{}{}", keys::META, &prefix[..=i]),
            None => keys::META.to_owned(),
        };
        let mut out: Vec<String> = self
            .list_dir(&dir)
            .await?
            .into_iter()
            .filter_map(|(k, _, _)| k.strip_prefix(keys::META).map(str::to_owned))
            .filter(|k| k.starts_with(prefix))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn put_links(&self, upstream: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        use futures_util::{StreamExt, TryStreamExt};
        let keys = digests
            .iter()
            .map(|d| keys::meta(&crate::paths::link_key(upstream, repository, d)))
            .collect::<Result<Vec<String>>>()?;
        futures_util::stream::iter(keys)
            .map(|k| async move { self.write_key(&k, Bytes::new()).await })
            .buffer_unordered(LINK_WRITES)
            .try_collect::<()>()
            .await
    }

    async fn has_link(&self, upstream: &str, repository: &str, digest: &Digest) -> Result<bool> {
        let key = keys::meta(&crate::paths::link_key(upstream, repository, digest))?;
        Ok(self.exists(&key).await?.is_some())
    }

    fn spool_dir(&self) -> PathBuf {
        self.spool.dir().to_owned()
    }

    async fn check_writable(&self) -> Result<()> {
        // Delete even after a failed write: a write that failed half-way (a timeout after the
        // store took it) must not leave a probe object behind at every /readyz.
        let key = keys::probe();
        let written = self.write_key(&key, Bytes::from_static(b"ok")).await;
        let removed = self.delete_key(&key).await;
        written.and(removed)
    }

    async fn claim_fill(&self, source: &str, digest: &Digest, wait: Duration) -> Result<FillClaim> {
        let blob = keys::blob(digest);
        self.leases
            .claim(source, digest, wait, || async { self.exists(&blob).await })
            .await
    }
}

impl ObjectStore {
    /// Uploads a spool file unless the blob is already stored (by another replica).
    async fn upload_once(&self, digest: &Digest, spool: &Path) -> Result<()> {
        let key = keys::blob(digest);
        let len = tokio::fs::metadata(spool).await?.len();
        if self.exists(&key).await? == Some(len) {
            tracing::debug!(digest = %digest, "blob already in the object store; upload skipped");
            return Ok(());
        }
        transfer::upload_file(&self.op, &key, spool, &self.opts).await
    }

    /// Latest access marker of every blob that has one.
    async fn last_accesses(&self) -> Result<std::collections::HashMap<Digest, SystemTime>> {
        let mut out = std::collections::HashMap::new();
        for (key, _, _) in self.list_dir(keys::ACCESS).await? {
            if let Some((d, t)) = keys::parse_access(&key) {
                let e = out.entry(d).or_insert(t);
                *e = (*e).max(t);
            }
        }
        Ok(out)
    }

    /// Replaces a blob's access markers by one for `when`.
    async fn touch_one(&self, d: &Digest, when: SystemTime) -> Result<()> {
        let old = self.list_dir(&keys::access_dir(d)).await?;
        let new = keys::access_marker(d, when);
        self.write_key(&new, Bytes::new()).await?;
        for (key, _, _) in old.into_iter().filter(|(k, _, _)| *k != new) {
            self.delete_key(&key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
