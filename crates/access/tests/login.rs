//! Logins: anonymous pulls on and off, the docker token flow (challenge, token, bearer),
//! Basic auth, wrong passwords, failed-login limits, replicas sharing a token key.

mod common;

use base64::Engine;
use common::*;
use ferry_access::{Identity, RequestInfo, reason};
use ferry_oci::ErrorCode;
use http::HeaderMap;

fn with_users(path: &std::path::Path, extra: &str) -> String {
    format!("htpasswd: {}\n{extra}", path.display())
}

#[tokio::test]
async fn open_mirror_challenges_nobody() {
    let a = access("{}").await;
    let g = pull(&a, "192.0.2.1", &HeaderMap::new()).await.unwrap();
    assert_eq!(g.identity(), &Identity::Anonymous);
    assert!(!a.logins_enabled());
    let ping = RequestInfo {
        ip: ip("192.0.2.1"),
        headers: &HeaderMap::new(),
        target: None,
        realm: REALM,
    };
    assert!(a.check(&ping).await.is_ok());
}

#[tokio::test]
async fn with_users_every_unauthenticated_request_is_challenged() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: true")).await;
    let d = pull(&a, "192.0.2.1", &HeaderMap::new()).await.unwrap_err();
    assert_eq!(d.code, ErrorCode::Unauthorized);
    assert_eq!(d.reason, reason::AUTH_CHALLENGE);
    assert_eq!(
        d.challenge.as_deref(),
        Some(
            r#"Bearer realm="http://mirror.test/token",service="ferry",scope="repository:docker.io/library/nginx:pull""#
        )
    );
    let ping = RequestInfo {
        ip: ip("192.0.2.1"),
        headers: &HeaderMap::new(),
        target: None,
        realm: REALM,
    };
    let d = a.check(&ping).await.unwrap_err();
    assert_eq!(
        d.challenge.as_deref(),
        Some(r#"Bearer realm="http://mirror.test/token",service="ferry""#)
    );
}

#[tokio::test]
async fn anonymous_clients_get_an_anonymous_token() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: true")).await;
    let t = token(
        &a,
        "192.0.2.1",
        &HeaderMap::new(),
        "service=ferry&scope=repository:library/nginx:pull",
    )
    .await
    .unwrap();
    let g = pull(&a, "192.0.2.1", &bearer(&t)).await.unwrap();
    assert_eq!(g.identity(), &Identity::Anonymous);
}

#[tokio::test]
async fn docker_login_checks_the_password() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: true")).await;
    let t = token(
        &a,
        "192.0.2.1",
        &basic("alice", "wonderland"),
        "account=alice&service=ferry",
    )
    .await
    .unwrap();
    assert_eq!(
        pull(&a, "192.0.2.1", &bearer(&t)).await.unwrap().identity(),
        &Identity::User("alice".into())
    );
    let d = token(&a, "192.0.2.1", &basic("alice", "nope"), "service=ferry")
        .await
        .unwrap_err();
    assert_eq!(
        d.code,
        ErrorCode::Unauthorized,
        "a wrong password is never an anonymous token"
    );
    assert_eq!(d.reason, reason::BAD_CREDENTIALS);
}

#[tokio::test]
async fn basic_auth_works_directly() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: false")).await;
    let g = pull(&a, "192.0.2.1", &basic("alice", "wonderland"))
        .await
        .unwrap();
    assert_eq!(g.identity().user(), Some("alice"));
    let d = pull(&a, "192.0.2.1", &basic("alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(d.reason, reason::BAD_CREDENTIALS);
    assert!(
        d.challenge.is_some(),
        "clients retry the login after a challenge"
    );
}

#[tokio::test]
async fn anonymous_off_needs_a_login_everywhere() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: false")).await;
    let d = pull(&a, "192.0.2.1", &HeaderMap::new()).await.unwrap_err();
    assert_eq!(
        (d.code, d.reason),
        (ErrorCode::Unauthorized, reason::LOGIN_REQUIRED)
    );
    assert!(d.challenge.unwrap().starts_with("Bearer realm="));
    let d = token(&a, "192.0.2.1", &HeaderMap::new(), "service=ferry")
        .await
        .unwrap_err();
    assert_eq!(d.reason, reason::LOGIN_REQUIRED);
}

#[tokio::test]
async fn anonymous_tokens_stop_working_when_anonymous_is_turned_off() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let key = "k".repeat(32);
    let on = format!("token: {{key: {key}}}\nanonymous: true");
    let a = access(&with_users(&path, &on)).await;
    let t = token(&a, "192.0.2.1", &HeaderMap::new(), "service=ferry")
        .await
        .unwrap();
    a.reload(
        &config(&with_users(
            &path,
            &format!("token: {{key: {key}}}\nanonymous: false"),
        )),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        pull(&a, "192.0.2.1", &bearer(&t)).await.unwrap_err().reason,
        reason::LOGIN_REQUIRED
    );
}

#[tokio::test]
async fn tokens_of_removed_users_and_foreign_keys_are_refused() {
    let (_d, path) = htpasswd(&[("alice", "wonderland"), ("bob", "builder")]);
    let a = access(&with_users(&path, "")).await;
    let t = token(&a, "192.0.2.1", &basic("bob", "builder"), "service=ferry")
        .await
        .unwrap();
    let other = access(&with_users(&path, "")).await;
    let d = pull(&other, "192.0.2.1", &bearer(&t)).await.unwrap_err();
    assert_eq!(
        d.reason,
        reason::INVALID_TOKEN,
        "another replica with a generated key"
    );
    assert!(d.challenge.unwrap().contains("error=\"invalid_token\""));
    let (_d2, fewer) = htpasswd(&[("alice", "wonderland")]);
    a.reload(&config(&with_users(&fewer, "")), None)
        .await
        .unwrap();
    let d = pull(&a, "192.0.2.1", &bearer(&t)).await.unwrap_err();
    assert!(d.message.contains("no longer exists"), "{}", d.message);
}

#[tokio::test]
async fn replicas_with_one_key_accept_each_others_tokens() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let cfg = with_users(&path, "token: {key: 0123456789abcdef0123456789abcdef}");
    let (a, b) = (access(&cfg).await, access(&cfg).await);
    let t = token(
        &a,
        "192.0.2.1",
        &basic("alice", "wonderland"),
        "service=ferry",
    )
    .await
    .unwrap();
    assert_eq!(
        pull(&b, "192.0.2.1", &bearer(&t))
            .await
            .unwrap()
            .identity()
            .user(),
        Some("alice")
    );
}

#[tokio::test]
async fn token_body_and_scopes() {
    let a = access("{}").await;
    let body = a
        .token(
            ip("192.0.2.1"),
            &HeaderMap::new(),
            Some("service=ferry&scope=repository:library/nginx:pull,push&scope=registry:catalog:*"),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 900);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    let payload = v["token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "");
    assert_eq!(claims["aud"], "ferry");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "library/nginx", "actions": ["pull"]}])
    );
}

#[tokio::test]
async fn oauth_form_logins() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "anonymous: false")).await;
    let body = a
        .token_form(ip("192.0.2.1"), b"grant_type=password&username=alice&password=wonderland&service=ferry&scope=repository:x:pull")
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let t = v["access_token"].as_str().unwrap();
    assert_eq!(
        pull(&a, "192.0.2.1", &bearer(t))
            .await
            .unwrap()
            .identity()
            .user(),
        Some("alice")
    );
    let d = a
        .token_form(ip("192.0.2.1"), b"grant_type=refresh_token&refresh_token=x")
        .await
        .unwrap_err();
    assert_eq!(d.code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn config_users_with_plain_passwords() {
    let a = access("anonymous: false\nusers: {ci-bot: {password: s3cret}}").await;
    assert_eq!(
        pull(&a, "192.0.2.1", &basic("ci-bot", "s3cret"))
            .await
            .unwrap()
            .identity()
            .user(),
        Some("ci-bot")
    );
}

#[tokio::test]
async fn password_guessing_is_limited_per_ip() {
    let (_d, path) = htpasswd(&[("alice", "wonderland")]);
    let a = access(&with_users(&path, "quotas: {failed_logins: 2/1m}")).await;
    for _ in 0..2 {
        assert_eq!(
            pull(&a, "192.0.2.1", &basic("alice", "guess"))
                .await
                .unwrap_err()
                .reason,
            reason::BAD_CREDENTIALS
        );
    }
    let d = pull(&a, "192.0.2.1", &basic("alice", "wonderland"))
        .await
        .unwrap_err();
    assert_eq!(
        (d.code, d.reason),
        (ErrorCode::TooManyRequests, reason::LOGIN_FAILURES)
    );
    assert!(d.retry_after.is_some());
    assert!(
        pull(&a, "192.0.2.2", &basic("alice", "wonderland"))
            .await
            .is_ok(),
        "other clients are not affected"
    );
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn futures_and_values_can_cross_threads() {
    let a = access("{}").await;
    assert_send_sync(&a);
    let h = HeaderMap::new();
    let req = RequestInfo {
        ip: ip("192.0.2.1"),
        headers: &h,
        target: None,
        realm: REALM,
    };
    let check = a.check(&req);
    assert_send(&check);
    let grant = check.await.unwrap();
    assert_send_sync(&grant);
    assert_send(&a.token(ip("192.0.2.1"), &h, None));
    assert_send(&a.token_form(ip("192.0.2.1"), b""));
    assert_send(&a.reload(&config("{}"), None));
    assert_send(&grant.meter(body(1, 1), ferry_access::CacheOutcome::Hit));
}

#[tokio::test]
async fn a_password_change_revokes_live_tokens() {
    let before = "users: {alice: {password: wonderland}, bob: {password: builder}}";
    let after = "users: {alice: {password: looking-glass}, bob: {password: builder}}";
    let a = access(before).await;
    let alice = token(
        &a,
        "192.0.2.1",
        &basic("alice", "wonderland"),
        "service=ferry",
    )
    .await
    .unwrap();
    let bob = token(&a, "192.0.2.1", &basic("bob", "builder"), "service=ferry")
        .await
        .unwrap();
    assert!(pull(&a, "192.0.2.1", &bearer(&alice)).await.is_ok());
    a.reload(&config(after), None).await.unwrap();
    let d = pull(&a, "192.0.2.1", &bearer(&alice)).await.unwrap_err();
    assert_eq!(d.reason, reason::INVALID_TOKEN);
    assert!(
        d.message.contains("password of user \"alice\" changed"),
        "{}",
        d.message
    );
    assert_eq!(
        pull(&a, "192.0.2.1", &bearer(&bob))
            .await
            .unwrap()
            .identity()
            .user(),
        Some("bob"),
        "other users' tokens stay valid"
    );
}
