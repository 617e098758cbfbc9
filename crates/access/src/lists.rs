//! Allow and deny lists: client networks (`block_ips` with reasons, `clients.allow/deny`) and
//! repositories (`allow`/`deny` glob patterns over `<upstream>/<repository>`). Deny wins.

use std::net::IpAddr;
use std::path::Path;

use ferry_config::access::{AccessConfig, RepoRule, check_pattern};
use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;

use crate::denial::{Denial, reason};
use crate::error::AccessError;

/// Client network rules.
#[derive(Debug, Default)]
pub(crate) struct ClientRules {
    block: Vec<(IpNet, String)>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl ClientRules {
    /// From the config.
    pub(crate) fn new(cfg: &AccessConfig) -> ClientRules {
        ClientRules {
            block: cfg
                .block_ips
                .iter()
                .map(|b| (b.cidr().0, b.reason().to_owned()))
                .collect(),
            allow: cfg.clients.allow.iter().map(|c| c.0).collect(),
            deny: cfg.clients.deny.iter().map(|c| c.0).collect(),
        }
    }

    /// Refuses a blocked or not allowed client.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Denial> {
        if let Some((net, why)) = self.block.iter().find(|(n, _)| n.contains(&ip)) {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            let msg = format!("your address {ip} is blocked by this mirror ({net}){why}");
            return Err(Denial::denied(reason::BLOCKED_IP, format!("ip {ip}"), msg));
        }
        let denied = self.deny.iter().any(|n| n.contains(&ip));
        if denied || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip))) {
            let msg = format!("your address {ip} may not use this mirror");
            return Err(Denial::denied(
                reason::DENIED_CLIENT,
                format!("ip {ip}"),
                msg,
            ));
        }
        Ok(())
    }
}

/// Repository rules.
#[derive(Debug)]
pub(crate) struct RepoRules {
    /// The allow patterns as written (for the console's list of allowed images).
    pub(crate) allow_patterns: Vec<String>,
    allow: GlobSet,
    allow_empty: bool,
    deny: GlobSet,
    deny_rules: Vec<(String, String)>,
    note: String,
}

impl RepoRules {
    /// Compiles `allow`, `allow_file` and `deny`.
    pub(crate) fn new(cfg: &AccessConfig) -> Result<RepoRules, AccessError> {
        let mut allow: Vec<String> = cfg.allow.iter().map(|r| r.pattern().to_owned()).collect();
        if let Some(path) = &cfg.allow_file {
            allow.extend(read_pattern_file(path)?);
        }
        let deny_rules: Vec<(String, String)> = cfg
            .deny
            .iter()
            .map(|r: &RepoRule| (r.pattern().trim().to_owned(), r.reason().to_owned()))
            .collect();
        let note = match cfg.denied_message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => format!(" {m}"),
            _ => String::new(),
        };
        Ok(RepoRules {
            allow_empty: allow.is_empty(),
            allow: globs("allow", allow.iter().map(String::as_str))?,
            deny: globs("deny", deny_rules.iter().map(|(p, _)| p.as_str()))?,
            allow_patterns: allow.iter().map(|p| p.trim().to_owned()).collect(),
            deny_rules,
            note,
        })
    }

    /// The deny patterns and their reasons.
    pub(crate) fn deny_rules(&self) -> &[(String, String)] {
        &self.deny_rules
    }

    /// Whether there is no rule at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.allow_empty && self.deny_rules.is_empty()
    }

    /// Refuses a repository that is denied or not allowed.
    pub(crate) fn check(
        &self,
        upstream: &str,
        repository: &str,
        subject: impl FnOnce() -> String,
    ) -> Result<(), Denial> {
        if self.is_empty() {
            return Ok(());
        }
        let name = format!("{upstream}/{repository}");
        let cand = Candidate::new(&name);
        if let Some(i) = self.deny.matches_candidate(&cand).first() {
            let (pattern, why) = &self.deny_rules[*i];
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            let msg = format!(
                "{name} is not served by this mirror (denied by {pattern}){why}.{}",
                self.note
            );
            return Err(Denial::denied(reason::DENIED_REPO, subject(), msg));
        }
        if !self.allow_empty && !self.allow.is_match_candidate(&cand) {
            let msg = format!("{name} is not in this mirror's allowlist.{}", self.note);
            return Err(Denial::denied(reason::NOT_ALLOWED_REPO, subject(), msg));
        }
        Ok(())
    }
}

/// Compiles repository patterns (`docker.io/library/*`, `ghcr.io/**`).
pub(crate) fn globs<'a>(
    key: &'static str,
    patterns: impl Iterator<Item = &'a str>,
) -> Result<GlobSet, AccessError> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim();
        check_pattern(p).map_err(|message| AccessError::Pattern { key, message })?;
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| AccessError::Pattern {
                key,
                message: format!("pattern {p:?}: {e}"),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| AccessError::Pattern {
        key,
        message: e.to_string(),
    })
}

/// One pattern a line; blank lines and `#` comments are skipped.
fn read_pattern_file(path: &Path) -> Result<Vec<String>, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `access:` section written as JSON (a subset of YAML).
    fn config(json: &str) -> AccessConfig {
        serde_json::from_str(json).unwrap()
    }

    fn rules(json: &str) -> RepoRules {
        RepoRules::new(&config(json)).unwrap()
    }

    fn ok(r: &RepoRules, up: &str, repo: &str) -> bool {
        r.check(up, repo, || "ip 1.2.3.4".into()).is_ok()
    }

    #[test]
    fn single_star_stays_in_one_component() {
        let r = rules(r#"{"allow": ["docker.io/library/*"]}"#);
        assert!(ok(&r, "docker.io", "library/nginx"));
        assert!(!ok(&r, "docker.io", "library/nginx/extra"));
        assert!(!ok(&r, "docker.io", "someone/nginx"));
        assert!(!ok(&r, "ghcr.io", "library/nginx"));
    }

    #[test]
    fn double_star_spans_components() {
        let r = rules(r#"{"allow": ["ghcr.io/**", "registry.k8s.io/kube-*"]}"#);
        assert!(ok(&r, "ghcr.io", "a"));
        assert!(ok(&r, "ghcr.io", "a/b/c/d"));
        assert!(ok(&r, "registry.k8s.io", "kube-proxy"));
        assert!(!ok(&r, "registry.k8s.io", "pause"));
    }

    #[test]
    fn deny_beats_allow_and_says_why() {
        let r = rules(
            r#"{"allow": ["docker.io/**"], "deny": ["docker.io/someone/*", {"pattern": "docker.io/library/huge", "reason": "too big"}],
                "denied_message": "Ask at https://example.com/mirror."}"#,
        );
        assert!(ok(&r, "docker.io", "library/nginx"));
        let d = r
            .check("docker.io", "someone/x", || "ip 1.2.3.4".into())
            .unwrap_err();
        assert_eq!(d.reason, reason::DENIED_REPO);
        assert_eq!(d.code, ferry_oci::ErrorCode::Denied);
        assert!(
            d.message.contains("docker.io/someone/x") && d.message.contains("docker.io/someone/*"),
            "{}",
            d.message
        );
        assert!(
            d.message.ends_with("Ask at https://example.com/mirror."),
            "{}",
            d.message
        );
        let d = r
            .check("docker.io", "library/huge", || "ip 1.2.3.4".into())
            .unwrap_err();
        assert!(d.message.contains(": too big"), "{}", d.message);
    }

    #[test]
    fn not_allowlisted_is_named() {
        let r = rules(r#"{"allow": ["docker.io/library/*"]}"#);
        let d = r
            .check("quay.io", "org/app", || "user bob".into())
            .unwrap_err();
        assert_eq!(d.reason, reason::NOT_ALLOWED_REPO);
        assert_eq!(d.subject, "user bob");
        assert!(
            d.message
                .contains("quay.io/org/app is not in this mirror's allowlist")
        );
    }

    #[test]
    fn empty_lists_allow_everything() {
        let r = rules("{}");
        assert!(r.is_empty());
        assert!(ok(&r, "any.io", "x/y"));
    }

    #[test]
    fn allow_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allows.txt");
        std::fs::write(
            &path,
            "# images\ndocker.io/library/nginx\n\nquay.io/org/* # comment\n",
        )
        .unwrap();
        let cfg = AccessConfig {
            allow_file: Some(path),
            ..Default::default()
        };
        let r = RepoRules::new(&cfg).unwrap();
        assert!(ok(&r, "docker.io", "library/nginx"));
        assert!(ok(&r, "quay.io", "org/app"));
        assert!(!ok(&r, "docker.io", "library/redis"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        let cfg = AccessConfig {
            deny: vec![RepoRule::Plain("docker.io".into())],
            ..Default::default()
        };
        let e = RepoRules::new(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("access.deny") && e.contains("names no repository"),
            "{e}"
        );
    }

    #[test]
    fn blocked_ips_show_the_reason() {
        let cfg = config(
            r#"{"block_ips": [{"cidr": "203.0.113.0/24", "reason": "abuse, contact ops@example.com"}],
                "clients": {"deny": ["198.51.100.0/24"]}}"#,
        );
        let c = ClientRules::new(&cfg);
        let d = c.check("203.0.113.9".parse().unwrap()).unwrap_err();
        assert_eq!(d.reason, reason::BLOCKED_IP);
        assert!(
            d.message.contains("abuse, contact ops@example.com"),
            "{}",
            d.message
        );
        assert_eq!(
            c.check("198.51.100.1".parse().unwrap()).unwrap_err().reason,
            reason::DENIED_CLIENT
        );
        assert!(c.check("192.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn client_allowlist() {
        let cfg = config(r#"{"clients": {"allow": ["10.0.0.0/8"]}}"#);
        let c = ClientRules::new(&cfg);
        assert!(c.check("10.1.2.3".parse().unwrap()).is_ok());
        assert_eq!(
            c.check("192.0.2.1".parse().unwrap()).unwrap_err().reason,
            reason::DENIED_CLIENT
        );
    }
}
