//! Fair use that knows its traffic (SPEC section 12, docs/access.md "Running a public
//! mirror") with the real `ferry serve`: rules that warn, slow, deny and ban, with the reason
//! and the end shown to the client; bans shared by two replicas through a real `redis-server`
//! and kept across restarts (in Redis, or in a file under the cache root); egress budget
//! steps; `ferry usage` and `ferry bans` against a running server; the admin API refusing
//! anonymous callers and users who are no admin.
//!
//! Clients are told apart by `X-Forwarded-For` from 127.0.0.1, a trusted proxy, as a load
//! balancer would send it. Windows and durations are seconds long.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::clients::run;
use crate::support::http::{RawResponse, raw_request};
use crate::support::*;

mod usage;

const HELLO: &str = "/v2/library/hello/manifests/1";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A ferry on `upstream` (as docker.io) with this `access:` section laid over a trusted
/// 127.0.0.1 and an admin token.
fn ferry_with(upstream: &Registry, mut access: Value) -> FerryBuilder {
    access["trusted_proxies"] = json!(["127.0.0.1"]);
    access["admin"] = json!({"tokens": [ADMIN_TOKEN]});
    Ferry::builder()
        .upstream("docker.io", upstream)
        .set("access", access)
        .set("log.format", "json")
}

/// A GET from client `ip` with extra headers.
fn get_from(ferry: &Ferry, ip: &str, path: &str, extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![
        ("X-Forwarded-For", ip),
        ("Accept", registry::MANIFEST_ACCEPT),
    ];
    headers.extend_from_slice(extra);
    raw_request(&ferry.host(), "GET", path, &headers, &[])
        .unwrap_or_else(|e| panic!("GET {path} on ferry: {e}"))
}

/// The first OCI error of an answer: `(status, code, message)`.
fn oci_error(resp: &RawResponse) -> (u16, String, String) {
    let body: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", resp.status, resp.text()));
    let first = &body["errors"][0];
    (
        resp.status,
        first["code"].as_str().unwrap_or_default().to_owned(),
        first["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn basic(user: &str, password: &str) -> String {
    let c = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {c}")
}

/// `ferry <args>` against `ferry` with the admin token.
fn ferry_cli(ferry: &Ferry, args: &[&str]) -> CmdOutput {
    let mut cmd = ferry_command();
    cmd.args(args)
        .args(["--server", &ferry.base_url(), "--token", ADMIN_TOKEN]);
    run(cmd)
}

/// The value of a series in `/metrics` (0 when absent).
fn metric(ferry: &Ferry, series: &str) -> f64 {
    let text = raw_request(&ferry.host(), "GET", "/metrics", &[], &[])
        .unwrap()
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn registry_with_hello() -> Registry {
    let registry = Registry::start();
    push_fixture(&registry, Fixture::single(), "library/hello:1");
    registry
}

/// One client climbs the rules: a `Warning` header with the advice, then 429 with
/// `Retry-After` and the rule, then a 403 ban that says until when; the ban ends by itself
/// after its 2 s. Another client is served all along; the hits are in the metrics.
#[test]
fn warn_then_deny_then_ban_tell_the_client_why_and_until_when() {
    let upstream = registry_with_hello();
    let rules = json!([
        {"name": "warn2", "per": "client", "window": "3s", "requests": 2, "action": "warn",
         "message": "run a local cache"},
        {"name": "deny4", "per": "client", "window": "3s", "requests": 4, "action": "deny"},
        {"name": "ban6", "per": "client", "window": "3s", "requests": 6, "action": "ban",
         "duration": "2s"},
    ]);
    let ferry = ferry_with(&upstream, json!({"rules": rules})).start();
    let me = "203.0.113.7";
    for _ in 0..2 {
        let r = get_from(&ferry, me, HELLO, &[]);
        assert_eq!((r.status, r.header("warning")), (200, None), "{}", r.text());
    }
    let r = get_from(&ferry, me, HELLO, &[]);
    assert_eq!(r.status, 200);
    let warning = r.header("warning").expect("a Warning header").to_owned();
    assert!(warning.starts_with("299 ferry \""), "{warning}");
    assert!(
        warning.contains("rule warn2") && warning.contains("run a local cache"),
        "{warning}"
    );
    get_from(&ferry, me, HELLO, &[]);
    let r = get_from(&ferry, me, HELLO, &[]);
    let (status, code, message) = oci_error(&r);
    assert_eq!(
        (status, code.as_str()),
        (429, "TOOMANYREQUESTS"),
        "{message}"
    );
    assert!(message.contains("rule deny4") && message.contains("more than 4 requests per 3s"));
    assert!(r.header("retry-after").is_some());
    get_from(&ferry, me, HELLO, &[]);
    let (status, code, message) = oci_error(&get_from(&ferry, me, HELLO, &[]));
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(
        message.contains("banned until") && message.contains("rule ban6"),
        "{message}"
    );
    assert_eq!(get_from(&ferry, "198.51.100.1", HELLO, &[]).status, 200);
    assert!(
        metric(
            &ferry,
            "ferry_fairuse_rule_hits_total{rule=\"ban6\",action=\"ban\"}"
        ) >= 1.0
    );
    // The ban and the counters run out (2 s ban, 3 s window).
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(get_from(&ferry, me, HELLO, &[]).status, 200);
}

/// `slow`: the second download of one blob by one client is capped to 256 KiB/s for the
/// rule's duration (and says so in a `Warning`); another client downloads at full speed.
#[test]
fn slow_caps_the_bandwidth_of_a_client_that_pulls_one_blob_again_and_again() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::big(1), "library/big:1");
    let layer = image.largest_blob().clone();
    let rules = json!([{"name": "same-blob", "per": "client_blob", "window": "1m",
        "requests": 1, "action": "slow", "bandwidth": "256KiB/s", "duration": "30s"}]);
    let ferry = ferry_with(&upstream, json!({"rules": rules})).start();
    let blob = format!("/v2/library/big/blobs/{}", layer.digest);
    let timed = |ip: &str| {
        let started = Instant::now();
        let r = get_from(&ferry, ip, &blob, &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64, layer.size);
        (started.elapsed(), r.header("warning").map(str::to_owned))
    };
    let (first, _) = timed("203.0.113.9");
    let (second, warning) = timed("203.0.113.9");
    eprintln!("first {first:?}, second {second:?}");
    assert!(
        second >= Duration::from_millis(2500),
        "not slowed: {second:?}"
    );
    let warning = warning.expect("a Warning on the slowed download");
    assert!(warning.contains("slowed to 256.0 KiB/s until"), "{warning}");
    let (other, _) = timed("198.51.100.2");
    assert!(
        other < Duration::from_millis(2000),
        "another client slowed: {other:?}"
    );
}

/// A ban set on one replica refuses the client on the other (through Redis), survives a
/// restart of both, is listed by `ferry bans list` and lifted by `ferry bans lift` for both.
#[test]
fn bans_are_shared_by_two_replicas_through_redis_and_kept_across_restarts() {
    let redis = RedisServer::start();
    let upstream = registry_with_hello();
    let rules = json!([{"name": "ban2", "per": "client", "window": "1m", "requests": 2,
        "action": "ban", "duration": "10m", "message": "mirror your images"}]);
    let replica = || {
        ferry_with(&upstream, json!({"rules": rules}))
            .set("redis.url", redis.url())
            .start()
    };
    let (mut a, b) = (replica(), replica());
    let me = "203.0.113.20";
    for _ in 0..2 {
        assert_eq!(get_from(&a, me, HELLO, &[]).status, 200);
    }
    assert_eq!(get_from(&a, me, HELLO, &[]).status, 403);
    wait_until(Duration::from_secs(5), "replica b to know the ban", || {
        get_from(&b, me, HELLO, &[]).status == 403
    });
    let (_, _, message) = oci_error(&get_from(&b, me, HELLO, &[]));
    assert!(message.contains("mirror your images"), "{message}");
    a.restart();
    assert_eq!(
        get_from(&a, me, HELLO, &[]).status,
        403,
        "kept across a restart"
    );
    let list = ferry_cli(&b, &["bans", "list"]);
    assert!(list.success, "{}", list.stderr);
    assert!(list.stdout.contains("ip 203.0.113.20") && list.stdout.contains("ban2"));
    let lift = ferry_cli(&b, &["bans", "lift", me]);
    assert!(lift.success, "{}", lift.stderr);
    assert!(
        lift.stdout.contains("lifted: ip 203.0.113.20"),
        "{}",
        lift.stdout
    );
    wait_until(
        Duration::from_secs(5),
        "both replicas to serve again",
        || get_from(&a, me, HELLO, &[]).status == 200 && get_from(&b, me, HELLO, &[]).status == 200,
    );
    let again = ferry_cli(&b, &["bans", "lift", me]);
    assert!(
        !again.success && again.stderr.contains("no ban"),
        "{}",
        again.stderr
    );
}

/// Without Redis, a ban is kept in a file under the cache root and survives a restart.
#[test]
fn bans_survive_a_restart_without_redis() {
    let upstream = registry_with_hello();
    let rules = json!([{"name": "ban1", "per": "client", "window": "1m", "requests": 1,
        "action": "ban", "duration": "10m"}]);
    let mut ferry = ferry_with(&upstream, json!({"rules": rules})).start();
    get_from(&ferry, "203.0.113.30", HELLO, &[]);
    assert_eq!(get_from(&ferry, "203.0.113.30", HELLO, &[]).status, 403);
    ferry.restart();
    let (status, _, message) = oci_error(&get_from(&ferry, "203.0.113.30", HELLO, &[]));
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("banned until"), "{message}");
    assert_eq!(get_from(&ferry, "198.51.100.30", HELLO, &[]).status, 200);
}

/// An egress budget's steps: once a blob download used more than half of a 2 MiB budget,
/// anonymous clients outside the allowlist get 429 with the reason, allowlisted ones are
/// served; the step is in the metrics.
#[test]
fn a_budget_step_refuses_anonymous_clients_outside_the_allowlist() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::big(2), "library/big:1");
    let layer = image.largest_blob().clone();
    let budgets = json!({"total": "3MiB/1h", "allowlist": ["10.1.0.0/16"],
        "steps": [{"at": 50, "action": "allowlist"}]});
    let ferry = ferry_with(&upstream, json!({"budgets": budgets})).start();
    let blob = format!("/v2/library/big/blobs/{}", layer.digest);
    assert_eq!(get_from(&ferry, "203.0.113.40", &blob, &[]).status, 200);
    wait_until(Duration::from_secs(5), "the budget step", || {
        metric(&ferry, "ferry_budget_step{budget=\"total\"}") >= 1.0
    });
    let manifest = "/v2/library/big/manifests/1";
    let (status, code, message) = oci_error(&get_from(&ferry, "203.0.113.41", manifest, &[]));
    assert_eq!(
        (status, code.as_str()),
        (429, "TOOMANYREQUESTS"),
        "{message}"
    );
    assert!(message.contains("egress budget (total)") && message.contains("allowlist"));
    assert_eq!(get_from(&ferry, "10.1.2.3", manifest, &[]).status, 200);
    assert!(metric(&ferry, "ferry_budget_used_percent{budget=\"total\"}") >= 50.0);
}

/// An anonymous token from ferry's token service, for `client`.
fn anonymous_token(ferry: &Ferry, client: &str) -> String {
    let r = raw_request(
        &ferry.host(),
        "GET",
        "/token?service=ferry&scope=repository:docker.io/library/hello:pull",
        &[("X-Forwarded-For", client)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap())
}

/// An office behind one NAT address: people who log in are counted per user (one over the
/// rule is refused, naming the user; the next user behind the same address is served), and a
/// network in the rule's `exempt` is never counted.
#[test]
fn an_office_behind_one_nat_address_is_counted_per_user_and_exempt_networks_not_at_all() {
    let upstream = registry_with_hello();
    let rules = json!([{"name": "deny2", "per": "client", "window": "1m", "requests": 2,
        "action": "deny", "exempt": ["10.9.0.0/16"]}]);
    let users = json!({
        "alice": {"password": "wonderland-4711"},
        "bob": {"password": "builder-4711"}});
    let ferry = ferry_with(&upstream, json!({"rules": rules, "users": users})).start();
    let nat = "192.0.2.9";
    let alice = basic("alice", "wonderland-4711");
    for _ in 0..2 {
        let r = get_from(&ferry, nat, HELLO, &[("Authorization", &alice)]);
        assert_eq!(r.status, 200);
    }
    let (status, _, message) =
        oci_error(&get_from(&ferry, nat, HELLO, &[("Authorization", &alice)]));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("user alice"), "{message}");
    let bob = basic("bob", "builder-4711");
    assert_eq!(
        get_from(&ferry, nat, HELLO, &[("Authorization", &bob)]).status,
        200
    );
    let anon = anonymous_token(&ferry, nat);
    assert_eq!(
        get_from(&ferry, nat, HELLO, &[("Authorization", &anon)]).status,
        200
    );
    let office = anonymous_token(&ferry, "10.9.1.1");
    for _ in 0..5 {
        let r = get_from(&ferry, "10.9.1.1", HELLO, &[("Authorization", &office)]);
        assert_eq!(r.status, 200, "an exempt network is never counted");
    }
}

/// An office of anonymous machines behind one NAT address with `agents: 8`: each group of
/// user agents (the header's stable hash modulo 8) has its own counter, so four machines
/// with different clients make four times the requests one client may; a client whose
/// user agent falls in a group already over the threshold is refused, told which group, and
/// a single client elsewhere is refused at the threshold as always.
#[test]
fn an_anonymous_office_is_counted_per_user_agent_group_with_agents() {
    let upstream = registry_with_hello();
    let rules = json!([{"name": "office", "per": "client", "window": "1m", "requests": 4,
        "action": "deny", "who": "anonymous", "agents": 8}]);
    let ferry = ferry_with(&upstream, json!({"rules": rules})).start();
    let nat = "192.0.2.9";
    // Groups 4, 0, 5 and 1 of 8 (FNV-1a of the header): pinned, the hash is part of the
    // contract (replicas and versions must agree).
    let machines = [
        "docker/27.3.1 go/go1.22.7 git-commit/4c9b3b0 kernel/6.8.0 os/linux arch/amd64",
        "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/5.15.0 os/linux arch/amd64",
        "containerd/1.7.24",
        "containers/5.23.1 (github.com/containers/image)",
    ];
    for ua in machines {
        for i in 0..4 {
            let r = get_from(&ferry, nat, HELLO, &[("User-Agent", ua)]);
            assert_eq!(r.status, 200, "{ua} request {i}: {}", r.text());
        }
    }
    // containerd 1.6.20 hashes into group 4, the first docker's, which is over.
    let r = get_from(&ferry, nat, HELLO, &[("User-Agent", "containerd/1.6.20")]);
    let (status, code, message) = oci_error(&r);
    assert_eq!(
        (status, code.as_str()),
        (429, "TOOMANYREQUESTS"),
        "{message}"
    );
    assert!(
        message.contains("client 192.0.2.9 (user-agent group 4 of 8)"),
        "{message}"
    );
    let ci = "198.51.100.20";
    for _ in 0..4 {
        assert_eq!(
            get_from(&ferry, ci, HELLO, &[("User-Agent", machines[0])]).status,
            200
        );
    }
    assert_eq!(
        get_from(&ferry, ci, HELLO, &[("User-Agent", machines[0])]).status,
        429
    );
}

/// skopeo (containers/image) prints the ban's reason and its end to the user.
#[test]
fn skopeo_shows_the_ban_reason_and_when_it_ends() {
    let upstream = registry_with_hello();
    let rules = json!([{"name": "ban-hammer", "per": "client", "window": "1m", "requests": 1,
        "action": "ban", "duration": "1h", "message": "run a local cache"}]);
    let ferry = ferry_with(&upstream, json!({"rules": rules})).start();
    for _ in 0..2 {
        raw_request(&ferry.host(), "GET", HELLO, &[], &[]).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let src = format!("docker://{}/library/hello:1", ferry.host());
    let dest = format!("dir:{}", out.path().display());
    let pulled = try_skopeo_copy(&src, &dest, &[]);
    assert!(!pulled.success, "a banned client pulled");
    for needle in ["banned until", "rule ban-hammer", "run a local cache"] {
        assert!(
            pulled.stderr.contains(needle),
            "{needle:?} not in {}",
            pulled.stderr
        );
    }
}

/// Rules reload without a restart: a rule added to the config file refuses the next request
/// after SIGHUP; a bad rule is refused and the rules in force stay.
#[test]
fn rules_reload_on_sighup_and_a_bad_rule_keeps_the_old_ones() {
    let upstream = registry_with_hello();
    let mut ferry = ferry_with(&upstream, json!({})).start();
    let me = "203.0.113.80";
    for _ in 0..3 {
        assert_eq!(get_from(&ferry, me, HELLO, &[]).status, 200);
    }
    let deny = json!([{"name": "deny1", "per": "client", "window": "1m", "requests": 1,
        "action": "deny"}]);
    ferry.update_config(|b| b.set("access.rules", deny));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the new rule in force", || {
        get_from(&ferry, me, HELLO, &[]).status == 429
    });
    let bad = json!([{"name": "nothing", "per": "client", "window": "1m", "action": "ban"}]);
    ferry.update_config(|b| b.set("access.rules", bad));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the bad config refused", || {
        ferry.stderr().contains("NOT reloaded")
    });
    let (status, _, message) = oci_error(&get_from(&ferry, me, HELLO, &[]));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("rule deny1"), "{message}");
}
