//! Docker Engine: `/etc/docker/daemon.json` with `registry-mirrors` (and `insecure-registries`
//! for a plain-HTTP mirror).
//!
//! Docker uses `registry-mirrors` for Docker Hub images only, and asks the mirror for
//! `/v2/<repo>/...` with no registry name, so ferry must answer those from Docker Hub: either
//! its `default_upstream` is Docker Hub, or the mirror URL's host is routed to Docker Hub by
//! ferry's `hosts:` map. The generator refuses anything else rather than produce a file that
//! would silently serve the wrong images.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{ClientConfig, Error, GeneratedFile, OnExisting, Plan, Target, skipped_notes};

/// Where `daemon.json` lives, relative to the filesystem root.
pub const DAEMON_JSON_PATH: &str = "etc/docker/daemon.json";

const MIRRORS_KEY: &str = "registry-mirrors";
const INSECURE_KEY: &str = "insecure-registries";

/// The keys ferry sets in `daemon.json`.
#[derive(Serialize)]
struct DaemonJson {
    #[serde(rename = "registry-mirrors")]
    registry_mirrors: Vec<String>,
    #[serde(rename = "insecure-registries", skip_serializing_if = "Vec::is_empty")]
    insecure_registries: Vec<String>,
}

/// Generates `daemon.json` for Docker Engine.
pub fn docker(target: &Target) -> Result<ClientConfig, Error> {
    let plan = target.plan()?;
    check_serves_docker_hub(&plan)?;
    Ok(ClientConfig {
        client: crate::Client::Docker,
        files: vec![GeneratedFile {
            path: DAEMON_JSON_PATH.into(),
            contents: daemon_json(&plan),
            on_existing: OnExisting::MergeDaemonJson,
        }],
        snippets: Vec::new(),
        notes: docker_notes(&plan),
    })
}

/// Docker sends only Docker Hub pulls to `registry-mirrors`, with no registry name: the mirror
/// address must answer those from Docker Hub.
fn check_serves_docker_hub(plan: &Plan) -> Result<(), Error> {
    let mirror = &plan.mirror;
    let authority = mirror.authority();
    let (serves, how) = match &plan.dedicated_to {
        Some(u) => (
            Some(u.clone()),
            format!("its hosts: map routes {} to {u}", mirror.host()),
        ),
        None => (
            plan.default_upstream.clone(),
            "its default_upstream".to_owned(),
        ),
    };
    match serves {
        Some(u) if plan.upstream_is_docker_hub(&u) => {}
        Some(u) => {
            return Err(Error::DockerNeedsDockerHub(format!(
                "Docker sends only Docker Hub pulls to registry-mirrors, as /v2/<repo> requests \
                 with no registry name, but ferry at {mirror} answers those from {u} ({how}), so \
                 Docker would get {u} images for Docker Hub names. Set default_upstream: \
                 docker.io in ferry's configuration, or give a --mirror URL whose host ferry \
                 routes to docker.io; images of {u} can still be pulled as \
                 {authority}/{u}/<repo>:<tag>"
            )));
        }
        None => {
            return Err(Error::DockerNeedsDockerHub(format!(
                "ferry has no default_upstream, so it cannot answer Docker's registry-mirrors \
                 requests (/v2/<repo> with no registry name) and Docker would always fall back \
                 to Docker Hub. Set default_upstream: docker.io; other registries can be pulled \
                 without daemon.json as {authority}/<registry>/<repo>:<tag>"
            )));
        }
    }
    Ok(())
}

/// The `daemon.json` text (sorted keys, as a merge writes it).
fn daemon_json(plan: &Plan) -> String {
    let mirror = &plan.mirror;
    let authority = mirror.authority();
    let daemon = DaemonJson {
        registry_mirrors: vec![mirror.origin()],
        insecure_registries: if mirror.is_plain_http() {
            vec![authority.clone()]
        } else {
            Vec::new()
        },
    };
    // Through a `Value`, whose map is sorted, so the text equals what a merge produces.
    let value = serde_json::to_value(&daemon).expect("a struct of strings serializes");
    let mut contents = serde_json::to_string_pretty(&value).expect("a JSON value serializes");
    contents.push('\n');
    contents
}

/// What to do with the file, and what Docker does and does not do with a mirror.
fn docker_notes(plan: &Plan) -> Vec<String> {
    let mirror = &plan.mirror;
    let authority = mirror.authority();
    let mut notes = vec![
        format!(
            "merge into /{DAEMON_JSON_PATH} (--write merges, keeping your other keys), then \
             restart dockerd (systemctl restart docker) and check `docker info`: Registry \
             Mirrors lists {}/",
            mirror.origin()
        ),
        "Docker uses registry-mirrors for Docker Hub images only, and goes to Docker Hub \
         directly whenever the mirror fails or answers an error"
            .to_owned(),
        "Docker sends your Docker Hub login (docker login) to the mirror: use a mirror you trust"
            .to_owned(),
        "dockerd refuses to start when a setting is both in daemon.json and a command-line flag \
         (--registry-mirror, --insecure-registry in its systemd unit): keep one"
            .to_owned(),
    ];
    if !plan.direct_fallback {
        notes.push(
            "Docker cannot be told to never go to Docker Hub directly: block registry-1.docker.io \
             at the network level if it must not"
                .to_owned(),
        );
    }
    if plan.dedicated_to.is_none() {
        let others: Vec<String> = plan
            .entries
            .iter()
            .filter(|e| !crate::is_docker_hub(&e.name))
            .map(|e| format!("{authority}/{}/<repo>:<tag>", e.name))
            .collect();
        if !others.is_empty() {
            notes.push(format!(
                "images of other registries are pulled through ferry by naming it: {}",
                others.join(", ")
            ));
        }
    }
    if mirror.is_plain_http() {
        notes.push(format!(
            "{authority} is plain HTTP, so it is listed in insecure-registries (needed for \
             pulls that name it, e.g. {authority}/ghcr.io/<repo>)"
        ));
    } else {
        notes.push(format!(
            "if ferry's certificate is from a private CA, put the CA in \
             /etc/docker/certs.d/{authority}/ca.crt"
        ));
    }
    notes.extend(skipped_notes(plan));
    notes
}

/// The strings of the array at `key` (none when absent or null).
fn strings(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{key:?} has a value that is not a string: {v}"))
            })
            .collect(),
        Some(other) => Err(format!("{key:?} is not an array: {other}")),
    }
}

/// Merges ferry's generated `daemon.json` into an existing one and returns the new text.
///
/// Keeps every other key of the existing object. `registry-mirrors` becomes ferry's mirror
/// first, followed by the existing mirrors that differ from it (compared without a trailing
/// `/`, case-insensitively); `insecure-registries` becomes the union, existing entries
/// first. An empty (or whitespace-only) existing file counts as `{}`. Merging is idempotent.
/// Keys come out sorted (the JSON map is ordered by key). Errors when the existing text is
/// not a JSON object or one of those two keys is not an array of strings; nothing should
/// be written then.
pub fn merge_daemon_json(existing: &str, generated: &str) -> Result<String, String> {
    let mut current: Map<String, Value> = if existing.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(existing) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("it is JSON but not an object".to_owned()),
            Err(e) => return Err(format!("it is not valid JSON: {e}")),
        }
    };
    let ours: Map<String, Value> = match serde_json::from_str(generated) {
        Ok(Value::Object(m)) => m,
        _ => return Err("the generated daemon.json is not a JSON object".to_owned()),
    };

    let same_mirror = |a: &str, b: &str| {
        a.trim_end_matches('/')
            .eq_ignore_ascii_case(b.trim_end_matches('/'))
    };

    let existing_mirrors = strings(&current, MIRRORS_KEY)?;
    let mut mirrors = strings(&ours, MIRRORS_KEY)?;
    for m in existing_mirrors {
        if !mirrors.iter().any(|o| same_mirror(o, &m)) {
            mirrors.push(m);
        }
    }
    current.insert(
        MIRRORS_KEY.to_owned(),
        Value::Array(mirrors.into_iter().map(Value::String).collect()),
    );

    let mut insecure = strings(&current, INSECURE_KEY)?;
    for i in strings(&ours, INSECURE_KEY)? {
        if !insecure.iter().any(|e| e.eq_ignore_ascii_case(&i)) {
            insecure.push(i);
        }
    }
    if !insecure.is_empty() {
        current.insert(
            INSECURE_KEY.to_owned(),
            Value::Array(insecure.into_iter().map(Value::String).collect()),
        );
    }

    let mut out =
        serde_json::to_string_pretty(&Value::Object(current)).expect("a JSON value serializes");
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Upstream;
    use serde_json::json;

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

    fn parsed(c: &ClientConfig) -> Value {
        assert_eq!(c.files.len(), 1);
        assert_eq!(c.files[0].path.to_str(), Some("etc/docker/daemon.json"));
        serde_json::from_str(&c.files[0].contents).unwrap()
    }

    #[test]
    fn plain_http_mirror() {
        let c = docker(&target("http://127.0.0.1:5002")).unwrap();
        assert_eq!(
            parsed(&c),
            json!({
                "registry-mirrors": ["http://127.0.0.1:5002"],
                "insecure-registries": ["127.0.0.1:5002"],
            })
        );
        assert!(c.files[0].contents.ends_with("}\n"));
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("127.0.0.1:5002/ghcr.io/<repo>:<tag>"),
            "{notes}"
        );
        assert!(
            notes.contains("127.0.0.1:5002/k8s.gcr.io/<repo>:<tag>"),
            "{notes}"
        );
        assert!(!notes.contains("127.0.0.1:5002/index.docker.io"), "{notes}");
        assert!(notes.contains("Docker Hub login"), "{notes}");
    }

    #[test]
    fn https_mirror_has_no_insecure_entry() {
        let c = docker(&target("https://mirror.example.com")).unwrap();
        assert_eq!(
            parsed(&c),
            json!({"registry-mirrors": ["https://mirror.example.com"]})
        );
        assert!(
            c.notes
                .join("\n")
                .contains("/etc/docker/certs.d/mirror.example.com/ca.crt")
        );
    }

    #[test]
    fn no_direct_fallback_is_explained_for_docker() {
        let c = docker(&target("http://127.0.0.1:5002").with_direct_fallback(false)).unwrap();
        assert!(
            c.notes
                .join("\n")
                .contains("cannot be told to never go to Docker Hub")
        );
    }

    #[test]
    fn default_upstream_must_be_docker_hub() {
        let mut t = target("http://127.0.0.1:5002");
        t.default_upstream = Some("ghcr.io".into());
        let e = docker(&t).unwrap_err().to_string();
        assert!(e.contains("answers those from ghcr.io"), "{e}");
        assert!(e.contains("default_upstream: docker.io"), "{e}");
        t.default_upstream = None;
        let e = docker(&t).unwrap_err().to_string();
        assert!(e.contains("no default_upstream"), "{e}");
        // an alias of Docker Hub as the default is fine
        t.default_upstream = Some("index.docker.io".into());
        docker(&t).unwrap();
    }

    #[test]
    fn host_routed_mirror() {
        let mut t = target("https://docker.mirror.example.com");
        t.default_upstream = Some("ghcr.io".into());
        let t = t
            .with_hosts([("docker.mirror.example.com", "docker.io")])
            .unwrap();
        let c = docker(&t).unwrap();
        assert_eq!(
            parsed(&c),
            json!({"registry-mirrors": ["https://docker.mirror.example.com"]})
        );
        // the dedicated address serves Docker Hub only: no path-prefix advice
        assert!(!c.notes.join("\n").contains("/ghcr.io/"));

        let t = target("https://ghcr.mirror.example.com")
            .with_hosts([("ghcr.mirror.example.com", "ghcr.io")])
            .unwrap();
        let e = docker(&t).unwrap_err().to_string();
        assert!(
            e.contains("hosts: map routes ghcr.mirror.example.com to ghcr.io"),
            "{e}"
        );
    }

    #[test]
    fn merge_keeps_other_keys_and_existing_mirrors() {
        let ours = docker(&target("http://127.0.0.1:5002")).unwrap().files[0]
            .contents
            .clone();
        let existing = r#"{
            "log-driver": "journald",
            "registry-mirrors": ["https://other.example/", "http://127.0.0.1:5002/"],
            "insecure-registries": ["10.0.0.1:5000"],
            "features": {"buildkit": true}
        }"#;
        let merged = merge_daemon_json(existing, &ours).unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(
            v,
            json!({
                "log-driver": "journald",
                "registry-mirrors": ["http://127.0.0.1:5002", "https://other.example/"],
                "insecure-registries": ["10.0.0.1:5000", "127.0.0.1:5002"],
                "features": {"buildkit": true},
            })
        );
        // idempotent
        assert_eq!(merge_daemon_json(&merged, &ours).unwrap(), merged);
        // empty file == {}
        let fresh: Value = serde_json::from_str(&merge_daemon_json(" \n", &ours).unwrap()).unwrap();
        assert_eq!(fresh, serde_json::from_str::<Value>(&ours).unwrap());
    }

    #[test]
    fn merge_refuses_what_it_cannot_understand() {
        let ours = docker(&target("https://m.example")).unwrap().files[0]
            .contents
            .clone();
        for (bad, words) in [
            ("[1]", "not an object"),
            ("{", "not valid JSON"),
            (r#"{"registry-mirrors": "https://x"}"#, "not an array"),
            (r#"{"insecure-registries": [1]}"#, "not a string"),
        ] {
            let e = merge_daemon_json(bad, &ours).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
        // an https mirror adds no insecure-registries key
        let v: Value =
            serde_json::from_str(&merge_daemon_json(r#"{"debug": true}"#, &ours).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"debug": true, "registry-mirrors": ["https://m.example"]})
        );
    }
}
