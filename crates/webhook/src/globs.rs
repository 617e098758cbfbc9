//! Glob lists from the config (`team-*`, `*.corp.example`), compiled once per config load.
//!
//! A bad pattern is a config error naming the key, so a reload with a typo keeps the old config.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::ConfigError;

/// Compiles `patterns` (the value of config key `key`) into one matcher.
pub fn compile(key: &str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern.trim()).map_err(|e| ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("bad glob {pattern:?}: {e}"),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| ConfigError::Invalid {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_and_reports_bad_patterns() {
        let set = compile("k", &["team-*".into(), "default".into()]).unwrap();
        assert!(set.is_match("team-a"));
        assert!(set.is_match("default"));
        assert!(!set.is_match("kube-system"));
        assert!(compile("k", &[]).unwrap().is_empty());
        let e = compile("include_namespaces", &["[a".into()]).unwrap_err();
        assert!(e.to_string().contains("include_namespaces"), "{e}");
    }
}
