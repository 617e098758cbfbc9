//! `FaultyUpstream`: an in-process fake registry for the faults a real registry cannot produce
//! on demand.
//!
//! It serves the pull side of the distribution API (`/v2/`, manifests and blobs by GET/HEAD
//! with single ranges, tags/list with `n`/`last`) from content registered in memory, from files,
//! or generated lazily from a seed (so a 200 MB blob costs no 200 MB of RAM). It records every
//! request, and a test scripts faults with [`Rule`]s (which requests) and [`Fault`]s (what goes
//! wrong): cut connections, wrong bytes, delays, throttling, stalls released by the test,
//! 429/5xx answers, redirects to a second "CDN" listener that records whether it saw an
//! `Authorization` header. Auth can be switched to Basic or to the Bearer token flow with its
//! own `/token` endpoint. Rules and auth can change while it runs.
//!
//! Rules are checked in the order added; every matching rule that still has uses left applies
//! (so a delay and a throttle combine) and a `Status` fault answers at once. Rules are checked
//! before authentication, like a rate limiter in front of a registry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::runtime::{BackgroundRuntime, bind_loopback};
use crate::wire::{basic_credentials, percent_encode, query_pairs, random_u64, sha256_digest};

mod auth;
mod body;
mod hub;
mod pattern;
mod referrers;
mod rules;
mod serve;

pub use auth::UpstreamAuth;
use auth::{check_auth, token_endpoint};
use body::serve_content;
pub use hub::user_of;
pub use pattern::{pattern_bytes, pattern_digest, pattern_fill};
use rules::RuleState;
pub use rules::{Fault, Rule, RuleId};
use serve::{cdn_handler, registry_handler};

/// Largest body chunk sent at once.
const CHUNK: usize = 256 * 1024;
/// `service` in the fake's Bearer challenge.
pub const FAKE_SERVICE: &str = "fake";

/// One request the fake (or its CDN) received.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// Received by the CDN listener.
    pub cdn: bool,
    /// The client's address.
    pub peer: Option<std::net::IpAddr>,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Memory(Bytes),
    Pattern { seed: u64, size: u64 },
    File { path: PathBuf, size: u64 },
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::Pattern { size, .. } | Source::File { size, .. } => *size,
        }
    }
}

#[derive(Debug, Clone)]
struct Manifest {
    media_type: String,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct Repo {
    by_digest: HashMap<String, Manifest>,
    tags: BTreeMap<String, String>,
}

impl Repo {
    /// Adds a manifest, reachable by digest and, if given, by `tag` (moving the tag if it
    /// existed). Returns its digest.
    fn put(&mut self, tag: Option<&str>, media_type: &str, bytes: Bytes) -> String {
        let digest = sha256_digest(&bytes);
        let manifest = Manifest {
            media_type: media_type.to_owned(),
            bytes,
        };
        self.by_digest.insert(digest.clone(), manifest);
        if let Some(tag) = tag {
            self.tags.insert(tag.to_owned(), digest.clone());
        }
        digest
    }
}

#[derive(Debug)]
struct IssuedToken {
    expires: Instant,
    repos: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<String, Source>,
    repos: HashMap<String, Repo>,
    rules: Vec<RuleState>,
    next_rule: u64,
    requests: Vec<RequestRecord>,
    auth: UpstreamAuth,
    tokens: HashMap<String, IssuedToken>,
    tokens_issued: u64,
    pull_limit: Option<hub::PullLimit>,
    referrers_api: bool,
    /// Manifests served under every repository (after the repository's own).
    everywhere: Repo,
    /// Digests only these repositories hold (others answer 404).
    only_in: HashMap<String, Vec<String>>,
    /// Tag lists are cut into pages of this many, whatever the client asks.
    tags_page: Option<usize>,
}

impl Inner {
    /// Whether `repo` holds `digest` (see [`FaultyUpstream::hold_only_in`]).
    fn holds(&self, repo: &str, digest: &str) -> bool {
        self.only_in
            .get(digest)
            .is_none_or(|repos| repos.iter().any(|r| r == repo))
    }

    /// The manifest `reference` names in `repo`: its digest and content.
    fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Manifest)> {
        let lookup = |r: &Repo| {
            let digest = if reference.starts_with("sha256:") {
                reference.to_owned()
            } else {
                r.tags.get(reference)?.clone()
            };
            r.by_digest.get(&digest).map(|m| (digest, m.clone()))
        };
        let found = self.repos.get(repo).and_then(lookup);
        let found = found.or_else(|| lookup(&self.everywhere))?;
        let by_digest = reference.starts_with("sha256:");
        (!by_digest || self.holds(repo, &found.0)).then_some(found)
    }

    /// The blob `digest` as `repo` serves it.
    fn blob(&self, repo: &str, digest: &str) -> Option<Source> {
        let source = self.blobs.get(digest)?;
        self.holds(repo, digest).then(|| source.clone())
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    url: String,
    cdn_url: String,
    release: tokio::sync::watch::Sender<u64>,
}

/// The fake registry (see the module doc). Stops when dropped.
#[derive(Debug)]
pub struct FaultyUpstream {
    _runtime: BackgroundRuntime,
    shared: Arc<Shared>,
}

impl FaultyUpstream {
    /// Starts the registry listener and the CDN listener on fresh 127.0.0.1 ports.
    pub fn start() -> FaultyUpstream {
        FaultyUpstream::start_with_cdn_on("127.0.0.1")
    }

    /// Like [`FaultyUpstream::start`] with the CDN listener on another loopback address
    /// (`127.0.0.2`), so that it is another host by name, not only by port.
    pub fn start_with_cdn_on(ip: &str) -> FaultyUpstream {
        let runtime = BackgroundRuntime::new("faulty-upstream");
        let main = bind_loopback();
        let cdn = std::net::TcpListener::bind((ip, 0)).expect("bind the CDN listener");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            url: format!("http://{}", main.local_addr().expect("addr")),
            cdn_url: format!("http://{}", cdn.local_addr().expect("addr")),
            release: tokio::sync::watch::channel(0).0,
        });
        let router = axum::Router::new()
            .fallback(registry_handler)
            .with_state(shared.clone());
        runtime.serve_on(main, router);
        let router = axum::Router::new()
            .fallback(cdn_handler)
            .with_state(shared.clone());
        runtime.serve_on(cdn, router);
        FaultyUpstream {
            _runtime: runtime,
            shared,
        }
    }

    /// `http://127.0.0.1:<port>` of the registry listener.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// `127.0.0.1:<port>` of the registry listener.
    pub fn host(&self) -> String {
        self.shared.url.trim_start_matches("http://").to_owned()
    }

    /// `http://127.0.0.1:<port>` of the CDN listener.
    pub fn cdn_url(&self) -> String {
        self.shared.cdn_url.clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    // ---- content ----

    /// Registers a blob held in memory; returns its digest.
    pub fn add_blob(&self, data: impl Into<Bytes>) -> String {
        let data = data.into();
        let digest = sha256_digest(&data);
        self.inner()
            .blobs
            .insert(digest.clone(), Source::Memory(data));
        digest
    }

    /// Registers a blob of `size` bytes generated from `seed` on the fly (see
    /// [`pattern_bytes`]); returns its digest (computed once per process and cached).
    pub fn add_pattern_blob(&self, seed: u64, size: u64) -> String {
        let digest = pattern_digest(seed, size);
        self.inner()
            .blobs
            .insert(digest.clone(), Source::Pattern { seed, size });
        digest
    }

    /// Registers a blob served from a file whose digest the caller knows.
    pub fn add_file_blob(&self, digest: &str, path: &Path) {
        let size = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .len();
        self.inner().blobs.insert(
            digest.to_owned(),
            Source::File {
                path: path.to_owned(),
                size,
            },
        );
    }

    /// Removes a blob (later requests get 404 `BLOB_UNKNOWN`).
    pub fn remove_blob(&self, digest: &str) {
        self.inner().blobs.remove(digest);
    }

    /// Registers a manifest in `repo`, reachable by digest and, if given, by `tag` (moving the
    /// tag if it existed). Returns its digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> String {
        let mut inner = self.inner();
        let r = inner.repos.entry(repo.to_owned()).or_default();
        r.put(tag, media_type, bytes.into())
    }

    /// Builds and registers a minimal linux/amd64 OCI image over blobs already added as layers
    /// (a generated config blob is added too). Returns the manifest digest.
    pub fn add_image(&self, repo: &str, tag: &str, layers: &[String]) -> String {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers},
        });
        let config_bytes = config.to_string().into_bytes();
        let config_size = config_bytes.len();
        let config_digest = self.add_blob(config_bytes);
        let inner = self.inner();
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|d| {
                let size = inner
                    .blobs
                    .get(d)
                    .unwrap_or_else(|| panic!("add the layer blob {d} first"))
                    .size();
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d,
                    "size": size,
                })
            })
            .collect();
        drop(inner);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descs,
        });
        self.add_manifest(
            repo,
            Some(tag),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().into_bytes(),
        )
    }

    /// Registers a manifest served under every repository (by digest and, if given, by
    /// `tag`) unless the repository has its own. Returns its digest.
    pub fn add_manifest_everywhere(
        &self,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> String {
        self.inner().everywhere.put(tag, media_type, bytes.into())
    }

    /// Removes a tag served under every repository.
    pub fn remove_tag_everywhere(&self, tag: &str) {
        self.inner().everywhere.tags.remove(tag);
    }

    /// Content with this digest (a blob, or a manifest asked for by digest) is held only by
    /// these repositories; the others answer 404 (`BLOB_UNKNOWN`, `MANIFEST_UNKNOWN`).
    pub fn hold_only_in(&self, digest: &str, repos: &[&str]) {
        let repos = repos.iter().map(|r| r.to_string()).collect();
        self.inner().only_in.insert(digest.to_owned(), repos);
    }

    /// Answers tag lists in pages of at most `n` (with a `Link` to the next), whatever the
    /// client asks, like registries that cap a page.
    pub fn set_tags_page(&self, n: usize) {
        self.inner().tags_page = Some(n);
    }

    /// Points `tag` at a manifest digest already in `repo`.
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        let mut inner = self.inner();
        let r = inner.repos.entry(repo.to_owned()).or_default();
        assert!(
            r.by_digest.contains_key(digest),
            "{repo}@{digest} not registered"
        );
        r.tags.insert(tag.to_owned(), digest.to_owned());
    }

    /// Removes a tag (later requests get 404 `MANIFEST_UNKNOWN`).
    pub fn remove_tag(&self, repo: &str, tag: &str) {
        if let Some(r) = self.inner().repos.get_mut(repo) {
            r.tags.remove(tag);
        }
    }

    // ---- faults ----

    /// Adds a fault rule; it takes effect for the next request.
    pub fn add_rule(&self, rule: Rule) -> RuleId {
        let mut inner = self.inner();
        inner.next_rule += 1;
        let id = RuleId(inner.next_rule);
        inner.rules.push(RuleState { id, rule, hits: 0 });
        id
    }

    /// Removes a rule (switches its fault off).
    pub fn remove_rule(&self, id: RuleId) {
        self.inner().rules.retain(|r| r.id != id);
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.inner().rules.clear();
    }

    /// How many requests a rule has applied to.
    pub fn rule_hits(&self, id: RuleId) -> usize {
        self.inner()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.hits)
    }

    /// Lets every body currently stalled by [`Fault::StallAfter`] continue.
    pub fn release_stalls(&self) {
        self.shared.release.send_modify(|g| *g += 1);
    }

    /// Switches authentication (existing tokens stay valid until they expire).
    pub fn set_auth(&self, auth: UpstreamAuth) {
        self.inner().auth = auth;
    }

    /// Makes every issued token invalid (as if they all expired now).
    pub fn revoke_tokens(&self) {
        self.inner().tokens.clear();
    }

    // ---- observations ----

    /// Every request so far (registry and CDN listeners), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner().requests.clear();
    }

    /// Requests to the registry listener with this method and exactly this path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.inner()
            .requests
            .iter()
            .filter(|r| !r.cdn && r.method == method && r.path == path)
            .count()
    }

    /// Requests to the registry listener with this method and a path containing `part`.
    pub fn count_matching(&self, method: &str, part: &str) -> usize {
        self.inner()
            .requests
            .iter()
            .filter(|r| !r.cdn && r.method == method && r.path.contains(part))
            .count()
    }

    /// Requests to the registry listener with this method and a path ending in `suffix`.
    pub fn count_ending(&self, method: &str, suffix: &str) -> usize {
        self.inner()
            .requests
            .iter()
            .filter(|r| !r.cdn && r.method == method && r.path.ends_with(suffix))
            .count()
    }

    /// Requests to the registry listener for exactly this path, whatever the method.
    pub fn count_path(&self, path: &str) -> usize {
        self.inner()
            .requests
            .iter()
            .filter(|r| !r.cdn && r.path == path)
            .count()
    }

    /// GETs of one blob on the registry listener (any repository).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.count_matching("GET", &format!("/blobs/{digest}"))
    }

    /// Requests to the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.count_matching("GET", "/token") + self.count("POST", "/token")
    }

    /// How many tokens the endpoint issued.
    pub fn tokens_issued(&self) -> u64 {
        self.inner().tokens_issued
    }

    /// Requests the CDN listener received.
    pub fn cdn_requests(&self) -> Vec<RequestRecord> {
        self.inner()
            .requests
            .iter()
            .filter(|r| r.cdn)
            .cloned()
            .collect()
    }
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
