//! What can go wrong talking to an upstream, classified by what the mirror should do about it:
//! pass a "not found" through, serve stale content on a transient failure, or explain.

use std::time::Duration;

use ferry_oci::ErrorCode;

/// An upstream failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream says the thing does not exist (404).
    #[error("{message}")]
    NotFound {
        /// The OCI code from the upstream body, or a default for the request kind.
        code: ErrorCode,
        /// The upstream's message.
        message: String,
    },
    /// The upstream wants credentials ferry does not have or that it refused (401).
    #[error("upstream {upstream} refused authentication: {message}")]
    Unauthorized {
        /// Upstream name.
        upstream: String,
        /// Detail.
        message: String,
    },
    /// The upstream denies access (403).
    #[error("upstream {upstream} denied access: {message}")]
    Denied {
        /// Upstream name.
        upstream: String,
        /// Detail.
        message: String,
    },
    /// The upstream rate-limits us (429) on every account.
    #[error("upstream {upstream} is rate-limiting pulls")]
    RateLimited {
        /// Upstream name.
        upstream: String,
        /// When to try again, if the upstream said.
        retry_after: Option<Duration>,
    },
    /// Any other error status (5xx, unexpected 4xx).
    #[error("upstream {upstream} answered {status}: {message}")]
    Status {
        /// Upstream name.
        upstream: String,
        /// HTTP status.
        status: u16,
        /// Detail.
        message: String,
    },
    /// No response: connection refused or cut, DNS, TLS, timeout.
    #[error("upstream {upstream} is unreachable: {message}")]
    Unreachable {
        /// Upstream name.
        upstream: String,
        /// Detail.
        message: String,
    },
    /// Content and digest disagree: a manifest whose bytes do not hash to the digest asked
    /// for, or a push destination that refused content as `DIGEST_INVALID`.
    #[error("upstream {upstream}: digest mismatch: {message}")]
    DigestMismatch {
        /// Upstream name.
        upstream: String,
        /// Detail.
        message: String,
    },
    /// A response that breaks the protocol (oversized manifest, missing headers, ...).
    #[error("upstream {upstream} sent an invalid response: {message}")]
    Invalid {
        /// Upstream name.
        upstream: String,
        /// Detail.
        message: String,
    },
}

impl UpstreamError {
    /// Whether the failure is the upstream's condition rather than an answer about the content:
    /// cached content may be served instead (stale-if-error).
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::RateLimited { .. } | UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::Unauthorized { .. } | UpstreamError::Denied { .. } => true,
            UpstreamError::NotFound { .. }
            | UpstreamError::Invalid { .. }
            | UpstreamError::DigestMismatch { .. } => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::NotFound { .. } => "not_found",
            UpstreamError::Unauthorized { .. } => "unauthorized",
            UpstreamError::Denied { .. } => "denied",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Status { .. } => "status",
            UpstreamError::Unreachable { .. } => "unreachable",
            UpstreamError::Invalid { .. } => "invalid",
            UpstreamError::DigestMismatch { .. } => "digest_mismatch",
        }
    }
}

/// The first `{code, message}` of an OCI error body, if it is one.
pub fn parse_oci_error(body: &[u8]) -> Option<(Option<ErrorCode>, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    let e = b.errors.into_iter().next()?;
    Some((ErrorCode::from_code(&e.code), e.message))
}

/// Parses `Retry-After` given in seconds (an HTTP date counts as one minute).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_bodies() {
        let (code, msg) = parse_oci_error(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .unwrap();
        assert_eq!(code, Some(ErrorCode::ManifestUnknown));
        assert_eq!(msg, "manifest unknown");
        assert!(parse_oci_error(b"<html>").is_none());
    }

    #[test]
    fn transient_classes() {
        let up = || "u".to_string();
        assert!(
            UpstreamError::RateLimited {
                upstream: up(),
                retry_after: None
            }
            .is_transient()
        );
        assert!(
            UpstreamError::Status {
                upstream: up(),
                status: 502,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !UpstreamError::Status {
                upstream: up(),
                status: 400,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !UpstreamError::NotFound {
                code: ErrorCode::ManifestUnknown,
                message: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn retry_after_values() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }
}
