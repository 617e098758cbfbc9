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

use super::digest::sha256_digest;
use super::fixtures::Image;
use super::http::{percent_encode, query_pairs};
use super::runtime::{BackgroundRuntime, bind_loopback};
use super::token::basic_credentials;

mod hub;
mod referrers;

pub use hub::user_of;

/// Largest body chunk sent at once.
const CHUNK: usize = 256 * 1024;
/// `service` in the fake's Bearer challenge.
pub const FAKE_SERVICE: &str = "fake";

/// What goes wrong with a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status at once with an OCI error body (`TOOMANYREQUESTS` for 429), and a
    /// `Retry-After` header if given.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// Send the headers (full `Content-Length`) and this many body bytes, then drop the
    /// connection.
    CutAfter(u64),
    /// Send the right length with the first byte flipped: a digest mismatch.
    WrongBytes,
    /// Wait this long before answering at all.
    DelayHeaders(Duration),
    /// Send the headers, then wait this long before the first body byte.
    DelayBody(Duration),
    /// Send the body at this many bytes per second.
    Throttle(u64),
    /// Send this many body bytes, then wait until [`FaultyUpstream::release_stalls`].
    StallAfter(u64),
    /// Answer a blob GET with 307 to the CDN listener (which serves the bytes); a manifest
    /// GET or HEAD with 307 to a manifest path on the CDN listener (which has none).
    RedirectToCdn,
    /// Answer the whole content with 200, whatever `Range` asked for.
    IgnoreRange,
}

impl Fault {
    /// `Status` without `Retry-After`.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn too_many_requests(retry_after: u64) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: Some(retry_after),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Any,
    Exact(String),
    Contains(String),
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    matcher: PathMatch,
    fault: Fault,
    times: Option<usize>,
    on_cdn: bool,
    peer: Option<std::net::IpAddr>,
}

impl Rule {
    fn new(matcher: PathMatch, fault: Fault) -> Rule {
        Rule {
            method: None,
            matcher,
            fault,
            times: None,
            on_cdn: false,
            peer: None,
        }
    }

    /// Every request.
    pub fn any(fault: Fault) -> Rule {
        Rule::new(PathMatch::Any, fault)
    }

    /// Requests for exactly this path (no query string).
    pub fn path(path: &str, fault: Fault) -> Rule {
        Rule::new(PathMatch::Exact(path.to_owned()), fault)
    }

    /// Requests whose path contains `part`.
    pub fn path_contains(part: &str, fault: Fault) -> Rule {
        Rule::new(PathMatch::Contains(part.to_owned()), fault)
    }

    /// Requests for one blob (any repository).
    pub fn blob(digest: &str, fault: Fault) -> Rule {
        Rule::path_contains(&format!("/blobs/{digest}"), fault)
    }

    /// Requests for any blob.
    pub fn blobs(fault: Fault) -> Rule {
        Rule::path_contains("/blobs/", fault)
    }

    /// Requests for any manifest.
    pub fn manifests(fault: Fault) -> Rule {
        Rule::path_contains("/manifests/", fault)
    }

    /// Requests for `/v2/<repo>/manifests/<reference>`.
    pub fn manifest(repo: &str, reference: &str, fault: Fault) -> Rule {
        Rule::path(&format!("/v2/{repo}/manifests/{reference}"), fault)
    }

    /// Requests to the token endpoint.
    pub fn token(fault: Fault) -> Rule {
        Rule::path("/token", fault)
    }

    /// Only requests with this method (`GET`, `HEAD`, ...).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only the first `n` matching requests; then the rule is spent.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    /// Applies to the CDN listener instead of the registry listener.
    pub fn on_cdn(mut self) -> Rule {
        self.on_cdn = true;
        self
    }

    /// Only requests from this client address (an upstream that limits per IP).
    pub fn sent_from(mut self, ip: &str) -> Rule {
        self.peer = Some(ip.parse().expect("an IP address"));
        self
    }

    fn matches(&self, cdn: bool, method: &str, path: &str, peer: Option<std::net::IpAddr>) -> bool {
        self.on_cdn == cdn
            && self.peer.is_none_or(|p| Some(p) == peer)
            && self.method.as_deref().is_none_or(|m| m == method)
            && match &self.matcher {
                PathMatch::Any => true,
                PathMatch::Exact(p) => p == path,
                PathMatch::Contains(p) => path.contains(p.as_str()),
            }
    }
}

/// Identifies a rule added with [`FaultyUpstream::add_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

#[derive(Debug)]
struct RuleState {
    id: RuleId,
    rule: Rule,
    hits: usize,
}

/// How the fake authenticates `/v2/` requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Basic` with these credentials.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Basic` with any credentials (several accounts; see
    /// [`FaultyUpstream::pulls_by_user`]).
    AnyBasic,
    /// The Bearer token flow: 401 with a challenge naming `http://<fake>/token`; tokens live
    /// `expires_in` seconds; the token endpoint requires Basic `credentials` if set.
    Bearer {
        /// Token lifetime in seconds.
        expires_in: u64,
        /// Credentials the token endpoint requires (None: anonymous tokens).
        credentials: Option<(String, String)>,
    },
}

impl UpstreamAuth {
    /// Basic auth with one user.
    pub fn basic(user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// Anonymous Bearer tokens valid `expires_in` seconds.
    pub fn bearer(expires_in: u64) -> UpstreamAuth {
        UpstreamAuth::Bearer {
            expires_in,
            credentials: None,
        }
    }

    /// Bearer tokens that the token endpoint only gives to this user.
    pub fn bearer_with_credentials(expires_in: u64, user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::Bearer {
            expires_in,
            credentials: Some((user.to_owned(), password.to_owned())),
        }
    }
}

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
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        let mut inner = self.inner();
        let r = inner.repos.entry(repo.to_owned()).or_default();
        r.by_digest.insert(
            digest.clone(),
            Manifest {
                media_type: media_type.to_owned(),
                bytes,
            },
        );
        if let Some(tag) = tag {
            r.tags.insert(tag.to_owned(), digest.clone());
        }
        digest
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

    /// Serves a built fixture as `repo:tag`: its manifests (exact bytes) and its blobs (from the
    /// fixture's files).
    pub fn add_fixture(&self, image: &Image, repo: &str, tag: &str) {
        for blob in &image.blobs {
            self.add_file_blob(&blob.digest, &image.blob_path(&blob.digest));
        }
        for child in &image.manifests {
            self.add_manifest(
                repo,
                None,
                &child.media_type,
                image.manifest_bytes(&child.digest),
            );
        }
        self.add_manifest(
            repo,
            Some(tag),
            &image.media_type,
            image.manifest_bytes(&image.digest),
        );
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

// ---- lazily generated content ----

/// Length of the per-seed base block; a prime, so rotations never line up with powers of two.
const PATTERN_BASE: usize = 1_048_573;

fn pattern_base(seed: u64) -> Arc<Vec<u8>> {
    static BASES: OnceLock<Mutex<HashMap<u64, Arc<Vec<u8>>>>> = OnceLock::new();
    let bases = BASES.get_or_init(Default::default);
    if let Some(b) = bases.lock().unwrap().get(&seed) {
        return b.clone();
    }
    let mut base = Vec::with_capacity(PATTERN_BASE + 32);
    let mut counter = 0u64;
    while base.len() < PATTERN_BASE {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(counter.to_le_bytes());
        base.extend_from_slice(&h.finalize());
        counter += 1;
    }
    base.truncate(PATTERN_BASE);
    let base = Arc::new(base);
    bases.lock().unwrap().insert(seed, base.clone());
    base
}

/// Fills `out` with the pattern bytes of `seed` starting at `offset`. Byte `i` of the pattern is
/// `base[(i mod B + (i div B) * 7919) mod B]` for a pseudo-random base block `B` bytes long, so
/// any range can be produced with a few copies and no two MiB of a blob are alike.
pub fn pattern_fill(seed: u64, mut offset: u64, out: &mut [u8]) {
    let base = pattern_base(seed);
    let b = base.len() as u64;
    let mut done = 0;
    while done < out.len() {
        let segment = offset / b;
        let within = offset % b;
        let take = ((b - within) as usize).min(out.len() - done);
        let start = ((within + (segment * 7919) % b) % b) as usize;
        let first = take.min(base.len() - start);
        out[done..done + first].copy_from_slice(&base[start..start + first]);
        if first < take {
            out[done + first..done + take].copy_from_slice(&base[..take - first]);
        }
        done += take;
        offset += take as u64;
    }
}

/// `len` pattern bytes of `seed` from `offset`.
pub fn pattern_bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    pattern_fill(seed, offset, &mut out);
    out
}

/// The digest of the first `size` pattern bytes of `seed` (cached per process).
pub fn pattern_digest(seed: u64, size: u64) -> String {
    static DIGESTS: OnceLock<Mutex<HashMap<(u64, u64), String>>> = OnceLock::new();
    let digests = DIGESTS.get_or_init(Default::default);
    if let Some(d) = digests.lock().unwrap().get(&(seed, size)) {
        return d.clone();
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        pattern_fill(seed, offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    digests.lock().unwrap().insert((seed, size), digest.clone());
    digest
}

// ---- request handling ----

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

/// Records the request and takes the faults of every matching rule with uses left.
fn begin(shared: &Shared, req: &Request, cdn: bool) -> Vec<Fault> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let mut inner = shared.inner.lock().unwrap();
    inner.requests.push(RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: req.uri().query().map(str::to_owned),
        authorization: header_string(req.headers(), header::AUTHORIZATION),
        range: header_string(req.headers(), header::RANGE),
        user_agent: header_string(req.headers(), header::USER_AGENT),
        cdn,
        peer,
    });
    let mut faults = Vec::new();
    for state in &mut inner.rules {
        if state.rule.times.is_some_and(|t| state.hits >= t) {
            continue;
        }
        if state.rule.matches(cdn, &method, &path, peer) {
            state.hits += 1;
            faults.push(state.rule.fault.clone());
        }
    }
    faults
}

/// Applies header delays; returns an immediate answer if a `Status` fault applies.
async fn early_faults(faults: &[Fault]) -> Option<Response> {
    for fault in faults {
        if let Fault::DelayHeaders(d) = fault {
            tokio::time::sleep(*d).await;
        }
    }
    faults.iter().find_map(|f| match f {
        Fault::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status).expect("valid status");
            let code = match status.as_u16() {
                429 => "TOOMANYREQUESTS",
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 => "NAME_UNKNOWN",
                _ => "UNKNOWN",
            };
            let mut r = oci_error(status, code, "injected fault");
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(r)
        }
        _ => None,
    })
}

/// The parts of a `/v2/<name>/<kind>/<rest>` path.
enum Target {
    Root,
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
    Unknown,
}

fn parse_target(path: &str) -> Target {
    if path == "/v2/" || path == "/v2" {
        return Target::Root;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Target::Unknown;
    };
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Target::Referrers {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Target::Tags {
            name: name.to_owned(),
        };
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Target::Manifest {
            name: name.to_owned(),
            reference: reference.to_owned(),
        };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Target::Blob {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    Target::Unknown
}

fn target_repo(target: &Target) -> Option<&str> {
    match target {
        Target::Manifest { name, .. }
        | Target::Blob { name, .. }
        | Target::Tags { name }
        | Target::Referrers { name, .. } => Some(name),
        _ => None,
    }
}

async fn registry_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let faults = begin(&shared, &req, false);
    if let Some(r) = early_faults(&faults).await {
        return r;
    }
    if req.uri().path() == "/token" {
        return token_endpoint(&shared, req).await;
    }
    let target = parse_target(req.uri().path());
    if let Some(denied) = check_auth(&shared, req.headers(), target_repo(&target)) {
        return denied;
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the fake upstream is read-only",
        );
    }
    match target {
        Target::Root => (
            [(header::CONTENT_TYPE, "application/json")],
            "{}".to_owned(),
        )
            .into_response(),
        Target::Manifest { name, reference } => {
            let found = {
                let inner = shared.inner.lock().unwrap();
                inner.repos.get(&name).and_then(|r| {
                    let digest = if reference.starts_with("sha256:") {
                        reference.clone()
                    } else {
                        r.tags.get(&reference)?.clone()
                    };
                    r.by_digest.get(&digest).map(|m| (digest, m.clone()))
                })
            };
            let limit = match hub::count(&shared, req.method(), req.headers()) {
                Ok(headers) => headers,
                Err(refused) => return *refused,
            };
            let Some((digest, manifest)) = found else {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    &format!("manifest unknown: {name}:{reference}"),
                );
            };
            if faults.contains(&Fault::RedirectToCdn) {
                let location = format!("{}/cdn/manifests/{name}/{reference}", shared.cdn_url);
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            let mut resp = serve_content(
                &shared,
                Source::Memory(manifest.bytes),
                &digest,
                &manifest.media_type,
                req.headers(),
                head,
                &faults,
            )
            .await;
            hub::add(&mut resp, limit);
            resp
        }
        Target::Blob { name, digest } => {
            let source = shared.inner.lock().unwrap().blobs.get(&digest).cloned();
            let Some(source) = source else {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    &format!("blob unknown: {name}@{digest}"),
                );
            };
            if !head && faults.contains(&Fault::RedirectToCdn) {
                let location = format!(
                    "{}/cdn/blobs/{digest}?expires=never&sig={}",
                    shared.cdn_url,
                    percent_encode(&name)
                );
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            serve_content(
                &shared,
                source,
                &digest,
                "application/octet-stream",
                req.headers(),
                head,
                &faults,
            )
            .await
        }
        Target::Tags { name } => tags_list(&shared, &name, req.uri().query().unwrap_or("")),
        Target::Referrers { name, digest } => referrers::answer(&shared, &name, &digest),
        Target::Unknown => oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path"),
    }
}

async fn cdn_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let faults = begin(&shared, &req, true);
    if let Some(r) = early_faults(&faults).await {
        return r;
    }
    let Some(digest) = req.uri().path().strip_prefix("/cdn/blobs/") else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    let source = shared.inner.lock().unwrap().blobs.get(digest).cloned();
    let Some(source) = source else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    let head = req.method() == Method::HEAD;
    serve_content(
        &shared,
        source,
        digest,
        "application/octet-stream",
        req.headers(),
        head,
        &faults,
    )
    .await
}

fn tags_list(shared: &Shared, name: &str, query: &str) -> Response {
    let params = query_pairs(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let inner = shared.inner.lock().unwrap();
    let Some(repo) = inner.repos.get(name) else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            &format!("repository name not known to registry: {name}"),
        );
    };
    let last = param("last");
    let mut tags: Vec<&String> = repo
        .tags
        .keys()
        .filter(|t| last.as_ref().is_none_or(|l| *t > l))
        .collect();
    let n = param("n").and_then(|n| n.parse::<usize>().ok());
    let mut link = None;
    if let Some(n) = n
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            link = Some(format!(
                "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                percent_encode(last)
            ));
        }
    }
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(link) = link {
        r.headers_mut()
            .insert(header::LINK, HeaderValue::from_str(&link).expect("link"));
    }
    r
}

/// None when the request may proceed; otherwise the 401 answer.
fn check_auth(shared: &Shared, headers: &HeaderMap, repo: Option<&str>) -> Option<Response> {
    let mut inner = shared.inner.lock().unwrap();
    match inner.auth.clone() {
        UpstreamAuth::None => None,
        UpstreamAuth::AnyBasic | UpstreamAuth::Basic { .. } => {
            let wanted = match &inner.auth {
                UpstreamAuth::Basic { user, password } => Some((user.clone(), password.clone())),
                _ => None,
            };
            let given = basic_credentials(headers);
            if given.is_some() && (wanted.is_none() || given == wanted) {
                return None;
            }
            let mut r = oci_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fake\""),
            );
            Some(r)
        }
        UpstreamAuth::Bearer { .. } => {
            let now = Instant::now();
            inner.tokens.retain(|_, t| t.expires > now);
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let valid = presented
                .and_then(|t| inner.tokens.get(t))
                .is_some_and(|t| repo.is_none_or(|r| t.repos.iter().any(|granted| granted == r)));
            if valid {
                return None;
            }
            let mut challenge = format!(
                "Bearer realm=\"{}/token\",service=\"{FAKE_SERVICE}\"",
                shared.url
            );
            if let Some(repo) = repo {
                challenge.push_str(&format!(",scope=\"repository:{repo}:pull\""));
            }
            let mut r = oci_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).expect("challenge header"),
            );
            Some(r)
        }
    }
}

async fn token_endpoint(shared: &Shared, req: Request) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let mut params = query_pairs(req.uri().query().unwrap_or(""));
    if method == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        params.extend(query_pairs(&String::from_utf8_lossy(&body)));
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut inner = shared.inner.lock().unwrap();
    let UpstreamAuth::Bearer {
        expires_in,
        credentials,
    } = inner.auth.clone()
    else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "no token auth configured",
        );
    };
    if let Some(required) = credentials {
        let presented = basic_credentials(&headers).or_else(|| {
            match (
                param("grant_type").as_deref(),
                param("username"),
                param("password"),
            ) {
                (Some("password"), Some(u), Some(p)) => Some((u, p)),
                _ => None,
            }
        });
        if presented != Some(required) {
            let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fake-token\""),
            );
            return r;
        }
    }
    let repos: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let (_, rest) = scope.split_once(':')?;
            let (name, _) = rest.rsplit_once(':')?;
            Some(name.to_owned())
        })
        .collect();
    inner.tokens_issued += 1;
    let token = format!(
        "fake-{}-{}",
        inner.tokens_issued,
        STANDARD.encode(super::ports::random_u64().to_le_bytes())
    );
    inner.tokens.insert(
        token.clone(),
        IssuedToken {
            expires: Instant::now() + Duration::from_secs(expires_in),
            repos,
        },
    );
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Parses a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range against `size`: the half-open
/// byte interval, or Err for an unsatisfiable or multi-range header.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = value.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        (start, end)
    };
    if start >= end {
        return Err(());
    }
    Ok((start, end))
}

/// Answers GET/HEAD for content with digest headers, single ranges and body faults.
async fn serve_content(
    shared: &Shared,
    source: Source,
    digest: &str,
    media_type: &str,
    headers: &HeaderMap,
    head: bool,
    faults: &[Fault],
) -> Response {
    let size = source.size();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !faults.contains(&Fault::IgnoreRange));
    let (status, start, end) = match range {
        Some(range) => match parse_range(range, size) {
            Ok((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            Err(()) => {
                let mut r = oci_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "UNKNOWN",
                    "range not satisfiable",
                );
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("header"),
                );
                return r;
            }
        },
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header("Docker-Content-Digest", digest)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    if head {
        return builder.body(Body::empty()).expect("response");
    }
    let body = BodyState {
        source,
        pos: start,
        end,
        sent: 0,
        faults: faults.to_vec(),
        started: false,
        finished: false,
        stalled: false,
        release: shared.release.subscribe(),
        release_seen: *shared.release.borrow(),
        file: None,
    };
    let stream = futures_util::stream::unfold(body, next_chunk);
    builder.body(Body::from_stream(stream)).expect("response")
}

struct BodyState {
    source: Source,
    pos: u64,
    end: u64,
    sent: u64,
    faults: Vec<Fault>,
    started: bool,
    finished: bool,
    stalled: bool,
    release: tokio::sync::watch::Receiver<u64>,
    release_seen: u64,
    file: Option<tokio::fs::File>,
}

impl BodyState {
    fn find<T>(&self, f: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        self.faults.iter().find_map(f)
    }

    async fn read(&mut self, n: usize) -> std::io::Result<Bytes> {
        match &self.source {
            Source::Memory(b) => Ok(b.slice(self.pos as usize..self.pos as usize + n)),
            Source::Pattern { seed, .. } => Ok(Bytes::from(pattern_bytes(*seed, self.pos, n))),
            Source::File { path, .. } => {
                if self.file.is_none() {
                    let mut f = tokio::fs::File::open(path).await?;
                    f.seek(std::io::SeekFrom::Start(self.pos)).await?;
                    self.file = Some(f);
                }
                let mut buf = vec![0; n];
                self.file
                    .as_mut()
                    .expect("file opened")
                    .read_exact(&mut buf)
                    .await?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// Produces the next body chunk, applying the body faults.
async fn next_chunk(mut st: BodyState) -> Option<(std::io::Result<Bytes>, BodyState)> {
    if st.finished || st.pos >= st.end {
        return None;
    }
    if !st.started {
        st.started = true;
        if let Some(d) = st.find(|f| match f {
            Fault::DelayBody(d) => Some(*d),
            _ => None,
        }) {
            tokio::time::sleep(d).await;
        }
    }
    let mut n = CHUNK.min((st.end - st.pos) as usize);
    let throttle = st.find(|f| match f {
        Fault::Throttle(bps) => Some((*bps).max(1)),
        _ => None,
    });
    if let Some(bps) = throttle {
        n = n.min((bps / 20).max(1) as usize);
    }
    if let Some(cut) = st.find(|f| match f {
        Fault::CutAfter(c) => Some(*c),
        _ => None,
    }) {
        if st.sent >= cut {
            st.finished = true;
            // Let hyper flush the headers and bytes sent so far: an error aborts the connection
            // without flushing what is still buffered.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some((Err(std::io::Error::other("injected fault: cut")), st));
        }
        n = n.min((cut - st.sent) as usize);
    }
    if let Some(stall) = st.find(|f| match f {
        Fault::StallAfter(s) => Some(*s),
        _ => None,
    }) && !st.stalled
    {
        if st.sent >= stall {
            st.stalled = true;
            let seen = st.release_seen;
            if st.release.wait_for(|g| *g > seen).await.is_err() {
                return None;
            }
        } else {
            n = n.min((stall - st.sent) as usize);
        }
    }
    let chunk = match st.read(n).await {
        Ok(c) => c,
        Err(e) => {
            st.finished = true;
            return Some((Err(e), st));
        }
    };
    let chunk = if st.sent == 0 && st.faults.contains(&Fault::WrongBytes) {
        let mut v = chunk.to_vec();
        v[0] ^= 0xff;
        Bytes::from(v)
    } else {
        chunk
    };
    if let Some(bps) = throttle {
        tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / bps as f64)).await;
    }
    st.pos += chunk.len() as u64;
    st.sent += chunk.len() as u64;
    Some((Ok(chunk), st))
}
