//! Redirects against two fake servers: a registry on 127.0.0.1 that redirects, and a "foreign"
//! host on 127.0.0.2 that counts what reaches it. Only blob downloads may go there, and only
//! to hosts `redirect_hosts` allows.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::*;

const BLOB: &[u8] = b"bytes from the storage host";

struct Hosts {
    registry: String,
    foreign: String,
}

async fn registry(State(h): State<Arc<Hosts>>, req: Request) -> Response {
    let path = req.uri().path();
    let to = |url: String| (StatusCode::TEMPORARY_REDIRECT, [("location", url)]).into_response();
    if path.ends_with("/manifests/real") {
        return ([("content-type", manifest::OCI_MANIFEST)], MANIFEST).into_response();
    }
    if path.ends_with("/manifests/moved") {
        return to(format!("{}/v2/org/app/manifests/real", h.registry));
    }
    to(format!("{}/elsewhere{path}", h.foreign))
}

async fn foreign(State(hits): State<Arc<AtomicUsize>>, req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let body = if req.method() == Method::HEAD {
        axum::body::Body::empty()
    } else {
        axum::body::Body::from(BLOB)
    };
    Response::builder()
        .header("content-length", BLOB.len())
        .body(body)
        .unwrap()
}

/// Starts both servers; returns the registry URL and the foreign host's hit counter.
async fn start_pair() -> (String, String, Arc<AtomicUsize>) {
    let reg = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let far = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let hosts = Arc::new(Hosts {
        registry: format!("http://{}", reg.local_addr().unwrap()),
        foreign: format!("http://{}", far.local_addr().unwrap()),
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .fallback(registry)
        .with_state(hosts.clone());
    tokio::spawn(async move { axum::serve(reg, app).await.unwrap() });
    let app = axum::Router::new()
        .fallback(foreign)
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(far, app).await.unwrap() });
    let foreign_host = hosts.foreign.trim_start_matches("http://").to_owned();
    (hosts.registry.clone(), foreign_host, hits)
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
    let (url, foreign_host, hits) = start_pair().await;
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
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the foreign host was never contacted"
    );

    // A redirect on the registry's own host is followed.
    let m = up.manifest(&app, &tag("moved")).await.unwrap();
    assert_eq!(m.bytes.as_ref(), MANIFEST);

    // A blob download may go to the storage host.
    assert_eq!(body(up.blob(&app, &d, 0).await.unwrap()).await, BLOB);
    assert_eq!(
        up.blob_head(&app, &d).await.unwrap(),
        Some(BLOB.len() as u64)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn redirect_hosts_restrict_where_blob_downloads_go() {
    let (url, foreign_host, hits) = start_pair().await;
    let app = repo("org/app");
    let d = Digest::sha256_of(BLOB);
    let restricted = |hosts: &[&str]| UpstreamConfig {
        redirect_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    };

    let allowed = upstream(&url, restricted(&["*.cloudfront.net", "127.0.0.2"]));
    assert_eq!(body(allowed.blob(&app, &d, 0).await.unwrap()).await, BLOB);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let refused = upstream(&url, restricted(&["*.cloudfront.net"]));
    let err = refused.blob(&app, &d, 0).await.err().unwrap();
    assert_refused(err, &foreign_host, "upstreams.fake.io.redirect_hosts");
    let err = refused.blob_head(&app, &d).await.unwrap_err();
    assert_refused(err, &foreign_host, "redirect_hosts");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no request to a host not allowed"
    );
}
