//! # ferry-upstream: talking to the registries ferry mirrors
//!
//! One [`Upstream`] per configured registry, each with its own connection pool. It knows
//! nothing about the cache: it fetches manifests, blobs, tag lists and referrers, and handles
//! what registries require on the way:
//!
//! - [`endpoint`]: mirrors tried in order before the registry's own URL, with path prefixes;
//! - [`challenge`] + [`token`]: the `WWW-Authenticate: Bearer` token flow (tokens cached until
//!   they expire, one fetch for concurrent requests) and Basic auth;
//! - [`accounts`]: several accounts per upstream, round-robin, resting one that gets 429;
//! - [`ratelimit`]: the ledger of `ratelimit-*` headers per (address, account) pair, and [`priority`]:
//!   background work leaves each account's last requests to interactive pulls;
//! - [`sources`]: several local source addresses, one connection pool each;
//! - [`client`]: the request loop, and redirects followed without credentials;
//! - [`redirect`]: which redirects may be followed (only blob downloads leave the host);
//! - [`error`]: failures classified for the cache (not found vs. transient).

pub mod accounts;
pub mod challenge;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod priority;
pub mod push;
pub mod ratelimit;
pub mod redirect;
pub mod sources;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_config::{Config, UpstreamConfig};
use ferry_metrics::Metrics;
use ferry_oci::manifest::{self, ACCEPT_ALL};
use ferry_oci::{Digest, Reference, RepoName};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::{Method, StatusCode, header};

use crate::accounts::AccountPool;
use crate::client::{Client, Op, SHORT_TIMEOUT};
use crate::endpoint::Endpoint;
pub use crate::error::UpstreamError;
pub use crate::priority::Priority;
use crate::sources::Source;

/// The largest manifest accepted (the distribution spec's recommended limit).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Result type of upstream calls.
pub type Result<T> = std::result::Result<T, UpstreamError>;

/// A manifest fetched by GET.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The upstream's exact bytes.
    pub bytes: Bytes,
    /// Its media type.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// What a manifest HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<Digest>,
    /// `Content-Type`, when sent.
    pub media_type: Option<String>,
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
}

/// A blob download in progress.
pub struct BlobDownload {
    /// Total blob size, when the upstream said.
    pub size: Option<u64>,
    /// Offset of the first byte of `stream` (0 if the upstream ignored a `Range`).
    pub offset: u64,
    /// The bytes.
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
    /// Whether `stream` holds only the range asked for, which ends before the blob does.
    pub partial: bool,
}

/// One upstream registry.
pub struct Upstream {
    client: Client,
    segments: ferry_config::SegmentsConfig,
}

impl Upstream {
    /// Builds the client for upstream `name` from its config.
    pub fn new(name: &str, cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let invalid = |m: String| UpstreamError::Invalid {
            upstream: name.to_owned(),
            message: m,
        };
        let mut endpoints = Vec::new();
        for url in cfg
            .mirrors
            .iter()
            .map(String::as_str)
            .chain([cfg.base_url(name).as_str()])
        {
            endpoints.push(Endpoint::parse(url).map_err(invalid)?);
        }
        let http = http_client(cfg, None).map_err(|e| invalid(e.to_string()))?;
        let sources = build_sources(cfg, &http).map_err(invalid)?;
        let challenges = endpoints.iter().map(|_| Mutex::new(None)).collect();
        Ok(Upstream {
            client: Client {
                name: name.to_owned(),
                endpoints,
                http,
                accounts: AccountPool::with_sources(cfg.all_accounts(), sources.len()),
                sources,
                challenges,
                tokens: token::new_cache(),
                realm_hosts: cfg.auth_realms.clone(),
                redirects: redirect::RedirectPolicy::new(name, cfg.redirect_hosts.clone()),
                metrics,
                actions: "pull",
            },
            segments: cfg.segments,
        })
    }

    /// How large cold blobs are fetched from this upstream (`upstreams.<name>.segments`).
    pub fn segments(&self) -> ferry_config::SegmentsConfig {
        self.segments
    }

    /// The registry name.
    pub fn name(&self) -> &str {
        &self.client.name
    }

    /// GETs a manifest, checking its size and (for digest references) its digest.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Manifest> {
        let op = manifest_op(Method::GET, repo, reference, "manifest");
        let resp = self.client.send(&op).await?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE);
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST as u64)
        {
            return Err(self.client.invalid("manifest is larger than 4 MiB"));
        }
        let bytes = read_manifest_body(resp)
            .await
            .map_err(|m| self.client.invalid(&m))?;
        let digest = Digest::sha256_of(&bytes);
        if let Reference::Digest(want) = reference
            && *want != digest
            && want.algorithm() == digest.algorithm()
        {
            return Err(UpstreamError::DigestMismatch {
                upstream: self.client.name.clone(),
                message: format!("manifest {want} has digest {digest}"),
            });
        }
        let media_type = manifest_media_type(content_type.as_deref(), &bytes);
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEADs a manifest (does not count as a pull on Docker Hub).
    pub async fn manifest_head(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestHead> {
        let op = manifest_op(Method::HEAD, repo, reference, "manifest_head");
        let resp = self.client.send(&op).await?;
        let h = resp.headers();
        Ok(ManifestHead {
            digest: header_str(h, "docker-content-digest").and_then(|d| Digest::parse(&d).ok()),
            media_type: header_str(h, header::CONTENT_TYPE),
            size: header_length(h),
        })
    }

    /// Starts downloading a blob from byte `from`.
    pub async fn blob(&self, repo: &RepoName, digest: &Digest, from: u64) -> Result<BlobDownload> {
        self.blob_range(repo, digest, from, None).await
    }

    /// GETs bytes `from..=to` of a blob (to its end without `to`). An upstream that ignores
    /// `Range` answers the whole blob: the download's `offset` is then 0, and its `size` the
    /// whole length; with a 206 the size comes from `Content-Range`.
    pub async fn blob_range(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: u64,
        to: Option<u64>,
    ) -> Result<BlobDownload> {
        self.blob_range_via(0, repo, digest, from, to).await
    }

    /// Places a blob can be fetched from: the mirrors, then the registry itself.
    pub fn sources(&self) -> usize {
        self.client.endpoints.len()
    }

    /// [`Upstream::blob_range`] asked of source `source` first (see [`Upstream::sources`]),
    /// falling back to the others in turn.
    pub async fn blob_range_via(
        &self,
        source: usize,
        repo: &RepoName,
        digest: &Digest,
        from: u64,
        to: Option<u64>,
    ) -> Result<BlobDownload> {
        let op = Op {
            method: Method::GET,
            tail: format!("{repo}/blobs/{digest}"),
            repo: repo.as_str(),
            kind: "blob",
            accept: None,
            range_from: Some(from),
            range_to: to,
            timeout: None,
        };
        let resp = self.client.send_from(source, &op).await?;
        let (size, offset) = blob_extent(&resp, from);
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT
            && matches!((to, size), (Some(t), Some(s)) if t + 1 < s);
        let name = self.client.name.clone();
        let metrics = self.client.metrics.clone();
        let stream = resp
            .bytes_stream()
            .inspect_ok(move |b| {
                Metrics::per_upstream(&metrics.upstream_bytes, &name, b.len() as u64);
                metrics.totals.upstream_bytes(b.len() as u64);
            })
            .map_err(std::io::Error::other)
            .boxed();
        Ok(BlobDownload {
            size,
            offset,
            stream,
            partial,
        })
    }

    /// HEADs a blob: its size, or a not-found error.
    pub async fn blob_head(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let op = Op {
            method: Method::HEAD,
            tail: format!("{repo}/blobs/{digest}"),
            repo: repo.as_str(),
            kind: "blob_head",
            accept: None,
            range_from: None,
            range_to: None,
            timeout: Some(SHORT_TIMEOUT),
        };
        Ok(header_length(self.client.send(&op).await?.headers()))
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut tail = format!("{repo}/tags/list?n=1000");
        for _ in 0..1000 {
            let op = Op {
                method: Method::GET,
                tail: tail.clone(),
                repo: repo.as_str(),
                kind: "tags",
                accept: Some("application/json"),
                range_from: None,
                range_to: None,
                timeout: Some(SHORT_TIMEOUT),
            };
            let resp = self.client.send(&op).await?;
            let next = next_link(resp.headers());
            let page: List = resp
                .json()
                .await
                .map_err(|e| self.client.invalid(&format!("tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next.and_then(|n| n.split_once("/v2/").map(|(_, t)| t.to_owned())) {
                Some(t) => tail = strip_prefix_path(&t, &self.client.endpoints[0].prefix),
                None => break,
            }
        }
        Ok(tags)
    }

    /// The referrers index of a manifest; `None` when the upstream has no referrers API.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<(Bytes, String)>> {
        let mut tail = format!("{repo}/referrers/{digest}");
        if let Some(t) = artifact_type {
            tail.push_str("?artifactType=");
            tail.push_str(&url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
        }
        let op = Op {
            method: Method::GET,
            tail,
            repo: repo.as_str(),
            kind: "referrers",
            accept: Some(manifest::OCI_INDEX),
            range_from: None,
            range_to: None,
            timeout: Some(SHORT_TIMEOUT),
        };
        match self.client.send(&op).await {
            Ok(resp) => {
                let ct = header_str(resp.headers(), header::CONTENT_TYPE)
                    .unwrap_or_else(|| manifest::OCI_INDEX.into());
                let body = read_manifest_body(resp)
                    .await
                    .map_err(|m| self.client.invalid(&m))?;
                Ok(Some((body, ct)))
            }
            Err(UpstreamError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn manifest_op<'a>(
    method: Method,
    repo: &'a RepoName,
    reference: &Reference,
    kind: &'static str,
) -> Op<'a> {
    Op {
        method,
        tail: format!("{repo}/manifests/{reference}"),
        repo: repo.as_str(),
        kind,
        accept: Some(ACCEPT_ALL),
        range_from: None,
        range_to: None,
        timeout: Some(SHORT_TIMEOUT),
    }
}

fn header_str(h: &http::HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

/// `Content-Length` as sent. For a HEAD, `Response::content_length` measures the (empty)
/// body and says 0, so HEAD answers read the header.
fn header_length(h: &http::HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// The media type of a manifest: the upstream's `Content-Type` unless it is generic.
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    match ct {
        Some(c)
            if !c.is_empty()
                && c != "application/json"
                && c != "text/plain"
                && c != "application/octet-stream" =>
        {
            c.to_owned()
        }
        _ => manifest::parse(bytes, None)
            .map(|p| p.media_type().to_owned())
            .unwrap_or_else(|_| manifest::OCI_MANIFEST.to_owned()),
    }
}

async fn read_manifest_body(resp: reqwest::Response) -> std::result::Result<Bytes, String> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading manifest: {e}"))?;
        if out.len() + chunk.len() > MAX_MANIFEST {
            return Err("manifest is larger than 4 MiB".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Total size and first-byte offset of a blob response to a request from byte `from`.
fn blob_extent(resp: &reqwest::Response, from: u64) -> (Option<u64>, u64) {
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let total = header_str(resp.headers(), header::CONTENT_RANGE)
            .and_then(|v| v.rsplit_once('/').and_then(|(_, t)| t.parse().ok()));
        (total, from)
    } else {
        (resp.content_length(), 0)
    }
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(h: &http::HeaderMap) -> Option<String> {
    let v = header_str(h, header::LINK)?;
    v.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            part.split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_owned())
        })
}

fn strip_prefix_path(tail: &str, prefix: &str) -> String {
    tail.strip_prefix(prefix).unwrap_or(tail).to_owned()
}

/// One [`Source`] per configured source address, or the default client alone.
fn build_sources(
    cfg: &UpstreamConfig,
    default: &reqwest::Client,
) -> std::result::Result<Vec<Source>, String> {
    let addresses = sources::parse_addresses(&cfg.source_addresses)?;
    if addresses.is_empty() {
        return Ok(vec![Source {
            address: None,
            http: default.clone(),
        }]);
    }
    addresses
        .into_iter()
        .map(|a| {
            let http = http_client(cfg, Some(a)).map_err(|e| format!("source address {a}: {e}"))?;
            Ok(Source {
                address: Some(a),
                http,
            })
        })
        .collect()
}

fn http_client(
    cfg: &UpstreamConfig,
    local: Option<std::net::IpAddr>,
) -> std::result::Result<reqwest::Client, Box<dyn std::error::Error>> {
    let mut b = reqwest::Client::builder()
        .local_address(local)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(cfg.connect_timeout.map_or(Duration::from_secs(10), |d| d.0))
        .read_timeout(cfg.read_timeout.map_or(Duration::from_secs(60), |d| d.0))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true);
    if let Some(p) = &cfg.proxy {
        b = b.proxy(reqwest::Proxy::all(p)?);
    }
    if cfg.insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: no PEM certificate in it", ca.display()).into());
        }
        b = b.tls_certs_merge(certs);
    }
    Ok(b.build()?)
}

/// Every configured upstream, reachable by its name or any alias.
#[derive(Clone, Default)]
pub struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
}

impl Upstreams {
    /// Builds every upstream of `config`.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (name, cfg) in &config.upstreams {
            let up = Arc::new(Upstream::new(name, cfg, metrics.clone())?);
            for alias in &cfg.aliases {
                by_name.insert(alias.clone(), up.clone());
            }
            by_name.insert(name.clone(), up);
        }
        Ok(Upstreams { by_name })
    }

    /// The upstream called `name` (canonical name or alias).
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }
}

#[cfg(test)]
mod source_tests;
#[cfg(test)]
mod tests;
