//! Fair use that knows its traffic: usage accounting, abuse rules with graduated actions
//! (`warn`, `slow`, `deny`, `ban`), bans shared by replicas, and egress budgets.
//!
//! The request path calls [`FairUse::admit`] (an atomic read of bans and budget steps, one
//! batch of rule counters); the request log sends one [`UsageRecord`] per answer to the
//! accounting task ([`run`]), which keeps the usage accounts, counts bytes and error answers
//! against the rules and the budgets, reads the budgets every second and syncs bans.

pub(crate) mod bans;
pub(crate) mod budget;
mod effects;
pub(crate) mod rules;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ferry_config::access::AccessConfig;
use ferry_metrics::Metrics;
use tokio::sync::mpsc;

use crate::error::AccessError;
use crate::ip::ip_subject;
use crate::quota::Store;
use crate::usage::shared::{Batch, SharedUsage};
use crate::usage::topk::Order;
use crate::usage::{Dimension, Usage, UsageRecord, UsageReport, UsageSink, hour_of};
use bans::Sanctions;
use budget::Budgets;
use redis::aio::ConnectionManager;
use rules::{Ctx, Rule};

pub(crate) use effects::Effects;

/// What a reload swaps.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) rules: Vec<Rule>,
    pub(crate) budgets: Budgets,
    pub(crate) store: Arc<Store>,
    pub(crate) ipv6_prefix: u8,
}

impl Compiled {
    /// Compiles `access.rules` and `access.budgets` over `store`.
    pub(crate) fn new(cfg: &AccessConfig, store: Arc<Store>) -> Result<Compiled, AccessError> {
        Ok(Compiled {
            rules: cfg
                .rules
                .iter()
                .map(Rule::compile)
                .collect::<Result<_, _>>()?,
            budgets: Budgets::new(&cfg.budgets),
            store,
            ipv6_prefix: cfg.ipv6_prefix,
        })
    }
}

/// The fair-use engine of one server.
pub(crate) struct FairUse {
    pub(crate) compiled: ArcSwap<Compiled>,
    pub(crate) sanctions: Sanctions,
    shared: Option<SharedUsage>,
    usage: Mutex<Usage>,
    sink: UsageSink,
    pub(crate) metrics: OnceLock<Arc<Metrics>>,
}

impl std::fmt::Debug for FairUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairUse").finish_non_exhaustive()
    }
}

impl FairUse {
    /// Starts the engine and its accounting task (which ends when the engine is dropped).
    pub(crate) fn start(
        cfg: &AccessConfig,
        compiled: Compiled,
        redis: Option<ConnectionManager>,
    ) -> Arc<FairUse> {
        let (sink, rx) = UsageSink::channel();
        let prefix = &cfg.quotas.redis_prefix;
        let shared = redis
            .clone()
            .map(|c| SharedUsage::new(c, prefix, cfg.usage.top_keys, cfg.usage.keep.0));
        let fair = Arc::new(FairUse {
            compiled: ArcSwap::from_pointee(compiled),
            sanctions: Sanctions::connect(redis, prefix),
            shared,
            usage: Mutex::new(Usage::new(&cfg.usage)),
            sink,
            metrics: OnceLock::new(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(run(Arc::downgrade(&fair), rx));
        }
        fair
    }

    /// Whether fair use has anything to do for a request (rules, budgets or sanctions).
    pub(crate) fn active(&self) -> bool {
        let c = self.compiled.load();
        !c.rules.is_empty() || !c.budgets.list.is_empty() || !self.sanctions.is_empty()
    }

    /// The request log's end of the accounts.
    pub(crate) fn sink(&self) -> UsageSink {
        self.sink.clone()
    }

    /// A usage report: of every replica from Redis when it is shared (this replica's own when
    /// Redis does not answer), else of this replica.
    pub(crate) async fn usage(
        &self,
        by: Dimension,
        window: Duration,
        top: usize,
        order: Order,
    ) -> UsageReport {
        let now = hour_of(SystemTime::now());
        if let Some(s) = &self.shared {
            let hours = window.as_secs().div_ceil(3600).max(1);
            match s.query(now, by, hours, top, order).await {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(error = %e, "usage not read from redis; this replica's own")
                }
            }
        }
        let u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        u.query(now, by, window, top, order)
    }

    /// Resets the per-client rule counters of `subject` (after its ban was lifted).
    pub(crate) async fn forgive(&self, subject: &str) {
        let c = self.compiled.load_full();
        let ops: Vec<_> = c
            .rules
            .iter()
            .flat_map(|r| r.forgive_ops(subject))
            .collect();
        if !ops.is_empty() {
            c.store.run(&ops).await;
        }
    }

    /// Counts a hit of `rule` with `action` in the metrics.
    pub(crate) fn hit(&self, rule: &str, action: &'static str) {
        if let Some(m) = self.metrics.get() {
            m.rule_hit(rule, action);
        }
    }

    /// Accounts a batch of answers. Budget debits are summed per upstream first: one debit
    /// per budget and batch, not per answer.
    async fn account(&self, batch: &[UsageRecord]) {
        let c = self.compiled.load_full();
        let hour = hour_of(SystemTime::now());
        let mut ops = Vec::new();
        let mut shared = Batch {
            hour,
            ..Batch::default()
        };
        let mut egress: Vec<(&str, u64)> = Vec::new();
        {
            let mut u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            for r in batch {
                let Some(ip) = r.ip else { continue };
                let client = ip_subject(ip, c.ipv6_prefix);
                u.record(hour, &client, r);
                if self.shared.is_some() {
                    shared.add(&client, r);
                }
                let subject = r.user.as_ref().map(|u| format!("user {u}"));
                let ctx = Ctx {
                    ip,
                    subject: subject.as_deref().unwrap_or(&client),
                    anonymous: r.user.is_none(),
                    repo: Some(r.repository.as_str()).filter(|s| !s.is_empty()),
                    blob: r.blob.as_deref(),
                    agent: r.agent,
                };
                for rule in c.rules.iter().filter(|rule| rule.applies(&ctx)) {
                    rule.served_ops(&ctx, r.bytes, r.error, &mut ops);
                }
                if r.bytes > 0 && !c.budgets.list.is_empty() {
                    match egress.iter_mut().find(|(up, _)| *up == r.upstream) {
                        Some((_, n)) => *n += r.bytes,
                        None => egress.push((&r.upstream, r.bytes)),
                    }
                }
            }
        }
        for (upstream, bytes) in egress {
            ops.extend(c.budgets.debits(upstream, bytes));
        }
        if !ops.is_empty() {
            c.store.run(&ops).await;
        }
        if let Some(s) = &self.shared
            && let Err(e) = s.add(&shared).await
        {
            tracing::debug!(error = %e, "usage not added in redis");
        }
    }

    /// Every second: budget readings, shared bans, gauges.
    async fn tick(&self) {
        let c = self.compiled.load_full();
        if !c.budgets.list.is_empty() {
            let verdicts = c.store.run(&c.budgets.readings()).await;
            for (name, old, new) in c.budgets.update(&verdicts) {
                effects::log_step(&c.budgets, &name, old, new);
            }
        }
        self.sanctions.sync().await;
        if let Some(m) = self.metrics.get() {
            let list = self.sanctions.list();
            let bans = list.iter().filter(|s| s.is_ban()).count();
            m.set_sanctions(bans as i64, (list.len() - bans) as i64);
            for b in &c.budgets.list {
                let pct = b.used.load(std::sync::atomic::Ordering::Relaxed);
                m.set_budget(&b.name, i64::from(pct), c.budgets.step_index(pct) as i64);
            }
        }
    }
}

/// How long the accounting task gathers answers after the first of a batch: it then wakes at
/// most this often under load (not once per answer), and a batch's debits of one budget are
/// one. Rules and usage see answers at most this late.
const GATHER: Duration = Duration::from_millis(10);

/// The most answers accounted in one batch.
const BATCH: usize = 1024;

/// The accounting task: drains the records, ticks every second, ends with the engine.
async fn run(fair: Weak<FairUse>, mut rx: mpsc::Receiver<UsageRecord>) {
    let mut tick = tokio::time::interval(bans::SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                if batch.len() < BATCH {
                    tokio::time::sleep(GATHER).await;
                    drain(&mut rx, &mut batch);
                }
                let Some(f) = fair.upgrade() else { return };
                f.account(&batch).await;
                batch.clear();
            }
            _ = tick.tick() => {
                let Some(f) = fair.upgrade() else { return };
                f.tick().await;
            }
        }
    }
}

/// Moves what is queued into `batch`, up to [`BATCH`], without waiting.
fn drain(rx: &mut mpsc::Receiver<UsageRecord>, batch: &mut Vec<UsageRecord>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => return,
        }
    }
}
