//! Usage accounting: every request counted by client, user, upstream, repository and blob
//! (requests, bytes, error answers) in hourly buckets kept for `access.usage.keep` (7 days).
//!
//! Each bucket holds, per dimension, two Space-Saving heavy-hitter counters ([`topk::TopK`]):
//! one ordered by requests, one by bytes, each of at most `access.usage.top_keys` keys. Memory
//! is bounded by `dimensions x 2 x top_keys x buckets`, not by the number of clients or blobs.
//! A query sums the buckets of its window (`24h` sums 24 buckets). With `redis:` the accounts
//! are also kept in Redis ([`shared`]), so `ferry usage` sees every replica's traffic.
//!
//! The request path only sends a [`UsageRecord`] into a bounded channel ([`UsageSink`]); one
//! task owns the counters ([`run`]), so requests never wait on a lock. When the channel is full
//! records are dropped and counted (`dropped`).

pub(crate) mod shared;
pub mod topk;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_config::fairuse::UsageConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::hashed::KeyHasher;
use topk::{Counts, Order, TopK};

/// What one request adds to the accounts (sent from the request log).
#[derive(Debug, Clone, Default)]
pub struct UsageRecord {
    /// The client address.
    pub ip: Option<std::net::IpAddr>,
    /// The logged-in user.
    pub user: Option<String>,
    /// The upstream, when routed.
    pub upstream: String,
    /// The repository with its upstream (`docker.io/library/nginx`), when routed.
    pub repository: String,
    /// The blob digest, for blob requests.
    pub blob: Option<String>,
    /// Bytes served (or redirected).
    pub bytes: u64,
    /// Whether the answer was an error (4xx other than 401, 5xx).
    pub error: bool,
    /// [`agent_hash`] of the request's `User-Agent` (rules with `agents:` count by it).
    pub agent: u64,
}

/// A stable hash (FNV-1a, the same on every replica and version) of a request's
/// `User-Agent` header, at most its first 512 bytes; 0 without one. Rules with `agents: N`
/// count an anonymous address once per `agent_hash % N`.
pub fn agent_hash(headers: &http::HeaderMap) -> u64 {
    let Some(ua) = headers.get(http::header::USER_AGENT) else {
        return 0;
    };
    let bytes = ua.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &bytes[..bytes.len().min(512)] {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Client address.
    Client,
    /// Logged-in user.
    User,
    /// Upstream registry.
    Upstream,
    /// Repository.
    Repository,
    /// Blob digest.
    Blob,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 5] = [
        Dimension::Client,
        Dimension::User,
        Dimension::Upstream,
        Dimension::Repository,
        Dimension::Blob,
    ];

    /// Parses `client`, `user`, `upstream`, `repository` or `blob`.
    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s.trim().to_ascii_lowercase())
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Client => "client",
            Dimension::User => "user",
            Dimension::Upstream => "upstream",
            Dimension::Repository => "repository",
            Dimension::Blob => "blob",
        }
    }

    fn key<'a>(self, client: &'a str, r: &'a UsageRecord) -> Option<&'a str> {
        let s = match self {
            Dimension::Client => client,
            Dimension::User => r.user.as_deref()?,
            Dimension::Upstream => r.upstream.as_str(),
            Dimension::Repository => r.repository.as_str(),
            Dimension::Blob => r.blob.as_deref()?,
        };
        (!s.is_empty()).then_some(s)
    }
}

/// The key of every dimension `r` has (client is `client`).
pub(crate) fn keys<'a>(
    client: &'a str,
    r: &'a UsageRecord,
) -> impl Iterator<Item = (Dimension, &'a str)> {
    Dimension::ALL
        .into_iter()
        .filter_map(move |d| d.key(client, r).map(|k| (d, k)))
}

/// What one record adds.
pub(crate) fn delta(r: &UsageRecord) -> Counts {
    Counts {
        requests: 1,
        bytes: r.bytes,
        errors: u64::from(r.error),
    }
}

/// One hour of accounts.
#[derive(Debug)]
struct Bucket {
    hour: u64,
    total: Counts,
    /// Per dimension: by requests, by bytes.
    top: Vec<[TopK; 2]>,
}

impl Bucket {
    fn new(hour: u64, cap: usize, keys: &KeyHasher) -> Bucket {
        let top = Dimension::ALL
            .iter()
            .map(|_| {
                [
                    TopK::keyed(cap, Order::Requests, keys.clone()),
                    TopK::keyed(cap, Order::Bytes, keys.clone()),
                ]
            })
            .collect();
        Bucket {
            hour,
            total: Counts::default(),
            top,
        }
    }
}

/// The accounts: a ring of hourly buckets.
#[derive(Debug)]
pub struct Usage {
    cap: usize,
    /// The hash of keys every counter shares: one hash per key and record.
    keys: KeyHasher,
    ring: Vec<Option<Bucket>>,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The client, user, upstream, repository or digest.
    pub key: String,
    /// Requests, bytes and error answers in the window.
    #[serde(flatten)]
    pub counts: Counts,
    /// How much the counts may be too high (Space-Saving's bound; 0 = exact).
    pub overestimate: u64,
}

/// The answer to a usage query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The dimension.
    pub by: Dimension,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Everything in the window (exact).
    pub total: Counts,
    /// The heaviest keys, heaviest first.
    pub top: Vec<UsageRow>,
}

/// Parses a window (`24h`, `7d`, `90m`); at most 366 days.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("window {s:?}: {e}"))?;
    if d.is_zero() || d > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("window {s:?}: between 1s and 366d"));
    }
    Ok(d)
}

/// The hour number of `t`.
pub fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 3600
}

impl Usage {
    /// Empty accounts.
    pub fn new(cfg: &UsageConfig) -> Usage {
        let hours = (cfg.keep.0.as_secs().div_ceil(3600)).clamp(1, 24 * 366) as usize;
        Usage {
            cap: cfg.top_keys.max(1),
            keys: KeyHasher::default(),
            ring: (0..hours).map(|_| None).collect(),
        }
    }

    /// Counts a request of `client` (`ip ...`) at hour `hour`.
    pub fn record(&mut self, hour: u64, client: &str, r: &UsageRecord) {
        let n = self.ring.len();
        let slot = &mut self.ring[(hour % n as u64) as usize];
        if slot.as_ref().is_none_or(|b| b.hour != hour) {
            *slot = Some(Bucket::new(hour, self.cap, &self.keys));
        }
        let b = slot.as_mut().expect("just set");
        let delta = delta(r);
        b.total.add(&delta);
        for (d, tops) in Dimension::ALL.iter().zip(b.top.iter_mut()) {
            if let Some(k) = d.key(client, r) {
                let h = self.keys.of(k);
                tops[0].add_hashed(h, k, &delta);
                tops[1].add_hashed(h, k, &delta);
            }
        }
    }

    /// The `top` heaviest keys of `by` in the `window` up to hour `now`, by `order`.
    pub fn query(
        &self,
        now: u64,
        by: Dimension,
        window: Duration,
        top: usize,
        order: Order,
    ) -> UsageReport {
        let hours = window.as_secs().div_ceil(3600).max(1);
        let di = Dimension::ALL
            .iter()
            .position(|d| *d == by)
            .expect("a dimension");
        let oi = usize::from(order == Order::Bytes);
        let mut total = Counts::default();
        let mut sum: std::collections::HashMap<&str, (Counts, u64)> = Default::default();
        let live = self
            .ring
            .iter()
            .flatten()
            .filter(|b| b.hour <= now && now - b.hour < hours);
        for b in live {
            total.add(&b.total);
            for (k, c, err) in b.top[di][oi].iter() {
                let e = sum.entry(k).or_default();
                e.0.add(c);
                e.1 += err;
            }
        }
        let mut rows: Vec<UsageRow> = sum
            .into_iter()
            .map(|(k, (counts, overestimate))| UsageRow {
                key: k.to_owned(),
                counts,
                overestimate,
            })
            .collect();
        rows.sort_by(|a, b| {
            order
                .weight(&b.counts)
                .cmp(&order.weight(&a.counts))
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.truncate(top);
        UsageReport {
            by,
            window_secs: hours * 3600,
            total,
            top: rows,
        }
    }
}

/// The request path's end of the accounts: cheap, never blocks.
#[derive(Debug, Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRecord>,
    dropped: Arc<AtomicU64>,
}

/// Records the channel holds before new ones are dropped.
pub const QUEUE: usize = 65_536;

impl UsageSink {
    /// A sink and its receiving end.
    pub fn channel() -> (UsageSink, mpsc::Receiver<UsageRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            UsageSink {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// Sends a record; drops it (and counts that) when the accounting task is behind.
    pub fn send(&self, r: UsageRecord) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, bytes: u64, error: bool) -> UsageRecord {
        UsageRecord {
            ip: ip.parse().ok(),
            upstream: "docker.io".into(),
            repository: "docker.io/library/nginx".into(),
            bytes,
            error,
            ..Default::default()
        }
    }

    #[test]
    fn a_window_sums_its_hourly_buckets_and_nothing_older() {
        let mut u = Usage::new(&UsageConfig::default());
        let now = 500_000;
        u.record(now - 30, "ip a", &rec("192.0.2.1", 1000, false));
        u.record(now - 2, "ip a", &rec("192.0.2.1", 10, true));
        u.record(now, "ip a", &rec("192.0.2.1", 5, false));
        u.record(now, "ip b", &rec("192.0.2.2", 7, false));
        let day = Duration::from_secs(24 * 3600);
        let r = u.query(now, Dimension::Client, day, 10, Order::Bytes);
        assert_eq!(
            r.total,
            Counts {
                requests: 3,
                bytes: 22,
                errors: 1
            }
        );
        assert_eq!((r.top[0].key.as_str(), r.top[0].counts.bytes), ("ip a", 15));
        let week = u.query(now, Dimension::Client, day * 7, 1, Order::Requests);
        assert_eq!((week.top.len(), week.top[0].counts.requests), (1, 3));
        let hour = u.query(
            now,
            Dimension::Upstream,
            Duration::from_secs(3600),
            5,
            Order::Bytes,
        );
        assert_eq!(hour.top[0].counts.requests, 2);
    }

    #[test]
    fn a_bucket_slot_is_reused_after_keep() {
        let mut u = Usage::new(&UsageConfig {
            top_keys: 10,
            keep: ferry_config::Dur::secs(2 * 3600),
        });
        u.record(10, "ip a", &rec("192.0.2.1", 1, false));
        u.record(12, "ip b", &rec("192.0.2.2", 1, false));
        let r = u.query(
            12,
            Dimension::Client,
            Duration::from_secs(10 * 3600),
            10,
            Order::Bytes,
        );
        assert_eq!(r.top.len(), 1, "hour 10 was overwritten by hour 12");
        assert_eq!(Dimension::parse("Blob"), Some(Dimension::Blob));
        assert!(parse_window("24h").is_ok() && parse_window("0s").is_err());
    }
}
