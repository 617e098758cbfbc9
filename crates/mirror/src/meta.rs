//! The small metadata records the cache keeps beside content: tag answers, manifest media
//! types and cached lists (tags, referrers), stored as JSON through the store's metadata API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_oci::Digest;
use ferry_storage::{BlobStore, paths};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What a tag pointed at when last asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest size.
    pub size: u64,
    /// When the upstream last answered about it (seconds since the epoch): confirmed it, or
    /// said it is gone.
    pub fetched_at: u64,
    /// When the upstream first answered 404 for it, while ferry kept its copy (seconds since
    /// the epoch); cleared when the upstream serves it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_upstream_at: Option<u64>,
    /// Recorded by `ferry import` from an archive rather than answered by the upstream: served
    /// stale whenever revalidation fails, whatever `cache.serve_stale` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
}

impl TagEntry {
    /// `fetched_at` as a time.
    pub fn fetched(&self) -> SystemTime {
        at_secs(self.fetched_at)
    }

    /// When the upstream first said the tag is gone, if it did.
    pub fn deleted_since(&self) -> Option<SystemTime> {
        self.deleted_upstream_at.map(at_secs)
    }
}

/// A time given in seconds since the epoch.
pub fn at_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The media type stored for a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMeta {
    /// Media type as the upstream served it.
    pub media_type: String,
}

/// A cached document (tag list or referrers index) with its fetch time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedDoc {
    /// Body bytes (JSON).
    pub body: String,
    /// Content type.
    pub content_type: String,
    /// Seconds since the epoch.
    pub fetched_at: u64,
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Reads and decodes a JSON metadata record; a corrupt record counts as absent.
pub async fn get<T: for<'de> Deserialize<'de>>(
    store: &dyn BlobStore,
    key: &str,
) -> Result<Option<T>> {
    let Some(bytes) = store.get_meta(key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Encodes and writes a JSON metadata record.
pub async fn put<T: Serialize>(store: &dyn BlobStore, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).expect("metadata serializes");
    store.put_meta(key, Bytes::from(bytes)).await?;
    Ok(())
}

/// Key of a manifest's media-type record.
pub fn manifest_key(d: &Digest) -> String {
    paths::manifest_key(d)
}

/// Key of a tag record.
pub fn tag_key(upstream: &str, repo: &str, tag: &str) -> String {
    paths::tag_key(upstream, repo, tag)
}

/// Key of a cached tag list.
pub fn taglist_key(upstream: &str, repo: &str) -> String {
    format!("lists/{upstream}/{repo}/_taglist")
}

/// Key of a cached referrers index.
pub fn referrers_key(
    upstream: &str,
    repo: &str,
    d: &Digest,
    artifact_type: Option<&str>,
) -> String {
    let filter = artifact_type.map_or("all".to_owned(), |t| {
        Digest::sha256_of(t.as_bytes()).hex()[..16].to_owned()
    });
    format!(
        "lists/{upstream}/{repo}/_referrers/{}-{}/{filter}",
        d.algorithm().as_str(),
        d.hex()
    )
}
