//! The OCI pull API ferry serves (SPEC section 4): manifests and indexes in OCI and Docker media
//! types with the upstream's exact bytes and digest, HEAD, blobs with `Range`, tag lists with
//! `n`/`last` pagination and `Link`, and OCI JSON errors with the right status — including the
//! upstream's own 401 and 429 passed through.
//!
//! Every answer is compared with what the upstream (a real docker-registry) gives for the same
//! request, and with the fixture's own files.

use std::time::Duration;

use super::*;
use crate::support::clients::DEAD_UPSTREAM;

/// A registry holding one fixture of each media-type family.
struct AllKinds {
    registry: Registry,
    /// `(repo:tag, image)`.
    images: Vec<(&'static str, Image)>,
}

fn all_kinds() -> AllKinds {
    let registry = Registry::start();
    let images = vec![
        ("oci/single:1", Fixture::single().seed("api")),
        ("oci/index:1", Fixture::multi().seed("api")),
        ("docker/list:1", Fixture::docker().seed("api")),
        ("docker/single:1", Fixture::docker_single().seed("api")),
    ]
    .into_iter()
    .map(|(reference, fixture)| (reference, push_fixture(&registry, fixture, reference)))
    .collect();
    AllKinds { registry, images }
}

/// GET or HEAD `path` on `base` with every manifest type accepted.
async fn manifest_request(method: reqwest::Method, base: &str, path: &str) -> reqwest::Response {
    client()
        .request(method, format!("{base}{path}"))
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap()
}

/// The headers of a manifest answer that must be the upstream's.
fn manifest_headers(resp: &reqwest::Response) -> (u16, String, String, String) {
    let h = |n| header(resp, n).unwrap_or_default().to_owned();
    (
        resp.status().as_u16(),
        h("content-type"),
        h("docker-content-digest"),
        h("content-length"),
    )
}

#[tokio::test]
async fn manifests_keep_the_upstreams_media_type_bytes_and_digest() {
    let up = all_kinds();
    let ferry = Ferry::for_registry(&up.registry);
    let (via, direct) = (ferry.base_url(), up.registry.url());
    let mut checked = 0;
    for (reference, image) in &up.images {
        let (repo, tag) = reference.split_once(':').unwrap();
        let mut refs: Vec<(String, &str)> = vec![(tag.to_owned(), image.media_type.as_str())];
        refs.push((image.digest.clone(), image.media_type.as_str()));
        for child in &image.manifests {
            refs.push((child.digest.clone(), child.media_type.as_str()));
        }
        for (r, media_type) in refs {
            let path = format!("/v2/{repo}/manifests/{r}");
            let from_ferry = manifest_request(reqwest::Method::GET, &via, &path).await;
            let from_upstream = manifest_request(reqwest::Method::GET, &direct, &path).await;
            let head = manifest_headers(&from_ferry);
            assert_eq!(head, manifest_headers(&from_upstream), "GET {path}");
            assert_eq!(head.0, 200, "GET {path}");
            assert_eq!(head.1, media_type, "Content-Type of {path}");
            let body = from_ferry.bytes().await.unwrap();
            assert_eq!(
                body,
                from_upstream.bytes().await.unwrap(),
                "bytes of {path}"
            );
            let digest = sha256_digest(&body);
            assert_eq!(head.2, digest, "Docker-Content-Digest of {path}");
            assert_eq!(head.3, body.len().to_string());
            assert_eq!(body.as_ref(), image.manifest_bytes(&digest).as_slice());

            // HEAD: the same headers, no body.
            let head_resp = manifest_request(reqwest::Method::HEAD, &via, &path).await;
            assert_eq!(manifest_headers(&head_resp), head, "HEAD {path}");
            assert!(head_resp.bytes().await.unwrap().is_empty());
            checked += 1;
        }
    }
    assert_eq!(checked, 4 + 4 + 2 + 2, "tags, digests and index children");
    // A cold HEAD by tag (never fetched before) answers too.
    up.registry.tag("docker/list", "1", "cold");
    let cold = manifest_request(
        reqwest::Method::HEAD,
        &via,
        "/v2/docker/list/manifests/cold",
    )
    .await;
    assert_eq!(cold.status(), 200);
    assert_eq!(
        header(&cold, "docker-content-digest"),
        Some(up.images[2].1.digest.as_str())
    );
}

#[test]
fn skopeo_pulls_every_media_type_exactly_like_a_direct_pull() {
    let up = all_kinds();
    let ferry = Ferry::for_registry(&up.registry);
    for (reference, image) in &up.images {
        let via = format!("docker://{}/{reference}", ferry.host());
        assert_eq!(skopeo_inspect_raw_digest(&via), image.digest, "{reference}");
        let direct = format!("docker://{}/{reference}", up.registry.host());
        assert_same_pull(&via, &direct, image);
    }
    // A single platform of an index, as `docker pull --platform` would choose it.
    let index = &up.images[1].1;
    let arm = index.manifest_for("arm64");
    let via = pull_to_dir(
        &format!("docker://{}/oci/index:1", ferry.host()),
        &["--override-arch", "arm64", "--override-variant", "v8"],
    );
    let direct = pull_to_dir(
        &format!("docker://{}/oci/index:1", up.registry.host()),
        &["--override-arch", "arm64", "--override-variant", "v8"],
    );
    assert_eq!(via, direct);
    assert_eq!(via["manifest.json"], arm.digest);
}

#[tokio::test]
async fn blobs_answer_head_and_ranges_cold_and_cached() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::big(1).seed("ranges"), "test/ranges:1");
    let layer = image.largest_blob().clone();
    let bytes = image.blob_bytes(&layer.digest);
    let size = bytes.len() as u64;
    // Ranges follow the one download here (with the default `forward`, a range beyond the
    // download's progress would be asked upstream: core::segments tests that).
    let ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .set("cache.cold_ranges", "wait")
        .start();
    let path = format!("/v2/test/ranges/blobs/{}", layer.digest);
    let http = client();
    let range = |r: String| {
        let req = http.get(url(&ferry, &path)).header("Range", r);
        async move { req.send().await.unwrap() }
    };

    // Cold: the first request is a range; it starts the download and gets its slice.
    let resp = range("bytes=1000-1999".into()).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(
        header(&resp, "content-range"),
        Some(format!("bytes 1000-1999/{size}").as_str())
    );
    assert_eq!(header(&resp, "content-length"), Some("1000"));
    assert_eq!(resp.bytes().await.unwrap(), &bytes[1000..2000]);

    let head = http.head(url(&ferry, &path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(
        header(&head, "docker-content-digest"),
        Some(layer.digest.as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert!(head.bytes().await.unwrap().is_empty());

    let full = get(&ferry, &path).await;
    assert_eq!(full.status(), 200);
    assert_eq!(
        header(&full, "docker-content-digest"),
        Some(layer.digest.as_str())
    );
    assert_eq!(full.bytes().await.unwrap(), bytes);
    wait_until(Duration::from_secs(10), "the layer to be cached", || {
        is_cached(&ferry, &layer.digest)
    });

    // Cached: every range form.
    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=-10".into(), size - 10, size - 1),
        (format!("bytes={}-", size - 5), size - 5, size - 1),
        (format!("bytes=10-{}", size + 100), 10, size - 1),
        ("bytes=4096-8191".into(), 4096, 8191),
    ];
    for (spec, first, last) in cases {
        let resp = range(spec.clone()).await;
        assert_eq!(resp.status(), 206, "{spec}");
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "{spec}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, &bytes[first as usize..=last as usize], "{spec}");
    }

    // The same bytes over HTTP/2 cleartext (prior knowledge) on the same port: cached blobs
    // leave plain connections through sendfile, which HTTP/2 framing must not disturb.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2.get(url(&ferry, &path)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == bytes, "full blob over h2c");
    let resp = h2
        .get(url(&ferry, &path))
        .header("Range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert!(
        resp.bytes().await.unwrap() == bytes[5000..],
        "range over h2c"
    );

    // Unsatisfiable and malformed ranges: 416 with the size, as an OCI error.
    for spec in [format!("bytes={size}-"), "bytes=abc".to_owned()] {
        let resp = range(spec.clone()).await;
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{spec}"
        );
        expect_error(resp, 416, "RANGE_INVALID").await;
    }
    // The same on a cold blob (the small config blob).
    let config = image
        .blobs
        .iter()
        .find(|b| b.digest != layer.digest)
        .unwrap();
    let resp = http
        .get(url(
            &ferry,
            &format!("/v2/test/ranges/blobs/{}", config.digest),
        ))
        .header("Range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    expect_error(resp, 416, "RANGE_INVALID").await;

    assert_eq!(
        registry.count("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "ranges and HEADs are served from the one download"
    );
}

/// The tags of a tag-list answer, checking its `name`.
async fn tag_page(resp: reqwest::Response, name: &str) -> (Vec<String>, Option<String>) {
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let link = header(&resp, "link").map(str::to_owned);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["name"], name);
    let tags = json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (tags, link)
}

/// The URL path of a `Link: <path>; rel="next"` header.
fn next_path(link: &str) -> String {
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let start = link.find('<').unwrap() + 1;
    let end = link.find('>').unwrap();
    link[start..end].to_owned()
}

#[tokio::test]
async fn tag_lists_paginate_with_n_last_and_link() {
    let registry = Registry::start();
    let tags = ["v1", "v2", "v3", "latest", "beta"];
    push_tags(
        &registry,
        Fixture::single().seed("tags"),
        "org/tagged",
        &tags,
    );
    let ferry = Ferry::for_registry(&registry);
    let sorted = ["beta", "latest", "v1", "v2", "v3"];

    let (all, link) = tag_page(get(&ferry, "/v2/org/tagged/tags/list").await, "org/tagged").await;
    assert_eq!(all, sorted);
    assert_eq!(link, None, "no Link without n");

    // Walk the pages by following Link, in each routing form.
    for (first, name) in [
        ("/v2/org/tagged/tags/list?n=2", "org/tagged"),
        (
            "/v2/docker.io/org/tagged/tags/list?n=2",
            "docker.io/org/tagged",
        ),
        ("/v2/org/tagged/tags/list?n=2&ns=docker.io", "org/tagged"),
    ] {
        let mut pages = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            let (page, link) = tag_page(get(&ferry, &path).await, name).await;
            pages.push(page);
            next = link.as_deref().map(next_path);
            assert!(pages.len() <= 3, "pagination does not end: {pages:?}");
        }
        assert_eq!(
            pages,
            [vec!["beta", "latest"], vec!["v1", "v2"], vec!["v3"]],
            "{first}"
        );
    }
    let (after, _) = tag_page(
        get(&ferry, "/v2/org/tagged/tags/list?last=v1").await,
        "org/tagged",
    )
    .await;
    assert_eq!(after, ["v2", "v3"]);
    let (page, link) = tag_page(
        get(&ferry, "/v2/org/tagged/tags/list?n=1&last=latest").await,
        "org/tagged",
    )
    .await;
    assert_eq!(page, ["v1"]);
    assert_eq!(
        link.as_deref().map(next_path).as_deref(),
        Some("/v2/org/tagged/tags/list?n=1&last=v1")
    );
    let (rest, link) = tag_page(
        get(&ferry, "/v2/org/tagged/tags/list?n=10").await,
        "org/tagged",
    )
    .await;
    assert_eq!((rest.len(), link), (5, None));
    expect_error(
        get(&ferry, "/v2/org/tagged/tags/list?n=many").await,
        400,
        "UNSUPPORTED",
    )
    .await;
    expect_error(
        get(&ferry, "/v2/org/nothing/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn errors_are_oci_json_with_the_status_of_their_code() {
    let registry = Registry::start();
    let image = push_fixture(
        &registry,
        Fixture::single().seed("errors"),
        "library/hello:1",
    );
    let ferry = Ferry::for_registry(&registry);
    let zeros = format!("sha256:{}", "0".repeat(64));

    let base = get(&ferry, "/v2/").await;
    assert_eq!(base.status(), 200);
    assert_eq!(
        header(&base, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(base.text().await.unwrap(), "{}");

    let cases: Vec<(String, u16, &str)> = vec![
        // The upstream's own code is passed through (distribution says MANIFEST_UNKNOWN here).
        (
            "/v2/nobody/here/manifests/1".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/library/hello/manifests/nope".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/hello/manifests/{zeros}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/hello/blobs/{zeros}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "/v2/library/hello/blobs/sha256:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/hello/blobs/latest".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/hello/manifests/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/library/hello/blobs/md5:{}", "0".repeat(32)),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/Library/Hello/manifests/1".into(), 400, "NAME_INVALID"),
        (
            "/v2/library/hel--lo_/manifests/1".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/hello/manifests/-dash".into(),
            400,
            "TAG_INVALID",
        ),
        ("/v2/nobody/here/tags/list".into(), 404, "NAME_UNKNOWN"),
        (
            "/v2/ghcr.io/org/app/manifests/1".into(),
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/_catalog".into(), 405, "UNSUPPORTED"),
    ];
    for (path, status, code) in cases {
        let message = expect_error(get_manifest(&ferry, &path).await, status, code).await;
        assert!(!message.is_empty(), "{path}: errors explain themselves");
    }
    // HEAD errors: the status, no body.
    let head = client()
        .head(url(&ferry, &format!("/v2/library/hello/blobs/{zeros}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(head.bytes().await.unwrap().is_empty());

    // A mirror is read-only: pushes are refused as unsupported.
    let http = client();
    let push = http
        .post(url(&ferry, "/v2/library/hello/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_error(push, 405, "UNSUPPORTED").await;
    let put = http
        .put(url(&ferry, "/v2/library/hello/manifests/2"))
        .header("Content-Type", image.media_type.as_str())
        .body(image.manifest_bytes(&image.digest))
        .send()
        .await
        .unwrap();
    expect_error(put, 405, "UNSUPPORTED").await;
    assert_eq!(registry.manifest_digest("library/hello", "2"), None);
}

#[tokio::test]
async fn upstream_refusals_and_failures_are_passed_through_as_oci_errors() {
    let up = FaultyUpstream::start();
    let layer = up.add_blob(b"a layer".to_vec());
    up.add_image("org/app", "1", std::slice::from_ref(&layer));
    let http = client();

    // 401: the upstream wants credentials ferry does not have.
    up.set_auth(UpstreamAuth::basic("u", "p"));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let message = expect_error(
        get_manifest(&ferry, "/v2/org/app/manifests/1").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert!(message.contains("docker.io"), "{message}");
    expect_error(
        get(&ferry, &format!("/v2/org/app/blobs/{layer}")).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    up.set_auth(UpstreamAuth::None);

    // 403.
    up.add_rule(Rule::manifest("org/app", "denied", Fault::status(403)));
    expect_error(
        get_manifest(&ferry, "/v2/org/app/manifests/denied").await,
        403,
        "DENIED",
    )
    .await;

    // 5xx and an unreachable upstream, with nothing cached: 5xx OCI errors.
    up.add_rule(Rule::manifest("org/app", "broken", Fault::status(500)));
    let resp = get_manifest(&ferry, "/v2/org/app/manifests/broken").await;
    let status = resp.status().as_u16();
    assert!(matches!(status, 502 | 503), "{status}");
    expect_error(resp, status, "UNAVAILABLE").await;
    let dead = Ferry::builder()
        .upstream("docker.io", &format!("http://{DEAD_UPSTREAM}"))
        .start();
    expect_error(
        get_manifest(&dead, "/v2/org/app/manifests/1").await,
        503,
        "UNAVAILABLE",
    )
    .await;

    // 429: TOOMANYREQUESTS with the upstream's Retry-After.
    up.add_rule(Rule::manifest("org/app", "limited", Fault::too_many_requests(7)).times(1));
    let resp = get_manifest(&ferry, "/v2/org/app/manifests/limited").await;
    let retry_after: u64 = header(&resp, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .unwrap();
    assert!((1..=7).contains(&retry_after), "Retry-After {retry_after}");
    expect_error(resp, 429, "TOOMANYREQUESTS").await;
    assert_eq!(up.count("GET", "/v2/org/app/manifests/limited"), 1);
    // Blobs too (on another ferry: this one now rests its only account for 7 s).
    let other = Ferry::builder().upstream("docker.io", &up).start();
    up.add_rule(Rule::blob(&layer, Fault::too_many_requests(3)).times(1));
    let resp = http
        .get(url(&other, &format!("/v2/org/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert!(header(&resp, "retry-after").is_some());
    expect_error(resp, 429, "TOOMANYREQUESTS").await;
}
