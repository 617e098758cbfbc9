//! # ferry-storage: where cached content lives
//!
//! Content is addressed by digest and immutable; the only mutable records are small metadata
//! documents (tag answers, manifest media types, and the *links* that say which upstream
//! repository holds which digest). One trait, [`BlobStore`], covers both, so a backend is a
//! handful of methods:
//!
//! - [`fs::FsStore`]: local disk, the default (layout in [`paths`]);
//! - `object::ObjectStore` (feature `s3`): an S3-compatible object store through OpenDAL,
//!   shared by several stateless replicas, with presigned URLs for redirects;
//! - [`tiered::TieredStore`]: a local-disk tier of hot blobs in front of an object store.
//!
//! Every backend passes the same conformance suite (`testsuite`, compiled for tests only);
//! the object backend's tests run it on a real S3-compatible server (SeaweedFS, started by the
//! dev-only `ferry-testkit`).
//!
//! Writing is always two-phase: the cache engine downloads into a local *spool* file (which
//! readers can follow while it grows, see [`chunks`]), verifies the digest, and only then calls
//! [`BlobStore::ingest`], which makes the blob visible atomically. A crash at any moment leaves
//! at worst a stray spool file, which is removed at start-up, never a corrupt blob.

pub mod breaker;
pub mod chunks;
pub mod claim;
pub mod fill_error;
pub mod fs;
pub mod mapped;
#[cfg(feature = "s3")]
pub mod object;
pub mod paths;
pub mod spool;
pub mod tail;
#[cfg(test)]
mod testsuite;
pub mod tiered;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_oci::Digest;
use futures_util::stream::BoxStream;

pub use chunks::{ChunkReader, Progress};
pub use claim::{FillClaim, FillLease};
pub use fill_error::FillError;
pub use mapped::FileMaps;
pub use tail::Tail;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend's I/O failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A metadata key that would escape the store.
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    /// A backend-specific failure.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What `stat` knows about a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// Size in bytes.
    pub size: u64,
}

/// One stored blob, as listed for eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was last served (as far as the backend recorded it).
    pub last_access: SystemTime,
}

/// An opened blob (or a range of it).
pub struct OpenedBlob {
    /// Size of the whole blob.
    pub size: u64,
    /// The requested bytes.
    pub stream: ByteStream,
}

/// Content-addressed blob storage plus a small metadata key/value space.
///
/// Metadata keys are `/`-separated paths built from validated names (see [`paths`]).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Short backend name for logs and metrics (`fs`, `s3`).
    fn kind(&self) -> &'static str;

    /// Whether every replica shares this store (an object store, or a tiered store in front of
    /// one), so that its failure is every replica's at once.
    fn is_shared(&self) -> bool {
        false
    }

    /// Where this store registers memory-mapped files for `sendfile`, if it serves blobs that
    /// way (see [`mapped`]). Downloads in progress use the same registry for their spool files.
    fn file_maps(&self) -> Option<FileMaps> {
        None
    }

    /// Size of a stored blob, or `None`.
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// Opens a stored blob from `offset` for `len` bytes (`None`: to the end).
    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<OpenedBlob>>;

    /// Reads a whole small blob (manifests) into memory.
    async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>>;

    /// Stores small, already verified content (manifests).
    async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<()>;

    /// Takes a verified, fsync'ed spool file and makes it the blob `digest`, atomically.
    /// The spool file is consumed (moved or deleted).
    async fn ingest(&self, digest: &Digest, spool: &Path) -> Result<()>;

    /// Removes a blob (no error if absent).
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// A URL the client may fetch the blob from directly, if the backend can sign one.
    async fn presign(&self, _digest: &Digest, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }

    /// Every stored blob, for the eviction index.
    async fn list(&self) -> Result<Vec<BlobEntry>>;

    /// Records that blobs were served at `when` (batched by the caller).
    async fn touch(&self, digests: &[Digest], when: SystemTime) -> Result<()>;

    /// Reads a metadata document.
    async fn get_meta(&self, key: &str) -> Result<Option<Bytes>>;

    /// Writes a metadata document atomically.
    async fn put_meta(&self, key: &str, value: Bytes) -> Result<()>;

    /// Deletes a metadata document (no error if absent).
    async fn delete_meta(&self, key: &str) -> Result<()>;

    /// Keys of metadata documents under `prefix`.
    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>>;

    /// Records that `repository` on `upstream` holds each of `digests` (idempotent). Content
    /// is stored once per digest; these *links* say under which names it may be served.
    /// Backends may make a link less durable than content: losing one only costs an upstream
    /// `HEAD` to confirm it again.
    async fn put_links(&self, upstream: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        for d in digests {
            let key = paths::link_key(upstream, repository, d);
            self.put_meta(&key, Bytes::new()).await?;
        }
        Ok(())
    }

    /// Whether a link says that `repository` on `upstream` holds `digest`.
    async fn has_link(&self, upstream: &str, repository: &str, digest: &Digest) -> Result<bool> {
        let key = paths::link_key(upstream, repository, digest);
        Ok(self.get_meta(&key).await?.is_some())
    }

    /// Every digest linked to `repository` on `upstream`, sorted.
    async fn list_links(&self, upstream: &str, repository: &str) -> Result<Vec<Digest>> {
        let keys = self
            .list_meta(&paths::links_prefix(upstream, repository))
            .await?;
        let mut out: Vec<Digest> = keys.iter().filter_map(|k| paths::link_digest(k)).collect();
        out.sort();
        Ok(out)
    }

    /// Directory for spool files of in-progress downloads (local disk).
    fn spool_dir(&self) -> PathBuf;

    /// Claims the download of a missing blob from `source` (an upstream name) among the
    /// processes sharing this store, waiting up to `wait` while another one holds the claim
    /// (see [`claim`]). Claims are per source, so a download through a slow upstream never
    /// holds up one through another. Stores used by one process grant every claim at once.
    async fn claim_fill(
        &self,
        _source: &str,
        _digest: &Digest,
        _wait: Duration,
    ) -> Result<FillClaim> {
        Ok(FillClaim::Owner(FillLease::local()))
    }

    /// Checks that the store is writable (for readiness probes).
    async fn check_writable(&self) -> Result<()>;

    /// Ends the store's own background work (the tiered store's copies to local disk) and
    /// waits for it; called once at shutdown, after the engine's tasks. Work ended early
    /// leaves nothing behind.
    async fn close(&self) {}
}

/// Rejects metadata keys that are empty, absolute or contain `.`/`..`/empty segments.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(StorageError::InvalidKey(key.chars().take(120).collect()))
    } else {
        Ok(())
    }
}
