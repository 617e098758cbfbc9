//! The compiled `access:` section ([`Policy`]) and what a reload swaps as a whole ([`State`]):
//! the policy and the counter store it uses.

use std::sync::Arc;

use ferry_config::access::AccessConfig;
use ipnet::IpNet;

use crate::error::AccessError;
use crate::ip::Proxies;
use crate::lists::{ClientRules, RepoRules};
use crate::quota::{Limit, Store, Tiers};
use crate::token::Signer;
use crate::users::Users;

/// Everything a request is decided by.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) anonymous: bool,
    pub(crate) users: Users,
    pub(crate) proxies: Proxies,
    pub(crate) ipv6_prefix: u8,
    pub(crate) clients: ClientRules,
    pub(crate) repos: RepoRules,
    pub(crate) signer: Signer,
    pub(crate) tiers: Tiers,
    pub(crate) failed_logins: Option<Limit>,
    /// Users with `admin: true`.
    pub(crate) admins: std::collections::HashSet<String>,
    /// SHA-256 of each `access.admin.tokens` entry.
    pub(crate) admin_tokens: Vec<[u8; 32]>,
}

/// The policy and its counter store, swapped together on reload.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) policy: Policy,
    pub(crate) store: Arc<Store>,
}

impl Policy {
    /// Validates and compiles `cfg`; tokens are signed with `token.key` or `generated_key`.
    pub(crate) fn build(cfg: &AccessConfig, generated_key: &[u8]) -> Result<Policy, AccessError> {
        let mut problems = Vec::new();
        cfg.check(&mut |path: &[&str], m: String| {
            problems.push(format!("{}: {m}", path.join(".")))
        });
        if !problems.is_empty() {
            return Err(AccessError::Invalid(problems));
        }
        let users = Users::load(cfg)?;
        if !cfg.anonymous && users.is_empty() {
            let msg = "access.anonymous: anonymous pulls are off and the htpasswd file has no user"
                .into();
            return Err(AccessError::Invalid(vec![msg]));
        }
        let tiers = Tiers::new(&cfg.quotas);
        for name in tiers.override_names().filter(|n| !users.contains(n)) {
            tracing::warn!(
                user = name,
                "access.quotas.users names a user that cannot log in"
            );
        }
        let key = cfg
            .token
            .key
            .as_ref()
            .map_or(generated_key, |k| k.expose().as_bytes());
        Ok(Policy {
            anonymous: cfg.anonymous,
            users,
            proxies: Proxies::new(
                cfg.trusted_proxies
                    .iter()
                    .map(|c| c.0)
                    .collect::<Vec<IpNet>>(),
            ),
            ipv6_prefix: cfg.ipv6_prefix,
            clients: ClientRules::new(cfg),
            repos: RepoRules::new(cfg)?,
            signer: Signer::new(key, &cfg.token),
            tiers,
            failed_logins: Limit::from_rate(Some(cfg.quotas.failed_logins)),
            admins: cfg
                .users
                .iter()
                .filter(|(_, u)| u.admin)
                .map(|(n, _)| n.clone())
                .collect(),
            admin_tokens: cfg
                .admin
                .tokens
                .iter()
                .map(|t| crate::admin::digest(t.expose()))
                .collect(),
        })
    }

    /// Whether anyone can log in (then requests without credentials are challenged).
    pub(crate) fn logins(&self) -> bool {
        !self.users.is_empty()
    }
}
