//! Where content may be served. Content is stored once per digest, whatever upstream or
//! repository it came through, but a digest is served under upstream U and repository R only
//! when ferry knows that R on U holds it:
//!
//! (a) it was fetched through R (a manifest GET, or a blob download whose upstream answered);
//! (b) a manifest of R that ferry has names it (config, layers, child manifests of an index,
//!     `subject`) — see [`Mirror::adopt`];
//! (c) an upstream `HEAD` of the digest in R said so ([`Mirror::confirm`]).
//!
//! These memberships ("links", after docker/distribution's repository links) are stored with
//! the content ([`ferry_storage::BlobStore::put_links`]), so they survive restarts and every
//! replica sharing an object store sees them; a memory cache in front makes a known hit cost no
//! I/O and no upstream request.
//!
//! When R has no link for a digest ferry holds, one upstream `HEAD` in R (through R's client and
//! credentials, coalesced for concurrent requests) decides: a success records the link and the
//! cached copy is served; a 404 is the OCI `BLOB_UNKNOWN`/`MANIFEST_UNKNOWN` answer (remembered
//! for `cache.negative_ttl`); any other failure (unreachable, 5xx, 401/403, 429) refuses the
//! request with that error: ferry never serves content it cannot show R has.

use std::sync::Arc;

use ferry_oci::{Digest, Reference, RepoName, manifest};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::error::{MirrorError, Result};
use crate::manifests::CachedManifest;
use crate::single_flight::SingleFlight;
use crate::{Mirror, Target};

/// Memory given to each of the two link caches (entries weigh their key plus 64 bytes).
const CACHE_BYTES: u64 = 16 << 20;
/// How deep indexes of indexes are followed when adopting.
const MAX_DEPTH: usize = 4;

/// What a digest is, for the upstream `HEAD` that confirms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A blob (`/blobs/<digest>`).
    Blob,
    /// A manifest (`/manifests/<digest>`).
    Manifest,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
        }
    }
}

type Confirmed = std::result::Result<Option<u64>, MirrorError>;

/// Known links and adopted manifests, in memory.
pub struct Links {
    known: moka::sync::Cache<String, ()>,
    adopted: moka::sync::Cache<String, ()>,
    confirms: SingleFlight<String, Confirmed>,
}

impl Default for Links {
    fn default() -> Self {
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|k: &String, _: &()| k.len() as u32 + 64)
                .build()
        };
        Links {
            known: cache(),
            adopted: cache(),
            confirms: SingleFlight::default(),
        }
    }
}

/// The memory key of a link: `upstream/repository@digest`.
pub fn link_key(upstream: &str, repo: &RepoName, d: &Digest) -> String {
    format!("{upstream}/{repo}@{d}")
}

impl Mirror {
    /// Whether `repo` on `upstream` is known to hold `d` (memory, then the store).
    pub async fn is_linked(&self, upstream: &str, repo: &RepoName, d: &Digest) -> Result<bool> {
        let key = link_key(upstream, repo, d);
        let links = &self.inner.links;
        if links.known.contains_key(&key) {
            return Ok(true);
        }
        let found = self
            .inner
            .store
            .has_link(upstream, repo.as_str(), d)
            .await?;
        if found {
            links.known.insert(key, ());
        }
        Ok(found)
    }

    /// Records that `repo` on `upstream` holds `digests`. A store that cannot write the links
    /// is logged; this process still knows them.
    pub(crate) async fn link(&self, upstream: &str, repo: &RepoName, digests: &[Digest]) {
        let known = &self.inner.links.known;
        let new: Vec<Digest> = digests
            .iter()
            .filter(|d| !known.contains_key(&link_key(upstream, repo, d)))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        if let Err(e) = self
            .inner
            .store
            .put_links(upstream, repo.as_str(), &new)
            .await
        {
            tracing::warn!(upstream, repository = %repo, error = %e, "could not store repository links");
        }
        for d in &new {
            known.insert(link_key(upstream, repo, d), ());
        }
    }

    /// Links manifest `m` of `repo` on `upstream` and everything it names; the cached child
    /// manifests of an index are adopted too, so their blobs are served under the repository
    /// even when a client asks for them before (or without) asking for the child.
    pub async fn adopt(&self, upstream: &str, repo: &RepoName, m: Arc<CachedManifest>) {
        self.adopt_at(upstream, repo, m, 0).await;
    }

    fn adopt_at<'a>(
        &'a self,
        upstream: &'a str,
        repo: &'a RepoName,
        m: Arc<CachedManifest>,
        depth: usize,
    ) -> BoxFuture<'a, ()> {
        async move {
            let key = link_key(upstream, repo, &m.digest);
            if self.inner.links.adopted.contains_key(&key) {
                return;
            }
            let mut names = manifest::references(&m.bytes);
            if depth < MAX_DEPTH && manifest::is_index(&m.media_type) {
                for child in &names {
                    match self.cached_manifest(child).await {
                        Ok(Some(c)) => self.adopt_at(upstream, repo, c, depth + 1).await,
                        Ok(None) => {} // adopted when it is fetched through the repository
                        Err(e) => tracing::warn!(digest = %child, error = %e, "could not read a cached child manifest"),
                    }
                }
            }
            names.push(m.digest.clone());
            self.link(upstream, repo, &names).await;
            self.inner.links.adopted.insert(key, ());
        }
        .boxed()
    }

    /// Asks the upstream (`HEAD` in the request's repository) whether it holds `d`; on success
    /// records the link and returns the size the upstream gave. A 404 is remembered briefly.
    pub(crate) async fn confirm(&self, t: &Target, d: &Digest, kind: Kind) -> Result<Option<u64>> {
        let key = format!("{}:{}", kind.label(), link_key(&t.name, &t.repo, d));
        if let Some(e) = self.inner.memory.negative(&key) {
            return Err(e.into());
        }
        let (up, repo, d2) = (t.upstream.clone(), t.repo.clone(), d.clone());
        let work = async move {
            match kind {
                Kind::Blob => up.blob_head(&repo, &d2).await,
                Kind::Manifest => up
                    .manifest_head(&repo, &Reference::Digest(d2))
                    .await
                    .map(|h| h.size),
            }
            .map_err(MirrorError::from)
        };
        let (result, _) = self
            .inner
            .links
            .confirms
            .run(&self.inner.tasks, key.clone(), work)
            .await;
        match result {
            Ok(size) => {
                tracing::debug!(upstream = %t.name, repository = %t.repo, digest = %d, "upstream confirmed the repository holds a cached digest");
                self.link(&t.name, &t.repo, std::slice::from_ref(d)).await;
                Ok(size)
            }
            Err(e) => {
                self.inner.memory.remember_not_found(key, &e);
                Err(e)
            }
        }
    }
}
