//! Graceful shutdown.

use super::*;

/// Starts a stopped ferry again and checks that no partial download is left in its spool.
fn start_again_with_an_empty_spool(ferry: &mut Ferry) {
    ferry.start_again();
    let spool = spool_files(ferry);
    assert!(
        spool.is_empty(),
        "left in _spool/ after a restart: {spool:?}"
    );
}

/// SIGTERM during a large, slow download: ferry stops accepting at once, the response in flight
/// completes (verified) within the grace period, ferry exits 0, and the cache holds the
/// complete verified blob or nothing; the next start finds `_spool/` empty.
#[test]
fn sigterm_lets_the_download_in_flight_finish() {
    let size = 8 * MIB;
    let SlowDownload {
        up,
        blob,
        mut ferry,
        path,
        download,
        ..
    } = SlowDownload::start(51, size, 2 * MIB, "30s", 512 * 1024);
    let signalled = Instant::now();
    ferry.sigterm();
    wait_until(Duration::from_secs(3), "ferry to stop accepting", || {
        TcpStream::connect(ferry.host()).is_err()
    });
    assert!(
        download.received() < size,
        "SIGTERM arrived while the response was in flight"
    );

    download.finish_whole(&blob);
    let status = ferry
        .wait_exit(Duration::from_secs(35))
        .expect("ferry exits within the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "ferry exited when the response was done, not at the end of the grace period ({:?})",
        signalled.elapsed()
    );

    // A complete, verified entry or none (is_cached panics on a corrupt one).
    let cached = is_cached(&ferry, &blob);
    eprintln!(
        "after SIGTERM the cache holds {}",
        if cached {
            "the verified blob"
        } else {
            "no entry for the blob"
        }
    );
    start_again_with_an_empty_spool(&mut ferry);
    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(
        up.blob_gets(&blob),
        if cached { 1 } else { 2 },
        "a complete entry is served from the cache; without one ferry downloads again"
    );
}

/// SIGTERM with a download that cannot finish within `server.shutdown_timeout`: ferry waits out
/// the grace period, closes the connection and exits 0; the cut download leaves no entry in the
/// cache (only verified blobs there), its spool file is gone after the next start, and the blob
/// is downloaded again, whole, on request.
#[test]
fn sigterm_past_the_grace_period_leaves_no_partial_entry() {
    let SlowDownload {
        up,
        blob,
        throttle,
        mut ferry,
        path,
        download,
    } = SlowDownload::start(61, 16 * MIB, MIB, "2s", 256 * 1024);
    let signalled = Instant::now();
    ferry.sigterm();
    let status = ferry
        .wait_exit(Duration::from_secs(15))
        .expect("ferry exits after the grace period");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "waited the 2 s grace period, then stopped ({took:?})"
    );
    let got = download.finish();
    assert!(!got.complete(), "the response was cut at exit");

    assert!(
        !is_cached(&ferry, &blob),
        "a cut download is not a cache entry"
    );
    start_again_with_an_empty_spool(&mut ferry);
    up.remove_rule(throttle);
    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(up.blob_gets(&blob), 2, "downloaded again after the cut");
    assert!(is_cached(&ferry, &blob));
}
