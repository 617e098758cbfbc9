//! Fault rules: which requests ([`Rule`]) get which fault ([`Fault`]).

use super::*;

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
    /// Answer 307 to this location once authenticated; a location that is a path is on the
    /// registry listener (which serves `/cdn/blobs/<digest>` too, unauthenticated: a
    /// same-origin storage host).
    RedirectTo(String),
    /// Answer 307 to the same path on the CDN listener once authenticated (the CDN serves any
    /// path ending in `/blobs/<digest>`).
    RedirectToCdnPath,
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
    pub(super) fault: Fault,
    pub(super) times: Option<usize>,
    on_cdn: bool,
    peer: Option<std::net::IpAddr>,
    authorized: bool,
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
            authorized: false,
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

    /// Only requests that carry an `Authorization` header (a limit per account, applied after
    /// the anonymous challenge).
    pub fn authorized(mut self) -> Rule {
        self.authorized = true;
        self
    }

    pub(super) fn matches(&self, r: &RequestRecord) -> bool {
        self.on_cdn == r.cdn
            && self.peer.is_none_or(|p| Some(p) == r.peer)
            && self.method.as_deref().is_none_or(|m| m == r.method)
            && (!self.authorized || r.authorization.is_some())
            && match &self.matcher {
                PathMatch::Any => true,
                PathMatch::Exact(p) => *p == r.path,
                PathMatch::Contains(p) => r.path.contains(p.as_str()),
            }
    }
}

/// Identifies a rule added with [`FaultyUpstream::add_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub(super) u64);

#[derive(Debug)]
pub(super) struct RuleState {
    pub(super) id: RuleId,
    pub(super) rule: Rule,
    pub(super) hits: usize,
}
