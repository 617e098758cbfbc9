//! Plain running totals for the console's time series ([`crate::series`]): counted in the same
//! places as the Prometheus families, drained by the sampler every few seconds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::series::Sample;

/// Counters since the last [`Totals::drain`].
#[derive(Debug, Default)]
pub struct Totals {
    requests: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    served_bytes: AtomicU64,
    upstream_bytes: AtomicU64,
    cold_count: AtomicU64,
    cold_ms_sum: AtomicU64,
    cold_ms_max: AtomicU64,
    rejected: AtomicU64,
    /// Refusals since start, by reason (not drained).
    by_reason: Mutex<BTreeMap<&'static str, u64>>,
}

impl Totals {
    /// One answered request and its body bytes.
    pub fn request(&self, bytes: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.served_bytes.fetch_add(bytes, Relaxed);
    }

    /// A cache hit or miss.
    pub fn cache(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Relaxed);
    }

    /// Bytes received from an upstream.
    pub fn upstream_bytes(&self, n: u64) {
        self.upstream_bytes.fetch_add(n, Relaxed);
    }

    /// A finished cold download (a blob fetched from its upstream into the cache).
    pub fn cold_download(&self, took: Duration) {
        let ms = took.as_millis().min(u128::from(u64::MAX)) as u64;
        self.cold_count.fetch_add(1, Relaxed);
        self.cold_ms_sum.fetch_add(ms, Relaxed);
        self.cold_ms_max.fetch_max(ms, Relaxed);
    }

    /// A request refused by access control or fair use (not a login challenge), by reason
    /// (`ferry_access::reason`).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.fetch_add(1, Relaxed);
        *self
            .by_reason
            .lock()
            .expect("rejections lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals since start, by reason.
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        let map = self.by_reason.lock().expect("rejections lock");
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// What was counted since the last call, and starts afresh (one sampler calls this).
    pub fn drain(&self) -> Sample {
        let take = |a: &AtomicU64| a.swap(0, Relaxed);
        Sample {
            requests: take(&self.requests),
            hits: take(&self.hits),
            misses: take(&self.misses),
            served_bytes: take(&self.served_bytes),
            upstream_bytes: take(&self.upstream_bytes),
            cold_count: take(&self.cold_count),
            cold_ms_sum: take(&self.cold_ms_sum),
            cold_ms_max: take(&self.cold_ms_max),
            rejected: take(&self.rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_returns_the_counts_and_starts_afresh() {
        let t = Totals::default();
        t.request(100);
        t.request(50);
        t.cache(true);
        t.cache(false);
        t.cache(true);
        t.upstream_bytes(7);
        t.cold_download(Duration::from_millis(30));
        t.cold_download(Duration::from_millis(10));
        t.rejected("quota");
        t.rejected("quota");
        t.rejected("banned");
        let s = t.drain();
        assert_eq!((s.requests, s.served_bytes), (2, 150));
        assert_eq!((s.hits, s.misses, s.upstream_bytes), (2, 1, 7));
        assert_eq!((s.cold_count, s.cold_ms_sum, s.cold_ms_max), (2, 40, 30));
        assert_eq!(s.rejected, 3);
        assert_eq!(t.drain(), Sample::default());
        assert_eq!(t.rejections(), [("banned", 1), ("quota", 2)]);
    }
}
