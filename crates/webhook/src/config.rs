//! The webhook's configuration file, as users write it (YAML, usually a mounted ConfigMap).
//!
//! This module only reads and type-checks the file: every key has a default and an unknown key
//! is an error that names it. Turning the values into rewrite rules and namespace filters (and
//! rejecting bad hosts or globs) is [`crate::settings`]'s job, so both the first load and every
//! hot reload go through the same two steps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the config could not be read or parsed, or which key holds a bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read webhook config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed, a value has the wrong type, or a key is unknown.
    #[error("invalid webhook config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message (names the key and the line).
        message: String,
    },
    /// A value parsed but makes no sense (bad host, bad glob, bad URL).
    #[error("invalid webhook config: `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `registries.docker.io`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Address the HTTPS server listens on (changing it needs a restart).
    pub listen: SocketAddr,
    /// Serving certificate and key (reloaded when the files change).
    pub tls: TlsFiles,
    /// Master switch: `false` admits every pod unchanged.
    pub enabled: bool,
    /// The ferry mirror, `host[:port][/prefix]`: images become `<mirror>/<registry>/<repo>`.
    pub mirror: Option<String>,
    /// Per-registry overrides, registry -> `host[:port][/prefix]`: images become `<host>/<repo>`.
    pub registries: BTreeMap<String, String>,
    /// Globs of the registries to rewrite; absent means all.
    pub rewrite_registries: Option<Vec<String>>,
    /// Globs of registries never to rewrite (checked after `rewrite_registries`).
    pub exclude_registries: Vec<String>,
    /// Globs of namespaces whose pods are rewritten.
    pub include_namespaces: Vec<String>,
    /// Globs of namespaces left alone (wins over `include_namespaces`).
    pub exclude_namespaces: Vec<String>,
    /// Optional health gate: stop rewriting while this URL does not answer 2xx.
    pub mirror_health: Option<HealthConfig>,
}

/// Paths of the PEM files the HTTPS server uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`tls.crt` of a kubernetes.io/tls Secret).
    pub cert: PathBuf,
    /// Private key (`tls.key`).
    pub key: PathBuf,
}

/// How the mirror's health is polled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// URL answering 2xx while the mirror works, e.g. `https://mirror.example.com/healthz`.
    pub url: String,
    /// Time between probes.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// Time limit of one probe.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed probes after which the mirror counts as unhealthy.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Extra CA certificate (PEM) to trust for the probe, for a mirror with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Default `listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default `tls.cert` (where the Deployment mounts the Secret).
pub const DEFAULT_TLS_CERT: &str = "/etc/ferry/tls/tls.crt";
/// Default `tls.key`.
pub const DEFAULT_TLS_KEY: &str = "/etc/ferry/tls/tls.key";

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_failure_threshold() -> u32 {
    2
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            tls: TlsFiles::default(),
            enabled: true,
            mirror: None,
            registries: BTreeMap::new(),
            rewrite_registries: None,
            exclude_registries: Vec::new(),
            include_namespaces: vec!["*".to_owned()],
            exclude_namespaces: vec!["kube-system".to_owned()],
            mirror_health: None,
        }
    }
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            cert: DEFAULT_TLS_CERT.into(),
            key: DEFAULT_TLS_KEY.into(),
        }
    }
}

impl WebhookConfig {
    /// Parses YAML text; an empty document means all defaults.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(WebhookConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }
}

/// `humantime` durations (`500ms`, `5s`, `1m`) in the YAML.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebhookConfig, ConfigError> {
        WebhookConfig::from_yaml(text, Path::new("test.yaml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, WebhookConfig::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.exclude_namespaces, ["kube-system"]);
        assert!(c.enabled);
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            "listen: 127.0.0.1:9443\n\
             tls: {cert: /a.crt, key: /a.key}\n\
             enabled: false\n\
             mirror: mirror.example.com\n\
             registries:\n  docker.io: docker.mirror.example.com\n\
             rewrite_registries: [docker.io, '*.io']\n\
             exclude_registries: [registry.corp]\n\
             include_namespaces: [team-*]\n\
             exclude_namespaces: []\n\
             mirror_health: {url: 'http://m/healthz', interval: 1s, timeout: 500ms}\n",
        )
        .unwrap();
        assert!(!c.enabled);
        assert_eq!(c.registries["docker.io"], "docker.mirror.example.com");
        let h = c.mirror_health.unwrap();
        assert_eq!(h.interval, Duration::from_secs(1));
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert_eq!(h.failure_threshold, 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("mirror: m.example.com\nmirrror_health: {}\n").unwrap_err();
        assert!(e.to_string().contains("mirrror_health"), "{e}");
        let e = parse("tls: {cert: /a, kee: /b}\n").unwrap_err();
        assert!(e.to_string().contains("kee"), "{e}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let e = parse("mirror_health: {url: 'http://m', interval: soon}\n").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
