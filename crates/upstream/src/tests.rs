//! Unit tests of the request loop against an in-process fake registry (axum on 127.0.0.1).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ferry_config::{Account, Secret};

use super::*;

mod redirects;

/// What the fake saw and how it behaves.
#[derive(Default)]
struct Fake {
    hits: Mutex<HashMap<String, usize>>,
    auth_seen: Mutex<Vec<(String, Option<String>)>>,
    token_requests: AtomicUsize,
    /// Bearer mode: tokens issued per user; `None` = no auth.
    bearer: bool,
    /// Token lifetime in seconds.
    token_ttl: u64,
    /// user -> number of 429s to answer before serving.
    limit_user: Mutex<HashMap<String, usize>>,
    port: Mutex<u16>,
    /// Answer every registry request with 503.
    broken: bool,
}

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;

async fn handle(State(f): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *f.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    f.auth_seen
        .lock()
        .unwrap()
        .push((path.clone(), auth.clone()));
    let port = *f.port.lock().unwrap();
    if path == "/token" {
        f.token_requests.fetch_add(1, Ordering::SeqCst);
        let user = auth.as_deref().map(|_| "bob").unwrap_or("anon");
        let body = format!(
            r#"{{"token":"tok-{user}-{}","expires_in":{}}}"#,
            query.contains("scope"),
            f.token_ttl
        );
        return ([("content-type", "application/json")], body).into_response();
    }
    if f.broken {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    if path.starts_with("/cdn/") {
        return "blob-bytes".into_response();
    }
    if f.bearer
        && !auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer tok-"))
    {
        let ch = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:x:pull""#
        );
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", ch)],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}"#,
        )
            .into_response();
    }
    if let Some(user) = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer tok-"))
        .and_then(|s| s.split('-').next())
    {
        let mut limits = f.limit_user.lock().unwrap();
        if let Some(n) = limits.get_mut(user).filter(|n| **n > 0) {
            *n -= 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "30")],
                "slow down",
            )
                .into_response();
        }
    }
    if path.ends_with("/manifests/v1") {
        return ([("content-type", manifest::OCI_MANIFEST)], MANIFEST).into_response();
    }
    if path.contains("/blobs/") {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("http://127.0.0.1:{port}/cdn/blob"))],
        )
            .into_response();
    }
    if path.ends_with("/tags/list") {
        return if query.contains("last=b") {
            (
                [("content-type", "application/json")],
                r#"{"name":"x","tags":["c"]}"#,
            )
                .into_response()
        } else {
            let link = r#"</v2/org/app/tags/list?n=2&last=b>; rel="next""#;
            (
                [("content-type", "application/json"), ("link", link)],
                r#"{"name":"x","tags":["a","b"]}"#,
            )
                .into_response()
        };
    }
    (
        StatusCode::NOT_FOUND,
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such manifest"}]}"#,
    )
        .into_response()
}

async fn start(fake: Fake) -> (Arc<Fake>, String) {
    let fake = Arc::new(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    *fake.port.lock().unwrap() = port;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://127.0.0.1:{port}"))
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
    let (fake, url) = start(Fake {
        bearer: true,
        token_ttl: 300,
        ..Default::default()
    })
    .await;
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
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "token cached for the scope"
    );
    // A new repository needs a new scope, fetched without another 401 round trip.
    up.manifest(&repo("org/other"), &tag("v1")).await.unwrap();
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(fake.hits.lock().unwrap()["/v2/org/other/manifests/v1"], 1);
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let (fake, url) = start(Fake {
        bearer: true,
        token_ttl: 300,
        ..Default::default()
    })
    .await;
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
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        2,
        "one for warm/up, one for org/app"
    );
}

#[tokio::test]
async fn expired_tokens_are_refetched() {
    let (fake, url) = start(Fake {
        bearer: true,
        token_ttl: 1,
        ..Default::default()
    })
    .await;
    let up = upstream(&url, UpstreamConfig::default());
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.manifest(&repo("org/app"), &tag("v1")).await.unwrap();
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn credentials_go_to_the_token_service_but_not_to_the_cdn() {
    let (fake, url) = start(Fake {
        bearer: true,
        token_ttl: 300,
        ..Default::default()
    })
    .await;
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
    let seen = fake.auth_seen.lock().unwrap();
    let token_auth = seen.iter().find(|(p, _)| p == "/token").unwrap();
    assert!(
        token_auth.1.as_deref().unwrap().starts_with("Basic "),
        "credentials sent to the same-site realm"
    );
    let cdn = seen.iter().find(|(p, _)| p.starts_with("/cdn/")).unwrap();
    assert_eq!(cdn.1, None, "no Authorization header follows a redirect");
}

#[tokio::test]
async fn a_rate_limited_account_rests_and_the_next_one_serves() {
    let mut limits = HashMap::new();
    limits.insert("bob".to_string(), 1);
    let (fake, url) = start(Fake {
        bearer: true,
        token_ttl: 300,
        limit_user: Mutex::new(limits),
        ..Default::default()
    })
    .await;
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
    let hits = fake.hits.lock().unwrap()["/v2/org/app/manifests/v1"];
    assert_eq!(
        hits, 3,
        "401 challenge, 429 for the first account, success on the second"
    );
    // Only one account left unrested: a 429 on it is reported as rate limiting.
    fake.limit_user.lock().unwrap().insert("bob".into(), 5);
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
    let (mirror, mirror_url) = start(Fake {
        broken: true,
        ..Default::default()
    })
    .await;
    let (origin, origin_url) = start(Fake::default()).await;
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
        mirror.hits.lock().unwrap()["/v2/fake.io/org/app/manifests/v1"],
        1,
        "prefix is inserted"
    );
    assert_eq!(origin.hits.lock().unwrap()["/v2/org/app/manifests/v1"], 1);
}

#[tokio::test]
async fn not_found_and_unreachable_are_classified() {
    let (_fake, url) = start(Fake::default()).await;
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
    let (_fake, url) = start(Fake::default()).await;
    let up = upstream(&url, UpstreamConfig::default());
    // The fake serves MANIFEST for any `v1` path; ask by a digest it does not match.
    let wrong = Reference::Digest(Digest::sha256_of(b"something else"));
    let err = up.manifest(&repo("org/app"), &wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::NotFound { .. } | UpstreamError::Invalid { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tag_lists_follow_link_pagination() {
    let (_fake, url) = start(Fake::default()).await;
    let up = upstream(&url, UpstreamConfig::default());
    assert_eq!(
        up.tags(&repo("org/app")).await.unwrap(),
        vec!["a", "b", "c"]
    );
}

#[tokio::test]
async fn head_sizes_come_from_the_content_length_header() {
    let (_fake, url) = start(Fake::default()).await;
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
