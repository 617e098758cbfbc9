//! Parses the path of a `/v2/...` request, from the right, into a [`Route`].
//!
//! Repository names contain `/`, so the endpoint is found from the end of the path:
//! `<name>/manifests/<reference>`, `<name>/blobs/<digest>`, `<name>/blobs/uploads/...`,
//! `<name>/tags/list`, `<name>/referrers/<digest>`. The name is checked structurally here
//! (no `%`, no empty, `.` or `..` components, bounded length); whether its first component is
//! a registry is decided later by routing, which then validates the repository part.
//!
//! The parser works on the raw, still percent-encoded path: ferry never decodes it, so an
//! encoded slash or dot (`%2f`, `%2e`) is simply an invalid name.

use crate::digest::{Digest, DigestError};
use crate::reference::{Reference, ReferenceError};

/// The longest path accepted, far above any real name + reference.
pub const MAX_PATH_LEN: usize = 1024;

/// What a `/v2/` request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// An endpoint of one repository. `name` may still carry a registry prefix.
    Repo {
        /// The name part, structurally checked but not yet split into registry + repository.
        name: &'a str,
        /// Which endpoint of the repository.
        endpoint: Endpoint,
    },
}

/// An endpoint under a repository name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/manifests/<reference>`.
    Manifest(Reference),
    /// `/blobs/<digest>`.
    Blob(Digest),
    /// `/blobs/uploads/...`: the push side, which a mirror does not serve.
    BlobUpload,
    /// `/tags/list`.
    TagsList,
    /// `/referrers/<digest>`.
    Referrers(Digest),
}

/// Why a path is not a valid `/v2/` route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not under `/v2/` or no known endpoint: a plain 404.
    #[error("no such API endpoint")]
    NotFound,
    /// Path longer than [`MAX_PATH_LEN`].
    #[error("request path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The name part is structurally invalid.
    #[error("invalid repository name {0:?}")]
    Name(String),
    /// Invalid digest in a blob or referrers path.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Invalid manifest reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// Parses a raw request path such as `/v2/library/nginx/manifests/latest`.
pub fn parse(path: &str) -> Result<Route<'_>, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Route::Base),
        Some(r) => r.strip_prefix('/').ok_or(PathError::NotFound)?,
        None => return Err(PathError::NotFound),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let (name, endpoint) = split_endpoint(rest)?;
    check_name(name)?;
    Ok(Route::Repo { name, endpoint })
}

fn split_endpoint(rest: &str) -> Result<(&str, Endpoint), PathError> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok((name, Endpoint::TagsList));
    }
    if let Some(i) = rest.find("/blobs/uploads") {
        let tail = &rest[i + "/blobs/uploads".len()..];
        if tail.is_empty() || tail.starts_with('/') {
            return Ok((&rest[..i], Endpoint::BlobUpload));
        }
    }
    let (head, last) = rest.rsplit_once('/').ok_or(PathError::NotFound)?;
    let (name, kind) = head.rsplit_once('/').ok_or(PathError::NotFound)?;
    let endpoint = match kind {
        "manifests" => Endpoint::Manifest(Reference::parse(last)?),
        "blobs" => Endpoint::Blob(Digest::parse(last)?),
        "referrers" => Endpoint::Referrers(Digest::parse(last)?),
        _ => return Err(PathError::NotFound),
    };
    Ok((name, endpoint))
}

fn check_name(name: &str) -> Result<(), PathError> {
    let bad = name.is_empty()
        || name.contains('%')
        || name.contains('\\')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255);
    if bad {
        Err(PathError::Name(name.chars().take(120).collect()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(path: &str) -> (String, Endpoint) {
        match parse(path).unwrap() {
            Route::Repo { name, endpoint } => (name.to_owned(), endpoint),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn base_and_catalog() {
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(parse("/v1/"), Err(PathError::NotFound));
        assert_eq!(parse("/v2x"), Err(PathError::NotFound));
    }

    #[test]
    fn endpoints() {
        let (n, e) = repo("/v2/ghcr.io/org/app/manifests/1.0");
        assert_eq!(n, "ghcr.io/org/app");
        assert_eq!(e, Endpoint::Manifest(Reference::parse("1.0").unwrap()));
        let (n, e) = repo(&format!("/v2/a/b/c/d/blobs/{D}"));
        assert_eq!(n, "a/b/c/d");
        assert_eq!(e, Endpoint::Blob(Digest::parse(D).unwrap()));
        assert_eq!(repo("/v2/busybox/tags/list").1, Endpoint::TagsList);
        assert_eq!(
            repo(&format!("/v2/x/referrers/{D}")).1,
            Endpoint::Referrers(Digest::parse(D).unwrap())
        );
        assert_eq!(repo("/v2/x/blobs/uploads/").1, Endpoint::BlobUpload);
        assert_eq!(repo("/v2/x/blobs/uploads/abc-123").1, Endpoint::BlobUpload);
        // A repository may itself contain endpoint words.
        let (n, _) = repo("/v2/manifests/manifests/manifests/x");
        assert_eq!(n, "manifests/manifests");
        let (n, _) = repo("/v2/127.0.0.1:5001/test/multi/manifests/v1");
        assert_eq!(n, "127.0.0.1:5001/test/multi");
    }

    #[test]
    fn rejects_traversal_and_encoding() {
        for bad in [
            "/v2/../etc/manifests/x",
            "/v2/a/../../blobs/x/manifests/y",
            "/v2/a%2f..%2fb/manifests/latest",
            "/v2/a%2e%2e/manifests/latest",
            "/v2//a/manifests/latest",
            "/v2/a//b/manifests/latest",
            "/v2/./a/manifests/latest",
            "/v2/a\\b/manifests/latest",
            "/v2/manifests/latest",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert!(parse("/v2/a/blobs/sha256:../../x").is_err());
        assert!(matches!(
            parse("/v2/a/blobs/sha256:xyz"),
            Err(PathError::Digest(_))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/../x"),
            Err(PathError::NotFound | PathError::Name(_))
        ));
        assert_eq!(
            parse(&format!("/v2/{}/manifests/x", "a/".repeat(600))),
            Err(PathError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "/v2/[a-z0-9./:%_-]{0,120}") {
            let _ = parse(&s);
        }

        #[test]
        fn names_never_traverse(s in "/v2/[a-z./]{0,40}/manifests/[a-z]{1,5}") {
            if let Ok(Route::Repo { name, .. }) = parse(&s) {
                prop_assert!(name.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }

        #[test]
        fn round_trip(name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,5}", tag in "[a-z0-9_][a-z0-9._-]{0,20}") {
            let path = format!("/v2/{name}/manifests/{tag}");
            let (n, e) = repo(&path);
            prop_assert_eq!(n, name);
            prop_assert_eq!(e, Endpoint::Manifest(Reference::parse(&tag).unwrap()));
        }
    }
}
