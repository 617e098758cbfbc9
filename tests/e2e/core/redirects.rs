//! Redirects only where the spec allows them (SPEC sections 3 and 11, issue 12 item 5): ferry
//! follows an upstream's redirect to another host only for a blob download (to its storage or
//! CDN host), and `upstreams.<name>.redirect_hosts` can restrict those hosts too. A manifest
//! redirected to another host, or a blob redirected to a host the patterns do not allow, is a
//! 502 that names the host, and that host is never contacted. The fake upstream's CDN listens
//! on 127.0.0.2, another host by name.

use serde_json::json;

use super::*;
use crate::support::http::raw_request;

/// A fake upstream with `org/app:1` (one layer) whose CDN is on 127.0.0.2.
fn upstream_with_cdn() -> (FaultyUpstream, String, String) {
    let up = FaultyUpstream::start_with_cdn_on("127.0.0.2");
    let layer = up.add_blob(&b"a layer on the storage host"[..]);
    let manifest = up.add_image("org/app", "1", std::slice::from_ref(&layer));
    (up, layer, manifest)
}

fn get(ferry: &Ferry, path: &str) -> RawResponse {
    raw_request(
        &ferry.host(),
        "GET",
        path,
        &[("Accept", ACCEPT_MANIFESTS)],
        &[],
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `127.0.0.2:<port>` of the fake's CDN.
fn cdn_host(up: &FaultyUpstream) -> String {
    up.cdn_url().trim_start_matches("http://").to_owned()
}

#[test]
fn a_manifest_redirected_to_another_host_is_a_502_naming_it() {
    let (up, layer, manifest) = upstream_with_cdn();
    let rule = up.add_rule(Rule::manifests(Fault::RedirectToCdn));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/manifests/{manifest}"),
    ] {
        let r = get(&ferry, &path);
        let message = expect_raw_error(&r, 502, "UNAVAILABLE", &path);
        assert!(message.contains(&cdn_host(&up)), "{message}");
        assert!(message.contains("only blob downloads"), "{message}");
    }
    assert!(
        up.cdn_requests().is_empty(),
        "ferry contacted the other host"
    );

    // Without the redirect the image is served; a blob may be redirected to the CDN.
    up.remove_rule(rule);
    up.add_rule(Rule::blobs(Fault::RedirectToCdn).method("GET"));
    assert_eq!(get(&ferry, "/v2/org/app/manifests/1").status, 200);
    let r = get(&ferry, &format!("/v2/org/app/blobs/{layer}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha256_digest(&r.body), layer);
    assert_eq!(up.cdn_requests().len(), 1, "the blob came from the CDN");
}

#[test]
fn redirect_hosts_decide_where_a_blob_download_may_go() {
    let (up, layer, _) = upstream_with_cdn();
    up.add_rule(Rule::blobs(Fault::RedirectToCdn).method("GET"));
    let path = format!("/v2/org/app/blobs/{layer}");
    let with = |hosts: serde_json::Value| {
        Ferry::builder()
            .upstream_with("docker.io", &up, json!({"redirect_hosts": hosts}))
            .start()
    };

    let cloudfront_only = with(json!(["*.cloudfront.net"]));
    let r = get(&cloudfront_only, &path);
    let message = expect_raw_error(&r, 502, "UNAVAILABLE", &path);
    assert!(message.contains(&cdn_host(&up)), "{message}");
    assert!(
        message.contains("upstreams.docker.io.redirect_hosts"),
        "{message}"
    );
    assert!(
        up.cdn_requests().is_empty(),
        "ferry contacted a host not allowed"
    );
    assert!(!is_cached(&cloudfront_only, &layer));

    let this_cdn = with(json!(["*.cloudfront.net", "127.0.0.2"]));
    let r = get(&this_cdn, &path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha256_digest(&r.body), layer);
    assert_eq!(up.cdn_requests().len(), 1);
}

#[test]
fn check_config_explains_a_bad_redirect_host_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n    redirect_hosts:\n      - https://cdn.example.com/blobs\n",
    )
    .unwrap();
    let out = ferry_command()
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ferry.yaml:4: upstreams.docker.io.redirect_hosts"),
        "{stderr}"
    );
    assert!(stderr.contains("is a URL, not a host"), "{stderr}");
}
