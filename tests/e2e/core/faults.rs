//! Streaming, coalescing and integrity under faults (SPEC section 5): many concurrent requests
//! for one missing blob cause one upstream GET (late joiners included); a cold blob's first
//! bytes reach the client before the upstream download ends; a wrong digest, a cut connection
//! or a crash (kill -9, then restart) never leaves a corrupt cache entry and the next request
//! fetches again; a client that disconnects does not abort the download for others; and
//! ferry's memory stays flat while a 200 MB blob streams through it.
//!
//! Faults a real registry cannot produce on demand come from [`FaultyUpstream`]; the 200 MB
//! image is pushed once to a real docker-registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::*;

const MIB: u64 = 1024 * 1024;

/// What one streaming client saw.
#[derive(Debug)]
struct Received {
    status: u16,
    len: u64,
    digest: String,
    failed: bool,
}

/// Starts a GET of `path` on its own task; `progress` counts the body bytes received so far
/// (the body is hashed as it arrives, never kept).
fn spawn_get(
    http: &reqwest::Client,
    url: String,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Received> {
    let req = http.get(url);
    tokio::spawn(async move {
        let mut resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let mut hasher = Sha256::new();
        let mut failed = false;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    hasher.update(&c);
                    progress.fetch_add(c.len() as u64, Ordering::SeqCst);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        Received {
            status,
            len: progress.load(Ordering::SeqCst),
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
            failed,
        }
    })
}

/// Polls (without blocking the runtime) until `cond` holds.
async fn until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_requests_make_one_upstream_get() {
    let up = FaultyUpstream::start();
    let size = 8 * MIB;
    let blob = up.add_pattern_blob(31, size);
    // The download stops half-way until the test lets it go on.
    up.add_rule(Rule::blob(&blob, Fault::StallAfter(4 * MIB)).times(1));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let http = client();
    let blob_url = url(&ferry, &format!("/v2/org/app/blobs/{blob}"));
    let progress: Vec<Arc<AtomicU64>> = (0..50).map(|_| Arc::new(AtomicU64::new(0))).collect();

    let mut clients = Vec::new();
    for p in &progress[..25] {
        clients.push(spawn_get(&http, blob_url.clone(), p.clone()));
    }
    until(
        "the first 25 clients to stream",
        Duration::from_secs(20),
        || {
            progress[..25]
                .iter()
                .all(|p| p.load(Ordering::SeqCst) >= MIB)
        },
    )
    .await;
    // Late joiners arrive while the download is half done, and get its bytes at once.
    for p in &progress[25..] {
        clients.push(spawn_get(&http, blob_url.clone(), p.clone()));
    }
    until(
        "the 25 late joiners to stream",
        Duration::from_secs(20),
        || {
            progress[25..]
                .iter()
                .all(|p| p.load(Ordering::SeqCst) >= MIB)
        },
    )
    .await;
    assert!(
        progress.iter().all(|p| p.load(Ordering::SeqCst) <= 4 * MIB),
        "no client can be past the stalled upstream"
    );
    assert_eq!(up.blob_gets(&blob), 1);

    up.release_stalls();
    for (i, c) in clients.into_iter().enumerate() {
        let got = c.await.unwrap();
        assert_eq!(got.status, 200, "client {i}");
        assert!(!got.failed, "client {i}: {got:?}");
        assert_eq!(
            (got.len, got.digest.as_str()),
            (size, blob.as_str()),
            "client {i}"
        );
    }
    assert_eq!(
        up.blob_gets(&blob),
        1,
        "exactly one upstream GET for 50 clients"
    );
    assert!(is_cached(&ferry, &blob));
}

#[tokio::test]
async fn a_cold_blob_streams_before_the_upstream_download_ends() {
    let up = FaultyUpstream::start();
    let size = 4 * MIB;
    let blob = up.add_pattern_blob(32, size);
    // 2 MiB/s: the upstream needs two seconds for the whole blob.
    up.add_rule(Rule::blob(&blob, Fault::Throttle(2 * MIB)));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();

    let start = Instant::now();
    let mut resp = get(&ferry, &format!("/v2/org/app/blobs/{blob}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-length"),
        Some(size.to_string().as_str())
    );
    let mut hasher = Sha256::new();
    let mut first_byte = None;
    let mut half = None;
    let mut len = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        first_byte.get_or_insert_with(|| start.elapsed());
        len += chunk.len() as u64;
        if len >= size / 2 {
            half.get_or_insert_with(|| start.elapsed());
        }
        hasher.update(&chunk);
    }
    let total = start.elapsed();
    let (first_byte, half) = (first_byte.unwrap(), half.unwrap());
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), blob);
    assert!(
        total >= Duration::from_millis(1800),
        "throttle not applied: {total:?}"
    );
    assert!(
        first_byte < Duration::from_millis(1000),
        "first byte after {first_byte:?} of {total:?}"
    );
    assert!(
        half < total - Duration::from_millis(500),
        "half the blob after {half:?} of {total:?}: not streamed"
    );
}

#[tokio::test]
async fn a_wrong_digest_never_enters_the_cache_and_the_next_request_fetches_again() {
    let up = FaultyUpstream::start();
    let size = 2 * MIB;
    let blob = up.add_pattern_blob(33, size);
    up.add_rule(Rule::blob(&blob, Fault::WrongBytes).times(1));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let path = format!("/v2/org/app/blobs/{blob}");

    let (got, failed) = read_body(get(&ferry, &path).await).await;
    assert!(
        failed,
        "a corrupt download must not end as a complete response"
    );
    assert!(
        (got.len() as u64) < size,
        "the client got every byte of bad content"
    );
    wait_until(
        Duration::from_secs(10),
        "the bad download to be discarded",
        || spool_files(&ferry).is_empty(),
    );
    assert!(!is_cached(&ferry, &blob));

    let good = get(&ferry, &path).await;
    assert_eq!(good.status(), 200);
    assert_eq!(sha256_digest(&good.bytes().await.unwrap()), blob);
    assert_eq!(up.blob_gets(&blob), 2, "the next request fetched again");
    wait_until(Duration::from_secs(10), "the blob to be cached", || {
        is_cached(&ferry, &blob)
    });

    // Manifests by digest are verified too.
    let digest = up.add_image("org/app", "1", std::slice::from_ref(&blob));
    up.add_rule(Rule::manifest("org/app", &digest, Fault::WrongBytes).times(1));
    let manifest_path = format!("/v2/org/app/manifests/{digest}");
    let bad = get_manifest(&ferry, &manifest_path).await;
    assert!(bad.status().is_server_error(), "{}", bad.status());
    assert!(!is_cached(&ferry, &digest));
    let ok = get_manifest(&ferry, &manifest_path).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(sha256_digest(&ok.bytes().await.unwrap()), digest);
    assert!(is_cached(&ferry, &digest));
}

#[tokio::test]
async fn a_cut_download_is_resumed_or_discarded_but_never_cached_half() {
    let up = FaultyUpstream::start();
    let ferry = Ferry::builder().upstream("docker.io", &up).start();

    // Cut once: ferry resumes where it stopped, the client sees one whole response.
    let once = up.add_pattern_blob(34, 3 * MIB);
    up.add_rule(Rule::blob(&once, Fault::CutAfter(MIB)).times(1));
    let resp = get(&ferry, &format!("/v2/org/app/blobs/{once}")).await;
    let (got, failed) = read_body(resp).await;
    assert!(!failed);
    assert_eq!(sha256_digest(&got), once);
    let tries: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&once))
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[1].range.as_deref(), Some("bytes=1048576-"));
    wait_until(Duration::from_secs(10), "the resumed blob cached", || {
        is_cached(&ferry, &once)
    });

    // Cut every time: ferry gives up, the client's body fails, nothing is cached.
    let always = up.add_pattern_blob(35, 8 * MIB);
    let cut = up.add_rule(Rule::blob(&always, Fault::CutAfter(256 * 1024)));
    let path = format!("/v2/org/app/blobs/{always}");
    let (got, failed) = read_body(get(&ferry, &path).await).await;
    assert!(
        failed,
        "a download that cannot finish must fail the response"
    );
    assert!((got.len() as u64) < 8 * MIB);
    let attempts = up.blob_gets(&always);
    assert!((2..=10).contains(&attempts), "{attempts} attempts");
    wait_until(
        Duration::from_secs(10),
        "the cut download discarded",
        || spool_files(&ferry).is_empty(),
    );
    assert!(!is_cached(&ferry, &always));

    up.remove_rule(cut);
    let resp = get(&ferry, &path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), always);
    assert_eq!(up.blob_gets(&always), attempts + 1);
    wait_until(Duration::from_secs(10), "the blob cached", || {
        is_cached(&ferry, &always)
    });
}

#[tokio::test]
async fn kill_9_mid_download_leaves_no_corrupt_entry_and_the_next_pull_is_correct() {
    let up = FaultyUpstream::start();
    let layer = up.add_pattern_blob(36, 32 * MIB);
    let manifest = up.add_image("test/big", "v1", std::slice::from_ref(&layer));
    up.add_rule(Rule::blob(&layer, Fault::StallAfter(8 * MIB)).times(1));
    let mut ferry = Ferry::builder().upstream("docker.io", &up).start();

    let progress = Arc::new(AtomicU64::new(0));
    let client_task = spawn_get(
        &client(),
        url(&ferry, &format!("/v2/test/big/blobs/{layer}")),
        progress.clone(),
    );
    until(
        "the download to be half done",
        Duration::from_secs(20),
        || progress.load(Ordering::SeqCst) >= 4 * MIB,
    )
    .await;
    // The download's spool file (a metadata write may have its own for a moment).
    assert!(!spool_files(&ferry).is_empty(), "a download in progress");
    assert!(!is_cached(&ferry, &layer));

    ferry.kill9();
    let cut = client_task.await.unwrap();
    assert!(cut.failed || cut.len < 32 * MIB, "{cut:?}");
    up.release_stalls();
    ferry.start_again();
    assert!(
        !cache_file(&ferry, &layer).exists(),
        "a partial blob survived the crash"
    );
    assert!(
        spool_files(&ferry).is_empty(),
        "the spool is cleaned at start"
    );

    // A real pull after the crash fetches the layer again, whole.
    let pulled = pull_to_dir(&format!("docker://{}/test/big:v1", ferry.host()), &[]);
    assert_eq!(pulled["manifest.json"], manifest);
    assert_eq!(pulled[layer.trim_start_matches("sha256:")], layer);
    // Two cold downloads, each in parallel segments (the first cut by the crash).
    assert_eq!(up.blob_gets(&layer), 2 * segment_gets(32 * MIB));
    wait_until(Duration::from_secs(10), "the layer cached", || {
        is_cached(&ferry, &layer)
    });
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_abort_the_download() {
    let up = FaultyUpstream::start();
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let http = client();

    // Two clients; one goes away mid-download; the other gets everything.
    let shared = up.add_pattern_blob(37, 8 * MIB);
    up.add_rule(Rule::blob(&shared, Fault::StallAfter(2 * MIB)).times(1));
    let blob_url = url(&ferry, &format!("/v2/org/app/blobs/{shared}"));
    let mut leaver = http.get(&blob_url).send().await.unwrap();
    let stayer_progress = Arc::new(AtomicU64::new(0));
    let stayer = spawn_get(&http, blob_url.clone(), stayer_progress.clone());
    let mut left_with = 0;
    while left_with < MIB {
        left_with += leaver.chunk().await.unwrap().unwrap().len() as u64;
    }
    until(
        "the second client to stream",
        Duration::from_secs(20),
        || stayer_progress.load(Ordering::SeqCst) >= MIB,
    )
    .await;
    drop(leaver);
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.release_stalls();
    let got = stayer.await.unwrap();
    assert!(!got.failed, "{got:?}");
    assert_eq!((got.len, got.digest.as_str()), (8 * MIB, shared.as_str()));
    assert_eq!(up.blob_gets(&shared), 1);

    // The only client goes away: the download still completes into the cache.
    let alone = up.add_pattern_blob(38, 8 * MIB);
    up.add_rule(Rule::blob(&alone, Fault::StallAfter(2 * MIB)).times(1));
    let mut only = get(&ferry, &format!("/v2/org/app/blobs/{alone}")).await;
    let mut read = 0;
    while read < MIB {
        read += only.chunk().await.unwrap().unwrap().len() as u64;
    }
    drop(only);
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.release_stalls();
    wait_until(
        Duration::from_secs(20),
        "the abandoned download cached",
        || is_cached(&ferry, &alone),
    );
    let again = get(&ferry, &format!("/v2/org/app/blobs/{alone}")).await;
    assert_eq!(sha256_digest(&again.bytes().await.unwrap()), alone);
    assert_eq!(up.blob_gets(&alone), 1, "served from the cache afterwards");
}

/// Samples ferry's memory every 10 ms until `stop`; returns the largest anonymous RSS seen.
fn sample_memory(pid: u32, stop: Arc<AtomicU64>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while stop.load(Ordering::SeqCst) == 0 {
            peak = peak.max(memory(pid).anon);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.max(memory(pid).anon)
    })
}

#[tokio::test]
async fn memory_stays_flat_while_a_200_mb_blob_streams_through() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::big(200), "test/big:v1");
    let layer = image.largest_blob().clone();
    assert!(layer.size > 200 * MIB);
    let ferry = Ferry::builder().upstream("docker.io", &registry).start();
    let pid = ferry.pid().expect("ferry pid");
    let at_start = memory(pid);
    let path = format!("/v2/test/big/blobs/{}", layer.digest);

    for pass in ["cold (streamed while downloading)", "cached (from disk)"] {
        let stop = Arc::new(AtomicU64::new(0));
        let sampler = sample_memory(pid, stop.clone());
        let progress = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let got = spawn_get(&client(), url(&ferry, &path), progress)
            .await
            .unwrap();
        let took = start.elapsed();
        stop.store(1, Ordering::SeqCst);
        let peak_anon = sampler.join().unwrap();
        let now = memory(pid);
        eprintln!(
            "{pass}: {} MiB in {took:?}; ferry RSS at start {} KiB, now {} KiB, peak {} KiB, \
             peak anonymous {} KiB",
            layer.size / MIB,
            at_start.rss,
            now.rss,
            now.hwm,
            peak_anon
        );
        assert_eq!(got.status, 200, "{pass}");
        assert!(!got.failed, "{pass}");
        assert_eq!(
            (got.len, got.digest.as_str()),
            (layer.size, layer.digest.as_str())
        );
        // A buffered blob would need 200 MiB; streaming needs a few MiB of buffers.
        assert!(
            peak_anon < at_start.anon + 64 * 1024,
            "{pass}: anonymous memory grew from {} to {peak_anon} KiB",
            at_start.anon
        );
        assert!(
            now.hwm < at_start.rss + 96 * 1024,
            "{pass}: peak RSS {} KiB (started at {} KiB)",
            now.hwm,
            at_start.rss
        );
    }
    // One download, in parallel segments, and none for the second pass.
    assert_eq!(
        ferry_count(&registry, "GET", &path),
        segment_gets(layer.size)
    );

    // And a real client pulls the whole image exactly like a direct pull.
    assert_same_pull(
        &format!("docker://{}/test/big:v1", ferry.host()),
        &format!("docker://{}/test/big:v1", registry.host()),
        &image,
    );
    assert_eq!(
        ferry_count(&registry, "GET", &path),
        segment_gets(layer.size)
    );
}
