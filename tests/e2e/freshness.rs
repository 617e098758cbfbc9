//! Freshness and fair use of the upstream (SPEC section 13): an expired tag is answered at once
//! and revalidated in the background (`cache.revalidate`); a tag deleted upstream is served for
//! `cache.keep_deleted` with a `ferry-deleted-upstream` header, then not; the rate-limit ledger
//! follows Docker Hub's `ratelimit-*` headers per account, moves off an account before it runs
//! out, leaves the last requests to client pulls, and says when to retry once all are spent.

use std::time::{Duration, Instant};

use crate::core::{expect_error, get_manifest, header, pull_to_dir};
use crate::support::metrics::Scrape;
use crate::support::*;
use crate::sync::{Run, run_sync};

/// The digest a GET of `path` on ferry answers (status 200 checked).
async fn digest_at(ferry: &Ferry, path: &str) -> String {
    let resp = get_manifest(ferry, path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    header(&resp, "docker-content-digest").unwrap().to_owned()
}

#[tokio::test]
async fn an_expired_tag_is_answered_at_once_while_a_slow_upstream_revalidates() {
    let up = FaultyUpstream::start();
    let one = up.add_blob(b"one".to_vec());
    let two = up.add_blob(b"two".to_vec());
    let d1 = up.add_image("org/app", "stable", &[one]);
    let d2 = up.add_image("org/app", "next", &[two]);
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .tag_ttl("1s")
        .start();
    let blocking = Ferry::builder()
        .upstream("docker.io", &up)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking")
        .start();
    let path = "/v2/org/app/manifests/stable";
    for f in [&ferry, &blocking] {
        assert_eq!(digest_at(f, path).await, d1);
    }
    up.set_tag("org/app", "stable", &d2);
    let slow = Duration::from_secs(2);
    up.add_rule(Rule::path(path, Fault::DelayHeaders(slow)).method("HEAD"));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Five clients at once, past the TTL: the cached answer at once, one HEAD upstream.
    let start = Instant::now();
    let answers = futures_util::future::join_all((0..5).map(|_| digest_at(&ferry, path))).await;
    assert!(answers.iter().all(|d| *d == d1), "{answers:?}");
    assert!(
        start.elapsed() < slow / 2,
        "clients waited: {:?}",
        start.elapsed()
    );

    // The refresh lands: the new digest is served next, after one HEAD and one GET.
    let deadline = Instant::now() + Duration::from_secs(10);
    while digest_at(&ferry, path).await != d2 {
        assert!(Instant::now() < deadline, "the new digest never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heads = || {
        up.requests()
            .iter()
            .filter(|r| r.method == "HEAD" && r.path == path)
            .count()
    };
    assert_eq!(heads(), 1, "one HEAD, not one per client");

    // `blocking` waits for the slow upstream instead.
    let start = Instant::now();
    assert_eq!(digest_at(&blocking, path).await, d2);
    assert!(start.elapsed() >= slow, "{:?}", start.elapsed());
    assert_eq!(heads(), 2);
}

fn gc_listing(ferry: &Ferry) -> String {
    let mut cmd = ferry_command();
    cmd.arg("gc").arg("--config").arg(ferry.config_path());
    let run = Run::of(cmd);
    assert!(run.success(), "ferry gc: {}", run.stderr);
    run.stdout
}

#[tokio::test]
async fn a_tag_deleted_upstream_is_served_for_keep_deleted_then_not() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single().seed("deleted"), "lib/gone:1");
    let keep = |value: &str| {
        Ferry::builder()
            .upstream("docker.io", &registry)
            .tag_ttl("1s")
            .set("cache.revalidate", "blocking")
            .set("cache.negative_ttl", "1s")
            .set("cache.keep_deleted", value)
            .start()
    };
    let (ferry, off) = (keep("3s"), keep("off"));
    let tag = "/v2/lib/gone/manifests/1";
    let by_digest = format!("/v2/lib/gone/manifests/{}", image.digest);
    for f in [&ferry, &off] {
        let pulled = pull_to_dir(&format!("docker://{}/lib/gone:1", f.host()), &[]);
        assert_eq!(pulled["manifest.json"], image.digest);
    }
    registry.delete_manifest("lib/gone", &image.digest);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Within keep_deleted: the tag is served, marked, and pulls completely.
    let first_404 = Instant::now();
    let resp = get_manifest(&ferry, tag).await;
    assert_eq!(resp.status(), 200);
    let notice = header(&resp, "ferry-deleted-upstream").expect("the deletion is announced");
    assert!(
        notice.starts_with("since=") && notice.contains("; until="),
        "{notice}"
    );
    let pulled = pull_to_dir(&format!("docker://{}/lib/gone:1", ferry.host()), &[]);
    assert_eq!(pulled["manifest.json"], image.digest);
    assert!(
        first_404.elapsed() < Duration::from_secs(2),
        "too slow to test the window"
    );
    expect_error(get_manifest(&off, tag).await, 404, "MANIFEST_UNKNOWN").await;

    let served = Scrape::of(&ferry.host()).sum(
        "ferry_cache_deleted_upstream_served_total",
        &[("upstream", "docker.io")],
    );
    assert!(served >= 1.0, "counted: {served}");
    let listing = gc_listing(&ferry);
    assert!(
        listing.contains("deleted upstream") && listing.contains("docker.io/lib/gone:1"),
        "{listing}"
    );
    assert!(
        ferry.log().contains("the upstream deleted this tag"),
        "logged"
    );

    // After keep_deleted: 404. By digest it stays immutable: served, without asking upstream.
    tokio::time::sleep(
        (Duration::from_secs(4) + Duration::from_millis(300)).saturating_sub(first_404.elapsed()),
    )
    .await;
    expect_error(get_manifest(&ferry, tag).await, 404, "MANIFEST_UNKNOWN").await;
    let before = registry.requests().len();
    let resp = get_manifest(&ferry, &by_digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "ferry-deleted-upstream"), None);
    assert_eq!(
        registry.requests().len(),
        before,
        "a digest hit asked the upstream"
    );
}

/// The Basic users of the fake's manifest GETs, in order (unauthenticated challenges left out).
fn pull_users(up: &FaultyUpstream) -> Vec<String> {
    up.requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path.contains("/manifests/") && r.authorization.is_some()
        })
        .map(|r| faulty::user_of(r.authorization.as_deref()))
        .collect()
}

/// A fake Hub with `tags` images under `org/app`, pull limit `limit` per user, any Basic user.
fn limited_hub(tags: usize, limit: u64) -> FaultyUpstream {
    let up = FaultyUpstream::start();
    up.set_auth(UpstreamAuth::AnyBasic);
    up.set_pull_limit(limit, 3600);
    let layer = up.add_blob(b"layer".to_vec());
    for i in 0..tags {
        up.add_image("org/app", &format!("t{i}"), std::slice::from_ref(&layer));
    }
    up
}

#[tokio::test]
async fn the_ledger_switches_accounts_before_the_upstream_says_429() {
    let up = limited_hub(9, 5);
    // Account a has already used two pulls elsewhere: it starts with 3 left.
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .get(format!("{}/v2/org/app/manifests/t0", up.url()))
            .basic_auth("a", Some("p"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let accounts = serde_json::json!({"accounts": [
        {"username": "a", "password": "p"}, {"username": "b", "password": "p"}]});
    let ferry = Ferry::builder()
        .upstream_with("docker.io", &up, accounts)
        .tag_ttl("1s")
        .start();
    for i in 0..8 {
        digest_at(&ferry, &format!("/v2/org/app/manifests/t{i}")).await;
    }
    let users = pull_users(&up);
    let by = |u: &str| users.iter().filter(|x| *x == u).count();
    assert_eq!(
        (by("a"), by("b")),
        (5, 5),
        "every pull within the limit: {users:?}"
    );
    let nth = |u: &str, n: usize| {
        users
            .iter()
            .enumerate()
            .filter(|(_, x)| *x == u)
            .nth(n)
            .unwrap()
            .0
    };
    assert!(
        nth("a", 3) > nth("b", 2),
        "a at its reserve was left alone until b got there too: {users:?}"
    );
    let m = Scrape::of(&ferry.host());
    for account in ["a", "b"] {
        let labels = [("upstream", "docker.io"), ("account", account)];
        assert_eq!(m.sum("ferry_upstream_ratelimit_limit", &labels), 5.0);
        assert_eq!(m.sum("ferry_upstream_ratelimit_remaining", &labels), 0.0);
    }

    // Every account spent: an uncached pull says when to retry, without asking the upstream;
    // a cached tag, even past its TTL, is still served.
    let asked = up.requests().len();
    let resp = get_manifest(&ferry, "/v2/org/app/manifests/t8").await;
    let retry: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600, "{retry}");
    expect_error(resp, 429, "TOOMANYREQUESTS").await;
    assert_eq!(
        up.requests().len(),
        asked,
        "the ledger answered, not the upstream"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    digest_at(&ferry, "/v2/org/app/manifests/t1").await;
}

#[test]
fn sync_leaves_the_last_pulls_of_an_account_to_clients() {
    let up = limited_hub(5, 5);
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &up,
            serde_json::json!({"username": "bot", "password": "p"}),
        )
        .start();
    let list: String = (0..5)
        .map(|i| format!("docker.io/org/app:t{i}\n"))
        .collect();
    let run = run_sync(&ferry, &list, &["--jobs", "1", "--retries", "1"]);
    assert!(!run.success(), "the sync stops short of the reserve");
    assert!(
        run.stdout.contains("rate") || run.stderr.contains("rate"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        pull_users(&up),
        ["bot", "bot", "bot"],
        "sync used the account down to its reserve of 2, and no further"
    );
    // The reserve is there for a client pull.
    let pulled = pull_to_dir(&format!("docker://{}/org/app:t4", ferry.host()), &[]);
    assert!(pulled.contains_key("manifest.json"));
    assert_eq!(pull_users(&up), ["bot", "bot", "bot", "bot"]);
}

#[tokio::test]
async fn a_client_pull_comes_before_a_running_scheduled_sync() {
    let up = limited_hub(5, 5);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    let lines: String = (0..4)
        .map(|i| format!("docker.io/org/app:t{i}\n"))
        .collect();
    std::fs::write(&list, lines).unwrap();
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &up,
            serde_json::json!({"username": "bot", "password": "p"}),
        )
        .set(
            "sync",
            serde_json::json!({"list": list, "interval": "6h", "jobs": 1}),
        )
        .start();
    // The sync inside the server takes the account down to its reserve, then waits to retry.
    wait_until(Duration::from_secs(20), "the sync at the reserve", || {
        pull_users(&up).len() == 3 && ferry.log().contains("rate-limit")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pull_users(&up).len(), 3, "the sync stays off the reserve");

    // A client pull through the same server, on the same account: served.
    assert_eq!(
        digest_at(&ferry, "/v2/org/app/manifests/t4").await.len(),
        71
    );
    assert_eq!(pull_users(&up), ["bot"; 4], "no 429 was needed");
}

#[tokio::test]
async fn a_hot_tag_is_refreshed_before_it_expires() {
    let registry = Registry::start();
    let a = push_fixture(&registry, Fixture::single().seed("hot-a"), "lib/hot:1");
    let b = push_fixture(&registry, Fixture::single().seed("hot-b"), "lib/hot:next");
    registry.tag("lib/hot", "1", "cold");
    let ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .tag_ttl("10s")
        .start();
    let (hot, cold) = ("/v2/lib/hot/manifests/1", "/v2/lib/hot/manifests/cold");
    let fetched = Instant::now();
    for _ in 0..3 {
        assert_eq!(digest_at(&ferry, hot).await, a.digest);
    }
    assert_eq!(digest_at(&ferry, cold).await, a.digest);
    registry.tag("lib/hot", "next", "1");
    registry.tag("lib/hot", "next", "cold");

    // At 80% of the TTL the hot tag is revalidated in the background, the cold one is not.
    // (8.4 s: the tag record keeps whole seconds, so it may look up to 1 s older.)
    tokio::time::sleep(Duration::from_millis(8400).saturating_sub(fetched.elapsed())).await;
    assert_eq!(digest_at(&ferry, hot).await, a.digest);
    assert_eq!(digest_at(&ferry, cold).await, a.digest);
    let head = |path: &str| crate::core::ferry_count(&registry, "HEAD", path);
    wait_until(Duration::from_secs(5), "the refresh ahead", || {
        head(hot) == 1
    });
    assert_eq!(digest_at(&ferry, hot).await, b.digest, "the move is seen");
    assert!(
        fetched.elapsed() < Duration::from_secs(9),
        "before the TTL ran out"
    );
    assert_eq!(head(cold), 0, "a cold tag costs nothing until it expires");
}
