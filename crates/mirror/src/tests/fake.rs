//! The fake upstream of the engine tests (faults a real registry cannot produce on demand) and
//! the helpers that start a mirror in front of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_oci::Digest;
use ferry_storage::fs::FsStore;
use futures_util::StreamExt;
use http::StatusCode;

use crate::*;

#[derive(Default)]
pub(crate) struct Fake {
    pub(crate) blobs: Mutex<HashMap<String, Bytes>>,
    pub(crate) manifests: Mutex<HashMap<String, (Bytes, &'static str)>>,
    pub(crate) hits: Mutex<HashMap<(String, String), usize>>,
    /// Pause between 64 KiB chunks of blob bodies.
    pub(crate) slow: Mutex<Duration>,
    /// Cut blob bodies after this many bytes, this many times.
    pub(crate) cut: Mutex<Option<(usize, usize)>>,
    /// Serve corrupted blob bytes.
    pub(crate) corrupt: Mutex<bool>,
    /// Answer everything with this status.
    pub(crate) down: Mutex<Option<StatusCode>>,
    /// Wait this long before answering a manifest request.
    pub(crate) manifest_delay: Mutex<Duration>,
    pub(crate) ranges: AtomicUsize,
    /// Digests (blobs or manifests) that only these repositories hold; others get a 404.
    pub(crate) only_in: Mutex<HashMap<String, Vec<String>>>,
}

impl Fake {
    pub(crate) fn hits(&self, method: &str, suffix: &str) -> usize {
        let h = self.hits.lock().unwrap();
        h.iter()
            .filter(|((m, p), _)| m == method && p.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn handle(State(f): State<Arc<Fake>>, req: Request) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    *f.hits
        .lock()
        .unwrap()
        .entry((method.clone(), path.clone()))
        .or_default() += 1;
    if let Some(s) = *f.down.lock().unwrap() {
        return (s, "down").into_response();
    }
    if let Some(r) = not_in_this_repository(&f, &path) {
        return r;
    }
    if let Some((_, d)) = path.split_once("/blobs/") {
        let Some(data) = f.blobs.lock().unwrap().get(d).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
            )
                .into_response();
        };
        let from = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
        return blob_response(&f, data, from, method == "HEAD");
    }
    if let Some((_, r)) = path.split_once("/manifests/") {
        let delay = *f.manifest_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let Some((bytes, mt)) = f.manifests.lock().unwrap().get(r).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
                .into_response();
        };
        let digest = Digest::sha256_of(&bytes).to_string();
        let hdrs = [
            ("content-type", mt.to_string()),
            ("docker-content-digest", digest),
        ];
        return if method == "HEAD" {
            (hdrs, [("content-length", bytes.len().to_string())]).into_response()
        } else {
            (hdrs, bytes).into_response()
        };
    }
    StatusCode::NOT_FOUND.into_response()
}

/// A 404 for a digest that `only_in` restricts to other repositories.
fn not_in_this_repository(f: &Fake, path: &str) -> Option<Response> {
    let rest = path.strip_prefix("/v2/")?;
    let (repo, reference, code) = match rest.split_once("/blobs/") {
        Some((repo, d)) => (repo, d, "BLOB_UNKNOWN"),
        None => {
            let (repo, r) = rest.split_once("/manifests/")?;
            (repo, r, "MANIFEST_UNKNOWN")
        }
    };
    let only = f.only_in.lock().unwrap();
    let repos = only.get(reference)?;
    if repos.iter().any(|r| r == repo) {
        return None;
    }
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not in {repo}"}}]}}"#);
    Some((StatusCode::NOT_FOUND, body).into_response())
}

fn blob_response(f: &Fake, mut data: Bytes, from: Option<usize>, head: bool) -> Response {
    let total = data.len();
    if *f.corrupt.lock().unwrap() {
        let mut v = data.to_vec();
        v[0] ^= 0xff;
        data = Bytes::from(v);
    }
    let start = from.unwrap_or(0);
    if from.is_some() {
        f.ranges.fetch_add(1, Ordering::SeqCst);
    }
    let body_len = total - start;
    let (status, range_hdr) = match from {
        Some(s) => (
            StatusCode::PARTIAL_CONTENT,
            Some(format!("bytes {s}-{}/{total}", total - 1)),
        ),
        None => (StatusCode::OK, None),
    };
    let mut resp = Response::builder()
        .status(status)
        .header("content-length", body_len);
    if let Some(r) = range_hdr {
        resp = resp.header("content-range", r);
    }
    if head {
        return resp.body(Body::empty()).unwrap();
    }
    let slow = *f.slow.lock().unwrap();
    let cut_at = {
        let mut cut = f.cut.lock().unwrap();
        match cut.as_mut() {
            Some((at, times)) if *times > 0 => {
                *times -= 1;
                Some(*at)
            }
            _ => None,
        }
    };
    let chunks: Vec<Bytes> = data
        .slice(start..)
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let stream =
        futures_util::stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| async move {
            if !slow.is_zero() {
                tokio::time::sleep(slow).await;
            }
            if cut_at.is_some_and(|at| (i + 1) * 64 * 1024 > at) {
                return Err(std::io::Error::other("connection cut"));
            }
            Ok::<_, std::io::Error>(c)
        });
    resp.body(Body::from_stream(stream)).unwrap()
}

pub(crate) struct Env {
    pub(crate) fake: Arc<Fake>,
    pub(crate) mirror: Mirror,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: std::path::PathBuf,
    /// The config the engine started with (to start another over the same store).
    pub(crate) config: String,
}

pub(crate) async fn env_with(extra: &str) -> Env {
    env_with_store(extra, |root| Arc::new(FsStore::open(root).unwrap())).await
}

pub(crate) async fn env_with_store(
    extra: &str,
    store: impl FnOnce(&std::path::Path) -> Arc<dyn BlobStore>,
) -> Env {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let text = format!("upstreams:\n  docker.io:\n    url: http://127.0.0.1:{port}\n{extra}");
    let config = Config::from_yaml(&text, Vec::new()).unwrap();
    let mirror = Mirror::start(&config, store(&root), Arc::new(Metrics::new()))
        .await
        .unwrap();
    Env {
        fake,
        mirror,
        _dir: dir,
        root,
        config: text,
    }
}

pub(crate) fn add_blob(fake: &Fake, len: usize, seed: u8) -> (Digest, Bytes) {
    let data: Bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into();
    let d = Digest::sha256_of(&data);
    fake.blobs
        .lock()
        .unwrap()
        .insert(d.to_string(), data.clone());
    (d, data)
}

pub(crate) async fn read_all(a: BlobAnswer) -> std::io::Result<Vec<u8>> {
    let BlobBody::Stream(mut s) = a.body else {
        panic!("redirect")
    };
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

pub(crate) fn spool_is_empty(root: &std::path::Path) -> bool {
    ferry_storage::spool::partial_files(&root.join("_spool")).is_empty()
}

pub(crate) const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;

pub(crate) fn add_manifest(fake: &Fake, tag: &str, body: &str) -> Digest {
    let bytes = Bytes::from(body.to_owned());
    let d = Digest::sha256_of(&bytes);
    let mt = ferry_oci::manifest::OCI_MANIFEST;
    fake.manifests
        .lock()
        .unwrap()
        .insert(tag.to_owned(), (bytes.clone(), mt));
    fake.manifests
        .lock()
        .unwrap()
        .insert(d.to_string(), (bytes, mt));
    d
}
