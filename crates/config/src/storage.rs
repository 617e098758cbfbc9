//! The `storage:` section: where cached content lives (local disk or an S3-compatible object
//! store), how big the cache may grow, and, with an object store, where downloads spool and
//! whether a local-disk tier keeps hot blobs.

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
    /// With an object store: local directory for downloads in progress (default
    /// `local_cache.root/_spool`, else `./ferry-spool`); each process uses its own subdirectory.
    pub spool_dir: Option<PathBuf>,
    /// With an object store: a local-disk tier that keeps recently served blobs.
    pub local_cache: Option<LocalCacheConfig>,
    /// What a blob request does when the store fails (a hung or dead object store, a broken
    /// disk): `upstream` streams the blob from the upstream, uncached; `fail` answers 503.
    pub unavailable: Unavailable,
}

/// `storage.unavailable`: a blob request while the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unavailable {
    /// Stream the blob from the upstream (verified, not cached).
    #[default]
    Upstream,
    /// Answer `503 UNAVAILABLE`.
    Fail,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fs: None,
            s3: None,
            max_size: ByteSize(100 << 30),
            spool_dir: None,
            local_cache: None,
            unavailable: Unavailable::Upstream,
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

    /// Where an object-store backend spools downloads.
    pub fn object_spool_dir(&self) -> PathBuf {
        match (&self.spool_dir, &self.local_cache) {
            (Some(dir), _) => dir.clone(),
            (None, Some(local)) => local.root.join("_spool"),
            (None, None) => PathBuf::from("./ferry-spool"),
        }
    }
}

/// The local-disk tier in front of an object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalCacheConfig {
    /// Directory of the tier (same layout as `storage.fs.root`).
    pub root: PathBuf,
    /// Least-recently-served blobs leave the tier (not the object store) above this size.
    pub max_size: ByteSize,
}

impl Default for LocalCacheConfig {
    fn default() -> Self {
        LocalCacheConfig {
            root: PathBuf::from("./ferry-local-cache"),
            max_size: ByteSize(10 << 30),
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
    /// Longest time one store request (or one part of a transfer) may take; failed requests
    /// are retried a few times with backoff before the client gets a 5xx.
    pub timeout: Dur,
    /// Part size of multipart uploads (5MiB..5GiB).
    pub part_size: ByteSize,
    /// Parts of one upload sent at once (memory per upload: about part_size x (this + 1)).
    pub upload_concurrency: usize,
    /// A quick store request (a lookup, a small read or write) that takes longer fails, and
    /// the store's next requests fail at once for 5 s (a circuit breaker; `/readyz` says not
    /// ready meanwhile and no redirect to the store is handed out).
    pub fail_within: Dur,
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
            timeout: Dur::secs(30),
            part_size: ByteSize(8 << 20),
            upload_concurrency: 2,
            fail_within: Dur::secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const S3: &str = "storage:
  s3:
    bucket: mirror
    endpoint: http://127.0.0.1:8333
    region: eu-west-1
    prefix: ferry/
    access_key_id: AKIA
    redirect: false
    redirect_expiry: 2m
    virtual_host_style: true
    timeout: 10s
    part_size: 16MiB
    upload_concurrency: 4
  spool_dir: /var/spool/ferry
  local_cache:
    root: /var/cache/ferry
    max_size: 20GiB
  max_size: 10TiB
";

    #[test]
    fn s3_section_with_a_local_tier_parses() {
        let c =
            Config::from_yaml(S3, vars(&[("FERRY_STORAGE__S3__SECRET_ACCESS_KEY", "k")])).unwrap();
        let s3 = c.storage.s3.as_ref().unwrap();
        assert_eq!(s3.bucket, "mirror");
        assert_eq!(s3.secret_access_key.as_ref().unwrap().expose(), "k");
        assert!(!s3.redirect && s3.virtual_host_style);
        assert_eq!(s3.part_size.0, 16 << 20);
        assert_eq!(s3.upload_concurrency, 4);
        assert_eq!(c.storage.local_cache.as_ref().unwrap().max_size.0, 20 << 30);
        assert_eq!(c.storage.fs_root(), None);
        assert_eq!(
            c.storage.object_spool_dir(),
            std::path::PathBuf::from("/var/spool/ferry")
        );
    }

    #[test]
    fn s3_defaults() {
        let c = Config::from_yaml("storage:\n  s3:\n    bucket: b\n", vars(&[])).unwrap();
        let s3 = c.storage.s3.unwrap();
        assert!(s3.redirect);
        assert_eq!(s3.redirect_expiry.0.as_secs(), 300);
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.part_size.0, 8 << 20);
    }

    #[test]
    fn bad_s3_values_name_key_and_line() {
        let text = "storage:\n  s3:\n    bucket: b\n    part_size: 1MiB\n    endpoint: ftp://x\n";
        let err = Config::from_yaml(text, vars(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("config:4: storage.s3.part_size"), "{msg}");
        assert!(msg.contains("config:5: storage.s3.endpoint"), "{msg}");
        let err = Config::from_yaml(S3, vars(&[])).unwrap_err().to_string();
        assert!(err.contains("secret_access_key"), "{err}");
    }

    #[test]
    fn object_store_keys_need_an_object_store() {
        let text = "storage:\n  local_cache:\n    root: /x\n";
        let err = Config::from_yaml(text, vars(&[])).unwrap_err().to_string();
        assert!(err.contains("storage.local_cache"), "{err}");
        assert!(err.contains(":2:"), "{err}");
    }
}
