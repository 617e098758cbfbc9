//! The `access:` section: who may pull, and how much (filled in by the access-control work).

use serde::{Deserialize, Serialize};

/// Access control and fair-use settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Whether pulls without a login are allowed.
    pub anonymous: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig { anonymous: true }
    }
}
