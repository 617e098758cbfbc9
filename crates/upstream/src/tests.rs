//! Unit tests of the request loop against the test kit's fake registry
//! ([`ferry_testkit::registry::FaultyUpstream`], on 127.0.0.1).

use ferry_config::{Account, Secret};
use ferry_testkit::registry::{Fault, FaultyUpstream, Rule, UpstreamAuth};

use super::*;

mod redirects;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;

/// A fake that serves [`MANIFEST`] as `v1` in every repository, with `auth`.
fn start(auth: UpstreamAuth) -> (FaultyUpstream, String) {
    let fake = FaultyUpstream::start();
    fake.set_auth(auth);
    fake.add_manifest_everywhere(Some("v1"), manifest::OCI_MANIFEST, MANIFEST);
    let url = fake.url();
    (fake, url)
}

fn upstream(url: &str, cfg: UpstreamConfig) -> Upstream {
    let cfg = UpstreamConfig {
        url: Some(url.into()),
        ..cfg
    };
    Upstream::new("fake.io", &cfg, Arc::new(Metrics::new())).unwrap()
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn tag(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[tokio::test]
async fn bearer_flow_fetches_one_token_and_reuses_it() {
    let (fake, url) = start(UpstreamAuth::bearer(300));
    let up = upstream(&url, UpstreamConfig::default());
    let m = up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    assert_eq!(m.bytes.as_ref(), MANIFEST);
    assert_eq!(m.digest, Digest::sha256_of(MANIFEST));
    assert_eq!(m.media_type, manifest::OCI_MANIFEST);
    for _ in 0..5 {
        up.manifest_head(&repo("org/app"), &tag("v1"))
            .await
            .unwrap();
    }
    assert_eq!(fake.token_requests(), 1, "token cached for the scope");
    // A new repository needs a new scope, fetched without another 401 round trip.
    up.manifest(&repo("org/other"), &tag("v1")).await.unwrap();
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.count_path("/v2/org/other/manifests/v1"), 1);
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let (fake, url) = start(UpstreamAuth::bearer(300));
    let up = Arc::new(upstream(&url, UpstreamConfig::default()));
    up.manifest_head(&repo("warm/up"), &tag("v1"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let up = up.clone();
            tokio::spawn(async move { up.manifest(&repo("org/app"), &tag("v1")).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.token_requests(), 2, "one for warm/up, one for org/app");
}

#[tokio::test]
async fn expired_tokens_are_refetched() {
    let (fake, url) = start(UpstreamAuth::bearer(1));
    let up = upstream(&url, UpstreamConfig::default());
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn credentials_go_to_the_token_service_but_not_to_the_cdn() {
    let (fake, url) = start(UpstreamAuth::bearer_with_credentials(300, "bob", "pw"));
    let blob = fake.add_blob(&b"blob-bytes"[..]);
    // The registry sends blob downloads to a storage path on its own host.
    let storage = Fault::RedirectTo(format!("/cdn/blobs/{blob}"));
    fake.add_rule(Rule::blobs(storage).method("GET"));
    let cfg = UpstreamConfig {
        username: Some("bob".into()),
        password: Some(Secret("pw".into())),
        ..Default::default()
    };
    let up = upstream(&url, cfg);
    let d = Digest::sha256_of(b"blob-bytes");
    let mut dl = up.blob(&repo("org/app"), &d, 0).await.unwrap();
    let mut body = Vec::new();
    while let Some(c) = dl.stream.next().await {
        body.extend_from_slice(&c.unwrap());
    }
    assert_eq!(body, b"blob-bytes");
    let seen = fake.requests();
    let token_auth = seen.iter().find(|r| r.path == "/token").unwrap();
    assert!(
        token_auth
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic "),
        "credentials sent to the same-site realm"
    );
    let cdn = seen.iter().find(|r| r.path.starts_with("/cdn/")).unwrap();
    assert_eq!(
        cdn.authorization, None,
        "no Authorization header follows a redirect"
    );
}

#[tokio::test]
async fn a_rate_limited_account_rests_and_the_next_one_serves() {
    let (fake, url) = start(UpstreamAuth::bearer(300));
    let v1 = "/v2/org/app/manifests/v1";
    // A limit per account: the anonymous challenge comes first, then one 429.
    let limited = |times| {
        Rule::path(v1, Fault::too_many_requests(30))
            .authorized()
            .times(times)
    };
    fake.add_rule(limited(1));
    let cfg = UpstreamConfig {
        accounts: vec![
            Account {
                username: "bob".into(),
                password: Secret("1".into()),
            },
            Account {
                username: "bob".into(),
                password: Secret("2".into()),
            },
        ],
        ..Default::default()
    };
    let up = upstream(&url, cfg);
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    let hits = fake.count_path(v1);
    assert_eq!(
        hits, 3,
        "401 challenge, 429 for the first account, success on the second"
    );
    // Only one account left unrested: a 429 on it is reported as rate limiting.
    fake.add_rule(limited(5));
    let err = up.manifest(&repo("org/app"), &tag("v1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn mirrors_are_tried_first_and_fall_back() {
    let (mirror, mirror_url) = start(UpstreamAuth::None);
    mirror.add_rule(Rule::any(Fault::status(503)));
    let (origin, origin_url) = start(UpstreamAuth::None);
    let cfg = UpstreamConfig {
        mirrors: vec![
            "http://127.0.0.1:1/dead".into(),
            format!("{mirror_url}/fake.io"),
        ],
        ..Default::default()
    };
    let up = upstream(&origin_url, cfg);
    // A dead mirror, then a failing one (503) -> the origin answers.
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    assert_eq!(
        mirror.count_path("/v2/fake.io/org/app/manifests/v1"),
        1,
        "prefix is inserted"
    );
    assert_eq!(origin.count_path("/v2/org/app/manifests/v1"), 1);
}

#[tokio::test]
async fn not_found_and_unreachable_are_classified() {
    let (_fake, url) = start(UpstreamAuth::None);
    let up = upstream(&url, UpstreamConfig::default());
    let err = up
        .manifest(&repo("org/app"), &tag("nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::NotFound {
                code: ferry_oci::ErrorCode::ManifestUnknown,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let dead = upstream("http://127.0.0.1:1", UpstreamConfig::default());
    let err = dead
        .manifest(&repo("org/app"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn digest_references_are_verified() {
    let (_fake, url) = start(UpstreamAuth::None);
    let up = upstream(&url, UpstreamConfig::default());
    // The fake serves MANIFEST as `v1`; ask by a digest it does not match.
    let wrong = Reference::Digest(Digest::sha256_of(b"something else"));
    let err = up.manifest(&repo("org/app"), &wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::NotFound { .. } | UpstreamError::DigestMismatch { .. }
        ),
        "{err:?}"
    );
}

/// Bytes that do not hash to the digest asked for are a typed `DigestMismatch`, not a
/// message to search (issue 13).
#[tokio::test]
async fn a_manifest_with_wrong_bytes_is_a_digest_mismatch() {
    let (fake, url) = start(UpstreamAuth::None);
    let up = upstream(&url, UpstreamConfig::default());
    let right = Reference::Digest(Digest::sha256_of(MANIFEST));
    fake.add_rule(Rule::manifests(Fault::WrongBytes));
    let err = up.manifest(&repo("org/app"), &right).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "digest_mismatch");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn tag_lists_follow_link_pagination() {
    let (fake, url) = start(UpstreamAuth::None);
    for t in ["a", "b", "c"] {
        fake.add_manifest("org/app", Some(t), manifest::OCI_MANIFEST, MANIFEST);
    }
    fake.set_tags_page(2);
    let up = upstream(&url, UpstreamConfig::default());
    assert_eq!(
        up.tags(&repo("org/app")).await.unwrap(),
        vec!["a", "b", "c"]
    );
}

#[tokio::test]
async fn head_sizes_come_from_the_content_length_header() {
    let (_fake, url) = start(UpstreamAuth::None);
    let up = upstream(&url, UpstreamConfig::default());
    let h = up
        .manifest_head(&repo("org/app"), &tag("v1"))
        .await
        .unwrap();
    assert_eq!(
        h.size,
        Some(MANIFEST.len() as u64),
        "a HEAD has no body to measure"
    );
}
