//! Cache inspection and manual eviction (`ferry gc`): which repositories the cache holds, how
//! many bytes each one's images take, and deletion by last-served age or by repository.
//!
//! Repositories are found from the tag records; each record's manifest (and, for an index, its
//! cached child manifests) names the blobs it uses. A blob shared by several repositories is
//! counted in each and only deleted by repository when no other repository uses it. Blobs that
//! no tag record reaches (pulled by digest only) are reported as unattributed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use ferry_oci::Digest;
use ferry_oci::manifest::{self, Parsed};
use ferry_storage::{BlobEntry, BlobStore};

use crate::error::{MirrorError, Result};
use crate::meta::{self, TagEntry};

/// One cached repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUsage {
    /// `upstream/repository`, e.g. `docker.io/library/nginx`.
    pub name: String,
    /// Cached tags.
    pub tags: Vec<String>,
    /// Blobs (manifests, configs, layers) its tags reach that are stored.
    pub blobs: BTreeSet<Digest>,
    /// Their total size.
    pub bytes: u64,
    /// When one of them was last served.
    pub last_served: SystemTime,
}

/// A cached tag the upstream has deleted (see `cache.keep_deleted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedTag {
    /// `upstream/repository:tag`.
    pub image: String,
    /// When the upstream first answered 404 for it.
    pub since: SystemTime,
}

/// What the cache holds.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Repositories, sorted by name.
    pub repos: Vec<RepoUsage>,
    /// Cached tags the upstream has deleted, sorted by image.
    pub deleted_upstream: Vec<DeletedTag>,
    /// Every stored blob.
    pub blobs: HashMap<Digest, BlobEntry>,
    /// Tag record keys per repository name (for deletion).
    tag_keys: BTreeMap<String, Vec<String>>,
}

impl Inventory {
    /// Total bytes stored.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }

    /// Bytes of blobs no repository reaches.
    pub fn unattributed_bytes(&self) -> u64 {
        let reached: BTreeSet<&Digest> = self.repos.iter().flat_map(|r| r.blobs.iter()).collect();
        self.blobs
            .values()
            .filter(|b| !reached.contains(&b.digest))
            .map(|b| b.size)
            .sum()
    }
}

/// Scans the store.
pub async fn scan(store: &dyn BlobStore) -> Result<Inventory> {
    let blobs: HashMap<Digest, BlobEntry> = store
        .list()
        .await?
        .into_iter()
        .map(|b| (b.digest.clone(), b))
        .collect();
    let mut reach: BTreeMap<String, (Vec<String>, BTreeSet<Digest>)> = BTreeMap::new();
    let mut tag_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut deleted_upstream = Vec::new();
    for key in store.list_meta("tags/").await? {
        let Some((repo, tag)) = split_tag_key(&key) else {
            continue;
        };
        let Some(entry) = meta::get::<TagEntry>(store, &key).await? else {
            continue;
        };
        if let Some(since) = entry.deleted_since() {
            deleted_upstream.push(DeletedTag {
                image: format!("{repo}:{tag}"),
                since,
            });
        }
        let slot = reach.entry(repo.clone()).or_default();
        slot.0.push(tag);
        manifest_blobs(store, &entry.digest, &blobs, &mut slot.1).await?;
        tag_keys.entry(repo).or_default().push(key);
    }
    let repos = reach
        .into_iter()
        .map(|(name, (tags, reached))| {
            let stored: BTreeSet<Digest> = reached
                .into_iter()
                .filter(|d| blobs.contains_key(d))
                .collect();
            let bytes = stored.iter().map(|d| blobs[d].size).sum();
            let last_served = stored
                .iter()
                .map(|d| blobs[d].last_access)
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            RepoUsage {
                name,
                tags,
                blobs: stored,
                bytes,
                last_served,
            }
        })
        .collect();
    deleted_upstream.sort_by(|a: &DeletedTag, b| a.image.cmp(&b.image));
    Ok(Inventory {
        repos,
        deleted_upstream,
        blobs,
        tag_keys,
    })
}

/// `tags/<upstream>/<repository>/_tags/<tag>` -> (`upstream/repository`, tag).
fn split_tag_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("tags/")?;
    let (repo, tag) = rest.rsplit_once("/_tags/")?;
    Some((repo.to_owned(), tag.to_owned()))
}

/// Adds a manifest and everything it references (children of an index, config, layers).
async fn manifest_blobs(
    store: &dyn BlobStore,
    d: &Digest,
    stored: &HashMap<Digest, BlobEntry>,
    out: &mut BTreeSet<Digest>,
) -> Result<()> {
    let mut todo = vec![d.clone()];
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone())
            || !stored.contains_key(&d)
            || stored[&d].size > ferry_upstream::MAX_MANIFEST as u64
        {
            continue;
        }
        let Some(bytes) = store.read_all(&d).await? else {
            continue;
        };
        match manifest::parse(&bytes, None) {
            Ok(Parsed::Index { manifests, .. }) => {
                todo.extend(manifests.into_iter().map(|m| m.digest))
            }
            Ok(Parsed::Image { config, layers, .. }) => {
                out.extend(config.into_iter().chain(layers).map(|l| l.digest));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// What an eviction removed (or would remove, in a dry run).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Their bytes.
    pub bytes: u64,
    /// Tag records deleted.
    pub tags: usize,
}

/// Deletes blobs not served for `age`.
pub async fn evict_older_than(
    store: &dyn BlobStore,
    inv: &Inventory,
    age: Duration,
    dry_run: bool,
) -> Result<Evicted> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let victims: Vec<&BlobEntry> = inv
        .blobs
        .values()
        .filter(|b| b.last_access < cutoff)
        .collect();
    let mut out = Evicted::default();
    for b in victims {
        if !dry_run {
            store.delete(&b.digest).await?;
        }
        out.bytes += b.size;
        out.blobs.push(b.digest.clone());
    }
    Ok(out)
}

/// Deletes the tag records of repositories matching `pattern` (a glob over
/// `upstream/repository`, `*` within a component, `**` across) and the blobs only they use.
pub async fn evict_repositories(
    store: &dyn BlobStore,
    inv: &Inventory,
    pattern: &str,
    dry_run: bool,
) -> Result<Evicted> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| MirrorError::Invalid(format!("bad repository pattern {pattern:?}: {e}")))?
        .compile_matcher();
    let (hit, kept): (Vec<&RepoUsage>, Vec<&RepoUsage>) =
        inv.repos.iter().partition(|r| glob.is_match(&r.name));
    let still_used: BTreeSet<&Digest> = kept.iter().flat_map(|r| r.blobs.iter()).collect();
    let mut out = Evicted::default();
    let doomed: BTreeSet<&Digest> = hit
        .iter()
        .flat_map(|r| r.blobs.iter())
        .filter(|d| !still_used.contains(d))
        .collect();
    for d in doomed {
        if !dry_run {
            store.delete(d).await?;
        }
        out.bytes += inv.blobs.get(d).map_or(0, |b| b.size);
        out.blobs.push(d.clone());
    }
    for r in hit {
        for key in inv.tag_keys.get(&r.name).into_iter().flatten() {
            if !dry_run {
                store.delete_meta(key).await?;
            }
            out.tags += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferry_storage::fs::FsStore;

    async fn put(store: &FsStore, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        store
            .put_verified(&d, Bytes::copy_from_slice(data))
            .await
            .unwrap();
        d
    }

    async fn image(store: &FsStore, repo: &str, tag: &str, layers: &[&Digest]) -> Digest {
        let layers: Vec<String> = layers
            .iter()
            .map(|d| format!(r#"{{"digest":"{d}","size":1}}"#))
            .collect();
        let body = format!(r#"{{"schemaVersion":2,"layers":[{}]}}"#, layers.join(","));
        let d = put(store, body.as_bytes()).await;
        let (up, rest) = repo.split_once('/').unwrap();
        let entry = TagEntry {
            digest: d.clone(),
            media_type: manifest::OCI_MANIFEST.into(),
            size: 1,
            fetched_at: 0,
            deleted_upstream_at: None,
            imported: false,
        };
        meta::put(store, &meta::tag_key(up, rest, tag), &entry)
            .await
            .unwrap();
        d
    }

    #[tokio::test]
    async fn lists_repositories_and_evicts_only_unshared_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let shared = put(&store, b"shared layer").await;
        let own = put(&store, b"layer only nginx uses").await;
        let nginx = image(&store, "docker.io/library/nginx", "1.25", &[&shared, &own]).await;
        image(&store, "ghcr.io/org/app", "v1", &[&shared]).await;
        let inv = scan(&store).await.unwrap();
        let names: Vec<&str> = inv.repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["docker.io/library/nginx", "ghcr.io/org/app"]);
        assert_eq!(inv.repos[0].tags, ["1.25"]);
        assert!(inv.repos[0].blobs.contains(&shared) && inv.repos[0].blobs.contains(&nginx));
        let dry = evict_repositories(&store, &inv, "docker.io/library/*", true)
            .await
            .unwrap();
        assert_eq!(dry.tags, 1);
        assert!(
            store.stat(&own).await.unwrap().is_some(),
            "dry run deletes nothing"
        );
        let done = evict_repositories(&store, &inv, "docker.io/library/*", false)
            .await
            .unwrap();
        assert_eq!(dry, done);
        assert!(
            store.stat(&own).await.unwrap().is_none()
                && store.stat(&nginx).await.unwrap().is_none()
        );
        assert!(
            store.stat(&shared).await.unwrap().is_some(),
            "still used by ghcr.io/org/app"
        );
        let after = scan(&store).await.unwrap();
        assert_eq!(after.repos.len(), 1);
    }

    #[tokio::test]
    async fn evicts_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let old = put(&store, b"old").await;
        let new = put(&store, b"new").await;
        store
            .touch(
                std::slice::from_ref(&old),
                SystemTime::now() - Duration::from_secs(40 * 86_400),
            )
            .await
            .unwrap();
        let inv = scan(&store).await.unwrap();
        assert_eq!(inv.unattributed_bytes(), 6);
        let e = evict_older_than(&store, &inv, Duration::from_secs(30 * 86_400), false)
            .await
            .unwrap();
        assert_eq!(e.blobs, vec![old.clone()]);
        assert!(
            store.stat(&old).await.unwrap().is_none() && store.stat(&new).await.unwrap().is_some()
        );
    }

    #[tokio::test]
    async fn lists_tags_deleted_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let layer = put(&store, b"layer").await;
        image(&store, "docker.io/library/kept", "1", &[&layer]).await;
        let d = image(&store, "docker.io/library/gone", "1", &[&layer]).await;
        let key = meta::tag_key("docker.io", "library/gone", "1");
        let entry = TagEntry {
            digest: d,
            media_type: manifest::OCI_MANIFEST.into(),
            size: 1,
            fetched_at: 5,
            deleted_upstream_at: Some(1_000),
            imported: false,
        };
        meta::put(&store, &key, &entry).await.unwrap();
        let inv = scan(&store).await.unwrap();
        assert_eq!(
            inv.deleted_upstream,
            [DeletedTag {
                image: "docker.io/library/gone:1".into(),
                since: meta::at_secs(1_000),
            }]
        );
        assert_eq!(
            inv.repos.len(),
            2,
            "a deleted tag is still a cached repository"
        );
    }
}
