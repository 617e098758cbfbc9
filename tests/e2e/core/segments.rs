//! Parallel ranged downloads of large cold blobs (`upstreams.<name>.segments`, issue 15):
//! segments retried alone, an upstream that ignores `Range`, wrong bytes in one segment, and a
//! client following a download whose segments finish out of order — each checked against the
//! blob's digest, the upstream's request log and the cache.

use std::time::{Duration, Instant};

use super::*;

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 40 * MIB;

/// A fake upstream with one 40 MiB blob (a first request of 16 MiB and three 8 MiB segments).
fn upstream_with_blob(seed: u64) -> (FaultyUpstream, String) {
    let up = FaultyUpstream::start();
    let d = up.add_pattern_blob(seed, SIZE);
    (up, d)
}

/// Turns hedging off, for tests that hold a segment back on purpose (hedging would ask it
/// again and finish early).
fn no_hedges(b: FerryBuilder) -> FerryBuilder {
    b.set_path(&["upstreams", "docker.io", "segments", "hedge"], false)
}

/// A download that got wrong bytes: the client never got a complete wrong blob, and neither a
/// cache entry nor a spool file is left.
fn wrong_bytes_leave_nothing(ferry: &Ferry, d: &str) {
    let r = get_blob(ferry, d);
    assert!(
        r.body.len() as u64 != SIZE || sha256_digest(&r.body) != d,
        "a client never gets a complete wrong blob"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!is_cached(ferry, d), "nothing stored");
    assert!(spool_files(ferry).is_empty(), "spool cleaned");
}

fn get_blob(ferry: &Ferry, d: &str) -> http::RawResponse {
    http::raw_get(&ferry.host(), &format!("/v2/lib/big/blobs/{d}")).expect("blob GET")
}

fn ranges_asked(up: &FaultyUpstream, d: &str) -> Vec<String> {
    up.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(d))
        .filter_map(|r| r.range)
        .collect()
}

#[test]
fn a_large_cold_blob_is_fetched_in_parallel_ranges_and_cached_once() {
    let (up, d) = upstream_with_blob(51);
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let r = get_blob(&ferry, &d);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), d);
    let mut asked = ranges_asked(&up, &d);
    asked.sort();
    assert_eq!(
        asked,
        [
            "bytes=0-16777215",
            "bytes=16777216-25165823",
            "bytes=25165824-33554431",
            "bytes=33554432-41943039"
        ]
    );
    wait_until(Duration::from_secs(10), "the blob cached", || {
        is_cached(&ferry, &d)
    });
    assert_eq!(sha256_digest(&get_blob(&ferry, &d).body), d);
    assert_eq!(
        up.blob_gets(&d),
        segment_gets(SIZE),
        "no request after the first pull"
    );
}

#[test]
fn a_cut_segment_is_retried_alone() {
    let (up, d) = upstream_with_blob(52);
    up.add_rule(Rule::blob(&d, Fault::CutAfter(3 * MIB)).times(1));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let r = get_blob(&ferry, &d);
    assert_eq!(sha256_digest(&r.body), d);
    assert_eq!(up.blob_gets(&d), segment_gets(SIZE) + 1, "one retry");
    let asked = ranges_asked(&up, &d);
    assert!(
        asked
            .iter()
            .any(|r| r == &format!("bytes={}-16777215", 3 * MIB)),
        "the cut first segment resumes where it stopped: {asked:?}"
    );
}

#[test]
fn an_upstream_that_ignores_range_is_read_as_one_stream() {
    let (up, d) = upstream_with_blob(53);
    up.add_rule(Rule::blob(&d, Fault::IgnoreRange));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let r = get_blob(&ferry, &d);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), d);
    assert_eq!(up.blob_gets(&d), 1, "no segment requests after a 200");
}

#[test]
fn wrong_bytes_in_one_segment_leave_no_cache_entry_and_the_next_request_downloads_again() {
    let (up, d) = upstream_with_blob(54);
    up.add_rule(Rule::blob(&d, Fault::WrongBytes).times(1));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    wrong_bytes_leave_nothing(&ferry, &d);
    let again = get_blob(&ferry, &d);
    assert_eq!(sha256_digest(&again.body), d);
    assert_eq!(up.blob_gets(&d), 2 * segment_gets(SIZE));
}

#[test]
fn a_client_follows_a_download_whose_segments_finish_out_of_order() {
    let (up, d) = upstream_with_blob(55);
    // The first segment's body starts 2 s late: the later segments land first.
    up.add_rule(Rule::blob(&d, Fault::DelayBody(Duration::from_secs(2))).times(1));
    let ferry = no_hedges(Ferry::builder().upstream("docker.io", &up)).start();
    let started = Instant::now();
    let r = get_blob(&ferry, &d);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(r.body.len() as u64, SIZE);
    assert_eq!(sha256_digest(&r.body), d);
    let direct = pattern_bytes(55, 20 * MIB, 4096);
    assert_eq!(
        &r.body[(20 * MIB) as usize..(20 * MIB) as usize + 4096],
        &direct[..]
    );
}

/// A lazy-pulling client's `Range` beyond what a cold download has written is forwarded
/// upstream at once (206 with the right bytes), while the whole download goes on and is cached;
/// `cache.cold_ranges: wait` waits for the download instead.
#[test]
fn a_cold_range_is_forwarded_upstream_at_once() {
    let (up, d) = upstream_with_blob(56);
    // The download's first segment stalls: the written prefix stays at 1 MiB.
    up.add_rule(Rule::blob(&d, Fault::StallAfter(MIB)).times(1));
    let ferry = no_hedges(Ferry::builder().upstream("docker.io", &up)).start();
    let path = format!("/v2/lib/big/blobs/{d}");
    let first = {
        let (host, p) = (ferry.host(), path.clone());
        std::thread::spawn(move || http::raw_get(&host, &p))
    };
    wait_until(Duration::from_secs(10), "the download to stall", || {
        up.blob_gets(&d) >= 1
    });
    let (start, end) = (30 * MIB, 30 * MIB + 65_535);
    let range = format!("bytes={start}-{end}");
    let began = Instant::now();
    let r = http::raw_request(&ferry.host(), "GET", &path, &[("Range", &range)], &[]).unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{end}/{SIZE}").as_str())
    );
    assert_eq!(r.body, pattern_bytes(56, start, 65_536));
    assert!(ranges_asked(&up, &d).contains(&range), "forwarded as asked");
    up.release_stalls();
    let whole = first.join().unwrap().unwrap();
    assert_eq!(sha256_digest(&whole.body), d);
    wait_until(Duration::from_secs(10), "the blob cached", || {
        is_cached(&ferry, &d)
    });
}

#[test]
fn with_cold_ranges_wait_a_range_follows_the_download() {
    let (up, d) = upstream_with_blob(57);
    up.add_rule(Rule::blob(&d, Fault::DelayBody(Duration::from_secs(2))).times(1));
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .set("cache.cold_ranges", "wait")
        .start();
    let path = format!("/v2/lib/big/blobs/{d}");
    let first = {
        let (host, p) = (ferry.host(), path.clone());
        std::thread::spawn(move || http::raw_get(&host, &p))
    };
    wait_until(Duration::from_secs(10), "the download to start", || {
        up.blob_gets(&d) >= 1
    });
    let r = http::raw_request(
        &ferry.host(),
        "GET",
        &path,
        &[("Range", "bytes=100-199")],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, pattern_bytes(57, 100, 100));
    assert!(!ranges_asked(&up, &d).contains(&"bytes=100-199".to_owned()));
    assert_eq!(sha256_digest(&first.join().unwrap().unwrap().body), d);
}

/// Every segment is first asked of the upstream's mirror (where every request goes first);
/// the mirror stalls every blob body after 1 MiB, so each segment, once it has written nothing
/// for 2 s, is hedged to the registry itself from where it stopped. The blob arrives whole and
/// verified, is cached once, and `ferry_segment_hedges_total` counts the hedges.
#[test]
fn slow_segments_are_hedged_to_another_source() {
    let healthy = FaultyUpstream::start();
    let d = healthy.add_pattern_blob(61, SIZE);
    let stalled = FaultyUpstream::start();
    assert_eq!(stalled.add_pattern_blob(61, SIZE), d);
    stalled.add_rule(Rule::blobs(Fault::StallAfter(MIB)));
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &healthy,
            serde_json::json!({"mirrors": [stalled.url()]}),
        )
        .start();
    let r = get_blob(&ferry, &d);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), d);
    let asked_stalled = ranges_asked(&stalled, &d);
    assert!(
        asked_stalled.iter().any(|r| r.ends_with("-16777215"))
            && asked_stalled.iter().any(|r| r.ends_with("-33554431")),
        "the segments were asked of the mirror first: {asked_stalled:?}"
    );
    let asked_healthy = ranges_asked(&healthy, &d);
    for end in ["-16777215", "-33554431"] {
        assert!(
            asked_healthy.iter().any(|r| r.ends_with(end)
                && !r.starts_with("bytes=0-")
                && r != "bytes=16777216-33554431"),
            "the stalled segment ending {end} was hedged from where it stopped: {asked_healthy:?}"
        );
    }
    let hedges = metrics::Scrape::of(&ferry.host())
        .sum("ferry_segment_hedges_total", &[("upstream", "docker.io")]);
    assert!(hedges >= 2.0, "hedges counted: {hedges}");
    wait_until(Duration::from_secs(10), "the blob cached", || {
        is_cached(&ferry, &d)
    });
    stalled.release_stalls();
    let before = healthy.blob_gets(&d) + stalled.blob_gets(&d);
    assert_eq!(sha256_digest(&get_blob(&ferry, &d).body), d);
    assert_eq!(
        healthy.blob_gets(&d) + stalled.blob_gets(&d),
        before,
        "served from the cache"
    );
}

/// `segments.one_stream_above`: a first answer that streams fast (any loopback upstream beats
/// 1 MiB/s) is followed by one request for the rest, not by parallel segments.
fn one_stream_when_fast(b: FerryBuilder) -> FerryBuilder {
    b.set_path(
        &["upstreams", "docker.io", "segments", "one_stream_above"],
        "1MiB/s",
    )
}

#[test]
fn a_near_fast_upstream_is_fetched_as_one_stream_after_the_first_answer() {
    let (up, d) = upstream_with_blob(57);
    let ferry = one_stream_when_fast(Ferry::builder().upstream("docker.io", &up)).start();
    let r = get_blob(&ferry, &d);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), d);
    assert_eq!(
        ranges_asked(&up, &d),
        ["bytes=0-16777215", "bytes=16777216-"],
        "the first answer, then the rest in one request"
    );
    wait_until(Duration::from_secs(10), "the blob cached", || {
        is_cached(&ferry, &d)
    });
    assert_eq!(sha256_digest(&get_blob(&ferry, &d).body), d);
    assert_eq!(up.blob_gets(&d), 2, "the hit asks nothing upstream");
}

#[test]
fn a_cut_one_stream_download_resumes_and_wrong_bytes_are_never_cached() {
    let (up, d) = upstream_with_blob(58);
    // The first answer is cut after 3 MiB: one request from there to the end follows.
    up.add_rule(Rule::blob(&d, Fault::CutAfter(3 * MIB)).times(1));
    let ferry = one_stream_when_fast(Ferry::builder().upstream("docker.io", &up)).start();
    let r = get_blob(&ferry, &d);
    assert_eq!(sha256_digest(&r.body), d);
    assert_eq!(
        ranges_asked(&up, &d),
        ["bytes=0-16777215".to_owned(), format!("bytes={}-", 3 * MIB)],
        "the cut first answer, then the rest from where it stopped"
    );

    let (up, d) = upstream_with_blob(59);
    up.add_rule(Rule::blob(&d, Fault::WrongBytes).times(1));
    let ferry = one_stream_when_fast(Ferry::builder().upstream("docker.io", &up)).start();
    wrong_bytes_leave_nothing(&ferry, &d);
    assert_eq!(sha256_digest(&get_blob(&ferry, &d).body), d);
}
