//! # ferry-mirror: the cache engine
//!
//! [`Mirror`] answers the pull API from the cache and the upstreams, with no HTTP framework in
//! sight: the server parses a request, asks [`Mirror::resolve`] which upstream repository it
//! means, and calls [`Mirror::manifest`], [`Mirror::blob`], [`Mirror::blob_head`],
//! [`Mirror::tags`] or [`Mirror::referrers`].
//!
//! - [`route`]: the routing rules (path prefix, `?ns=`, Host, default upstream, `library/`);
//! - [`manifests`]: digests are immutable; tags are trusted for their TTL, then revalidated with
//!   a HEAD, and served stale when the upstream fails ([`policy`]);
//! - [`blobs`] + [`fill`]: hits are read from the store; misses start one streaming download
//!   that every concurrent request follows;
//! - [`gate`]: the [`MissGate`] a caller passes in, asked exactly where a request would start
//!   an upstream fetch (the server's cache-miss quotas);
//! - [`links`]: a digest is served under a repository only when ferry knows the repository
//!   holds it (fetched through it, named by one of its manifests, or confirmed by an upstream
//!   `HEAD`); [`migrate`] derives these links from the tag answers of an older cache;
//! - [`index`]: sizes and last-served times, and eviction above `storage.max_size`;
//! - [`revalidate`]: expired tags answered at once and refreshed in the background, and tags
//!   deleted upstream served for `cache.keep_deleted`;
//! - [`lists`]: tag lists and referrers, cached like tags;
//! - [`import`]: content from an archive (`ferry import`), stored as a pull would store it.
//!
//! Settings derived from the config (routes, upstreams, policy) sit behind an `ArcSwap`, so a
//! reload swaps them without touching downloads in flight.

pub mod blobs;
pub mod error;
pub mod fill;
pub mod gate;
pub mod import;
pub mod index;
pub mod inspect;
pub mod links;
pub mod lists;
pub mod manifests;
pub mod meta;
pub mod migrate;
pub mod policy;
pub mod revalidate;
pub mod route;
pub(crate) mod segments;
pub mod single_flight;
pub mod spool_writer;
mod store_down;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferry_config::Config;
use ferry_metrics::Metrics;
use ferry_oci::RepoName;
use ferry_storage::BlobStore;
use ferry_upstream::{Upstream, Upstreams};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use blobs::{BlobAnswer, BlobBody};
pub use error::{MirrorError, Result};
/// Why a download did not become a cache entry (carried to every reader of it).
pub use ferry_storage::FillError;
/// Upstream failures, as the engine reports them (the server maps them to OCI errors).
pub use ferry_upstream::UpstreamError;
pub use gate::{Delivery, MissGate, MissRefused, Ungated};
pub use lists::ListAnswer;
pub use manifests::{CachedManifest, ManifestAnswer};
pub use revalidate::DeletedUpstream;
pub use route::{RouteError, Routed, Router};

/// How an answer was obtained, for logs, metrics and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache, no upstream request.
    Hit,
    /// Fetched from the upstream.
    Miss,
    /// From the cache after the upstream confirmed it.
    Revalidated,
    /// From the cache because the upstream failed.
    Stale,
    /// From the upstream past a failing store, not cached (`storage.unavailable: upstream`).
    Bypass,
}

impl Outcome {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Revalidated => "revalidated",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }

    /// Whether the answer cost no content download from the upstream.
    pub fn is_hit(self) -> bool {
        !matches!(self, Outcome::Miss | Outcome::Bypass)
    }
}

/// A request's upstream repository.
#[derive(Clone)]
pub struct Target {
    /// The upstream client (kept for the whole request, across reloads).
    pub upstream: Arc<Upstream>,
    /// Canonical upstream name.
    pub name: String,
    /// Repository in the upstream.
    pub repo: RepoName,
}

/// Longest time shutdown waits for background tasks (downloads end at once: they are
/// cancelled and leave nothing behind).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// A config prepared by [`Mirror::prepare_reload`], applied by [`Mirror::apply_reload`].
pub struct Reload {
    settings: Settings,
    max_size: u64,
    negative_ttl: Duration,
}

/// Config-derived settings, swapped whole on reload.
struct Settings {
    router: Router,
    upstreams: Upstreams,
    policy: policy::Policy,
    fill_timeout: Duration,
    redirect_ttl: Option<Duration>,
    /// `cache.cold_ranges: forward`.
    forward_cold_ranges: bool,
    /// `storage.unavailable: upstream`.
    upstream_when_store_fails: bool,
}

impl Settings {
    fn new(config: &Config, metrics: Arc<Metrics>) -> std::result::Result<Self, UpstreamError> {
        Ok(Settings {
            router: Router::new(config),
            upstreams: Upstreams::from_config(config, metrics)?,
            policy: policy::Policy::new(config),
            fill_timeout: config.cache.fill_timeout.0,
            forward_cold_ranges: config.cache.cold_ranges == ferry_config::ColdRanges::Forward,
            upstream_when_store_fails: config.storage.unavailable
                == ferry_config::Unavailable::Upstream,
            redirect_ttl: config
                .storage
                .s3
                .as_ref()
                .filter(|s| s.redirect)
                .map(|s| s.redirect_expiry.0),
        })
    }
}

/// The cache engine.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn BlobStore>,
    index: Arc<index::Index>,
    fills: fill::Fills,
    settings: ArcSwap<Settings>,
    metrics: Arc<Metrics>,
    memory: manifests::Memory,
    flights: manifests::Flights,
    background: revalidate::Background,
    lists: lists::Lists,
    links: links::Links,
    stop: CancellationToken,
    /// Every background task of the engine (downloads, index upkeep, migration) and of the
    /// server around it; [`Mirror::shutdown`] waits for them.
    tasks: TaskTracker,
}

impl Mirror {
    /// Builds the engine over `store`, loads the blob index and starts its upkeep task.
    pub async fn start(
        config: &Config,
        store: Arc<dyn BlobStore>,
        metrics: Arc<Metrics>,
    ) -> std::result::Result<Self, MirrorError> {
        let settings = Settings::new(config, metrics.clone())?;
        let index = Arc::new(index::Index::new(
            config.storage.max_size.0,
            metrics.clone(),
        ));
        index.load(store.as_ref()).await?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(index.clone().maintain(store.clone(), stop.clone()));
        let inner = Inner {
            memory: manifests::Memory::new(config.cache.memory.0, config.cache.negative_ttl.0),
            flights: manifests::Flights::default(),
            background: revalidate::Background::default(),
            lists: lists::Lists::default(),
            links: links::Links::default(),
            store,
            index,
            fills: fill::Fills::default(),
            settings: ArcSwap::from_pointee(settings),
            metrics,
            stop,
            tasks,
        };
        let mirror = Mirror {
            inner: Arc::new(inner),
        };
        let migration = migrate::run(mirror.clone(), mirror.inner.stop.clone());
        mirror.inner.tasks.spawn(migration);
        Ok(mirror)
    }

    /// Applies a new config: routes, upstreams, policy and size limit. Downloads in flight keep
    /// the upstream they started with.
    pub fn reload(&self, config: &Config) -> std::result::Result<(), MirrorError> {
        let prepared = self.prepare_reload(config)?;
        self.apply_reload(prepared);
        Ok(())
    }

    /// Builds everything a new config needs without changing anything, so a caller can check
    /// several parts (access control too) before applying any ([`Mirror::apply_reload`]).
    pub fn prepare_reload(&self, config: &Config) -> std::result::Result<Reload, MirrorError> {
        Ok(Reload {
            settings: Settings::new(config, self.inner.metrics.clone())?,
            max_size: config.storage.max_size.0,
            negative_ttl: config.cache.negative_ttl.0,
        })
    }

    /// Applies a prepared config.
    pub fn apply_reload(&self, r: Reload) {
        self.inner.settings.store(Arc::new(r.settings));
        self.inner.index.set_max(r.max_size);
        self.inner.memory.set_negative_ttl(r.negative_ttl);
    }

    /// The tracker of background tasks: the server spawns its own long-running tasks (watchers,
    /// scheduled sync) here, so that [`Mirror::shutdown`] waits for them too.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Resolves a request's name, `?ns=` and `Host` to an upstream repository.
    pub fn resolve(&self, name: &str, ns: Option<&str>, host: Option<&str>) -> Result<Target> {
        let settings = self.inner.settings.load();
        let routed = settings.router.resolve(name, ns, host)?;
        let upstream = settings
            .upstreams
            .get(&routed.upstream)
            .cloned()
            .ok_or_else(|| RouteError::UnknownRegistry(routed.upstream.clone()))?;
        Ok(Target {
            upstream,
            name: routed.upstream,
            repo: routed.repository,
        })
    }

    /// Checks that the store is writable (readiness).
    pub async fn check_ready(&self) -> Result<()> {
        self.inner.store.check_writable().await?;
        Ok(())
    }

    /// The blob index (sizes, eviction).
    pub fn index(&self) -> &Arc<index::Index> {
        &self.inner.index
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.store
    }

    /// Downloads in progress.
    pub fn inflight(&self) -> usize {
        self.inner.fills.len()
    }

    /// Tag revalidations running in the background.
    pub fn revalidating(&self) -> usize {
        self.inner.background.len()
    }

    /// Stops background upkeep and revalidations, waits for the background tasks and the
    /// store's own (within a time limit), and writes back access times.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        let work = async {
            self.inner.tasks.wait().await;
            self.inner.store.close().await;
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, work).await.is_err() {
            tracing::warn!(
                tasks = self.inner.tasks.len(),
                "background tasks still running at exit"
            );
        }
        self.inner.index.flush(self.inner.store.as_ref()).await;
    }

    fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.inner.settings.load()
    }
}

#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod tests;
