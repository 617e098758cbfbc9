//! `ferry client-config` for the clients whose own programs do not run here (BuildKit, k3s,
//! Testcontainers) and its `--write` conflicts, end to end: the binary generates the files
//! from a running ferry's configuration, the files are read back as the client reads them,
//! and the requests those clients send (containerd's registry client adds `?ns=<registry>` for
//! BuildKit and k3s; Testcontainers prefixes the image name and Docker pulls it) are sent to
//! the running ferry, which must answer from the right upstream.

use super::routing::{TwoRegistries, client_config, ferry_for, two_registries};
use super::*;
use crate::support::clients::skopeo_inspect_raw_digest;
use crate::support::ferry::ferry_command;
use std::process::Command;

/// The requests containerd's registry client sends to a mirror host for `name/repo:tag`
/// (what BuildKit and k3s nodes do with the generated files) reach the right upstream.
async fn assert_ns_routes(ferry: &Ferry, r: &TwoRegistries, names: &[&str]) {
    for name in names {
        let (path, image) = match *name {
            "ghcr.io" => ("/v2/org/app/manifests/1.0", &r.ghcr_app),
            _ => ("/v2/org/app/manifests/1.0", &r.hub_app),
        };
        let resp = get_manifest(ferry, &format!("{path}?ns={name}")).await;
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(image.digest.as_str()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn buildkit_config_names_ferry_for_every_upstream() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let dir = client_config(&ferry, "buildkit", &[]);
    let text = std::fs::read_to_string(dir.path().join("etc/buildkit/buildkitd.toml")).unwrap();
    let t: toml::Table = text.parse().unwrap();
    let names = ["docker.io", "index.docker.io", "ghcr.io"];
    for name in names {
        let mirrors = t["registry"][name]["mirrors"].as_array().unwrap();
        assert_eq!(
            mirrors,
            &[toml::Value::from(ferry.host())],
            "{name}:\n{text}"
        );
    }
    // plain HTTP is said in the table named after the mirror, where BuildKit looks
    assert_eq!(
        t["registry"][&ferry.host()]["http"].as_bool(),
        Some(true),
        "{text}"
    );
    assert_ns_routes(&ferry, &r, &names).await;
}

#[tokio::test]
async fn k3s_registries_yaml_names_ferry_for_every_upstream() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let dir = client_config(&ferry, "k3s", &["--no-direct-fallback"]);
    let text = std::fs::read_to_string(dir.path().join("etc/rancher/k3s/registries.yaml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let names = ["docker.io", "index.docker.io", "ghcr.io"];
    for name in names {
        assert_eq!(
            v["mirrors"][name]["endpoint"],
            serde_json::json!([ferry.base_url()]),
            "{name}:\n{text}"
        );
    }
    assert_ns_routes(&ferry, &r, &names).await;
}

#[test]
fn testcontainers_prefix_pulls_hub_images_through_ferry() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let dir = client_config(&ferry, "testcontainers", &[]);
    let text = std::fs::read_to_string(dir.path().join(".testcontainers.properties")).unwrap();
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("hub.image.name.prefix="))
        .unwrap_or_else(|| panic!("no prefix in:\n{text}"));
    assert_eq!(prefix, format!("{}/docker.io/", ferry.host()));
    // What testcontainers does with a Docker Hub image name: prepend the prefix.
    for (image, want) in [("hello:1", &r.hello), ("org/app:1.0", &r.hub_app)] {
        let reference = format!("docker://{prefix}{image}");
        assert_eq!(
            skopeo_inspect_raw_digest(&reference),
            want.digest,
            "{image}"
        );
    }
}

/// A file ferry did not write is not replaced: `--write` exits 1, names the file, and prints
/// ferry's version of it on stdout so it can be merged by hand.
#[test]
fn a_write_conflict_prints_ferrys_version() {
    let r = two_registries();
    let ferry = ferry_for(&r);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("etc/containers/registries.conf.d/ferry.conf");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "# my own\n").unwrap();
    let out = ferry_command()
        .args(["client-config", "crio", "--mirror"])
        .arg(ferry.base_url())
        .arg("--config")
        .arg(ferry.config_path())
        .arg("--write")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("printed on stdout"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "# ==> ferry's version of {} <==\n",
            path.display()
        )),
        "{stdout}"
    );
    let ours = stdout.split_once("<==\n").unwrap().1;
    assert!(
        ours.starts_with("# Generated by `ferry client-config crio`"),
        "{stdout}"
    );
    assert!(
        ours.contains(&format!("location = \"{}/ghcr.io\"", ferry.host())),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# my own\n");
}

/// `skopeo inspect` (without `--raw`) also lists the repository's tags, and containers/image
/// asks the registry itself for them, never its mirrors: through ferry's Podman drop-in it
/// fails after ferry answered the manifest. `--no-tags` skips the list (docs/clients.md says
/// so). The registry is `localhost` (an upstream of ferry under that name; nothing listens on
/// its ports 443 and 80 here), so the tag request cannot leave the machine, not even as a DNS
/// lookup. (A name with a port cannot be used: it cannot sit under ferry's path prefix.)
#[test]
fn skopeo_inspect_through_a_mirror_needs_no_tags() {
    use super::routing::podman_registries_conf;
    use crate::support::clients::{run, skopeo_command};
    const NAME: &str = "localhost";
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single().seed("no-tags"), "org/app:1.0");
    let ferry = Ferry::builder().upstream(NAME, &registry).start();
    let dir = client_config(&ferry, "podman", &[]);
    let generated = std::fs::read_to_string(
        dir.path()
            .join("etc/containers/registries.conf.d/ferry.conf"),
    )
    .unwrap();
    assert!(generated.contains(&format!("location = \"{}/{NAME}\"", ferry.host())));
    let conf = dir.path().join("registries.conf");
    std::fs::write(&conf, podman_registries_conf(&generated)).unwrap();
    let reference = format!("docker://{NAME}/org/app:1.0");
    let inspect = |extra: &[&str]| {
        let mut cmd = skopeo_command();
        cmd.arg("--registries-conf")
            .arg(&conf)
            .arg("inspect")
            .args(extra)
            .arg(&reference);
        run(cmd)
    };
    let out = inspect(&[]);
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stderr.contains("repository tags"), "{}", out.stderr);
    assert!(out.stderr.contains("localhost"), "{}", out.stderr);
    let manifest = format!("/v2/{NAME}/org/app/manifests/1.0");
    assert!(ferry.log().contains(&manifest), "{}", ferry.log());
    let out = inspect(&["--no-tags"]);
    assert!(out.success, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["Digest"], image.digest, "{}", out.stdout);
}

/// containerd's own config loader (containerd 1.6 from Debian) reads the 1.x snippet that
/// `ferry client-config containerd` prints: `containerd --config FILE config dump` accepts
/// the file and shows the CRI registry's `config_path` set to the certs.d directory. The 2.x
/// (`version = 3`) snippet cannot be loaded by 1.6; its keys are checked by the unit tests of
/// crates/clientcfg against containerd 2's documented plugin names.
#[test]
fn containerd_loads_the_config_snippet_it_is_given() {
    let Ok(out) = Command::new("containerd").arg("--version").output() else {
        eprintln!("skipped: containerd is not installed");
        return;
    };
    assert!(out.status.success());
    let printed = ferry_command()
        .args([
            "client-config",
            "containerd",
            "--mirror",
            "http://127.0.0.1:5000",
        ])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    let start = text
        .find("(containerd 1.x, version = 2) <==")
        .expect("the 1.x snippet");
    let snippet: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("# ==>"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, format!("version = 2\n{snippet}\n")).unwrap();
    let dump = Command::new("containerd")
        .arg("--config")
        .arg(&file)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dumped = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "containerd refused the snippet: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let cri = dumped
        .split("[plugins.\"io.containerd.grpc.v1.cri\".registry]")
        .nth(1)
        .expect("the CRI registry table in the dump");
    assert!(
        cri.lines()
            .take_while(|l| !l.starts_with('['))
            .any(|l| l.trim() == "config_path = \"/etc/containerd/certs.d\""),
        "{dumped}"
    );
}
