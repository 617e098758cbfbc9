//! # ferry-metrics: every metric, defined once
//!
//! One [`Metrics`] value owns a Prometheus registry and every metric family ferry exports; it
//! is created at start-up and passed (in an `Arc`) to the parts that record, so there is no
//! global state and tests can build their own. Names follow Prometheus conventions: `ferry_`
//! prefix, `_total` for counters, base units (`_seconds`, `_bytes`).
//!
//! Beside the Prometheus families: [`Totals`], plain counters the console's sampler drains
//! into its [`series::Series`] (last hour, day and week), and [`HealthBook`], what ferry knows
//! of each upstream's health.

pub mod health;
pub mod series;
pub mod totals;

pub use health::{HealthBook, UpstreamHealth};
pub use totals::Totals;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Endpoint family: base, manifest, blob, tags, referrers, token, metrics, health, other.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Status code.
    pub status: u16,
    /// Upstream registry, or empty.
    pub upstream: String,
}

/// Labels naming an upstream and a content kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Upstream registry.
    pub upstream: String,
    /// manifest, blob, tag, tags, referrers, token.
    pub kind: &'static str,
}

/// Labels of an upstream response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream registry.
    pub upstream: String,
    /// What was asked: manifest, manifest_head, blob, tags, referrers, token.
    pub kind: &'static str,
    /// Status code, or 0 when no response arrived.
    pub status: u16,
}

/// Labels of an upstream response, by the local source address it was sent from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Upstream registry.
    pub upstream: String,
    /// Local source address (`default` when the system picks it).
    pub address: String,
    /// Status code.
    pub status: u16,
}

/// Labels naming an upstream and a local source address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabels {
    /// Upstream registry.
    pub upstream: String,
    /// Local source address.
    pub address: String,
}

/// Labels naming only an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOnly {
    /// Upstream registry.
    pub upstream: String,
}

/// Labels of bytes served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabels {
    /// Upstream registry.
    pub upstream: String,
    /// cache (a hit) or upstream (a miss streamed through).
    pub source: &'static str,
}

/// Labels naming an upstream and one of its accounts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// Upstream registry.
    pub upstream: String,
    /// The account's username, or `anonymous`.
    pub account: String,
}

/// Labels with a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// Labels of a fair-use rule hit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule's name (`access.rules[].name`).
    pub rule: String,
    /// warn, slow, deny or ban.
    pub action: &'static str,
}

/// Labels naming a fair-use action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// ban or slow.
    pub action: &'static str,
}

/// Labels naming an egress budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// `total` or an upstream.
    pub budget: String,
}

/// Every metric ferry exports.
pub struct Metrics {
    registry: Registry,
    /// Running totals for the console's time series (drained by its sampler).
    pub totals: Totals,
    /// What ferry knows of each upstream's health.
    pub health: HealthBook,
    /// HTTP requests answered.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency until the response head.
    pub http_duration: Family<KindLabels, Histogram>,
    /// Body bytes sent to clients.
    pub served_bytes: Family<ServedLabels, Counter>,
    /// Cache hits.
    pub cache_hits: Family<KindLabels, Counter>,
    /// Cache misses.
    pub cache_misses: Family<KindLabels, Counter>,
    /// Tag revalidations against the upstream.
    pub revalidations: Family<UpstreamOnly, Counter>,
    /// Stale answers served because the upstream failed.
    pub stale_served: Family<UpstreamOnly, Counter>,
    /// Answers served from the cache although the upstream deleted them (`keep_deleted`).
    pub deleted_upstream_served: Family<UpstreamOnly, Counter>,
    /// The upstream's rate limit per account (`ratelimit-limit`), in requests per window.
    pub ratelimit_limit: Family<AccountLabels, Gauge>,
    /// What is left of it (`ratelimit-remaining`).
    pub ratelimit_remaining: Family<AccountLabels, Gauge>,
    /// Requests sent upstream, by response status.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    /// Upstream responses by local source address and status.
    pub source_requests: Family<SourceLabels, Counter>,
    /// Accounts resting (after a 429 or a low `ratelimit-remaining`) per source address.
    pub source_resting: Family<AddressLabels, Gauge>,
    /// Upstream latency until the response head.
    pub upstream_duration: Family<KindLabels, Histogram>,
    /// Bytes downloaded from upstreams.
    pub upstream_bytes: Family<UpstreamOnly, Counter>,
    /// Segments of a cold download asked again of another source because they ran slow.
    pub segment_hedges: Family<UpstreamOnly, Counter>,
    /// Requests that joined a download already in progress.
    pub coalesced_waiters: Family<UpstreamOnly, Counter>,
    /// Downloads in progress.
    pub inflight_fills: Gauge,
    /// Failed downloads (digest mismatch, cut connection, ...).
    pub fill_failures: Family<ReasonLabels, Counter>,
    /// Bytes stored in the cache.
    pub storage_bytes: Gauge,
    /// Blobs evicted to stay under `storage.max_size`.
    pub evictions: Counter,
    /// Bytes evicted.
    pub evicted_bytes: Counter,
    /// Requests refused by access control, by reason.
    pub rejected: Family<ReasonLabels, Counter>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections refused at accept, by the cap that refused them.
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Client connections closed by a timeout, by which one.
    pub connections_timed_out: Family<ReasonLabels, Counter>,
    /// Fair-use rules that fired, by rule and action.
    pub rule_hits: Family<RuleLabels, Counter>,
    /// Bans and slow-downs in force.
    pub sanctions: Family<ActionLabels, Gauge>,
    /// Percent of each egress budget used.
    pub budget_used: Family<BudgetLabels, Gauge>,
    /// The step of each egress budget in force (0 = none).
    pub budget_step: Family<BudgetLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            totals: Totals::default(),
            health: HealthBook::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            served_bytes: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            revalidations: Family::default(),
            stale_served: Family::default(),
            deleted_upstream_served: Family::default(),
            ratelimit_limit: Family::default(),
            ratelimit_remaining: Family::default(),
            upstream_requests: Family::default(),
            source_requests: Family::default(),
            source_resting: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_bytes: Family::default(),
            segment_hedges: Family::default(),
            coalesced_waiters: Family::default(),
            inflight_fills: Gauge::default(),
            fill_failures: Family::default(),
            storage_bytes: Gauge::default(),
            evictions: Counter::default(),
            evicted_bytes: Counter::default(),
            rejected: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            rule_hits: Family::default(),
            sanctions: Family::default(),
            budget_used: Family::default(),
            budget_step: Family::default(),
        };
        m.register_all();
        m
    }

    fn register_all(&mut self) {
        self.register_serving();
        self.register_upstreams();
        self.register_storage();
        self.register_clients();
    }

    /// Requests, answers and the cache: what clients see.
    fn register_serving(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_http_requests",
            "HTTP requests answered",
            self.http_requests.clone(),
        );
        r.register(
            "ferry_http_request_duration_seconds",
            "Time from request to response head, by route kind",
            self.http_duration.clone(),
        );
        r.register(
            "ferry_served_bytes",
            "Body bytes sent to clients",
            self.served_bytes.clone(),
        );
        r.register(
            "ferry_cache_hits",
            "Requests answered from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "ferry_cache_misses",
            "Requests that needed the upstream",
            self.cache_misses.clone(),
        );
        r.register(
            "ferry_cache_revalidations",
            "Tag revalidations sent upstream",
            self.revalidations.clone(),
        );
        r.register(
            "ferry_cache_stale_served",
            "Cached answers served because the upstream failed",
            self.stale_served.clone(),
        );
        r.register(
            "ferry_cache_deleted_upstream_served",
            "Cached answers served although the upstream deleted them (cache.keep_deleted)",
            self.deleted_upstream_served.clone(),
        );
    }

    /// Upstream requests, rate limits, source addresses and downloads.
    fn register_upstreams(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_upstream_ratelimit_limit",
            "Upstream rate limit per account, from ratelimit-limit",
            self.ratelimit_limit.clone(),
        );
        r.register(
            "ferry_upstream_ratelimit_remaining",
            "Requests left in the upstream rate-limit window per account, from ratelimit-remaining",
            self.ratelimit_remaining.clone(),
        );
        r.register(
            "ferry_upstream_requests",
            "Requests sent to upstreams",
            self.upstream_requests.clone(),
        );
        r.register(
            "ferry_upstream_source_requests",
            "Upstream responses by local source address",
            self.source_requests.clone(),
        );
        r.register(
            "ferry_upstream_source_resting",
            "Accounts resting on a source address after a 429 or a low ratelimit-remaining",
            self.source_resting.clone(),
        );
        r.register(
            "ferry_upstream_request_duration_seconds",
            "Upstream time to response head",
            self.upstream_duration.clone(),
        );
        r.register(
            "ferry_upstream_received_bytes",
            "Bytes downloaded from upstreams",
            self.upstream_bytes.clone(),
        );
        r.register(
            "ferry_segment_hedges",
            "Segments of cold downloads asked again of another source because they ran slow",
            self.segment_hedges.clone(),
        );
        r.register(
            "ferry_coalesced_waiters",
            "Requests that joined a download already in progress",
            self.coalesced_waiters.clone(),
        );
        r.register(
            "ferry_inflight_fills",
            "Upstream downloads in progress",
            self.inflight_fills.clone(),
        );
        r.register(
            "ferry_fill_failures",
            "Failed upstream downloads",
            self.fill_failures.clone(),
        );
    }

    /// The cache's size and evictions.
    fn register_storage(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_storage_used_bytes",
            "Bytes in the cache",
            self.storage_bytes.clone(),
        );
        r.register(
            "ferry_storage_evictions",
            "Blobs evicted by the size limit",
            self.evictions.clone(),
        );
        r.register(
            "ferry_storage_evicted_bytes",
            "Bytes evicted by the size limit",
            self.evicted_bytes.clone(),
        );
    }

    /// Access control, connections, fair use and egress budgets.
    fn register_clients(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_rejected_requests",
            "Requests refused by access control",
            self.rejected.clone(),
        );
        r.register(
            "ferry_connections_open",
            "Client connections open",
            self.connections_open.clone(),
        );
        r.register(
            "ferry_connections_refused",
            "Client connections refused by server.max_connections or max_connections_per_ip",
            self.connections_refused.clone(),
        );
        r.register(
            "ferry_connections_timed_out",
            "Client connections closed by header_timeout, idle_timeout or send_timeout",
            self.connections_timed_out.clone(),
        );
        r.register(
            "ferry_fairuse_rule_hits",
            "Fair-use rules that fired (access.rules), by rule and action",
            self.rule_hits.clone(),
        );
        r.register(
            "ferry_fairuse_sanctions",
            "Bans and slow-downs in force, by action",
            self.sanctions.clone(),
        );
        r.register(
            "ferry_budget_used_percent",
            "Percent of each egress budget used (access.budgets)",
            self.budget_used.clone(),
        );
        r.register(
            "ferry_budget_step",
            "Egress budget step in force (0 = none; see access.budgets.steps)",
            self.budget_step.clone(),
        );
    }

    /// Counts a fair-use rule hit.
    pub fn rule_hit(&self, rule: &str, action: &'static str) {
        self.rule_hits
            .get_or_create(&RuleLabels {
                rule: rule.to_owned(),
                action,
            })
            .inc();
    }

    /// Sets the bans and slow-downs in force.
    pub fn set_sanctions(&self, bans: i64, slow: i64) {
        for (action, n) in [("ban", bans), ("slow", slow)] {
            self.sanctions
                .get_or_create(&ActionLabels { action })
                .set(n);
        }
    }

    /// Sets an egress budget's percent used and step.
    pub fn set_budget(&self, budget: &str, percent: i64, step: i64) {
        let l = BudgetLabels {
            budget: budget.to_owned(),
        };
        self.budget_used.get_or_create(&l).set(percent);
        self.budget_step.get_or_create(&l).set(step);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }

    /// Counts an upstream response (status 0: no response).
    pub fn upstream_request(&self, upstream: &str, kind: &'static str, status: u16, secs: f64) {
        self.health.note(upstream, status);
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
                kind,
                status,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&KindLabels {
                upstream: upstream.to_owned(),
                kind,
            })
            .observe(secs);
    }

    /// Counts an upstream response by the source address it was sent from.
    pub fn source_request(&self, upstream: &str, address: &str, status: u16) {
        self.source_requests
            .get_or_create(&SourceLabels {
                upstream: upstream.to_owned(),
                address: address.to_owned(),
                status,
            })
            .inc();
    }

    /// Sets how many accounts rest on a source address.
    pub fn source_resting(&self, upstream: &str, address: &str, resting: i64) {
        self.source_resting
            .get_or_create(&AddressLabels {
                upstream: upstream.to_owned(),
                address: address.to_owned(),
            })
            .set(resting);
    }

    /// Counts a cache hit or miss.
    pub fn cache(&self, upstream: &str, kind: &'static str, hit: bool) {
        self.totals.cache(hit);
        let family = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        family
            .get_or_create(&KindLabels {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// Counts an event labelled by upstream only.
    pub fn per_upstream(family: &Family<UpstreamOnly, Counter>, upstream: &str, n: u64) {
        family
            .get_or_create(&UpstreamOnly {
                upstream: upstream.to_owned(),
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.cache("docker.io", "blob", true);
        m.upstream_request("docker.io", "blob", 200, 0.01);
        let text = m.render();
        assert!(
            text.contains("ferry_cache_hits_total{upstream=\"docker.io\",kind=\"blob\"} 1"),
            "{text}"
        );
        assert!(text.contains("ferry_upstream_requests_total{upstream=\"docker.io\",kind=\"blob\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("# TYPE ferry_inflight_fills gauge"), "{text}");
    }
}
