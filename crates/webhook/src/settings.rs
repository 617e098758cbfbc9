//! A config file turned into what the admission handler needs: compiled rewrite rules,
//! namespace filters and the health-gate settings.
//!
//! [`Settings`] is immutable; a reload builds a new one and swaps it in whole, so a request never
//! sees half of an old config and half of a new one.

use std::path::Path;

use globset::GlobSet;

use crate::config::{ConfigError, HealthConfig, WebhookConfig};
use crate::globs;
use crate::rules::Rules;

/// A validated, compiled config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file as written (kept to detect changes that need a restart).
    pub config: WebhookConfig,
    /// Registry mapping.
    pub rules: Rules,
    /// Which namespaces are rewritten.
    pub namespaces: NamespaceFilter,
}

/// `include_namespaces` / `exclude_namespaces`.
#[derive(Debug, Clone)]
pub struct NamespaceFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl NamespaceFilter {
    /// Whether pods in `namespace` are rewritten (exclusion wins).
    pub fn admits(&self, namespace: &str) -> bool {
        self.include.is_match(namespace) && !self.exclude.is_match(namespace)
    }
}

impl Settings {
    /// Validates and compiles a parsed config.
    pub fn from_config(config: WebhookConfig) -> Result<Settings, ConfigError> {
        let rules = Rules::from_config(&config)?;
        let namespaces = NamespaceFilter {
            include: globs::compile("include_namespaces", &config.include_namespaces)?,
            exclude: globs::compile("exclude_namespaces", &config.exclude_namespaces)?,
        };
        if let Some(health) = &config.mirror_health {
            check_health(health)?;
        }
        Ok(Settings {
            config,
            rules,
            namespaces,
        })
    }

    /// Reads, parses, validates and compiles the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::from_config(WebhookConfig::load(path)?)
    }

    /// Parses YAML text (for tests and `check-config`).
    pub fn from_yaml(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_config(WebhookConfig::from_yaml(text, Path::new("<inline>"))?)
    }

    /// The health-gate settings, if configured.
    pub fn health(&self) -> Option<&HealthConfig> {
        self.config.mirror_health.as_ref()
    }
}

fn check_health(health: &HealthConfig) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: format!("mirror_health.{key}"),
        message,
    };
    let url = reqwest::Url::parse(&health.url)
        .map_err(|e| invalid("url", format!("{:?}: {e}", health.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("{:?}: use an http:// or https:// URL", health.url),
        ));
    }
    if health.interval.is_zero() || health.timeout.is_zero() {
        return Err(invalid(
            "interval",
            "interval and timeout must be above zero".into(),
        ));
    }
    if health.failure_threshold == 0 {
        return Err(invalid("failure_threshold", "must be at least 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_default_to_all_but_kube_system() {
        let s = Settings::from_yaml("mirror: m.example.com").unwrap();
        assert!(s.namespaces.admits("default"));
        assert!(!s.namespaces.admits("kube-system"));
    }

    #[test]
    fn include_and_exclude_globs() {
        let s = Settings::from_yaml("include_namespaces: [team-*]\nexclude_namespaces: [team-b]")
            .unwrap();
        assert!(s.namespaces.admits("team-a"));
        assert!(!s.namespaces.admits("team-b"));
        assert!(!s.namespaces.admits("default"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            ("mirror: notahost", "`mirror`"),
            ("registries: {docker.io: 'x y'}", "registries.docker.io"),
            ("exclude_namespaces: ['[']", "exclude_namespaces"),
            ("mirror_health: {url: 'ftp://m'}", "mirror_health.url"),
            (
                "mirror_health: {url: 'http://m', failure_threshold: 0}",
                "failure_threshold",
            ),
        ] {
            let e = Settings::from_yaml(yaml).unwrap_err();
            assert!(e.to_string().contains(key), "{yaml}: {e}");
        }
    }
}
