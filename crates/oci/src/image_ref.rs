//! Full image references as people write them: `nginx`, `nginx:1.25`,
//! `ghcr.io/org/app:1.0@sha256:...`, `127.0.0.1:5001/test/multi:v1`.
//!
//! The rules are Docker's: the first component is a registry when there is more than one
//! component and it contains `.` or `:` or is `localhost`; otherwise the registry is
//! `docker.io`, where a one-component repository means `library/<name>`. `index.docker.io`
//! is the same registry as `docker.io`.

use std::fmt;

use crate::digest::Digest;
use crate::name::RepoName;
use crate::reference::{Reference, Tag};

/// The registry that references without a registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (and port), e.g. `docker.io`, `ghcr.io`, `127.0.0.1:5001`.
    pub registry: String,
    /// Repository inside the registry, with `library/` added for Docker Hub official images.
    pub repository: RepoName,
    /// Tag, if one was written.
    pub tag: Option<Tag>,
    /// Digest, if one was written.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Empty input.
    #[error("image reference is empty")]
    Empty,
    /// Registry part is not a plausible host[:port].
    #[error("invalid registry {0:?} in image reference")]
    Registry(String),
    /// Repository part invalid.
    #[error("invalid repository in image reference: {0}")]
    Repository(#[from] crate::name::NameError),
    /// Tag invalid.
    #[error(transparent)]
    Tag(#[from] crate::reference::TagError),
    /// Digest invalid.
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
}

/// Whether a first path component names a registry host.
pub fn looks_like_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => (host, Some(port)),
        _ => (h, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `index.docker.io` and `docker.io` are one registry; other names are kept as written.
pub fn canonical_registry(registry: &str) -> String {
    let lower = registry.to_ascii_lowercase();
    if lower == "index.docker.io" {
        DOCKER_HUB.to_owned()
    } else {
        lower
    }
}

impl ImageRef {
    /// Parses a reference, filling in Docker's defaults.
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                if !valid_host(first) {
                    return Err(ImageRefError::Registry(first.chars().take(80).collect()));
                }
                (canonical_registry(first), path)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (
                &path[..last_slash + i],
                Some(Tag::parse(&path[last_slash + i + 1..])?),
            ),
            None => (path, None),
        };
        let mut repository = RepoName::parse(repo)?;
        if registry == DOCKER_HUB {
            repository = repository.with_library_prefix()?;
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The manifest reference to fetch: the digest if present, else the tag, else `latest`.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag(Tag::parse("latest").expect("valid tag")),
        }
    }

    /// `:tag@digest` suffix as written (either part may be absent).
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t.as_str());
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.registry, self.repository, self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn docker_defaults() {
        assert_eq!(p("nginx").to_string(), "docker.io/library/nginx");
        assert_eq!(p("nginx:1.25").to_string(), "docker.io/library/nginx:1.25");
        assert_eq!(
            p("bitnami/redis:7").to_string(),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(
            p("index.docker.io/nginx").to_string(),
            "docker.io/library/nginx"
        );
        assert_eq!(
            p("docker.io/busybox").repository.as_str(),
            "library/busybox"
        );
        assert_eq!(p("nginx").reference().as_str(), "latest");
    }

    #[test]
    fn registries_ports_digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("ghcr.io/a/b:1@{d}"));
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository.as_str(), "a/b");
        assert_eq!(r.tag.as_ref().unwrap().as_str(), "1");
        assert_eq!(r.digest.as_ref().unwrap().as_str(), d);
        assert_eq!(r.reference().as_str(), d);
        let r = p("127.0.0.1:5001/test/multi:v1");
        assert_eq!(r.registry, "127.0.0.1:5001");
        assert_eq!(r.repository.as_str(), "test/multi");
        let r = p("localhost/app");
        assert_eq!(r.registry, "localhost");
        let r = p("registry.k8s.io/a/b/c/d:v1.2.3");
        assert_eq!(r.repository.as_str(), "a/b/c/d");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "UPPER/case",
            "a::b",
            "ghcr.io/",
            "a@sha256:12",
            "bad host!/x",
            "x:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn library_prefix_respects_the_length_limit() {
        // Found by the image_ref fuzz target: 250 characters are valid, `library/` + 250 are not.
        assert!(ImageRef::parse(&"a".repeat(250)).is_err());
        assert!(ImageRef::parse(&format!("ghcr.io/{}", "a".repeat(250))).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,120}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn display_round_trips(
            reg in prop_oneof![Just("docker.io"), Just("ghcr.io"), Just("127.0.0.1:5001"), Just("quay.io")],
            repo in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}",
            tag in proptest::option::of("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,10}"),
        ) {
            let s = format!("{reg}/{repo}{}", tag.map(|t| format!(":{t}")).unwrap_or_default());
            let r = ImageRef::parse(&s).unwrap();
            prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }
    }
}
