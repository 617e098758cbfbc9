//! Config hot reload: re-read the file when its directory changes, swap in the new settings if
//! they are valid, keep the old ones (and log why) if not.
//!
//! `listen` and `tls` paths are read once at start; a change to them is logged as needing a
//! restart. Everything else (mapping, namespaces, `enabled`, health gate) applies to the next
//! request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::settings::Settings;

/// Re-reads one config file into shared settings.
#[derive(Debug)]
pub struct ConfigReloader {
    path: PathBuf,
    settings: Arc<ArcSwap<Settings>>,
    last: Option<Vec<u8>>,
}

impl ConfigReloader {
    /// A reloader for `path`, whose current contents produced the settings in `settings`.
    pub fn new(path: &Path, settings: Arc<ArcSwap<Settings>>) -> ConfigReloader {
        ConfigReloader {
            path: path.to_owned(),
            settings,
            last: std::fs::read(path).ok(),
        }
    }

    /// Reloads if the file's contents changed. Returns whether new settings were applied.
    pub fn reload(&mut self) -> bool {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read webhook config; keeping the current one");
                return false;
            }
        };
        if self.last.as_ref() == Some(&bytes) {
            return false;
        }
        self.last = Some(bytes.clone());
        let text = String::from_utf8_lossy(&bytes);
        let parsed = crate::config::WebhookConfig::from_yaml(&text, &self.path)
            .and_then(Settings::from_config);
        match parsed {
            Ok(new) => {
                warn_restart_needed(&self.settings.load().config, &new.config);
                if !new.rules.maps_anything() {
                    tracing::warn!("webhook config maps no registry: set `mirror` or `registries`");
                }
                self.settings.store(Arc::new(new));
                tracing::info!(path = %self.path.display(), "webhook config reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "new webhook config rejected; keeping the current one");
                false
            }
        }
    }
}

fn warn_restart_needed(old: &crate::config::WebhookConfig, new: &crate::config::WebhookConfig) {
    if old.listen != new.listen {
        tracing::warn!(old = %old.listen, new = %new.listen, "`listen` changed; restart the webhook to apply it");
    }
    if old.tls != new.tls {
        tracing::warn!("`tls` paths changed; restart the webhook to apply them");
    }
}
