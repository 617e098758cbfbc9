//! Caps on open client connections: in total (`server.max_connections`) and per client address
//! (`server.max_connections_per_ip`), checked when a connection is accepted, before a byte of
//! it is read.
//!
//! IPv6 clients are counted per /64, the block one subscriber usually gets, so one host cannot
//! slip past the cap by rotating through its own addresses. Peers in `access.trusted_proxies`
//! (load balancers, which carry many clients) are exempt from the per-address cap; the total
//! cap still counts them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `server.max_connections` connections are open.
    Total(usize),
    /// `server.max_connections_per_ip` connections from this address are open.
    PerAddress(usize),
}

impl Refusal {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Total(_) => "max_connections",
            Refusal::PerAddress(_) => "max_connections_per_ip",
        }
    }

    /// The plain HTTP/1.1 answer written to a refused plain-TCP connection before it is
    /// closed: an OCI error naming the cap, with `Retry-After`.
    pub fn http_answer(self) -> Vec<u8> {
        let (status, code, message) = match self {
            Refusal::Total(n) => (
                "503 Service Unavailable",
                "UNAVAILABLE",
                format!("the mirror is at its connection limit ({n}); retry shortly"),
            ),
            Refusal::PerAddress(n) => (
                "429 Too Many Requests",
                "TOOMANYREQUESTS",
                format!("too many open connections from your address (limit {n}); close idle ones"),
            ),
        };
        let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             retry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// The connection caps and the counts they watch.
#[derive(Clone)]
pub struct ConnLimits {
    inner: Arc<Inner>,
}

struct Inner {
    max_total: usize,
    max_per_address: usize,
    exempt: Vec<IpNet>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
pub struct ConnPermit {
    limits: Arc<Inner>,
    key: Option<IpAddr>,
}

impl ConnLimits {
    /// Caps of `max_total` connections, `max_per_address` per client address; `exempt` peers
    /// only count towards the total.
    pub fn new(max_total: usize, max_per_address: usize, exempt: Vec<IpNet>) -> Self {
        ConnLimits {
            inner: Arc::new(Inner {
                max_total,
                max_per_address,
                exempt,
                counts: Mutex::default(),
            }),
        }
    }

    /// No caps (in-process tests).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, usize::MAX, Vec::new())
    }

    /// Admits a connection from `peer`, or says which cap refuses it.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnPermit, Refusal> {
        let peer = peer.to_canonical();
        let key = (!self.inner.exempt.iter().any(|n| n.contains(&peer))).then(|| group(peer));
        let mut c = self.inner.counts.lock().expect("connection counts");
        if c.total >= self.inner.max_total {
            return Err(Refusal::Total(self.inner.max_total));
        }
        if let Some(k) = key {
            let n = c.by_address.entry(k).or_default();
            if *n >= self.inner.max_per_address {
                return Err(Refusal::PerAddress(self.inner.max_per_address));
            }
            *n += 1;
        }
        c.total += 1;
        Ok(ConnPermit {
            limits: self.inner.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.counts.lock().expect("connection counts").total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().expect("connection counts");
        c.total -= 1;
        if let Some(k) = self.key
            && let Some(n) = c.by_address.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&k);
            }
        }
    }
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_gives_places_back() {
        let l = ConnLimits::new(10, 2, Vec::new());
        let a = l.admit(ip("192.0.2.1")).unwrap();
        let _b = l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.1")).err(), Some(Refusal::PerAddress(2)));
        let _other = l.admit(ip("192.0.2.2")).unwrap();
        drop(a);
        let _c = l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.open(), 3);
    }

    #[test]
    fn caps_the_total_and_exempts_trusted_proxies_only_per_address() {
        let l = ConnLimits::new(3, 1, vec!["10.0.0.0/8".parse().unwrap()]);
        let _p1 = l.admit(ip("10.1.1.1")).unwrap();
        let _p2 = l.admit(ip("10.1.1.1")).unwrap();
        let _c = l.admit(ip("192.0.2.9")).unwrap();
        assert_eq!(l.admit(ip("10.1.1.1")).err(), Some(Refusal::Total(3)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = ConnLimits::new(10, 1, Vec::new());
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(l.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = l.admit(ip("192.0.2.7")).unwrap();
        assert!(l.admit(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn the_answer_is_an_oci_error_with_retry_after() {
        let text = String::from_utf8(Refusal::PerAddress(5).http_answer()).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
        assert!(text.contains("retry-after: 1\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
