//! Quotas through the public API, on the in-memory store with tokio's paused clock:
//! exhaustion and recovery, bytes, per-user overrides, cache-miss quotas, concurrency slots,
//! bandwidth, and counters surviving a reload.

mod common;

use std::time::Duration;

use common::*;
use ferry_access::{CacheOutcome, RequestInfo, reason};
use ferry_oci::ErrorCode;
use http::HeaderMap;
use tokio::time::{Instant, advance};

fn none() -> HeaderMap {
    HeaderMap::new()
}

#[tokio::test(start_paused = true)]
async fn request_quota_runs_out_and_comes_back_after_the_window() {
    let a = access("quotas: {anonymous: {requests: 3/10s}}").await;
    for _ in 0..3 {
        pull(&a, "192.0.2.1", &none()).await.unwrap();
    }
    let d = pull(&a, "192.0.2.1", &none()).await.unwrap_err();
    assert_eq!(
        (d.code, d.reason),
        (ErrorCode::TooManyRequests, reason::QUOTA_REQUESTS)
    );
    assert_eq!(d.retry_after_secs(), Some(4));
    let json: serde_json::Value = serde_json::from_slice(&d.to_oci().to_json()).unwrap();
    assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS");
    assert!(
        pull(&a, "192.0.2.2", &none()).await.is_ok(),
        "quotas are per IP"
    );
    advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        pull(&a, "192.0.2.1", &none()).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn pings_are_not_counted() {
    let a = access("quotas: {anonymous: {requests_per_minute: 1, concurrent: 1}}").await;
    let ping = RequestInfo {
        ip: ip("192.0.2.1"),
        headers: &none(),
        target: None,
        realm: REALM,
    };
    let _held = pull(&a, "192.0.2.1", &none()).await.unwrap();
    for _ in 0..5 {
        a.check(&ping).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_byte_quota_never_cuts_a_download_and_refuses_the_next_request() {
    let a = access("quotas: {anonymous: {bytes: 1MiB/1h}}").await;
    let g = pull(&a, "192.0.2.1", &none()).await.unwrap();
    let n = drain(g.meter(body(48, 64 << 10), CacheOutcome::Hit)).await;
    assert_eq!(n, 3 << 20, "the whole body, although over quota");
    let d = pull(&a, "192.0.2.1", &none()).await.unwrap_err();
    assert_eq!(d.reason, reason::QUOTA_BYTES);
    assert_eq!(d.retry_after_secs(), Some(2 * 3600));
    assert!(
        d.message
            .contains("may download 1MiB per 1h (anonymous quota)"),
        "{}",
        d.message
    );
    advance(Duration::from_secs(2 * 3600)).await;
    pull(&a, "192.0.2.1", &none()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn error_bodies_are_not_counted() {
    let a = access("quotas: {anonymous: {bytes: 1KiB/1h}}").await;
    let g = pull(&a, "192.0.2.1", &none()).await.unwrap();
    drain(g.meter(body(4, 1024), CacheOutcome::None)).await;
    pull(&a, "192.0.2.1", &none()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn logged_in_users_get_their_own_quota_and_overrides() {
    let cfg = r#"
anonymous: true
users: {alice: {password: a}, ci-bot: {password: b}}
quotas:
  anonymous: {requests_per_minute: 1}
  authenticated: {requests_per_minute: 2}
  users: {ci-bot: {requests_per_minute: 4}}
"#;
    let a = access(cfg).await;
    let count = |h: HeaderMap, from: &'static str| {
        let a = &a;
        async move {
            let mut n = 0;
            while pull(a, from, &h).await.is_ok() {
                n += 1;
            }
            n
        }
    };
    assert_eq!(count(basic("alice", "a"), "192.0.2.1").await, 2);
    assert_eq!(count(basic("ci-bot", "b"), "192.0.2.1").await, 4);
    let t = token(&a, "192.0.2.1", &none(), "service=ferry")
        .await
        .unwrap();
    assert_eq!(
        count(bearer(&t), "192.0.2.1").await,
        1,
        "anonymous, counted per IP"
    );
    assert_eq!(count(bearer(&t), "192.0.2.9").await, 1);
    assert_eq!(
        count(basic("alice", "a"), "192.0.2.9").await,
        0,
        "a user's quota follows the user, not the IP"
    );
}

#[tokio::test(start_paused = true)]
async fn miss_quotas_leave_cached_content_available() {
    let a = access("quotas: {anonymous: {miss_bytes: 1KiB/1h}}").await;
    let g = pull(&a, "192.0.2.1", &none()).await.unwrap();
    assert!(g.miss_allowed().is_ok());
    drain(g.meter(body(4, 1024), CacheOutcome::Miss)).await;
    let g = pull(&a, "192.0.2.1", &none())
        .await
        .expect("hits are still served");
    let d = g.miss_allowed().unwrap_err();
    assert_eq!(d.reason, reason::QUOTA_MISS_BYTES);
    assert!(d.message.contains("not cached yet"), "{}", d.message);
    drain(g.meter(body(100, 1024), CacheOutcome::Hit)).await;
    advance(Duration::from_secs(3 * 3600)).await;
    assert!(
        pull(&a, "192.0.2.1", &none())
            .await
            .unwrap()
            .miss_allowed()
            .is_ok(),
        "hits never count as misses"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_slots_are_held_by_the_body_and_freed_on_drop() {
    let a = access("quotas: {anonymous: {concurrent: 2}}").await;
    let g1 = pull(&a, "192.0.2.1", &none()).await.unwrap();
    let g2 = pull(&a, "192.0.2.1", &none()).await.unwrap();
    let d = pull(&a, "192.0.2.1", &none()).await.unwrap_err();
    assert_eq!(
        (d.reason, d.retry_after_secs()),
        (reason::CONCURRENCY, Some(1))
    );
    drop(g1);
    let g3 = pull(&a, "192.0.2.1", &none()).await.unwrap();
    let body1 = g2.meter(body(2, 10), CacheOutcome::Hit);
    let body2 = g3.meter(body(2, 10), CacheOutcome::Hit);
    assert!(
        pull(&a, "192.0.2.1", &none()).await.is_err(),
        "bodies in flight hold their slots"
    );
    drain(body1).await;
    drop(body2);
    let _a = pull(&a, "192.0.2.1", &none()).await.unwrap();
    let _b = pull(&a, "192.0.2.1", &none()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bandwidth_is_shared_by_a_clients_blob_downloads() {
    let a = access("quotas: {anonymous: {bandwidth: 256KiB/s}}").await;
    let target = blob("docker.io", "library/nginx");
    let req = RequestInfo {
        ip: ip("192.0.2.1"),
        headers: &none(),
        target,
        realm: REALM,
    };
    let start = Instant::now();
    let g = a.check(&req).await.unwrap();
    assert_eq!(
        drain(g.meter(body(16, 32 << 10), CacheOutcome::Hit)).await,
        512 << 10
    );
    let one = start.elapsed().as_secs_f64();
    assert!((1.8..2.1).contains(&one), "512KiB at 256KiB/s took {one}s");
    advance(Duration::from_secs(5)).await;
    let start = Instant::now();
    let (g1, g2) = (a.check(&req).await.unwrap(), a.check(&req).await.unwrap());
    let (n1, n2) = tokio::join!(
        drain(g1.meter(body(16, 32 << 10), CacheOutcome::Hit)),
        drain(g2.meter(body(16, 32 << 10), CacheOutcome::Miss))
    );
    assert_eq!(n1 + n2, 1 << 20);
    let two = start.elapsed().as_secs_f64();
    assert!(
        (3.8..4.1).contains(&two),
        "two parallel downloads share the cap: {two}s"
    );
    let m = a
        .check(&RequestInfo {
            target: manifest("docker.io", "library/nginx"),
            ..req
        })
        .await
        .unwrap();
    let start = Instant::now();
    drain(m.meter(body(16, 32 << 10), CacheOutcome::Hit)).await;
    assert!(
        start.elapsed() < Duration::from_millis(10),
        "manifests are not throttled"
    );
}

#[tokio::test(start_paused = true)]
async fn counters_survive_a_reload_that_keeps_the_limit() {
    let a = access("quotas: {anonymous: {requests: 2/1m}}").await;
    pull(&a, "192.0.2.1", &none()).await.unwrap();
    pull(&a, "192.0.2.1", &none()).await.unwrap();
    a.reload(
        &config("quotas: {anonymous: {requests: 2/1m}}\ndeny: [quay.io/**]"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        pull(&a, "192.0.2.1", &none()).await.unwrap_err().reason,
        reason::QUOTA_REQUESTS
    );
    a.reload(&config("quotas: {anonymous: {requests: 3/1m}}"), None)
        .await
        .unwrap();
    pull(&a, "192.0.2.1", &none())
        .await
        .expect("a changed limit starts afresh");
    let bad = a
        .reload(
            &config("quotas: {anonymous: {requests: 3/1m, requests_per_minute: 3}}"),
            None,
        )
        .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("requests or requests_per_minute")
    );
    pull(&a, "192.0.2.1", &none())
        .await
        .expect("the old config stays after a failed reload");
}
