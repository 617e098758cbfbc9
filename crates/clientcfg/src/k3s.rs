//! k3s and RKE2 nodes: `/etc/rancher/{k3s,rke2}/registries.yaml` with a `mirrors:` entry per
//! registry ferry serves, whose `endpoint` is ferry's root URL.
//!
//! k3s turns this file into containerd registry configuration when it starts, so ferry sees
//! what it sees from containerd: requests with `?ns=<registry>`, on which it routes. No
//! `rewrite` is needed for that (k3s has `rewrite` since v1.21.0+k3s1; it changes the
//! repository path sent to an endpoint, never to the registry's default endpoint). A private
//! CA for an `https://` ferry goes in `configs."<ferry host:port>".tls.ca_file`.
//!
//! containerd always tries the registry's own ("default") endpoint after the mirrors, unless
//! the node runs with `disable-default-registry-endpoint: true` (k3s from the January 2024
//! releases on: v1.26.13+k3s1, v1.27.10+k3s1, v1.28.6+k3s1, v1.29.1+k3s1); without direct
//! fallback that setting is printed as a snippet for the node's `config.yaml`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::merge::ours_first;
use crate::{
    Client, ClientConfig, Error, GeneratedFile, OnExisting, Plan, Snippet, Target, skipped_notes,
};

/// k3s's registries file, relative to the filesystem root.
pub const K3S_REGISTRIES_PATH: &str = "etc/rancher/k3s/registries.yaml";

/// RKE2's registries file (the same format), relative to the filesystem root.
pub const RKE2_REGISTRIES_PATH: &str = "etc/rancher/rke2/registries.yaml";

#[derive(Serialize)]
struct RegistriesYaml {
    mirrors: BTreeMap<String, Mirror>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Serialize)]
struct Mirror {
    endpoint: Vec<String>,
}

#[derive(Serialize)]
struct RegistryConfig {
    tls: Tls,
}

#[derive(Serialize)]
struct Tls {
    ca_file: String,
}

/// Generates `/etc/rancher/k3s/registries.yaml` for k3s nodes.
pub fn k3s(target: &Target) -> Result<ClientConfig, Error> {
    generate(target, Client::K3s, K3S_REGISTRIES_PATH, "k3s")
}

/// Generates `/etc/rancher/rke2/registries.yaml` for RKE2 nodes.
pub fn rke2(target: &Target) -> Result<ClientConfig, Error> {
    generate(target, Client::Rke2, RKE2_REGISTRIES_PATH, "rke2")
}

fn generate(
    target: &Target,
    client: Client,
    path: &str,
    dist: &str,
) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    let body = registries_yaml(&plan);
    let lines = [
        format!("/{path}: {dist} turns it into containerd registry configuration at start,"),
        "so restart the node's service after a change. containerd asks ferry first, adding"
            .to_owned(),
        "?ns=<registry> to each request (ferry routes on it; no rewrite is needed), then the"
            .to_owned(),
        "registry itself unless disable-default-registry-endpoint is set.".to_owned(),
    ];
    let mut contents = crate::header(client, &plan.mirror, &lines);
    contents.push_str(&body);
    let snippets = if plan.direct_fallback {
        Vec::new()
    } else {
        vec![no_fallback_snippet(dist)]
    };
    Ok(ClientConfig {
        client,
        files: vec![GeneratedFile {
            path: path.into(),
            contents,
            on_existing: OnExisting::MergeRegistriesYaml,
        }],
        snippets,
        notes: notes(&plan, path, dist),
    })
}

/// The YAML body: ferry as every entry's endpoint, and the CA config when there is one.
fn registries_yaml(plan: &Plan) -> String {
    let origin = plan.mirror.origin();
    let mirrors = plan
        .entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                Mirror {
                    endpoint: vec![origin.clone()],
                },
            )
        })
        .collect();
    let configs = plan
        .ca_file
        .iter()
        .map(|ca| {
            (
                plan.mirror.authority(),
                RegistryConfig {
                    tls: Tls {
                        ca_file: ca.clone(),
                    },
                },
            )
        })
        .collect();
    serde_saphyr::to_string(&RegistriesYaml { mirrors, configs })
        .expect("maps of strings serialize")
}

fn no_fallback_snippet(dist: &str) -> Snippet {
    Snippet {
        title: format!(
            "/etc/rancher/{dist}/config.yaml (or the --disable-default-registry-endpoint flag)"
        ),
        contents: "# containerd then never falls back to the registries' own endpoints (k3s\n\
                   # v1.26.13+k3s1, v1.27.10+k3s1, v1.28.6+k3s1, v1.29.1+k3s1 and later).\n\
                   disable-default-registry-endpoint: true\n"
            .to_owned(),
    }
}

fn notes(plan: &Plan, path: &str, dist: &str) -> Vec<String> {
    let mut notes = vec![
        format!(
            "install as /{path} on every node, servers included (--write / merges into an \
             existing one), then restart it (systemctl restart {})",
            if dist == "k3s" {
                "k3s, or k3s-agent on agents"
            } else {
                "rke2-server, or rke2-agent on agents"
            }
        ),
        "ferry routes containerd's ?ns=<registry> requests, so no `rewrite` is needed (k3s \
         supports rewrite since v1.21.0+k3s1; rewrites never apply to a registry's own endpoint)"
            .to_owned(),
    ];
    notes.push(if plan.direct_fallback {
        "containerd tries ferry first, then each registry's own endpoint (docker.io: \
         https://index.docker.io/v2)"
            .to_owned()
    } else {
        format!(
            "to stop containerd from falling back to the registries, add the printed \
             disable-default-registry-endpoint setting to /etc/rancher/{dist}/config.yaml \
             (k3s v1.26.13, v1.27.10, v1.28.6, v1.29.1 and later) and restart; older releases \
             always fall back"
        )
    });
    if !plan.mirror.is_plain_http() && plan.ca_file.is_none() {
        notes.push(
            "if ferry's certificate is from a private CA, generate with --ca /path/to/ca.crt \
             (configs.<ferry>.tls.ca_file)"
                .to_owned(),
        );
    }
    notes.extend(skipped_notes(plan));
    notes
}

/// Merges ferry's generated `registries.yaml` into an existing one and returns the new text.
///
/// Keeps every other mirror and config, and every other key of the entries ferry sets
/// (`rewrite`, `auth`). In each of ferry's `mirrors.<name>`, `endpoint` becomes ferry first,
/// then the existing endpoints that differ; ferry's `configs.<host>.tls.ca_file` is set. An
/// empty file counts as empty. When nothing changes the existing text is returned as is;
/// otherwise the result is re-serialized (comments are dropped; `--write` keeps a backup).
/// Errors when the existing text is not YAML or a key ferry sets has another type.
pub fn merge_registries_yaml(existing: &str, generated: &str) -> Result<String, String> {
    let parse = |text: &str, what: &str| -> Result<Value, String> {
        if text.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        match serde_saphyr::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(Value::Null) => Ok(Value::Object(Default::default())),
            Ok(_) => Err(format!("{what} is YAML but not a mapping")),
            Err(e) => Err(format!(
                "{what} is not valid YAML: {}",
                e.to_string().lines().next().unwrap_or("")
            )),
        }
    };
    let mut current = parse(existing, "it")?;
    let ours = parse(generated, "the generated file")?;
    let before = current.clone();
    for (name, mirror) in section(&ours, "mirrors") {
        let entry = table_at(&mut current, &["mirrors", &name])?;
        let theirs = strings(entry.get("endpoint"), &format!("mirrors.{name}.endpoint"))?;
        let mine = strings(mirror.get("endpoint"), "a generated endpoint")?;
        let merged = ours_first(&mine, &theirs, |a, b| {
            a.trim_end_matches('/')
                .eq_ignore_ascii_case(b.trim_end_matches('/'))
        });
        entry.insert(
            "endpoint".into(),
            merged.into_iter().map(Value::String).collect(),
        );
    }
    for (host, config) in section(&ours, "configs") {
        if let Some(ca) = config.pointer("/tls/ca_file") {
            table_at(&mut current, &["configs", &host, "tls"])?
                .insert("ca_file".into(), ca.clone());
        }
    }
    if current == before {
        return Ok(existing.to_owned());
    }
    Ok(serde_saphyr::to_string(&current).expect("a YAML value serializes"))
}

/// The entries of the mapping `key` of `v` (none when it is absent).
fn section(v: &Value, key: &str) -> Vec<(String, Value)> {
    v.get(key)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The mapping at `path` under `v`, created where missing; an error names a key on the way
/// that holds something else.
fn table_at<'a>(
    v: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut serde_json::Map<String, Value>, String> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        let map = cur
            .as_object_mut()
            .ok_or_else(|| format!("{} is not a mapping", path[..i].join(".")))?;
        let next = map.entry((*key).to_owned()).or_insert(Value::Null);
        if next.is_null() {
            *next = Value::Object(Default::default());
        }
        cur = next;
    }
    cur.as_object_mut()
        .ok_or_else(|| format!("{} is not a mapping", path.join(".")))
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{what} has a value that is not a string: {i}"))
            })
            .collect(),
        Some(other) => Err(format!("{what} is not a list: {other}")),
    }
}

#[cfg(test)]
#[path = "k3s_tests.rs"]
mod tests;
