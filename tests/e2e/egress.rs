//! Several egress (source) addresses: `upstreams.<name>.source_addresses` binds upstream
//! connections to local addresses, spreads pulls over them, and rests one the upstream
//! rate-limits, naming it in the log and in the metrics.

use serde_json::json;

use crate::support::http;
use crate::support::metrics::Scrape;
use crate::support::{Fault, FaultyUpstream, Ferry, Rule, ferry_command};

/// An upstream that limits per client address (every manifest GET from 127.0.0.2 gets 429):
/// pulls keep working over 127.0.0.3; the log and the metrics name the limited address.
#[test]
fn pulls_keep_working_past_one_addresses_limit() {
    let upstream = FaultyUpstream::start();
    let layer = upstream.add_blob(b"layer of an image pulled over two source addresses".to_vec());
    for tag in ["1", "2", "3", "4"] {
        upstream.add_image("test/egress", tag, std::slice::from_ref(&layer));
    }
    upstream.add_rule(
        Rule::manifests(Fault::too_many_requests(600))
            .method("GET")
            .sent_from("127.0.0.2"),
    );
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &upstream,
            json!({"source_addresses": ["127.0.0.2", "127.0.0.3"]}),
        )
        .start();
    for tag in ["1", "2", "3", "4"] {
        let path = format!("/v2/test/egress/manifests/{tag}");
        let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
        let r = http::raw_request(&ferry.host(), "GET", &path, &accept, b"").unwrap();
        assert_eq!(r.status, 200, "tag {tag}: {}", r.text());
    }
    let peers = manifest_peers(&upstream);
    assert!(peers.iter().any(|p| p == "127.0.0.2"), "{peers:?}");
    assert!(peers.iter().any(|p| p == "127.0.0.3"), "{peers:?}");
    assert!(
        peers.iter().all(|p| p == "127.0.0.2" || p == "127.0.0.3"),
        "only the source addresses are used: {peers:?}"
    );
    let limited = peers.iter().filter(|p| *p == "127.0.0.2").count();
    assert_eq!(
        limited, 1,
        "the rate-limited address rests after its 429: {peers:?}"
    );
    let log = ferry.log();
    assert!(
        log.lines()
            .any(|l| l.contains("429") && l.contains("127.0.0.2") && l.contains("rests")),
        "{log}"
    );
    let m = Scrape::of(&ferry.host());
    let count = |address, status| {
        m.sum(
            "ferry_upstream_source_requests_total",
            &[("address", address), ("status", status)],
        )
    };
    assert_eq!(count("127.0.0.2", "429"), 1.0);
    assert!(count("127.0.0.3", "200") >= 4.0);
    let resting = m.sum(
        "ferry_upstream_source_resting",
        &[("upstream", "docker.io"), ("address", "127.0.0.2")],
    );
    assert_eq!(resting, 1.0);
}

/// The client addresses manifest requests came from, in order.
fn manifest_peers(upstream: &FaultyUpstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .filter_map(|r| r.peer.map(|p| p.to_string()))
        .collect()
}

/// A source address that is not an IP, or not assignable on this host, is a config error
/// naming it, from `ferry check-config` and at start.
#[test]
fn a_bad_source_address_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.yaml");
    let yaml = "upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n    source_addresses: [127.0.0.2, eth0, 192.0.2.77]\n";
    std::fs::write(&path, yaml).unwrap();
    let out = ferry_command()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains("upstreams.docker.io.source_addresses"),
        "{text}"
    );
    assert!(text.contains("\"eth0\" is not an IP address"), "{text}");
    assert!(
        text.contains("\"192.0.2.77\" is not usable on this host"),
        "{text}"
    );
    let out = ferry_command()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("192.0.2.77"));
}
