//! Fair use of a public mirror, inside `access:`: the admin API's credentials
//! (`access.admin`), usage accounting (`access.usage`), abuse rules with graduated actions
//! (`access.rules`) and egress budgets (`access.budgets`).
//!
//! The types here only describe and validate the settings; `ferry-access` enforces them.
//! `docs/access.md` ("Running a public mirror") documents every key with the example rules of
//! a public mirror.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::access::{Cidr, Rate, check_pattern};
use crate::units::{ByteSize, Dur, Secret};

/// Who may use the admin API (`/admin/v1/...`): bearer tokens, and users with `admin: true`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Tokens accepted as `Authorization: Bearer <token>` (at least 16 characters each).
    pub tokens: Vec<Secret>,
}

/// Usage accounting: how many heavy hitters each hourly bucket keeps, how long buckets live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Keys kept per dimension and hourly bucket (Space-Saving counters; memory is bounded by
    /// this, not by the number of clients).
    pub top_keys: usize,
    /// How long hourly buckets are kept (the longest `--window` of `ferry usage`).
    pub keep: Dur,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            top_keys: 200,
            keep: Dur::secs(7 * 24 * 3600),
        }
    }
}

/// What a rule counts per: the subject is the client (its IP, or the user when logged in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleScope {
    /// Everything a client does.
    Client,
    /// A client and one blob (digest).
    ClientBlob,
    /// A client and one repository.
    ClientRepository,
    /// A repository, whoever asks (a rate limit for everyone).
    Repository,
    /// The error answers (4xx other than 401, 5xx) a client got.
    ClientErrors,
}

impl RuleScope {
    /// The name used in configs and counter keys.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleScope::Client => "client",
            RuleScope::ClientBlob => "client_blob",
            RuleScope::ClientRepository => "client_repository",
            RuleScope::Repository => "repository",
            RuleScope::ClientErrors => "client_errors",
        }
    }
}

/// What happens when a rule's thresholds are passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// The answer carries a `Warning` header with the rule's message; the request is served.
    Warn,
    /// The client's blob downloads are capped to `bandwidth` for `duration`.
    Slow,
    /// 429 `TOOMANYREQUESTS` while over the thresholds, with `Retry-After`.
    Deny,
    /// Every request of the client is refused for `duration` (403 `DENIED`), shared by
    /// replicas through Redis, kept across restarts.
    Ban,
}

impl RuleAction {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Warn => "warn",
            RuleAction::Slow => "slow",
            RuleAction::Deny => "deny",
            RuleAction::Ban => "ban",
        }
    }
}

/// Which clients a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleWho {
    /// Everyone.
    #[default]
    All,
    /// Clients without a login (counted per IP).
    Anonymous,
    /// Logged-in users (counted per user).
    Users,
}

/// One abuse rule: "more than `requests` requests and `bytes` bytes per `window`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A unique name: the metric label, in logs and in the client's message.
    pub name: String,
    /// What is counted per.
    pub per: RuleScope,
    /// The counting window (GCRA period).
    pub window: Dur,
    /// Fires above this many requests (or error answers) per window.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Fires above this many bytes per window (with `requests`: only when both are passed).
    #[serde(default)]
    pub bytes: Option<ByteSize>,
    /// What happens.
    pub action: RuleAction,
    /// How long a `slow` or `ban` lasts.
    #[serde(default)]
    pub duration: Option<Dur>,
    /// The bandwidth of a `slow` client (`1MiB/s`).
    #[serde(default)]
    pub bandwidth: Option<Rate>,
    /// Which clients are counted.
    #[serde(default)]
    pub who: RuleWho,
    /// Repository patterns the rule applies to (`docker.io/library/*`); empty = all.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Client networks never counted by this rule (offices, CI runners).
    #[serde(default)]
    pub exempt: Vec<Cidr>,
    /// Counts an anonymous address as up to this many clients, one per group of
    /// `User-Agent` strings (a stable hash of the header, modulo `agents`): an office of
    /// many machines behind one NAT address gets up to `agents` times the allowance, one
    /// client with one user agent does not. 1 (the default) counts the address as one.
    #[serde(default = "one_agent")]
    pub agents: u16,
    /// Advice appended to the client's message ("run a local cache: ...").
    #[serde(default)]
    pub message: Option<String>,
}

fn one_agent() -> u16 {
    1
}

/// The most `agents` a rule may set.
pub const MAX_AGENTS: u16 = 64;

/// Egress budgets: bytes served per period, for the whole mirror and per upstream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// The whole mirror (`50TiB/30d`).
    pub total: Option<Rate>,
    /// Per upstream (`docker.io: 20TiB/30d`).
    pub upstreams: BTreeMap<String, Rate>,
    /// The steps taken as a budget runs down; the defaults when empty (see
    /// [`BudgetsConfig::steps_or_default`]).
    pub steps: Vec<BudgetStep>,
    /// Client networks still served by an `allowlist` step.
    pub allowlist: Vec<Cidr>,
}

/// What a budget step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Anonymous blob downloads get `bandwidth`.
    SlowAnonymous,
    /// Anonymous clients outside `budgets.allowlist` are refused.
    Allowlist,
    /// Only logged-in users are served.
    UsersOnly,
}

impl BudgetAction {
    /// The metric and log label.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetAction::SlowAnonymous => "slow_anonymous",
            BudgetAction::Allowlist => "allowlist",
            BudgetAction::UsersOnly => "users_only",
        }
    }
}

/// One step: at `at` percent of a budget used, `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetStep {
    /// Percent of the budget used (0-100).
    pub at: u8,
    /// What happens from then on.
    pub action: BudgetAction,
    /// The anonymous bandwidth of `slow_anonymous`.
    #[serde(default)]
    pub bandwidth: Option<Rate>,
}

impl BudgetsConfig {
    /// The configured steps, or the defaults: at 80 % anonymous blobs at 5 MiB/s, at 95 % only
    /// the allowlist for anonymous clients, at 100 % only logged-in users.
    pub fn steps_or_default(&self) -> Vec<BudgetStep> {
        if !self.steps.is_empty() {
            return self.steps.clone();
        }
        let step = |at, action, bandwidth| BudgetStep {
            at,
            action,
            bandwidth,
        };
        vec![
            step(
                80,
                BudgetAction::SlowAnonymous,
                Some(Rate::per(5 << 20, std::time::Duration::from_secs(1))),
            ),
            step(95, BudgetAction::Allowlist, None),
            step(100, BudgetAction::UsersOnly, None),
        ]
    }

    /// Whether any budget is set.
    pub fn is_set(&self) -> bool {
        self.total.is_some() || !self.upstreams.is_empty()
    }
}

impl fmt::Display for RuleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the fair-use settings; reports through `err(key path, message)`.
pub fn check(
    admin: &AdminConfig,
    rules: &[RuleConfig],
    budgets: &BudgetsConfig,
    err: &mut impl FnMut(&[&str], String),
) {
    if admin.tokens.iter().any(|t| t.expose().len() < 16) {
        err(
            &["access", "admin", "tokens"],
            "every token needs at least 16 characters".into(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in rules {
        if !seen.insert(r.name.as_str()) {
            err(
                &["access", "rules"],
                format!("two rules are named {:?}", r.name),
            );
        }
        check_rule(r, err);
    }
    for s in &budgets.steps {
        if s.at > 100 {
            err(
                &["access", "budgets", "steps"],
                format!("at: {} is over 100", s.at),
            );
        }
        if s.action == BudgetAction::SlowAnonymous && s.bandwidth.is_none() {
            err(
                &["access", "budgets", "steps"],
                "slow_anonymous needs a bandwidth (e.g. 1MiB/s)".into(),
            );
        }
    }
}

fn check_rule(r: &RuleConfig, err: &mut impl FnMut(&[&str], String)) {
    let path = ["access", "rules", r.name.as_str()];
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        err(&path, "name: letters, digits, - _ . only".into());
    }
    if r.requests.is_none() && r.bytes.is_none() {
        err(&path, "set requests, bytes or both".into());
    }
    if r.per == RuleScope::ClientErrors && r.bytes.is_some() {
        err(
            &path,
            "client_errors counts error answers: set requests, not bytes".into(),
        );
    }
    if r.window.0.is_zero() {
        err(&path, "window must be greater than zero".into());
    }
    let needs_duration = matches!(r.action, RuleAction::Slow | RuleAction::Ban);
    if needs_duration && r.duration.is_none_or(|d| d.0.is_zero()) {
        err(
            &path,
            format!("action {} needs a duration (e.g. 48h)", r.action.as_str()),
        );
    }
    if r.action == RuleAction::Slow && r.bandwidth.and_then(|b| b.limit()).is_none() {
        err(&path, "action slow needs a bandwidth (e.g. 1MiB/s)".into());
    }
    if !(1..=MAX_AGENTS).contains(&r.agents) {
        err(&path, format!("agents: between 1 and {MAX_AGENTS}"));
    }
    if r.agents > 1 && r.per == RuleScope::Repository {
        err(
            &path,
            "agents counts the user agents of one client: not for per: repository".into(),
        );
    }
    for p in &r.repositories {
        if let Err(m) = check_pattern(p) {
            err(&path, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_public_mirror_example_parses() {
        let text = include_str!("../../../examples/public-mirror.yaml");
        let c = Config::from_yaml(text, no_env()).unwrap();
        assert_eq!(c.access.rules.len(), 8);
        assert!(c.access.users["ops"].admin);
        assert_eq!(c.access.budgets.steps_or_default().len(), 3);
    }

    #[test]
    fn bad_rules_and_tokens_are_explained() {
        let text = r#"
access:
  admin: {tokens: [short]}
  rules:
    - {name: a, per: client, window: 1m, action: ban}
    - {name: a, per: client_errors, window: 1m, bytes: 1MiB, action: slow, duration: 1h}
    - {name: b, per: client, window: 1m, requests: 5, action: warn, agents: 0}
    - {name: c, per: repository, window: 1m, requests: 5, action: warn, agents: 4}
"#;
        let err = Config::from_yaml(text, no_env()).unwrap_err().to_string();
        for needle in [
            "at least 16 characters",
            "set requests, bytes or both",
            "needs a duration",
            "two rules are named",
            "client_errors counts error answers",
            "needs a bandwidth",
            "agents: between 1 and 64",
            "not for per: repository",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn admin_tokens_come_from_the_environment() {
        let env = vec![(
            "FERRY_ACCESS__ADMIN__TOKENS".to_owned(),
            "[0123456789abcdef-token]".to_owned(),
        )];
        let c = Config::from_yaml("listen: 127.0.0.1:5000\n", env).unwrap();
        assert_eq!(c.access.admin.tokens[0].expose(), "0123456789abcdef-token");
    }
}
