//! BuildKit (`buildkitd`, and buildx builders with the `docker-container` or `kubernetes`
//! driver): `[registry."<name>"] mirrors = ["<ferry host:port>"]` in `buildkitd.toml` for every
//! registry ferry serves, plus a `[registry."<ferry host:port>"]` table for how to reach ferry
//! (`http = true` for plain HTTP, `ca = [...]` for a private CA).
//!
//! What BuildKit does with it (read from its `util/resolver` source): for an image of a
//! registry with `mirrors`, it asks each mirror in order and then the registry itself, always
//! (there is no way to leave the registry out). It pulls with containerd's registry client,
//! which adds `?ns=<registry>` to every request sent to a host that is not the registry, so
//! ferry's root URL serves every registry, as for containerd. The scheme and TLS settings of a
//! mirror come from the table named after the mirror host, not from the registry's table.
//! A mirror is `host[:port]`: no scheme. BuildKit 0.12 and later also accept a path
//! (`host/prefix`, asked as `/v2/prefix/<repo>`), older ones do not; ferry needs none.
//!
//! Docker Engine's built-in builder (`docker build`) does not read this file: it uses
//! `registry-mirrors` from `daemon.json` (see [`crate::docker`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::merge::ours_first;
use crate::{Client, ClientConfig, Error, GeneratedFile, OnExisting, Plan, Target, skipped_notes};

/// Where rootful `buildkitd` reads its configuration, relative to the filesystem root.
pub const BUILDKITD_TOML_PATH: &str = "etc/buildkit/buildkitd.toml";

#[derive(Serialize)]
struct BuildkitdToml {
    registry: BTreeMap<String, RegistryTable>,
}

/// One `[registry."<host>"]` table (BuildKit's `RegistryConfig`: `mirrors`, `http`,
/// `insecure`, `ca`, `keypair`, `tlsconfigdir`).
#[derive(Serialize)]
struct RegistryTable {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ca: Vec<String>,
}

/// Generates `buildkitd.toml` registry tables for BuildKit.
pub fn buildkit(target: &Target) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    let mirror = plan.mirror.authority();
    let mut registry = BTreeMap::new();
    for e in &plan.entries {
        let table = RegistryTable {
            mirrors: vec![mirror.clone()],
            http: None,
            ca: Vec::new(),
        };
        registry.insert(e.name.clone(), table);
    }
    let reach = RegistryTable {
        mirrors: Vec::new(),
        http: plan.mirror.is_plain_http().then_some(true),
        ca: plan.ca_file.iter().cloned().collect(),
    };
    if reach.http.is_some() || !reach.ca.is_empty() {
        registry.insert(mirror.clone(), reach);
    }
    let body = toml::to_string(&BuildkitdToml { registry }).expect("tables of strings serialize");
    let mut contents = crate::header(Client::Buildkit, &plan.mirror, &header_lines(&plan));
    contents.push_str(&body);
    Ok(ClientConfig {
        client: Client::Buildkit,
        files: vec![GeneratedFile {
            path: BUILDKITD_TOML_PATH.into(),
            contents,
            on_existing: OnExisting::MergeBuildkitdToml,
        }],
        snippets: Vec::new(),
        notes: notes(&plan),
    })
}

fn header_lines(plan: &Plan) -> Vec<String> {
    let mut lines = vec![
        format!(
            "buildkitd.toml: /{BUILDKITD_TOML_PATH} (rootless: ~/.config/buildkit/buildkitd.toml);"
        ),
        "for a buildx builder: docker buildx create --buildkitd-config FILE.".to_owned(),
        "BuildKit asks ferry first for each registry below, adding ?ns=<registry> to each"
            .to_owned(),
        "request (ferry routes on it), then the registry itself (it always does).".to_owned(),
    ];
    if plan.mirror.is_plain_http() {
        lines.push(format!(
            "ferry is plain HTTP: http = true in the table named after it ({}).",
            plan.mirror.authority()
        ));
    }
    lines
}

fn notes(plan: &Plan) -> Vec<String> {
    let authority = plan.mirror.authority();
    let mut notes = vec![
        format!(
            "merge into /{BUILDKITD_TOML_PATH} (--write merges, keeping your other settings) and \
             restart buildkitd; for buildx: docker buildx create --driver docker-container \
             --buildkitd-config /{BUILDKITD_TOML_PATH} (a builder reads it only when created)"
        ),
        "Docker's built-in builder (plain `docker build`) ignores buildkitd.toml: it uses \
         daemon.json registry-mirrors (`ferry client-config docker`)"
            .to_owned(),
        format!(
            "mirrors are host[:port] without a scheme; how to reach ferry (http, ca) is set in \
             [registry.\"{authority}\"], the table named after the mirror"
        ),
    ];
    if !plan.direct_fallback {
        notes.push(
            "BuildKit cannot be told to never go to a registry directly: after its mirrors it \
             always tries the registry itself; block the registries at the network level if it \
             must not"
                .to_owned(),
        );
    }
    if !plan.mirror.is_plain_http() && plan.ca_file.is_none() {
        notes.push(format!(
            "if ferry's certificate is from a private CA, generate with --ca /path/to/ca.crt \
             (it goes in [registry.\"{authority}\"] ca = [...])"
        ));
    }
    notes.extend(skipped_notes(plan));
    notes
}

/// Merges ferry's generated `buildkitd.toml` into an existing one and returns the new text.
///
/// Keeps every other setting. In each `[registry."<name>"]` table that ferry generates,
/// `mirrors` becomes ferry first, then the existing mirrors that differ, and ferry's other
/// keys (`http`, `ca`) are set while the table's other keys stay. An empty existing file
/// counts as empty. When nothing changes the existing text is returned as is (comments
/// kept); otherwise the result is re-serialized, which drops comments (`--write` keeps the
/// previous file as a backup). Errors when the existing text is not TOML or a `registry`
/// entry that ferry sets is not a table.
pub fn merge_buildkitd_toml(existing: &str, generated: &str) -> Result<String, String> {
    let mut current: toml::Table = existing
        .parse()
        .map_err(|e| format!("it is not valid TOML: {e}"))?;
    let ours: toml::Table = generated
        .parse()
        .map_err(|e| format!("the generated buildkitd.toml is not TOML: {e}"))?;
    let before = current.clone();
    let registries = current
        .entry("registry")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or("its `registry` key is not a table")?;
    let empty = toml::Table::new();
    let our_registries = ours
        .get("registry")
        .and_then(|r| r.as_table())
        .unwrap_or(&empty);
    for (name, our_table) in our_registries {
        let our_table = our_table
            .as_table()
            .ok_or("a generated registry is not a table")?;
        let table = registries
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("its registry.\"{name}\" is not a table"))?;
        merge_registry_table(table, our_table, name)?;
    }
    if current == before {
        return Ok(existing.to_owned());
    }
    Ok(toml::to_string(&current).expect("a TOML table serializes"))
}

/// Sets ferry's keys in one `[registry."<name>"]` table; `mirrors` keeps the others after ours.
fn merge_registry_table(
    table: &mut toml::Table,
    ours: &toml::Table,
    name: &str,
) -> Result<(), String> {
    for (key, value) in ours {
        if key != "mirrors" {
            table.insert(key.clone(), value.clone());
            continue;
        }
        let strings = |v: Option<&toml::Value>| -> Result<Vec<String>, String> {
            let Some(v) = v else { return Ok(Vec::new()) };
            let items = v
                .as_array()
                .ok_or(format!("registry.\"{name}\".mirrors is not an array"))?;
            items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_owned).ok_or(format!(
                        "registry.\"{name}\".mirrors has a value that is not a string: {i}"
                    ))
                })
                .collect()
        };
        let merged = ours_first(
            &strings(Some(value))?,
            &strings(table.get("mirrors"))?,
            |a, b| a.eq_ignore_ascii_case(b),
        );
        table.insert(
            "mirrors".into(),
            toml::Value::Array(merged.into_iter().map(toml::Value::String).collect()),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "buildkit_tests.rs"]
mod tests;
