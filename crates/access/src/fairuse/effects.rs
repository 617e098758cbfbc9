//! What fair use does to one request ([`FairUse::admit`]): a ban refuses it; a slow-down or a
//! budget step caps its bandwidth or refuses anonymous clients; rules that fire warn, slow,
//! deny or ban. The client is told which rule, why, and until when.

use std::time::Duration;

use ferry_config::fairuse::{BudgetAction, RuleAction};

use super::FairUse;
use super::bans::{Sanction, now_secs};
use super::budget::{Budgets, describe};
use super::rules::{Ctx, Rule};
use crate::denial::{Denial, human, reason};
use crate::quota::Limit;

/// What fair use adds to an admitted request.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Notes for the `Warning` header and the log.
    pub(crate) warnings: Vec<String>,
    /// A bandwidth cap on blob bytes.
    pub(crate) bandwidth: Option<Limit>,
}

impl Effects {
    fn cap(&mut self, l: Limit) {
        let slower = self
            .bandwidth
            .as_ref()
            .is_none_or(|old| l.per_sec() < old.per_sec());
        if slower {
            self.bandwidth = Some(l);
        }
    }
}

/// "2026-12-05T19:00:00Z (in 47h 59m)".
fn until(s: &Sanction) -> String {
    let at = humantime::format_rfc3339_seconds(s.ends());
    format!("{at} (in {})", human(s.left()))
}

impl FairUse {
    /// Decides fair use for one routed request of `ctx`.
    pub(crate) async fn admit(&self, ctx: &Ctx<'_>) -> Result<Effects, Denial> {
        let mut fx = Effects::default();
        let current = self.sanctions.get(ctx.subject);
        if let Some(s) = &current {
            sanctioned(s, &mut fx)?;
        }
        let c = self.compiled.load_full();
        budget_step(&c.budgets, ctx, &mut fx)?;
        // One list of ops for the store, and which rule has how many of them.
        let mut ops = Vec::with_capacity(2 * c.rules.len());
        let mut counts: Vec<(&Rule, usize)> = Vec::with_capacity(c.rules.len());
        for r in c.rules.iter().filter(|r| r.applies(ctx)) {
            counts.push((r, r.admit_ops(ctx, &mut ops)));
        }
        if counts.is_empty() {
            return Ok(fx);
        }
        let verdicts = c.store.run(&ops).await;
        let mut at = 0;
        let mut refusal = None;
        for &(rule, n) in &counts {
            let fired = rule.fired(&verdicts[at..at + n]);
            at += n;
            // A slow-down in force is not set again (nor counted again) on every request.
            let in_force = current.as_ref().is_some_and(|s| s.rule == rule.name);
            if let Some(wait) = fired.filter(|_| !in_force) {
                self.hit(&rule.name, rule.action.as_str());
                if let Err(d) = self.act(rule, ctx, wait, &mut fx).await {
                    refusal = Some(refusal.map_or(d.clone(), |old: Denial| stricter(old, d)));
                }
            }
        }
        refusal.map_or(Ok(fx), Err)
    }

    async fn act(
        &self,
        rule: &Rule,
        ctx: &Ctx<'_>,
        wait: Duration,
        fx: &mut Effects,
    ) -> Result<(), Denial> {
        let advice = rule
            .message
            .as_deref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        let why = format!(
            "rule {}: {} made {}{advice}",
            rule.name,
            rule.counted(ctx),
            rule.thresholds()
        );
        tracing::info!(rule = %rule.name, action = rule.action.as_str(), subject = ctx.subject, "{why}");
        match rule.action {
            RuleAction::Warn => fx.warnings.push(why),
            RuleAction::Deny => {
                let msg = format!("{why}; retry in {}", human(wait));
                return Err(Denial::too_many(
                    reason::FAIRUSE_DENY,
                    ctx.subject.to_owned(),
                    msg,
                    wait,
                ));
            }
            RuleAction::Slow | RuleAction::Ban => {
                let s = Sanction {
                    subject: ctx.subject.to_owned(),
                    rule: rule.name.clone(),
                    action: rule.action.as_str().to_owned(),
                    reason: why,
                    until: now_secs() + rule.duration.as_secs().max(1),
                    bandwidth: rule.bandwidth.as_ref().map(|l| l.per_sec() as u64),
                };
                self.sanctions.put(s.clone()).await;
                let s = self.sanctions.get(ctx.subject).unwrap_or(s);
                sanctioned(&s, fx)?;
            }
        }
        Ok(())
    }
}

/// A ban refuses; a slow-down caps and says so.
fn sanctioned(s: &Sanction, fx: &mut Effects) -> Result<(), Denial> {
    if s.is_ban() {
        let msg = format!("banned until {} by {}", until(s), s.reason);
        let mut d = Denial::denied(reason::FAIRUSE_BAN, s.subject.clone(), msg);
        d.retry_after = Some(s.left().max(Duration::from_secs(1)));
        return Err(d);
    }
    if let Some(bps) = s.bandwidth {
        fx.cap(Limit::bandwidth(bps));
        fx.warnings.push(format!(
            "downloads slowed to {}/s until {} by {}",
            ferry_config::ByteSize(bps).human(),
            until(s),
            s.reason
        ));
    }
    Ok(())
}

/// Applies the budget step in force to an anonymous client.
fn budget_step(b: &Budgets, ctx: &Ctx<'_>, fx: &mut Effects) -> Result<(), Denial> {
    if !ctx.anonymous {
        return Ok(());
    }
    let upstream = ctx.repo.and_then(|r| r.split('/').next());
    let Some((step, budget)) = b.in_force(upstream) else {
        return Ok(());
    };
    let pct = budget.used.load(std::sync::atomic::Ordering::Relaxed);
    let what = format!(
        "this mirror's egress budget ({}) is {pct}% used: {}",
        budget.name,
        describe(step.action)
    );
    let refuse = |what: String| {
        let retry = Budgets::retry(budget);
        let msg = format!("{what}; log in (docker login) or retry in {}", human(retry));
        Err(Denial::too_many(
            reason::BUDGET,
            ctx.subject.to_owned(),
            msg,
            retry,
        ))
    };
    match step.action {
        BudgetAction::SlowAnonymous => {
            if let Some(l) = step.bandwidth.and_then(|r| Limit::from_rate(Some(r))) {
                fx.cap(l);
                fx.warnings.push(what);
            }
            Ok(())
        }
        BudgetAction::Allowlist if b.allowlist.iter().any(|n| n.contains(&ctx.ip)) => Ok(()),
        BudgetAction::Allowlist | BudgetAction::UsersOnly => refuse(what),
    }
}

/// Of two refusals, the ban (403) wins, then the longer wait.
fn stricter(a: Denial, b: Denial) -> Denial {
    let rank = |d: &Denial| (d.reason == reason::FAIRUSE_BAN, d.retry_after);
    if rank(&b) > rank(&a) { b } else { a }
}

/// Logs a budget step change.
pub(crate) fn log_step(b: &Budgets, name: &str, old: usize, new: usize) {
    let words = |i: usize| {
        i.checked_sub(1)
            .map_or("no restriction", |i| describe(b.steps[i].action))
    };
    if new > old {
        tracing::warn!(
            budget = name,
            step = new,
            "egress budget step reached: {}",
            words(new)
        );
    } else {
        tracing::info!(
            budget = name,
            step = new,
            "egress budget step eased: {}",
            words(new)
        );
    }
}
