//! Which upstream and which repository a request means — the five routing forms of the spec,
//! as one pure function of the request's name, `?ns=` parameter and `Host` header:
//!
//! 1. `?ns=<registry>` (containerd's hosts.toml mirror) names the upstream;
//! 2. a `Host` header listed under `hosts:` names the upstream;
//! 3. a first path component that is a configured upstream or alias (path-prefix form,
//!    `/v2/ghcr.io/org/app/...`) names it;
//! 4. otherwise the request is for `default_upstream` (Docker's `registry-mirrors` form);
//!
//! and 5., on docker.io a one-component repository means `library/<name>`. A first component
//! that looks like a registry host (has a `.` or `:`, or is `localhost`) but is not configured
//! is an unknown registry: ferry is not an open proxy.

use std::collections::HashMap;

use ferry_config::Config;
use ferry_oci::image_ref::looks_like_registry;
use ferry_oci::{NameError, RepoName};

/// Docker Hub's canonical name, where `library/` applies.
pub const DOCKER_HUB: &str = "docker.io";

/// A resolved request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Canonical upstream name (a key of `upstreams:`).
    pub upstream: String,
    /// Repository inside that upstream.
    pub repository: RepoName,
}

/// Why a name cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A registry ferry does not mirror.
    #[error("registry {0:?} is not mirrored here (not a configured upstream)")]
    UnknownRegistry(String),
    /// The repository part is invalid.
    #[error("{0}")]
    InvalidName(#[from] NameError),
    /// A registry with no repository after it.
    #[error("no repository named after registry {0:?}")]
    MissingRepository(String),
}

/// Routing tables derived from the config.
#[derive(Debug, Clone)]
pub struct Router {
    names: HashMap<String, String>,
    hosts: HashMap<String, String>,
    default: String,
}

impl Router {
    /// Builds the tables (the config is already validated).
    pub fn new(config: &Config) -> Self {
        let mut names = HashMap::new();
        for (name, u) in &config.upstreams {
            names.insert(name.clone(), name.clone());
            for a in &u.aliases {
                names.insert(a.clone(), name.clone());
            }
        }
        let hosts = config
            .hosts
            .iter()
            .map(|(h, u)| {
                (
                    h.to_ascii_lowercase(),
                    names.get(u).cloned().unwrap_or_else(|| u.clone()),
                )
            })
            .collect();
        let default = names
            .get(&config.default_upstream)
            .cloned()
            .unwrap_or_else(|| config.default_upstream.clone());
        Router {
            names,
            hosts,
            default,
        }
    }

    /// The canonical name of an upstream name or alias.
    pub fn canonical(&self, name: &str) -> Option<&str> {
        self.names
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Resolves a request (see the module doc for the order of the rules).
    pub fn resolve(
        &self,
        name: &str,
        ns: Option<&str>,
        host: Option<&str>,
    ) -> Result<Routed, RouteError> {
        let (upstream, path) = self.pick(name, ns, host)?;
        let mut repository = RepoName::parse(path)?;
        if upstream == DOCKER_HUB {
            repository = repository.with_library_prefix()?;
        }
        Ok(Routed {
            upstream: upstream.to_owned(),
            repository,
        })
    }

    fn pick<'a>(
        &'a self,
        name: &'a str,
        ns: Option<&str>,
        host: Option<&str>,
    ) -> Result<(&'a str, &'a str), RouteError> {
        let (first, rest) = match name.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (name, None),
        };
        if let Some(ns) = ns.filter(|n| !n.is_empty()) {
            let up = self
                .canonical(ns)
                .ok_or_else(|| RouteError::UnknownRegistry(ns.to_owned()))?;
            // A path that repeats the registry (`/v2/ghcr.io/x?ns=ghcr.io`) is the path-prefix form.
            return match rest {
                Some(r) if self.canonical(first) == Some(up) => Ok((up, r)),
                _ => Ok((up, name)),
            };
        }
        if let Some(up) = host.and_then(|h| self.host_upstream(h)) {
            return Ok((up, name));
        }
        if let Some(up) = self.canonical(first) {
            return rest
                .map(|r| (up, r))
                .ok_or_else(|| RouteError::MissingRepository(first.to_owned()));
        }
        if rest.is_some() && looks_like_registry(first) {
            return Err(RouteError::UnknownRegistry(
                first.chars().take(100).collect(),
            ));
        }
        Ok((self.default.as_str(), name))
    }

    fn host_upstream(&self, host: &str) -> Option<&str> {
        let host = host.to_ascii_lowercase();
        let bare = host.rsplit_once(':').map(|(h, _)| h);
        self.hosts
            .get(&host)
            .or_else(|| bare.and_then(|b| self.hosts.get(b)))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router() -> Router {
        let text = "upstreams:\n  docker.io:\n    aliases: [index.docker.io]\n  ghcr.io: {}\n  registry.k8s.io:\n    aliases: [k8s.gcr.io]\n  127.0.0.1:5001: {url: 'http://127.0.0.1:5001'}\nhosts:\n  gh.mirror.example: ghcr.io\n";
        Router::new(&Config::from_yaml(text, Vec::new()).unwrap())
    }

    fn ok(name: &str, ns: Option<&str>, host: Option<&str>) -> (String, String) {
        let r = router().resolve(name, ns, host).unwrap();
        (r.upstream, r.repository.to_string())
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn the_five_forms() {
        assert_eq!(
            ok("ghcr.io/org/app", None, None),
            pair("ghcr.io", "org/app")
        );
        assert_eq!(ok("org/app", None, None), pair("docker.io", "org/app"));
        assert_eq!(
            ok("org/app", Some("ghcr.io"), None),
            pair("ghcr.io", "org/app")
        );
        assert_eq!(
            ok("org/app", None, Some("gh.mirror.example:5000")),
            pair("ghcr.io", "org/app")
        );
        assert_eq!(
            ok("busybox", None, None),
            pair("docker.io", "library/busybox")
        );
        assert_eq!(
            ok("docker.io/busybox", None, None),
            pair("docker.io", "library/busybox")
        );
        assert_eq!(
            ok("busybox", Some("docker.io"), None),
            pair("docker.io", "library/busybox")
        );
    }

    #[test]
    fn aliases_depth_and_ports() {
        assert_eq!(
            ok("k8s.gcr.io/pause", None, None),
            pair("registry.k8s.io", "pause")
        );
        assert_eq!(
            ok("index.docker.io/nginx", None, None),
            pair("docker.io", "library/nginx")
        );
        assert_eq!(
            ok("ghcr.io/a/b/c/d", None, None),
            pair("ghcr.io", "a/b/c/d")
        );
        assert_eq!(
            ok("127.0.0.1:5001/test/multi", None, None),
            pair("127.0.0.1:5001", "test/multi")
        );
        assert_eq!(
            ok("pause", Some("k8s.gcr.io"), None),
            pair("registry.k8s.io", "pause")
        );
        assert_eq!(
            ok("ghcr.io/org/app", Some("ghcr.io"), None),
            pair("ghcr.io", "org/app")
        );
        // Host routing does not apply to unknown hosts.
        assert_eq!(
            ok("org/app", None, Some("mirror.example:5000")),
            pair("docker.io", "org/app")
        );
    }

    #[test]
    fn unknown_registries_and_bad_names() {
        let r = router();
        assert_eq!(
            r.resolve("quay.io/org/app", None, None),
            Err(RouteError::UnknownRegistry("quay.io".into()))
        );
        assert!(
            r.resolve("org/app", Some("evil.example"), None)
                .unwrap_err()
                .to_string()
                .contains("evil.example")
        );
        assert!(matches!(
            r.resolve("ghcr.io", None, None),
            Err(RouteError::MissingRepository(_))
        ));
        assert!(matches!(
            r.resolve("Org/App", None, None),
            Err(RouteError::InvalidName(_))
        ));
        assert!(matches!(
            r.resolve("ghcr.io/A", None, None),
            Err(RouteError::InvalidName(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(name in "[a-z0-9.:/_-]{1,60}", ns in proptest::option::of("[a-z0-9.:]{0,20}")) {
            let _ = router().resolve(&name, ns.as_deref(), None);
        }

        #[test]
        fn routed_names_are_valid(name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,4}") {
            if let Ok(r) = router().resolve(&name, None, None) {
                prop_assert!(RepoName::parse(r.repository.as_str()).is_ok());
            }
        }
    }
}
