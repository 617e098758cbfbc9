//! What ferry knows of each upstream's health, from its own requests: the last answer, the
//! last failure (no answer, or a 5xx) and how many failures in a row.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// One upstream's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamHealth {
    /// When it last answered (any status below 500), Unix seconds.
    pub last_success: Option<u64>,
    /// When it last failed, Unix seconds.
    pub last_failure: Option<u64>,
    /// What that failure was (`no response`, `HTTP 503`).
    pub last_error: Option<String>,
    /// Failures since the last answer.
    pub failures_in_a_row: u64,
}

impl UpstreamHealth {
    /// `ok`, `failing` (the last request failed) or `unknown` (no request yet).
    pub fn state(&self) -> &'static str {
        match (self.last_success, self.failures_in_a_row) {
            (_, n) if n > 0 => "failing",
            (Some(_), _) => "ok",
            (None, _) => "unknown",
        }
    }
}

/// Every upstream's record.
#[derive(Debug, Default)]
pub struct HealthBook {
    map: Mutex<BTreeMap<String, UpstreamHealth>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HealthBook {
    /// Notes an upstream response (status 0: none).
    pub fn note(&self, upstream: &str, status: u16) {
        let mut map = self.map.lock().expect("health lock");
        let h = map.entry(upstream.to_owned()).or_default();
        if status == 0 || status >= 500 {
            h.last_failure = Some(unix_now());
            h.last_error = Some(if status == 0 {
                "no response".to_owned()
            } else {
                format!("HTTP {status}")
            });
            h.failures_in_a_row += 1;
        } else {
            h.last_success = Some(unix_now());
            h.failures_in_a_row = 0;
        }
    }

    /// The record of `upstream` (empty when ferry has not asked it yet).
    pub fn get(&self, upstream: &str) -> UpstreamHealth {
        let map = self.map.lock().expect("health lock");
        map.get(upstream).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_an_answer() {
        let b = HealthBook::default();
        assert_eq!(b.get("docker.io").state(), "unknown");
        b.note("docker.io", 200);
        assert_eq!(b.get("docker.io").state(), "ok");
        b.note("docker.io", 0);
        b.note("docker.io", 503);
        let h = b.get("docker.io");
        assert_eq!((h.state(), h.failures_in_a_row), ("failing", 2));
        assert_eq!(h.last_error.as_deref(), Some("HTTP 503"));
        b.note("docker.io", 404);
        assert_eq!(b.get("docker.io").state(), "ok");
        assert_eq!(b.get("docker.io").last_error.as_deref(), Some("HTTP 503"));
    }
}
