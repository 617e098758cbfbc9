//! The `access:` section: who may pull (logins, anonymous pulls, client addresses), what may be
//! pulled (repository allow/deny patterns), and how much (request, byte, concurrency and
//! bandwidth quotas per client IP or user).
//!
//! The types here only describe and validate the settings; `ferry-access` enforces them.
//! `docs/access.md` documents every key with examples. Rates are written `<amount>/<window>`:
//! `20/1m`, `1GiB/2h`, `10MiB/s`, or `unlimited`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fairuse::{AdminConfig, BudgetsConfig, RuleConfig, UsageConfig};
use crate::units::{Dur, Secret};

mod quotas;
mod rules;

pub use quotas::{QuotaTier, QuotasConfig, Rate};
pub use rules::{
    BlockRule, BlockWithReason, Cidr, ClientsConfig, PatternWithReason, RepoRule, check_pattern,
};

/// Access control and fair-use settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Whether pulls without a login are allowed.
    pub anonymous: bool,
    /// An htpasswd file of bcrypt users (`htpasswd -B`), re-read on every reload.
    pub htpasswd: Option<PathBuf>,
    /// Users defined in the config itself.
    pub users: BTreeMap<String, UserConfig>,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// IPv6 clients are counted per network of this prefix length (one home or VM usually
    /// holds a whole /64).
    pub ipv6_prefix: u8,
    /// ferry's own token service.
    pub token: TokenConfig,
    /// Request, byte, concurrency and bandwidth limits.
    pub quotas: QuotasConfig,
    /// Repository patterns served (`docker.io/library/*`, `ghcr.io/**`); empty = everything
    /// on the configured upstreams.
    pub allow: Vec<RepoRule>,
    /// A file of further allow patterns, one per line (`#` starts a comment).
    pub allow_file: Option<PathBuf>,
    /// Repository patterns refused; deny wins over allow.
    pub deny: Vec<RepoRule>,
    /// Text appended to every "not served" message (e.g. where to ask for an image).
    pub denied_message: Option<String>,
    /// Client networks allowed and denied.
    pub clients: ClientsConfig,
    /// Client networks refused, each with the reason shown to the client.
    pub block_ips: Vec<BlockRule>,
    /// Who may use the admin API (see `fairuse.rs`).
    pub admin: AdminConfig,
    /// Usage accounting (see `fairuse.rs`).
    pub usage: UsageConfig,
    /// Abuse rules with graduated actions (see `fairuse.rs`).
    pub rules: Vec<RuleConfig>,
    /// Egress budgets (see `fairuse.rs`).
    pub budgets: BudgetsConfig,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            anonymous: true,
            htpasswd: None,
            users: BTreeMap::new(),
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            token: TokenConfig::default(),
            quotas: QuotasConfig::default(),
            allow: Vec::new(),
            allow_file: None,
            deny: Vec::new(),
            denied_message: None,
            clients: ClientsConfig::default(),
            block_ips: Vec::new(),
            admin: AdminConfig::default(),
            usage: UsageConfig::default(),
            rules: Vec::new(),
            budgets: BudgetsConfig::default(),
        }
    }
}

/// One user of the config: a bcrypt hash or a plain password (e.g. from an environment
/// variable), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// A bcrypt hash (`$2y$...`, as `htpasswd -nB` prints it).
    pub bcrypt: Option<String>,
    /// A plain password.
    pub password: Option<Secret>,
    /// Whether this user may use the admin API (`ferry usage`, `ferry bans`).
    pub admin: bool,
}

/// ferry's token service (`/token`, `/auth/token`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// HMAC-SHA256 signing key; generated at start when unset. Replicas behind one load
    /// balancer need the same key (set it here or in `FERRY_ACCESS__TOKEN__KEY`).
    pub key: Option<Secret>,
    /// How long an issued token is valid.
    pub ttl: Dur,
    /// The `service` of challenges and tokens.
    pub service: String,
    /// The `iss` claim of tokens.
    pub issuer: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            key: None,
            ttl: Dur::secs(15 * 60),
            service: "ferry".into(),
            issuer: "ferry".into(),
        }
    }
}

impl AccessConfig {
    /// Reports every problem through `err(key path, message)`; files (htpasswd, allow_file)
    /// are read only when the server builds its access policy.
    pub fn check(&self, err: &mut impl FnMut(&[&str], String)) {
        let has_users = !self.users.is_empty() || self.htpasswd.is_some();
        if !self.anonymous && !has_users {
            err(&["access", "anonymous"], "anonymous pulls are off but no user can log in: set access.users or access.htpasswd".into());
        }
        for (name, u) in &self.users {
            check_user(name, u, err);
        }
        if !(32..=128).contains(&self.ipv6_prefix) {
            err(
                &["access", "ipv6_prefix"],
                format!("{} must be between 32 and 128", self.ipv6_prefix),
            );
        }
        self.token.check(err);
        self.quotas.check(err);
        crate::fairuse::check(&self.admin, &self.rules, &self.budgets, err);
        for (key, rules) in [("allow", &self.allow), ("deny", &self.deny)] {
            for r in rules.iter() {
                if let Err(m) = check_pattern(r.pattern()) {
                    err(&["access", key], m);
                }
            }
        }
    }
}

fn check_user(name: &str, u: &UserConfig, err: &mut impl FnMut(&[&str], String)) {
    if !is_user_name(name) {
        err(
            &["access", "users", name],
            format!("{name:?} is not a user name (letters, digits, . _ - @, no colon)"),
        );
    }
    match (&u.bcrypt, &u.password) {
        (Some(h), None) if !is_bcrypt(h) => err(
            &["access", "users", name, "bcrypt"],
            "not a bcrypt hash ($2a$, $2b$ or $2y$; make one with htpasswd -nB)".into(),
        ),
        (None, Some(p)) if p.expose().is_empty() => {
            err(&["access", "users", name, "password"], "is empty".into())
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => err(
            &["access", "users", name],
            "set exactly one of bcrypt or password".into(),
        ),
    }
}

/// Whether `s` looks like a bcrypt hash.
pub fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.len() == 60
}

/// Whether `s` can be a user name (no colon, no space, not empty).
pub fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
}

impl TokenConfig {
    fn check(&self, err: &mut impl FnMut(&[&str], String)) {
        if self.ttl.0 < Duration::from_secs(60) || self.ttl.0 > Duration::from_secs(24 * 3600) {
            err(
                &["access", "token", "ttl"],
                "must be between 1m and 24h".into(),
            );
        }
        if self.key.as_ref().is_some_and(|k| k.expose().len() < 32) {
            err(
                &["access", "token", "key"],
                "must be at least 32 characters (e.g. openssl rand -base64 48)".into(),
            );
        }
        if self.service.is_empty() || self.service.contains('"') {
            err(
                &["access", "token", "service"],
                "must be a non-empty name without quotes".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
