//! Tag lists and referrers indexes: cached for the tag TTL like tag answers, refreshed by one
//! upstream request for all concurrent clients, and served stale when the upstream fails.

use bytes::Bytes;
use ferry_metrics::Metrics;
use ferry_oci::Digest;

use crate::error::{MirrorError, Result};
use crate::meta::{self, CachedDoc, now_secs};
use crate::single_flight::SingleFlight;
use crate::{Mirror, Outcome, Target};

/// A cached document answer.
#[derive(Debug, Clone)]
pub struct ListAnswer {
    /// Body (JSON).
    pub body: Bytes,
    /// Content type.
    pub content_type: String,
    /// How it was obtained.
    pub outcome: Outcome,
}

type Flight = std::result::Result<Option<CachedDoc>, MirrorError>;

/// List fetches in flight.
#[derive(Default)]
pub struct Lists {
    flights: SingleFlight<String, Flight>,
}

impl Mirror {
    /// Every tag of the repository, as `{"name":..., "tags":[...]}` with all tags (the server
    /// paginates).
    pub async fn tags(&self, t: &Target) -> Result<(Vec<String>, Outcome)> {
        let key = meta::taglist_key(&t.name, t.repo.as_str());
        let (up, repo) = (t.upstream.clone(), t.repo.clone());
        let fetch = async move {
            let tags = up.tags(&repo).await?;
            let body = serde_json::to_string(&tags).expect("tags serialize");
            Ok(Some(CachedDoc {
                body,
                content_type: "application/json".into(),
                fetched_at: now_secs(),
            }))
        };
        let (doc, outcome) = self.cached_doc(t, key, fetch).await?;
        let doc = doc.ok_or_else(|| MirrorError::Storage("tag list missing".into()))?;
        let tags: Vec<String> = serde_json::from_str(&doc.body).unwrap_or_default();
        Ok((tags, outcome))
    }

    /// The referrers index of a manifest (`None`: the upstream has no referrers API).
    pub async fn referrers(
        &self,
        t: &Target,
        d: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ListAnswer>> {
        let key = meta::referrers_key(&t.name, t.repo.as_str(), d, artifact_type);
        let (up, repo, d2, at) = (
            t.upstream.clone(),
            t.repo.clone(),
            d.clone(),
            artifact_type.map(str::to_owned),
        );
        let fetch = async move {
            let r = up.referrers(&repo, &d2, at.as_deref()).await?;
            Ok(r.map(|(body, content_type)| CachedDoc {
                body: String::from_utf8_lossy(&body).into_owned(),
                content_type,
                fetched_at: now_secs(),
            }))
        };
        let (doc, outcome) = self.cached_doc(t, key, fetch).await?;
        Ok(doc.map(|d| ListAnswer {
            body: Bytes::from(d.body),
            content_type: d.content_type,
            outcome,
        }))
    }

    async fn cached_doc<F>(
        &self,
        t: &Target,
        key: String,
        fetch: F,
    ) -> Result<(Option<CachedDoc>, Outcome)>
    where
        F: std::future::Future<Output = Flight> + Send + 'static,
    {
        let store = self.inner.store.clone();
        let cached: Option<CachedDoc> = meta::get(store.as_ref(), &key).await?;
        let ttl = self.settings().policy.tag_ttl(&t.name);
        let fresh = |d: &CachedDoc| now_secs().saturating_sub(d.fetched_at) < ttl.as_secs().max(1);
        if let Some(d) = cached.as_ref().filter(|d| fresh(d)) {
            return Ok((Some(d.clone()), Outcome::Hit));
        }
        let key2 = key.clone();
        let work = async move {
            let doc = fetch.await?;
            if let Some(d) = &doc {
                meta::put(store.as_ref(), &key2, d).await?;
            }
            Ok(doc)
        };
        match self
            .inner
            .lists
            .flights
            .run(&self.inner.tasks, key, work)
            .await
            .0
        {
            Ok(doc) => Ok((doc, Outcome::Miss)),
            Err(MirrorError::Upstream(u))
                if u.is_transient() && cached.is_some() && self.settings().policy.serve_stale =>
            {
                Metrics::per_upstream(&self.inner.metrics.stale_served, &t.name, 1);
                tracing::warn!(upstream = %t.name, repository = %t.repo, error = %u, "upstream failed; serving a cached list");
                Ok((cached, Outcome::Stale))
            }
            Err(e) => Err(e),
        }
    }
}
