//! Manifests: by digest they are immutable (memory, then store, then one upstream GET), and a
//! cached one is served under a repository only when that repository is known to hold it (else
//! one upstream HEAD decides, see [`crate::links`]); by tag
//! the answer is trusted for the tag TTL, then revalidated with a HEAD (which Docker Hub does not
//! count as a pull) and re-fetched only when the digest changed. When the upstream is down,
//! rate-limiting or failing, the last known answer is served (stale-if-error). "Not found" is
//! remembered for `cache.negative_ttl`. Concurrent requests for one tag or digest share one
//! upstream exchange.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_metrics::Metrics;
use ferry_oci::{Digest, Reference, Tag, manifest};
use ferry_upstream::{Upstream, UpstreamError};

use crate::error::{MirrorError, Result};
use crate::links::{Kind, link_key};
use crate::meta::{self, ManifestMeta, TagEntry, now_secs};
use crate::revalidate::{DeletedUpstream, is_not_found};
use crate::single_flight::SingleFlight;
use crate::{Mirror, MissGate, Outcome, Target};

/// A manifest held in memory.
#[derive(Debug)]
pub struct CachedManifest {
    /// Exact bytes.
    pub bytes: Bytes,
    /// Media type.
    pub media_type: String,
    /// Digest of `bytes`.
    pub digest: Digest,
}

/// A manifest answer.
#[derive(Debug, Clone)]
pub struct ManifestAnswer {
    /// The manifest.
    pub manifest: Arc<CachedManifest>,
    /// How it was obtained.
    pub outcome: Outcome,
    /// Set when the upstream has deleted it and ferry serves its copy (`cache.keep_deleted`).
    pub deleted_upstream: Option<DeletedUpstream>,
}

impl ManifestAnswer {
    pub(crate) fn new((manifest, outcome): (Arc<CachedManifest>, Outcome)) -> Self {
        ManifestAnswer {
            manifest,
            outcome,
            deleted_upstream: None,
        }
    }
}

/// In-memory caches: manifests by digest (weighted by size), tag answers, and "not found"s.
pub struct Memory {
    manifests: moka::sync::Cache<Digest, Arc<CachedManifest>>,
    pub(crate) tags: moka::sync::Cache<String, TagEntry>,
    /// Fresh answers served per tag since its last refresh (for refresh-ahead).
    pub(crate) tag_hits: moka::sync::Cache<String, Arc<AtomicU64>>,
    negative: moka::sync::Cache<String, (UpstreamError, std::time::Instant)>,
    negative_ttl_ms: AtomicU64,
}

impl Memory {
    /// Caches holding about `bytes` of manifests.
    pub fn new(bytes: u64, negative_ttl: Duration) -> Self {
        Memory {
            manifests: moka::sync::Cache::builder()
                .max_capacity(bytes.max(1))
                .weigher(|_, m: &Arc<CachedManifest>| (m.bytes.len() as u32).saturating_add(256))
                .build(),
            tags: moka::sync::Cache::new(100_000),
            tag_hits: moka::sync::Cache::new(100_000),
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            negative_ttl_ms: AtomicU64::new(negative_ttl.as_millis() as u64),
        }
    }

    /// Changes how long "not found" is remembered.
    pub fn set_negative_ttl(&self, ttl: Duration) {
        self.negative_ttl_ms
            .store(ttl.as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn negative(&self, key: &str) -> Option<UpstreamError> {
        let (err, at) = self.negative.get(key)?;
        let ttl = Duration::from_millis(self.negative_ttl_ms.load(Ordering::Relaxed));
        (at.elapsed() < ttl).then_some(err)
    }

    pub(crate) fn remember_not_found(&self, key: String, e: &MirrorError) {
        if let MirrorError::Upstream(u @ UpstreamError::NotFound { .. }) = e {
            self.negative
                .insert(key, (u.clone(), std::time::Instant::now()));
        }
    }
}

type FlightResult = std::result::Result<(Arc<CachedManifest>, Outcome), MirrorError>;

/// Manifest fetches in flight, by tag key or by `upstream/repository@digest` (a fetch through
/// one repository never answers a request for another).
#[derive(Default)]
pub struct Flights {
    tags: SingleFlight<String, FlightResult>,
    digests: SingleFlight<String, FlightResult>,
}

impl Mirror {
    /// The manifest for a tag or digest. A digest is served only when the repository is known
    /// to hold it (see [`crate::links`]); whatever is served, the repository then holds it and
    /// everything it names. `gate` is asked before the request waits for the upstream (a
    /// manifest not cached, a tag that must be revalidated before it is answered); cached
    /// answers, including those revalidated in the background, never ask it.
    pub async fn manifest(
        &self,
        t: &Target,
        reference: &Reference,
        gate: &dyn MissGate,
    ) -> Result<ManifestAnswer> {
        let answer = match reference {
            Reference::Digest(d) => self.manifest_by_digest(t, d, gate).await,
            Reference::Tag(tag) => self.manifest_by_tag(t, tag, gate).await,
        };
        let answer = match answer {
            Err(e) if self.bypasses_store(&e) => {
                tracing::warn!(%reference, error = %e, "the store failed: serving the manifest from the upstream, uncached");
                gate.admit_miss().await?;
                return self.manifest_past_store(t, reference).await;
            }
            r => r?,
        };
        self.adopt(&t.name, &t.repo, answer.manifest.clone()).await;
        self.inner
            .metrics
            .cache(&t.name, "manifest", answer.outcome.is_hit());
        Ok(answer)
    }

    async fn manifest_by_digest(
        &self,
        t: &Target,
        d: &Digest,
        gate: &dyn MissGate,
    ) -> Result<ManifestAnswer> {
        if let Some(m) = self.cached_manifest(d).await? {
            let outcome = if self.is_linked(&t.name, &t.repo, d).await? {
                Outcome::Hit
            } else {
                self.confirm(t, d, Kind::Manifest).await?;
                Outcome::Revalidated
            };
            return Ok(ManifestAnswer::new((m, outcome)));
        }
        let neg_key = link_key(&t.name, &t.repo, d);
        if let Some(e) = self.inner.memory.negative(&neg_key) {
            return Err(e.into());
        }
        gate.admit_miss().await?;
        let this = self.clone();
        let (up, repo, reference) = (
            t.upstream.clone(),
            t.repo.clone(),
            Reference::Digest(d.clone()),
        );
        let work = async move {
            this.fetch_and_store(&up, &repo, &reference)
                .await
                .map(|m| (m, Outcome::Miss))
        };
        let work = ferry_upstream::Priority::current().scope(work);
        let (result, _) = self
            .inner
            .flights
            .digests
            .run(&self.inner.tasks, neg_key.clone(), work)
            .await;
        result
            .map(ManifestAnswer::new)
            .inspect_err(|e| self.inner.memory.remember_not_found(neg_key, e))
    }

    async fn manifest_by_tag(
        &self,
        t: &Target,
        tag: &Tag,
        gate: &dyn MissGate,
    ) -> Result<ManifestAnswer> {
        let key = meta::tag_key(&t.name, t.repo.as_str(), tag.as_str());
        let entry = self.tag_entry(&key).await?;
        if let Some(e) = &entry
            && let Some(m) = self.cached_manifest(&e.digest).await?
            && let Some(answer) = self.answer_from_cache(t, tag, e, m, &key)
        {
            return Ok(answer);
        }
        if entry
            .as_ref()
            .is_none_or(|e| e.deleted_upstream_at.is_some())
            && let Some(e) = self.inner.memory.negative(&key)
        {
            return Err(e.into());
        }
        gate.admit_miss().await?;
        let this = self.clone();
        let (t2, tag2, entry2, key2) = (t.clone(), tag.clone(), entry.clone(), key.clone());
        let work = async move { this.refresh_tag(&t2, &tag2, entry2, &key2).await };
        let work = ferry_upstream::Priority::current().scope(work);
        let (result, _) = self
            .inner
            .flights
            .tags
            .run(&self.inner.tasks, key.clone(), work)
            .await;
        match result {
            Ok(found) => Ok(ManifestAnswer::new(found)),
            Err(e) => self.stale_or(t, entry, e, key).await,
        }
    }

    /// Serves the last known answer when the upstream failed transiently, or said the tag is
    /// gone within `keep_deleted`; else the error.
    async fn stale_or(
        &self,
        t: &Target,
        entry: Option<TagEntry>,
        e: MirrorError,
        key: String,
    ) -> Result<ManifestAnswer> {
        let transient = matches!(&e, MirrorError::Upstream(u) if u.is_transient());
        let policy = self.settings().policy.clone();
        // An imported tag has no upstream answer to fall back on: it is served stale whenever
        // revalidation fails, whatever `serve_stale` says (a tag deleted upstream still
        // follows `keep_deleted`).
        let serve_stale = policy.serve_stale || entry.as_ref().is_some_and(|e| e.imported);
        if let (true, true, Some(entry)) = (transient, serve_stale, &entry)
            && let Some(deleted) = policy.deleted_notice(entry)
            && let Some(m) = self.cached_manifest(&entry.digest).await?
        {
            tracing::warn!(upstream = %t.name, repository = %t.repo, error = %e, "upstream failed; serving the cached tag");
            Metrics::per_upstream(&self.inner.metrics.stale_served, &t.name, 1);
            let mut answer = ManifestAnswer::new((m, Outcome::Stale));
            answer.deleted_upstream = deleted;
            return Ok(answer);
        }
        if is_not_found(&e)
            && let Some(entry) = &entry
            && let Some(answer) = self.serve_deleted(t, entry, &key).await?
        {
            return Ok(answer);
        }
        self.inner.memory.remember_not_found(key, &e);
        Err(e)
    }

    /// Asks the upstream about a tag: a HEAD when an answer is known (re-using the cached
    /// manifest if the digest is unchanged), otherwise a GET.
    pub(crate) async fn refresh_tag(
        &self,
        t: &Target,
        tag: &Tag,
        entry: Option<TagEntry>,
        key: &str,
    ) -> std::result::Result<(Arc<CachedManifest>, Outcome), MirrorError> {
        let reference = Reference::Tag(tag.clone());
        if entry.is_some() {
            Metrics::per_upstream(&self.inner.metrics.revalidations, &t.name, 1);
            let head = t.upstream.manifest_head(&t.repo, &reference).await?;
            if let Some(d) = head.digest
                && let Some(m) = self.cached_manifest(&d).await?
            {
                self.save_tag(key, &m).await?;
                return Ok((m, Outcome::Revalidated));
            }
        }
        let m = self
            .fetch_and_store(&t.upstream, &t.repo, &reference)
            .await?;
        self.save_tag(key, &m).await?;
        Ok((m, Outcome::Miss))
    }

    async fn fetch_and_store(
        &self,
        up: &Upstream,
        repo: &ferry_oci::RepoName,
        reference: &Reference,
    ) -> Result<Arc<CachedManifest>> {
        let m = up.manifest(repo, reference).await?;
        let store = self.inner.store.as_ref();
        store.put_verified(&m.digest, m.bytes.clone()).await?;
        meta::put(
            store,
            &meta::manifest_key(&m.digest),
            &ManifestMeta {
                media_type: m.media_type.clone(),
            },
        )
        .await?;
        self.inner
            .index
            .insert(m.digest.clone(), m.bytes.len() as u64);
        let cached = Arc::new(CachedManifest {
            bytes: m.bytes,
            media_type: m.media_type,
            digest: m.digest,
        });
        self.inner
            .memory
            .manifests
            .insert(cached.digest.clone(), cached.clone());
        Ok(cached)
    }

    async fn save_tag(&self, key: &str, m: &CachedManifest) -> Result<()> {
        let entry = TagEntry {
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
            size: m.bytes.len() as u64,
            fetched_at: now_secs(),
            deleted_upstream_at: None,
            imported: false,
        };
        meta::put(self.inner.store.as_ref(), key, &entry).await?;
        self.inner.memory.tags.insert(key.to_owned(), entry);
        self.inner.memory.tag_hits.invalidate(key);
        Ok(())
    }

    async fn tag_entry(&self, key: &str) -> Result<Option<TagEntry>> {
        if let Some(e) = self.inner.memory.tags.get(key) {
            return Ok(Some(e));
        }
        let e: Option<TagEntry> = meta::get(self.inner.store.as_ref(), key).await?;
        if let Some(e) = &e {
            self.inner.memory.tags.insert(key.to_owned(), e.clone());
        }
        Ok(e)
    }

    /// A stored manifest by digest, from memory or the store.
    pub async fn cached_manifest(&self, d: &Digest) -> Result<Option<Arc<CachedManifest>>> {
        if let Some(m) = self.inner.memory.manifests.get(d) {
            self.inner.index.touch(d);
            return Ok(Some(m));
        }
        let store = self.inner.store.as_ref();
        let known = meta::get::<ManifestMeta>(store, &meta::manifest_key(d)).await?;
        if known.is_none()
            && self
                .inner
                .index
                .size(d)
                .is_none_or(|s| s > ferry_upstream::MAX_MANIFEST as u64)
        {
            return Ok(None); // not a manifest we stored (or a layer: never read a layer into memory)
        }
        let Some(bytes) = store.read_all(d).await? else {
            return Ok(None);
        };
        let media_type = match known {
            Some(m) => m.media_type,
            None => match manifest::parse(&bytes, None) {
                Ok(p) => p.media_type().to_owned(),
                Err(_) => return Ok(None),
            },
        };
        self.inner.index.touch(d);
        let m = Arc::new(CachedManifest {
            bytes,
            media_type,
            digest: d.clone(),
        });
        self.inner.memory.manifests.insert(d.clone(), m.clone());
        Ok(Some(m))
    }
}
