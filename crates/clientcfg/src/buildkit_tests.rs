//! Tests of [`super`]: the generated `buildkitd.toml` and merging into an existing one.
//!
//! No `buildkitd` is packaged for this machine (Debian 12 has neither `buildkit` nor a
//! `golang-github-moby-buildkit-dev`), so [`check_buildkit_schema`] stands in for BuildKit's
//! own loader: it decodes the file into the registry part of BuildKit's configuration as its
//! source declares it (`util/resolver/config.RegistryConfig`: `mirrors`, `http`, `insecure`,
//! `ca`, `keypair`, `tlsconfigdir`; unknown keys refused here, although BuildKit's decoder only
//! ignores them) and checks what BuildKit's resolver assumes: a mirror is `host[:port]`
//! without a scheme, and a mirror's scheme comes from the table named after it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;
use crate::Upstream;

#[derive(Debug, Deserialize)]
struct BuildkitRegistries {
    #[serde(default)]
    registry: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields are only decoded, as BuildKit decodes them
struct RegistryConfig {
    #[serde(default)]
    mirrors: Vec<String>,
    http: Option<bool>,
    insecure: Option<bool>,
    #[serde(default)]
    ca: Vec<String>,
    #[serde(default)]
    keypair: Vec<BTreeMap<String, String>>,
    #[serde(default)]
    tlsconfigdir: Vec<String>,
}

/// One registry table as the tests compare it: `mirrors`, `http`, `ca`.
type Table = (Vec<String>, Option<bool>, Vec<String>);

/// Decodes `text` as BuildKit would and returns its registry tables (see the module docs).
pub(crate) fn check_buildkit_schema(text: &str) -> BTreeMap<String, Table> {
    let parsed: BuildkitRegistries = toml::from_str(text).expect("BuildKit's schema");
    for (name, r) in &parsed.registry {
        for m in &r.mirrors {
            assert!(!m.contains("://"), "{name}: mirror {m:?} has a scheme");
            let host = m.split('/').next().unwrap();
            assert!(!host.is_empty(), "{name}: mirror {m:?} has no host");
        }
    }
    parsed
        .registry
        .into_iter()
        .map(|(k, r)| (k, (r.mirrors, r.http, r.ca)))
        .collect()
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
fn plain_http_mirror_for_every_registry() {
    let c = buildkit(&target("http://127.0.0.1:5002")).unwrap();
    assert_eq!(c.files.len(), 1);
    assert_eq!(
        c.files[0].path.to_str(),
        Some("etc/buildkit/buildkitd.toml")
    );
    let text = &c.files[0].contents;
    assert!(text.starts_with(crate::GENERATED_MARKER), "{text}");
    let regs = check_buildkit_schema(text);
    let names: Vec<_> = regs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "127.0.0.1:5002",
            "docker.io",
            "ghcr.io",
            "index.docker.io",
            "k8s.gcr.io",
            "registry.k8s.io"
        ]
    );
    for name in ["docker.io", "ghcr.io", "k8s.gcr.io"] {
        assert_eq!(
            regs[name],
            (vec!["127.0.0.1:5002".to_owned()], None, vec![]),
            "{name}"
        );
    }
    assert_eq!(regs["127.0.0.1:5002"], (vec![], Some(true), vec![]));
    assert!(
        text.contains("[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5002\"]\n"),
        "{text}"
    );
}

#[test]
fn https_mirror_with_a_private_ca() {
    let c = buildkit(&target("https://mirror.example.com")).unwrap();
    let regs = check_buildkit_schema(&c.files[0].contents);
    assert!(
        !regs.contains_key("mirror.example.com"),
        "nothing to say about an https mirror"
    );
    assert!(c.notes.join("\n").contains("--ca"));
    let t = target("https://mirror.example.com:8443")
        .with_ca_file("/etc/ssl/ferry.pem")
        .unwrap();
    let regs = check_buildkit_schema(&buildkit(&t).unwrap().files[0].contents);
    assert_eq!(
        regs["mirror.example.com:8443"],
        (vec![], None, vec!["/etc/ssl/ferry.pem".to_owned()])
    );
    assert_eq!(regs["ghcr.io"].0, ["mirror.example.com:8443"]);
}

#[test]
fn no_direct_fallback_is_explained_and_hosts_route() {
    let c = buildkit(&target("http://127.0.0.1:5002").with_direct_fallback(false)).unwrap();
    assert!(
        c.notes
            .join("\n")
            .contains("always tries the registry itself")
    );
    let t = target("https://docker.mirror.example.com")
        .with_hosts([("docker.mirror.example.com", "docker.io")])
        .unwrap();
    let regs = check_buildkit_schema(&buildkit(&t).unwrap().files[0].contents);
    assert_eq!(
        regs.keys().collect::<Vec<_>>(),
        ["docker.io", "index.docker.io"]
    );
    assert_eq!(regs["docker.io"].0, ["docker.mirror.example.com"]);
}

#[test]
fn merge_keeps_other_settings_and_mirrors() {
    let ours = buildkit(&target("http://127.0.0.1:5002")).unwrap().files[0]
        .contents
        .clone();
    let existing = "debug = true\n\n[worker.oci]\nenabled = true\n\n\
                    [registry.\"docker.io\"]\nmirrors = [\"mirror.gcr.io\"]\n\n\
                    [registry.\"10.0.0.1:5000\"]\nhttp = true\n";
    let merged = merge_buildkitd_toml(existing, &ours).unwrap();
    let t: toml::Table = merged.parse().unwrap();
    assert_eq!(t["debug"].as_bool(), Some(true));
    assert_eq!(t["worker"]["oci"]["enabled"].as_bool(), Some(true));
    let regs = check_buildkit_schema(&merged);
    assert_eq!(regs["docker.io"].0, ["127.0.0.1:5002", "mirror.gcr.io"]);
    assert_eq!(regs["10.0.0.1:5000"].1, Some(true));
    assert_eq!(regs["127.0.0.1:5002"].1, Some(true));
    // idempotent, and the generated file merged into itself is unchanged text
    assert_eq!(merge_buildkitd_toml(&merged, &ours).unwrap(), merged);
    assert_eq!(merge_buildkitd_toml(&ours, &ours).unwrap(), ours);
    // empty file == fresh
    let fresh = merge_buildkitd_toml("", &ours).unwrap();
    assert_eq!(check_buildkit_schema(&fresh), check_buildkit_schema(&ours));
}

#[test]
fn merge_refuses_what_it_cannot_understand() {
    let ours = buildkit(&target("http://127.0.0.1:5002")).unwrap().files[0]
        .contents
        .clone();
    for (bad, words) in [
        ("[registry", "not valid TOML"),
        ("registry = 1", "`registry` key is not a table"),
        (
            "[registry]\n\"ghcr.io\" = 1",
            "registry.\"ghcr.io\" is not a table",
        ),
        ("[registry.\"ghcr.io\"]\nmirrors = \"x\"", "not an array"),
        ("[registry.\"ghcr.io\"]\nmirrors = [1]", "not a string"),
    ] {
        let e = merge_buildkitd_toml(bad, &ours).unwrap_err();
        assert!(e.contains(words), "{bad}: {e}");
    }
}
