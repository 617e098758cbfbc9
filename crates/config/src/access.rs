//! The `access:` section: who may pull (logins, anonymous pulls, client addresses), what may be
//! pulled (repository allow/deny patterns), and how much (request, byte, concurrency and
//! bandwidth quotas per client IP or user).
//!
//! The types here only describe and validate the settings; `ferry-access` enforces them.
//! `docs/access.md` documents every key with examples. Rates are written `<amount>/<window>`:
//! `20/1m`, `1GiB/2h`, `10MiB/s`, or `unlimited`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fairuse::{AdminConfig, BudgetsConfig, RuleConfig, UsageConfig};
use crate::units::{ByteSize, Dur, Secret};

/// Access control and fair-use settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Whether pulls without a login are allowed.
    pub anonymous: bool,
    /// An htpasswd file of bcrypt users (`htpasswd -B`), re-read on every reload.
    pub htpasswd: Option<PathBuf>,
    /// Users defined in the config itself.
    pub users: BTreeMap<String, UserConfig>,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// IPv6 clients are counted per network of this prefix length (one home or VM usually
    /// holds a whole /64).
    pub ipv6_prefix: u8,
    /// ferry's own token service.
    pub token: TokenConfig,
    /// Request, byte, concurrency and bandwidth limits.
    pub quotas: QuotasConfig,
    /// Repository patterns served (`docker.io/library/*`, `ghcr.io/**`); empty = everything
    /// on the configured upstreams.
    pub allow: Vec<RepoRule>,
    /// A file of further allow patterns, one per line (`#` starts a comment).
    pub allow_file: Option<PathBuf>,
    /// Repository patterns refused; deny wins over allow.
    pub deny: Vec<RepoRule>,
    /// Text appended to every "not served" message (e.g. where to ask for an image).
    pub denied_message: Option<String>,
    /// Client networks allowed and denied.
    pub clients: ClientsConfig,
    /// Client networks refused, each with the reason shown to the client.
    pub block_ips: Vec<BlockRule>,
    /// Who may use the admin API (see `fairuse.rs`).
    pub admin: AdminConfig,
    /// Usage accounting (see `fairuse.rs`).
    pub usage: UsageConfig,
    /// Abuse rules with graduated actions (see `fairuse.rs`).
    pub rules: Vec<RuleConfig>,
    /// Egress budgets (see `fairuse.rs`).
    pub budgets: BudgetsConfig,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            anonymous: true,
            htpasswd: None,
            users: BTreeMap::new(),
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            token: TokenConfig::default(),
            quotas: QuotasConfig::default(),
            allow: Vec::new(),
            allow_file: None,
            deny: Vec::new(),
            denied_message: None,
            clients: ClientsConfig::default(),
            block_ips: Vec::new(),
            admin: AdminConfig::default(),
            usage: UsageConfig::default(),
            rules: Vec::new(),
            budgets: BudgetsConfig::default(),
        }
    }
}

/// One user of the config: a bcrypt hash or a plain password (e.g. from an environment
/// variable), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// A bcrypt hash (`$2y$...`, as `htpasswd -nB` prints it).
    pub bcrypt: Option<String>,
    /// A plain password.
    pub password: Option<Secret>,
    /// Whether this user may use the admin API (`ferry usage`, `ferry bans`).
    pub admin: bool,
}

/// ferry's token service (`/token`, `/auth/token`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// HMAC-SHA256 signing key; generated at start when unset. Replicas behind one load
    /// balancer need the same key (set it here or in `FERRY_ACCESS__TOKEN__KEY`).
    pub key: Option<Secret>,
    /// How long an issued token is valid.
    pub ttl: Dur,
    /// The `service` of challenges and tokens.
    pub service: String,
    /// The `iss` claim of tokens.
    pub issuer: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            key: None,
            ttl: Dur::secs(15 * 60),
            service: "ferry".into(),
            issuer: "ferry".into(),
        }
    }
}

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

impl AccessConfig {
    /// Reports every problem through `err(key path, message)`; files (htpasswd, allow_file)
    /// are read only when the server builds its access policy.
    pub fn check(&self, err: &mut impl FnMut(&[&str], String)) {
        let has_users = !self.users.is_empty() || self.htpasswd.is_some();
        if !self.anonymous && !has_users {
            err(&["access", "anonymous"], "anonymous pulls are off but no user can log in: set access.users or access.htpasswd".into());
        }
        for (name, u) in &self.users {
            check_user(name, u, err);
        }
        if !(32..=128).contains(&self.ipv6_prefix) {
            err(
                &["access", "ipv6_prefix"],
                format!("{} must be between 32 and 128", self.ipv6_prefix),
            );
        }
        self.token.check(err);
        self.quotas.check(err);
        crate::fairuse::check(&self.admin, &self.rules, &self.budgets, err);
        for (key, rules) in [("allow", &self.allow), ("deny", &self.deny)] {
            for r in rules.iter() {
                if let Err(m) = check_pattern(r.pattern()) {
                    err(&["access", key], m);
                }
            }
        }
    }
}

fn check_user(name: &str, u: &UserConfig, err: &mut impl FnMut(&[&str], String)) {
    if !is_user_name(name) {
        err(
            &["access", "users", name],
            format!("{name:?} is not a user name (letters, digits, . _ - @, no colon)"),
        );
    }
    match (&u.bcrypt, &u.password) {
        (Some(h), None) if !is_bcrypt(h) => err(
            &["access", "users", name, "bcrypt"],
            "not a bcrypt hash ($2a$, $2b$ or $2y$; make one with htpasswd -nB)".into(),
        ),
        (None, Some(p)) if p.expose().is_empty() => {
            err(&["access", "users", name, "password"], "is empty".into())
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => err(
            &["access", "users", name],
            "set exactly one of bcrypt or password".into(),
        ),
    }
}

/// Whether `s` looks like a bcrypt hash.
pub fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.len() == 60
}

/// Whether `s` can be a user name (no colon, no space, not empty).
pub fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
}

impl TokenConfig {
    fn check(&self, err: &mut impl FnMut(&[&str], String)) {
        if self.ttl.0 < Duration::from_secs(60) || self.ttl.0 > Duration::from_secs(24 * 3600) {
            err(
                &["access", "token", "ttl"],
                "must be between 1m and 24h".into(),
            );
        }
        if self.key.as_ref().is_some_and(|k| k.expose().len() < 32) {
            err(
                &["access", "token", "key"],
                "must be at least 32 characters (e.g. openssl rand -base64 48)".into(),
            );
        }
        if self.service.is_empty() || self.service.contains('"') {
            err(
                &["access", "token", "service"],
                "must be a non-empty name without quotes".into(),
            );
        }
    }
}

impl QuotasConfig {
    fn check(&self, err: &mut impl FnMut(&[&str], String)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
anonymous: true
htpasswd: /etc/ferry/htpasswd
trusted_proxies: [10.0.0.0/8]
quotas:
  anonymous:     {requests_per_minute: 20,  bytes_per_hour: 1GiB,  concurrent: 10, bandwidth: 10MiB/s}
  authenticated: {requests_per_minute: 600, bytes_per_hour: 50GiB, concurrent: 50}
  users: {ci-bot: {bytes_per_hour: 500GiB}}
allow: ["docker.io/library/*", "ghcr.io/**"]
deny:  ["docker.io/someone/*", {pattern: "docker.io/library/huge", reason: "too big"}]
block_ips: [{cidr: 203.0.113.0/24, reason: "abuse, contact ops@example.com"}, 198.51.100.7]
"#;

    fn problems(c: &AccessConfig) -> Vec<String> {
        let mut out = Vec::new();
        c.check(&mut |path: &[&str], m: String| out.push(format!("{}: {m}", path.join("."))));
        out
    }

    #[test]
    fn the_issue_example_parses_and_is_valid() {
        let c: AccessConfig = serde_saphyr::from_str(ISSUE_EXAMPLE).unwrap();
        assert!(c.anonymous);
        let anon = &c.quotas.anonymous;
        assert_eq!(
            anon.request_rate(),
            Some(Rate::per(20, Duration::from_secs(60)))
        );
        assert_eq!(
            anon.byte_rate(),
            Some(Rate::per(1 << 30, Duration::from_secs(3600)))
        );
        assert_eq!(
            anon.bandwidth,
            Some(Rate::per(10 << 20, Duration::from_secs(1)))
        );
        let bot = c.quotas.authenticated.overlay(&c.quotas.users["ci-bot"]);
        assert_eq!(
            bot.byte_rate(),
            Some(Rate::per(500 << 30, Duration::from_secs(3600)))
        );
        assert_eq!(bot.concurrent, Some(50));
        assert_eq!(c.block_ips[0].reason(), "abuse, contact ops@example.com");
        assert_eq!(c.block_ips[1].cidr().to_string(), "198.51.100.7/32");
        assert_eq!(c.deny[1].reason(), "too big");
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn serde_json_round_trip() {
        let c: AccessConfig = serde_saphyr::from_str(ISSUE_EXAMPLE).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        let back: AccessConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("20/1m").unwrap(),
            Rate::per(20, Duration::from_secs(60))
        );
        assert_eq!(
            Rate::parse("20/min").unwrap(),
            Rate::per(20, Duration::from_secs(60))
        );
        assert_eq!(
            Rate::parse("1GiB/2h").unwrap(),
            Rate::per(1 << 30, Duration::from_secs(7200))
        );
        assert_eq!(
            Rate::parse("1MiB/s").unwrap(),
            Rate::per(1 << 20, Duration::from_secs(1))
        );
        assert_eq!(Rate::parse("unlimited").unwrap(), Rate::Unlimited);
        for bad in ["20", "0/1m", "20/0s", "x/1m", "20/fortnights"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        let r = Rate::parse("1GiB/2h").unwrap();
        assert_eq!(Rate::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn cidrs_accept_bare_addresses() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn invalid_settings_are_named() {
        let yaml = r#"
anonymous: false
users: {"bad:name": {password: x}, bob: {}, eve: {bcrypt: "plain"}, joe: {password: ""}}
ipv6_prefix: 12
token: {ttl: 5s, key: short}
quotas: {anonymous: {requests: 5/1m, requests_per_minute: 5, concurrent: 0}}
allow: ["docker.io", "ghcr.io/[a"]
"#;
        let c: AccessConfig = serde_saphyr::from_str(yaml).unwrap();
        let p = problems(&c).join("\n");
        for needle in [
            "access.users.bad:name: \"bad:name\" is not a user name",
            "access.users.bob: set exactly one",
            "access.users.eve.bcrypt: not a bcrypt hash",
            "access.users.joe.password: is empty",
            "access.ipv6_prefix",
            "access.token.ttl",
            "access.token.key",
            "requests or requests_per_minute",
            "a limit of 0",
            "names no repository",
            "unclosed",
        ] {
            assert!(p.contains(needle), "{needle} not in\n{p}");
        }
        let none: AccessConfig = serde_saphyr::from_str("anonymous: false").unwrap();
        assert!(problems(&none)[0].contains("no user can log in"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e =
            serde_saphyr::from_str::<AccessConfig>("quotas: {anonymous: {rpm: 3}}").unwrap_err();
        assert!(e.to_string().contains("rpm"), "{e}");
    }

    #[test]
    fn overlay_can_lift_a_limit() {
        let base = QuotaTier {
            requests_per_minute: Some(5),
            ..Default::default()
        };
        let over = QuotaTier {
            requests: Some(Rate::Unlimited),
            ..Default::default()
        };
        let t = base.overlay(&over);
        assert_eq!(t.request_rate(), Some(Rate::Unlimited));
        assert!(t.is_unlimited());
        assert!(!base.is_unlimited());
    }
}
