//! Podman, Buildah, Skopeo and CRI-O: a containers-registries.conf(5) (version 2) drop-in,
//! `/etc/containers/registries.conf.d/ferry.conf`, with one `[[registry]]` per registry name
//! and ferry as its `[[registry.mirror]]`.
//!
//! CRI-O needs nothing else: it pulls with the same library (containers/image), which reads
//! `/etc/containers/registries.conf` and the `registries.conf.d` drop-ins, so [`crio`] writes
//! the same file and differs only in its header and instructions (restart CRI-O; Kubernetes
//! short names).
//!
//! The mirror location uses ferry's path-prefix form, `<ferry host:port>/<registry>`, which
//! ferry serves for every upstream (containers/image sends no `ns` parameter, and only
//! Docker Hub could use the registry-mirror form). When the mirror URL's host is routed to
//! one upstream by ferry's `hosts:` map, the location is the bare host instead.

use serde::Serialize;

use crate::{ClientConfig, Entry, Error, GeneratedFile, OnExisting, Plan, Target, skipped_notes};

/// Where the drop-in goes, relative to the filesystem root.
pub const PODMAN_DROPIN_PATH: &str = "etc/containers/registries.conf.d/ferry.conf";

#[derive(Serialize)]
struct RegistriesConf {
    registry: Vec<Registry>,
}

#[derive(Serialize)]
struct Registry {
    prefix: String,
    location: String,
    #[serde(skip_serializing_if = "is_false")]
    insecure: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirror: Vec<Mirror>,
}

#[derive(Serialize)]
struct Mirror {
    location: String,
    #[serde(skip_serializing_if = "is_false")]
    insecure: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Generates the registries.conf drop-in for Podman and the other containers/image tools.
pub fn podman(target: &Target) -> Result<ClientConfig, Error> {
    registries_conf(target, crate::Client::Podman)
}

/// Generates the registries.conf drop-in for CRI-O nodes (the same file as [`podman`], with
/// CRI-O's instructions).
pub fn crio(target: &Target) -> Result<ClientConfig, Error> {
    let mut c = registries_conf(target, crate::Client::Crio)?;
    c.notes[0] = format!(
        "install as /{PODMAN_DROPIN_PATH} on every CRI-O node and restart CRI-O (systemctl \
         restart crio); CRI-O reads it with containers/image, as Podman does"
    );
    c.notes[1] = "check with `crictl pull docker.io/library/alpine:3` and CRI-O's log at debug \
                  level, which names each location it tries"
        .to_owned();
    c.notes[2] = "pod images without a registry (nginx:1.25) resolve only through \
                  unqualified-search-registries in CRI-O's registries.conf; with more than one \
                  search registry CRI-O's default short-name mode refuses them: write full names \
                  (docker.io/library/nginx:1.25) or set unqualified-search-registries = \
                  [\"docker.io\"]"
        .to_owned();
    c.notes.remove(3); // the skopeo note
    Ok(c)
}

fn registries_conf(target: &Target, client: crate::Client) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    let registry = plan.entries.iter().map(|e| registry(&plan, e)).collect();
    let body = toml::to_string(&RegistriesConf { registry }).expect("tables of strings serialize");
    let mut contents = header(&plan, client);
    contents.push('\n');
    contents.push_str(&body);
    Ok(ClientConfig {
        client,
        files: vec![GeneratedFile {
            path: PODMAN_DROPIN_PATH.into(),
            contents,
            on_existing: OnExisting::ReplaceIfGenerated,
        }],
        snippets: Vec::new(),
        notes: podman_notes(&plan),
    })
}

/// The `[[registry]]` table of one entry: ferry as its mirror (or its only location).
fn registry(plan: &Plan, e: &Entry) -> Registry {
    let mirror = &plan.mirror;
    let authority = mirror.authority();
    let mirror_location = match plan.dedicated_to {
        Some(_) => authority.clone(),
        None => format!("{authority}/{}", e.name),
    };
    if !plan.direct_fallback {
        // ferry is the registry's only location: no mirror entry, no direct access
        return Registry {
            prefix: e.name.clone(),
            location: mirror_location,
            insecure: mirror.is_plain_http(),
            mirror: Vec::new(),
        };
    }
    let (location, insecure) = if e.fallback_is_default {
        // containers/image itself maps docker.io to registry-1.docker.io
        (e.name.clone(), false)
    } else {
        (e.fallback.authority(), e.fallback.is_plain_http())
    };
    Registry {
        prefix: e.name.clone(),
        location,
        insecure,
        mirror: vec![Mirror {
            location: mirror_location,
            insecure: mirror.is_plain_http(),
        }],
    }
}

/// The comment block at the top of the file: what it is, where it goes, how pulls go.
fn header(plan: &Plan, client: crate::Client) -> String {
    let mirror = &plan.mirror;
    let authority = mirror.authority();
    let mut head = vec![
        format!(
            "{} {client}` for ferry at {}.",
            &crate::GENERATED_MARKER[2..],
            mirror.origin()
        ),
        "containers-registries.conf(5), version 2, read by Podman, Buildah, Skopeo and CRI-O."
            .to_owned(),
        format!("Install as /{PODMAN_DROPIN_PATH}: a drop-in whose entries replace those with"),
        "the same prefix in /etc/containers/registries.conf.".to_owned(),
    ];
    let via = match &plan.dedicated_to {
        Some(u) => format!("ferry, which routes this host to {u},"),
        None => format!("ferry's path prefix ({authority}/<registry>)"),
    };
    head.push(if plan.direct_fallback {
        format!("Pulls go through {via} first, then to the registry directly.")
    } else {
        format!("Pulls go through {via} only: ferry is each registry's location.")
    });
    head.push(
        "Short names (podman pull alpine) also need unqualified-search-registries = [\"docker.io\"]"
            .to_owned(),
    );
    head.push("in registries.conf; it is left out here so that your own setting stays.".to_owned());
    if mirror.is_plain_http() {
        head.push("ferry is plain HTTP here, hence insecure = true for it.".to_owned());
    }
    head.iter().map(|l| format!("# {l}\n")).collect()
}

/// How to install and check the file.
fn podman_notes(plan: &Plan) -> Vec<String> {
    let authority = plan.mirror.authority();
    let mirror = &plan.mirror;
    let mut notes = vec![
        format!(
            "install as /{PODMAN_DROPIN_PATH}; Podman, Buildah and Skopeo read it on their next \
             run, CRI-O after `systemctl restart crio`"
        ),
        "check with `podman info` (registries) or `podman --log-level=debug pull ...`, which \
         prints each location it tries"
            .to_owned(),
        "short names such as `podman pull alpine` resolve only through \
         unqualified-search-registries (or short-name aliases) in your registries.conf; use \
         fully qualified names like docker.io/library/alpine to be sure they go through ferry"
            .to_owned(),
        "skopeo only reads another file when given --registries-conf FILE".to_owned(),
    ];
    if mirror.is_plain_http() {
        notes.push(format!(
            "{authority} is plain HTTP: insecure = true lets containers/image use HTTP for it"
        ));
    }
    notes.extend(skipped_notes(plan));
    notes
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
            ],
            Some("docker.io"),
        )
        .unwrap()
    }

    fn registries(c: &ClientConfig) -> Vec<toml::Value> {
        assert_eq!(c.files.len(), 1);
        assert_eq!(
            c.files[0].path.to_str(),
            Some("etc/containers/registries.conf.d/ferry.conf")
        );
        let t: toml::Table = c.files[0].contents.parse().unwrap();
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["registry"],
            "only [[registry]] entries"
        );
        t["registry"].as_array().unwrap().clone()
    }

    #[test]
    fn path_prefix_mirrors_over_http() {
        let c = podman(&target("http://127.0.0.1:5002")).unwrap();
        let regs = registries(&c);
        let prefixes: Vec<_> = regs.iter().map(|r| r["prefix"].as_str().unwrap()).collect();
        assert_eq!(
            prefixes,
            [
                "docker.io",
                "index.docker.io",
                "ghcr.io",
                "registry.k8s.io",
                "k8s.gcr.io"
            ]
        );
        let ghcr: toml::Value = toml::Value::Table(toml::toml! {
            prefix = "ghcr.io"
            location = "ghcr.io"
            [[mirror]]
            location = "127.0.0.1:5002/ghcr.io"
            insecure = true
        });
        assert_eq!(regs[2], ghcr);
        assert_eq!(
            regs[0]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:5002/docker.io")
        );
        assert_eq!(regs[0]["location"].as_str(), Some("docker.io"));
        assert!(c.files[0].contents.starts_with(crate::GENERATED_MARKER));
        assert!(c.files[0].contents.contains("[[registry.mirror]]"));
    }

    #[test]
    fn https_mirror_is_not_insecure() {
        let c = podman(&target("https://mirror.example.com")).unwrap();
        for r in registries(&c) {
            let m = &r["mirror"][0];
            assert!(m.get("insecure").is_none(), "{r}");
            assert!(r.get("insecure").is_none(), "{r}");
            assert!(
                m["location"]
                    .as_str()
                    .unwrap()
                    .starts_with("mirror.example.com/")
            );
        }
    }

    #[test]
    fn without_direct_fallback_ferry_is_the_location() {
        let t = target("http://127.0.0.1:5002").with_direct_fallback(false);
        let c = podman(&t).unwrap();
        let regs = registries(&c);
        let ghcr = toml::Value::Table(toml::toml! {
            prefix = "ghcr.io"
            location = "127.0.0.1:5002/ghcr.io"
            insecure = true
        });
        assert_eq!(regs[2], ghcr);
        assert!(regs.iter().all(|r| r.get("mirror").is_none()));
        assert!(c.files[0].contents.contains("through ferry's path prefix"));
        assert!(c.files[0].contents.contains("only"));
    }

    #[test]
    fn crio_gets_the_same_file_with_its_own_instructions() {
        let t = target("http://127.0.0.1:5002");
        let p = podman(&t).unwrap();
        let c = crio(&t).unwrap();
        assert_eq!(c.client, crate::Client::Crio);
        assert_eq!(registries(&c), registries(&p));
        assert!(
            c.files[0]
                .contents
                .starts_with("# Generated by `ferry client-config crio`")
        );
        let notes = c.notes.join("\n");
        assert!(notes.contains("systemctl restart crio"), "{notes}");
        assert!(notes.contains("unqualified-search-registries"), "{notes}");
        assert!(!notes.contains("skopeo"), "{notes}");
    }

    #[test]
    fn fallback_override_and_dedicated_host() {
        let t = target("http://127.0.0.1:5002")
            .with_fallback_server("ghcr.io", "http://127.0.0.1:1")
            .unwrap();
        let regs = registries(&podman(&t).unwrap());
        assert_eq!(regs[2]["location"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(regs[2]["insecure"].as_bool(), Some(true));

        let t = target("https://k8s.mirror.example.com")
            .with_hosts([("k8s.mirror.example.com", "registry.k8s.io")])
            .unwrap();
        let regs = registries(&podman(&t).unwrap());
        assert_eq!(regs.len(), 2);
        for r in &regs {
            assert_eq!(
                r["mirror"][0]["location"].as_str(),
                Some("k8s.mirror.example.com")
            );
        }
    }
}
