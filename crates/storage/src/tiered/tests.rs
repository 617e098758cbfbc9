//! The tiered store over a second local store standing in for the shared one (the object
//! backend's own tests cover the real S3 side; the e2e tests run the tier over SeaweedFS).

use std::time::Duration;

use super::*;

async fn tier(max: u64) -> (tempfile::TempDir, TieredStore, Arc<FsStore>) {
    let dir = tempfile::tempdir().unwrap();
    let local = FsStore::open(dir.path().join("local")).unwrap();
    let remote = Arc::new(FsStore::open(dir.path().join("remote")).unwrap());
    let store = TieredStore::new(local, remote.clone(), max).await.unwrap();
    (dir, store, remote)
}

async fn wait_local(store: &TieredStore, d: &Digest) {
    for _ in 0..500 {
        // On disk and recorded (the record follows the file by a moment).
        if store.inner.local.stat(d).await.unwrap().is_some() && store.is_local(d) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{d} never reached the local tier");
}

#[tokio::test]
async fn tiered_store_passes_the_conformance_suite() {
    let (_dir, store, _) = tier(u64::MAX).await;
    crate::testsuite::run_all(&store).await;
}

#[tokio::test]
async fn blobs_from_the_shared_store_become_local() {
    let (_dir, store, remote) = tier(u64::MAX).await;
    let data = Bytes::from(vec![7u8; 300_000]);
    let d = Digest::sha256_of(&data);
    remote.put_verified(&d, data.clone()).await.unwrap();
    assert!(store.inner.local.stat(&d).await.unwrap().is_none());
    let body = store
        .open(&d, 0, None)
        .await
        .unwrap()
        .expect("served from the shared store");
    assert_eq!(body.size, 300_000);
    wait_local(&store, &d).await;
    assert_eq!(store.inner.local.read_all(&d).await.unwrap().unwrap(), data);
    assert_eq!(store.local_bytes(), 300_000);
}

#[tokio::test]
async fn ingest_lands_in_both_tiers() {
    let (_dir, store, remote) = tier(u64::MAX).await;
    let data = vec![3u8; 100_000];
    let d = Digest::sha256_of(&data);
    let spool = store.spool_dir().join("x.part");
    std::fs::write(&spool, &data).unwrap();
    store.ingest(&d, &spool).await.unwrap();
    assert!(!spool.exists());
    assert_eq!(remote.stat(&d).await.unwrap().unwrap().size, 100_000);
    assert_eq!(
        store.inner.local.stat(&d).await.unwrap().unwrap().size,
        100_000
    );
    assert!(
        std::fs::read_dir(store.spool_dir())
            .unwrap()
            .next()
            .is_none(),
        "no spool leftovers"
    );
}

#[tokio::test]
async fn the_local_tier_keeps_to_its_limit() {
    let (_dir, store, remote) = tier(250_000).await;
    let mut digests = Vec::new();
    for n in 0..3u8 {
        let data = Bytes::from(vec![n; 100_000]);
        let d = Digest::sha256_of(&data);
        store.put_verified(&d, data).await.unwrap();
        digests.push(d);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(store.local_bytes() <= 250_000);
    assert!(
        store.inner.local.stat(&digests[0]).await.unwrap().is_none(),
        "coldest left"
    );
    assert!(
        remote.stat(&digests[0]).await.unwrap().is_some(),
        "but stays shared"
    );
    assert!(store.stat(&digests[0]).await.unwrap().is_some());
}

#[tokio::test]
async fn local_blobs_are_not_redirected() {
    let (_dir, store, _) = tier(u64::MAX).await;
    let data = Bytes::from_static(b"hot");
    let d = Digest::sha256_of(&data);
    store.put_verified(&d, data).await.unwrap();
    assert_eq!(
        store.presign(&d, Duration::from_secs(60)).await.unwrap(),
        None
    );
}

/// Shutdown stops the background copies and waits for them: none is left running, and none
/// leaves a temporary file in the spool (a copy that finished is a whole local blob).
#[tokio::test]
async fn close_ends_the_background_copies_and_leaves_nothing_behind() {
    let (_dir, store, remote) = tier(u64::MAX).await;
    let mut digests = Vec::new();
    for n in 0..6u8 {
        let data = Bytes::from(vec![n; 4 * 1024 * 1024]);
        let d = Digest::sha256_of(&data);
        remote.put_verified(&d, data).await.unwrap();
        store.open(&d, 0, None).await.unwrap().expect("shared");
        digests.push(d);
    }
    assert!(!store.inner.copying_tasks.is_empty(), "copies running");
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("close returns");
    assert!(store.inner.copying_tasks.is_empty(), "every copy ended");
    assert!(store.inner.copying.lock().unwrap().is_empty());
    assert!(
        std::fs::read_dir(store.spool_dir())
            .unwrap()
            .next()
            .is_none(),
        "no temporary files left"
    );
    for d in &digests {
        if let Some(info) = store.inner.local.stat(d).await.unwrap() {
            assert_eq!(info.size, 4 * 1024 * 1024, "a local copy is whole");
        }
    }
}
