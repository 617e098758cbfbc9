//! Parsing and validation of the `access:` section.

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
    let e = serde_saphyr::from_str::<AccessConfig>("quotas: {anonymous: {rpm: 3}}").unwrap_err();
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
