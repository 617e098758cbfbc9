//! The console's data through the real `ferry serve`: the public pages (client
//! configurations, registries, allowed images), the time series from real pulls (kept across
//! restarts on disk and in a real redis-server; a corrupt file starts empty), and the JSON
//! API's cache inventory, eviction, reload and sync runs.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ADMIN_TOKEN, call, console_ferry, get};
use crate::support::*;

/// The public pages: the client configurations for this mirror, the registries with their
/// aliases, and with an allowlist the allowed images and why a name is refused.
#[test]
fn console_public_pages_show_how_to_use_the_mirror_and_which_images() {
    let ferry = console_ferry(&Registry::start())
        .set("access.allow", json!(["docker.io/library/*"]))
        .set(
            "access.deny",
            json!([{"pattern": "docker.io/library/huge", "reason": "too big for us"}]),
        )
        .start();
    let home = get(&ferry, "/ui/", &[]).text();
    let base = ferry.base_url();
    for needle in [
        "registry-mirrors",
        "hosts.toml",
        "registries.conf.d",
        "CRI-O",
        "mirror_health",
        base.as_str(),
    ] {
        assert!(home.contains(needle), "{needle} on the home page");
    }
    let regs = get(&ferry, "/ui/registries", &[]).text();
    assert!(
        regs.contains("ghcr.example") && regs.contains("docker.io"),
        "{regs}"
    );
    let ok = get(&ferry, "/ui/images?q=nginx%3A1.25", &[]).text();
    assert!(ok.contains("docker.io/library/nginx is served"), "{ok}");
    let denied = get(&ferry, "/ui/images?q=huge", &[]).text();
    assert!(denied.contains("too big for us"), "{denied}");
    let not_listed = get(&ferry, "/ui/images?q=ghcr.io%2Forg%2Fapp", &[]).text();
    assert!(
        not_listed.contains("not in this mirror&#39;s allowlist")
            || not_listed.contains("not in this mirror's allowlist"),
        "{not_listed}"
    );
    assert!(
        get(&ferry, "/ui/images", &[])
            .text()
            .contains("docker.io/library/*")
    );
}

/// The series: pulls through ferry show up as requests, misses, bytes served and fetched
/// upstream and a cold download; they survive a restart (saved under the cache root).
#[test]
fn console_series_count_real_pulls_and_survive_a_restart() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let mut ferry = console_ferry(&upstream).start();
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());
    assert_pulls_back(&reference, &image);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let total = |ferry: &Ferry| -> Value {
        let r = get(
            ferry,
            "/admin/v1/series?window=24h",
            &[("Authorization", &bearer)],
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let mut sum = json!({});
        for p in v["points"].as_array().unwrap() {
            for k in [
                "requests",
                "misses",
                "served_bytes",
                "upstream_bytes",
                "cold_count",
            ] {
                sum[k] = json!(sum[k].as_u64().unwrap_or(0) + p[k].as_u64().unwrap());
            }
        }
        sum
    };
    let mut seen = json!({});
    wait_until(
        Duration::from_secs(20),
        "the sampler to count the pull",
        || {
            seen = total(&ferry);
            seen["cold_count"].as_u64() >= Some(1) && seen["upstream_bytes"].as_u64() > Some(0)
        },
    );
    assert!(seen["requests"].as_u64() >= Some(3), "{seen}");
    assert!(
        seen["served_bytes"].as_u64() >= Some(image.blobs.iter().map(|b| b.size).sum()),
        "{seen}"
    );
    ferry.restart();
    assert!(ferry.data_dir().join("_console/series.json").exists());
    let again = total(&ferry);
    assert!(
        again["upstream_bytes"].as_u64() >= seen["upstream_bytes"].as_u64(),
        "{again} after {seen}"
    );
    assert_eq!(
        get(
            &ferry,
            "/admin/v1/series?window=2h",
            &[("Authorization", &bearer)]
        )
        .status,
        400
    );
}

/// A corrupt series file is logged and the series start empty.
#[test]
fn console_series_start_empty_after_a_corrupt_file() {
    let mut ferry = console_ferry(&Registry::start()).start();
    ferry.stop();
    std::fs::write(ferry.data_dir().join("_console/series.json"), "{not json").unwrap();
    ferry.start_again();
    assert!(
        ferry.log().contains("console time series start empty"),
        "{}",
        ferry.log()
    );
    let r = get(
        &ferry,
        "/admin/v1/series",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status, 200);
}

/// The cache inventory and eviction through the JSON API; the evicted image is fetched
/// again from the upstream on the next pull. Reload answers whether the new file was taken.
/// The scheduled sync's runs are listed.
#[test]
fn console_json_lists_and_evicts_the_cache_reloads_and_lists_sync_runs() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        "docker.io/library/hello:1\ndocker.io/library/missing:1\n",
    )
    .unwrap();
    let mut ferry = console_ferry(&upstream)
        .set("sync.list", list.to_str().unwrap())
        .set("sync.interval", "1h")
        .start();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let mut runs = Value::Null;
    wait_until(Duration::from_secs(30), "a sync run listed", || {
        let r = get(&ferry, "/admin/v1/syncs", &auth);
        runs = serde_json::from_slice(&r.body).unwrap();
        runs["runs"].as_array().is_some_and(|a| !a.is_empty())
    });
    let run = &runs["runs"][0];
    assert_eq!(
        (run["images"].as_u64(), run["failed"].as_u64()),
        (Some(2), Some(1)),
        "{runs}"
    );
    assert!(
        run["errors"][0].as_str().unwrap().contains("missing"),
        "{runs}"
    );
    let cache: Value = serde_json::from_slice(&get(&ferry, "/admin/v1/cache", &auth).body).unwrap();
    let repos = cache["repositories"].as_array().unwrap();
    let hello = repos
        .iter()
        .find(|r| r["repository"] == "library/hello")
        .expect("hello cached");
    assert_eq!(hello["upstream"], "docker.io");
    assert_eq!(hello["tags"], json!(["1"]));
    assert!(hello["bytes"].as_u64().unwrap() > 0);
    let before = upstream.blob_gets();
    let del = call(
        &ferry,
        "DELETE",
        "/admin/v1/cache/docker.io/library/hello",
        &auth,
        &[],
    );
    assert_eq!(del.status, 200, "{}", del.text());
    let gone: Value = serde_json::from_slice(&get(&ferry, "/admin/v1/cache", &auth).body).unwrap();
    assert!(
        gone["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["repository"] != "library/hello")
    );
    let missing = call(
        &ferry,
        "DELETE",
        "/admin/v1/cache/docker.io/library/hello",
        &auth,
        &[],
    );
    assert_eq!(missing.status, 404);
    assert_pulls_back(
        &format!("docker://{}/docker.io/library/hello:1", ferry.host()),
        &image,
    );
    assert!(
        upstream.blob_gets() > before,
        "fetched again after the eviction"
    );
    let reload = call(&ferry, "POST", "/admin/v1/reload", &auth, &[]);
    assert_eq!(reload.status, 200, "{}", reload.text());
    std::fs::write(ferry.config_path(), "upstreams: [not, a, map]\n").unwrap();
    let bad = call(&ferry, "POST", "/admin/v1/reload", &auth, &[]);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("not reloaded"), "{}", bad.text());
    assert_eq!(
        get(&ferry, "/admin/v1/cache", &auth).status,
        200,
        "the old config stays"
    );
    ferry.stop();
}

/// With `redis:`, the series are also kept in Redis: a replica whose local file is gone
/// reads them back from there.
#[test]
fn console_series_are_kept_in_redis_too() {
    let redis = RedisServer::start();
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let mut ferry = console_ferry(&upstream)
        .set("redis.url", redis.url())
        .start();
    assert_pulls_back(
        &format!("docker://{}/docker.io/library/hello:1", ferry.host()),
        &image,
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let upstream_bytes = |ferry: &Ferry| -> u64 {
        let r = get(
            ferry,
            "/admin/v1/series?window=1h",
            &[("Authorization", &bearer)],
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["upstream_bytes"].as_u64().unwrap())
            .sum()
    };
    wait_until(
        Duration::from_secs(20),
        "the sampler to count the pull",
        || upstream_bytes(&ferry) > 0,
    );
    let counted = upstream_bytes(&ferry);
    ferry.stop();
    let keys = redis.keys("ferry:access:console:series:*");
    assert_eq!(keys.len(), 1, "{keys:?}: {}", ferry.log());
    std::fs::remove_file(ferry.data_dir().join("_console/series.json")).unwrap();
    ferry.start_again();
    assert!(upstream_bytes(&ferry) >= counted, "read back from redis");
}
