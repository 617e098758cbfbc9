//! The `cache:` section: how long tag answers are trusted, which tags never change, how misses
//! and errors are remembered, how expired tags are revalidated, and how long an image deleted
//! upstream is still served.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// How a tag past its TTL is revalidated: answered at once and refreshed in the background,
    /// or held until the upstream answers.
    pub revalidate: Revalidate,
    /// With background revalidation: a hot tag (served at least twice since its last refresh)
    /// is revalidated when 80% of its TTL has passed, so clients never see it expire.
    pub refresh_ahead: bool,
    /// How long a tag ferry has served keeps being served after the upstream started answering
    /// 404 for it (counted from the first 404), or `off`.
    pub keep_deleted: KeepDeleted,
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
            revalidate: Revalidate::Background,
            refresh_ahead: true,
            keep_deleted: KeepDeleted(Some(Dur::secs(7 * 86_400))),
            cold_ranges: ColdRanges::Forward,
            memory: ByteSize(32 << 20),
            fill_timeout: Dur::secs(3600),
        }
    }
}

/// `cache.revalidate`: what a request for a tag past its TTL waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Revalidate {
    /// Answer from the cache at once; one background task per tag asks the upstream.
    #[default]
    Background,
    /// Wait for the upstream's answer (stale only if it fails).
    Blocking,
}

/// `cache.keep_deleted`: a duration, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepDeleted(pub Option<Dur>);

impl KeepDeleted {
    /// The duration, `None` when off.
    pub fn get(self) -> Option<Duration> {
        self.0.map(|d| d.0).filter(|d| !d.is_zero())
    }
}

impl fmt::Display for KeepDeleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => d.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for KeepDeleted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeepDeleted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(KeepDeleted(None)),
            Raw::Bool(true) => Err(serde::de::Error::custom(
                "keep_deleted takes a duration (e.g. 7d) or `off`",
            )),
            Raw::Text(t) if matches!(t.trim(), "off" | "false" | "none" | "0") => {
                Ok(KeepDeleted(None))
            }
            Raw::Text(t) => Dur::parse(&t)
                .map(|d| KeepDeleted(Some(d)))
                .map_err(serde::de::Error::custom),
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
