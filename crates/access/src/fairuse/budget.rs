//! Egress budgets (`access.budgets`): bytes served per period for the whole mirror and per
//! upstream, as GCRA counters (so "used" is what was served in the last period, draining
//! evenly). The accounting task debits the bytes served and, every second, reads how much of
//! each budget is used; the request path only reads the resulting step (an atomic).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use ferry_config::fairuse::{BudgetAction, BudgetStep, BudgetsConfig};

use crate::quota::Limit;
use crate::quota::gcra::{Mode, Op, Verdict};

/// One budget: `total` or an upstream's.
#[derive(Debug)]
pub(crate) struct Budget {
    /// `total` or the upstream name.
    pub(crate) name: String,
    limit: Limit,
    /// Percent used at the last reading.
    pub(crate) used: AtomicU8,
    /// How long until usage falls below the current step, in seconds.
    pub(crate) retry_secs: AtomicU64,
}

/// The compiled budgets and steps.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    pub(crate) list: Vec<Budget>,
    /// Sorted by `at`.
    pub(crate) steps: Vec<BudgetStep>,
    pub(crate) allowlist: Vec<ipnet::IpNet>,
}

impl Budgets {
    /// Compiles `access.budgets`.
    pub(crate) fn new(cfg: &BudgetsConfig) -> Budgets {
        let mut list = Vec::new();
        let mut add = |name: &str, rate| {
            if let Some(limit) = Limit::from_rate(Some(rate)) {
                list.push(Budget {
                    name: name.to_owned(),
                    limit,
                    used: AtomicU8::new(0),
                    retry_secs: AtomicU64::new(0),
                });
            }
        };
        if let Some(t) = cfg.total {
            add("total", t);
        }
        for (up, rate) in &cfg.upstreams {
            add(up, *rate);
        }
        let mut steps = if list.is_empty() {
            Vec::new()
        } else {
            cfg.steps_or_default()
        };
        steps.sort_by_key(|s| s.at);
        Budgets {
            list,
            steps,
            allowlist: cfg.allowlist.iter().map(|c| c.0).collect(),
        }
    }

    fn key(b: &Budget) -> String {
        b.limit.key("budget", &b.name)
    }

    /// The debits of `bytes` served through `upstream`.
    pub(crate) fn debits(&self, upstream: &str, bytes: u64) -> Vec<Op> {
        self.list
            .iter()
            .filter(|b| bytes > 0 && (b.name == "total" || b.name == upstream))
            .map(|b| Op {
                key: Self::key(b),
                params: b.limit.params(),
                cost: bytes as f64,
                mode: Mode::Debit,
            })
            .collect()
    }

    /// The ops that read how much of every budget is used (a peek of a whole budget: its wait
    /// is how far ahead the budget's clock runs, i.e. the part used).
    pub(crate) fn readings(&self) -> Vec<Op> {
        self.list
            .iter()
            .map(|b| Op {
                key: Self::key(b),
                params: b.limit.params(),
                cost: b.limit.amount() as f64,
                mode: Mode::Peek,
            })
            .collect()
    }

    /// Stores the readings; returns the budgets whose step changed (name, old, new step).
    pub(crate) fn update(&self, verdicts: &[Verdict]) -> Vec<(String, usize, usize)> {
        let mut changed = Vec::new();
        for (b, v) in self.list.iter().zip(verdicts) {
            let window_us = b.limit.params().tolerance;
            let pct = (v.wait_us / window_us * 100.0).clamp(0.0, 100.0) as u8;
            let old = self.step_index(b.used.load(Ordering::Relaxed));
            b.used.store(pct, Ordering::Relaxed);
            let new = self.step_index(pct);
            if let Some(i) = new.checked_sub(1) {
                let below = f64::from(self.steps[i].at) / 100.0 * window_us;
                let secs = ((v.wait_us - below).max(0.0) / 1e6).ceil() as u64;
                b.retry_secs.store(secs.max(1), Ordering::Relaxed);
            }
            if old != new {
                changed.push((b.name.clone(), old, new));
            }
        }
        changed
    }

    /// How many steps are in force at `pct` used (0 = none).
    pub(crate) fn step_index(&self, pct: u8) -> usize {
        self.steps.iter().take_while(|s| s.at <= pct).count()
    }

    /// The strictest step in force for a request through `upstream`, with its budget's name,
    /// percent used and retry time.
    pub(crate) fn in_force(&self, upstream: Option<&str>) -> Option<(&BudgetStep, &Budget)> {
        self.list
            .iter()
            .filter(|b| b.name == "total" || Some(b.name.as_str()) == upstream)
            .filter_map(|b| {
                let i = self.step_index(b.used.load(Ordering::Relaxed));
                i.checked_sub(1).map(|i| (i, b))
            })
            .max_by_key(|(i, _)| *i)
            .map(|(i, b)| (&self.steps[i], b))
    }

    /// The retry time of `b`.
    pub(crate) fn retry(b: &Budget) -> Duration {
        Duration::from_secs(b.retry_secs.load(Ordering::Relaxed).max(1))
    }
}

/// A step's words for logs and messages.
pub(crate) fn describe(action: BudgetAction) -> &'static str {
    match action {
        BudgetAction::SlowAnonymous => "anonymous downloads are slowed",
        BudgetAction::Allowlist => "anonymous clients outside the allowlist are refused",
        BudgetAction::UsersOnly => "only logged-in users are served",
    }
}
