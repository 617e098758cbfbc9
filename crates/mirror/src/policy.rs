//! Freshness policy: how long a tag answer is trusted, which tags never change, and whether a
//! stale answer may be served when the upstream fails.

use std::time::{Duration, SystemTime};

use ferry_config::{Config, Revalidate};
use regex::Regex;

/// The cache policy derived from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    default_ttl: Duration,
    per_upstream: Vec<(String, Duration)>,
    immutable: Vec<Regex>,
    /// Serve cached tags when the upstream fails.
    pub serve_stale: bool,
    /// How long a "not found" from upstream is remembered.
    pub negative_ttl: Duration,
    /// Whether a tag past its TTL is answered at once and refreshed in the background.
    pub background: bool,
    /// How long a tag deleted upstream is still served (`None`: not at all).
    pub keep_deleted: Option<Duration>,
    /// Whether hot tags are revalidated before they expire (background mode only).
    pub refresh_ahead: bool,
}

/// Fresh answers served since its last refresh that make a tag hot.
pub const HOT_HITS: u64 = 2;

impl Policy {
    /// Builds the policy (patterns are already validated).
    pub fn new(config: &Config) -> Self {
        let per_upstream = config
            .upstreams
            .iter()
            .filter_map(|(n, u)| u.tag_ttl.map(|t| (n.clone(), t.0)))
            .collect();
        let immutable = config
            .cache
            .immutable_tags
            .iter()
            .filter_map(|p| Regex::new(&format!("^(?:{p})$")).ok())
            .collect();
        Policy {
            default_ttl: config.cache.tag_ttl.0,
            per_upstream,
            immutable,
            serve_stale: config.cache.serve_stale,
            negative_ttl: config.cache.negative_ttl.0,
            background: config.cache.revalidate == Revalidate::Background,
            keep_deleted: config.cache.keep_deleted.get(),
            refresh_ahead: config.cache.refresh_ahead
                && config.cache.revalidate == Revalidate::Background,
        }
    }

    /// The tag TTL of an upstream.
    pub fn tag_ttl(&self, upstream: &str) -> Duration {
        self.per_upstream
            .iter()
            .find(|(n, _)| n == upstream)
            .map_or(self.default_ttl, |(_, t)| *t)
    }

    /// Whether a tag matches an immutable pattern (never revalidated).
    pub fn is_immutable(&self, tag: &str) -> bool {
        self.immutable.iter().any(|r| r.is_match(tag))
    }

    /// Whether a tag answer fetched at `fetched_at` may be used without asking upstream.
    pub fn is_fresh(&self, upstream: &str, tag: &str, fetched_at: SystemTime) -> bool {
        if self.is_immutable(tag) {
            return true;
        }
        let age = SystemTime::now()
            .duration_since(fetched_at)
            .unwrap_or_default();
        age < self.tag_ttl(upstream)
    }

    /// Whether a fresh tag answer fetched at `fetched_at` is old enough (80% of its TTL) to be
    /// refreshed ahead, if it is hot.
    pub fn refresh_ahead_due(&self, upstream: &str, tag: &str, fetched_at: SystemTime) -> bool {
        if !self.refresh_ahead || self.is_immutable(tag) {
            return false;
        }
        let age = SystemTime::now()
            .duration_since(fetched_at)
            .unwrap_or_default();
        age >= self.tag_ttl(upstream).mul_f64(0.8)
    }

    /// For a cached tag that may be served: `Some(None)` if not deleted upstream,
    /// `Some(Some(notice))` if deleted and within `keep_deleted`; `None` if deleted and past it.
    pub fn deleted_notice(
        &self,
        entry: &crate::meta::TagEntry,
    ) -> Option<Option<crate::revalidate::DeletedUpstream>> {
        let Some(since) = entry.deleted_since() else {
            return Some(None);
        };
        let until = self.keep_deleted_until(since)?;
        Some(Some(crate::revalidate::DeletedUpstream { since, until }))
    }

    /// Until when a tag first seen deleted upstream at `since` is still served, if it is now.
    pub fn keep_deleted_until(&self, since: SystemTime) -> Option<SystemTime> {
        let until = since + self.keep_deleted?;
        (SystemTime::now() < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_immutable_tags() {
        let text = "cache:\n  tag_ttl: 10m\n  immutable_tags: ['v?[0-9]+\\.[0-9]+\\.[0-9]+']\nupstreams:\n  docker.io: {}\n  ghcr.io: {tag_ttl: 1m}\n";
        let p = Policy::new(&Config::from_yaml(text, Vec::new()).unwrap());
        let now = SystemTime::now();
        let five_min_ago = now - Duration::from_secs(300);
        assert!(p.is_fresh("docker.io", "latest", five_min_ago));
        assert!(
            !p.is_fresh("ghcr.io", "latest", five_min_ago),
            "per-upstream TTL"
        );
        assert!(p.is_fresh("ghcr.io", "v1.2.3", now - Duration::from_secs(86_400 * 365)));
        assert!(p.is_fresh("ghcr.io", "1.2.3", five_min_ago));
        assert!(!p.is_immutable("1.2.3-rc1"), "patterns match whole tags");
        assert!(!p.is_immutable("latest"));
        assert!(p.background, "background revalidation is the default");
        let ghcr = |secs| now - Duration::from_secs(secs);
        assert!(
            p.refresh_ahead_due("ghcr.io", "latest", ghcr(50)),
            "50s of 1m"
        );
        assert!(!p.refresh_ahead_due("ghcr.io", "latest", ghcr(40)));
        assert!(
            !p.refresh_ahead_due("ghcr.io", "1.2.3", ghcr(50)),
            "immutable"
        );
    }

    #[test]
    fn keep_deleted_window() {
        let text = "cache:\n  keep_deleted: 1h\n  revalidate: blocking\n";
        let p = Policy::new(&Config::from_yaml(text, Vec::new()).unwrap());
        assert!(!p.background);
        let now = SystemTime::now();
        let until = p
            .keep_deleted_until(now - Duration::from_secs(600))
            .unwrap();
        assert!(until > now && until <= now + Duration::from_secs(3000));
        assert_eq!(p.keep_deleted_until(now - Duration::from_secs(3601)), None);
        let off = "cache:\n  keep_deleted: off\n";
        let p = Policy::new(&Config::from_yaml(off, Vec::new()).unwrap());
        assert_eq!(
            p.keep_deleted_until(now),
            None,
            "off serves nothing deleted"
        );
    }
}
