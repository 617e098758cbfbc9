//! The repository lists as the web console shows them: which images this mirror serves
//! (`access.allow`, `allow_file`, `deny`) and, for one name, whether it is served and why not.

use crate::Access;

/// The repository lists in force.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepositoryLists {
    /// Allow patterns over `<upstream>/<repository>` (empty: every repository not denied).
    pub allow: Vec<String>,
    /// Deny patterns and their reasons (may be empty).
    pub deny: Vec<(String, String)>,
}

impl RepositoryLists {
    /// Whether any list is configured.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl Access {
    /// The repository lists in force.
    pub fn repository_lists(&self) -> RepositoryLists {
        let st = self.state.load();
        let r = &st.policy.repos;
        RepositoryLists {
            allow: r.allow_patterns.clone(),
            deny: r.deny_rules().to_vec(),
        }
    }

    /// Whether the lists let clients pull `<upstream>/<repository>`; `Err` says why not
    /// (the message a client gets).
    pub fn check_repository(&self, upstream: &str, repository: &str) -> Result<(), String> {
        let st = self.state.load();
        st.policy
            .repos
            .check(upstream, repository, String::new)
            .map_err(|d| d.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::access::AccessConfig;

    #[tokio::test]
    async fn lists_and_reasons() {
        let cfg: AccessConfig = serde_json::from_str(
            r#"{"allow": ["docker.io/library/*", "ghcr.io/org/**"],
                "deny": [{"pattern": "docker.io/library/huge", "reason": "too big"}]}"#,
        )
        .unwrap();
        let a = Access::new(&cfg, None).await.unwrap();
        let l = a.repository_lists();
        assert_eq!(l.allow, ["docker.io/library/*", "ghcr.io/org/**"]);
        assert_eq!(
            l.deny,
            [("docker.io/library/huge".to_owned(), "too big".to_owned())]
        );
        assert_eq!(a.check_repository("docker.io", "library/nginx"), Ok(()));
        let e = a.check_repository("docker.io", "library/huge").unwrap_err();
        assert!(e.contains("too big"), "{e}");
        let e = a.check_repository("quay.io", "x/y").unwrap_err();
        assert!(e.contains("not in this mirror's allowlist"), "{e}");
        let open = Access::new(&AccessConfig::default(), None).await.unwrap();
        assert!(open.repository_lists().is_empty());
    }
}
