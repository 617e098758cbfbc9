//! Tags past their TTL and tags deleted upstream.
//!
//! With `cache.revalidate: background` a request for an expired tag is answered at once from
//! the cache and one task per tag (single-flight) asks the upstream with a HEAD; the next
//! request sees what it learned. The tasks belong to the [`Mirror`]: they run on its one
//! task tracker ([`Mirror::tasks`]) and stop with [`Mirror::shutdown`].
//!
//! With `cache.refresh_ahead` a hot tag (served [`HOT_HITS`] times since its last refresh) is
//! revalidated the same way once 80% of its TTL has passed, so its clients never see it
//! expire; cold tags cost no upstream request until someone asks.
//!
//! With `cache.keep_deleted`, a tag ferry has served that the upstream now answers 404 for
//! keeps being served for that long, counted from the first 404, which is recorded in the tag's
//! metadata; every such answer carries a [`DeletedUpstream`] notice.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferry_metrics::Metrics;
use ferry_oci::Tag;
use ferry_upstream::{Priority, UpstreamError};

use crate::error::MirrorError;
use crate::manifests::{CachedManifest, ManifestAnswer};
use crate::meta::{self, TagEntry, now_secs};
use crate::policy::HOT_HITS;
use crate::{Mirror, Outcome, Target};

/// An answer served although the upstream says the image is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedUpstream {
    /// When the upstream first answered 404.
    pub since: SystemTime,
    /// Until when ferry serves its copy.
    pub until: SystemTime,
}

impl DeletedUpstream {
    /// The value of the `ferry-deleted-upstream` response header:
    /// `since=<RFC 3339>; until=<RFC 3339>`.
    pub fn header_value(&self) -> String {
        format!(
            "since={}; until={}",
            humantime::format_rfc3339_seconds(self.since),
            humantime::format_rfc3339_seconds(self.until)
        )
    }
}

/// Background revalidations: which tags are being refreshed (the tasks doing it run on the
/// engine's task tracker).
#[derive(Default)]
pub struct Background {
    running: Arc<Mutex<HashSet<String>>>,
}

impl Background {
    /// Revalidations in flight.
    pub fn len(&self) -> usize {
        self.running.lock().expect("revalidation lock").len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `key`; `None` if it is already being revalidated.
    fn claim(&self, key: &str) -> Option<Claim> {
        let mut running = self.running.lock().expect("revalidation lock");
        running.insert(key.to_owned()).then(|| Claim {
            running: self.running.clone(),
            key: key.to_owned(),
        })
    }
}

/// Releases a claimed key when the task ends, however it ends.
struct Claim {
    running: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&self.key);
        }
    }
}

impl Mirror {
    /// Answers a tag from the cache without waiting for the upstream, when the policy allows:
    /// fresh; expired with background revalidation (which this starts); or deleted upstream
    /// within `keep_deleted`. `None`: ask the upstream and wait.
    pub(crate) fn answer_from_cache(
        &self,
        t: &Target,
        tag: &Tag,
        entry: &TagEntry,
        manifest: Arc<CachedManifest>,
        key: &str,
    ) -> Option<ManifestAnswer> {
        let settings = self.settings();
        let policy = &settings.policy;
        let deleted = policy.deleted_notice(entry)?;
        if !policy.is_fresh(&t.name, tag.as_str(), entry.fetched()) {
            // Answering an expired tag before the upstream confirms it is serving it stale:
            // with `serve_stale` off only an imported tag may be (others wait for the upstream).
            if !policy.background || !(policy.serve_stale || entry.imported) {
                return None;
            }
            self.revalidate_in_background(t, tag, entry.clone(), key);
        } else if self.count_hit(key) >= HOT_HITS
            && policy.refresh_ahead_due(&t.name, tag.as_str(), entry.fetched())
        {
            self.revalidate_in_background(t, tag, entry.clone(), key);
        }
        if deleted.is_some() {
            Metrics::per_upstream(&self.inner.metrics.deleted_upstream_served, &t.name, 1);
        }
        Some(ManifestAnswer {
            manifest,
            outcome: Outcome::Hit,
            deleted_upstream: deleted,
        })
    }

    /// Counts a fresh answer of `key`; returns the count since its last refresh.
    fn count_hit(&self, key: &str) -> u64 {
        let hits = self
            .inner
            .memory
            .tag_hits
            .get_with(key.to_owned(), Arc::default);
        hits.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Starts one background revalidation of `key`, unless one is running.
    fn revalidate_in_background(&self, t: &Target, tag: &Tag, entry: TagEntry, key: &str) {
        let bg = &self.inner.background;
        if self.inner.tasks.is_closed() {
            return;
        }
        let Some(claim) = bg.claim(key) else {
            return;
        };
        let (this, t, tag) = (self.clone(), t.clone(), tag.clone());
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            let _claim = claim;
            let work = this.refresh_tag(&t, &tag, Some(entry.clone()), &_claim.key);
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = Priority::Background.scope(work) => r,
            };
            if let Err(e) = result {
                this.after_failed_revalidation(&t, entry, e, &_claim.key)
                    .await;
            }
        });
    }

    async fn after_failed_revalidation(
        &self,
        t: &Target,
        entry: TagEntry,
        e: MirrorError,
        key: &str,
    ) {
        if is_not_found(&e) {
            if let Err(e) = self.mark_deleted(t, entry, key).await {
                tracing::warn!(upstream = %t.name, repository = %t.repo, error = %e, "could not record a tag deleted upstream");
            }
            return;
        }
        if matches!(&e, MirrorError::Upstream(UpstreamError::RateLimited { .. })) {
            // Often the ledger keeping an account's reserve for clients: expected, and cheap.
            tracing::debug!(upstream = %t.name, repository = %t.repo, error = %e, "background revalidation deferred");
            return;
        }
        tracing::warn!(upstream = %t.name, repository = %t.repo, error = %e, "background revalidation failed; the cached tag stays in use");
    }

    /// After a 404 for a known tag: the cached answer while `keep_deleted` allows, else `None`.
    pub(crate) async fn serve_deleted(
        &self,
        t: &Target,
        entry: &TagEntry,
        key: &str,
    ) -> crate::Result<Option<ManifestAnswer>> {
        if self.settings().policy.keep_deleted.is_none() {
            return Ok(None);
        }
        let Some(m) = self.cached_manifest(&entry.digest).await? else {
            return Ok(None);
        };
        let since = self.mark_deleted(t, entry.clone(), key).await?;
        let Some(until) = self.settings().policy.keep_deleted_until(since) else {
            return Ok(None);
        };
        Metrics::per_upstream(&self.inner.metrics.deleted_upstream_served, &t.name, 1);
        Ok(Some(ManifestAnswer {
            manifest: m,
            outcome: Outcome::Stale,
            deleted_upstream: Some(DeletedUpstream { since, until }),
        }))
    }

    /// Records that the upstream answered 404 for a known tag (the first time is kept).
    async fn mark_deleted(
        &self,
        t: &Target,
        mut entry: TagEntry,
        key: &str,
    ) -> crate::Result<SystemTime> {
        let now = now_secs();
        if entry.deleted_upstream_at.is_none() {
            match self.settings().policy.keep_deleted {
                Some(keep) => {
                    tracing::warn!(upstream = %t.name, repository = %t.repo, key, keep_deleted = ?keep, "the upstream deleted this tag; ferry serves its copy for cache.keep_deleted")
                }
                None => {
                    tracing::info!(upstream = %t.name, repository = %t.repo, key, "the upstream deleted this tag (cache.keep_deleted is off)")
                }
            }
        }
        let since = *entry.deleted_upstream_at.get_or_insert(now);
        entry.fetched_at = now;
        meta::put(self.inner.store.as_ref(), key, &entry).await?;
        self.inner.memory.tags.insert(key.to_owned(), entry);
        Ok(meta::at_secs(since))
    }
}

/// Whether an error is the upstream's "not found".
pub(crate) fn is_not_found(e: &MirrorError) -> bool {
    matches!(e, MirrorError::Upstream(UpstreamError::NotFound { .. }))
}
