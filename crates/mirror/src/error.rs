//! Errors of the cache engine. The server turns each into an OCI error in one place.

use ferry_storage::FillError;
use ferry_upstream::UpstreamError;

use crate::route::RouteError;

/// Why a mirror request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// The name does not route to an upstream repository.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The upstream failed or said no, and nothing cached could answer.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The cache storage failed. Only storage failures (of the store, the spool, the local
    /// disk) are here, as their message: `MirrorError` is `Clone` (one answer is shared by
    /// every request a single flight serves) and `std::io::Error` is not; nothing inspects the
    /// text, callers match the variant.
    #[error("cache storage failed: {0}")]
    Storage(String),
    /// The caller asked for something that cannot be (a bad repository pattern).
    #[error("{0}")]
    Invalid(String),
    /// A `Range` that cannot be served for a blob of this size.
    #[error("range cannot be satisfied for a blob of {size} bytes: {message}")]
    Range {
        /// Size of the blob.
        size: u64,
        /// What was wrong.
        message: String,
    },
    /// A download failed its integrity check, was cut, or could not be stored.
    #[error("download of {digest} failed: {error}")]
    Fill {
        /// Which blob (empty until the caller names it).
        digest: String,
        /// Why.
        error: FillError,
    },
    /// The request's [`crate::MissGate`] refused the upstream fetch it needed.
    #[error(transparent)]
    MissRefused(#[from] crate::gate::MissRefused),
}

impl From<ferry_storage::StorageError> for MirrorError {
    fn from(e: ferry_storage::StorageError) -> Self {
        MirrorError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for MirrorError {
    fn from(e: std::io::Error) -> Self {
        MirrorError::Storage(e.to_string())
    }
}

impl MirrorError {
    /// A failed download of a blob not named yet.
    pub(crate) fn fill(error: FillError) -> Self {
        MirrorError::Fill {
            digest: String::new(),
            error,
        }
    }

    /// The failure as the readers of a download get it.
    pub(crate) fn to_fill_error(&self) -> FillError {
        match self {
            MirrorError::Fill { error, .. } => error.clone(),
            MirrorError::Upstream(u) => FillError::Upstream {
                reason: u.reason(),
                message: u.to_string(),
            },
            other => FillError::Storage(other.to_string()),
        }
    }
}

/// Result of mirror calls.
pub type Result<T> = std::result::Result<T, MirrorError>;
