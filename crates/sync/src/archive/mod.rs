//! Images carried offline: `ferry export` writes the images of a sync list as one OCI
//! image-layout archive, and `ferry import` loads such an archive (or a `docker save` one) into
//! a mirror's cache.
//!
//! - [`layout`]: the OCI image layout on disk (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`)
//!   and the tar of it;
//! - [`export`]: a [`crate::walk::Transfer`] from the mirror (cache first, then upstream) into
//!   a staging layout, resumable, then tarred;
//! - [`extract`]: reading an archive into verified spool files, naming any bad entry;
//! - [`import`]: OCI layouts and docker-save archives into the cache, tags last;
//! - [`transports`]: `ferry copy` to and from `oci:`, `oci-archive:` and `docker-archive:`
//!   (skopeo's transport names), over [`local`] sources, [`sink`]s and the [`mixed`] transfer.

pub mod export;
pub mod extract;
pub mod import;
pub mod layout;
pub mod local;
pub mod mixed;
pub mod sink;
pub mod transports;

use std::path::PathBuf;

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// An entry of the archive is bad (truncated, corrupt, wrong digest, missing).
    #[error("archive entry {entry}: {message}")]
    Entry {
        /// The entry's name in the archive.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// The archive is not an OCI layout or a docker-save archive, or its JSON is wrong.
    #[error("{0}")]
    Format(String),
    /// The cache refused content, or an image names a registry that is not mirrored.
    #[error("{0}")]
    Cache(String),
}

impl ArchiveError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }

    /// An error about entry `entry`.
    pub fn entry(entry: &str, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Entry {
            entry: entry.to_owned(),
            message: message.into(),
        }
    }
}

/// A name for a scratch directory no other run uses (process id, time, a counter).
pub fn scratch_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{}-{now:x}-{n}", std::process::id())
}

impl From<ferry_mirror::MirrorError> for ArchiveError {
    fn from(e: ferry_mirror::MirrorError) -> Self {
        ArchiveError::Cache(e.to_string())
    }
}

#[cfg(test)]
mod tests;
