//! `access.clients`, `access.block_ips` and the repository `allow`/`deny` rules: networks and
//! repository patterns, each with an optional reason shown to the refused client.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A network (`10.0.0.0/8`, `2001:db8::/32`) or one address (`203.0.113.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Parses a CIDR or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| {
                format!("{s:?} is not an address or network (e.g. 10.0.0.0/8, 203.0.113.7)")
            })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Client networks: when `allow` is not empty only those networks may pull; `deny` wins.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Networks allowed (empty = all).
    pub allow: Vec<Cidr>,
    /// Networks refused.
    pub deny: Vec<Cidr>,
}

/// A blocked network and the reason shown to its clients; a bare `cidr` string has no reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockRule {
    /// Just the network.
    Plain(Cidr),
    /// The network with a reason.
    WithReason(BlockWithReason),
}

/// `{cidr, reason}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockWithReason {
    /// The network.
    pub cidr: Cidr,
    /// Shown to the client (e.g. `abuse, contact ops@example.com`).
    #[serde(default)]
    pub reason: String,
}

impl BlockRule {
    /// The network.
    pub fn cidr(&self) -> Cidr {
        match self {
            BlockRule::Plain(c) => *c,
            BlockRule::WithReason(b) => b.cidr,
        }
    }

    /// The reason (may be empty).
    pub fn reason(&self) -> &str {
        match self {
            BlockRule::Plain(_) => "",
            BlockRule::WithReason(b) => &b.reason,
        }
    }
}

/// A repository pattern, as a string or `{pattern, reason}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RepoRule {
    /// Just the pattern.
    Plain(String),
    /// The pattern with a reason shown when it denies.
    WithReason(PatternWithReason),
}

/// `{pattern, reason}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternWithReason {
    /// `<upstream>/<repository glob>`.
    pub pattern: String,
    /// Shown to the client.
    #[serde(default)]
    pub reason: String,
}

impl RepoRule {
    /// The pattern.
    pub fn pattern(&self) -> &str {
        match self {
            RepoRule::Plain(p) => p,
            RepoRule::WithReason(r) => &r.pattern,
        }
    }

    /// The reason (may be empty).
    pub fn reason(&self) -> &str {
        match self {
            RepoRule::Plain(_) => "",
            RepoRule::WithReason(r) => &r.reason,
        }
    }
}

/// Checks the shape of a repository pattern: `<upstream>/<repository glob>`, matched against
/// `<upstream>/<repository>` with docker.io's `library/` spelled out. `*` matches within one
/// path component, `**` any number of components, `?`, `[abc]` and `{a,b}` as usual (the
/// glob itself is compiled by ferry-access).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let p = pattern.trim();
    if !p.contains('/') {
        return Err(format!(
            "pattern {p:?} names no repository; write <upstream>/<repository>, e.g. {p}/** for all of it"
        ));
    }
    if p.starts_with('/') || p.ends_with('/') || p.contains("//") {
        return Err(format!("pattern {p:?} has an empty path component"));
    }
    let (mut bracket, mut brace) = (false, false);
    for c in p.chars() {
        match c {
            '[' if !bracket => bracket = true,
            ']' if bracket => bracket = false,
            '{' if !bracket && brace => return Err(format!("pattern {p:?} nests {{...}}")),
            '{' if !bracket => brace = true,
            '}' if !bracket && brace => brace = false,
            _ => {}
        }
    }
    if bracket || brace {
        return Err(format!("pattern {p:?} has an unclosed [ or {{"));
    }
    Ok(())
}
