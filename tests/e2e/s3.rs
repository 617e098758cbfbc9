//! ferry over a real S3-compatible object store (SeaweedFS on 127.0.0.1): pulls with skopeo
//! through presigned redirects and through ferry, several replicas over one bucket, a local-disk
//! tier, store outages and interrupted uploads. Every test skips (saying why) only when the
//! SeaweedFS binary is not installed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{RawResponse, raw_get, raw_request};
use crate::support::s3::S3;
use crate::support::*;

/// A ferry for `upstream` (as docker.io) over the bucket, with `extra` `storage.s3` keys.
fn ferry_on(s3: &S3, upstream: &Registry, extra: Value) -> FerryBuilder {
    s3.apply(Ferry::builder().upstream("docker.io", upstream), extra)
}

fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/docker.io/{repo}/blobs/{digest}")
}

/// Pulls every platform of `reference` into a fresh `dir:` and checks the top digest.
fn pull_all(reference: &str, image: &Image) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().display());
    skopeo_copy(reference, &dest, &["--all", "--preserve-digests"]);
    let top = std::fs::read(out.path().join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&top), image.digest, "pulled {reference}");
}

#[test]
fn cached_blobs_redirect_to_presigned_store_urls() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::multi(), "library/hello:1");
    let ferry = ferry_on(
        &s3,
        &upstream,
        json!({"redirect": true, "redirect_expiry": "2m"}),
    )
    .start();
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());

    pull_all(&reference, &image);
    let fetched = upstream.blob_gets();
    assert_eq!(fetched, image.blobs.len(), "each blob fetched once");
    for b in &image.blobs {
        assert!(
            s3.holds(&b.digest, &image.blob_bytes(&b.digest)),
            "{} stored",
            b.digest
        );
    }

    // A cached blob: GET answers 307 to a presigned URL of the store; HEAD never redirects.
    let blob = image.largest_blob();
    let got = raw_get(&ferry.host(), &blob_path("library/hello", &blob.digest)).unwrap();
    assert_eq!(got.status, 307, "{}", got.text());
    let location = got.header("location").expect("Location").to_owned();
    assert!(location.starts_with(&s3.endpoint()), "{location}");
    assert!(location.contains("X-Amz-Signature") && location.contains("X-Amz-Expires=120"));
    let head = raw_request(
        &ferry.host(),
        "HEAD",
        &blob_path("library/hello", &blob.digest),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(blob.size.to_string().as_str())
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bytes = rt.block_on(async {
        let r = http::client().get(&location).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap()
    });
    assert_eq!(
        sha256_digest(&bytes),
        blob.digest,
        "the store serves the bytes"
    );

    // skopeo follows the redirects; nothing more reaches the upstream.
    pull_all(&reference, &image);
    assert_eq!(
        upstream.blob_gets(),
        fetched,
        "a warm pull costs no upstream blob GET"
    );
}

#[test]
fn redirect_off_streams_cached_blobs_through_ferry() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/plain:1");
    let ferry = ferry_on(&s3, &upstream, json!({"redirect": false})).start();
    let reference = format!("docker://{}/docker.io/library/plain:1", ferry.host());
    pull_all(&reference, &image);
    for b in &image.blobs {
        let got = raw_get(&ferry.host(), &blob_path("library/plain", &b.digest)).unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(sha256_digest(&got.body), b.digest);
        let ranged = raw_request(
            &ferry.host(),
            "GET",
            &blob_path("library/plain", &b.digest),
            &[("Range", "bytes=1-10")],
            &[],
        )
        .unwrap();
        assert_eq!(ranged.status, 206);
        assert_eq!(ranged.body, image.blob_bytes(&b.digest)[1..11]);
    }
    assert_eq!(upstream.blob_gets(), image.blobs.len());
}

#[test]
fn replicas_share_the_bucket_and_need_no_disk() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::multi(), "library/shared:1");
    let a = ferry_on(&s3, &upstream, json!({})).start();
    let mut b = ferry_on(&s3, &upstream, json!({"redirect": false})).start();
    pull_all(
        &format!("docker://{}/docker.io/library/shared:1", a.host()),
        &image,
    );
    let fetched = upstream.blob_gets();

    // B never saw the image: it serves A's cached blobs from the bucket.
    pull_all(
        &format!("docker://{}/docker.io/library/shared:1", b.host()),
        &image,
    );
    assert_eq!(
        upstream.blob_gets(),
        fetched,
        "B made no upstream blob request"
    );

    // B restarted with an empty disk (and its spool directory gone) still serves everything.
    b.stop();
    let _ = std::fs::remove_dir_all(b.dir().join("ferry-spool"));
    b.start_again();
    pull_all(
        &format!("docker://{}/docker.io/library/shared:1", b.host()),
        &image,
    );
    assert_eq!(upstream.blob_gets(), fetched);
}

#[test]
fn concurrent_cold_requests_over_two_replicas_fetch_once() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(
        &upstream,
        Fixture::big(24).seed("s3-coalesce"),
        "library/big:1",
    );
    let blob = image.largest_blob().clone();
    let replicas = [
        ferry_on(&s3, &upstream, json!({"redirect": false})).start(),
        ferry_on(&s3, &upstream, json!({"redirect": false})).start(),
    ];
    let path = blob_path("library/big", &blob.digest);
    let results: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let host = replicas[i % 2].host();
                let path = path.clone();
                scope.spawn(move || {
                    let r = raw_get(&host, &path).expect("GET blob");
                    (r.status, sha256_digest(&r.body))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, digest) in &results {
        assert_eq!((*status, digest.as_str()), (200, blob.digest.as_str()));
    }
    let fetches = upstream.count("GET", &blob.digest);
    eprintln!("upstream fetches for 6 concurrent cold requests over 2 replicas: {fetches}");
    assert_eq!(
        fetches,
        crate::core::segment_gets(blob.size),
        "the replicas coalesce through the store's fill claim"
    );
    assert!(s3.holds(&blob.digest, &image.blob_bytes(&blob.digest)));
}

#[test]
fn a_local_tier_serves_hot_blobs_from_disk() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/tier:1");
    let builder = ferry_on(&s3, &upstream, json!({"redirect": true}))
        .set("storage.local_cache.root", "local")
        .set("storage.local_cache.max_size", "1GiB");
    let mut ferry = builder.start();
    let reference = format!("docker://{}/docker.io/library/tier:1", ferry.host());
    pull_all(&reference, &image);
    let blob = image.largest_blob();
    let path = blob_path("library/tier", &blob.digest);
    let hot = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(
        hot.status, 200,
        "a blob on local disk is served, not redirected"
    );
    assert_eq!(sha256_digest(&hot.body), blob.digest);

    // With the local tier wiped, the blob comes from the store (a redirect), is copied back to
    // local disk in the background, and is then served locally again.
    ferry.stop();
    std::fs::remove_dir_all(ferry.dir().join("local")).unwrap();
    ferry.start_again();
    let cold = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(cold.status, 307);
    wait_until(
        Duration::from_secs(20),
        "blob copied to the local tier",
        || raw_get(&ferry.host(), &path).is_ok_and(|r| r.status == 200),
    );
    pull_all(&reference, &image);
    assert_eq!(
        upstream.blob_gets(),
        image.blobs.len(),
        "never refetched upstream"
    );
}

/// A storage error answers `UNAVAILABLE` with a request id and nothing internal: no endpoint,
/// bucket or key; the log line with the same id has the detail.
fn assert_storage_error_reveals_nothing(ferry: &Ferry, s3: &S3, got: &RawResponse) {
    let body = got.text();
    assert_eq!(got.status, 503, "{body}");
    assert!(body.contains("\"UNAVAILABLE\""), "{body}");
    for secret in [s3.endpoint(), s3.port().to_string(), s3.bucket().to_owned()] {
        assert!(!body.contains(&secret), "{secret:?} leaked: {body}");
    }
    let id = got.header("x-request-id").expect("x-request-id").to_owned();
    assert!(body.contains(&format!("request id {id}")), "{body}");
    wait_until(Duration::from_secs(5), "the detail in the log", || {
        ferry
            .log()
            .lines()
            .any(|l| l.contains(&id) && l.contains("request failed inside ferry"))
    });
}

#[test]
fn a_store_outage_is_a_clear_5xx_and_leaves_nothing_corrupt() {
    let Some(mut s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/outage:1");
    let other = push_fixture(
        &upstream,
        Fixture::big(8).seed("s3-outage"),
        "library/later:1",
    );
    // `storage.unavailable: fail`: the store's failure is answered, not bypassed to the
    // upstream (the default, tested in with_the_store_hung_ferry_serves_blobs_itself...).
    let ferry = ferry_on(&s3, &upstream, json!({"redirect": false, "timeout": "1s"}))
        .set("storage.unavailable", "fail")
        .start();
    pull_all(
        &format!("docker://{}/docker.io/library/outage:1", ferry.host()),
        &image,
    );

    // A store that hangs: each request times out (1 s here), is retried, then the client gets
    // a 5xx instead of waiting forever.
    s3.pause();
    let started = Instant::now();
    let blob = image.largest_blob();
    let got = raw_get(&ferry.host(), &blob_path("library/outage", &blob.digest)).unwrap();
    assert!((500..600).contains(&got.status), "status {}", got.status);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    s3.resume();
    // The store's circuit breaker stays open for its cool-down (5 s), then lets a request try.
    wait_until(Duration::from_secs(15), "the store to serve again", || {
        raw_get(&ferry.host(), &blob_path("library/outage", &blob.digest))
            .is_ok_and(|r| r.status == 200)
    });
    let back = raw_get(&ferry.host(), &blob_path("library/outage", &blob.digest)).unwrap();
    assert_eq!(
        sha256_digest(&back.body),
        blob.digest,
        "served again once the store answers"
    );

    s3.stop();
    let started = Instant::now();
    let got = raw_get(&ferry.host(), &blob_path("library/outage", &blob.digest)).unwrap();
    assert!(
        (500..600).contains(&got.status),
        "status {}: {}",
        got.status,
        got.text()
    );
    assert!(got.text().contains("storage"), "{}", got.text());
    assert_storage_error_reveals_nothing(&ferry, &s3, &got);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A cold blob cannot be looked up either: a 5xx, not a download that cannot be kept.
    let big = other.largest_blob();
    let cold = raw_get(&ferry.host(), &blob_path("library/later", &big.digest)).unwrap();
    assert!((500..600).contains(&cold.status), "status {}", cold.status);

    s3.start_again();
    wait_until(
        Duration::from_secs(15),
        "the store to be usable again",
        || raw_get(&ferry.host(), "/readyz").is_ok_and(|r| r.status == 200),
    );
    assert_eq!(
        s3.corrupt_blobs(),
        Vec::<String>::new(),
        "every object verifies"
    );
    pull_all(
        &format!("docker://{}/docker.io/library/later:1", ferry.host()),
        &other,
    );
    pull_all(
        &format!("docker://{}/docker.io/library/outage:1", ferry.host()),
        &image,
    );
}

#[test]
fn an_interrupted_upload_leaves_no_partial_object() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::big(48).seed("s3-cut"), "library/cut:1");
    let blob = image.largest_blob().clone();
    let mut ferry = ferry_on(
        &s3,
        &upstream,
        json!({"part_size": "5MiB", "upload_concurrency": 1}),
    )
    .start();
    let host = ferry.host();
    let path = blob_path("library/cut", &blob.digest);
    let client = std::thread::spawn(move || raw_get(&host, &path));
    // Kill ferry once the download is complete in its spool file, i.e. while it uploads.
    let spool = ferry.dir().join("ferry-spool");
    wait_until(Duration::from_secs(60), "download spooled", || {
        ferry_storage::spool::partial_files(&spool)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == blob.size))
    });
    ferry.kill9();
    let _ = client.join();
    if let Some((_, size)) = s3.blobs().iter().find(|(d, _)| *d == blob.digest) {
        assert_eq!(*size, blob.size, "an object is complete or absent");
    }
    assert_eq!(
        s3.corrupt_blobs(),
        Vec::<String>::new(),
        "every object verifies"
    );
    ferry.start_again();
    pull_all(
        &format!("docker://{}/docker.io/library/cut:1", ferry.host()),
        &image,
    );
    // Clients get the last byte once the digest is verified; the upload finishes after.
    let bytes = image.blob_bytes(&blob.digest);
    wait_until(Duration::from_secs(60), "blob stored in the bucket", || {
        s3.holds(&blob.digest, &bytes)
    });
}

#[test]
fn credentials_can_come_from_the_usual_aws_variables() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/creds:1");
    let ferry = ferry_on(&s3, &upstream, json!({}))
        .unset("storage.s3.access_key_id")
        .unset("storage.s3.secret_access_key")
        .env("AWS_ACCESS_KEY_ID", ferry_testkit::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", ferry_testkit::s3::SECRET_KEY)
        .start();
    pull_all(
        &format!("docker://{}/docker.io/library/creds:1", ferry.host()),
        &image,
    );
    assert_eq!(s3.corrupt_blobs(), Vec::<String>::new());
    assert_eq!(
        s3.blobs().len(),
        image.blobs.len() + 1,
        "blobs and the manifest"
    );

    // Wrong keys: `ferry serve` refuses to start, naming the bucket.
    let mut cmd = ferry_command();
    let bad = ferry.dir().join("bad.yaml");
    let yaml = std::fs::read_to_string(ferry.config_path())
        .unwrap()
        .replace(
            &format!("listen: \"{}\"", ferry.host()),
            "listen: \"127.0.0.1:1\"",
        );
    std::fs::write(&bad, yaml).unwrap();
    let out = cmd
        .args(["serve", "--config"])
        .arg(&bad)
        .env("AWS_ACCESS_KEY_ID", "nobody")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use the object store"), "{err}");
    assert!(err.contains(s3.bucket()), "{err}");
}

/// A replica killed with SIGKILL while it downloads a blob (holding the bucket's fill lock)
/// delays another replica's request for that blob by at most the lock's lifetime (4 s), not
/// the old 30 s: the lock is no longer renewed, expires, and the other replica takes over.
#[test]
fn a_dead_replicas_download_is_taken_over_within_seconds() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let up = FaultyUpstream::start();
    let d = up.add_pattern_blob(77, 4 << 20);
    up.add_rule(Rule::blob(&d, Fault::StallAfter(1 << 20)).times(1));
    let replica = || {
        s3.apply(
            Ferry::builder().upstream("docker.io", &up),
            json!({"redirect": false}),
        )
        .start()
    };
    let (mut a, b) = (replica(), replica());
    let path = format!("/v2/library/big/blobs/{d}");
    let stuck = {
        let (host, p) = (a.host(), path.clone());
        std::thread::spawn(move || raw_get(&host, &p))
    };
    wait_until(Duration::from_secs(10), "replica a to download", || {
        up.blob_gets(&d) >= 1
    });
    a.kill9();
    let _ = stuck.join();
    let started = Instant::now();
    let got = raw_get(&b.host(), &path).unwrap();
    let took = started.elapsed();
    eprintln!("takeover of a dead replica's download: {took:?}");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(sha256_digest(&got.body), d);
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert_eq!(up.blob_gets(&d), 2, "b downloaded it itself");
}

/// Pulls `image` (`library/hung:1`) through `ferry` until its largest blob is answered with a
/// redirect to the store, then freezes the store (SIGSTOP) and waits past the 2 s after which
/// ferry checks a quiet store before it redirects: returns that blob's path.
fn cache_then_freeze(s3: &S3, ferry: &Ferry, image: &Image) -> String {
    pull_all(
        &format!("docker://{}/docker.io/library/hung:1", ferry.host()),
        image,
    );
    let path = blob_path("library/hung", &image.largest_blob().digest);
    wait_until(
        Duration::from_secs(10),
        "a redirect for the cached blob",
        || raw_get(&ferry.host(), &path).unwrap().status == 307,
    );
    s3.pause();
    // Signing a redirect needs no store request: after 2 s without one, ferry checks the store
    // (bounded by fail_within) before it sends a client there.
    std::thread::sleep(Duration::from_millis(2500));
    path
}

/// With `storage.unavailable: fail`, a hung store (SIGSTOP) fails a cached blob's request
/// within `storage.s3.fail_within`, the next requests fail at once, `/readyz` says not ready
/// and no redirect to the dead store is handed out; once the store answers again, everything
/// is served as before.
#[test]
fn a_hung_store_fails_fast_and_is_not_redirected_to() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hung:1");
    let ferry = ferry_on(
        &s3,
        &upstream,
        json!({"redirect": true, "fail_within": "2s"}),
    )
    .set("storage.unavailable", "fail")
    .start();
    let path = cache_then_freeze(&s3, &ferry, &image);
    let started = Instant::now();
    let first = raw_get(&ferry.host(), &path).unwrap();
    let took = started.elapsed();
    assert!(
        (500..600).contains(&first.status),
        "{}: {}",
        first.status,
        first.text()
    );
    assert!(
        took < Duration::from_secs(5),
        "the first request took {took:?}"
    );
    let started = Instant::now();
    let next = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(
        next.status,
        503,
        "no redirect to a dead store: {}",
        next.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(raw_get(&ferry.host(), "/readyz").unwrap().status, 503);

    s3.resume();
    wait_until(Duration::from_secs(20), "the store to serve again", || {
        raw_get(&ferry.host(), &path).unwrap().status == 307
    });
    assert_eq!(raw_get(&ferry.host(), "/readyz").unwrap().status, 200);
}

/// With the default `storage.unavailable: upstream`, a hung store (SIGSTOP) does not stop the
/// mirror: within `fail_within` a cached blob is served by ferry itself from the upstream
/// (200 with the right bytes, not a redirect to the dead store), the next requests at once,
/// whole pulls of a cached and of a never-cached image succeed, and `/readyz` stays 200 while
/// saying it is degraded. Once the store answers, redirects come back.
#[test]
fn with_the_store_hung_ferry_serves_blobs_itself_from_the_upstream() {
    let Some(s3) = S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hung:1");
    let fresh = push_fixture(&upstream, Fixture::multi(), "library/fresh:1");
    let ferry = ferry_on(
        &s3,
        &upstream,
        json!({"redirect": true, "fail_within": "2s"}),
    )
    .start();
    let cached = format!("docker://{}/docker.io/library/hung:1", ferry.host());
    let path = cache_then_freeze(&s3, &ferry, &image);
    let blob = image.largest_blob();
    let started = Instant::now();
    let first = raw_get(&ferry.host(), &path).unwrap();
    let took = started.elapsed();
    assert_eq!(first.status, 200, "served by ferry: {}", first.text());
    assert_eq!(sha256_digest(&first.body), blob.digest);
    assert!(
        took < Duration::from_secs(5),
        "the first request took {took:?}"
    );
    let started = Instant::now();
    let next = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(sha256_digest(&next.body), blob.digest);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the breaker is open: {:?}",
        started.elapsed()
    );
    let ready = raw_get(&ferry.host(), "/readyz").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains("degraded"), "{}", ready.text());
    pull_all(&cached, &image);
    pull_all(
        &format!("docker://{}/docker.io/library/fresh:1", ferry.host()),
        &fresh,
    );
    assert!(
        ferry
            .log()
            .contains("serving the blob from the upstream, uncached"),
        "the bypass is logged"
    );

    s3.resume();
    wait_until(Duration::from_secs(20), "redirects again", || {
        raw_get(&ferry.host(), &path).unwrap().status == 307
    });
}
