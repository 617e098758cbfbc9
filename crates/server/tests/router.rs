//! The HTTP face in process: every route of the router and how each kind of error becomes an
//! OCI answer, with `tower::ServiceExt::oneshot` (no sockets). The one upstream points at a
//! closed loopback port, so anything that needs it fails the way an unreachable upstream does.

use std::sync::Arc;

use axum::body::Body;
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use ferry_server::{App, router};
use ferry_storage::fs::FsStore;
use http::{Method, Request, StatusCode};
use tower::ServiceExt;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

struct Harness {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

async fn harness(access: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{fs: {{root: {}}}}}\nupstreams:\n  docker.io:\n    url: http://127.0.0.1:1\n    connect_timeout: 1s\naccess: {access}\n",
        dir.path().join("cache").display()
    );
    let config = ferry_config::Config::from_yaml(&yaml, Vec::new()).unwrap();
    let store = Arc::new(FsStore::open(dir.path().join("cache")).unwrap());
    let metrics = Arc::new(Metrics::new());
    let mirror = Mirror::start(&config, store, metrics.clone())
        .await
        .unwrap();
    let access = ferry_access::Access::new(&config.access, None)
        .await
        .unwrap();
    let app = Arc::new(App {
        mirror,
        access,
        metrics,
        external_url: None,
        tls: false,
        max_header_bytes: 4096,
        console: Arc::new(ferry_server::console::Console::new(
            &config,
            Default::default(),
        )),
    });
    Harness {
        app: router(app),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    /// The OCI error code of the body.
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn send(h: &Harness, req: Request<Body>) -> Answer {
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "mirror.test")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn health_readiness_metrics_and_the_base_endpoint() {
    let h = harness("{}").await;
    let r = send(&h, get("/healthz")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok\n"));
    let r = send(&h, get("/readyz")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ready\n"));
    let r = send(&h, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("\nferry_inflight_fills 0\n"), "{}", r.body);
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    let r = send(&h, get("/v2/")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "{}"));
    assert_eq!(r.headers["docker-distribution-api-version"], "registry/2.0");
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn paths_and_methods_outside_the_pull_api() {
    let h = harness("{}").await;
    let r = send(&h, get("/nope")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let r = send(&h, get("/v2/_catalog")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
    );
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/v2/library/x/manifests/1")
        .header("host", "m")
        .body(Body::empty())
        .unwrap();
    let r = send(&h, put).await;
    assert_eq!(r.code(), "UNSUPPORTED");
    assert!(r.body.contains("read-only mirror"), "{}", r.body);
    let post = Request::builder()
        .method(Method::POST)
        .uri("/v2/library/x/blobs/uploads/")
        .header("host", "m")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&h, post).await.code(), "UNSUPPORTED");
}

#[tokio::test]
async fn malformed_names_digests_tags_and_queries() {
    let h = harness("{}").await;
    let cases = [
        (
            "/v2/Library/X/manifests/1",
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            "/v2/library/x/blobs/sha256:zz",
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/x/manifests/-bad-",
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
        ),
        (
            "/v2/quay.io/x/y/manifests/1?ns=nowhere.example",
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/library/x/tags/list?n=abc",
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
        ),
    ];
    for (path, status, code) in cases {
        let r = send(&h, get(path)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{path}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable_and_names_no_address() {
    let h = harness("{}").await;
    for path in [
        "/v2/library/x/manifests/1".to_owned(),
        format!("/v2/library/x/blobs/{DIGEST}"),
        "/v2/library/x/tags/list".to_owned(),
    ] {
        let r = send(&h, get(&path)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.code(), "UNAVAILABLE");
        assert!(!r.body.contains("127.0.0.1:1"), "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn request_heads_and_host_headers() {
    let h = harness("{}").await;
    let big = Request::builder()
        .uri("/v2/")
        .header("host", "m")
        .header("x-filler", "a".repeat(8000))
        .body(Body::empty())
        .unwrap();
    let r = send(&h, big).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "UNSUPPORTED")
    );
    let no_host = Request::builder().uri("/v2/").body(Body::empty()).unwrap();
    let r = send(&h, no_host).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("exactly one Host header"), "{}", r.body);
}

#[tokio::test]
async fn logins_challenge_refuse_and_issue_tokens() {
    let h = harness("{users: {alice: {password: wonderland-1}}, anonymous: false}").await;
    let r = send(&h, get("/v2/")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"http://mirror.test/token\""),
        "{:?}",
        r.headers
    );
    let wrong = Request::builder()
        .uri("/token?service=ferry")
        .header("host", "m")
        .header("authorization", "Basic YWxpY2U6bm9wZQ==") // alice:nope
        .body(Body::empty())
        .unwrap();
    let r = send(&h, wrong).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"ferry\"");
    let right = Request::builder()
        .uri("/token?service=ferry")
        .header("host", "m")
        .header("authorization", "Basic YWxpY2U6d29uZGVybGFuZC0x") // alice:wonderland-1
        .body(Body::empty())
        .unwrap();
    let r = send(&h, right).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
}
