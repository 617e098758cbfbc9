//! Routing (SPEC section 3): one running ferry serves two upstreams, and every way a client can
//! name an image reaches the right one — path prefix, Docker's registry-mirror form (default
//! upstream), containerd's `?ns=`, the Host header, and docker.io's `library/` naming — plus
//! aliases, deep repository paths and unknown registries.
//!
//! The two upstreams both hold an `org/app:1.0`, with different content, so a request routed to
//! the wrong one gets the wrong digest. Real clients do the pulls: skopeo for every form, podman
//! with the registries.conf that `ferry client-config podman` writes (path-prefix mirrors), and
//! containerd's `ctr` with the hosts.toml files of `ferry client-config containerd` (which make
//! it send `?ns=`). No client can fall back to a real registry: every public name points at a
//! dead loopback port.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::support::clients::{CmdOutput, DEAD_UPSTREAM, PUBLIC_REGISTRIES, run};
use crate::support::process::{Daemon, scrub_env};

/// Two upstream registries and what was pushed to them.
pub(super) struct TwoRegistries {
    pub(super) hub: Registry,
    pub(super) ghcr: Registry,
    /// `library/hello:1` on the docker.io registry.
    pub(super) hello: Image,
    /// `org/app:1.0` on the docker.io registry.
    pub(super) hub_app: Image,
    /// `org/app:1.0` on the ghcr.io registry: a two-platform index.
    pub(super) ghcr_app: Image,
    /// `a/b/c/d:1` on the ghcr.io registry.
    pub(super) deep: Image,
}

pub(super) fn two_registries() -> TwoRegistries {
    let hub = Registry::start();
    let ghcr = Registry::start();
    let hello = push_fixture(&hub, Fixture::single(), "library/hello:1");
    let hub_app = push_fixture(&hub, Fixture::single().seed("hub-app"), "org/app:1.0");
    let ghcr_app = push_fixture(&ghcr, Fixture::multi().seed("ghcr-app"), "org/app:1.0");
    let deep = push_fixture(&ghcr, Fixture::single().seed("deep"), "a/b/c/d:1");
    assert_ne!(hub_app.digest, ghcr_app.digest);
    TwoRegistries {
        hub,
        ghcr,
        hello,
        hub_app,
        ghcr_app,
        deep,
    }
}

/// ferry with docker.io (alias index.docker.io, the default upstream) and ghcr.io, and the
/// Host `localhost` routed to ghcr.io.
pub(super) fn ferry_for(r: &TwoRegistries) -> Ferry {
    Ferry::builder()
        .upstream_with("docker.io", &r.hub, json!({"aliases": ["index.docker.io"]}))
        .upstream("ghcr.io", &r.ghcr)
        .default_upstream("docker.io")
        .host("localhost", "ghcr.io")
        .start()
}

#[test]
fn skopeo_pulls_through_every_routing_form() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let at = |name: &str| format!("docker://{}/{name}", ferry.host());
    let direct_ghcr = format!("docker://{}/org/app:1.0", r.ghcr.host());

    // 1. Path prefix: the registry is the first path component.
    assert_eq!(
        skopeo_inspect_raw_digest(&at("ghcr.io/org/app:1.0")),
        r.ghcr_app.digest
    );
    assert_same_pull(&at("ghcr.io/org/app:1.0"), &direct_ghcr, &r.ghcr_app);
    assert_eq!(
        skopeo_inspect_raw_digest(&at("docker.io/org/app:1.0")),
        r.hub_app.digest
    );

    // 2. Registry-mirror form: no registry in the path means default_upstream.
    assert_eq!(
        skopeo_inspect_raw_digest(&at("org/app:1.0")),
        r.hub_app.digest
    );
    assert_same_pull(
        &at("library/hello:1"),
        &format!("docker://{}/library/hello:1", r.hub.host()),
        &r.hello,
    );

    // 4. Host routing: a client that calls ferry `localhost` gets ghcr.io.
    let by_host = format!("docker://localhost:{}/org/app:1.0", ferry.port());
    assert_eq!(skopeo_inspect_raw_digest(&by_host), r.ghcr_app.digest);
    assert_same_pull(&by_host, &direct_ghcr, &r.ghcr_app);

    // 5. docker.io naming: a one-component name is library/<name>, in the default form, with
    //    the registry prefix, and through an alias.
    for name in ["hello:1", "docker.io/hello:1", "index.docker.io/hello:1"] {
        assert_eq!(
            skopeo_inspect_raw_digest(&at(name)),
            r.hello.digest,
            "{name}"
        );
    }
    assert_eq!(
        skopeo_inspect_raw_digest(&at("index.docker.io/library/hello:1")),
        r.hello.digest
    );

    // Repository paths of any depth.
    assert_same_pull(
        &at("ghcr.io/a/b/c/d:1"),
        &format!("docker://{}/a/b/c/d:1", r.ghcr.host()),
        &r.deep,
    );

    // The upstreams saw only their own repositories, with docker.io's library/ applied.
    let hub_paths: Vec<String> = r.hub.requests().into_iter().map(|e| e.path).collect();
    assert!(
        hub_paths
            .iter()
            .any(|p| p.starts_with("/v2/library/hello/manifests/")),
        "{hub_paths:?}"
    );
    assert!(
        !hub_paths
            .iter()
            .any(|p| p.starts_with("/v2/hello/") || p.contains("/a/b/c/d/")),
        "{hub_paths:?}"
    );
    assert!(r.ghcr.count("GET", "/v2/org/app/manifests/1.0") >= 1);
    assert_eq!(r.ghcr.count("GET", "/v2/library/"), 0);
}

#[tokio::test]
async fn ns_query_names_the_upstream() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    // 3. containerd's form: no registry in the path, ?ns= names it.
    let cases = [
        ("/v2/org/app/manifests/1.0?ns=ghcr.io", &r.ghcr_app),
        ("/v2/org/app/manifests/1.0?ns=docker.io", &r.hub_app),
        ("/v2/hello/manifests/1?ns=docker.io", &r.hello),
        ("/v2/hello/manifests/1?ns=index.docker.io", &r.hello),
        ("/v2/a/b/c/d/manifests/1?ns=ghcr.io", &r.deep),
        // A path that repeats the registry is still the path-prefix form.
        ("/v2/ghcr.io/org/app/manifests/1.0?ns=ghcr.io", &r.ghcr_app),
    ];
    for (path, image) in cases {
        let resp = get_manifest(&ferry, path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(image.digest.as_str()),
            "{path}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256_digest(&body), image.digest, "{path}");
    }
    let layer = &r.deep.blobs[0].digest;
    let resp = get(&ferry, &format!("/v2/a/b/c/d/blobs/{layer}?ns=ghcr.io")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), *layer);
    // The Host header works for any endpoint, blobs included.
    let resp = client()
        .get(url(&ferry, &format!("/v2/a/b/c/d/blobs/{layer}")))
        .header("Host", format!("localhost:{}", ferry.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), *layer);
}

#[tokio::test]
async fn an_unknown_registry_is_name_unknown_and_never_contacted() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let before = (r.hub.requests().len(), r.ghcr.requests().len());
    for path in [
        "/v2/quay.io/org/app/manifests/1.0",
        "/v2/example.com:5000/org/app/manifests/1.0",
        "/v2/localhost/org/app/manifests/1.0",
        "/v2/org/app/manifests/1.0?ns=quay.io",
        "/v2/quay.io/org/app/tags/list",
    ] {
        let message = expect_error(get_manifest(&ferry, path).await, 404, "NAME_UNKNOWN").await;
        let named = ["quay.io", "example.com:5000", "localhost"]
            .iter()
            .any(|n| message.contains(n));
        assert!(named, "the message must name the registry: {message}");
    }
    let skopeo = try_skopeo_copy(
        &format!("docker://{}/quay.io/org/app:1.0", ferry.host()),
        &format!("dir:{}", tempfile::tempdir().unwrap().path().display()),
        &[],
    );
    assert!(!skopeo.success, "a pull of an unknown registry must fail");
    assert_eq!(
        (r.hub.requests().len(), r.ghcr.requests().len()),
        before,
        "no upstream may be asked about an unknown registry"
    );
}

/// `ferry client-config <client> --mirror <ferry> --config <ferry's config> --write <dir>`;
/// returns `dir`.
pub(super) fn client_config(ferry: &Ferry, client: &str, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_command()
        .args(["client-config", client, "--mirror"])
        .arg(ferry.base_url())
        .arg("--config")
        .arg(ferry.config_path())
        .arg("--write")
        .arg(dir.path())
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry client-config {client} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Turns the generated Podman drop-in into a complete registries.conf for a test: each
/// registry's own `location` (the direct fallback) becomes a dead loopback port, short names
/// resolve on docker.io, and the other public registries are dead ends too.
pub(super) fn podman_registries_conf(generated: &str) -> String {
    let mut text = String::from(
        "unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n",
    );
    let mut prefixes = Vec::new();
    let mut in_registry = false;
    for line in generated.lines() {
        let trimmed = line.trim();
        if trimmed == "[[registry]]" {
            in_registry = true;
        } else if trimmed.starts_with("[[") {
            in_registry = false;
        }
        if let Some(p) = trimmed.strip_prefix("prefix = ") {
            prefixes.push(p.trim_matches('"').to_owned());
        }
        if in_registry && trimmed.starts_with("location = ") {
            text.push_str(&format!(
                "location = \"{DEAD_UPSTREAM}\"\ninsecure = true\n"
            ));
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    for name in PUBLIC_REGISTRIES {
        if !prefixes.iter().any(|p| p == name) {
            text.push_str(&format!(
                "\n[[registry]]\nprefix = \"{name}\"\nlocation = \"{DEAD_UPSTREAM}\"\ninsecure = true\n"
            ));
        }
    }
    text
}

#[test]
fn podman_pulls_through_the_generated_path_prefix_mirror_config() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let Some(podman) = podman_or_skip(&[]) else {
        return;
    };
    let dir = client_config(&ferry, "podman", &[]);
    let generated = std::fs::read_to_string(
        dir.path()
            .join("etc/containers/registries.conf.d/ferry.conf"),
    )
    .unwrap();
    for name in ["docker.io", "index.docker.io", "ghcr.io"] {
        let mirror = format!("location = \"{}/{name}\"", ferry.host());
        assert!(generated.contains(&mirror), "{mirror} in:\n{generated}");
    }
    std::fs::write(
        podman.dir().join("registries.conf"),
        podman_registries_conf(&generated),
    )
    .unwrap();

    podman.pull("docker.io/library/hello:1", &[]);
    assert_eq!(
        podman.image_digest("docker.io/library/hello:1"),
        r.hello.digest
    );
    podman.pull("ghcr.io/org/app:1.0", &[]);
    assert_eq!(
        podman.image_digest("ghcr.io/org/app:1.0"),
        r.ghcr_app.digest
    );
    podman.pull("docker.io/org/app:1.0", &[]);
    assert_eq!(
        podman.image_digest("docker.io/org/app:1.0"),
        r.hub_app.digest
    );
    podman.pull("ghcr.io/org/app:1.0", &["--arch", "arm64"]);
    podman.pull("hello:1", &[]); // short name -> docker.io/library/hello through ferry

    // The requests came in the path-prefix form.
    let log = ferry.log();
    for path in [
        "/v2/docker.io/library/hello/manifests/1",
        "/v2/ghcr.io/org/app/manifests/1.0",
        "/v2/docker.io/org/app/manifests/1.0",
    ] {
        assert!(log.contains(path), "ferry never saw {path}:\n{log}");
    }
    let arm = r.ghcr_app.manifest_for("arm64");
    assert!(r.ghcr.count("GET", &format!("/manifests/{}", arm.digest)) >= 1);
}

/// A private containerd daemon (CRI disabled) on a socket in a temporary directory.
struct Containerd {
    // Declared first so the daemon is killed before its directory is removed.
    _daemon: Daemon,
    dir: tempfile::TempDir,
}

/// `ctr --address SOCKET --namespace ferry-e2e ARGS`.
fn ctr_at(socket: &Path, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new("ctr");
    scrub_env(&mut cmd, &["CONTAINERD_"]);
    cmd.arg("--address")
        .arg(socket)
        .args(["--namespace", "ferry-e2e"])
        .args(args);
    run(cmd)
}

impl Containerd {
    /// Starts containerd, or explains why it cannot run here.
    fn start() -> Result<Containerd, String> {
        if Command::new("containerd")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("containerd is not installed".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-containerd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(d.join("config.toml"), config).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("config.toml"));
        scrub_env(&mut cmd, &[]);
        let log = d.join("containerd.log");
        let mut daemon = Daemon::spawn("containerd", cmd, &log, &log);
        for _ in 0..200 {
            if let Some(status) = daemon.exit_status() {
                return Err(format!("containerd exited ({status}):\n{}", daemon.log()));
            }
            if ctr_at(&socket, &["version"]).success {
                return Ok(Containerd {
                    _daemon: daemon,
                    dir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("containerd did not answer:\n{}", daemon.log()))
    }

    fn ctr(&self, args: &[&str]) -> CmdOutput {
        ctr_at(&self.dir.path().join("containerd.sock"), args)
    }

    /// `ctr image pull --hosts-dir DIR [extra] IMAGE`; panics with ctr's output on failure.
    fn pull(&self, hosts_dir: &Path, image: &str, extra: &[&str]) {
        let hosts = hosts_dir.display().to_string();
        let mut args = vec!["image", "pull", "--hosts-dir", hosts.as_str()];
        args.extend_from_slice(extra);
        args.push(image);
        let out = self.ctr(&args);
        assert!(
            out.success,
            "ctr image pull {image} failed:\n{}{}",
            out.stdout, out.stderr
        );
    }

    /// The digest `ctr image ls` shows for an image.
    fn digest(&self, image: &str) -> String {
        let out = self.ctr(&["image", "ls"]);
        assert!(out.success, "{}", out.stderr);
        out.stdout
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&image)).then(|| cols[2].to_owned())
            })
            .unwrap_or_else(|| panic!("{image} not in `ctr image ls`:\n{}", out.stdout))
    }
}

#[test]
fn containerd_pulls_with_ns_through_the_generated_hosts_toml() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let containerd = match Containerd::start() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIP (containerd cannot run here): {reason}");
            return;
        }
    };
    // Without direct fallback, `server` is ferry too: containerd can never reach a registry.
    let dir = client_config(&ferry, "containerd", &["--no-direct-fallback"]);
    let hosts_dir = dir.path().join("etc/containerd/certs.d");
    for name in ["docker.io", "index.docker.io", "ghcr.io"] {
        let hosts = std::fs::read_to_string(hosts_dir.join(name).join("hosts.toml")).unwrap();
        assert!(
            hosts.contains(&format!("server = \"{}\"", ferry.base_url())),
            "{name}:\n{hosts}"
        );
    }

    containerd.pull(&hosts_dir, "docker.io/library/hello:1", &[]);
    assert_eq!(
        containerd.digest("docker.io/library/hello:1"),
        r.hello.digest
    );
    // Only ?ns= tells ferry these two apart: the paths are the same.
    containerd.pull(&hosts_dir, "ghcr.io/org/app:1.0", &["--all-platforms"]);
    assert_eq!(containerd.digest("ghcr.io/org/app:1.0"), r.ghcr_app.digest);
    containerd.pull(&hosts_dir, "docker.io/org/app:1.0", &[]);
    assert_eq!(containerd.digest("docker.io/org/app:1.0"), r.hub_app.digest);
    containerd.pull(&hosts_dir, "index.docker.io/library/hello:1", &[]);
    assert_eq!(
        containerd.digest("index.docker.io/library/hello:1"),
        r.hello.digest
    );
    // Every blob of both platforms of the index came through ferry from the ghcr.io registry.
    for blob in &r.ghcr_app.blobs {
        assert!(
            r.ghcr
                .count("GET", &format!("/v2/org/app/blobs/{}", blob.digest))
                >= 1,
            "{} was not fetched from ghcr.io",
            blob.digest
        );
    }
}

#[test]
fn an_upstream_mirror_with_a_path_prefix_is_tried_before_the_url() {
    let registry = Registry::start();
    let first = push_fixture(&registry, Fixture::single().seed("office-1"), "team/app:1");
    let second = push_fixture(&registry, Fixture::single().seed("office-2"), "team/app:2");
    // Office -> central -> registry: the office ferry's docker.io has the central ferry (path
    // prefix /docker.io) as a mirror, and the registry itself as its url.
    let mut central = Ferry::builder().upstream("docker.io", &registry).start();
    let office = Ferry::builder()
        .upstream_with(
            "docker.io",
            &registry,
            json!({"mirrors": [format!("{}/docker.io", central.base_url())]}),
        )
        .start();

    let pulled = pull_to_dir(&format!("docker://{}/team/app:1", office.host()), &[]);
    assert_eq!(pulled["manifest.json"], first.digest);
    for blob in &first.blobs {
        // A client can have its last byte before the download is stored (docs: settle_blob).
        wait_until(Duration::from_secs(10), "cached through the mirror", || {
            is_cached(&central, &blob.digest) && is_cached(&office, &blob.digest)
        });
    }
    assert!(
        central.log().contains("/v2/docker.io/team/app/manifests/1"),
        "the mirror's path prefix was not used:\n{}",
        central.log()
    );

    // The mirror is down: the office ferry goes to the registry itself.
    central.kill9();
    let pulled = pull_to_dir(&format!("docker://{}/team/app:2", office.host()), &[]);
    assert_eq!(pulled["manifest.json"], second.digest);
    for blob in &second.blobs {
        assert!(!is_cached(&central, &blob.digest));
        assert!(is_cached(&office, &blob.digest));
    }
}
