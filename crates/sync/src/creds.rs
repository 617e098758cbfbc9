//! Registry credentials for `ferry copy`: `USER:PASSWORD` from the command line, or the Docker
//! config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) the way `docker
//! login` writes it: `auths.<registry>.auth` (base64 of `user:password`) or
//! `username`/`password`, and credential helpers (`credHelpers.<registry>` or `credsStore`,
//! run as `docker-credential-<name> get`).

use std::path::PathBuf;

use base64::Engine as _;
use ferry_oci::image_ref::DOCKER_HUB;
use serde::Deserialize;

/// A username and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Username.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` (the password may contain `:`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => Err("credentials must be USER:PASSWORD".into()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Where Docker keeps its config file.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` from the Docker config file at `path` (none if it is missing).
pub fn from_docker_config_file(
    path: &std::path::Path,
    registry: &str,
) -> Result<Option<Credentials>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            from_docker_config(&text, registry).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Credentials for `registry` from a Docker config document.
pub fn from_docker_config(text: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let config: DockerConfig =
        serde_json::from_str(text).map_err(|e| format!("not a Docker config file: {e}"))?;
    let want = normalize(registry);
    let entry = config.auths.iter().find(|(k, _)| normalize(k) == want);
    if let Some((key, e)) = entry {
        if let Some(c) = decode_entry(e)? {
            return Ok(Some(c));
        }
        if e.identitytoken.is_some() {
            return Err(format!(
                "the entry for {key} holds an identity token, which ferry cannot use; pass credentials with --src-creds/--dst-creds"
            ));
        }
    }
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize(k) == want)
        .map(|(_, v)| v.clone())
        .or(config.creds_store);
    match helper {
        Some(h) => run_helper(&h, &helper_server(registry)),
        None => Ok(None),
    }
}

fn decode_entry(e: &AuthEntry) -> Result<Option<Credentials>, String> {
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("bad base64 in an `auth` entry: {e}"))?;
        let text = String::from_utf8(raw).map_err(|_| "an `auth` entry is not UTF-8")?;
        return Credentials::parse(&text).map(Some);
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/x` -> `host:5000`.
fn normalize(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// The server name credential helpers know a registry by.
fn helper_server(registry: &str) -> String {
    if normalize(registry) == DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_owned()
    }
}

/// Runs `docker-credential-<helper> get` with the server on stdin.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    if !out.status.success() {
        // Helpers answer "credentials not found in native keychain" with an error status.
        return Ok(None);
    }
    let a: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("credential helper {program} answered garbage: {e}"))?;
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_entries() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let text = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
            "127.0.0.1:5001":{{"username":"bob","password":"pw"}},
            "https://ghcr.io":{{"identitytoken":"xyz"}}}}}}"#
        );
        let hub = from_docker_config(&text, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3:cret")
        );
        let local = from_docker_config(&text, "127.0.0.1:5001")
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "bob");
        assert!(from_docker_config(&text, "quay.io").unwrap().is_none());
        assert!(from_docker_config(&text, "ghcr.io").is_err());
        assert!(from_docker_config("nope", "x").is_err());
    }

    #[test]
    fn flags() {
        let c = Credentials::parse("u:p:q").unwrap();
        assert_eq!(c.password, "p:q");
        assert!(Credentials::parse("nopassword").is_err());
        assert!(!format!("{c:?}").contains("p:q"));
    }
}
