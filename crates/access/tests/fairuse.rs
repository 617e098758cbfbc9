//! Fair use through `Access::check` and the usage sink: rules that warn, deny and ban (with
//! the reason and the end shown), exemptions and per-user counting behind one address, bans
//! lifted, usage accounted by the task, and the admin check.

mod common;

use std::time::Duration;

use common::*;
use ferry_access::usage::Dimension;
use ferry_access::usage::UsageRecord;
use ferry_access::usage::topk::Order;
use http::HeaderMap;

const USERS: &str = r#"
users:
  alice: {password: wonderland-4711, admin: true}
  bob: {password: builder-4711}
admin:
  tokens: ["0123456789abcdef0123"]
"#;

const RULES: &str = r#"
rules:
  - {name: warn3, per: client, window: 1m, requests: 3, action: warn, message: "run a local cache"}
  - {name: deny5, per: client, window: 1m, requests: 5, action: deny, exempt: [10.9.0.0/16]}
  - {name: ban8, per: client, window: 1m, requests: 8, action: ban, duration: 2s}
"#;

#[tokio::test]
async fn rules_warn_then_deny_then_ban_with_reason_and_end() {
    let a = access(RULES).await;
    let none = HeaderMap::new();
    for i in 1..=3 {
        let g = pull(&a, "203.0.113.7", &none).await.unwrap();
        assert!(g.warnings().is_empty(), "request {i}");
    }
    let g = pull(&a, "203.0.113.7", &none).await.unwrap();
    assert!(g.warnings()[0].contains("rule warn3"), "{:?}", g.warnings());
    assert!(g.warnings()[0].contains("run a local cache"));
    pull(&a, "203.0.113.7", &none).await.unwrap();
    let d = pull(&a, "203.0.113.7", &none).await.unwrap_err();
    assert_eq!(
        (d.code.as_str(), d.reason),
        ("TOOMANYREQUESTS", "fairuse_deny")
    );
    assert!(
        d.message.contains("more than 5 requests per 1m"),
        "{}",
        d.message
    );
    assert!(d.retry_after_secs().is_some());
    for _ in 7..=8 {
        pull(&a, "203.0.113.7", &none).await.unwrap_err();
    }
    let d = pull(&a, "203.0.113.7", &none).await.unwrap_err();
    assert_eq!((d.code.as_str(), d.reason), ("DENIED", "fairuse_ban"));
    assert!(
        d.message.contains("banned until") && d.message.contains("rule ban8"),
        "{}",
        d.message
    );
    assert_eq!(a.bans().len(), 1);
    assert_eq!(a.bans()[0].subject, "ip 203.0.113.7");
    // Another client is not affected; the ban ends by itself.
    pull(&a, "198.51.100.1", &none).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(a.bans().is_empty());
}

#[tokio::test]
async fn exempt_networks_and_logged_in_users_behind_one_address() {
    let a = access(&format!("{USERS}{RULES}")).await;
    let none = HeaderMap::new();
    let anon = bearer(&token(&a, "10.9.1.1", &none, "service=ferry").await.unwrap());
    for _ in 0..7 {
        pull(&a, "10.9.1.1", &anon).await.unwrap();
    }
    // Users behind one NAT address are counted per user: alice's use is not bob's.
    for _ in 0..5 {
        pull(&a, "192.0.2.9", &basic("alice", "wonderland-4711"))
            .await
            .unwrap();
    }
    let d = pull(&a, "192.0.2.9", &basic("alice", "wonderland-4711"))
        .await
        .unwrap_err();
    assert!(d.message.contains("user alice"), "{}", d.message);
    pull(&a, "192.0.2.9", &basic("bob", "builder-4711"))
        .await
        .unwrap();
    pull(&a, "192.0.2.9", &anon).await.unwrap();
}

#[tokio::test]
async fn bans_are_lifted_by_address() {
    let a = access(RULES).await;
    for _ in 0..9 {
        let _ = pull(&a, "203.0.113.8", &HeaderMap::new()).await;
    }
    assert_eq!(a.bans().len(), 1);
    assert_eq!(
        a.lift("203.0.113.8").await.as_deref(),
        Some("ip 203.0.113.8")
    );
    assert!(a.bans().is_empty());
    assert_eq!(a.lift("203.0.113.8").await, None);
}

#[tokio::test]
async fn usage_is_accounted_by_the_task() {
    let a = access(RULES).await;
    let sink = a.usage_sink();
    for (who, bytes) in [
        ("203.0.113.1", 100),
        ("203.0.113.2", 5000),
        ("203.0.113.1", 50),
    ] {
        sink.send(UsageRecord {
            ip: Some(ip(who)),
            upstream: "docker.io".into(),
            repository: "docker.io/library/nginx".into(),
            blob: Some("sha256:aa".into()),
            bytes,
            ..Default::default()
        });
    }
    let mut report = None;
    for _ in 0..50 {
        let r = a
            .usage(
                Dimension::Client,
                Duration::from_secs(3600),
                10,
                Order::Bytes,
            )
            .await;
        if r.total.requests == 3 {
            report = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = report.expect("the task accounts the records");
    assert_eq!(r.top[0].key, "ip 203.0.113.2");
    assert_eq!(
        (r.top[1].key.as_str(), r.top[1].counts.bytes),
        ("ip 203.0.113.1", 150)
    );
    let r = a
        .usage(
            Dimension::Blob,
            Duration::from_secs(3600),
            10,
            Order::Requests,
        )
        .await;
    assert_eq!(r.top[0].counts.requests, 3);
}

#[tokio::test]
async fn the_admin_check_wants_a_token_or_an_admin_user() {
    let a = access(USERS).await;
    let from = ip("127.0.0.1");
    assert!(a.admin(from, &bearer("0123456789abcdef0123")).await.is_ok());
    assert!(
        a.admin(from, &basic("alice", "wonderland-4711"))
            .await
            .is_ok()
    );
    let d = a.admin(from, &HeaderMap::new()).await.unwrap_err();
    assert_eq!(d.code.as_str(), "UNAUTHORIZED");
    assert!(d.challenge.is_some());
    let d = a
        .admin(from, &bearer("wrong-token-wrong-token"))
        .await
        .unwrap_err();
    assert_eq!(d.code.as_str(), "UNAUTHORIZED");
    let d = a
        .admin(from, &basic("bob", "builder-4711"))
        .await
        .unwrap_err();
    assert_eq!(d.code.as_str(), "DENIED");
}

/// Headers with a `User-Agent`.
fn agent(ua: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::USER_AGENT, ua.parse().unwrap());
    h
}

/// Two user agents in different groups of `agents: 4`, and a third in the first one's group.
fn agents_in_groups() -> (String, String, String) {
    let group = |ua: &str| ferry_access::usage::agent_hash(&agent(ua)) % 4;
    let uas: Vec<String> = (0..64)
        .map(|i| format!("docker/27.{i} go/go1.22"))
        .collect();
    let a = uas[0].clone();
    let b = uas.iter().find(|u| group(u) != group(&a)).unwrap().clone();
    let same = uas[1..]
        .iter()
        .find(|u| group(u) == group(&a))
        .unwrap()
        .clone();
    (a, b, same)
}

const AGENT_RULES: &str = r#"
rules:
  - {name: office, per: client, window: 1m, requests: 3, action: ban, duration: 1m, agents: 4}
"#;

/// `agents: 4`: an address is counted once per user-agent group, so the machines of an
/// office behind one NAT address have their own counters while one user agent (or another
/// in its group) is banned at the threshold, the ban is of the address, and lifting it resets
/// every group.
#[tokio::test]
async fn agents_count_one_address_per_user_agent_group() {
    assert_eq!(ferry_access::usage::agent_hash(&HeaderMap::new()), 0);
    let (a_ua, b_ua, same_ua) = agents_in_groups();
    let a = access(AGENT_RULES).await;
    let office = "192.0.2.9";
    for _ in 0..3 {
        pull(&a, office, &agent(&a_ua)).await.unwrap();
    }
    // Another group behind the same address has its own counter ...
    for _ in 0..3 {
        pull(&a, office, &agent(&b_ua)).await.unwrap();
    }
    // ... one in the first group shares the first counter, which is now over.
    let d = pull(&a, office, &agent(&same_ua)).await.unwrap_err();
    assert_eq!(d.reason, "fairuse_ban", "{}", d.message);
    assert!(
        d.message.contains("client 192.0.2.9 (user-agent group"),
        "{}",
        d.message
    );
    // The ban is of the address: every user agent behind it is refused until it is lifted.
    assert_eq!(a.bans()[0].subject, "ip 192.0.2.9");
    pull(&a, office, &agent(&b_ua)).await.unwrap_err();
    assert_eq!(a.lift(office).await.as_deref(), Some("ip 192.0.2.9"));
    for _ in 0..3 {
        pull(&a, office, &agent(&a_ua)).await.unwrap();
        pull(&a, office, &agent(&b_ua)).await.unwrap();
    }
}

/// Without `agents:` every user agent of an address shares one counter.
#[tokio::test]
async fn without_agents_one_address_is_one_client_whatever_its_user_agent() {
    let (a_ua, b_ua, _) = agents_in_groups();
    let a = access(&AGENT_RULES.replace(", agents: 4", "")).await;
    for _ in 0..3 {
        pull(&a, "192.0.2.9", &agent(&a_ua)).await.unwrap();
    }
    let d = pull(&a, "192.0.2.9", &agent(&b_ua)).await.unwrap_err();
    assert_eq!(d.reason, "fairuse_ban", "{}", d.message);
    assert!(!d.message.contains("user-agent group"), "{}", d.message);
}

/// Bytes served are counted by the accounting task in the group of the request's user agent.
#[tokio::test]
async fn agents_count_bytes_served_per_user_agent_group() {
    let (a_ua, b_ua, _) = agents_in_groups();
    let rules = r#"
rules:
  - {name: bytes, per: client, window: 1m, bytes: 1000, action: deny, agents: 4}
"#;
    let a = access(rules).await;
    let office = "192.0.2.9";
    pull(&a, office, &agent(&a_ua)).await.unwrap();
    a.usage_sink().send(UsageRecord {
        ip: Some(ip(office)),
        upstream: "docker.io".into(),
        repository: "docker.io/library/nginx".into(),
        bytes: 5000,
        agent: ferry_access::usage::agent_hash(&agent(&a_ua)),
        ..Default::default()
    });
    let mut denied = None;
    for _ in 0..100 {
        if let Err(d) = pull(&a, office, &agent(&a_ua)).await {
            denied = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = denied.expect("the 5000 bytes of group a are counted");
    assert_eq!(d.reason, "fairuse_deny", "{}", d.message);
    assert!(
        d.message.contains("rule bytes") && d.message.contains("(user-agent group"),
        "{}",
        d.message
    );
    pull(&a, office, &agent(&b_ua)).await.unwrap();
}
