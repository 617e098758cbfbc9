//! A real S3-compatible store for end-to-end tests: SeaweedFS on 127.0.0.1 (started by
//! [`ferry_testkit::s3`]), one bucket per test, a way to point ferry at it, and a
//! direct view of the bucket for assertions (which blobs exist, no partial objects).
//!
//! [`S3::start_or_skip`] returns `None`, after printing why, only when the SeaweedFS binary is
//! not installed (`scripts/install-test-deps.sh` installs it).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_oci::Digest;
use ferry_storage::BlobStore;
use ferry_storage::object::{ObjectOptions, ObjectStore, S3Options};
use ferry_testkit::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use serde_json::{Value, json};

use super::ferry::FerryBuilder;

/// A running S3 server with a bucket of this test's own.
#[derive(Debug)]
pub struct S3 {
    server: S3Server,
    bucket: String,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl S3 {
    /// Starts SeaweedFS and creates a bucket; `None` (with the reason printed) if SeaweedFS is
    /// not installed. Panics if it is installed but does not start.
    pub fn start_or_skip() -> Option<S3> {
        if S3Server::binary().is_none() {
            eprintln!(
                "SKIPPED: SeaweedFS is not installed (scripts/install-test-deps.sh installs it)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-s3-")
            .tempdir()
            .expect("s3 tempdir");
        let server = S3Server::start(dir.path()).unwrap_or_else(|e| panic!("SeaweedFS: {e}"));
        static N: AtomicU64 = AtomicU64::new(0);
        let bucket = format!(
            "e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        server.create_bucket(&bucket).expect("create bucket");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Some(S3 {
            server,
            bucket,
            dir,
            rt,
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The S3 port (for telling redirects to the store apart).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The `storage.s3` section for this bucket, with `extra` keys laid over it.
    pub fn config(&self, extra: Value) -> Value {
        let mut s3 = json!({
            "bucket": self.bucket,
            "endpoint": self.endpoint(),
            "region": REGION,
            "prefix": "ferry",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "timeout": "5s",
        });
        if let (Value::Object(base), Value::Object(more)) = (&mut s3, extra) {
            base.extend(more);
        }
        s3
    }

    /// `builder` with `storage.s3` pointing at this bucket (plus `extra` keys).
    pub fn apply(&self, builder: FerryBuilder, extra: Value) -> FerryBuilder {
        builder.set_path(&["storage", "s3"], self.config(extra))
    }

    /// Kills the server (a store outage).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Freezes the server: requests hang until [`S3::resume`] (a slow store).
    pub fn pause(&self) {
        self.server.pause();
    }

    /// Thaws a paused server.
    pub fn resume(&self) {
        self.server.resume();
    }

    /// Starts it again on the same port with the same data.
    pub fn start_again(&mut self) {
        self.server
            .start_again()
            .unwrap_or_else(|e| panic!("SeaweedFS restart: {e}"));
    }

    /// A direct client of the bucket, as ferry sees it (same prefix).
    pub fn store(&self) -> ObjectStore {
        let opts = S3Options {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint()),
            region: REGION.into(),
            prefix: "ferry".into(),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            virtual_host_style: false,
        };
        let _guard = self.rt.enter();
        ObjectStore::s3(&opts, ObjectOptions::new(self.dir.path().join("spool")))
            .expect("object store client")
    }

    /// Digests and sizes of every blob object in the bucket.
    pub fn blobs(&self) -> Vec<(String, u64)> {
        let store = self.store();
        let list = self.rt.block_on(store.list()).expect("list the bucket");
        list.into_iter()
            .map(|e| (e.digest.to_string(), e.size))
            .collect()
    }

    /// Whether the bucket holds blob `digest` with exactly `bytes` as content.
    pub fn holds(&self, digest: &str, bytes: &[u8]) -> bool {
        let d = Digest::parse(digest).expect("digest");
        let store = self.store();
        match self.rt.block_on(store.read_all(&d)).expect("read blob") {
            Some(b) => b.as_ref() == bytes,
            None => false,
        }
    }

    /// Blobs in the bucket whose content does not hash to their digest (should be none).
    pub fn corrupt_blobs(&self) -> Vec<String> {
        let store = self.store();
        let mut bad = Vec::new();
        for (digest, _) in self.blobs() {
            let d = Digest::parse(&digest).expect("digest");
            let bytes = self.rt.block_on(store.read_all(&d)).expect("read blob");
            if bytes.is_none_or(|b| Digest::sha256_of(&b) != d) {
                bad.push(digest);
            }
        }
        bad
    }

    /// The server's data directory (for checking where bytes live).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}
