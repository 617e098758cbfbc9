//! Source addresses against an in-process registry that sees the client's address: requests
//! alternate over the addresses, and one whose budget runs low (`ratelimit-remaining`) or that
//! gets 429 rests while the others carry on.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};

use super::*;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;

/// Client addresses seen, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// 127.0.0.2 is told it has one pull left (and is served); 127.0.0.4 gets 429.
async fn handle(
    State(seen): State<Seen>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    _req: Request,
) -> Response {
    let ip = peer.ip().to_string();
    seen.lock().unwrap().push(ip.clone());
    let ct = ("content-type", "application/vnd.oci.image.manifest.v1+json");
    match ip.as_str() {
        "127.0.0.4" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "120")],
            "slow down",
        )
            .into_response(),
        "127.0.0.2" => ([ct, ("ratelimit-remaining", "1;w=600")], MANIFEST).into_response(),
        _ => ([ct, ("ratelimit-remaining", "80;w=600")], MANIFEST).into_response(),
    }
}

async fn start() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(seen.clone());
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    (seen, format!("http://127.0.0.1:{port}"))
}

fn upstream(url: &str, addresses: &[&str], metrics: Arc<Metrics>) -> Upstream {
    let cfg = UpstreamConfig {
        url: Some(url.into()),
        source_addresses: addresses.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    Upstream::new("fake.io", &cfg, metrics).unwrap()
}

fn reference() -> (RepoName, Reference) {
    (
        RepoName::parse("org/app").unwrap(),
        Reference::parse("v1").unwrap(),
    )
}

#[tokio::test]
async fn pulls_alternate_and_a_low_budget_rests_its_address() {
    let (seen, url) = start().await;
    let metrics = Arc::new(Metrics::new());
    let up = upstream(&url, &["127.0.0.2", "127.0.0.3"], metrics.clone());
    let (repo, r) = reference();
    for _ in 0..6 {
        up.manifest(&repo, &r).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[..2],
        ["127.0.0.2", "127.0.0.3"],
        "round robin: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|a| *a == "127.0.0.2").count(),
        1,
        "127.0.0.2 rests after ratelimit-remaining: 1: {seen:?}"
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"ferry_upstream_source_resting{upstream="fake.io",address="127.0.0.2"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ferry_upstream_source_requests_total{upstream="fake.io",address="127.0.0.3",status="200"} 5"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_429_moves_the_request_to_the_next_address_at_once() {
    let (seen, url) = start().await;
    let up = upstream(&url, &["127.0.0.4", "127.0.0.3"], Arc::new(Metrics::new()));
    let (repo, r) = reference();
    for _ in 0..3 {
        up.manifest(&repo, &r).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["127.0.0.4", "127.0.0.3", "127.0.0.3", "127.0.0.3"]);
    let only_limited = upstream(&url, &["127.0.0.4"], Arc::new(Metrics::new()));
    let e = only_limited.manifest(&repo, &r).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 120),
        "{e:?}"
    );
}
