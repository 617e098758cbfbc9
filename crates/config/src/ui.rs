//! The `ui:` section: the web console under `/ui/` on the serve port (`docs/console.md`).

use serde::{Deserialize, Serialize};

use crate::units::Dur;

/// The web console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// `false` removes `/ui/` entirely (the admin API under `/admin/v1/` stays).
    pub enabled: bool,
    /// The public pages ("use this mirror", registries, allowed images); `false` leaves only
    /// the operator pages, which always need an admin login.
    pub public: bool,
    /// A console login ends after this long without a request.
    pub session_idle: Dur,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            public: true,
            session_idle: Dur::secs(12 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn defaults_and_keys() {
        let c = Config::from_yaml("{}", Vec::new()).unwrap();
        assert!(c.ui.enabled && c.ui.public);
        assert_eq!(c.ui.session_idle.0.as_secs(), 12 * 3600);
        let c =
            Config::from_yaml("ui:\n  public: false\n  session_idle: 30m\n", Vec::new()).unwrap();
        assert!(c.ui.enabled && !c.ui.public);
        assert_eq!(c.ui.session_idle.0.as_secs(), 1800);
        let e = Config::from_yaml("ui:\n  pubic: false\n", Vec::new()).unwrap_err();
        assert!(e.to_string().contains("pubic"), "{e}");
        let e = Config::from_yaml("ui:\n  session_idle: 0s\n", Vec::new()).unwrap_err();
        assert!(e.to_string().contains("ui.session_idle"), "{e}");
    }
}
