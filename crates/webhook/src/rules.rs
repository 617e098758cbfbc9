//! The pure rewrite function: one image reference in, the mirrored reference (or why not) out.
//!
//! Rules, in order:
//! 1. the image must parse with Docker's rules ([`ImageRef::parse`]), else it is left alone;
//! 2. an image already on the mirror host or on an override host is left alone (this makes the
//!    rewrite idempotent, which `reinvocationPolicy: IfNeeded` relies on);
//! 3. the registry must be selected by `rewrite_registries` and not hit `exclude_registries`;
//! 4. a `registries` override maps `<registry>/<repo>` to `<host>[/<prefix>]/<repo>`; otherwise
//!    `mirror` maps it to `<mirror>[/<prefix>]/<registry>/<repo>`;
//! 5. the result must parse back to the expected registry, repository, tag and digest, else the
//!    image is left alone (e.g. `127.0.0.1:5001/x` cannot sit under a mirror path, because `:`
//!    is not allowed in a repository name; such registries need an override).

use std::collections::{BTreeMap, BTreeSet};

use ferry_oci::image_ref::canonical_registry;
use ferry_oci::{ImageRef, ImageRefError};
use globset::GlobSet;

use crate::config::{ConfigError, WebhookConfig};
use crate::globs;
use crate::target::Target;

/// Compiled registry mapping.
#[derive(Debug, Clone)]
pub struct Rules {
    mirror: Option<Target>,
    overrides: BTreeMap<String, Target>,
    selected: Option<GlobSet>,
    excluded: GlobSet,
    mirror_hosts: BTreeSet<String>,
}

/// What [`Rules::rewrite`] decided for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// The image now points at the mirror.
    Rewritten(String),
    /// Left as written, for this reason.
    Unchanged(Skip),
    /// Not a valid image reference; left as written.
    Invalid(ImageRefError),
}

/// Why a valid image is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its registry is the mirror or an override host.
    AlreadyMirrored,
    /// `rewrite_registries` / `exclude_registries` leave this registry out.
    NotSelected,
    /// No `mirror` and no override for this registry.
    NoMapping,
    /// The mirrored form would not be a valid reference (message says why and what to do).
    Unrepresentable(String),
}

impl Rules {
    /// Compiles the registry-related keys of a config.
    pub fn from_config(config: &WebhookConfig) -> Result<Rules, ConfigError> {
        let mirror = config
            .mirror
            .as_deref()
            .map(|m| Target::parse(m).map_err(|message| invalid("mirror", message)))
            .transpose()?;
        let mut overrides = BTreeMap::new();
        for (registry, target) in &config.registries {
            let key = format!("registries.{registry}");
            let target = Target::parse(target).map_err(|message| invalid(&key, message))?;
            overrides.insert(canonical_registry(registry.trim()), target);
        }
        let canonical = |v: &[String]| {
            v.iter()
                .map(|p| canonical_registry(p.trim()))
                .collect::<Vec<_>>()
        };
        let selected = match &config.rewrite_registries {
            Some(list) => Some(globs::compile("rewrite_registries", &canonical(list))?),
            None => None,
        };
        let excluded =
            globs::compile("exclude_registries", &canonical(&config.exclude_registries))?;
        let mirror_hosts = mirror
            .iter()
            .chain(overrides.values())
            .map(|t| t.host.clone())
            .collect();
        Ok(Rules {
            mirror,
            overrides,
            selected,
            excluded,
            mirror_hosts,
        })
    }

    /// Whether any registry can be rewritten at all.
    pub fn maps_anything(&self) -> bool {
        self.mirror.is_some() || !self.overrides.is_empty()
    }

    /// Rewrites one image reference.
    pub fn rewrite(&self, image: &str) -> Rewrite {
        let parsed = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => return Rewrite::Invalid(e),
        };
        if self.mirror_hosts.contains(&parsed.registry) {
            return Rewrite::Unchanged(Skip::AlreadyMirrored);
        }
        if !self.selects(&parsed.registry) {
            return Rewrite::Unchanged(Skip::NotSelected);
        }
        let (target, path) = match (self.overrides.get(&parsed.registry), &self.mirror) {
            (Some(t), _) => (t, parsed.repository.to_string()),
            (None, Some(m)) => (m, format!("{}/{}", parsed.registry, parsed.repository)),
            (None, None) => return Rewrite::Unchanged(Skip::NoMapping),
        };
        build(target, &path, &parsed)
    }

    fn selects(&self, registry: &str) -> bool {
        self.selected.as_ref().is_none_or(|s| s.is_match(registry))
            && !self.excluded.is_match(registry)
    }
}

/// Assembles `<host>/<prefix>/<path><suffix>` and checks that it parses back as intended.
fn build(target: &Target, path: &str, original: &ImageRef) -> Rewrite {
    let repository = target.repository(path);
    let candidate = format!("{}/{repository}{}", target.host, original.suffix());
    // The advice first: admission warnings are cut at 250 characters.
    let unrepresentable = |why: String| {
        Rewrite::Unchanged(Skip::Unrepresentable(format!(
            "map registry {} with a `registries` override: {candidate:?} {why}",
            original.registry
        )))
    };
    match ImageRef::parse(&candidate) {
        Ok(r)
            if r.registry == target.host
                && r.repository.as_str() == repository
                && r.tag == original.tag
                && r.digest == original.digest =>
        {
            Rewrite::Rewritten(candidate)
        }
        Ok(r) => unrepresentable(format!("would parse as {r}")),
        Err(e) => unrepresentable(format!("is not a valid reference ({e})")),
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}
