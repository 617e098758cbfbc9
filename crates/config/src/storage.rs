//! The `storage:` section: where cached content lives (local disk or an S3-compatible object
//! store) and how big the cache may grow.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Dur, Secret};

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Local-disk backend (the default).
    pub fs: Option<FsConfig>,
    /// S3-compatible object store backend.
    pub s3: Option<S3Config>,
    /// Least-recently-served content is evicted above this size.
    pub max_size: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fs: None,
            s3: None,
            max_size: ByteSize(100 << 30),
        }
    }
}

impl StorageConfig {
    /// The local-disk root: `fs.root`, or `./ferry-data` when no backend is named.
    pub fn fs_root(&self) -> Option<PathBuf> {
        match (&self.fs, &self.s3) {
            (Some(fs), _) => Some(fs.root.clone()),
            (None, None) => Some(FsConfig::default().root),
            (None, Some(_)) => None,
        }
    }
}

/// Local-disk backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FsConfig {
    /// Cache root directory.
    pub root: PathBuf,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            root: PathBuf::from("./ferry-data"),
        }
    }
}

/// S3-compatible object store backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL (empty: AWS).
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Access key id (or AWS_ACCESS_KEY_ID).
    pub access_key_id: Option<String>,
    /// Secret access key (or AWS_SECRET_ACCESS_KEY).
    pub secret_access_key: Option<Secret>,
    /// Answer cached blob GETs with a 307 to a presigned URL.
    pub redirect: bool,
    /// Lifetime of presigned URLs.
    pub redirect_expiry: Dur,
    /// Virtual-host addressing (`bucket.endpoint`) instead of path style.
    pub virtual_host_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            redirect: true,
            redirect_expiry: Dur::secs(300),
            virtual_host_style: false,
        }
    }
}
