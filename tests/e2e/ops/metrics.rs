//! Metrics.

use super::*;

/// A cold pull counts misses, upstream requests and bytes from upstream; the same pull again
/// counts only hits and bytes from the cache, and sends nothing upstream.
#[test]
fn metrics_count_misses_then_hits_during_a_pull() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::multi(), "library/hello:1");
    let ferry = Ferry::for_registry(&upstream);
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());
    let blobs = image.blobs.len() as f64;
    let blob_bytes = image.blobs.iter().map(|b| b.size).sum::<u64>() as f64;
    let pull = || {
        let out = tempfile::tempdir().unwrap();
        skopeo_copy(
            &reference,
            &format!("dir:{}", out.path().display()),
            &["--all"],
        );
    };
    let blob_kind = [("upstream", "docker.io"), ("kind", "blob")];
    let blob_gets = [
        ("route", "blob"),
        ("method", "GET"),
        ("status", "200"),
        ("upstream", "docker.io"),
    ];

    let fresh = Scrape::of(&ferry.host());
    assert_eq!(fresh.sum("ferry_cache_hits_total", &[]), 0.0);
    assert_eq!(fresh.sum("ferry_cache_misses_total", &[]), 0.0);
    assert_eq!(fresh.sum("ferry_inflight_fills", &[]), 0.0);

    pull();
    let cold = Scrape::of(&ferry.host());
    assert_eq!(cold.sum("ferry_cache_misses_total", &blob_kind), blobs);
    assert_eq!(cold.sum("ferry_cache_hits_total", &blob_kind), 0.0);
    assert!(cold.sum("ferry_cache_misses_total", &[("kind", "manifest")]) >= 1.0);
    // Each cold blob's first request asks for a range (206), and large ones come in segments.
    let requests: f64 = image
        .blobs
        .iter()
        .map(|b| crate::core::segment_gets(b.size) as f64)
        .sum();
    let upstream_blob = |status| {
        cold.sum(
            "ferry_upstream_requests_total",
            &[
                ("upstream", "docker.io"),
                ("kind", "blob"),
                ("status", status),
            ],
        )
    };
    assert_eq!(upstream_blob("200") + upstream_blob("206"), requests);
    assert_eq!(
        cold.sum(
            "ferry_upstream_request_duration_seconds_count",
            &[("upstream", "docker.io"), ("kind", "blob")]
        ),
        requests,
        "one latency observation per upstream blob request"
    );
    assert!(
        cold.sum(
            "ferry_upstream_received_bytes_total",
            &[("upstream", "docker.io")]
        ) >= blob_bytes
    );
    assert!(cold.sum("ferry_served_bytes_total", &[("source", "upstream")]) >= blob_bytes);
    assert_eq!(cold.sum("ferry_http_requests_total", &blob_gets), blobs);
    assert!(cold.sum("ferry_storage_used_bytes", &[]) >= blob_bytes);
    assert_eq!(cold.sum("ferry_inflight_fills", &[]), 0.0);
    assert_eq!(cold.sum("ferry_fill_failures_total", &[]), 0.0);

    pull();
    let warm = Scrape::of(&ferry.host());
    assert_eq!(warm.sum("ferry_cache_hits_total", &blob_kind), blobs);
    assert_eq!(
        warm.sum("ferry_cache_misses_total", &[]),
        cold.sum("ferry_cache_misses_total", &[]),
        "a warm pull misses nothing"
    );
    assert!(warm.sum("ferry_cache_hits_total", &[("kind", "manifest")]) >= 1.0);
    assert_eq!(
        warm.sum("ferry_upstream_requests_total", &[]),
        cold.sum("ferry_upstream_requests_total", &[]),
        "a warm pull within tag_ttl sends nothing upstream"
    );
    assert_eq!(
        warm.sum("ferry_served_bytes_total", &[("source", "upstream")]),
        cold.sum("ferry_served_bytes_total", &[("source", "upstream")])
    );
    let from_cache = warm.sum("ferry_served_bytes_total", &[("source", "cache")])
        - cold.sum("ferry_served_bytes_total", &[("source", "cache")]);
    assert!(
        from_cache >= blob_bytes,
        "{from_cache} bytes from the cache"
    );
    assert_eq!(
        warm.sum("ferry_http_requests_total", &blob_gets),
        2.0 * blobs
    );
    assert_eq!(
        warm.sum(
            "ferry_http_request_duration_seconds_count",
            &[("kind", "blob")]
        ),
        warm.sum("ferry_http_requests_total", &[("route", "blob")]),
        "one latency observation per blob request"
    );
    assert_eq!(upstream.blob_gets(), image.blobs.len());
}

/// While one slow download runs, `ferry_inflight_fills` is 1 and every other request for the
/// same blob is counted in `ferry_coalesced_waiters_total`; afterwards the gauge is back to 0.
#[test]
fn metrics_show_downloads_in_flight_and_coalesced_waiters() {
    let up = FaultyUpstream::start();
    let size = 5 * MIB;
    let blob = up.add_pattern_blob(7, size);
    up.add_rule(Rule::blob(&blob, Fault::Throttle(MIB)));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let path = blob_path("library/slow", &blob);

    let first = Download::start(&ferry.host(), &path);
    wait_until(Duration::from_secs(10), "the download to start", || {
        Scrape::of(&ferry.host()).sum("ferry_inflight_fills", &[]) == 1.0
    });
    let others: Vec<Download> = (0..2)
        .map(|_| Download::start(&ferry.host(), &path))
        .collect();
    for d in &others {
        d.wait_for_bytes(1);
    }
    let during = Scrape::of(&ferry.host());
    assert_eq!(during.sum("ferry_inflight_fills", &[]), 1.0);
    assert_eq!(
        during.sum(
            "ferry_coalesced_waiters_total",
            &[("upstream", "docker.io")]
        ),
        2.0
    );
    for d in std::iter::once(first).chain(others) {
        d.finish_whole(&blob);
    }
    let after = Scrape::of(&ferry.host());
    assert_eq!(after.sum("ferry_inflight_fills", &[]), 0.0);
    let blob_kind = [("kind", "blob")];
    assert_eq!(
        after.sum("ferry_cache_misses_total", &blob_kind)
            + after.sum("ferry_cache_hits_total", &blob_kind),
        3.0,
        "every request counted once, as a hit or a miss"
    );
    assert_eq!(
        up.blob_gets(&blob),
        1,
        "one upstream download for three clients"
    );
}
