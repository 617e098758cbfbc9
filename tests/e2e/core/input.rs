//! Hostile input: path traversal (`..`, encoded slashes and dots, backslashes), invalid
//! repository names, tags and digests, over-long paths and absurd headers all get 4xx OCI JSON
//! errors, never reach the upstream, and never create a file outside the cache root. The
//! requests are written byte for byte on a raw socket, so no client library normalizes them.

use std::time::Duration;

use super::*;
use crate::support::http::raw_request;

/// The files of ferry's private directory that are not in its cache root.
fn outside_cache(ferry: &Ferry) -> Vec<String> {
    files_under(ferry.dir())
        .into_iter()
        .filter(|f| !f.starts_with("data/"))
        .collect()
}

/// Names under `dir` (one level) that contain `marker`.
fn marked(dir: &Path, marker: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(marker))
                .collect()
        })
        .unwrap_or_default()
}

/// Hostile request paths, with the status and code each must get.
fn hostile_paths(marker: &str) -> Vec<(String, u16, &'static str)> {
    let m = marker;
    let hex = "a".repeat(64);
    vec![
        // Traversal in the repository name, plain and encoded.
        (
            format!("/v2/../../../../tmp/{m}/manifests/latest"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/library/../../../../../tmp/{m}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/docker.io/../../{m}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/./library/hello/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        ("/v2/library//hello/manifests/1".into(), 400, "NAME_INVALID"),
        (
            "/v2/library%2Fhello/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library%2fhello/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/%2e%2e/%2e%2e/tmp/{m}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/library/hello%2F..%2F..%2F{m}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/library/hello\\..\\..\\{m}/manifests/1"),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/hel%00lo/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        // Traversal in the tag or digest.
        (
            format!("/v2/library/hello/manifests/..%2F..%2F..%2F{m}"),
            400,
            "TAG_INVALID",
        ),
        ("/v2/library/hello/manifests/..".into(), 400, "TAG_INVALID"),
        (
            format!("/v2/library/hello/manifests/../../{m}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:..%2F..%2F{m}"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:{hex}%2F..%2F{m}"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:../../../../tmp/{m}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/library/hello/manifests/sha256:..%2f{m}"),
            400,
            "DIGEST_INVALID",
        ),
        // Invalid names.
        ("/v2/Library/Hello/manifests/1".into(), 400, "NAME_INVALID"),
        ("/v2/-lib/hello/manifests/1".into(), 400, "NAME_INVALID"),
        ("/v2/lib-/hello/manifests/1".into(), 400, "NAME_INVALID"),
        ("/v2/library/a..b/manifests/1".into(), 400, "NAME_INVALID"),
        ("/v2/library/a___b/manifests/1".into(), 400, "NAME_INVALID"),
        // A first component that looks like a host is an unknown registry.
        ("/v2/lib..x/hello/manifests/1".into(), 404, "NAME_UNKNOWN"),
        (
            format!("/v2/{}/manifests/1", "a".repeat(300)),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/{}/manifests/1", "ab/".repeat(400)),
            400,
            "NAME_INVALID",
        ),
        // Invalid tags and digests.
        (
            format!("/v2/library/hello/manifests/{}", "t".repeat(129)),
            400,
            "TAG_INVALID",
        ),
        (
            "/v2/library/hello/blobs/sha256:".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:{}", "z".repeat(64)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:{}", "a".repeat(63)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:{}", "a".repeat(65)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/sha256:{}", "A".repeat(64)),
            400,
            "DIGEST_INVALID",
        ),
        // Hostile registry names in ?ns=.
        (
            format!("/v2/library/hello/manifests/1?ns=..%2F..%2F{m}"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/library/hello/manifests/1?ns=../{m}"),
            404,
            "NAME_UNKNOWN",
        ),
    ]
}

#[test]
fn hostile_paths_get_4xx_oci_errors_and_touch_nothing_outside_the_cache() {
    let registry = Registry::start();
    let image = push_fixture(
        &registry,
        Fixture::single().seed("input"),
        "library/hello:1",
    );
    let ferry = Ferry::for_registry(&registry);
    let marker = format!("ferry-pwned-{}", std::process::id());
    let before = outside_cache(&ferry);

    for (path, status, code) in hostile_paths(&marker) {
        for method in ["GET", "HEAD"] {
            let r = raw_request(&ferry.host(), method, &path, &[], &[])
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            if method == "HEAD" {
                assert_eq!(r.status, status, "HEAD {path}");
            } else {
                expect_raw_error(&r, status, code, &format!("GET {path}"));
            }
        }
    }

    // ferry still works, and nothing of the above reached the upstream or the disk.
    let ok = raw_request(
        &ferry.host(),
        "GET",
        "/v2/library/hello/manifests/1",
        &[("Accept", ACCEPT_MANIFESTS)],
        &[],
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(sha256_digest(&ok.body), image.digest);
    let upstream: Vec<String> = ferry_requests(&registry)
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        upstream,
        ["/v2/library/hello/manifests/1"],
        "only the valid request may reach the upstream"
    );
    assert_eq!(
        outside_cache(&ferry),
        before,
        "files appeared outside the cache root"
    );
    let cache = files_under(ferry.data_dir());
    assert!(
        !cache
            .iter()
            .any(|f| f.contains("pwned") || f.contains("..")),
        "{cache:?}"
    );
    for dir in [
        ferry.dir().to_owned(),
        ferry.dir().parent().unwrap().to_owned(),
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
        PathBuf::from("/"),
    ] {
        assert_eq!(
            marked(&dir, &marker),
            Vec::<String>::new(),
            "in {}",
            dir.display()
        );
    }
}

#[test]
fn absurd_headers_get_4xx_answers_and_ferry_keeps_serving() {
    let registry = Registry::start();
    let image = push_fixture(
        &registry,
        Fixture::single().seed("headers"),
        "library/hello:1",
    );
    let ferry = Ferry::for_registry(&registry);
    let path = "/v2/library/hello/manifests/1";

    // One header far beyond server.max_header_bytes (64 KiB by default), in any header.
    let huge = "x".repeat(200 * 1024);
    for name in ["X-Huge", "Accept", "Authorization", "Cookie"] {
        let r = raw_request(&ferry.host(), "GET", path, &[(name, &huge)], &[])
            .expect("ferry answers an oversized head instead of dropping the connection");
        assert_eq!(r.status, 431, "{name}: {}", r.text());
    }

    // Thousands of small headers.
    let names: Vec<String> = (0..2000).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let r = raw_request(&ferry.host(), "GET", path, &many, &[]).expect("an answer");
    assert!(
        (400..500).contains(&r.status),
        "{} headers: {} {}",
        many.len(),
        r.status,
        r.text()
    );

    // A request line of 100 KiB.
    let long = format!("/v2/library/hello/manifests/{}", "a".repeat(100 * 1024));
    let r = raw_request(&ferry.host(), "GET", &long, &[], &[]).expect("an answer");
    assert!((400..500).contains(&r.status), "long path: {}", r.status);

    // Just under the limit is fine.
    let big_but_ok = "y".repeat(32 * 1024);
    let r = raw_request(
        &ferry.host(),
        "GET",
        path,
        &[("Accept", ACCEPT_MANIFESTS), ("X-Big", &big_but_ok)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "a 32 KiB header is within max_header_bytes");

    // Still serving.
    std::thread::sleep(Duration::from_millis(100));
    let ok = raw_request(
        &ferry.host(),
        "GET",
        path,
        &[("Accept", ACCEPT_MANIFESTS)],
        &[],
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(sha256_digest(&ok.body), image.digest);
    assert_eq!(
        ferry_requests(&registry).len(),
        1,
        "only one valid request went upstream (the second was a cache hit)"
    );
}

#[test]
fn an_oversized_request_head_gets_an_oci_json_error() {
    let ferry = Ferry::builder().start();
    let huge = "x".repeat(200 * 1024);
    let r = raw_request(
        &ferry.host(),
        "GET",
        "/v2/library/hello/manifests/1",
        &[("X-Huge", &huge)],
        &[],
    )
    .expect("an answer");
    assert_eq!(r.status, 431);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "431 without an OCI error body: {:?}",
        r.text()
    );
    let (code, message) = oci_error(&r.body);
    assert!(!code.is_empty() && !message.is_empty());
}
