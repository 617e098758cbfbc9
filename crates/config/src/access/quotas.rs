//! `access.quotas`: request, byte, cache-miss, concurrency and bandwidth limits per client IP
//! (anonymous), per user (logged in) and for single users; rates are `<amount>/<window>`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{ByteSize, Dur};

/// Quotas for anonymous clients (per IP), logged-in clients (per user) and single users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Limits of each anonymous client, counted per client IP.
    pub anonymous: QuotaTier,
    /// Limits of each logged-in client, counted per user.
    pub authenticated: QuotaTier,
    /// Per-user overrides laid over `authenticated` (only the keys given change).
    pub users: BTreeMap<String, QuotaTier>,
    /// Failed logins allowed per client IP before it gets 429 (guards the bcrypt cost).
    pub failed_logins: Rate,
    /// Prefix of every Redis key of the counters.
    pub redis_prefix: String,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig {
            anonymous: QuotaTier::default(),
            authenticated: QuotaTier::default(),
            users: BTreeMap::new(),
            failed_logins: Rate::per(10, Duration::from_secs(60)),
            redis_prefix: "ferry:access:".into(),
        }
    }
}

/// The limits of one kind of client; an unset key is unlimited (or, in `quotas.users`,
/// inherited from `authenticated`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaTier {
    /// Requests per minute (shorthand of `requests: N/1m`).
    pub requests_per_minute: Option<u64>,
    /// Requests per window, e.g. `20/1m`, `1000/1h`.
    pub requests: Option<Rate>,
    /// Bytes per hour (shorthand of `bytes: SIZE/1h`).
    pub bytes_per_hour: Option<ByteSize>,
    /// Bytes served per window (cache hits and misses), e.g. `1GiB/2h`.
    pub bytes: Option<Rate>,
    /// Requests that had to go upstream (cache misses) per window.
    pub miss_requests: Option<Rate>,
    /// Bytes of cache misses per window.
    pub miss_bytes: Option<Rate>,
    /// Requests in flight at once.
    pub concurrent: Option<u32>,
    /// Blob download speed, across all of the client's connections, e.g. `10MiB/s`.
    pub bandwidth: Option<Rate>,
}

impl QuotaTier {
    /// The request rate, from `requests` or `requests_per_minute`.
    pub fn request_rate(&self) -> Option<Rate> {
        self.requests.or_else(|| {
            self.requests_per_minute
                .map(|n| Rate::per(n, Duration::from_secs(60)))
        })
    }

    /// The byte rate, from `bytes` or `bytes_per_hour`.
    pub fn byte_rate(&self) -> Option<Rate> {
        self.bytes.or_else(|| {
            self.bytes_per_hour
                .map(|b| Rate::per(b.0, Duration::from_secs(3600)))
        })
    }

    /// This tier with the keys set in `over` replaced.
    pub fn overlay(&self, over: &QuotaTier) -> QuotaTier {
        QuotaTier {
            requests_per_minute: None,
            requests: over.request_rate().or(self.request_rate()),
            bytes_per_hour: None,
            bytes: over.byte_rate().or(self.byte_rate()),
            miss_requests: over.miss_requests.or(self.miss_requests),
            miss_bytes: over.miss_bytes.or(self.miss_bytes),
            concurrent: over.concurrent.or(self.concurrent),
            bandwidth: over.bandwidth.or(self.bandwidth),
        }
    }

    /// Whether no limit at all is set.
    pub fn is_unlimited(&self) -> bool {
        let limited = |r: Option<Rate>| r.is_some_and(|r| r.limit().is_some());
        !(limited(self.request_rate())
            || limited(self.byte_rate())
            || limited(self.miss_requests)
            || limited(self.miss_bytes)
            || limited(self.bandwidth)
            || self.concurrent.is_some())
    }
}

/// An amount per window (`20/1m`, `1GiB/2h`, `10MiB/s`), or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// No limit (to lift an inherited one).
    Unlimited,
    /// `amount` per `window`.
    Per {
        /// Requests or bytes.
        amount: u64,
        /// The window (GCRA period) in which `amount` is allowed.
        window: Dur,
    },
}

impl Rate {
    /// `amount` per `window`.
    pub const fn per(amount: u64, window: Duration) -> Rate {
        Rate::Per {
            amount,
            window: Dur(window),
        }
    }

    /// The amount and window, or `None` when unlimited.
    pub fn limit(self) -> Option<(u64, Duration)> {
        match self {
            Rate::Unlimited => None,
            Rate::Per { amount, window } => Some((amount, window.0)),
        }
    }

    /// Parses `20/1m`, `20/min`, `1GiB/2h`, `10MiB/s` or `unlimited`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::Unlimited);
        }
        let hint = "examples: 20/1m, 1GiB/2h, 10MiB/s, unlimited";
        let (amount, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a rate ({hint})"))?;
        let amount = ByteSize::parse(amount)
            .map_err(|e| format!("{e} ({hint})"))?
            .0;
        let window = window.trim();
        let window = if window.starts_with(|c: char| c.is_ascii_alphabetic()) {
            Dur::parse(&format!("1{window}"))
        } else {
            Dur::parse(window)
        }
        .map_err(|e| format!("{e} ({hint})"))?;
        if amount == 0 || window.0.is_zero() {
            return Err(format!(
                "{s:?}: amount and window must be greater than zero ({hint})"
            ));
        }
        Ok(Rate::Per { amount, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Per { amount, window } => write!(f, "{}/{}", ByteSize(*amount), window),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl QuotasConfig {
    /// Reports every problem of the quotas through `err(key path, message)`.
    pub(crate) fn check(&self, err: &mut impl FnMut(&[&str], String)) {
        check_tier(&["access", "quotas", "anonymous"], &self.anonymous, err);
        check_tier(
            &["access", "quotas", "authenticated"],
            &self.authenticated,
            err,
        );
        for (name, tier) in &self.users {
            check_tier(&["access", "quotas", "users", name], tier, err);
        }
        if self.redis_prefix.is_empty() {
            err(
                &["access", "quotas", "redis_prefix"],
                "must not be empty".into(),
            );
        }
    }
}

fn check_tier(path: &[&str], t: &QuotaTier, err: &mut impl FnMut(&[&str], String)) {
    if t.requests.is_some() && t.requests_per_minute.is_some() {
        err(path, "set requests or requests_per_minute, not both".into());
    }
    if t.bytes.is_some() && t.bytes_per_hour.is_some() {
        err(path, "set bytes or bytes_per_hour, not both".into());
    }
    let zero = t.requests_per_minute == Some(0)
        || t.bytes_per_hour == Some(ByteSize(0))
        || t.concurrent == Some(0);
    if zero {
        err(
            path,
            "a limit of 0 refuses everything; use anonymous: false or deny patterns instead".into(),
        );
    }
}
