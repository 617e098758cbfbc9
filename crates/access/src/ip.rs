//! The client's address: the TCP peer, or what a trusted proxy says in `X-Forwarded-For` /
//! `X-Real-IP`. Headers from any other peer are ignored, so a client cannot forge its address.
//!
//! `X-Forwarded-For` is read from the right (the hop nearest to us) past every trusted proxy;
//! the first untrusted hop is the client. IPv4-mapped IPv6 addresses count as IPv4.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

const XFF: &str = "x-forwarded-for";
const REAL_IP: &str = "x-real-ip";

/// The trusted proxy networks.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    nets: Vec<IpNet>,
}

impl Proxies {
    /// Trust these networks.
    pub(crate) fn new(nets: Vec<IpNet>) -> Proxies {
        Proxies { nets }
    }

    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer`.
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if self.nets.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut last = peer;
        let mut any = false;
        for value in headers.get_all(XFF).iter().rev() {
            let Ok(value) = value.to_str() else {
                return last;
            };
            for hop in value.rsplit(',') {
                let Some(ip) = parse_hop(hop) else {
                    return last;
                };
                any = true;
                if !self.trusts(ip) {
                    return ip;
                }
                last = ip;
            }
        }
        if any {
            return last;
        }
        headers
            .get(REAL_IP)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_hop)
            .unwrap_or(peer)
    }
}

/// One hop: `203.0.113.7`, `203.0.113.7:1234`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The counter key of an anonymous client: its IPv4 address, or its IPv6 network.
pub(crate) fn ip_subject(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip {v4}"),
        IpAddr::V6(v6) if ipv6_prefix >= 128 => format!("ip {v6}"),
        IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, ipv6_prefix).map(|n| n.trunc());
            match net {
                Ok(n) => format!("ip {n}"),
                Err(_) => format!("ip {v6}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> Proxies {
        Proxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 4000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_cannot_forge() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(p.client_ip(peer("198.51.100.9"), &h), ip("198.51.100.9"));
        assert_eq!(proxies(&[]).client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_proxy_gives_the_rightmost_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("1.2.3.4"));
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:55, 10.1.1.1"),
        ]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &split), ip("1.2.3.4"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.2")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn real_ip_and_v6_forms() {
        let p = proxies(&["10.0.0.0/8", "::1/128"]);
        let h = headers(&[("x-real-ip", "[2001:db8::7]:443")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("2001:db8::7"));
        let mapped = headers(&[("x-forwarded-for", "::ffff:1.2.3.4")]);
        assert_eq!(p.client_ip(peer("::ffff:10.0.0.1"), &mapped), ip("1.2.3.4"));
        assert_eq!(p.client_ip(peer("::1"), &HeaderMap::new()), ip("::1"));
    }

    #[test]
    fn subjects_group_ipv6_networks() {
        assert_eq!(ip_subject(ip("1.2.3.4"), 64), "ip 1.2.3.4");
        assert_eq!(
            ip_subject(ip("2001:db8:1:2:3::9"), 64),
            "ip 2001:db8:1:2::/64"
        );
        assert_eq!(ip_subject(ip("2001:db8::9"), 128), "ip 2001:db8::9");
    }
}
