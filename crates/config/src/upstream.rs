//! The `upstreams:` section: each registry ferry mirrors, keyed by the name clients use in
//! references (`docker.io`), with where it really is (`url`), optional mirrors tried first,
//! credentials, and aliases.
//!
//! The embedded default knows the eight public registries of the spec. A config file that has
//! an `upstreams:` key replaces that list as a whole, so an air-gapped or test deployment never
//! talks to a registry it did not name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::access::Rate;
use crate::units::{ByteSize, Dur, Secret};

/// One upstream registry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Where the registry really is; defaults to `https://<name>` (`https://registry-1.docker.io`
    /// for docker.io).
    pub url: Option<String>,
    /// Other registries or ferry instances tried in order before `url`; a mirror URL may carry
    /// a path prefix (`https://m.example.cn/gcr.io`).
    pub mirrors: Vec<String>,
    /// Username for the upstream (Basic, or for its token service).
    pub username: Option<String>,
    /// Password or access token for `username`.
    pub password: Option<Secret>,
    /// Further accounts; pulls are spread over all accounts, and one that gets 429 is rested.
    pub accounts: Vec<Account>,
    /// Other names clients may use for this registry (`index.docker.io`, `k8s.gcr.io`).
    pub aliases: Vec<String>,
    /// Token realm hosts, besides the registry's own domain, that may receive credentials.
    pub auth_realms: Vec<String>,
    /// Hosts a blob download may be redirected to (patterns such as `*.cloudfront.net`, see
    /// [`crate::hosts`]); empty: any host. Other requests never follow a redirect off the
    /// registry's own host.
    pub redirect_hosts: Vec<String>,
    /// Skip TLS certificate verification (only for test registries).
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust for this upstream.
    pub ca_file: Option<PathBuf>,
    /// HTTP(S) proxy used to reach this upstream.
    pub proxy: Option<String>,
    /// Local IP addresses to send upstream requests from (one connection pool each); pulls
    /// are spread over them round-robin, and an address that gets 429 rests, per account.
    /// Empty: the system picks the source address.
    pub source_addresses: Vec<String>,
    /// Time allowed to connect.
    pub connect_timeout: Option<Dur>,
    /// Longest silence allowed while reading a response.
    pub read_timeout: Option<Dur>,
    /// Per-upstream override of `cache.tag_ttl`.
    pub tag_ttl: Option<Dur>,
    /// Parallel ranged downloads of large cold blobs.
    pub segments: SegmentsConfig,
}

/// How a large cold blob is fetched: as `parallel` concurrent `Range` requests of `size`
/// bytes (the first one `threshold` bytes, fed to clients at once), when the blob is larger
/// than `threshold`. `parallel: 1` fetches every blob as one stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// Bytes per segment.
    pub size: ByteSize,
    /// Segments downloaded at once.
    pub parallel: usize,
    /// Blobs up to this size are fetched in one request.
    pub threshold: ByteSize,
    /// Asks a segment again of another source (the next mirror, or the registry, or a new
    /// connection to the only one) when it wrote nothing for 2 s or runs more than twice as
    /// long as the segments of this download that finished: a stalled or slow stream no
    /// longer holds the blob back.
    pub hedge: bool,
    /// A blob whose first answer streams faster than this in its first 100 ms (a near,
    /// fast upstream) is fetched as one stream: there parallel ranges gain nothing and cost
    /// the upstream and ferry more. `unlimited`: always in segments.
    pub one_stream_above: Rate,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            size: ByteSize(8 << 20),
            parallel: 4,
            threshold: ByteSize(16 << 20),
            hedge: true,
            one_stream_above: Rate::per(64 << 20, std::time::Duration::from_secs(1)),
        }
    }
}

/// One account of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Username.
    pub username: String,
    /// Password or token.
    pub password: Secret,
}

impl UpstreamConfig {
    /// The upstream's real base URL, after defaults.
    pub fn base_url(&self, name: &str) -> String {
        match &self.url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None if name == "docker.io" => "https://registry-1.docker.io".to_owned(),
            None => format!("https://{name}"),
        }
    }

    /// Every account: the top-level username/password first, then `accounts`.
    pub fn all_accounts(&self) -> Vec<Account> {
        let top = self.username.as_ref().map(|u| Account {
            username: u.clone(),
            password: self.password.clone().unwrap_or_default(),
        });
        top.into_iter()
            .chain(self.accounts.iter().cloned())
            .collect()
    }
}

/// The eight public registries ferry knows without a config file.
pub fn default_upstreams() -> BTreeMap<String, UpstreamConfig> {
    let mut m = BTreeMap::new();
    let with_aliases = |aliases: &[&str]| UpstreamConfig {
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    m.insert(
        "docker.io".into(),
        with_aliases(&["index.docker.io", "registry-1.docker.io"]),
    );
    m.insert("gcr.io".into(), UpstreamConfig::default());
    m.insert("ghcr.io".into(), UpstreamConfig::default());
    m.insert("registry.k8s.io".into(), with_aliases(&["k8s.gcr.io"]));
    m.insert("quay.io".into(), UpstreamConfig::default());
    m.insert("mcr.microsoft.com".into(), UpstreamConfig::default());
    let nvcr = UpstreamConfig {
        auth_realms: vec!["authn.nvidia.com".into()],
        ..Default::default()
    };
    m.insert("nvcr.io".into(), nvcr);
    m
}
