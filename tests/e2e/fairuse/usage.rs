//! Usage accounting through the real `ferry serve`: `ferry usage` by client, user and blob,
//! the admin API refusing anonymous callers and users who are no admin, redirected blob
//! downloads accounted at redirect time (SeaweedFS), and accounts shared by two replicas
//! through a real `redis-server`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HELLO, basic, ferry_cli, ferry_with, get_from, oci_error, registry_with_hello};
use crate::support::clients::run;
use crate::support::http::raw_request;
use crate::support::*;

/// `ferry usage` shows the top talkers of a running server by client, user and blob, in
/// JSON and as a table.
#[test]
fn ferry_usage_shows_the_top_talkers_by_client_user_and_blob() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let layer = image.largest_blob().clone();
    let ferry = ferry_with_users(&upstream);
    let (alice, bob) = (
        basic("alice", "wonderland-4711"),
        basic("bob", "builder-4711"),
    );
    let blob = format!("/v2/library/hello/blobs/{}", layer.digest);
    for _ in 0..3 {
        let r = get_from(&ferry, "203.0.113.50", &blob, &[("Authorization", &bob)]);
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        get_from(&ferry, "203.0.113.51", HELLO, &[("Authorization", &alice)]).status,
        200
    );
    let mut top = Value::Null;
    wait_until(
        Duration::from_secs(5),
        "ferry usage to count 4 requests",
        || {
            let out = ferry_cli(&ferry, &["usage", "--by", "client", "--top", "5", "--json"]);
            assert!(out.success, "{}", out.stderr);
            top = serde_json::from_str(&out.stdout).unwrap();
            top["total"]["requests"] == 4
        },
    );
    assert_eq!(top["top"][0]["key"], "ip 203.0.113.50");
    assert_eq!(top["top"][0]["bytes"], layer.size * 3);
    let by_blob = ferry_cli(&ferry, &["usage", "--by", "blob", "--window", "1h"]);
    assert!(by_blob.stdout.contains(&layer.digest), "{}", by_blob.stdout);
    let by_user = ferry_cli(&ferry, &["usage", "--by", "user", "--by-requests"]);
    let bob_line = by_user
        .stdout
        .lines()
        .find(|l| l.starts_with("bob"))
        .unwrap_or_default();
    assert!(
        bob_line.split_whitespace().nth(1) == Some("3"),
        "{}",
        by_user.stdout
    );
}

/// A ferry with an admin user (alice) and a user who is no admin (bob).
fn ferry_with_users(upstream: &Registry) -> Ferry {
    let access = json!({"users": {
        "alice": {"password": "wonderland-4711", "admin": true},
        "bob": {"password": "builder-4711"}}});
    ferry_with(upstream, access).start()
}

/// The admin API answers 401 with a challenge to anonymous callers (and `ferry bans` says
/// so), 403 to users who are no admin, and serves admin users.
#[test]
fn the_admin_api_refuses_anonymous_callers_and_users_who_are_no_admin() {
    let ferry = ferry_with_users(&registry_with_hello());
    let (alice, bob) = (
        basic("alice", "wonderland-4711"),
        basic("bob", "builder-4711"),
    );
    let url = "/admin/v1/usage?by=client";
    let anon = raw_request(&ferry.host(), "GET", url, &[], &[]).unwrap();
    assert_eq!(anon.status, 401);
    assert!(
        anon.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic"))
    );
    let not_admin = raw_request(&ferry.host(), "GET", url, &[("Authorization", &bob)], &[]);
    let (status, code, message) = oci_error(&not_admin.unwrap());
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(message.contains("not an admin"), "{message}");
    let admin = raw_request(&ferry.host(), "GET", url, &[("Authorization", &alice)], &[]);
    assert_eq!(admin.unwrap().status, 200);
    let no_token = run({
        let mut c = ferry_command();
        c.args(["bans", "list", "--server", &ferry.base_url()]);
        c
    });
    assert!(
        !no_token.success && no_token.stderr.contains("401"),
        "{}",
        no_token.stderr
    );
}

/// With `redirect: true`, a cached blob answered with a 307 to the object store (SeaweedFS)
/// is accounted at redirect time: its whole length, or the length of the range asked.
#[test]
fn redirected_blob_downloads_are_accounted_by_length_or_range() {
    let Some(s3) = crate::support::s3::S3::start_or_skip() else {
        return;
    };
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let layer = image.largest_blob().clone();
    let builder = ferry_with(&upstream, json!({}));
    let ferry = s3.apply(builder, json!({"redirect": true})).start();
    let blob = format!("/v2/library/hello/blobs/{}", layer.digest);
    // The first GET fills the cache (streamed); the next ones are redirects.
    assert_eq!(get_from(&ferry, "203.0.113.60", &blob, &[]).status, 200);
    wait_until(Duration::from_secs(10), "a redirect", || {
        get_from(&ferry, "203.0.113.61", &blob, &[]).status == 307
    });
    let range = get_from(&ferry, "203.0.113.62", &blob, &[("Range", "bytes=0-9")]);
    assert_eq!(range.status, 307, "{}", range.text());
    let mut rows = Value::Null;
    wait_until(Duration::from_secs(5), "the redirects accounted", || {
        let out = ferry_cli(&ferry, &["usage", "--by", "client", "--json"]);
        rows = serde_json::from_str(&out.stdout).unwrap_or_default();
        rows["top"].as_array().is_some_and(|t| t.len() >= 3)
    });
    let bytes_of = |ip: &str| {
        let top = rows["top"].as_array().unwrap();
        let row = top.iter().find(|r| r["key"] == format!("ip {ip}"));
        row.map_or(0, |r| r["bytes"].as_u64().unwrap())
    };
    assert!(bytes_of("203.0.113.61") >= layer.size, "{rows:#}");
    assert_eq!(bytes_of("203.0.113.62"), 10, "{rows:#}");
}

/// With `redis:`, `ferry usage` asked of one replica counts the traffic of both, and the
/// accounts are sorted sets in Redis.
#[test]
fn usage_is_shared_by_two_replicas_through_redis() {
    let redis = RedisServer::start();
    let upstream = registry_with_hello();
    let replica = || {
        ferry_with(&upstream, json!({}))
            .set("redis.url", redis.url())
            .start()
    };
    let (a, b) = (replica(), replica());
    for _ in 0..3 {
        assert_eq!(get_from(&b, "203.0.113.70", HELLO, &[]).status, 200);
    }
    assert_eq!(get_from(&a, "203.0.113.71", HELLO, &[]).status, 200);
    let mut top = Value::Null;
    wait_until(Duration::from_secs(5), "both replicas' requests", || {
        let out = ferry_cli(&a, &["usage", "--by", "client", "--by-requests", "--json"]);
        top = serde_json::from_str(&out.stdout).unwrap_or_default();
        top["total"]["requests"] == 4
    });
    assert_eq!(top["top"][0]["key"], "ip 203.0.113.70", "{top:#}");
    assert_eq!(top["top"][0]["requests"], 3, "{top:#}");
    assert_eq!(top["top"][1]["key"], "ip 203.0.113.71", "{top:#}");
    assert!(!redis.keys("ferry:access:usage:*:client:req").is_empty());
}
