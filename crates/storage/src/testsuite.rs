//! One conformance suite that every [`BlobStore`] backend runs (fs, the object store on the
//! in-memory service and on a real S3 server, tiered), so backends behave alike: missing
//! things, round trips, ingest, ranges (start/end, suffix, past the end), concurrent ingests
//! of one digest, an aborted ingest or fill, delete, listing, metadata, links, and presigned
//! URLs where the backend signs them.
//!
//! Call [`run_all`] from a backend's tests with a fresh, empty store. Compiled for tests only.

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
    ranges_at_and_past_the_end(store).await;
    concurrent_ingests_of_one_digest(store).await;
    an_aborted_ingest_leaves_no_entry(store).await;
    an_aborted_fill_releases_its_claim(store).await;
    list_touch_delete(store).await;
    listing_holds_blobs_only(store).await;
    delete_removes_every_way_in(store).await;
    presigned_urls_serve_the_blob(store).await;
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
    // A suffix range (`bytes=-10`) is asked as its start.
    let suffix = store.open(&d, 5000 - 10, Some(10)).await.unwrap().unwrap();
    assert_eq!(collect(suffix.stream).await, &data[4990..]);
    let first = store.open(&d, 0, Some(1)).await.unwrap().unwrap();
    assert_eq!(collect(first.stream).await, &data[..1]);
}

/// A range that starts at the end is empty (the caller refuses ranges beyond the end before
/// asking the store).
async fn ranges_at_and_past_the_end(store: &dyn BlobStore) {
    let (d, data) = blob(7, 3000);
    store.put_verified(&d, data).await.unwrap();
    let at_end = store.open(&d, 3000, None).await.unwrap().unwrap();
    assert_eq!(at_end.size, 3000);
    assert!(collect(at_end.stream).await.is_empty());
    let last = store.open(&d, 2999, Some(100)).await.unwrap().unwrap();
    assert_eq!(collect(last.stream).await.len(), 1);
}

fn spool(store: &dyn BlobStore, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = store.spool_dir().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Two replicas (or two fills) that downloaded the same blob ingest it at once: both
/// succeed, both spool files are consumed, one blob is stored.
async fn concurrent_ingests_of_one_digest(store: &dyn BlobStore) {
    let (d, data) = blob(8, 1024 * 1024 + 3);
    let (a, b) = (
        spool(store, "twice-a.part", &data),
        spool(store, "twice-b.part", &data),
    );
    let (ra, rb) = tokio::join!(store.ingest(&d, &a), store.ingest(&d, &b));
    ra.expect("first ingest");
    rb.expect("second ingest");
    assert!(!a.exists() && !b.exists(), "both spool files consumed");
    assert_eq!(
        store.stat(&d).await.unwrap().unwrap().size,
        data.len() as u64
    );
    let body = store.open(&d, 0, None).await.unwrap().unwrap();
    assert!(collect(body.stream).await == data);
    let listed = store.list().await.unwrap();
    assert_eq!(listed.iter().filter(|e| e.digest == d).count(), 1);
}

/// An ingest that fails (its spool file is gone) leaves nothing behind.
async fn an_aborted_ingest_leaves_no_entry(store: &dyn BlobStore) {
    let (d, _) = blob(9, 100);
    let gone = store.spool_dir().join("never-written.part");
    assert!(store.ingest(&d, &gone).await.is_err());
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(store.open(&d, 0, None).await.unwrap().is_none());
    assert!(!store.list().await.unwrap().iter().any(|e| e.digest == d));
}

/// A download given up (its claim dropped) lets the next one claim the blob at once.
async fn an_aborted_fill_releases_its_claim(store: &dyn BlobStore) {
    let (d, _) = blob(10, 100);
    let wait = Duration::from_secs(5);
    let first = store.claim_fill("conformance", &d, wait).await.unwrap();
    assert!(matches!(first, crate::FillClaim::Owner(_)), "first claim");
    drop(first);
    let started = std::time::Instant::now();
    let again = store.claim_fill("conformance", &d, wait).await.unwrap();
    assert!(matches!(again, crate::FillClaim::Owner(_)), "claimed again");
    assert!(started.elapsed() < wait, "not left to expire");
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

/// The blob listing names blobs, with their sizes, and nothing of the metadata or links.
async fn listing_holds_blobs_only(store: &dyn BlobStore) {
    let blobs: Vec<_> = (20..23)
        .map(|seed| blob(seed, 100 + seed as usize))
        .collect();
    for (d, data) in &blobs {
        store.put_verified(d, data.clone()).await.unwrap();
    }
    store
        .put_meta("tags/listing/x/_tags/v1", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    store
        .put_links("listing", "x", std::slice::from_ref(&blobs[0].0))
        .await
        .unwrap();
    let listed = store.list().await.unwrap();
    for (d, data) in &blobs {
        let entry = listed.iter().find(|e| e.digest == *d).expect("listed");
        assert_eq!(entry.size, data.len() as u64);
    }
    let stored: Vec<_> = blobs.iter().map(|(d, _)| d).collect();
    for e in &listed {
        assert!(
            store.stat(&e.digest).await.unwrap().is_some(),
            "{} is listed but not stored",
            e.digest
        );
    }
    for (d, _) in &blobs {
        store.delete(d).await.unwrap();
    }
    let listed = store.list().await.unwrap();
    assert!(!listed.iter().any(|e| stored.contains(&&e.digest)));
}

/// A deleted blob is gone for every reader, and deleting it again is fine.
async fn delete_removes_every_way_in(store: &dyn BlobStore) {
    let (d, data) = blob(11, 2000);
    store.put_verified(&d, data).await.unwrap();
    store.delete(&d).await.unwrap();
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(store.open(&d, 0, None).await.unwrap().is_none());
    assert!(store.read_all(&d).await.unwrap().is_none());
    store.delete(&d).await.expect("deleting twice is fine");
}

/// Where the backend signs URLs, one serves the blob's bytes (and a range of them).
async fn presigned_urls_serve_the_blob(store: &dyn BlobStore) {
    let (d, data) = blob(12, 4096);
    store.put_verified(&d, data.clone()).await.unwrap();
    let Some(url) = store.presign(&d, Duration::from_secs(60)).await.unwrap() else {
        return; // this backend serves through ferry only
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let got = client.get(&url).send().await.unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    assert_eq!(got.bytes().await.unwrap(), data);
    let part = client.get(&url).header("range", "bytes=10-19").send().await;
    assert_eq!(part.unwrap().bytes().await.unwrap(), &data[10..20]);
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
