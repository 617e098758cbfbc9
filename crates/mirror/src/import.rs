//! Content that arrives from an archive (`ferry import`) rather than from an upstream: verified
//! blobs and manifests go into the store exactly as a pull would put them there (same layout,
//! same index), and tags are recorded as if pulled, marked imported. The caller writes a tag
//! only after every blob and manifest of its image is stored, so a half-imported image is
//! never served under its tag.

use std::path::Path;

use bytes::Bytes;
use ferry_oci::{Digest, RepoName, Tag};

use crate::Mirror;
use crate::error::{MirrorError, Result};
use crate::meta::{self, ManifestMeta, TagEntry, now_secs};

impl Mirror {
    /// Whether the cache holds content `d` (a blob or a manifest).
    pub fn has_content(&self, d: &Digest) -> bool {
        self.inner.index.contains(d)
    }

    /// Makes the verified, fsync'ed file `spool` (of `size` bytes, hashing to `d`) the blob `d`;
    /// the file is consumed. A blob already cached is kept and the file removed.
    pub async fn import_blob(&self, d: &Digest, spool: &Path, size: u64) -> Result<()> {
        if self.inner.index.contains(d) && self.inner.store.stat(d).await?.is_some() {
            let _ = std::fs::remove_file(spool);
            return Ok(());
        }
        self.inner.store.ingest(d, spool).await?;
        self.inner.index.insert(d.clone(), size);
        Ok(())
    }

    /// Stores a verified manifest (`bytes` hash to `d`) with its media type.
    pub async fn import_manifest(&self, d: &Digest, bytes: Bytes, media_type: &str) -> Result<()> {
        let store = self.inner.store.as_ref();
        let size = bytes.len() as u64;
        store.put_verified(d, bytes).await?;
        let record = ManifestMeta {
            media_type: media_type.to_owned(),
        };
        meta::put(store, &meta::manifest_key(d), &record).await?;
        self.inner.index.insert(d.clone(), size);
        Ok(())
    }

    /// Records that `repo` on `upstream` holds the stored manifest `d` and everything it names
    /// (see [`crate::links`]), as a pull through that repository would.
    pub async fn import_links(&self, upstream: &str, repo: &RepoName, d: &Digest) -> Result<()> {
        let m = self.cached_manifest(d).await?.ok_or_else(|| {
            MirrorError::Storage(format!("the imported manifest {d} is not in the cache"))
        })?;
        self.adopt(upstream, repo, m).await;
        Ok(())
    }

    /// Records `upstream/repo:tag` -> manifest `d`, as a pull would, marked imported.
    pub async fn import_tag(
        &self,
        (upstream, repo, tag): (&str, &RepoName, &Tag),
        d: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<()> {
        let entry = TagEntry {
            digest: d.clone(),
            media_type: media_type.to_owned(),
            size,
            fetched_at: now_secs(),
            deleted_upstream_at: None,
            imported: true,
        };
        let key = meta::tag_key(upstream, repo.as_str(), tag.as_str());
        meta::put(self.inner.store.as_ref(), &key, &entry).await
    }
}
