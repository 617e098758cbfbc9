//! Content is served only where it belongs (SPEC section 11, issue 12 item 4): a cached blob or
//! manifest is answered under an upstream and repository only when ferry knows that repository
//! holds it — fetched through it, named by one of its manifests, or confirmed by an upstream
//! `HEAD` in it (then remembered, across restarts). Anything else is the OCI 404 the upstream
//! itself would give, never the cached bytes: not under another repository of a private
//! upstream, not under a repository the access lists allow when the content came from one
//! they deny, and not under another upstream's name.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::support::http::raw_request;

/// A blocking request to ferry (manifest `Accept` header included).
fn request(ferry: &Ferry, method: &str, path: &str, extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![("Accept", ACCEPT_MANIFESTS)];
    headers.extend_from_slice(extra);
    raw_request(&ferry.host(), method, path, &headers, &[])
        .unwrap_or_else(|e| panic!("{method} {path} on ferry: {e}"))
}

/// Every way to ask for `image`'s content by digest under `name` is a 404 with the OCI code
/// (GET, HEAD, a Range; blobs and manifests), and no byte of it comes back.
fn assert_not_served(ferry: &Ferry, name: &str, image: &Image) {
    for blob in &image.blobs {
        let path = format!("/v2/{name}/blobs/{}", blob.digest);
        for (method, extra) in [
            ("GET", &[][..]),
            ("HEAD", &[][..]),
            ("GET", &[("Range", "bytes=0-0")][..]),
        ] {
            let r = request(ferry, method, &path, extra);
            assert_eq!(r.status, 404, "{method} {path} {extra:?}: {}", r.text());
            if method == "GET" {
                expect_raw_error(&r, 404, "BLOB_UNKNOWN", &path);
            }
        }
    }
    let path = format!("/v2/{name}/manifests/{}", image.digest);
    expect_raw_error(
        &request(ferry, "GET", &path, &[]),
        404,
        "MANIFEST_UNKNOWN",
        &path,
    );
    assert_eq!(
        request(ferry, "HEAD", &path, &[]).status,
        404,
        "HEAD {path}"
    );
}

/// The blobs and the manifest of `image` are served under `name` with the right bytes.
fn assert_served(ferry: &Ferry, name: &str, image: &Image) {
    for blob in &image.blobs {
        let path = format!("/v2/{name}/blobs/{}", blob.digest);
        let r = request(ferry, "GET", &path, &[]);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(sha256_digest(&r.body), blob.digest, "bytes of {path}");
    }
    let path = format!("/v2/{name}/manifests/{}", image.digest);
    let r = request(ferry, "GET", &path, &[]);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert_eq!(sha256_digest(&r.body), image.digest);
}

/// Requests ferry sent upstream whose path contains `part`.
fn upstream_count(registry: &Registry, method: &str, part: &str) -> usize {
    ferry_requests(registry)
        .iter()
        .filter(|e| e.method == method && e.path.contains(part))
        .count()
}

#[test]
fn private_content_is_not_served_under_another_repository_or_upstream() {
    let private = Registry::with_basic_auth(&[("alice", "s3cret")]);
    let image = push_fixture(&private, Fixture::single().seed("private"), "private/app:1");
    let public = Registry::start();
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &private,
            json!({"username": "alice", "password": "s3cret"}),
        )
        .upstream("ghcr.io", &public)
        .start();
    // The legitimate pull caches every blob and the manifest.
    let pulled = pull_to_dir(&format!("docker://{}/private/app:1", ferry.host()), &[]);
    assert_eq!(pulled["manifest.json"], image.digest);
    for blob in &image.blobs {
        assert!(is_cached(&ferry, &blob.digest), "{} cached", blob.digest);
    }

    // Another repository of the same (private) upstream, and another upstream's name.
    assert_not_served(&ferry, "private/other", &image);
    assert_not_served(&ferry, "docker.io/someone/else", &image);
    assert_not_served(&ferry, "ghcr.io/never/existed", &image);
    // The private upstream was asked (HEAD, with ferry's credentials) and said no; nothing was
    // downloaded for those names.
    assert!(upstream_count(&private, "HEAD", "/v2/private/other/") > 0);
    assert_eq!(upstream_count(&private, "GET", "/v2/private/other/"), 0);
    assert_eq!(upstream_count(&public, "GET", "/blobs/"), 0);
    // Where it belongs, it is still served, from the cache.
    let gets = upstream_count(&private, "GET", "/blobs/");
    assert_served(&ferry, "private/app", &image);
    assert_eq!(upstream_count(&private, "GET", "/blobs/"), gets);
}

/// Waits until ferry logged one more successful reload after a SIGHUP.
fn reload(ferry: &mut Ferry) {
    let count = |f: &Ferry| f.log().matches("configuration reloaded").count();
    let before = count(ferry);
    ferry.sighup();
    wait_until(Duration::from_secs(10), "ferry to reload", || {
        count(ferry) > before
    });
}

#[test]
fn a_denied_repositorys_content_is_not_served_under_an_allowed_name() {
    let registry = Registry::start();
    let secret = push_fixture(
        &registry,
        Fixture::single().seed("secret"),
        "library/secret-tool:1",
    );
    let hello = push_fixture(
        &registry,
        Fixture::single().seed("hello"),
        "library/hello:1",
    );
    let mut ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .set("access", json!({"allow": ["docker.io/library/*"]}))
        .start();
    // Cached while it was allowed; then the operator denies it.
    pull_to_dir(
        &format!("docker://{}/library/secret-tool:1", ferry.host()),
        &[],
    );
    pull_to_dir(&format!("docker://{}/library/hello:1", ferry.host()), &[]);
    ferry.update_config(|b| {
        b.set(
            "access",
            json!({
                "allow": ["docker.io/library/*"],
                "deny": [{"pattern": "docker.io/library/secret-*", "reason": "internal"}],
            }),
        )
    });
    reload(&mut ferry);
    let path = format!("/v2/library/secret-tool/manifests/{}", secret.digest);
    expect_raw_error(&request(&ferry, "GET", &path, &[]), 403, "DENIED", &path);

    // library/hello is allowed, but does not hold the secret digests: 404, not the content.
    assert_not_served(&ferry, "library/hello", &secret);
    assert_not_served(&ferry, "hello", &secret);
    assert_served(&ferry, "library/hello", &hello);
}

#[test]
fn a_repository_holding_the_blob_upstream_is_confirmed_once_and_remembered_across_restarts() {
    let mut registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single().seed("shared"), "team/a:1");
    push_image(&registry, &image, "team/b:1");
    push_image(&registry, &image, "team/c:1");
    let mut ferry = Ferry::for_registry(&registry);
    pull_to_dir(&format!("docker://{}/team/a:1", ferry.host()), &[]);
    let blob_gets = upstream_count(&registry, "GET", "/blobs/");
    assert_eq!(blob_gets, image.blobs.len());

    // team/b never went through ferry, but really has the blobs: one HEAD each confirms it,
    // the bytes come from the cache, and the next request asks nobody.
    assert_served(&ferry, "team/b", &image);
    for blob in &image.blobs {
        let path = format!("/v2/team/b/blobs/{}", blob.digest);
        assert_eq!(ferry_count(&registry, "HEAD", &path), 1, "HEAD {path}");
        assert_eq!(ferry_count(&registry, "GET", &path), 0, "GET {path}");
    }
    let path = format!("/v2/team/b/manifests/{}", image.digest);
    assert_eq!(ferry_count(&registry, "HEAD", &path), 1);
    assert_eq!(ferry_count(&registry, "GET", &path), 0);
    let before = ferry_requests(&registry).len();
    assert_served(&ferry, "team/b", &image);
    assert_eq!(
        ferry_requests(&registry).len(),
        before,
        "known now: no upstream request"
    );

    // The memberships are in the store: after a restart, with the upstream down, team/a and
    // team/b are served from the cache; team/c, never confirmed, is refused (not leaked).
    ferry.restart();
    registry.stop();
    assert_served(&ferry, "team/a", &image);
    assert_served(&ferry, "team/b", &image);
    let blob = &image.blobs[0].digest;
    let path = format!("/v2/team/c/blobs/{blob}");
    let r = request(&ferry, "GET", &path, &[]);
    assert_eq!(r.status, 503, "GET {path}: {}", r.text());
    assert_ne!(sha256_digest(&r.body), *blob);
    expect_raw_error(&r, 503, "UNAVAILABLE", &path);
}
