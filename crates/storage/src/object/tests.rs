//! The object backend against OpenDAL's in-memory service (always) and a real SeaweedFS
//! S3 server (skipped, with the reason printed, when `weed` is not installed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::Digest;
use futures_util::StreamExt;

use super::*;
use ferry_testkit::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};

fn memory_store(dir: &Path) -> ObjectStore {
    let op = Operator::new(opendal::services::Memory::default()).unwrap();
    ObjectStore::from_operator(op, "memory", ObjectOptions::new(dir.join("spool"))).unwrap()
}

/// A SeaweedFS server with a fresh bucket, or `None` (and a printed reason).
fn s3_server(dir: &Path) -> Option<(S3Server, String)> {
    match S3Server::start(dir) {
        Ok(server) => {
            static N: AtomicU64 = AtomicU64::new(0);
            let bucket = format!(
                "t{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            server.create_bucket(&bucket).expect("create bucket");
            Some((server, bucket))
        }
        Err(why) => {
            eprintln!("SKIPPED: no S3 server: {why}");
            None
        }
    }
}

fn s3_store(server: &S3Server, bucket: &str, spool: &Path, prefix: &str) -> ObjectStore {
    let s3 = S3Options {
        bucket: bucket.into(),
        endpoint: Some(server.endpoint()),
        region: REGION.into(),
        prefix: prefix.into(),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        virtual_host_style: false,
    };
    let mut opts = ObjectOptions::new(spool);
    opts.part_size = 5 << 20;
    ObjectStore::s3(&s3, opts).unwrap()
}

async fn collect(body: OpenedBlob) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = body.stream;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn memory_object_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    crate::testsuite::run_all(&memory_store(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_on_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, bucket)) = s3_server(dir.path()) else {
        return;
    };
    let store = s3_store(&server, &bucket, &dir.path().join("spool"), "cache/v1");
    store.connect().await.expect("connect");
    crate::testsuite::run_all(&store).await;
    large_blobs_go_up_in_parts(&store).await;
    presigned_urls_serve_the_blob(&store).await;
    replicas_claim_fills_one_at_a_time(
        &store,
        &s3_store(&server, &bucket, &dir.path().join("spool2"), "cache/v1"),
    )
    .await;
    an_outage_is_an_error_not_a_miss(server, &store).await;
}

async fn large_blobs_go_up_in_parts(store: &ObjectStore) {
    let data: Vec<u8> = (0..(12u32 << 20) + 12345)
        .map(|i| (i % 251) as u8)
        .collect();
    let d = Digest::sha256_of(&data);
    let spool = store.spool_dir().join("big.part");
    std::fs::write(&spool, &data).unwrap();
    store.ingest(&d, &spool).await.unwrap();
    assert!(!spool.exists());
    let body = store.open(&d, 5 << 20, Some(10)).await.unwrap().unwrap();
    assert_eq!(body.size, data.len() as u64);
    assert_eq!(collect(body).await, &data[5 << 20..(5 << 20) + 10]);
    let whole = store.open(&d, 0, None).await.unwrap().unwrap();
    assert!(collect(whole).await == data, "multipart upload round-trips");
    store.delete(&d).await.unwrap();
}

async fn presigned_urls_serve_the_blob(store: &ObjectStore) {
    let data = Bytes::from_static(b"presigned content");
    let d = Digest::sha256_of(&data);
    store.put_verified(&d, data.clone()).await.unwrap();
    let url = store
        .presign(&d, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("S3 presigns");
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), data);
    let unsigned = url.split('?').next().unwrap().to_owned();
    let denied = client.get(&unsigned).send().await.unwrap();
    assert_eq!(denied.status(), 403, "the bucket is not public");
}

async fn replicas_claim_fills_one_at_a_time(a: &ObjectStore, b: &ObjectStore) {
    assert!(
        a.leases.probe().await.unwrap(),
        "SeaweedFS honours If-None-Match"
    );
    let data = Bytes::from_static(b"claimed blob");
    let d = Digest::sha256_of(&data);
    let FillClaim::Owner(lease) = a
        .claim_fill("docker.io", &d, Duration::from_secs(5))
        .await
        .unwrap()
    else {
        panic!("the first claim is granted");
    };
    let waiter = {
        let (b, d) = (b.clone(), d.clone());
        tokio::spawn(async move { b.claim_fill("docker.io", &d, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiter.is_finished(), "the second replica waits");
    a.put_verified(&d, data).await.unwrap();
    drop(lease);
    let claim = waiter.await.unwrap().unwrap();
    assert!(
        matches!(claim, FillClaim::Stored),
        "the waiter reads the stored blob"
    );
    // A released claim can be taken again at once.
    let d2 = Digest::sha256_of(b"other");
    let FillClaim::Owner(l) = a
        .claim_fill("docker.io", &d2, Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("granted");
    };
    drop(l);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert!(matches!(
        b.claim_fill("docker.io", &d2, Duration::from_secs(10))
            .await
            .unwrap(),
        FillClaim::Owner(_)
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn an_outage_is_an_error_not_a_miss(mut server: S3Server, store: &ObjectStore) {
    let d = Digest::sha256_of(b"anything");
    server.stop();
    let started = std::time::Instant::now();
    assert!(store.stat(&d).await.is_err(), "a down store is an error");
    assert!(store.get_meta("tags/a/b/_tags/c").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    server.start_again().unwrap();
    assert!(store.stat(&d).await.unwrap().is_none());
}
