//! Allow/deny lists and client addresses through the public API: blocked networks with
//! reasons, forged X-Forwarded-For, repository patterns, and reloading them.

mod common;

use std::net::SocketAddr;

use common::*;
use ferry_access::{RequestInfo, reason};
use ferry_oci::ErrorCode;
use http::HeaderMap;

fn xff(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", v.parse().unwrap());
    h
}

fn peer(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 40000)
}

#[tokio::test]
async fn forwarded_addresses_only_from_trusted_proxies() {
    let a =
        access("trusted_proxies: [10.0.0.0/8]\nblock_ips: [{cidr: 203.0.113.0/24, reason: abuse}]")
            .await;
    assert_eq!(
        a.client_ip(peer("10.1.1.1"), &xff("203.0.113.5, 10.2.2.2")),
        ip("203.0.113.5")
    );
    let forged = a.client_ip(peer("198.51.100.7"), &xff("192.0.2.99"));
    assert_eq!(
        forged,
        ip("198.51.100.7"),
        "an untrusted peer cannot pick its address"
    );
    let blocked = a.client_ip(peer("203.0.113.5"), &xff("192.0.2.99"));
    let d = a
        .check(&RequestInfo {
            ip: blocked,
            headers: &xff("192.0.2.99"),
            target: manifest("docker.io", "library/nginx"),
            realm: REALM,
        })
        .await
        .unwrap_err();
    assert_eq!(
        d.reason,
        reason::BLOCKED_IP,
        "a blocked client cannot escape by forging"
    );
}

#[tokio::test]
async fn blocked_clients_are_told_why_even_for_tokens() {
    let a = access("block_ips: [{cidr: 203.0.113.0/24, reason: 'abuse, contact ops@example.com'}]")
        .await;
    let d = pull(&a, "203.0.113.9", &HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(d.code, ErrorCode::Denied);
    assert!(
        d.message.contains("abuse, contact ops@example.com"),
        "{}",
        d.message
    );
    assert_eq!(d.subject, "ip 203.0.113.9");
    // No token either, and the answer is a 401 with the reason: containers/image prints the
    // message of a 401 token answer, but only the status of a 403.
    let d = a
        .token(ip("203.0.113.9"), &HeaderMap::new(), None)
        .await
        .unwrap_err();
    assert_eq!(d.reason, reason::BLOCKED_IP);
    assert_eq!(d.code, ErrorCode::Unauthorized);
    assert!(d.message.contains("abuse, contact ops@example.com"));
    let d = a
        .token_form(
            ip("203.0.113.9"),
            b"grant_type=password&username=a&password=b",
        )
        .await
        .unwrap_err();
    assert_eq!(
        (d.code, d.reason),
        (ErrorCode::Unauthorized, reason::BLOCKED_IP)
    );
}

/// The ping of a blocked client is answered as anyone's (containers/image shows only the
/// status of a failed ping): 200 without users, the login challenge with users, never a
/// password check. The reason comes with the first request for content or for a token.
#[tokio::test]
async fn the_ping_of_a_blocked_client_is_answered_so_it_reads_the_reason_later() {
    async fn ping(
        a: &ferry_access::Access,
        headers: HeaderMap,
    ) -> Result<ferry_access::Grant, ferry_access::Denial> {
        a.check(&RequestInfo {
            ip: ip("203.0.113.9"),
            headers: &headers,
            target: None,
            realm: REALM,
        })
        .await
    }
    let open = access("block_ips: [{cidr: 203.0.113.0/24, reason: abuse}]").await;
    assert!(ping(&open, HeaderMap::new()).await.is_ok());
    assert_eq!(
        pull(&open, "203.0.113.9", &HeaderMap::new())
            .await
            .unwrap_err()
            .reason,
        reason::BLOCKED_IP
    );

    let (_dir, path) = htpasswd(&[("alice", "pw")]);
    let with_users = access(&format!(
        "htpasswd: {}\nblock_ips: [{{cidr: 203.0.113.0/24, reason: abuse}}]",
        path.display()
    ))
    .await;
    for headers in [HeaderMap::new(), basic("alice", "pw")] {
        let d = ping(&with_users, headers).await.unwrap_err();
        assert_eq!(
            (d.code, d.reason),
            (ErrorCode::Unauthorized, reason::BLOCKED_IP)
        );
        assert!(d.message.contains("abuse"), "{}", d.message);
        assert!(
            d.challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer realm=")),
            "{:?}",
            d.challenge
        );
    }
}

#[tokio::test]
async fn repository_lists_and_reload() {
    let a =
        access("allow: [docker.io/library/*, ghcr.io/**]\ndeny: [docker.io/library/huge]").await;
    let check = |up: &'static str, repo: &'static str| {
        let a = &a;
        async move {
            let h = HeaderMap::new();
            let r = RequestInfo {
                ip: ip("192.0.2.1"),
                headers: &h,
                target: manifest(up, repo),
                realm: REALM,
            };
            a.check(&r).await.map(|_| ()).map_err(|d| d.reason)
        }
    };
    assert_eq!(check("docker.io", "library/nginx").await, Ok(()));
    assert_eq!(check("ghcr.io", "org/team/app").await, Ok(()));
    assert_eq!(
        check("docker.io", "library/huge").await,
        Err(reason::DENIED_REPO)
    );
    assert_eq!(
        check("docker.io", "someone/app").await,
        Err(reason::NOT_ALLOWED_REPO)
    );
    assert_eq!(
        check("quay.io", "org/app").await,
        Err(reason::NOT_ALLOWED_REPO)
    );
    a.reload(&config("deny: [ghcr.io/**]"), None).await.unwrap();
    assert_eq!(check("quay.io", "org/app").await, Ok(()));
    assert_eq!(
        check("ghcr.io", "org/team/app").await,
        Err(reason::DENIED_REPO)
    );
    assert!(
        a.reload(&config("deny: ['ghcr.io/[x']"), None)
            .await
            .is_err()
    );
    assert_eq!(
        check("ghcr.io", "org/team/app").await,
        Err(reason::DENIED_REPO),
        "old lists stay"
    );
}
