//! Source addresses of one upstream (`upstreams.<name>.source_addresses`): one HTTP client per
//! local address, each binding its connections to that address, so an upstream that limits
//! pulls per client IP sees several clients. Which address a request uses, and when one
//! rests, is decided with the accounts in [`crate::accounts`] (the unit of rest is the
//! (address, account) pair). Rate-limit headers are read here: Docker Hub sends
//! `ratelimit-remaining: 3;w=21600` (pulls left in a window of that many seconds).

use std::net::IpAddr;
use std::time::Duration;

/// A pair whose `ratelimit-remaining` is at or below this many pulls counts as resting (logged,
/// and in `ferry_upstream_source_resting`): the [ledger](crate::ratelimit::Ledger) sends
/// requests to other pairs while any has requests to spare, gives its last pulls only to
/// interactive requests that find no other pair, and never spends past zero (no 429 drawn).
pub const LOW_REMAINING: u64 = 1;

/// One source address and its connection pool.
pub struct Source {
    /// The local address connections are bound to (`None`: the system's choice).
    pub address: Option<IpAddr>,
    /// Its client.
    pub http: reqwest::Client,
}

impl Source {
    /// The address as logs and metrics name it (`default` when the system picks it).
    pub fn label(&self) -> String {
        self.address
            .map_or_else(|| "default".into(), |a| a.to_string())
    }
}

/// Parses the configured addresses (validated by the config already; checked again here
/// because a library caller may not have).
pub fn parse_addresses(addresses: &[String]) -> Result<Vec<IpAddr>, String> {
    addresses
        .iter()
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|_| format!("source address {a:?} is not an IP address"))
        })
        .collect()
}

/// What a `ratelimit-remaining` header says: pulls left, and the window in seconds if given.
pub fn remaining(headers: &http::HeaderMap) -> Option<(u64, Option<Duration>)> {
    let v = headers.get("ratelimit-remaining")?.to_str().ok()?;
    let mut parts = v.split(';');
    let left = parts.next()?.trim().parse().ok()?;
    let window = parts
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse().ok())
        .map(Duration::from_secs);
    Some((left, window))
}

/// Whether a response says the pair's budget is low, and the window it names.
pub fn rest_for_low_budget(headers: &http::HeaderMap) -> Option<Option<Duration>> {
    let (left, window) = remaining(headers)?;
    (left <= LOW_REMAINING).then_some(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("ratelimit-remaining", v.parse().unwrap());
        h
    }

    #[test]
    fn docker_hub_headers() {
        assert_eq!(
            remaining(&headers("3;w=21600")),
            Some((3, Some(Duration::from_secs(21600))))
        );
        assert_eq!(remaining(&headers("76")), Some((76, None)));
        assert_eq!(remaining(&headers("many")), None);
        assert_eq!(rest_for_low_budget(&headers("3;w=21600")), None);
        assert_eq!(
            rest_for_low_budget(&headers("1;w=60")),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(rest_for_low_budget(&headers("0")), Some(None));
        assert_eq!(rest_for_low_budget(&http::HeaderMap::new()), None);
        assert!(parse_addresses(&["127.0.0.2".into(), "nope".into()]).is_err());
    }
}
