//! Real-client acceptance tests: the generated files are handed to the real `podman`,
//! `skopeo`, `containerd`/`ctr` and `dockerd` installed on this machine, which must accept
//! them and, where a pull can be started without reaching the internet, send their requests
//! to the mirror in the form ferry routes on (path prefix, `?ns=`).
//!
//! ferry itself is not needed: the mirror is a loopback recorder that answers `NAME_UNKNOWN`,
//! and every fallback server is a dead loopback port, so the pulls fail after the clients
//! have shown which requests they send. Each test prints `SKIP <name>: <reason>` and returns
//! when its client is not installed or cannot run here; full pulls through a running ferry
//! belong to the end-to-end suite.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{DEAD, Daemon, Recorder, run, skip, text, which};
use ferry_clientcfg::{Target, Upstream, WriteOptions, containerd, docker, podman};

const NAMES: [&str; 5] = [
    "docker.io",
    "index.docker.io",
    "ghcr.io",
    "registry.k8s.io",
    "k8s.gcr.io",
];

/// ferry's default-like upstreams, with every fallback on a dead loopback port.
fn target(mirror: &str) -> Target {
    let mut t = Target::new(
        mirror,
        [
            Upstream::new("docker.io").with_aliases(["index.docker.io"]),
            Upstream::new("ghcr.io"),
            Upstream::new("registry.k8s.io").with_aliases(["k8s.gcr.io"]),
        ],
        Some("docker.io"),
    )
    .unwrap();
    for n in NAMES {
        t = t.with_fallback_server(n, DEAD).unwrap();
    }
    t
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn write_toml(path: &Path, table: &toml::Table) {
    std::fs::write(path, toml::to_string(table).unwrap()).unwrap();
}

fn table(pairs: &[(&str, toml::Value)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(v: &str) -> toml::Value {
    toml::Value::String(v.to_owned())
}

/// Writes the podman drop-in under `root` and returns its path.
fn write_podman_conf(root: &Path, target: &Target) -> std::path::PathBuf {
    let written = podman(target)
        .unwrap()
        .write(root, &WriteOptions::default())
        .unwrap();
    assert_eq!(written.len(), 1);
    written[0].path.clone()
}

#[test]
fn podman_accepts_registries_conf_and_pulls_through_path_prefix() {
    const NAME: &str = "podman_accepts_registries_conf_and_pulls_through_path_prefix";
    let Some(podman_bin) = which("podman") else {
        return skip(NAME, "podman is not installed (apt-get install podman)");
    };
    if !is_root() {
        return skip(
            NAME,
            "needs root for podman with vfs storage in a temporary root",
        );
    }
    let rec = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_podman_conf(&dir.path().join("root"), &target(&rec.url()));
    let strict_conf = write_podman_conf(
        &dir.path().join("strict-root"),
        &target(&rec.url()).with_direct_fallback(false),
    );
    let storage = dir.path().join("storage.conf");
    let storage_table = table(&[(
        "storage",
        toml::Value::Table(table(&[
            ("driver", s("vfs")),
            ("runroot", s(dir.path().join("run").to_str().unwrap())),
            ("graphroot", s(dir.path().join("graph").to_str().unwrap())),
        ])),
    )]);
    write_toml(&storage, &storage_table);
    let tmpdir = dir.path().join("libpod-tmp");
    let podman_with = |conf: &Path, args: &[&str]| {
        let mut c = Command::new(&podman_bin);
        c.env("CONTAINERS_REGISTRIES_CONF", conf)
            .env("CONTAINERS_STORAGE_CONF", &storage)
            .arg("--tmpdir")
            .arg(&tmpdir)
            .args(["--events-backend", "file", "--cgroup-manager", "cgroupfs"])
            .args(args);
        c
    };
    let podman_cmd = |args: &[&str]| podman_with(&conf, args);

    // 1. podman parses the file: `podman info` lists every registry with ferry as its mirror.
    let out = run(
        &mut podman_cmd(&["info", "--format", "json"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "podman info failed:\n{}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let regs = &info["registries"];
    for name in NAMES {
        let r = &regs[name];
        assert_eq!(r["Prefix"], name, "{name} in {regs}");
        assert_eq!(r["Location"], "127.0.0.1:1", "{name} in {regs}");
        assert_eq!(
            r["Mirrors"][0]["Location"],
            format!("{}/{name}", rec.addr),
            "{name} in {regs}"
        );
        assert_eq!(r["Mirrors"][0]["Insecure"], true, "{name} in {regs}");
    }

    // 2. pulls go to ferry's path-prefix form first (then to the dead fallback, and fail).
    for (image, want) in [
        ("ghcr.io/org/app:1.0", "/v2/ghcr.io/org/app/manifests/1.0"),
        (
            "docker.io/library/hello:latest",
            "/v2/docker.io/library/hello/manifests/latest",
        ),
        ("k8s.gcr.io/pause:3.9", "/v2/k8s.gcr.io/pause/manifests/3.9"),
    ] {
        let out = run(&mut podman_cmd(&["pull", image]), Duration::from_secs(180));
        assert!(
            !out.status.success(),
            "pull of {image} cannot succeed:\n{}",
            text(&out)
        );
        assert!(
            rec.wait_for(want, Duration::from_secs(5)),
            "podman pull {image} did not ask the mirror for {want}; mirror saw {:?}\n{}",
            rec.requests(),
            text(&out)
        );
    }

    // 3. without direct fallback, ferry (path prefix) is each registry's only location.
    let out = run(
        &mut podman_with(&strict_conf, &["info", "--format", "json"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "podman info failed:\n{}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ghcr = &info["registries"]["ghcr.io"];
    assert_eq!(ghcr["Location"], format!("{}/ghcr.io", rec.addr), "{ghcr}");
    assert_eq!(
        ghcr["Mirrors"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{ghcr}"
    );
    let out = run(
        &mut podman_with(&strict_conf, &["pull", "ghcr.io/strict/app:2.0"]),
        Duration::from_secs(180),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let want = "/v2/ghcr.io/strict/app/manifests/2.0";
    assert!(
        rec.wait_for(want, Duration::from_secs(5)),
        "strict podman pull did not ask ferry for {want}; mirror saw {:?}\n{}",
        rec.requests(),
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&out)
    );
}

#[test]
fn skopeo_uses_registries_conf_path_prefix() {
    const NAME: &str = "skopeo_uses_registries_conf_path_prefix";
    let Some(skopeo) = which("skopeo") else {
        return skip(NAME, "skopeo is not installed (apt-get install skopeo)");
    };
    let rec = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_podman_conf(dir.path(), &target(&rec.url()));
    let out = run(
        Command::new(skopeo)
            .arg("--registries-conf")
            .arg(&conf)
            .args(["inspect", "docker://registry.k8s.io/pause:3.9"]),
        Duration::from_secs(120),
    );
    assert!(
        !out.status.success(),
        "inspect cannot succeed:\n{}",
        text(&out)
    );
    let want = "/v2/registry.k8s.io/pause/manifests/3.9";
    assert!(
        rec.wait_for(want, Duration::from_secs(5)),
        "skopeo did not ask the mirror for {want}; mirror saw {:?}\n{}",
        rec.requests(),
        text(&out)
    );
}

/// A containerd daemon with its root, state and socket in a temporary directory.
struct Containerd {
    daemon: Daemon,
    socket: std::path::PathBuf,
}

fn start_containerd(dir: &Path, test: &str) -> Option<Containerd> {
    let Some(bin) = which("containerd") else {
        skip(
            test,
            "containerd is not installed (apt-get install containerd)",
        );
        return None;
    };
    if which("ctr").is_none() {
        skip(
            test,
            "ctr is not installed (it comes with the containerd package)",
        );
        return None;
    }
    if !is_root() {
        skip(test, "containerd needs root");
        return None;
    }
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    let p = |n: &str| s(dir.join(n).to_str().unwrap());
    let cfg = table(&[
        ("version", toml::Value::Integer(2)),
        ("root", p("root")),
        ("state", p("state")),
        (
            "disabled_plugins",
            toml::Value::Array(vec![s("io.containerd.grpc.v1.cri")]),
        ),
        (
            "grpc",
            toml::Value::Table(table(&[("address", p("containerd.sock"))])),
        ),
        (
            "ttrpc",
            toml::Value::Table(table(&[("address", p("containerd.sock.ttrpc"))])),
        ),
    ]);
    write_toml(&config, &cfg);
    let mut daemon = Daemon::spawn(
        Command::new(bin).arg("--config").arg(&config),
        &dir.join("containerd.log"),
    )
    .unwrap();
    if !daemon.wait_for_path(&socket, Duration::from_secs(30)) {
        skip(
            test,
            &format!(
                "containerd did not start here; its log:\n{}",
                daemon.log_text()
            ),
        );
        return None;
    }
    Some(Containerd { daemon, socket })
}

#[test]
fn ctr_uses_hosts_dir_and_sends_ns() {
    const NAME: &str = "ctr_uses_hosts_dir_and_sends_ns";
    let dir = tempfile::tempdir().unwrap();
    let Some(cd) = start_containerd(dir.path(), NAME) else {
        return;
    };
    let rec = Recorder::start();
    let root = dir.path().join("root-fs");
    containerd(&target(&rec.url()))
        .unwrap()
        .write(&root, &WriteOptions::default())
        .unwrap();
    let hosts_dir = root.join("etc/containerd/certs.d");
    for (image, want) in [
        (
            "docker.io/library/hello:latest",
            "HEAD /v2/library/hello/manifests/latest?ns=docker.io",
        ),
        (
            "ghcr.io/org/app:1.0",
            "HEAD /v2/org/app/manifests/1.0?ns=ghcr.io",
        ),
        (
            "k8s.gcr.io/pause:3.9",
            "HEAD /v2/pause/manifests/3.9?ns=k8s.gcr.io",
        ),
    ] {
        let out = run(
            Command::new("ctr")
                .arg("--address")
                .arg(&cd.socket)
                .args(["image", "pull", "--hosts-dir"])
                .arg(&hosts_dir)
                .arg(image),
            Duration::from_secs(120),
        );
        assert!(
            !out.status.success(),
            "pull of {image} cannot succeed:\n{}",
            text(&out)
        );
        assert!(
            rec.wait_for(want, Duration::from_secs(5)),
            "ctr pull {image} did not send {want:?} to the mirror; mirror saw {:?}\n{}\ncontainerd log:\n{}",
            rec.requests(),
            text(&out),
            cd.daemon.log_text()
        );
        // containerd fell back to the `server` of hosts.toml (the dead port) after the mirror
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("127.0.0.1:1"), "{image}: {err}");
    }

    // Without direct fallback `server` is ferry as well: both attempts carry ?ns= and
    // nothing else is contacted.
    let strict_rec = Recorder::start();
    let strict_root = dir.path().join("strict-fs");
    containerd(&target(&strict_rec.url()).with_direct_fallback(false))
        .unwrap()
        .write(&strict_root, &WriteOptions::default())
        .unwrap();
    let out = run(
        Command::new("ctr")
            .arg("--address")
            .arg(&cd.socket)
            .args(["image", "pull", "--hosts-dir"])
            .arg(strict_root.join("etc/containerd/certs.d"))
            .arg("ghcr.io/strict/app:2.0"),
        Duration::from_secs(120),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let want = "HEAD /v2/strict/app/manifests/2.0?ns=ghcr.io";
    assert!(
        strict_rec.wait_for(want, Duration::from_secs(5)),
        "{:?}",
        strict_rec.requests()
    );
    let asked = strict_rec
        .requests()
        .iter()
        .filter(|r| r.as_str() == want)
        .count();
    assert_eq!(
        asked,
        2,
        "mirror host, then ferry as server: {:?}",
        strict_rec.requests()
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&out)
    );
}

#[test]
fn containerd_1x_config_snippet_sets_cri_config_path() {
    const NAME: &str = "containerd_1x_config_snippet_sets_cri_config_path";
    let Some(bin) = which("containerd") else {
        return skip(
            NAME,
            "containerd is not installed (apt-get install containerd)",
        );
    };
    let out = run(Command::new(&bin).arg("--version"), Duration::from_secs(30));
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    if !version
        .split_whitespace()
        .any(|w| w.starts_with("1.") || w.starts_with("v1."))
    {
        return skip(
            NAME,
            &format!("this checks the 1.x snippet; installed: {version}"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs.d");
    let snippets = ferry_clientcfg::containerd_config_snippets(certs.to_str().unwrap());
    let mut cfg: toml::Table = snippets[0].contents.parse().unwrap();
    cfg.insert("version".into(), toml::Value::Integer(2));
    cfg.insert("root".into(), s(dir.path().join("root").to_str().unwrap()));
    cfg.insert(
        "state".into(),
        s(dir.path().join("state").to_str().unwrap()),
    );
    let config = dir.path().join("config.toml");
    write_toml(&config, &cfg);
    // `config dump` decodes every plugin's section into its typed configuration: a key in a
    // wrong place would vanish from the output.
    let out = run(
        Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(["config", "dump"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    let dump: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    let got = dump["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"].as_str();
    assert_eq!(got, certs.to_str(), "{}", text(&out));
}

#[test]
fn dockerd_accepts_merged_daemon_json() {
    const NAME: &str = "dockerd_accepts_merged_daemon_json";
    let Some(dockerd) = which("dockerd") else {
        return skip(NAME, "dockerd is not installed (apt-get install docker.io)");
    };
    let Some(docker_cli) = which("docker") else {
        return skip(NAME, "the docker CLI is not installed");
    };
    if !is_root() {
        return skip(NAME, "dockerd needs root");
    }
    let rec = Recorder::start();
    // Unix socket paths are limited to 108 bytes: keep the directory short.
    let dir = tempfile::Builder::new()
        .prefix("fcc")
        .tempdir_in("/tmp")
        .unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let socket = dir.path().join("docker.sock");
    // The user's existing daemon.json: ferry's keys are merged in, these stay.
    let existing = serde_json::json!({
        "data-root": d("data"),
        "exec-root": d("exec"),
        "pidfile": d("dockerd.pid"),
        // dockerd 20.x would otherwise create /etc/docker/key.json
        "deprecated-key-path": d("key.json"),
        "hosts": [format!("unix://{}", socket.display())],
        "iptables": false,
        "ip-forward": false,
        "ip-masq": false,
        "bridge": "none",
        "storage-driver": "vfs",
        "registry-mirrors": ["http://127.0.0.1:1"],
    });
    let root = dir.path().join("fs");
    let daemon_json = root.join("etc/docker/daemon.json");
    std::fs::create_dir_all(daemon_json.parent().unwrap()).unwrap();
    std::fs::write(
        &daemon_json,
        serde_json::to_string_pretty(&existing).unwrap(),
    )
    .unwrap();
    docker(&target(&rec.url()))
        .unwrap()
        .write(&root, &WriteOptions::default())
        .unwrap();

    let mut daemon = Daemon::spawn(
        Command::new(dockerd).arg("--config-file").arg(&daemon_json),
        &dir.path().join("dockerd.log"),
    )
    .unwrap();
    if !daemon.wait_for_path(&socket, Duration::from_secs(60)) {
        let log = daemon.log_text();
        // A configuration error is a failure; a daemon that cannot run here is a skip.
        assert!(
            !log.contains("unable to configure the Docker daemon with file"),
            "dockerd rejected the merged daemon.json:\n{log}"
        );
        return skip(
            NAME,
            &format!("dockerd did not start here; its log:\n{log}"),
        );
    }
    let host = format!("unix://{}", socket.display());
    let mut info = None;
    for _ in 0..100 {
        let out = run(
            Command::new(&docker_cli).args([
                "-H",
                &host,
                "info",
                "--format",
                "{{json .RegistryConfig}}",
            ]),
            Duration::from_secs(30),
        );
        if out.status.success() {
            info = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out =
        info.unwrap_or_else(|| panic!("docker info never answered; log:\n{}", daemon.log_text()));
    let reg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mirrors: Vec<&str> = reg["Mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // ferry first, the user's existing mirror kept after it (Docker adds the trailing '/')
    assert_eq!(
        mirrors,
        [format!("{}/", rec.url()).as_str(), "http://127.0.0.1:1/"],
        "{reg}"
    );
    assert_eq!(reg["IndexConfigs"][&rec.addr]["Secure"], false, "{reg}");
    assert!(daemon.running(), "dockerd exited:\n{}", daemon.log_text());
}
