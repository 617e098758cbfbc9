//! The engine tests' upstream: the test kit's fake registry
//! ([`ferry_testkit::registry::FaultyUpstream`], for faults a real registry cannot produce on
//! demand), with the few faults these tests switch on and off by name, and the helpers that
//! start a mirror in front of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::Digest;
use ferry_storage::fs::FsStore;
use ferry_testkit::registry::{Fault, FaultyUpstream, Rule, RuleId};
use futures_util::StreamExt;
use http::StatusCode;

use crate::*;

/// The fake registry, with faults that replace each other by name.
pub(crate) struct Fake {
    upstream: FaultyUpstream,
    switched: Mutex<HashMap<&'static str, RuleId>>,
}

impl std::ops::Deref for Fake {
    type Target = FaultyUpstream;

    fn deref(&self) -> &FaultyUpstream {
        &self.upstream
    }
}

impl Fake {
    fn start() -> Fake {
        Fake {
            upstream: FaultyUpstream::start(),
            switched: Mutex::default(),
        }
    }

    /// Replaces the fault switched on under `name` (none: off).
    fn switch(&self, name: &'static str, rule: Option<Rule>) {
        let mut switched = self.switched.lock().unwrap();
        if let Some(id) = switched.remove(name) {
            self.upstream.remove_rule(id);
        }
        if let Some(rule) = rule {
            switched.insert(name, self.upstream.add_rule(rule));
        }
    }

    /// Requests with this method whose path ends in `suffix`.
    pub(crate) fn hits(&self, method: &str, suffix: &str) -> usize {
        self.upstream.count_ending(method, suffix)
    }

    /// Blob bodies paced at one 64 KiB chunk per `pause` (zero: full speed).
    pub(crate) fn set_slow(&self, pause: Duration) {
        let rule = (!pause.is_zero()).then(|| {
            let bytes_per_sec = (64.0 * 1024.0 / pause.as_secs_f64()) as u64;
            Rule::blobs(Fault::Throttle(bytes_per_sec)).method("GET")
        });
        self.switch("slow", rule);
    }

    /// Blob bodies cut after `at` bytes, the next `times` times.
    pub(crate) fn set_cut(&self, at: u64, times: usize) {
        let rule = Rule::blobs(Fault::CutAfter(at)).method("GET").times(times);
        self.switch("cut", Some(rule));
    }

    /// Blob bodies with a wrong first byte (a digest mismatch), or right again.
    pub(crate) fn set_corrupt(&self, on: bool) {
        let rule = on.then(|| Rule::blobs(Fault::WrongBytes).method("GET"));
        self.switch("corrupt", rule);
    }

    /// Every request answered with `status`, or served again (`None`).
    pub(crate) fn set_down(&self, status: Option<StatusCode>) {
        let rule = status.map(|s| Rule::any(Fault::status(s.as_u16())));
        self.switch("down", rule);
    }

    /// Manifest requests answered after `delay`.
    pub(crate) fn set_manifest_delay(&self, delay: Duration) {
        let rule = (!delay.is_zero()).then(|| Rule::manifests(Fault::DelayHeaders(delay)));
        self.switch("manifest_delay", rule);
    }

    /// Requests that resumed a download: an open-ended range `bytes=N-` (a first request
    /// may name a closed range of the first segment).
    pub(crate) fn ranges(&self) -> usize {
        let resumed = |r: &Option<String>| r.as_deref().is_some_and(|v| v.ends_with('-'));
        let requests = self.upstream.requests();
        requests.iter().filter(|r| resumed(&r.range)).count()
    }
}

pub(crate) struct Env {
    pub(crate) fake: Arc<Fake>,
    pub(crate) mirror: Mirror,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: std::path::PathBuf,
    /// The config the engine started with (to start another over the same store).
    pub(crate) config: String,
}

pub(crate) async fn env_with(extra: &str) -> Env {
    env_with_store(extra, |root| Arc::new(FsStore::open(root).unwrap())).await
}

pub(crate) async fn env_with_store(
    extra: &str,
    store: impl FnOnce(&std::path::Path) -> Arc<dyn BlobStore>,
) -> Env {
    let fake = Arc::new(Fake::start());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let text = format!("upstreams:\n  docker.io:\n    url: {}\n{extra}", fake.url());
    let config = Config::from_yaml(&text, Vec::new()).unwrap();
    let mirror = Mirror::start(&config, store(&root), Arc::new(Metrics::new()))
        .await
        .unwrap();
    Env {
        fake,
        mirror,
        _dir: dir,
        root,
        config: text,
    }
}

pub(crate) fn add_blob(fake: &Fake, len: usize, seed: u8) -> (Digest, Bytes) {
    let data: Bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into();
    let d = fake.add_blob(data.clone());
    (Digest::parse(&d).unwrap(), data)
}

pub(crate) async fn read_all(a: BlobAnswer) -> std::io::Result<Vec<u8>> {
    let BlobBody::Stream(mut s) = a.body else {
        panic!("redirect")
    };
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// The whole blob `d` through `t`, as a client that streams it (no miss gate).
pub(crate) async fn pull(m: &Mirror, t: &Target, d: &Digest) -> Vec<u8> {
    let answer = m.blob(t, d, None, Delivery::Stream, &Ungated).await;
    read_all(answer.unwrap()).await.unwrap()
}

pub(crate) fn spool_is_empty(root: &std::path::Path) -> bool {
    ferry_storage::spool::partial_files(&root.join("_spool")).is_empty()
}

pub(crate) const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;

pub(crate) fn add_manifest(fake: &Fake, tag: &str, body: &str) -> Digest {
    let mt = ferry_oci::manifest::OCI_MANIFEST;
    let d = fake.add_manifest_everywhere(Some(tag), mt, Bytes::from(body.to_owned()));
    Digest::parse(&d).unwrap()
}
