//! Errors building an access policy from the config (bad settings, unreadable files, a bad
//! Redis URL). Refusals of requests are not errors: they are [`crate::Denial`]s.

use std::path::PathBuf;

/// Why an access policy could not be built; on reload the old policy stays in force.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The `access:` section has problems (each names its key).
    #[error("invalid access config: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A file named by the config cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of the htpasswd file is not a bcrypt user.
    #[error("{path}:{line}: {message}")]
    Htpasswd {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A repository pattern does not compile.
    #[error("access.{key}: {message}")]
    Pattern {
        /// `allow`, `deny` or `allow_file`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The Redis URL is not usable (the URL itself is not repeated: it may hold a password).
    #[error("redis.url: {0}")]
    Redis(String),
}
