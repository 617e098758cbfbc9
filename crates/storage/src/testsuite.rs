//! One conformance suite that every [`BlobStore`] backend runs, so backends behave alike.
//!
//! Call [`run_all`] from a backend's tests with a fresh, empty store.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_oci::Digest;
use futures_util::StreamExt;

use crate::{BlobStore, ByteStream};

/// Runs every check against `store` (which must start empty). Panics on the first failure.
pub async fn run_all(store: &dyn BlobStore) {
    missing_things_are_none(store).await;
    small_blobs_round_trip(store).await;
    ingest_publishes_a_spool_file(store).await;
    ranges(store).await;
    list_touch_delete(store).await;
    metadata(store).await;
    links(store).await;
    store.check_writable().await.expect("store is writable");
}

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

fn blob(seed: u8, len: usize) -> (Digest, Bytes) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (Digest::sha256_of(&data), Bytes::from(data))
}

async fn missing_things_are_none(store: &dyn BlobStore) {
    let (d, _) = blob(0, 10);
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(store.open(&d, 0, None).await.unwrap().is_none());
    assert!(store.read_all(&d).await.unwrap().is_none());
    assert!(store.get_meta("tags/x/y/_tags/z").await.unwrap().is_none());
    store
        .delete(&d)
        .await
        .expect("deleting a missing blob is fine");
    store
        .delete_meta("nothing/here")
        .await
        .expect("deleting missing meta is fine");
}

async fn small_blobs_round_trip(store: &dyn BlobStore) {
    let (d, data) = blob(1, 1000);
    store.put_verified(&d, data.clone()).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap().unwrap().size, 1000);
    assert_eq!(store.read_all(&d).await.unwrap().unwrap(), data);
    let body = store.open(&d, 0, None).await.unwrap().unwrap();
    assert_eq!(body.size, 1000);
    assert_eq!(collect(body.stream).await, data);
    // Writing the same content again is harmless.
    store.put_verified(&d, data.clone()).await.unwrap();
    assert_eq!(store.read_all(&d).await.unwrap().unwrap(), data);
}

async fn ingest_publishes_a_spool_file(store: &dyn BlobStore) {
    let (d, data) = blob(2, 3 * 1024 * 1024 + 7);
    let spool = store.spool_dir().join("conformance.part");
    std::fs::write(&spool, &data).unwrap();
    store.ingest(&d, &spool).await.unwrap();
    assert!(!spool.exists(), "ingest consumes the spool file");
    let body = store.open(&d, 0, None).await.unwrap().unwrap();
    assert_eq!(body.size, data.len() as u64);
    assert!(collect(body.stream).await == data);
}

async fn ranges(store: &dyn BlobStore) {
    let (d, data) = blob(3, 5000);
    store.put_verified(&d, data.clone()).await.unwrap();
    let body = store.open(&d, 100, Some(50)).await.unwrap().unwrap();
    assert_eq!(body.size, 5000, "size is the whole blob's");
    assert_eq!(collect(body.stream).await, &data[100..150]);
    let tail = store.open(&d, 4990, None).await.unwrap().unwrap();
    assert_eq!(collect(tail.stream).await, &data[4990..]);
    let clipped = store.open(&d, 4990, Some(100)).await.unwrap().unwrap();
    assert_eq!(collect(clipped.stream).await, &data[4990..]);
}

async fn list_touch_delete(store: &dyn BlobStore) {
    let (d, data) = blob(4, 10);
    store.put_verified(&d, data).await.unwrap();
    let entry = |list: &[crate::BlobEntry]| list.iter().find(|e| e.digest == d).cloned();
    let listed = entry(&store.list().await.unwrap()).expect("listed");
    assert_eq!(listed.size, 10);
    let when = SystemTime::now() - Duration::from_secs(86_400);
    store.touch(std::slice::from_ref(&d), when).await.unwrap();
    let touched = entry(&store.list().await.unwrap()).unwrap();
    let diff = touched
        .last_access
        .duration_since(when)
        .unwrap_or_else(|e| e.duration());
    assert!(
        diff < Duration::from_secs(2),
        "touch records the access time"
    );
    store.delete(&d).await.unwrap();
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(entry(&store.list().await.unwrap()).is_none());
}

async fn metadata(store: &dyn BlobStore) {
    let key = "tags/docker.io/library/nginx/_tags/latest";
    store
        .put_meta(key, Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    store
        .put_meta(
            "tags/docker.io/library/nginx/_tags/1.25",
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    store
        .put_meta("tags/ghcr.io/o/a/_tags/v1", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        store.get_meta(key).await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":1}")
    );
    store
        .put_meta(key, Bytes::from_static(b"{\"a\":2}"))
        .await
        .unwrap();
    assert_eq!(
        store.get_meta(key).await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":2}")
    );
    let keys = store
        .list_meta("tags/docker.io/library/nginx/_tags/")
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    store.delete_meta(key).await.unwrap();
    assert!(store.get_meta(key).await.unwrap().is_none());
    for bad in ["../escape", "a/../../b", "/abs", ""] {
        assert!(
            store.put_meta(bad, Bytes::new()).await.is_err(),
            "{bad} accepted"
        );
    }
}

/// Links are per upstream and per repository, idempotent, listable, and independent of the
/// content (a link may name a digest that is not stored, and deleting content keeps it).
async fn links(store: &dyn BlobStore) {
    let (a, data) = blob(5, 10);
    let (b, _) = blob(6, 10);
    let (up, repo) = ("127.0.0.1:5001", "org/app");
    assert!(!store.has_link(up, repo, &a).await.unwrap());
    assert!(store.list_links(up, repo).await.unwrap().is_empty());
    store.put_verified(&a, data).await.unwrap();
    store
        .put_links(up, repo, &[a.clone(), b.clone()])
        .await
        .unwrap();
    store
        .put_links(up, repo, std::slice::from_ref(&a))
        .await
        .expect("linking again is harmless");
    assert!(store.has_link(up, repo, &a).await.unwrap());
    assert!(
        store.has_link(up, repo, &b).await.unwrap(),
        "b is not stored"
    );
    for (other_up, other_repo) in [
        (up, "org"),
        (up, "org/app/sub"),
        (up, "org/ap"),
        ("ghcr.io", repo),
    ] {
        assert!(
            !store.has_link(other_up, other_repo, &a).await.unwrap(),
            "{other_up}/{other_repo} has no link"
        );
    }
    store
        .put_links(up, "org/app/sub", std::slice::from_ref(&b))
        .await
        .unwrap();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(store.list_links(up, repo).await.unwrap(), want);
    store.put_links(up, repo, &[]).await.unwrap();
    store.delete(&a).await.unwrap();
    assert!(
        store.has_link(up, repo, &a).await.unwrap(),
        "evicting content keeps what is known about the repository"
    );
    assert!(
        store
            .put_links("..", repo, std::slice::from_ref(&a))
            .await
            .is_err()
    );
}
