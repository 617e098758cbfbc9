//! What the server tells access control about a request: the client IP, the headers (for
//! `Authorization`), what is asked for, and the token realm to put in challenges.

use std::net::IpAddr;

use http::HeaderMap;

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The client address (from [`crate::Access::client_ip`]).
    pub ip: IpAddr,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// What is asked for; `None` for `GET /v2/` (which is never counted against quotas).
    pub target: Option<Resource<'a>>,
    /// The absolute token URL for `WWW-Authenticate` challenges (`https://mirror/token`).
    pub realm: &'a str,
}

/// A repository request after routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The canonical upstream name (`docker.io`, not an alias).
    pub upstream: &'a str,
    /// The repository, docker.io's `library/` spelled out (`library/nginx`).
    pub repository: &'a str,
    /// What kind of object.
    pub kind: TargetKind,
    /// The digest of a blob request (fair-use rules per client and blob).
    pub digest: Option<&'a str>,
}

/// Kinds of objects; the bandwidth cap applies to blobs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A manifest or index.
    Manifest,
    /// A blob (layer or config).
    Blob,
    /// A tag list.
    Tags,
    /// The referrers of a manifest.
    Referrers,
}
