//! The `cache:` section: how long tag answers are trusted, which tags never change, and how
//! misses and errors are remembered.

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Dur};

/// Cache policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a tag -> digest answer is trusted before a HEAD revalidates it.
    pub tag_ttl: Dur,
    /// Regular expressions (whole-tag matches) of tags that never change, so are never
    /// revalidated, e.g. `v?[0-9]+\.[0-9]+\.[0-9]+`.
    pub immutable_tags: Vec<String>,
    /// How long an upstream "not found" is remembered.
    pub negative_ttl: Dur,
    /// Serve cached tags when the upstream is down, rate-limited or failing.
    pub serve_stale: bool,
    /// A client `Range` of a blob that is still downloading, beyond what has arrived:
    /// `forward` asks the upstream for that range at once (lazy pulling: eStargz, SOCI,
    /// nydus); `wait` waits for the download to get there.
    pub cold_ranges: ColdRanges,
    /// Memory for hot manifests and tag answers.
    pub memory: ByteSize,
    /// Longest time one upstream blob download may take.
    pub fill_timeout: Dur,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl: Dur::secs(600),
            immutable_tags: Vec::new(),
            negative_ttl: Dur::secs(60),
            serve_stale: true,
            cold_ranges: ColdRanges::Forward,
            memory: ByteSize(32 << 20),
            fill_timeout: Dur::secs(3600),
        }
    }
}

/// What a `Range` beyond the downloaded part of a cold blob does (`cache.cold_ranges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColdRanges {
    /// Forward the range upstream at once; the whole download goes on in the background.
    Forward,
    /// Wait until the download reaches the range.
    Wait,
}
