//! The input of every generator: where ferry is ([`Endpoint`]) and which registries it
//! serves ([`Target`], [`Upstream`]), validated once and turned into a [`Plan`] (`plan.rs`)
//! that the per-client modules render.
//!
//! Names are registry names as clients write them in image references (`docker.io`,
//! `ghcr.io`, `registry.k8s.io:443`), checked strictly because they become directory names
//! under `certs.d/` when the configuration is written to disk.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::Error;
pub use crate::plan::{Entry, Plan};

/// Docker Hub's name in image references.
pub const DOCKER_HUB: &str = "docker.io";

/// Where Docker Hub's registry API really is (what clients use for `docker.io`).
pub const DOCKER_HUB_SERVER: &str = "https://registry-1.docker.io";

/// Names that clients use for Docker Hub besides `docker.io`.
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// Whether `name` is one of Docker Hub's names (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`).
pub fn is_docker_hub(name: &str) -> bool {
    name == DOCKER_HUB || DOCKER_HUB_ALIASES.contains(&name)
}

/// An `http://` or `https://` origin: scheme, host and optional port, with no path, query,
/// fragment or credentials. Used for ferry's own address and for fallback servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    plain_http: bool,
    host: String,
    port: Option<u16>,
}

impl Endpoint {
    /// Parses and checks an endpoint URL such as `https://mirror.example.com` or
    /// `http://10.0.0.5:5000`. A trailing `/` is accepted; anything else after the
    /// authority is an error, because ferry serves the registry API at `/v2/` of its root.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: input.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = input.trim();
        if !trimmed.contains("://") {
            return Err(bad(
                "no scheme: write http://HOST:PORT (plain HTTP) or https://HOST[:PORT] (TLS)",
            ));
        }
        let url = url::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
        let plain_http = match url.scheme() {
            "http" => true,
            "https" => false,
            other => return Err(bad(&format!("scheme {other:?} is not http or https"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL: clients log in with `docker login` or \
                 their own credential files",
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad(
                "a path is not allowed: ferry serves the registry API at /v2/ of its root \
                 (Docker rejects mirror URLs with a path, and containerd would append /v2 to it)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed"));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(bad("no host")),
        };
        Ok(Endpoint {
            plain_http,
            host,
            port: url.port(),
        })
    }

    /// Whether the scheme is plain `http`.
    pub fn is_plain_http(&self) -> bool {
        self.plain_http
    }

    /// The scheme, `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.plain_http { "http" } else { "https" }
    }

    /// The host without port (IPv6 addresses keep their brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host[:port]`, the port written only when it is not the scheme's default; this is how
    /// Docker's `insecure-registries` and Podman's `location` name a registry.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `scheme://host[:port]` without a trailing slash.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Endpoint::parse(s)
    }
}

/// Lower-cases and checks a registry name: DNS labels (`a-z`, `0-9`, `-`) joined by dots,
/// optionally `:port`. Anything else (slashes, `..`, `_`, spaces, IPv6) is refused, which
/// also keeps the name safe as a directory name.
pub fn normalize_registry_name(name: &str) -> Result<String, Error> {
    let lower = name.trim().to_ascii_lowercase();
    let bad = |reason: &str| Error::InvalidRegistryName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = match lower.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (lower.as_str(), None),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(bad("the host part must be 1 to 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(bad(
                "empty label (two dots in a row, or a leading or trailing dot)",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "only letters, digits, '-' and '.' are allowed in a registry host",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not start or end with '-'"));
        }
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('0') => {}
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        }
    }
    Ok(lower)
}

/// Whether clients treat `name` as a registry when it is the first component of an image
/// reference (Docker's rule: it contains `.` or `:`, or is `localhost`). Other names can
/// only be reached through ferry's path-prefix form.
pub fn clients_can_name(name: &str) -> bool {
    name.contains('.') || name.contains(':') || name == "localhost"
}

/// One registry that ferry serves, with the other names clients may use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name ferry's configuration uses (a key of `upstreams:`), e.g. `registry.k8s.io`.
    pub name: String,
    /// Other names for the same registry (`k8s.gcr.io`); each gets its own client entry.
    pub aliases: Vec<String>,
}

impl Upstream {
    /// An upstream without aliases.
    pub fn new(name: impl Into<String>) -> Self {
        Upstream {
            name: name.into(),
            aliases: Vec::new(),
        }
    }

    /// Adds aliases.
    pub fn with_aliases<I, S>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases.extend(aliases.into_iter().map(Into::into));
        self
    }
}

impl From<&str> for Upstream {
    fn from(name: &str) -> Self {
        Upstream::new(name)
    }
}

impl From<String> for Upstream {
    fn from(name: String) -> Self {
        Upstream::new(name)
    }
}

/// Everything the generators need to know about one ferry deployment.
///
/// Build it with [`Target::new`] (and [`Target::with_hosts`]) from ferry's configuration;
/// the fields are public so tests can adjust them, and every generator re-validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL clients use to reach ferry (`--mirror`).
    pub mirror: Endpoint,
    /// The registries ferry serves (the `upstreams:` section), in output order.
    pub upstreams: Vec<Upstream>,
    /// The upstream for requests that name no registry (`default_upstream:`), which is what
    /// Docker's `registry-mirrors` mode relies on. `None` when ferry has none.
    pub default_upstream: Option<String>,
    /// Host routing (`hosts:`): Host header value -> upstream name. When the mirror URL's
    /// host is a key here, that address serves only that upstream and the generators
    /// configure only it, without a path prefix.
    pub hosts: BTreeMap<String, String>,
    /// Where a client goes when ferry fails, per client-visible registry name; overrides the
    /// default (`https://registry-1.docker.io` for Docker Hub, `https://<name>` otherwise,
    /// which is what clients do with no configuration). Empty in normal use; tests point it
    /// at a dead local port so that nothing can leave the machine.
    pub fallback_servers: BTreeMap<String, Endpoint>,
    /// Whether clients may go to a registry directly when ferry fails (the default). When
    /// false, containerd's `server` and Podman's `location` point at ferry too, so nothing
    /// bypasses it (Docker cannot be configured that way). `fallback_servers` is then unused.
    pub direct_fallback: bool,
    /// The CA certificate (an absolute path on the client's machine) that signed ferry's
    /// certificate, for an `https://` ferry with a private CA (`--ca`). The generators whose
    /// files can name it do (BuildKit `ca`, containerd and k3s `ca_file`); the others say where
    /// to install it.
    pub ca_file: Option<String>,
}

impl Target {
    /// Builds a target from the mirror URL, ferry's upstreams and its default upstream.
    pub fn new<I, U>(
        mirror: &str,
        upstreams: I,
        default_upstream: Option<&str>,
    ) -> Result<Self, Error>
    where
        I: IntoIterator<Item = U>,
        U: Into<Upstream>,
    {
        let target = Target {
            mirror: Endpoint::parse(mirror)?,
            upstreams: upstreams.into_iter().map(Into::into).collect(),
            default_upstream: default_upstream.map(str::to_owned),
            hosts: BTreeMap::new(),
            fallback_servers: BTreeMap::new(),
            direct_fallback: true,
            ca_file: None,
        };
        target.plan()?;
        Ok(target)
    }

    /// Adds host-routing entries (ferry's `hosts:` map).
    pub fn with_hosts<I, K, V>(mut self, hosts: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.hosts
            .extend(hosts.into_iter().map(|(k, v)| (k.into(), v.into())));
        self.plan()?;
        Ok(self)
    }

    /// Sets the server a client falls back to for `name` when ferry fails.
    pub fn with_fallback_server(mut self, name: &str, server: &str) -> Result<Self, Error> {
        let name = normalize_registry_name(name)?;
        self.fallback_servers.insert(name, Endpoint::parse(server)?);
        Ok(self)
    }

    /// Sets whether clients may bypass ferry when it fails (see [`Target::direct_fallback`]).
    pub fn with_direct_fallback(mut self, allowed: bool) -> Self {
        self.direct_fallback = allowed;
        self
    }

    /// Sets the CA certificate path clients use to verify an `https://` ferry (see
    /// [`Target::ca_file`]).
    pub fn with_ca_file(mut self, path: &str) -> Result<Self, Error> {
        self.ca_file = Some(path.to_owned());
        self.plan()?;
        Ok(self)
    }

    /// Validates the target and works out which client entries to generate.
    pub fn plan(&self) -> Result<Plan, Error> {
        Plan::new(self)
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
