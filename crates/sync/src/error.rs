//! Why an image could not be synced or copied, in the terms a person acts on: not found,
//! unauthorized, rate-limited, digest mismatch, unreachable, a bad list line. Every error carries
//! a message that names the object (blob or manifest) it is about; the image itself is named by
//! whoever reports the error (see [`crate::summary`]).

use std::time::Duration;

use ferry_mirror::FillError;
use ferry_mirror::{MirrorError, RouteError};
use ferry_upstream::UpstreamError;

/// A failure of one image, or of one step of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The registry does not have the repository, tag, manifest or blob.
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry wants credentials we do not have, or refused them (401/403).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The registry rate-limits us (429), and retries did not get through.
    #[error("rate-limited: {message}")]
    RateLimited {
        /// Detail.
        message: String,
        /// When the registry said to come back.
        retry_after: Option<Duration>,
    },
    /// Content did not hash to its digest.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// Connection failures, timeouts, 5xx answers: worth retrying.
    #[error("{0}")]
    Transient(String),
    /// A protocol violation or an answer that makes no sense.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// The local cache failed (disk full, permissions).
    #[error("cache storage failed: {0}")]
    Storage(String),
    /// The request itself is wrong: unknown registry, no matching tag or platform.
    #[error("{0}")]
    Usage(String),
    /// Interrupted (Ctrl-C, shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl SyncError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SyncError::Transient(_) | SyncError::RateLimited { .. }
        )
    }

    /// How long the registry asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for summaries and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::NotFound(_) => "not found",
            SyncError::Unauthorized(_) => "unauthorized",
            SyncError::RateLimited { .. } => "rate-limited",
            SyncError::DigestMismatch(_) => "digest mismatch",
            SyncError::Transient(_) => "unreachable",
            SyncError::Invalid(_) => "invalid response",
            SyncError::Storage(_) => "cache storage",
            SyncError::Usage(_) => "bad request",
            SyncError::Cancelled => "cancelled",
        }
    }

    /// The same error with `what` (a blob or manifest) named in front of the message.
    pub fn about(self, what: &str) -> SyncError {
        let prefix = |m: String| format!("{what}: {m}");
        match self {
            SyncError::NotFound(m) => SyncError::NotFound(prefix(m)),
            SyncError::Unauthorized(m) => SyncError::Unauthorized(prefix(m)),
            SyncError::RateLimited {
                message,
                retry_after,
            } => SyncError::RateLimited {
                message: prefix(message),
                retry_after,
            },
            SyncError::DigestMismatch(m) => SyncError::DigestMismatch(prefix(m)),
            SyncError::Transient(m) => SyncError::Transient(prefix(m)),
            SyncError::Invalid(m) => SyncError::Invalid(prefix(m)),
            SyncError::Storage(m) => SyncError::Storage(prefix(m)),
            SyncError::Usage(m) => SyncError::Usage(prefix(m)),
            SyncError::Cancelled => SyncError::Cancelled,
        }
    }
}

impl From<UpstreamError> for SyncError {
    fn from(e: UpstreamError) -> Self {
        let message = e.to_string();
        match e {
            UpstreamError::NotFound { .. } => SyncError::NotFound(message),
            UpstreamError::Unauthorized { .. } | UpstreamError::Denied { .. } => {
                SyncError::Unauthorized(message)
            }
            UpstreamError::RateLimited { retry_after, .. } => SyncError::RateLimited {
                message,
                retry_after,
            },
            UpstreamError::Unreachable { .. } => SyncError::Transient(message),
            UpstreamError::Status { status, .. } if status >= 500 || status == 408 => {
                SyncError::Transient(message)
            }
            UpstreamError::DigestMismatch { .. } => SyncError::DigestMismatch(message),
            UpstreamError::Status { .. } => SyncError::Invalid(message),
            UpstreamError::Invalid { .. } => SyncError::Invalid(message),
        }
    }
}

impl From<MirrorError> for SyncError {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::Upstream(u) => u.into(),
            MirrorError::Route(r @ RouteError::UnknownRegistry(_)) => {
                SyncError::Usage(format!("{r}; add it under `upstreams:` in the config"))
            }
            MirrorError::Route(r) => SyncError::Usage(r.to_string()),
            MirrorError::Storage(m) => SyncError::Storage(m),
            MirrorError::Invalid(m) => SyncError::Usage(m),
            MirrorError::Range { .. } => SyncError::Invalid(e.to_string()),
            MirrorError::Fill {
                error: FillError::DigestMismatch { .. },
                ..
            } => SyncError::DigestMismatch(e.to_string()),
            MirrorError::Fill { .. } => SyncError::Transient(e.to_string()),
            // Not from `Ungated` (what sync passes); a refused miss is a quota that passes.
            MirrorError::MissRefused(_) => SyncError::Transient(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_oci::ErrorCode;

    #[test]
    fn classification() {
        let nf: SyncError = UpstreamError::NotFound {
            code: ErrorCode::ManifestUnknown,
            message: "manifest unknown".into(),
        }
        .into();
        assert_eq!(nf.reason(), "not found");
        assert!(!nf.is_retryable());
        let rl: SyncError = UpstreamError::RateLimited {
            upstream: "docker.io".into(),
            retry_after: Some(Duration::from_secs(3)),
        }
        .into();
        assert!(rl.is_retryable());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(3)));
        let s5: SyncError = UpstreamError::Status {
            upstream: "u".into(),
            status: 503,
            message: "down".into(),
        }
        .into();
        assert!(s5.is_retryable());
        let dm: SyncError = UpstreamError::DigestMismatch {
            upstream: "u".into(),
            message: "manifest sha256:a has digest sha256:b".into(),
        }
        .into();
        assert_eq!(dm.reason(), "digest mismatch");
        assert!(!dm.is_retryable());
        let fill: SyncError = MirrorError::Fill {
            digest: "sha256:x".into(),
            error: FillError::DigestMismatch {
                got: "sha256:y".into(),
            },
        }
        .into();
        assert_eq!(fill.reason(), "digest mismatch");
        assert!(!fill.is_retryable());
        let e = SyncError::NotFound("gone".into()).about("blob sha256:ab");
        assert_eq!(e.to_string(), "not found: blob sha256:ab: gone");
    }
}
