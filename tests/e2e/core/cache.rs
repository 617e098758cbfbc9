//! The disk cache (SPEC section 5): content by digest is served without any upstream request
//! once cached — across restarts and crashes, and with the upstream stopped; a tag is trusted
//! for `tag_ttl`, then revalidated with a HEAD (counted at the upstream) and re-fetched only
//! when it moved; tags matching `immutable_tags` are never revalidated; when the upstream is
//! rate-limiting, failing or down, the cached tag is served; a 404 is remembered for
//! `negative_ttl`; `storage.max_size` evicts the least recently served blobs.

use std::time::{Duration, Instant};

use super::*;

/// Every request ferry made to a registry, for "nothing reached the upstream" checks.
fn request_count(registry: &Registry) -> usize {
    ferry_requests(registry).len()
}

#[test]
fn cached_content_needs_no_upstream_across_restarts_crashes_and_outages() {
    let mut registry = Registry::start();
    let image = push_fixture(&registry, Fixture::multi().seed("cache"), "test/multi:v1");
    let mut ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .tag_ttl("1s")
        .start();
    let by_tag = format!("docker://{}/test/multi:v1", ferry.host());
    let by_digest = format!("docker://{}/test/multi@{}", ferry.host(), image.digest);
    let direct = format!("docker://{}/test/multi:v1", registry.host());
    assert_same_pull(&by_tag, &direct, &image);
    let blob_gets = ferry_requests(&registry)
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, image.blobs.len(), "each blob fetched once");

    // By digest: no upstream request at all.
    let before = request_count(&registry);
    let pulled = pull_to_dir(&by_digest, &["--all"]);
    assert_eq!(pulled["manifest.json"], image.digest);
    assert_eq!(
        request_count(&registry),
        before,
        "a digest hit asked the upstream"
    );

    // A graceful restart keeps the cache.
    ferry.restart();
    pull_to_dir(&by_digest, &["--all"]);
    assert_eq!(request_count(&registry), before, "after a restart");

    // A crash too.
    ferry.kill9();
    ferry.start_again();
    pull_to_dir(&by_digest, &["--all"]);
    assert_eq!(request_count(&registry), before, "after kill -9");

    // Upstream down, tag expired: the cached tag and everything by digest are still served.
    registry.stop();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        pull_to_dir(&by_tag, &["--all"]),
        pulled,
        "stale tag with the upstream down"
    );
    assert_eq!(pull_to_dir(&by_digest, &["--all"]), pulled);
    ferry.restart();
    assert_eq!(
        pull_to_dir(&by_tag, &["--all"]),
        pulled,
        "stale tag after a restart with the upstream down"
    );
    for blob in &image.blobs {
        assert!(is_cached(&ferry, &blob.digest));
    }
    for manifest in image
        .manifests
        .iter()
        .map(|m| &m.digest)
        .chain([&image.digest])
    {
        assert!(is_cached(&ferry, manifest));
    }
}

#[tokio::test]
async fn tags_are_trusted_for_tag_ttl_then_revalidated_with_a_head() {
    let registry = Registry::start();
    let a = push_fixture(&registry, Fixture::single().seed("ttl-a"), "lib/app:stable");
    let b = push_fixture(&registry, Fixture::single().seed("ttl-b"), "lib/app:next");
    registry.tag("lib/app", "stable", "1.2.3");
    let ttl = Duration::from_secs(2);
    let ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .tag_ttl("2s")
        .set("cache.revalidate", "blocking")
        .set(
            "cache.immutable_tags",
            serde_json::json!(["v?[0-9]+\\.[0-9]+\\.[0-9]+"]),
        )
        .start();
    let tag_path = "/v2/lib/app/manifests/stable";
    let digest_of = |path: &'static str| {
        let ferry = &ferry;
        async move {
            let resp = get_manifest(ferry, path).await;
            assert_eq!(resp.status(), 200, "{path}");
            header(&resp, "docker-content-digest").unwrap().to_owned()
        }
    };

    let fetched = Instant::now();
    assert_eq!(digest_of(tag_path).await, a.digest);
    assert_eq!(digest_of("/v2/lib/app/manifests/1.2.3").await, a.digest);
    assert_eq!(ferry_count(&registry, "GET", tag_path), 1);

    // The tag moves upstream; within tag_ttl ferry trusts its answer and asks nobody.
    registry.tag("lib/app", "next", "stable");
    let before = request_count(&registry);
    for _ in 0..5 {
        assert_eq!(digest_of(tag_path).await, a.digest);
    }
    assert!(fetched.elapsed() < ttl, "too slow to test the TTL");
    assert_eq!(
        request_count(&registry),
        before,
        "no upstream request within tag_ttl"
    );

    // After tag_ttl: one HEAD sees the new digest, one GET fetches the new manifest.
    tokio::time::sleep(ttl - fetched.elapsed() + Duration::from_millis(200)).await;
    let revalidated = Instant::now();
    assert_eq!(digest_of(tag_path).await, b.digest);
    assert_eq!(ferry_count(&registry, "HEAD", tag_path), 1);
    assert_eq!(ferry_count(&registry, "GET", tag_path), 2);

    // Unchanged after the next expiry: HEAD only, no GET.
    tokio::time::sleep(ttl - revalidated.elapsed() + Duration::from_millis(200)).await;
    assert_eq!(digest_of(tag_path).await, b.digest);
    assert_eq!(ferry_count(&registry, "HEAD", tag_path), 2);
    assert_eq!(ferry_count(&registry, "GET", tag_path), 2);

    // An immutable tag is never revalidated, however old its answer.
    assert_eq!(digest_of("/v2/lib/app/manifests/1.2.3").await, a.digest);
    let immutable = "/v2/lib/app/manifests/1.2.3";
    assert_eq!(ferry_count(&registry, "HEAD", immutable), 0);
    assert_eq!(ferry_count(&registry, "GET", immutable), 1);
}

#[tokio::test]
async fn cached_tags_are_served_when_the_upstream_limits_fails_or_is_down() {
    let up = FaultyUpstream::start();
    let layer = up.add_pattern_blob(11, 300_000);
    let digest = up.add_image("org/app", "stable", std::slice::from_ref(&layer));
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking")
        .start();
    let strict = Ferry::builder()
        .upstream("docker.io", &up)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking")
        .set("cache.serve_stale", false)
        .start();
    let tag_path = "/v2/org/app/manifests/stable";
    let blob_path = format!("/v2/org/app/blobs/{layer}");
    for f in [&ferry, &strict] {
        let resp = get_manifest(f, tag_path).await;
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(digest.as_str())
        );
        assert_eq!(
            sha256_digest(&get(f, &blob_path).await.bytes().await.unwrap()),
            layer
        );
    }
    assert_eq!(up.blob_gets(&layer), 2);

    let faults = [
        Fault::too_many_requests(1),
        Fault::status(503),
        Fault::status(500),
    ];
    for fault in faults {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let heads = up.count("HEAD", tag_path);
        up.add_rule(Rule::manifests(fault.clone()).times(1));
        let resp = get_manifest(&ferry, tag_path).await;
        assert_eq!(resp.status(), 200, "stale answer on {fault:?}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(digest.as_str())
        );
        assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), digest);
        assert_eq!(
            up.count("HEAD", tag_path),
            heads + 1,
            "ferry did ask ({fault:?})"
        );
        up.clear_rules();
    }
    // With serve_stale off, the failure reaches the client.
    up.add_rule(Rule::manifests(Fault::status(503)));
    let resp = get_manifest(&strict, tag_path).await;
    assert!(resp.status().is_server_error(), "{}", resp.status());
    up.clear_rules();

    // Down: the fake upstream is gone; the tag and the blob still come from the cache.
    drop(up);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = get_manifest(&ferry, tag_path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(digest.as_str())
    );
    let blob = get(&ferry, &blob_path).await;
    assert_eq!(blob.status(), 200);
    assert_eq!(sha256_digest(&blob.bytes().await.unwrap()), layer);
}

#[tokio::test]
async fn a_404_from_upstream_is_remembered_for_negative_ttl() {
    let up = FaultyUpstream::start();
    let layer = up.add_blob(b"layer".to_vec());
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .set("cache.negative_ttl", "2s")
        .start();
    let path = "/v2/org/app/manifests/soon";
    let first = Instant::now();
    for _ in 0..4 {
        expect_error(get_manifest(&ferry, path).await, 404, "MANIFEST_UNKNOWN").await;
    }
    assert_eq!(up.count("GET", path), 1, "later 404s come from memory");

    // The tag appears upstream; ferry keeps saying 404 until negative_ttl has passed.
    let digest = up.add_image("org/app", "soon", std::slice::from_ref(&layer));
    expect_error(get_manifest(&ferry, path).await, 404, "MANIFEST_UNKNOWN").await;
    assert!(first.elapsed() < Duration::from_secs(2), "too slow to test");
    assert_eq!(up.count("GET", path), 1);
    tokio::time::sleep(Duration::from_secs(2) - first.elapsed() + Duration::from_millis(200)).await;
    let resp = get_manifest(&ferry, path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(digest.as_str())
    );
    assert_eq!(up.count("GET", path), 2);

    // By digest too.
    let missing = format!("/v2/org/app/manifests/sha256:{}", "a".repeat(64));
    for _ in 0..3 {
        expect_error(
            get_manifest(&ferry, &missing).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    assert_eq!(up.count("GET", &missing), 1);
}

#[tokio::test]
async fn max_size_evicts_the_least_recently_served_blobs() {
    const MIB: u64 = 1024 * 1024;
    let up = FaultyUpstream::start();
    let [a, b, c] = [21, 22, 23].map(|seed| up.add_pattern_blob(seed, 4 * MIB));
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .max_size("10MiB")
        .start();
    let fetch = |d: &str| {
        let path = format!("/v2/org/app/blobs/{d}");
        let ferry = &ferry;
        async move {
            let resp = get(ferry, &path).await;
            assert_eq!(resp.status(), 200);
            let body = resp.bytes().await.unwrap();
            assert_eq!(sha256_digest(&body), path.rsplit('/').next().unwrap());
        }
    };
    let settle = |what: &str, cond: &dyn Fn() -> bool| {
        wait_until(Duration::from_secs(10), what, cond);
    };

    fetch(&a).await;
    settle("a cached", &|| is_cached(&ferry, &a));
    fetch(&b).await;
    settle("b cached", &|| is_cached(&ferry, &b));
    fetch(&a).await; // a is now served more recently than b
    assert_eq!(up.blob_gets(&a), 1);

    // 12 MiB > 10 MiB: the least recently served blob, b, goes.
    fetch(&c).await;
    settle("b evicted", &|| !is_cached(&ferry, &b));
    assert!(is_cached(&ferry, &a) && is_cached(&ferry, &c));
    assert!(cached_bytes(&ferry) <= 10 * MIB);

    // a is still a hit; b is fetched again, and now c is the least recently served.
    fetch(&a).await;
    assert_eq!(up.blob_gets(&a), 1);
    fetch(&b).await;
    assert_eq!(up.blob_gets(&b), 2);
    settle("c evicted", &|| !is_cached(&ferry, &c));
    settle("b cached again", &|| is_cached(&ferry, &b));
    assert!(is_cached(&ferry, &a));
    assert!(cached_bytes(&ferry) <= 10 * MIB);
    assert_eq!(up.blob_gets(&c), 1);
}
