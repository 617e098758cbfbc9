//! Redirects against the test kit's fake registry on 127.0.0.1 with its "CDN" listener on
//! 127.0.0.2 (another host by name), which counts what reaches it. Only blob downloads may go
//! there, and only to hosts `redirect_hosts` allows.

use ferry_testkit::registry::{Fault, FaultyUpstream, Rule};

use super::*;

const BLOB: &[u8] = b"bytes from the storage host";

/// A registry that redirects everything of `org/app` to the other host but the manifest
/// `moved` (to `real`, on its own host); returns it and the other host's `host:port`.
fn start_pair() -> (FaultyUpstream, String) {
    let fake = FaultyUpstream::start_with_cdn_on("127.0.0.2");
    fake.add_blob(BLOB);
    fake.add_manifest("org/app", Some("real"), manifest::OCI_MANIFEST, MANIFEST);
    let moved = Fault::RedirectTo("/v2/org/app/manifests/real".into());
    fake.add_rule(Rule::manifest("org/app", "moved", moved));
    let away = || Fault::RedirectToCdnPath;
    fake.add_rule(Rule::manifest("org/app", "v1", away()));
    fake.add_rule(Rule::path("/v2/org/app/tags/list", away()));
    fake.add_rule(Rule::path_contains("/org/app/referrers/", away()));
    fake.add_rule(Rule::blobs(away()));
    let foreign_host = fake.cdn_url().trim_start_matches("http://").to_owned();
    (fake, foreign_host)
}

#[track_caller]
fn assert_refused(err: UpstreamError, host: &str, why: &str) {
    let UpstreamError::Invalid { message, .. } = &err else {
        panic!("expected a refused redirect, got {err:?}");
    };
    assert!(message.contains(host), "{message}");
    assert!(message.contains(why), "{message}");
}

async fn body(mut dl: BlobDownload) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = dl.stream.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn only_blob_downloads_follow_a_redirect_to_another_host() {
    let (fake, foreign_host) = start_pair();
    let url = fake.url();
    let hits = || fake.cdn_requests().len();
    let up = upstream(&url, UpstreamConfig::default());
    let app = repo("org/app");
    let d = Digest::sha256_of(BLOB);
    let only_blobs = "only blob downloads";

    let err = up.manifest(&app, &tag("v1")).await.unwrap_err();
    assert_refused(err, &foreign_host, only_blobs);
    let err = up.manifest_head(&app, &tag("v1")).await.unwrap_err();
    assert_refused(err, &foreign_host, only_blobs);
    let err = up.tags(&app).await.unwrap_err();
    assert_refused(err, &foreign_host, only_blobs);
    let err = up.referrers(&app, &d, None).await.unwrap_err();
    assert_refused(err, &foreign_host, only_blobs);
    assert_eq!(hits(), 0, "the foreign host was never contacted");

    // A redirect on the registry's own host is followed.
    let m = up.manifest(&app, &tag("moved")).await.unwrap();
    assert_eq!(m.bytes.as_ref(), MANIFEST);

    // A blob download may go to the storage host.
    assert_eq!(body(up.blob(&app, &d, 0).await.unwrap()).await, BLOB);
    assert_eq!(
        up.blob_head(&app, &d).await.unwrap(),
        Some(BLOB.len() as u64)
    );
    assert_eq!(hits(), 2);
}

#[tokio::test]
async fn redirect_hosts_restrict_where_blob_downloads_go() {
    let (fake, foreign_host) = start_pair();
    let url = fake.url();
    let hits = || fake.cdn_requests().len();
    let app = repo("org/app");
    let d = Digest::sha256_of(BLOB);
    let restricted = |hosts: &[&str]| UpstreamConfig {
        redirect_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    };

    let allowed = upstream(&url, restricted(&["*.cloudfront.net", "127.0.0.2"]));
    assert_eq!(body(allowed.blob(&app, &d, 0).await.unwrap()).await, BLOB);
    assert_eq!(hits(), 1);

    let refused = upstream(&url, restricted(&["*.cloudfront.net"]));
    let err = refused.blob(&app, &d, 0).await.err().unwrap();
    assert_refused(err, &foreign_host, "upstreams.fake.io.redirect_hosts");
    let err = refused.blob_head(&app, &d).await.unwrap_err();
    assert_refused(err, &foreign_host, "redirect_hosts");
    assert_eq!(hits(), 1, "no request to a host not allowed");
}
