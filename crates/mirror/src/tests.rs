//! Engine tests against an in-process fake upstream (faults a real registry cannot produce on
//! demand: slow bodies, cut connections, wrong bytes).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::{Digest, Reference};
use ferry_storage::fs::FsStore;
use futures_util::StreamExt;
use http::StatusCode;

use super::*;

mod fake;
mod gate;
mod links;
mod revalidate;

use fake::*;

#[tokio::test]
async fn fifty_concurrent_misses_cause_one_upstream_get() {
    let env = env_with("").await;
    env.fake.set_slow(Duration::from_millis(5));
    let (d, data) = add_blob(&env.fake, 3 * 1024 * 1024, 1);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (m, t, d) = (env.mirror.clone(), t.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            if i >= 25 {
                tokio::time::sleep(Duration::from_millis(100)).await; // join halfway through
            }
            pull(&m, &t, &d).await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap() == data);
    }
    assert_eq!(
        env.fake.hits("GET", &d.to_string()),
        1,
        "exactly one upstream GET"
    );
    assert_eq!(
        env.fake.hits("HEAD", &d.to_string()),
        0,
        "joining a download through the same repository needs no HEAD"
    );
    // Now cached (once the store has it: readers may get the last byte before the fsync, see
    // fill::RELEASE_AFTER): no further upstream request.
    assert!(env.mirror.settle_blob(&d).await);
    let a = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(a.outcome, Outcome::Hit);
    assert!(read_all(a).await.unwrap() == data);
    assert_eq!(env.fake.hits("GET", &d.to_string()), 1);
    assert!(spool_is_empty(&env.root));
}

#[tokio::test]
async fn first_bytes_arrive_before_the_download_ends() {
    let env = env_with("").await;
    env.fake.set_slow(Duration::from_millis(50));
    let (d, _) = add_blob(&env.fake, 20 * 64 * 1024, 2); // ~1 s upstream transfer
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let start = std::time::Instant::now();
    let a = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    let BlobBody::Stream(mut s) = a.body else {
        panic!()
    };
    s.next().await.unwrap().unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "first chunk after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_digest_is_never_cached() {
    let env = env_with("").await;
    env.fake.set_corrupt(true);
    let (d, data) = add_blob(&env.fake, 200_000, 3);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let a = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    let err = read_all(a).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(
        ferry_storage::FillError::of_io(&err).map(|e| e.reason()),
        Some("digest_mismatch")
    );
    assert!(!env.mirror.settle_blob(&d).await, "not cached");
    assert!(
        env.mirror.store().stat(&d).await.unwrap().is_none(),
        "nothing stored"
    );
    assert!(spool_is_empty(&env.root), "spool cleaned up");
    env.fake.set_corrupt(false);
    let a = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert!(
        read_all(a).await.unwrap() == data,
        "the next request fetches again"
    );
    assert_eq!(env.fake.hits("GET", &d.to_string()), 2);
}

#[tokio::test]
async fn a_cut_download_resumes_with_a_range_request() {
    let env = env_with("").await;
    env.fake.set_cut(300 * 1024, 2);
    // Slow enough that the response head is flushed before the cut, as in a real mid-body cut.
    env.fake.set_slow(Duration::from_millis(2));
    let (d, data) = add_blob(&env.fake, 1024 * 1024, 4);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let a = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert!(read_all(a).await.unwrap() == data);
    assert_eq!(env.fake.ranges(), 2, "resumed twice");
    assert!(env.mirror.settle_blob(&d).await);
    assert!(env.mirror.store().stat(&d).await.unwrap().is_some());
}

#[tokio::test]
async fn ranges_on_cold_and_cached_blobs() {
    let env = env_with("").await;
    let (d, data) = add_blob(&env.fake, 100_000, 5);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let cold = env
        .mirror
        .blob(&t, &d, Some("bytes=1000-1999"), Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(cold.range.unwrap().len(), 1000);
    assert_eq!(read_all(cold).await.unwrap(), &data[1000..2000]);
    assert!(env.mirror.settle_blob(&d).await);
    let warm = env
        .mirror
        .blob(&t, &d, Some("bytes=-10"), Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(warm.outcome, Outcome::Hit);
    assert_eq!(read_all(warm).await.unwrap(), &data[data.len() - 10..]);
    let bad = env
        .mirror
        .blob(&t, &d, Some("bytes=200000-"), Delivery::Stream, &Ungated)
        .await;
    assert!(matches!(bad, Err(MirrorError::Range { size: 100_000, .. })));
}

#[tokio::test]
async fn unknown_blobs_are_upstream_not_found() {
    let env = env_with("").await;
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let d = Digest::sha256_of(b"nope");
    let err = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            MirrorError::Upstream(ferry_upstream::UpstreamError::NotFound {
                code: ferry_oci::ErrorCode::BlobUnknown,
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tags_are_trusted_for_their_ttl_then_revalidated_with_head() {
    let env = env_with("cache:\n  tag_ttl: 1s\n  revalidate: blocking\n").await;
    let d = add_manifest(&env.fake, "v1", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("v1").unwrap();
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!((a.outcome, &a.manifest.digest), (Outcome::Miss, &d));
    assert_eq!(
        a.manifest.bytes,
        MANIFEST.as_bytes(),
        "the upstream's exact bytes"
    );
    assert_eq!(
        env.mirror
            .manifest(&t, &tag, &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Hit
    );
    assert_eq!(
        env.mirror
            .manifest(&t, &Reference::Digest(d.clone()), &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Hit
    );
    assert_eq!(env.fake.hits("GET", "/manifests/v1"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        env.mirror
            .manifest(&t, &tag, &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Revalidated
    );
    assert_eq!(
        (
            env.fake.hits("HEAD", "/manifests/v1"),
            env.fake.hits("GET", "/manifests/v1")
        ),
        (1, 1)
    );
    // The tag moves upstream: after the TTL, the new manifest is fetched.
    let d2 = add_manifest(
        &env.fake,
        "v1",
        &MANIFEST.replace("\"layers\":[]", "\"layers\":[] "),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    assert_eq!((a.outcome, &a.manifest.digest), (Outcome::Miss, &d2));
}

#[tokio::test]
async fn stale_tags_are_served_when_the_upstream_fails() {
    let env = env_with("cache:\n  tag_ttl: 1s\n  revalidate: blocking\n").await;
    let d = add_manifest(&env.fake, "latest", MANIFEST);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("latest").unwrap();
    env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for status in [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        env.fake.set_down(Some(status));
        let a = env.mirror.manifest(&t, &tag, &Ungated).await.unwrap();
        assert_eq!(
            (a.outcome, &a.manifest.digest),
            (Outcome::Stale, &d),
            "{status}"
        );
    }
    // A tag never seen cannot be served stale.
    let err = env
        .mirror
        .manifest(&t, &Reference::parse("other").unwrap(), &Ungated)
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Upstream(u) if u.is_transient()));
}

#[tokio::test]
async fn not_found_is_remembered_briefly() {
    let env = env_with("cache:\n  negative_ttl: 1s\n").await;
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let tag = Reference::parse("missing").unwrap();
    for _ in 0..3 {
        assert!(env.mirror.manifest(&t, &tag, &Ungated).await.is_err());
    }
    assert_eq!(env.fake.hits("GET", "/manifests/missing"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    add_manifest(&env.fake, "missing", MANIFEST);
    assert_eq!(
        env.mirror
            .manifest(&t, &tag, &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Miss
    );
}

#[tokio::test]
async fn the_blob_index_survives_a_restart() {
    let env = env_with("").await;
    let (d, _) = add_blob(&env.fake, 1000, 9);
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    pull(&env.mirror, &t, &d).await;
    assert!(env.mirror.settle_blob(&d).await);
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(&env.root).unwrap());
    let config = Config::from_yaml(
        "upstreams:\n  docker.io:\n    url: http://127.0.0.1:1\n",
        Vec::new(),
    )
    .unwrap();
    let again = Mirror::start(&config, store, Arc::new(Metrics::new()))
        .await
        .unwrap();
    let t = again.resolve("org/app", None, None).unwrap();
    let a = again
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(
        a.outcome,
        Outcome::Hit,
        "served with the upstream unreachable"
    );
}

/// A local-disk store whose `ingest` takes `delay` (like the fsync of a large file or an
/// object-store upload).
struct SlowIngest {
    inner: FsStore,
    delay: Duration,
}

#[async_trait::async_trait]
impl BlobStore for SlowIngest {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn stat(&self, d: &Digest) -> ferry_storage::Result<Option<ferry_storage::BlobInfo>> {
        self.inner.stat(d).await
    }
    async fn open(
        &self,
        d: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> ferry_storage::Result<Option<ferry_storage::OpenedBlob>> {
        self.inner.open(d, offset, len).await
    }
    async fn read_all(&self, d: &Digest) -> ferry_storage::Result<Option<Bytes>> {
        self.inner.read_all(d).await
    }
    async fn put_verified(&self, d: &Digest, b: Bytes) -> ferry_storage::Result<()> {
        self.inner.put_verified(d, b).await
    }
    async fn ingest(&self, d: &Digest, spool: &std::path::Path) -> ferry_storage::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.ingest(d, spool).await
    }
    async fn delete(&self, d: &Digest) -> ferry_storage::Result<()> {
        self.inner.delete(d).await
    }
    async fn list(&self) -> ferry_storage::Result<Vec<ferry_storage::BlobEntry>> {
        self.inner.list().await
    }
    async fn touch(&self, d: &[Digest], when: std::time::SystemTime) -> ferry_storage::Result<()> {
        self.inner.touch(d, when).await
    }
    async fn get_meta(&self, key: &str) -> ferry_storage::Result<Option<Bytes>> {
        self.inner.get_meta(key).await
    }
    async fn put_meta(&self, key: &str, value: Bytes) -> ferry_storage::Result<()> {
        self.inner.put_meta(key, value).await
    }
    async fn delete_meta(&self, key: &str) -> ferry_storage::Result<()> {
        self.inner.delete_meta(key).await
    }
    async fn list_meta(&self, prefix: &str) -> ferry_storage::Result<Vec<String>> {
        self.inner.list_meta(prefix).await
    }
    fn spool_dir(&self) -> std::path::PathBuf {
        self.inner.spool_dir()
    }
    async fn check_writable(&self) -> ferry_storage::Result<()> {
        self.inner.check_writable().await
    }
}

#[tokio::test]
async fn a_slow_store_releases_readers_early_and_settle_waits_for_it() {
    let env = env_with_store("", |root| {
        Arc::new(SlowIngest {
            inner: FsStore::open(root).unwrap(),
            delay: Duration::from_millis(600),
        })
    })
    .await;
    let mirror = &env.mirror;
    let (d, data) = add_blob(&env.fake, 300_000, 9);
    let t = mirror.resolve("org/app", None, None).unwrap();

    let start = std::time::Instant::now();
    let got = pull(mirror, &t, &d).await;
    let drained = start.elapsed();
    assert!(got == data);
    assert!(
        drained < Duration::from_millis(500),
        "the last byte came after {drained:?}: it must not wait for a slow store"
    );
    assert!(
        mirror.store().stat(&d).await.unwrap().is_none(),
        "still being stored"
    );
    assert!(mirror.settle_blob(&d).await, "settled and stored");
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert!(mirror.store().stat(&d).await.unwrap().is_some());
    // Nothing in flight any more: settling again is immediate.
    assert!(mirror.settle_blob(&d).await);
}

#[tokio::test]
async fn shutdown_ends_downloads_in_flight_and_leaves_nothing_behind() {
    let env = env_with("").await;
    env.fake.set_slow(Duration::from_millis(200));
    let (d, _) = add_blob(&env.fake, 64 * 64 * 1024, 9); // ~13 s upstream transfer
    let t = env.mirror.resolve("org/app", None, None).unwrap();
    let answer = env
        .mirror
        .blob(&t, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(env.mirror.inflight(), 1);
    let started = std::time::Instant::now();
    env.mirror.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(env.mirror.inflight(), 0, "the download task ended");
    assert!(env.mirror.tasks().is_empty(), "every tracked task ended");
    assert!(read_all(answer).await.is_err(), "its reader is told");
    // A metadata write of a cancelled task (the link migration) finishes on its blocking
    // thread, by an atomic rename; only the download's spool file must be gone at once.
    for _ in 0..50 {
        if spool_is_empty(&env.root) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        spool_is_empty(&env.root),
        "{:?}",
        ferry_storage::spool::partial_files(&env.root.join("_spool"))
    );
    assert!(!env.mirror.index().contains(&d));
}
