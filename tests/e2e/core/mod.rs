//! The core of `ferry serve`, end to end: the product contract of SPEC sections 1-5 checked with
//! the real binary, real upstream registries (Debian's docker-registry), the fault-injecting
//! fake upstream where a real registry cannot misbehave on demand, and real clients (skopeo,
//! podman, containerd's ctr).
//!
//! - [`routing`]: the five routing forms, aliases, deep names, unknown registries, with skopeo,
//!   podman and ctr using the files `ferry client-config` generates;
//! - [`api`]: the OCI pull API: media types, exact bytes and digests, HEAD, Range, tag
//!   pagination, OCI error codes (including upstream 401/429 passed through);
//! - [`auth`]: upstream Bearer token flow (cached, refreshed, retried once), Basic auth,
//!   per-upstream credentials, CDN redirects without credentials;
//! - [`cache`]: digest hits without upstream requests, tag TTL and HEAD revalidation, stale
//!   answers when the upstream fails, negative cache, restarts, eviction;
//! - [`faults`]: coalescing, streaming, integrity under cut/wrong/crashed downloads, client
//!   disconnects, flat memory with a 200 MB blob;
//! - [`input`]: hostile paths, names, digests and headers;
//! - [`membership`]: a digest is served only under a repository known to hold it;
//! - [`redirects`]: only blob downloads follow a redirect to another host (`redirect_hosts`);
//! - [`defaults`]: `ferry serve` with no config, `check-config`, `FERRY_*` overrides.
//!
//! The helpers below are shared by these files.

mod api;
mod auth;
mod cache;
mod client_config;
mod defaults;
mod faults;
mod input;
mod membership;
mod redirects;
mod reload;
mod routing;
mod segments;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::digest::digest_hex;
use crate::support::http::{RawResponse, client, read_body};
use crate::support::*;

/// Every manifest media type, for `Accept` headers.
pub const ACCEPT_MANIFESTS: &str = crate::support::registry::MANIFEST_ACCEPT;

/// `http://127.0.0.1:<port><path>` on ferry.
pub fn url(ferry: &Ferry, path: &str) -> String {
    format!("{}{path}", ferry.base_url())
}

/// GET with an `Accept` header for every manifest type.
pub async fn get_manifest(ferry: &Ferry, path: &str) -> reqwest::Response {
    client()
        .get(url(ferry, path))
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A plain GET on ferry.
pub async fn get(ferry: &Ferry, path: &str) -> reqwest::Response {
    client()
        .get(url(ferry, path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The `code` and `message` of the first error of an OCI error body; panics (showing the body)
/// when it is not one.
pub fn oci_error(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an OCI JSON error body ({e}): {text:?}"));
    let first = &json["errors"][0];
    let code = first["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {text}"));
    let message = first["message"].as_str().unwrap_or_default();
    (code.to_owned(), message.to_owned())
}

/// Checks a response is an OCI JSON error with this status and code; returns its message.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let body = resp.bytes().await.expect("error body");
    assert_eq!(
        got,
        status,
        "status of {url}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "content type of the error from {url}"
    );
    let (got_code, message) = oci_error(&body);
    assert_eq!(got_code, code, "error code of {url}: {message}");
    message
}

/// Same as [`expect_error`] for a [`RawResponse`] (requests whose path must be sent
/// verbatim).
pub fn expect_raw_error(r: &RawResponse, status: u16, code: &str, what: &str) -> String {
    assert_eq!(r.status, status, "status of {what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "content type of the error for {what}"
    );
    let (got, message) = oci_error(&r.body);
    assert_eq!(got, code, "error code for {what}: {message}");
    message
}

/// The requests ferry (user agent `ferry/...`) made to a registry, from its access log.
pub fn ferry_requests(registry: &Registry) -> Vec<crate::support::registry::AccessLogEntry> {
    registry
        .requests()
        .into_iter()
        .filter(|e| e.user_agent.starts_with("ferry/"))
        .collect()
}

/// How many requests ferry made to a registry with this method and exactly this path.
pub fn ferry_count(registry: &Registry, method: &str, path: &str) -> usize {
    ferry_requests(registry)
        .iter()
        .filter(|e| e.method == method && e.path == path)
        .count()
}

/// A header as text.
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("text header"))
}

/// Where ferry's fs backend keeps a blob or manifest (see crates/storage/src/paths.rs).
pub fn cache_file(ferry: &Ferry, digest: &str) -> PathBuf {
    let hex = digest_hex(digest);
    ferry
        .data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// Whether a verified copy of `digest` is in ferry's cache (the file exists and hashes right).
/// A file under the digest's name with other content panics: that is a corrupt cache entry.
pub fn is_cached(ferry: &Ferry, digest: &str) -> bool {
    let path = cache_file(ferry, digest);
    if !path.exists() {
        return false;
    }
    assert_eq!(
        sha256_file(&path),
        digest,
        "CORRUPT cache entry {}",
        path.display()
    );
    true
}

/// Partial downloads in ferry's spool (`_spool/<process>/<random>.part`).
/// Upstream GETs of one cold download of a `size`-byte blob with the default
/// `upstreams.<name>.segments` (a first request of 16 MiB, then 8 MiB segments).
pub fn segment_gets(size: u64) -> usize {
    const FIRST: u64 = 16 << 20;
    const EACH: u64 = 8 << 20;
    1 + size.saturating_sub(FIRST).div_ceil(EACH) as usize
}

pub fn spool_files(ferry: &Ferry) -> Vec<PathBuf> {
    ferry_storage::spool::partial_files(&ferry.data_dir().join("_spool"))
}

/// Every file under `root`, relative, sorted (missing root: empty).
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Total size of the blob files in ferry's cache.
pub fn cached_bytes(ferry: &Ferry) -> u64 {
    let root = ferry.data_dir().join("blobs");
    files_under(&root)
        .iter()
        .map(|f| {
            std::fs::metadata(root.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

/// `skopeo copy --preserve-digests [extra]` of `reference` into a fresh `dir:` directory;
/// returns each file of the copy with the sha256 of its content, so two pulls can be compared.
pub fn pull_to_dir(reference: &str, extra: &[&str]) -> BTreeMap<String, String> {
    let out = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--preserve-digests"];
    args.extend_from_slice(extra);
    skopeo_copy(reference, &format!("dir:{}", out.path().display()), &args);
    files_under(out.path())
        .into_iter()
        .map(|f| {
            let digest = sha256_file(&out.path().join(&f));
            (f, digest)
        })
        .collect()
}

/// Checks that a pull (all platforms) through ferry gives exactly the files a direct pull from the upstream
/// gives, and that every blob of the fixture is there with the right content.
pub fn assert_same_pull(through_ferry: &str, direct: &str, image: &Image) {
    let via = pull_to_dir(through_ferry, &["--all"]);
    let straight = pull_to_dir(direct, &["--all"]);
    assert_eq!(
        via, straight,
        "pull of {through_ferry} differs from the direct pull of {direct}"
    );
    assert_eq!(via["manifest.json"], image.digest, "top manifest");
    for blob in &image.blobs {
        let name = digest_hex(&blob.digest).to_owned();
        assert_eq!(
            via.get(&name),
            Some(&blob.digest),
            "blob {} of {through_ferry}",
            blob.digest
        );
    }
}

/// Memory figures of a process from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss: u64,
    /// Peak resident set size.
    pub hwm: u64,
    /// Anonymous resident memory now (heap: where a buffered blob would be).
    pub anon: u64,
}

/// Reads [`Memory`] of `pid`.
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
    }
}
