//! Tests of [`super`]: the generated `registries.yaml` and merging into an existing one.
//!
//! No k3s or RKE2 runs on this machine, so [`check_k3s_schema`] stands in for their loader: it
//! decodes the file into the structure k3s documents and declares (`mirrors.<name>.endpoint`
//! and `rewrite`; `configs.<host>.auth` and `tls` with `ca_file`, `cert_file`, `key_file`,
//! `insecure_skip_verify`), refusing unknown keys, and checks that every endpoint is an
//! `http(s)://` URL as k3s requires.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;
use crate::Upstream;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registries {
    #[serde(default)]
    mirrors: BTreeMap<String, K3sMirror>,
    #[serde(default)]
    configs: BTreeMap<String, K3sConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // decoded as k3s decodes it
struct K3sMirror {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // decoded as k3s decodes it
struct K3sConfig {
    auth: Option<BTreeMap<String, String>>,
    tls: Option<K3sTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // decoded as k3s decodes it
struct K3sTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    insecure_skip_verify: Option<bool>,
}

/// Decodes `text` as k3s would (see the module docs): name -> endpoints, host -> CA file.
fn check_k3s_schema(text: &str) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let r: Registries = serde_saphyr::from_str(text).expect("k3s's registries.yaml schema");
    for (name, m) in &r.mirrors {
        for e in &m.endpoint {
            assert!(
                e.starts_with("http://") || e.starts_with("https://"),
                "{name}: {e}"
            );
        }
    }
    let cas = r
        .configs
        .iter()
        .filter_map(|(h, c)| Some((h.clone(), c.tls.as_ref()?.ca_file.clone()?)))
        .collect();
    (
        r.mirrors
            .into_iter()
            .map(|(k, m)| (k, m.endpoint))
            .collect(),
        cas,
    )
}

fn target(mirror: &str) -> Target {
    Target::new(
        mirror,
        [
            Upstream::new("docker.io").with_aliases(["index.docker.io"]),
            Upstream::new("ghcr.io"),
            Upstream::new("registry.k8s.io").with_aliases(["k8s.gcr.io"]),
        ],
        Some("docker.io"),
    )
    .unwrap()
}

#[test]
fn a_mirror_entry_per_registry() {
    let c = k3s(&target("http://127.0.0.1:5002")).unwrap();
    assert_eq!(
        c.files[0].path.to_str(),
        Some("etc/rancher/k3s/registries.yaml")
    );
    let text = &c.files[0].contents;
    assert!(text.starts_with(crate::GENERATED_MARKER), "{text}");
    let (mirrors, cas) = check_k3s_schema(text);
    let names: Vec<_> = mirrors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "docker.io",
            "ghcr.io",
            "index.docker.io",
            "k8s.gcr.io",
            "registry.k8s.io"
        ]
    );
    assert!(mirrors.values().all(|e| e == &["http://127.0.0.1:5002"]));
    assert!(cas.is_empty());
    assert!(c.snippets.is_empty());
    assert!(c.notes.join("\n").contains("v1.21.0+k3s1"));

    let r = rke2(&target("http://127.0.0.1:5002")).unwrap();
    assert_eq!(
        r.files[0].path.to_str(),
        Some("etc/rancher/rke2/registries.yaml")
    );
    assert_eq!(check_k3s_schema(&r.files[0].contents).0, mirrors);
    assert!(r.files[0].contents.contains("`ferry client-config rke2`"));
}

#[test]
fn private_ca_and_no_direct_fallback() {
    let t = target("https://mirror.example.com:8443")
        .with_ca_file("/etc/ssl/ferry.pem")
        .unwrap()
        .with_direct_fallback(false);
    let c = k3s(&t).unwrap();
    let (mirrors, cas) = check_k3s_schema(&c.files[0].contents);
    assert_eq!(mirrors["ghcr.io"], ["https://mirror.example.com:8443"]);
    assert_eq!(cas["mirror.example.com:8443"], "/etc/ssl/ferry.pem");
    assert_eq!(c.snippets.len(), 1);
    let s: Value = serde_saphyr::from_str(&c.snippets[0].contents).unwrap();
    assert_eq!(s["disable-default-registry-endpoint"], Value::Bool(true));
    assert!(c.snippets[0].title.contains("/etc/rancher/k3s/config.yaml"));
}

#[test]
fn merge_keeps_other_entries_and_keys() {
    let ours = k3s(&target("http://127.0.0.1:5002")).unwrap().files[0]
        .contents
        .clone();
    let existing = "mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.gcr.io\n    rewrite:\n      \"^rancher/(.*)\": \"mirror/$1\"\n  reg.local:5000:\n    endpoint: [\"http://reg.local:5000\"]\nconfigs:\n  reg.local:5000:\n    auth:\n      username: u\n      password: p\n";
    let merged = merge_registries_yaml(existing, &ours).unwrap();
    let (mirrors, _) = check_k3s_schema(&merged);
    assert_eq!(
        mirrors["docker.io"],
        ["http://127.0.0.1:5002", "https://mirror.gcr.io"]
    );
    assert_eq!(mirrors["reg.local:5000"], ["http://reg.local:5000"]);
    let v: Value = serde_saphyr::from_str(&merged).unwrap();
    assert_eq!(
        v["mirrors"]["docker.io"]["rewrite"]["^rancher/(.*)"],
        "mirror/$1"
    );
    assert_eq!(v["configs"]["reg.local:5000"]["auth"]["username"], "u");
    assert_eq!(merge_registries_yaml(&merged, &ours).unwrap(), merged);
    assert_eq!(merge_registries_yaml(&ours, &ours).unwrap(), ours);
    let fresh = merge_registries_yaml("", &ours).unwrap();
    assert_eq!(check_k3s_schema(&fresh), check_k3s_schema(&ours));
}

#[test]
fn merge_refuses_what_it_cannot_understand() {
    let ours = k3s(&target("http://127.0.0.1:5002")).unwrap().files[0]
        .contents
        .clone();
    for (bad, words) in [
        ("mirrors: [", "not valid YAML"),
        ("- a\n- b\n", "not a mapping"),
        ("mirrors: 1\n", "mirrors is not a mapping"),
        ("mirrors:\n  ghcr.io:\n    endpoint: x\n", "not a list"),
    ] {
        let e = merge_registries_yaml(bad, &ours).unwrap_err();
        assert!(e.contains(words), "{bad}: {e}");
    }
}
