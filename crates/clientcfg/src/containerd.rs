//! containerd (`ctr`, and the CRI plugin of Kubernetes nodes): one
//! `certs.d/<registry>/hosts.toml` per registry ferry serves, plus the `config_path` setting
//! for containerd's `config.toml` as snippets for containerd 1.x and 2.x.
//!
//! containerd adds `?ns=<registry>` to every request it sends to a mirror host, and ferry
//! routes on that parameter, so the mirror host is ferry's root URL for every registry.
//!
//! No `_default/hosts.toml` is generated: it would send pulls of *every* other registry
//! (private registries, `localhost:5000`, ...) to ferry first, where they can only fail with
//! `NAME_UNKNOWN` (ferry is not an open proxy) before containerd falls back to the registry.
//! That adds a round trip to each such pull and tells the mirror operator the names of
//! private images, for no benefit.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    ClientConfig, Entry, Error, GeneratedFile, OnExisting, Plan, Snippet, Target, skipped_notes,
};

/// containerd's hosts directory, relative to the filesystem root.
pub const CONTAINERD_CERTS_DIR: &str = "etc/containerd/certs.d";

/// The capabilities ferry has as a private, trusted mirror: it may resolve tags.
const CAPABILITIES: [&str; 2] = ["pull", "resolve"];

#[derive(Serialize)]
struct HostsToml {
    server: String,
    host: BTreeMap<String, HostEntry>,
}

#[derive(Serialize)]
struct HostEntry {
    capabilities: Vec<&'static str>,
    /// The CA that signed ferry's certificate (`--ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

/// Generates `hosts.toml` files (and `config.toml` snippets) for containerd.
pub fn containerd(target: &Target) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    let mirror = &plan.mirror;
    let files = plan
        .entries
        .iter()
        .map(|e| GeneratedFile {
            path: format!("{CONTAINERD_CERTS_DIR}/{}/hosts.toml", e.name).into(),
            contents: hosts_toml(mirror, e, plan.direct_fallback, plan.ca_file.as_deref()),
            on_existing: OnExisting::ReplaceIfGenerated,
        })
        .collect();
    let certs = format!("/{CONTAINERD_CERTS_DIR}");
    Ok(ClientConfig {
        client: crate::Client::Containerd,
        files,
        snippets: containerd_config_snippets(&certs),
        notes: containerd_notes(&plan, &certs),
    })
}

/// How to make containerd read the files, and what it does with ferry.
fn containerd_notes(plan: &Plan, certs: &str) -> Vec<String> {
    let mirror = &plan.mirror;
    let mut notes = vec![
        format!(
            "the CRI plugin (Kubernetes, crictl) reads hosts.toml files only when config_path \
             points at {certs}: add the snippet for your containerd version to \
             /etc/containerd/config.toml and restart containerd; hosts.toml changes need no \
             restart after that"
        ),
        "with config_path set, containerd refuses old-style registry.mirrors (and TLS \
         registry.configs) entries, and the whole CRI plugin fails to load: remove them"
            .to_owned(),
        format!(
            "ctr reads no config.toml settings: pass --hosts-dir {certs} to `ctr image pull` \
             (and use full names such as docker.io/library/alpine:3)"
        ),
        "no _default/hosts.toml: registries ferry does not serve would only get NAME_UNKNOWN \
         from it"
            .to_owned(),
    ];
    notes.push(if plan.direct_fallback {
        "containerd tries ferry first and goes to each registry's own `server` when ferry fails \
         or answers an error (generate with direct fallback off to make `server` ferry too)"
            .to_owned()
    } else {
        "`server` is ferry too: containerd never goes to the registries directly, and asks \
         ferry a second time when ferry answers an error"
            .to_owned()
    });
    if mirror.is_plain_http() {
        notes.push(format!(
            "{} is plain HTTP: the http:// in each [host.\"...\"] key is all containerd needs \
             (skip_verify only matters for HTTPS)",
            mirror.authority()
        ));
    } else if plan.ca_file.is_none() {
        notes.push(
            "if ferry's certificate is from a private CA, generate with --ca /path/to/ca.crt \
             (ca = \"...\" under each [host.\"...\"] table), or install the CA in the system store"
                .to_owned(),
        );
    }
    notes.extend(skipped_notes(plan));
    notes
}

fn hosts_toml(
    mirror: &crate::Endpoint,
    entry: &Entry,
    direct_fallback: bool,
    ca: Option<&str>,
) -> String {
    let server = if direct_fallback {
        entry.fallback.origin()
    } else {
        mirror.origin()
    };
    let doc = HostsToml {
        server,
        host: BTreeMap::from([(
            mirror.origin(),
            HostEntry {
                capabilities: CAPABILITIES.to_vec(),
                ca: ca.map(str::to_owned),
            },
        )]),
    };
    let body = toml::to_string(&doc).expect("a table of strings serializes");
    let mut out = hosts_header(mirror, entry, direct_fallback, ca);
    out.push('\n');
    out.push_str(&body);
    out
}

/// The comment block of a `hosts.toml`: which registry, how containerd goes to ferry.
fn hosts_header(
    mirror: &crate::Endpoint,
    entry: &Entry,
    direct_fallback: bool,
    ca: Option<&str>,
) -> String {
    let name = &entry.name;
    let mut head = vec![
        format!("{} containerd` for {name}.", &crate::GENERATED_MARKER[2..]),
        format!(
            "containerd asks ferry first, adding ?ns={name} to each request (ferry routes on it),"
        ),
    ];
    if direct_fallback {
        head.push("and falls back to `server` when ferry fails or answers an error.".to_owned());
    } else {
        head.push(format!(
            "`server` is ferry too, so containerd never goes to {name} directly."
        ));
    }
    if entry.upstream != entry.name {
        head.push(format!(
            "{name} is an alias: ferry serves it from its upstream {}.",
            entry.upstream
        ));
    }
    if direct_fallback && !entry.fallback_is_default {
        head.push(format!(
            "`server` is overridden to {} (not {name}'s public address).",
            entry.fallback.origin()
        ));
    }
    if mirror.is_plain_http() {
        head.push("ferry is plain HTTP here: the http:// host key selects it.".to_owned());
    } else if ca.is_some() {
        head.push("ferry's certificate is checked against the CA in `ca`.".to_owned());
    } else {
        head.push(
            "For a ferry certificate from a private CA add ca = \"/path/to/ca.crt\" to the host."
                .to_owned(),
        );
    }
    head.iter().map(|l| format!("# {l}\n")).collect()
}

/// Builds `[a."b".c] key = value` from a path of table names.
fn nested(path: &[&str], key: &str, value: &str) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert(key.to_owned(), toml::Value::String(value.to_owned()));
    for name in path.iter().rev() {
        let mut outer = toml::Table::new();
        outer.insert((*name).to_owned(), toml::Value::Table(table));
        table = outer;
    }
    table
}

/// The `config.toml` settings that make containerd read `certs_dir` (an absolute path such as
/// `/etc/containerd/certs.d`): one snippet for containerd 1.x (config `version = 2`, CRI
/// plugin `io.containerd.grpc.v1.cri`) and one for 2.x (`version = 3`, CRI image plugin
/// `io.containerd.cri.v1.images`, and the transfer service that `ctr` 2.x pulls use).
pub fn containerd_config_snippets(certs_dir: &str) -> Vec<Snippet> {
    let v1 = nested(
        &["plugins", "io.containerd.grpc.v1.cri", "registry"],
        "config_path",
        certs_dir,
    );
    let mut v2 = nested(
        &["plugins", "io.containerd.cri.v1.images", "registry"],
        "config_path",
        certs_dir,
    );
    let transfer = nested(
        &["plugins", "io.containerd.transfer.v1.local"],
        "config_path",
        certs_dir,
    );
    if let (Some(toml::Value::Table(p)), Some(toml::Value::Table(t))) =
        (v2.get_mut("plugins"), transfer.get("plugins"))
    {
        p.extend(t.clone());
    }
    let render = |t: &toml::Table, comment: &[&str]| {
        let mut s: String = comment.iter().map(|l| format!("# {l}\n")).collect();
        s.push_str(&toml::to_string(t).expect("a table of strings serializes"));
        s
    };
    vec![
        Snippet {
            title: "/etc/containerd/config.toml (containerd 1.x, version = 2)".to_owned(),
            contents: render(
                &v1,
                &[
                    "containerd 1.5 to 1.7: the file starts with `version = 2`.",
                    "Merge into an existing [plugins.\"io.containerd.grpc.v1.cri\".registry] table.",
                ],
            ),
        },
        Snippet {
            title: "/etc/containerd/config.toml (containerd 2.x, version = 3)".to_owned(),
            contents: render(
                &v2,
                &[
                    "containerd 2.x: the file starts with `version = 3`; check the current value",
                    "with `containerd config dump | grep -n config_path`.",
                ],
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Upstream;

    fn target(mirror: &str) -> Target {
        Target::new(
            mirror,
            [
                Upstream::new("docker.io").with_aliases(["index.docker.io"]),
                Upstream::new("ghcr.io"),
                Upstream::new("registry.k8s.io").with_aliases(["k8s.gcr.io"]),
                Upstream::new("reg.local:5000"),
            ],
            Some("docker.io"),
        )
        .unwrap()
    }

    fn file<'a>(c: &'a ClientConfig, name: &str) -> &'a GeneratedFile {
        let path = format!("etc/containerd/certs.d/{name}/hosts.toml");
        c.files
            .iter()
            .find(|f| f.path.to_str() == Some(path.as_str()))
            .unwrap_or_else(|| panic!("no {path}"))
    }

    fn parse(f: &GeneratedFile) -> toml::Table {
        f.contents.parse::<toml::Table>().unwrap()
    }

    #[test]
    fn one_file_per_name_and_no_default() {
        let c = containerd(&target("http://127.0.0.1:5002")).unwrap();
        let paths: Vec<_> = c.files.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "etc/containerd/certs.d/docker.io/hosts.toml",
                "etc/containerd/certs.d/index.docker.io/hosts.toml",
                "etc/containerd/certs.d/ghcr.io/hosts.toml",
                "etc/containerd/certs.d/registry.k8s.io/hosts.toml",
                "etc/containerd/certs.d/k8s.gcr.io/hosts.toml",
                "etc/containerd/certs.d/reg.local:5000/hosts.toml",
            ]
        );
        assert!(
            c.files
                .iter()
                .all(|f| f.contents.starts_with(crate::GENERATED_MARKER))
        );
        assert!(
            c.files
                .iter()
                .all(|f| !f.path.to_str().unwrap().contains("_default"))
        );
    }

    #[test]
    fn hosts_toml_keys_and_values() {
        let c = containerd(&target("http://127.0.0.1:5002")).unwrap();
        let expect = |name: &str, server: &str| {
            let t = parse(file(&c, name));
            let mut want: toml::Table = toml::toml! {
                [host."http://127.0.0.1:5002"]
                capabilities = ["pull", "resolve"]
            };
            want.insert("server".into(), server.into());
            assert_eq!(t, want, "{name}");
        };
        expect("docker.io", "https://registry-1.docker.io");
        expect("index.docker.io", "https://registry-1.docker.io");
        expect("ghcr.io", "https://ghcr.io");
        expect("k8s.gcr.io", "https://k8s.gcr.io");
        expect("reg.local:5000", "https://reg.local:5000");
        let alias = &file(&c, "k8s.gcr.io").contents;
        assert!(
            alias.contains("ferry serves it from its upstream registry.k8s.io"),
            "{alias}"
        );
        assert!(alias.contains("?ns=k8s.gcr.io"), "{alias}");
    }

    #[test]
    fn https_mirror_and_fallback_override() {
        let t = target("https://mirror.example.com:8443")
            .with_fallback_server("ghcr.io", "http://127.0.0.1:1")
            .unwrap();
        let c = containerd(&t).unwrap();
        let g = parse(file(&c, "ghcr.io"));
        assert_eq!(g["server"].as_str(), Some("http://127.0.0.1:1"));
        let hosts = g["host"].as_table().unwrap();
        assert_eq!(
            hosts.keys().collect::<Vec<_>>(),
            ["https://mirror.example.com:8443"]
        );
        assert!(
            hosts["https://mirror.example.com:8443"]
                .get("skip_verify")
                .is_none()
        );
        assert!(
            file(&c, "ghcr.io")
                .contents
                .contains("`server` is overridden")
        );
        assert!(c.notes.join("\n").contains("ca = "));
    }

    #[test]
    fn a_private_ca_goes_in_the_host_table() {
        let t = target("https://mirror.example.com")
            .with_ca_file("/etc/ssl/ferry.pem")
            .unwrap();
        let c = containerd(&t).unwrap();
        let g = parse(file(&c, "ghcr.io"));
        assert_eq!(
            g["host"]["https://mirror.example.com"]["ca"].as_str(),
            Some("/etc/ssl/ferry.pem")
        );
        assert!(!c.notes.join("\n").contains("--ca"));
    }

    #[test]
    fn without_direct_fallback_server_is_ferry() {
        let t = target("http://127.0.0.1:5002")
            .with_fallback_server("ghcr.io", "http://127.0.0.1:1")
            .unwrap()
            .with_direct_fallback(false);
        let c = containerd(&t).unwrap();
        for f in &c.files {
            let t = parse(f);
            assert_eq!(
                t["server"].as_str(),
                Some("http://127.0.0.1:5002"),
                "{}",
                f.contents
            );
            // containerd 1.6 rejects a hosts.toml without a [host] table: keep it
            assert!(
                t["host"]
                    .as_table()
                    .unwrap()
                    .contains_key("http://127.0.0.1:5002")
            );
            assert!(f.contents.contains("never goes to"), "{}", f.contents);
            assert!(!f.contents.contains("overridden"), "{}", f.contents);
        }
    }

    #[test]
    fn dedicated_host_configures_its_upstream_only() {
        let t = target("https://ghcr.mirror.example.com")
            .with_hosts([("ghcr.mirror.example.com", "ghcr.io")])
            .unwrap();
        let c = containerd(&t).unwrap();
        assert_eq!(c.files.len(), 1);
        assert_eq!(
            c.files[0].path.to_str(),
            Some("etc/containerd/certs.d/ghcr.io/hosts.toml")
        );
    }

    #[test]
    fn config_snippets_for_both_major_versions() {
        let s = containerd_config_snippets("/etc/containerd/certs.d");
        assert_eq!(s.len(), 2);
        let v1: toml::Table = s[0].contents.parse().unwrap();
        assert_eq!(
            v1,
            toml::toml! {
                [plugins."io.containerd.grpc.v1.cri".registry]
                config_path = "/etc/containerd/certs.d"
            }
        );
        let v2: toml::Table = s[1].contents.parse().unwrap();
        assert_eq!(
            v2,
            toml::toml! {
                [plugins."io.containerd.cri.v1.images".registry]
                config_path = "/etc/containerd/certs.d"
                [plugins."io.containerd.transfer.v1.local"]
                config_path = "/etc/containerd/certs.d"
            }
        );
        assert!(s[0].title.contains("1.x") && s[1].title.contains("2.x"));
        // the snippet is what a user pastes: table headers, not inline tables
        assert!(
            s[0].contents
                .contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]\n"),
            "{}",
            s[0].contents
        );
    }
}
