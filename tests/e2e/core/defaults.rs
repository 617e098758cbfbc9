//! The command line's contract (SPEC sections 1-2): `ferry serve` with no config is a mirror of
//! the eight public registries on port 5000 caching under `./ferry-data`; `ferry check-config`
//! exits 0 or 2 and names the key and line of each problem; `FERRY_<SECTION>__<KEY>`
//! variables override the file; `ferry serve` exits 2 on a bad config and 1 when it cannot run.
//!
//! No test here may reach the internet: the embedded upstreams are pointed at loopback ports
//! with `FERRY_UPSTREAMS__<NAME>__URL`, and registries are probed with requests that fail in
//! routing, before any network use.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::*;
use crate::support::clients::DEAD_UPSTREAM;
use crate::support::http::raw_get;
use crate::support::ports::{lease_port, reserve_port};
use crate::support::process::Daemon;

/// The embedded default's upstreams, as `FERRY_UPSTREAMS__<NAME>__URL` names them.
const EMBEDDED: [(&str, &str); 7] = [
    ("docker.io", "DOCKER_IO"),
    ("gcr.io", "GCR_IO"),
    ("ghcr.io", "GHCR_IO"),
    ("registry.k8s.io", "REGISTRY_K8S_IO"),
    ("quay.io", "QUAY_IO"),
    ("mcr.microsoft.com", "MCR_MICROSOFT_COM"),
    ("nvcr.io", "NVCR_IO"),
];

/// Whether something listens on 0.0.0.0:`port` (IPv4 wildcard), from /proc/net/tcp.
fn listens_on_all_interfaces(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let wanted = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&wanted.as_str()) && cols.get(3) == Some(&"0A")
    })
}

#[tokio::test]
async fn serve_without_a_config_mirrors_the_eight_registries_on_port_5000() {
    let Some(_port) = lease_port(5000) else {
        eprintln!("SKIP (port 5000 is busy here): ferry's default port is needed");
        return;
    };
    let up = FaultyUpstream::start();
    let layer = up.add_blob(b"default layer".to_vec());
    let digest = up.add_image("org/app", "1.0", std::slice::from_ref(&layer));

    let cwd = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut cmd = ferry_command();
    cmd.arg("serve").current_dir(cwd.path());
    // Nothing may leave the machine: ghcr.io is the fake upstream, the others a dead port.
    for (name, var) in EMBEDDED {
        let url = if name == "ghcr.io" {
            up.url()
        } else {
            format!("http://{DEAD_UPSTREAM}")
        };
        cmd.env(format!("FERRY_UPSTREAMS__{var}__URL"), url);
    }
    let (out, err) = (logs.path().join("out.log"), logs.path().join("err.log"));
    let mut daemon = Daemon::spawn("ferry", cmd, &out, &err);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(raw_get("127.0.0.1:5000", "/v2/"), Ok(r) if r.status == 200) {
        if let Some(status) = daemon.exit_status() {
            panic!("ferry serve exited ({status}):\n{}", daemon.log());
        }
        assert!(Instant::now() < deadline, "ferry did not answer on :5000");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        listens_on_all_interfaces(5000),
        "the default is 0.0.0.0:5000"
    );
    assert!(
        cwd.path().join("ferry-data").is_dir(),
        "the cache lives in ./ferry-data"
    );

    // Every embedded registry (and alias) is known: a bad repository name under it fails in
    // routing (NAME_INVALID) instead of being an unknown registry — no network involved.
    let http = client();
    let names = EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .chain(["k8s.gcr.io", "index.docker.io"]);
    for name in names {
        let resp = http
            .get(format!("http://127.0.0.1:5000/v2/{name}/Bad/manifests/1"))
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "NAME_INVALID").await;
    }
    let resp = http
        .get("http://127.0.0.1:5000/v2/registry.example.com/org/app/manifests/1")
        .send()
        .await
        .unwrap();
    let message = expect_error(resp, 404, "NAME_UNKNOWN").await;
    assert!(message.contains("registry.example.com"), "{message}");

    // ghcr.io pulls through (from the fake, by the FERRY_ override), into ./ferry-data.
    let resp = http
        .get("http://127.0.0.1:5000/v2/ghcr.io/org/app/manifests/1.0")
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(digest.as_str())
    );
    let pulled = pull_to_dir("docker://127.0.0.1:5000/ghcr.io/org/app:1.0", &[]);
    assert_eq!(pulled["manifest.json"], digest);
    let hex = layer.trim_start_matches("sha256:");
    let cached = cwd
        .path()
        .join("ferry-data/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert_eq!(sha256_file(&cached), layer);
    assert!(up.count("GET", "/v2/org/app/manifests/1.0") >= 1);
    daemon.stop(Duration::from_secs(10));
}

/// `ferry check-config FILE` with `env` set; returns the output.
fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = ferry_command();
    cmd.arg("check-config").arg(file);
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_exits_0_or_2_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write(
        "good.yaml",
        "listen: 127.0.0.1:5000\n\
         storage:\n  fs:\n    root: ./data\n  max_size: 10GiB\n\
         upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n    username: u\n    password: p\n\
         \x20 ghcr.io: {}\n\
         default_upstream: docker.io\n\
         hosts:\n  docker.mirror.example.com: docker.io\n\
         cache:\n  tag_ttl: 10m\n",
    );
    let out = check_config(&good, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    // (file text, key the message must name, line it must name)
    let bad = [
        (
            "listen: 127.0.0.1:5000\ncache:\n  tag_ttl: 5m\n  tag_tll: 5m\n",
            "tag_tll",
            4,
        ),
        ("cache:\n  tag_ttl: forever\n", "tag_ttl", 2),
        ("storage:\n  max_size: lots\n", "max_size", 2),
        (
            "upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\ndefault_upstream: quay.io\n",
            "default_upstream",
            4,
        ),
        (
            "upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\nhosts:\n  m.example.com: nowhere.io\n",
            "hosts",
            5,
        ),
        ("unknown_section: 1\n", "unknown_section", 1),
    ];
    for (i, (text, key, line)) in bad.into_iter().enumerate() {
        let file = write(&format!("bad{i}.yaml"), text);
        let out = check_config(&file, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(key),
            "{text}: the message must name {key}: {err}"
        );
        assert!(
            err.contains(&format!("bad{i}.yaml:{line}:")),
            "{text}: the message must name line {line}: {err}"
        );
        // `ferry serve` refuses it the same way.
        let serve = ferry_command()
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(serve.status.code(), Some(2), "serve with {text}");
        assert!(stderr(&serve).contains(key));
    }

    // A bad override is named by its variable.
    let out = check_config(&good, &[("FERRY_CACHE__TAG_TTL", "bogus")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("FERRY_CACHE__TAG_TTL"),
        "{}",
        stderr(&out)
    );
    // A missing file and a missing argument are usage errors.
    let out = check_config(&dir.path().join("missing.yaml"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.yaml"));
    let out = ferry_command().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn ferry_variables_override_the_config_file() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single().seed("env"), "library/hello:1");
    // The file points docker.io at a dead port and trusts tags for an hour; the environment
    // fixes the URL and shortens the TTL.
    let ferry = Ferry::builder()
        .upstream("docker.io", &format!("http://{DEAD_UPSTREAM}"))
        .tag_ttl("1h")
        .env("FERRY_UPSTREAMS__DOCKER_IO__URL", &registry.url())
        .env("FERRY_CACHE__TAG_TTL", "1s")
        .start();
    let path = "/v2/library/hello/manifests/1";
    let resp = get_manifest(&ferry, path).await;
    assert_eq!(resp.status(), 200, "the URL override is used");
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(image.digest.as_str())
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get_manifest(&ferry, path).await.status(), 200);
    assert_eq!(
        ferry_count(&registry, "HEAD", path),
        1,
        "revalidated after the overridden 1s TTL, not the file's 1h"
    );
}

/// A pod's environment has `FERRY_*` names that are not ferry's: a script's `FERRY_BIN` and
/// the service links Kubernetes adds for a Service named `ferry`. ferry serves anyway, and says
/// once which variables it ignored (names only, never values).
#[test]
fn foreign_ferry_variables_are_ignored_with_one_warning() {
    let registry = Registry::start();
    let image = push_fixture(
        &registry,
        Fixture::single().seed("foreign"),
        "library/hello:1",
    );
    let ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .env("FERRY_BIN", "x")
        .env("FERRY_PORT", "tcp://10.0.0.1:5000")
        .env("FERRY_PORT_5000_TCP_ADDR", "10.0.0.1")
        .env("FERRY_SERVICE_HOST", "10.0.0.1")
        .env("FERRY_CACHE__TAG_TTL", "1m")
        .start();
    let resp = raw_get(&ferry.host(), "/v2/library/hello/manifests/1").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    let log = ferry.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ignoring environment"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(
            "FERRY_BIN, FERRY_PORT, FERRY_PORT_5000_TCP_ADDR, FERRY_SERVICE_HOST: not a \
             configuration override"
        ),
        "{log}"
    );
    assert!(!warnings[0].contains("FERRY_CACHE__TAG_TTL,"), "{log}");
    assert!(!log.contains("10.0.0.1"), "values are not shown:\n{log}");
}

/// A misspelt key in the documented `FERRY_<SECTION>__<KEY>` form is still an error: `ferry
/// serve` refuses to start with exit code 2 and names the variable.
#[test]
fn a_misspelt_override_stops_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nstorage:\n  fs:\n    root: {}\nupstreams:\n  docker.io:\n    url: http://{DEAD_UPSTREAM}\n",
            reserve_port().port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = ferry_command()
        .args(["serve", "--config"])
        .arg(&config)
        .env("FERRY_CACHE__TAG_TTLL", "1m")
        .env("FERRY_PORT", "tcp://10.0.0.1:5000")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FERRY_CACHE__TAG_TTLL"), "{err}");
    assert!(err.contains("tag_ttll"), "{err}");
}

#[test]
fn serve_exits_1_when_it_cannot_listen() {
    let lease = reserve_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", lease.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {}\nstorage:\n  fs:\n    root: {}\nupstreams:\n  docker.io:\n    url: http://{DEAD_UPSTREAM}\n",
            lease.addr(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd: Command = ferry_command();
    cmd.args(["serve", "--config"]).arg(&config);
    let log = dir.path().join("log");
    let mut daemon = Daemon::spawn("ferry", cmd, &log, &log);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("ferry must exit when its port is taken");
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    assert!(daemon.log().contains(&lease.addr()), "{}", daemon.log());
}
