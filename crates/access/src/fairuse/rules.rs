//! Compiled `access.rules`: which rules count a request, their GCRA counters (keyed by rule
//! and subject, in memory or Redis like every quota), and which of them fire.
//!
//! A rule fires when every threshold it sets is passed: "more than 100 requests and 1 GiB per
//! 24h". Requests are counted when the request is admitted (a refused request counts too, so a
//! client that keeps hammering stays refused); bytes and error answers when the answer has been
//! sent (by the accounting task, off the request path).

use std::net::IpAddr;
use std::time::Duration;

use ferry_config::access::Rate;
use ferry_config::fairuse::{RuleAction, RuleConfig, RuleScope, RuleWho};
use ferry_config::{ByteSize, Dur};
use globset::{Candidate, GlobSet};
use ipnet::IpNet;

use crate::error::AccessError;
use crate::quota::Limit;
use crate::quota::gcra::{Mode, Op, Verdict};

/// What a rule looks at in one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The client address.
    pub(crate) ip: IpAddr,
    /// `ip ...` or `user ...`: who is counted.
    pub(crate) subject: &'a str,
    /// Whether the client is not logged in.
    pub(crate) anonymous: bool,
    /// `upstream/repository`, when routed.
    pub(crate) repo: Option<&'a str>,
    /// The blob digest, for blobs.
    pub(crate) blob: Option<&'a str>,
    /// [`crate::usage::agent_hash`] of the request's `User-Agent`.
    pub(crate) agent: u64,
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) scope: RuleScope,
    pub(crate) action: RuleAction,
    pub(crate) window: Duration,
    pub(crate) requests: Option<Limit>,
    pub(crate) bytes: Option<Limit>,
    pub(crate) duration: Duration,
    pub(crate) bandwidth: Option<Limit>,
    who: RuleWho,
    repos: Option<GlobSet>,
    exempt: Vec<IpNet>,
    /// `agents:`: an anonymous address counts as this many clients, one per user-agent group.
    agents: u16,
    pub(crate) message: Option<String>,
    /// The counter keys' beginnings: requests (or error answers), bytes.
    prefixes: [String; 2],
}

impl Rule {
    /// Compiles one rule (validated by `ferry_config::fairuse::check`).
    pub(crate) fn compile(c: &RuleConfig) -> Result<Rule, AccessError> {
        let window = c.window.0;
        let repos = if c.repositories.is_empty() {
            None
        } else {
            Some(crate::lists::globs(
                "rules",
                c.repositories.iter().map(String::as_str),
            )?)
        };
        let requests = c
            .requests
            .and_then(|n| Limit::from_rate(Some(Rate::per(n.max(1), window))));
        let bytes = c
            .bytes
            .and_then(|b| Limit::from_rate(Some(Rate::per(b.0.max(1), window))));
        let counted = match c.per {
            RuleScope::ClientErrors => "err",
            _ => "req",
        };
        let prefix = |l: &Option<Limit>, kind: &str| {
            l.as_ref()
                .map(|l| l.key_prefix(&format!("fr:{}:{kind}", c.name)))
                .unwrap_or_default()
        };
        let prefixes = [prefix(&requests, counted), prefix(&bytes, "bytes")];
        Ok(Rule {
            name: c.name.clone(),
            scope: c.per,
            action: c.action,
            window,
            requests,
            bytes,
            prefixes,
            duration: c.duration.map_or(Duration::ZERO, |d| d.0),
            bandwidth: Limit::from_rate(c.bandwidth),
            who: c.who,
            repos,
            exempt: c.exempt.iter().map(|c| c.0).collect(),
            agents: c.agents.max(1),
            message: c.message.clone(),
        })
    }

    /// Whether this rule counts a request of `ctx`.
    pub(crate) fn applies(&self, ctx: &Ctx<'_>) -> bool {
        let who = match self.who {
            RuleWho::All => true,
            RuleWho::Anonymous => ctx.anonymous,
            RuleWho::Users => !ctx.anonymous,
        };
        let repo_ok = match (&self.repos, ctx.repo) {
            (None, _) => true,
            (Some(set), Some(r)) => set.is_match_candidate(&Candidate::new(r)),
            (Some(_), None) => false,
        };
        let scoped = match self.scope {
            RuleScope::ClientBlob => ctx.blob.is_some(),
            RuleScope::ClientRepository | RuleScope::Repository => ctx.repo.is_some(),
            RuleScope::Client | RuleScope::ClientErrors => true,
        };
        who && repo_ok && scoped && !self.exempt.iter().any(|n| n.contains(&ctx.ip))
    }

    /// The user-agent group of an anonymous client, when the rule sets `agents:`.
    fn agent_group(&self, ctx: &Ctx<'_>) -> Option<u64> {
        (self.agents > 1 && ctx.anonymous).then(|| ctx.agent % u64::from(self.agents))
    }

    /// The counter key of limit `which` (0: requests or errors, 1: bytes) for `ctx`: the
    /// prefix, then who this rule counts (the subject with its user-agent group, and the blob
    /// or repository), built in one allocation.
    fn key(&self, which: usize, ctx: &Ctx<'_>) -> String {
        let prefix = &self.prefixes[which];
        let mut k = String::with_capacity(prefix.len() + 112);
        k.push_str(prefix);
        if self.scope == RuleScope::Repository {
            k.push_str(ctx.repo.unwrap_or(""));
        } else {
            k.push_str(ctx.subject);
            if let Some(g) = self.agent_group(ctx) {
                k.push_str(" agent ");
                k.push_str(itoa::Buffer::new().format(g));
            }
            let extra = match self.scope {
                RuleScope::ClientBlob => Some(ctx.blob.unwrap_or("")),
                RuleScope::ClientRepository => Some(ctx.repo.unwrap_or("")),
                _ => None,
            };
            if let Some(x) = extra {
                k.push(' ');
                k.push_str(x);
            }
        }
        k.push('}');
        k
    }

    /// Appends the ops of the admission check (count the request, look at bytes or errors)
    /// to `ops`; returns how many.
    pub(crate) fn admit_ops(&self, ctx: &Ctx<'_>, ops: &mut Vec<Op>) -> usize {
        let before = ops.len();
        if let Some(l) = &self.requests {
            let errors = self.scope == RuleScope::ClientErrors;
            ops.push(Op {
                key: self.key(0, ctx),
                params: l.params(),
                cost: if errors { 0.0 } else { 1.0 },
                mode: if errors { Mode::Peek } else { Mode::Debit },
            });
        }
        if let Some(l) = &self.bytes {
            ops.push(Op {
                key: self.key(1, ctx),
                params: l.params(),
                cost: 0.0,
                mode: Mode::Peek,
            });
        }
        ops.len() - before
    }

    /// Appends the op of an answer sent (its bytes, or one more error answer) to `ops`.
    pub(crate) fn served_ops(&self, ctx: &Ctx<'_>, bytes: u64, error: bool, ops: &mut Vec<Op>) {
        match (&self.requests, &self.bytes) {
            (Some(l), _) if self.scope == RuleScope::ClientErrors && error => ops.push(Op {
                key: self.key(0, ctx),
                params: l.params(),
                cost: 1.0,
                mode: Mode::Debit,
            }),
            (_, Some(l)) if self.scope != RuleScope::ClientErrors && bytes > 0 => ops.push(Op {
                key: self.key(1, ctx),
                params: l.params(),
                cost: bytes as f64,
                mode: Mode::Debit,
            }),
            _ => {}
        }
    }

    /// The ops that reset this rule's per-client counters of `subject` (a lifted ban starts
    /// afresh; every user-agent group of an address with `agents:`); counters per blob or
    /// repository run out on their own.
    pub(crate) fn forgive_ops(&self, subject: &str) -> Vec<Op> {
        if !matches!(self.scope, RuleScope::Client | RuleScope::ClientErrors) {
            return Vec::new();
        }
        let mut whos = vec![subject.to_owned()];
        if self.agents > 1 && subject.starts_with("ip ") {
            whos.extend((0..self.agents).map(|g| format!("{subject} agent {g}")));
        }
        let limits = [
            (&self.requests, &self.prefixes[0]),
            (&self.bytes, &self.prefixes[1]),
        ];
        whos.iter()
            .flat_map(|who| limits.iter().map(move |(l, prefix)| (who, l, prefix)))
            .filter_map(|(who, l, prefix)| {
                let l = l.as_ref()?;
                Some(Op {
                    key: format!("{prefix}{who}}}"),
                    params: l.params(),
                    cost: 1e18,
                    mode: Mode::Refund,
                })
            })
            .collect()
    }

    /// Whether the verdicts of [`Rule::admit_ops`] fire the rule, and for how long it stays
    /// fired (until one threshold is no longer passed).
    pub(crate) fn fired(&self, verdicts: &[Verdict]) -> Option<Duration> {
        let over = |v: &Verdict| match v.allowed {
            false => Some(v.wait_us),
            true if v.wait_us > 0.0 => Some(v.wait_us),
            true => None,
        };
        let waits: Option<Vec<f64>> = verdicts.iter().map(over).collect();
        let wait = waits?.into_iter().fold(f64::INFINITY, f64::min);
        (wait.is_finite()).then(|| Duration::from_micros(wait.max(1000.0) as u64))
    }

    /// "more than 100 requests and 1GiB per 24h".
    pub(crate) fn thresholds(&self) -> String {
        let what = match self.scope {
            RuleScope::ClientErrors => "error answers",
            _ => "requests",
        };
        let mut parts = Vec::new();
        if let Some(l) = &self.requests {
            parts.push(format!("{} {what}", l.amount()));
        }
        if let Some(l) = &self.bytes {
            parts.push(ByteSize(l.amount()).human());
        }
        format!("more than {} per {}", parts.join(" and "), Dur(self.window))
    }

    /// What was counted, in words: "this IP and blob sha256:...".
    pub(crate) fn counted(&self, ctx: &Ctx<'_>) -> String {
        let who = match ctx.subject.split_once(' ') {
            Some(("ip", a)) => format!("client {a}"),
            Some(("user", u)) => format!("user {u}"),
            _ => ctx.subject.to_owned(),
        };
        let who = match self.agent_group(ctx) {
            Some(g) => format!("{who} (user-agent group {g} of {})", self.agents),
            None => who,
        };
        match self.scope {
            RuleScope::Client | RuleScope::ClientErrors => who,
            RuleScope::ClientBlob => format!("{who} on blob {}", ctx.blob.unwrap_or("")),
            RuleScope::ClientRepository => format!("{who} on {}", ctx.repo.unwrap_or("")),
            RuleScope::Repository => format!("everyone on {}", ctx.repo.unwrap_or("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(per: &str, agents: u16) -> Rule {
        let c: RuleConfig = serde_json::from_value(serde_json::json!({
            "name": "r1", "per": per, "window": "24h", "requests": 100, "bytes": "1GiB",
            "action": "warn", "agents": agents,
        }))
        .unwrap();
        Rule::compile(&c).unwrap()
    }

    #[test]
    fn counter_keys_name_the_rule_the_limit_and_who_is_counted() {
        let ctx = Ctx {
            ip: "10.1.2.3".parse().unwrap(),
            subject: "ip 10.1.2.3",
            anonymous: true,
            repo: Some("docker.io/library/nginx"),
            blob: Some("sha256:ab"),
            agent: 11,
        };
        let keys = |r: &Rule| {
            let mut ops = Vec::new();
            r.admit_ops(&ctx, &mut ops);
            ops.into_iter().map(|o| o.key).collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&rule("client", 1)),
            [
                "fr:r1:req:100/86400000:{ip 10.1.2.3}",
                "fr:r1:bytes:1073741824/86400000:{ip 10.1.2.3}"
            ]
        );
        assert_eq!(
            keys(&rule("client_blob", 4))[0],
            "fr:r1:req:100/86400000:{ip 10.1.2.3 agent 3 sha256:ab}"
        );
        assert_eq!(
            keys(&rule("client_repository", 1))[1],
            "fr:r1:bytes:1073741824/86400000:{ip 10.1.2.3 docker.io/library/nginx}"
        );
        assert_eq!(
            keys(&rule("repository", 1))[0],
            "fr:r1:req:100/86400000:{docker.io/library/nginx}"
        );
        assert_eq!(
            keys(&rule("client_errors", 1))[0],
            "fr:r1:err:100/86400000:{ip 10.1.2.3}"
        );
    }
}
