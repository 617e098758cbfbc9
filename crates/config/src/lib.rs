//! # ferry-config: the configuration file
//!
//! One YAML file; every key has a default, unknown keys are errors naming the key, and
//! environment variables `FERRY_<SECTION>__<KEY>` override file values (so secrets stay out of
//! files). Loading happens in three steps, each with errors a person can act on:
//!
//! 1. the YAML text is parsed straight into [`Config`] (serde-saphyr reports the line);
//! 2. `FERRY_*` variables are laid over it ([`env`]);
//! 3. [`validate`] checks what types cannot (names, URLs, references between sections) and
//!    locates each problem by key and line.

pub mod access;
pub mod cache;
pub mod env;
pub mod fairuse;
pub mod hosts;
pub mod server;
pub mod storage;
pub mod ui;
pub mod units;
pub mod upstream;
pub mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use access::AccessConfig;
pub use cache::{CacheConfig, ColdRanges, KeepDeleted, Revalidate};
pub use server::{LogConfig, LogFormat, RedisConfig, ServerConfig, SyncConfig, TlsConfig};
pub use storage::{FsConfig, LocalCacheConfig, S3Config, StorageConfig, Unavailable};
pub use ui::UiConfig;
pub use units::{ByteSize, Dur, Secret};
pub use upstream::{Account, SegmentsConfig, UpstreamConfig};
pub use validate::{ConfigError, ConfigErrors};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Where cached content lives.
    pub storage: StorageConfig,
    /// Registries mirrored, keyed by the name clients use.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Upstream for `/v2/<repo>/...` requests that name no registry.
    pub default_upstream: String,
    /// Host header -> upstream name, for host-based routing.
    pub hosts: BTreeMap<String, String>,
    /// Cache policy.
    pub cache: CacheConfig,
    /// Access control and quotas.
    pub access: AccessConfig,
    /// Shared counters for several replicas.
    pub redis: Option<RedisConfig>,
    /// Scheduled pre-sync.
    pub sync: Option<SyncConfig>,
    /// TLS termination.
    pub tls: Option<TlsConfig>,
    /// Logging.
    pub log: LogConfig,
    /// HTTP server behaviour.
    pub server: ServerConfig,
    /// The web console.
    pub ui: UiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:5000".into(),
            storage: StorageConfig::default(),
            upstreams: upstream::default_upstreams(),
            default_upstream: "docker.io".into(),
            hosts: BTreeMap::new(),
            cache: CacheConfig::default(),
            access: AccessConfig::default(),
            redis: None,
            sync: None,
            tls: None,
            log: LogConfig::default(),
            server: ServerConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

impl Config {
    /// Loads and validates a config file, with `FERRY_*` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            ))
        })?;
        Self::from_yaml(&text, std::env::vars()).map_err(|e| e.in_file(path))
    }

    /// The embedded default with `FERRY_*` overrides from the process environment.
    pub fn embedded() -> Result<Config, ConfigErrors> {
        Self::from_yaml("{}", std::env::vars())
    }

    /// Parses YAML text, lays `vars` (only `FERRY_*` ones matter) over it and validates.
    pub fn from_yaml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let config = parse_yaml(text)?;
        let config = env::apply(config, vars)?;
        validate::validate(&config, text)?;
        Ok(config)
    }

    /// The effective tag TTL of an upstream.
    pub fn tag_ttl(&self, upstream: &str) -> Dur {
        self.upstreams
            .get(upstream)
            .and_then(|u| u.tag_ttl)
            .unwrap_or(self.cache.tag_ttl)
    }
}

fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_saphyr::from_str::<Config>(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).filter(|&l| l > 0);
        let message = first_line(&e.to_string());
        ConfigErrors::single(ConfigError {
            key: line.map(|l| key_at_line(text, l)).unwrap_or_default(),
            line,
            message,
        })
    })
}

/// The dotted key path of the block-style mapping key on 1-based `line` (or of the closest
/// enclosing key), so that a type error such as `tag_ttl: forever` is reported as
/// `cache.tag_ttl`, not only by line. Empty when the line holds no key.
fn key_at_line(text: &str, line: usize) -> String {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().take(line).enumerate() {
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with('-') {
            continue;
        }
        let indent = raw.len() - content.len();
        let Some((key, _)) = content.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(' ') || key.starts_with(['{', '[']) {
            continue;
        }
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        if i + 1 == line {
            break;
        }
    }
    let keys: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
    keys.join(".")
}

/// serde-saphyr renders a source snippet after the message; keep the message line.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

#[cfg(test)]
mod tests;
