//! Helpers shared by the integration tests: configs from YAML, requests, credentials.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine;
use bytes::Bytes;
use ferry_access::{Access, Denial, Grant, RequestInfo, Resource, TargetKind};
use ferry_config::access::AccessConfig;
use futures_util::StreamExt;
use http::HeaderMap;

/// The token realm used in tests.
pub const REALM: &str = "http://mirror.test/token";

/// An `access:` section from YAML.
pub fn config(yaml: &str) -> AccessConfig {
    serde_saphyr::from_str(yaml).unwrap()
}

/// An `Access` from YAML, without Redis.
pub async fn access(yaml: &str) -> Access {
    Access::new(&config(yaml), None).await.unwrap()
}

/// An htpasswd file with bcrypt (cost 4, fast) users; keep the directory alive.
pub fn htpasswd(users: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// An IP.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Headers with `Authorization: Basic`.
pub fn basic(user: &str, password: &str) -> HeaderMap {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    auth(&format!("Basic {v}"))
}

/// Headers with `Authorization: Bearer`.
pub fn bearer(token: &str) -> HeaderMap {
    auth(&format!("Bearer {token}"))
}

fn auth(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
    h
}

/// A manifest target.
pub fn manifest<'a>(upstream: &'a str, repository: &'a str) -> Option<Resource<'a>> {
    Some(Resource {
        upstream,
        repository,
        kind: TargetKind::Manifest,
        digest: None,
    })
}

/// A blob target.
pub fn blob<'a>(upstream: &'a str, repository: &'a str) -> Option<Resource<'a>> {
    Some(Resource {
        upstream,
        repository,
        kind: TargetKind::Blob,
        digest: Some("sha256:00"),
    })
}

/// Checks a request for `docker.io/library/nginx` from `from`.
pub async fn pull(a: &Access, from: &str, headers: &HeaderMap) -> Result<Grant, Denial> {
    a.check(&RequestInfo {
        ip: ip(from),
        headers,
        target: manifest("docker.io", "library/nginx"),
        realm: REALM,
    })
    .await
}

/// Fetches a token; returns the token string.
pub async fn token(
    a: &Access,
    from: &str,
    headers: &HeaderMap,
    query: &str,
) -> Result<String, Denial> {
    let body = a.token(ip(from), headers, Some(query)).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    Ok(v["token"].as_str().unwrap().to_owned())
}

/// A body of `n` chunks of `size` bytes.
pub fn body(
    n: usize,
    size: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![7u8; size]))))
}

/// Reads a metered body to the end; returns the byte count.
pub async fn drain<S, E>(s: S) -> usize
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    s.fold(0, |n, c| async move { n + c.unwrap().len() }).await
}
