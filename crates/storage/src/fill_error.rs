//! Why a download ("fill") did not become a cache entry: one typed value that the download
//! task, every client following the download ([`crate::chunks::Progress::Failed`]), the cache
//! engine's errors and `ferry sync` all carry, so nobody classifies a failure by its text.

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The bytes do not hash to the digest asked for.
    #[error("digest mismatch: upstream content hashes to {got}")]
    DigestMismatch {
        /// The digest of what arrived.
        got: String,
    },
    /// The upstream ended the body before its `Content-Length`.
    #[error("upstream sent {got} of {expected} bytes")]
    Short {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The upstream sent more than its `Content-Length`.
    #[error("upstream sent more bytes than its Content-Length")]
    TooLong,
    /// The connection was cut more often than a download is resumed.
    #[error("connection failed after {resumes} resumes: {message}")]
    Cut {
        /// Resumes tried.
        resumes: usize,
        /// The last connection error.
        message: String,
    },
    /// `cache.fill_timeout` ran out.
    #[error("download took longer than cache.fill_timeout")]
    Timeout,
    /// The upstream refused or failed (its answer, as the upstream client classified it).
    #[error("{message}")]
    Upstream {
        /// Metric label of the upstream error (`not_found`, `rate_limited`, ...).
        reason: &'static str,
        /// What the upstream said.
        message: String,
    },
    /// Writing the spool file or storing the verified blob failed.
    #[error("cache storage failed: {0}")]
    Storage(String),
    /// The stored blob (by another replica, or just now) disappeared before it could be read.
    #[error("the blob vanished from the store while it was being read")]
    Vanished,
    /// The download task ended without a result (it panicked or was cancelled).
    #[error("download task ended")]
    Abandoned,
}

impl FillError {
    /// Metric label (`ferry_fill_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            FillError::DigestMismatch { .. } => "digest_mismatch",
            FillError::Short { .. }
            | FillError::TooLong
            | FillError::Cut { .. }
            | FillError::Timeout
            | FillError::Vanished
            | FillError::Abandoned => "download",
            FillError::Upstream { reason, .. } => reason,
            FillError::Storage(_) => "storage",
        }
    }

    /// The error a reader of a failed download gets: an `io::Error` whose inner error is this
    /// value (see [`FillError::of_io`]).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The fill error inside an `io::Error` made by [`FillError::into_io`], if it is one.
    pub fn of_io(e: &std::io::Error) -> Option<&FillError> {
        e.get_ref()?.downcast_ref::<FillError>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn travels_through_io_errors_and_keeps_its_reason() {
        let e = FillError::DigestMismatch {
            got: "sha256:00".into(),
        }
        .into_io();
        assert_eq!(
            FillError::of_io(&e).map(FillError::reason),
            Some("digest_mismatch")
        );
        assert!(e.to_string().contains("hashes to sha256:00"));
        assert_eq!(FillError::of_io(&std::io::Error::other("plain")), None);
    }
}
