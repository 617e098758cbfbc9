//! Background revalidation and `keep_deleted`, against the engine tests' fake upstream.

use std::time::Instant;

use super::*;

fn moved(fake: &Fake, tag: &str) -> Digest {
    add_manifest(
        fake,
        tag,
        &MANIFEST.replace("\"layers\":[]", "\"layers\":[]  "),
    )
}

async fn settle(mirror: &Mirror) {
    for _ in 0..200 {
        if mirror.revalidating() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("background revalidation did not finish");
}

#[tokio::test]
async fn an_expired_tag_is_answered_at_once_and_refreshed_once_in_the_background() {
    let env = env_with("cache:\n  tag_ttl: 1s\n").await;
    let d1 = add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    assert_eq!(
        env.mirror
            .manifest(&t, &tag, &Ungated)
            .await
            .unwrap()
            .manifest
            .digest,
        d1
    );
    let d2 = moved(&env.fake, "v1");
    env.fake.set_manifest_delay(Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let start = Instant::now();
    for _ in 0..10 {
        let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
        assert_eq!((a.outcome, &a.manifest.digest), (Outcome::Hit, &d1));
    }
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "clients waited for the slow upstream: {:?}",
        start.elapsed()
    );
    assert_eq!(env.mirror.revalidating(), 1, "one revalidation per tag");
    settle(&env.mirror).await;
    assert_eq!(env.fake.hits("HEAD", "/manifests/v1"), 1);
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(
        (a.outcome, &a.manifest.digest),
        (Outcome::Hit, &d2),
        "the refresh is served next"
    );
}

#[tokio::test]
async fn a_tag_never_seen_waits_and_shutdown_stops_revalidations() {
    let env = env_with("cache:\n  tag_ttl: 1s\n").await;
    add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    env.fake.set_manifest_delay(Duration::from_millis(300));
    let start = Instant::now();
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(a.outcome, Outcome::Miss);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "a new tag waits"
    );

    env.fake.set_manifest_delay(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(env.mirror.revalidating(), 1);
    let stopping = Instant::now();
    env.mirror.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "shutdown waited"
    );
    assert_eq!(env.mirror.revalidating(), 0, "the revalidation was stopped");
}

#[tokio::test]
async fn a_tag_deleted_upstream_is_served_for_keep_deleted_then_not() {
    let env = env_with(
        "cache:\n  tag_ttl: 1s\n  keep_deleted: 3s\n  negative_ttl: 1s\n  revalidate: blocking\n",
    )
    .await;
    let d = add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    env.fake.remove_tag_everywhere("v1");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let first_404 = Instant::now();
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!((a.outcome, &a.manifest.digest), (Outcome::Stale, &d));
    let deleted = a.deleted_upstream.expect("marked as deleted upstream");
    let window = deleted.until.duration_since(deleted.since).unwrap();
    assert_eq!(window, Duration::from_secs(3));
    assert!(deleted.header_value().starts_with("since="));
    let again = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(
        again.deleted_upstream,
        Some(deleted),
        "counted from the first 404"
    );

    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(first_404.elapsed()) + Duration::from_millis(1100),
    )
    .await;
    let err = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap_err();
    assert!(
        matches!(err, MirrorError::Upstream(UpstreamError::NotFound { .. })),
        "{err:?}"
    );

    // It comes back upstream: served normally again.
    add_manifest(&env.fake, "v1", MANIFEST);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(
        (back.outcome, back.deleted_upstream),
        (Outcome::Revalidated, None)
    );
}

#[tokio::test]
async fn background_revalidation_notices_a_deletion_and_off_serves_nothing() {
    let env = env_with("cache:\n  tag_ttl: 1s\n  keep_deleted: 1h\n").await;
    let off = env_with("cache:\n  tag_ttl: 1s\n  keep_deleted: 'off'\n").await;
    for e in [&env, &off] {
        add_manifest(&e.fake, "v1", MANIFEST);
        let t = e.mirror.resolve("org/app", None, None).unwrap();
        let tag = Reference::parse("v1").unwrap();
        e.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
        e.fake.remove_tag_everywhere("v1");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!(
        a.deleted_upstream, None,
        "not known yet: the HEAD runs after"
    );
    settle(&env.mirror).await;
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert!(
        a.deleted_upstream.is_some(),
        "the background 404 was recorded"
    );

    let t = off.mirror.resolve("org/app", None, None).unwrap();
    off.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    settle(&off.mirror).await;
    let err = off.mirror.manifest(&t, &tag, &Ungated).await.unwrap_err();
    assert!(
        matches!(err, MirrorError::Upstream(UpstreamError::NotFound { .. })),
        "{err:?}"
    );
}

/// Makes the tag answer of `tag` look `secs` old (the record keeps whole seconds).
fn age_tag(mirror: &Mirror, tag: &str, secs: u64) {
    let key = meta::tag_key("docker.io", "org/app", tag);
    let mut e = mirror.inner.memory.tags.get(&key).expect("a tag entry");
    e.fetched_at = meta::now_secs() - secs;
    mirror.inner.memory.tags.insert(key, e);
}

#[tokio::test]
async fn a_hot_tag_is_refreshed_ahead_of_its_ttl_and_a_cold_one_is_not() {
    let env = env_with("cache:\n  tag_ttl: 10s\n").await;
    let hot_d1 = add_manifest(&env.fake, "hot", MANIFEST);
    add_manifest(&env.fake, "cold", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let (hot, cold) = (
        Reference::parse("hot").unwrap(),
        Reference::parse("cold").unwrap(),
    );
    for _ in 0..3 {
        env.mirror.manifest(&t, &hot, &Ungated).await.unwrap();
    }
    env.mirror.manifest(&t, &cold, &Ungated).await.unwrap();
    let hot_d2 = moved(&env.fake, "hot");
    moved(&env.fake, "cold");
    // 9 s of 10: fresh, and past the 80% mark.
    age_tag(&env.mirror, "hot", 9);
    age_tag(&env.mirror, "cold", 9);

    let a = env.mirror.manifest(&t, &hot, &Ungated).await.unwrap();
    assert_eq!((a.outcome, &a.manifest.digest), (Outcome::Hit, &hot_d1));
    let c = env.mirror.manifest(&t, &cold, &Ungated).await.unwrap();
    assert_eq!(c.outcome, Outcome::Hit);
    settle(&env.mirror).await;
    assert_eq!(
        env.fake.hits("HEAD", "/manifests/hot"),
        1,
        "refreshed ahead"
    );
    assert_eq!(
        env.fake.hits("HEAD", "/manifests/cold"),
        0,
        "a cold tag waits"
    );
    let a = env.mirror.manifest(&t, &hot, &Ungated).await.unwrap();
    assert_eq!(
        a.manifest.digest, hot_d2,
        "the refresh is served before the TTL ran out"
    );
}
