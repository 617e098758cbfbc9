//! The [`Plan`]: a [`Target`] validated (every name normalized and owned by one upstream,
//! every reference to an upstream resolved) and turned into the client entries to generate,
//! with the names no client can be configured for and why.

use std::collections::BTreeMap;

use crate::Error;
use crate::target::{
    DOCKER_HUB_SERVER, Endpoint, Target, Upstream, clients_can_name, is_docker_hub,
    normalize_registry_name,
};

/// One client-visible registry name to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as clients write it (`docker.io`, `k8s.gcr.io`).
    pub name: String,
    /// The ferry upstream that serves it (equal to `name` unless `name` is an alias).
    pub upstream: String,
    /// Where the client falls back to when ferry fails.
    pub fallback: Endpoint,
    /// Whether `fallback` is the built-in default (the registry's real address).
    pub fallback_is_default: bool,
}

/// A validated [`Target`]: the entries to generate and what the mirror address means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// ferry's address.
    pub mirror: Endpoint,
    /// Client entries, in the target's order (upstream, then its aliases), without duplicates.
    pub entries: Vec<Entry>,
    /// The default upstream, normalized.
    pub default_upstream: Option<String>,
    /// Set when the mirror's host is a `hosts:` key: the only upstream this address serves.
    pub dedicated_to: Option<String>,
    /// Whether clients may go to the registries directly when ferry fails.
    pub direct_fallback: bool,
    /// Names left out, with the reason (shown to the user as notes).
    pub skipped: Vec<String>,
    /// Every upstream name (not aliases) and its aliases, normalized.
    pub upstreams: Vec<Upstream>,
    /// The CA certificate for an `https://` ferry, if given (see [`Target::ca_file`]).
    pub ca_file: Option<String>,
}

impl Plan {
    pub(crate) fn new(target: &Target) -> Result<Plan, Error> {
        let mirror = target.mirror.clone();
        let (upstreams, owners) = Owners::of(&target.upstreams)?;
        let default_upstream = match target.default_upstream.as_deref() {
            None | Some("") => None,
            Some(d) => Some(owners.resolve(d, "default_upstream")?),
        };
        let dedicated_to = dedicated_to(target, &owners)?;
        for name in target.fallback_servers.keys() {
            owners.resolve(name, "fallback_servers")?;
        }
        let (entries, skipped) = entries(target, &upstreams, dedicated_to.as_deref());
        if entries.is_empty() {
            return Err(Error::NothingToConfigure { reasons: skipped });
        }
        crate::check_ca_file(target.ca_file.as_deref(), &mirror)?;
        Ok(Plan {
            mirror,
            entries,
            default_upstream,
            dedicated_to,
            direct_fallback: target.direct_fallback,
            skipped,
            upstreams,
            ca_file: target.ca_file.clone(),
        })
    }

    /// Whether the upstream named `name` is Docker Hub (by its name or one of its aliases).
    pub fn upstream_is_docker_hub(&self, name: &str) -> bool {
        self.upstreams
            .iter()
            .filter(|u| u.name == name)
            .any(|u| is_docker_hub(&u.name) || u.aliases.iter().any(|a| is_docker_hub(a)))
    }
}

/// Every name and alias, normalized, and the upstream that owns it.
struct Owners(BTreeMap<String, String>);

impl Owners {
    /// The normalized upstreams and who owns each name; a name owned twice is an error.
    fn of(list: &[Upstream]) -> Result<(Vec<Upstream>, Owners), Error> {
        let mut upstreams = Vec::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for up in list {
            let name = normalize_registry_name(&up.name)?;
            let mut aliases = Vec::new();
            for alias in &up.aliases {
                aliases.push(normalize_registry_name(alias)?);
            }
            for n in std::iter::once(&name).chain(aliases.iter()) {
                if let Some(prev) = owner.get(n)
                    && *prev != name
                {
                    return Err(Error::DuplicateName {
                        name: n.clone(),
                        first: prev.clone(),
                        second: name.clone(),
                    });
                }
                owner.insert(n.clone(), name.clone());
            }
            upstreams.push(Upstream { name, aliases });
        }
        if upstreams.is_empty() {
            return Err(Error::NoUpstreams);
        }
        Ok((upstreams, Owners(owner)))
    }

    /// The upstream that `n` (a name or alias, used by `what`) means.
    fn resolve(&self, n: &str, what: &str) -> Result<String, Error> {
        let norm = normalize_registry_name(n)?;
        self.0
            .get(&norm)
            .cloned()
            .ok_or_else(|| Error::UnknownUpstream {
                name: n.to_owned(),
                used_by: what.to_owned(),
                known: self.0.keys().cloned().collect(),
            })
    }
}

/// The only upstream the mirror's address serves, when its host is a `hosts:` key.
fn dedicated_to(target: &Target, owners: &Owners) -> Result<Option<String>, Error> {
    let mut host_routes = BTreeMap::new();
    for (host, up) in &target.hosts {
        let canonical = owners.resolve(up, &format!("hosts: {host}"))?;
        host_routes.insert(host.trim().to_ascii_lowercase(), canonical);
    }
    let mirror = &target.mirror;
    Ok(host_routes
        .get(&mirror.authority())
        .or_else(|| host_routes.get(mirror.host()))
        .cloned())
}

/// The client entries, in the upstreams' order (name, then aliases), and the names left out
/// with the reason.
fn entries(
    target: &Target,
    upstreams: &[Upstream],
    dedicated_to: Option<&str>,
) -> (Vec<Entry>, Vec<String>) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut skipped = Vec::new();
    for up in upstreams {
        if dedicated_to.is_some_and(|d| d != up.name) {
            continue;
        }
        for name in std::iter::once(&up.name).chain(up.aliases.iter()) {
            if entries.iter().any(|e| &e.name == name) {
                continue;
            }
            match entry(target, &up.name, name) {
                Ok(e) => entries.push(e),
                Err(reason) => skipped.push(reason),
            }
        }
    }
    (entries, skipped)
}

/// The entry for client-visible `name` of `upstream`, or why no client can be configured for
/// it.
fn entry(target: &Target, upstream: &str, name: &str) -> Result<Entry, String> {
    let mirror = &target.mirror;
    if name == mirror.authority() {
        return Err(format!(
            "{name}: it is the mirror's own address; a client entry for it would \
             send ferry's own traffic back to ferry"
        ));
    }
    if !clients_can_name(name) {
        return Err(format!(
            "{name}: clients read a first component without '.' or ':' as a \
             Docker Hub namespace, so no client configuration can select it; pull \
             it through the path-prefix form {}/{name}/<repo>",
            mirror.authority()
        ));
    }
    let (fallback, fallback_is_default) = match target.fallback_servers.get(name) {
        Some(f) => (f.clone(), false),
        None => (default_fallback(name), true),
    };
    Ok(Entry {
        name: name.to_owned(),
        upstream: upstream.to_owned(),
        fallback,
        fallback_is_default,
    })
}

/// The server a client uses for `name` when it has no configuration.
fn default_fallback(name: &str) -> Endpoint {
    let url = if is_docker_hub(name) {
        DOCKER_HUB_SERVER.to_owned()
    } else {
        format!("https://{name}")
    };
    Endpoint::parse(&url).expect("a validated registry name makes a valid URL")
}
