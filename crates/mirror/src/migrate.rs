//! Links for a cache made before links existed (see [`crate::links`]).
//!
//! On start-up, once per store (a marker records that it ran, so replicas sharing a bucket do
//! it once between them), every cached tag answer becomes a link of its manifest to its
//! repository, and the manifest is adopted: its config, layers and cached child manifests (and
//! theirs) are linked too. A tag answer is proof enough: ferry fetched it through that
//! repository. It runs in the background; until it is done, and for content no cached tag
//! reaches (pulled by digest only), the first request under a repository is confirmed by one
//! upstream `HEAD` instead.

use ferry_oci::RepoName;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Mirror;
use crate::error::Result;
use crate::meta::{self, TagEntry, now_secs};

/// Metadata key of the marker written when the migration is done.
pub const MARKER: &str = "links/_migrated-from-tags";

/// What the marker records.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// When the migration ended (seconds since the epoch).
    at: u64,
    /// How many tag answers were turned into links.
    tags: usize,
}

/// Runs the migration unless the store has the marker, until done or `stop` fires.
pub async fn run(mirror: Mirror, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        result = links_from_tags(&mirror) => match result {
            Ok(Some(tags)) => tracing::info!(tags, "recorded repository links for the cached tags"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not record repository links for the cached tags; they are confirmed upstream on first request"),
        },
    }
}

/// Links every cached tag's manifest to its repository; `None` when already done.
pub async fn links_from_tags(mirror: &Mirror) -> Result<Option<usize>> {
    let store = mirror.store().as_ref();
    if store.get_meta(MARKER).await?.is_some() {
        return Ok(None);
    }
    let mut tags = 0;
    for key in store.list_meta("tags/").await? {
        let Some((upstream, repo)) = split_tag_key(&key) else {
            continue;
        };
        let Some(entry) = meta::get::<TagEntry>(store, &key).await? else {
            continue;
        };
        if let Some(m) = mirror.cached_manifest(&entry.digest).await? {
            mirror.adopt(upstream, &repo, m).await;
            tags += 1;
        }
    }
    let marker = Marker {
        at: now_secs(),
        tags,
    };
    meta::put(store, MARKER, &marker).await?;
    Ok(Some(tags))
}

/// `tags/<upstream>/<repository>/_tags/<tag>` -> (upstream, repository).
fn split_tag_key(key: &str) -> Option<(&str, RepoName)> {
    let (path, _tag) = key.strip_prefix("tags/")?.rsplit_once("/_tags/")?;
    let (upstream, repo) = path.split_once('/')?;
    Some((upstream, RepoName::parse(repo).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_split_into_upstream_and_repository() {
        let (up, repo) = split_tag_key("tags/127.0.0.1:5001/a/b/c/_tags/v1").unwrap();
        assert_eq!((up, repo.as_str()), ("127.0.0.1:5001", "a/b/c"));
        assert!(split_tag_key("tags/docker.io/_tags/v1").is_none());
        assert!(split_tag_key("lists/docker.io/x/_taglist").is_none());
    }
}
