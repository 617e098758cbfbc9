//! Quotas: compiled limits per kind of client ([`Tier`]), the counter stores (memory or
//! Redis), the admission of one request (concurrency, byte and request quotas) and the
//! bandwidth throttle.

pub(crate) mod concurrency;
pub(crate) mod gcra;
pub(crate) mod local;
pub(crate) mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_config::access::{QuotaTier, QuotasConfig, Rate};
use ferry_config::{ByteSize, Dur};

use crate::denial::{Denial, human, reason};
use concurrency::{Concurrency, Permit};
use gcra::{Mode, Op, Params, Verdict};
use local::LocalStore;
use redis::RedisStore;

/// How much a client may run ahead of its bandwidth (a short burst, so a throttled download
/// starts at once and then flows evenly).
const BANDWIDTH_BURST: Duration = Duration::from_millis(100);

/// One compiled limit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limit {
    amount: u64,
    window: Duration,
    /// `<amount>/<window ms>`: part of the key, so a changed limit starts new counters.
    tag: String,
}

impl Limit {
    /// A limit from a rate; `unlimited` is `None`.
    pub(crate) fn from_rate(rate: Option<Rate>) -> Option<Limit> {
        let (amount, window) = rate?.limit()?;
        Some(Limit {
            amount,
            window,
            tag: format!("{amount}/{}", window.as_millis()),
        })
    }

    /// The GCRA parameters.
    pub(crate) fn params(&self) -> Params {
        Params::per(self.amount, self.window.as_secs_f64() * 1e6)
    }

    /// The counter key of `kind` for `subject`.
    pub(crate) fn key(&self, kind: &str, subject: &str) -> String {
        let mut k = self.key_prefix(kind);
        k.push_str(subject);
        k.push('}');
        k
    }

    /// The beginning of [`Limit::key`] of `kind`, to which the subject and `}` are appended.
    pub(crate) fn key_prefix(&self, kind: &str) -> String {
        format!("{kind}:{}:{{", self.tag)
    }

    /// The amount per window.
    pub(crate) fn amount(&self) -> u64 {
        self.amount
    }

    /// The amount per second.
    pub(crate) fn per_sec(&self) -> f64 {
        self.amount as f64 / self.window.as_secs_f64().max(1e-6)
    }

    /// A bandwidth of `bytes_per_sec`.
    pub(crate) fn bandwidth(bytes_per_sec: u64) -> Limit {
        let rate = ferry_config::access::Rate::per(bytes_per_sec.max(1), Duration::from_secs(1));
        Limit::from_rate(Some(rate)).expect("a finite rate")
    }

    fn per(&self) -> String {
        Dur(self.window).to_string()
    }

    fn requests(&self) -> String {
        format!("{} requests per {}", self.amount, self.per())
    }

    fn bytes(&self) -> String {
        format!("{} per {}", ByteSize(self.amount), self.per())
    }
}

/// The compiled limits of one kind of client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tier {
    label: String,
    requests: Option<Limit>,
    bytes: Option<Limit>,
    miss_requests: Option<Limit>,
    miss_bytes: Option<Limit>,
    concurrent: Option<u32>,
    bandwidth: Option<Limit>,
}

impl Tier {
    /// Compiles a tier; `None` when it limits nothing.
    fn compile(label: String, t: &QuotaTier) -> Option<Arc<Tier>> {
        (!t.is_unlimited()).then(|| {
            Arc::new(Tier {
                label,
                requests: Limit::from_rate(t.request_rate()),
                bytes: Limit::from_rate(t.byte_rate()),
                miss_requests: Limit::from_rate(t.miss_requests),
                miss_bytes: Limit::from_rate(t.miss_bytes),
                concurrent: t.concurrent,
                bandwidth: Limit::from_rate(t.bandwidth),
            })
        })
    }

    /// `base` (or no limits at all) with blob bandwidth capped to `bw` (a fair-use slow-down
    /// or budget step).
    pub(crate) fn slowed(base: Option<&Arc<Tier>>, bw: Limit) -> Arc<Tier> {
        let mut t = base.map_or_else(
            || Tier {
                label: "fair use".into(),
                requests: None,
                bytes: None,
                miss_requests: None,
                miss_bytes: None,
                concurrent: None,
                bandwidth: None,
            },
            |b| (**b).clone(),
        );
        if t.bandwidth
            .as_ref()
            .is_none_or(|old| bw.per_sec() < old.per_sec())
        {
            t.bandwidth = Some(bw);
        }
        Arc::new(t)
    }

    /// Whether bytes are counted or throttled at all.
    pub(crate) fn meters_bytes(&self) -> bool {
        self.bytes.is_some()
            || self.miss_bytes.is_some()
            || self.miss_requests.is_some()
            || self.bandwidth.is_some()
    }
}

/// The tiers of a policy.
#[derive(Debug, Default)]
pub(crate) struct Tiers {
    anonymous: Option<Arc<Tier>>,
    authenticated: Option<Arc<Tier>>,
    users: HashMap<String, Option<Arc<Tier>>>,
}

impl Tiers {
    /// Compiles `quotas:`.
    pub(crate) fn new(cfg: &QuotasConfig) -> Tiers {
        let users = cfg
            .users
            .iter()
            .map(|(name, over)| {
                let tier = cfg.authenticated.overlay(over);
                (
                    name.clone(),
                    Tier::compile(format!("quota of user {name}"), &tier),
                )
            })
            .collect();
        Tiers {
            anonymous: Tier::compile("anonymous quota".into(), &cfg.anonymous),
            authenticated: Tier::compile("quota of logged-in users".into(), &cfg.authenticated),
            users,
        }
    }

    /// The tier of an anonymous client.
    pub(crate) fn anonymous(&self) -> Option<&Arc<Tier>> {
        self.anonymous.as_ref()
    }

    /// The tier of user `name`.
    pub(crate) fn user(&self, name: &str) -> Option<&Arc<Tier>> {
        match self.users.get(name) {
            Some(t) => t.as_ref(),
            None => self.authenticated.as_ref(),
        }
    }

    /// Names with an override (to warn about unknown users).
    pub(crate) fn override_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// Where counters live.
#[derive(Debug)]
pub(crate) enum Store {
    /// This process.
    Local(Arc<LocalStore>),
    /// Redis, shared by replicas.
    Redis(RedisStore),
}

impl Store {
    /// Runs a batch.
    pub(crate) async fn run(&self, ops: &[Op]) -> Vec<Verdict> {
        match self {
            Store::Local(l) => l.run(ops),
            Store::Redis(r) => r.run(ops).await,
        }
    }

    /// Runs debits without waiting for Redis (in memory they are done at once).
    pub(crate) fn debit_detached(self: &Arc<Self>, ops: Vec<Op>) {
        match &**self {
            Store::Local(l) => {
                l.run(&ops);
            }
            Store::Redis(_) => {
                let store = self.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { store.run(&ops).await });
                }
            }
        }
    }

    /// Redis calls answered from memory so far.
    pub(crate) fn failures(&self) -> u64 {
        match self {
            Store::Local(_) => 0,
            Store::Redis(r) => r.failures(),
        }
    }
}

/// What admission hands to the grant.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    pub(crate) permit: Option<Permit>,
    pub(crate) miss_denial: Option<Denial>,
}

/// Admits one request of `subject` under `tier`: a concurrency slot, then the byte quota and
/// the request quota in one atomic batch (a refused request consumes nothing).
pub(crate) async fn admit(
    store: &Store,
    conc: &Arc<Concurrency>,
    tier: &Tier,
    subject: &str,
) -> Result<Admission, Denial> {
    let mut adm = Admission::default();
    if let Some(n) = tier.concurrent {
        let over = || {
            let msg = format!(
                "too many requests in flight: {subject} may have {n} at once ({})",
                tier.label
            );
            Denial::too_many(
                reason::CONCURRENCY,
                subject.to_owned(),
                msg,
                Duration::from_secs(1),
            )
        };
        adm.permit = Some(conc.try_acquire(subject, n).ok_or_else(over)?);
    }
    let mut ops = Vec::with_capacity(4);
    let mut what = Vec::with_capacity(4);
    let mut add = |limit: &Option<Limit>, kind: &'static str, cost: f64, mode: Mode| {
        if let Some(l) = limit {
            ops.push(Op {
                key: l.key(kind, subject),
                params: l.params(),
                cost,
                mode,
            });
            what.push((kind, l.clone()));
        }
    };
    add(&tier.bytes, "bytes", 0.0, Mode::Require);
    add(&tier.requests, "req", 1.0, Mode::Take);
    add(&tier.miss_bytes, "miss_bytes", 0.0, Mode::Peek);
    add(&tier.miss_requests, "miss_req", 1.0, Mode::Peek);
    if ops.is_empty() {
        return Ok(adm);
    }
    let verdicts = store.run(&ops).await;
    for ((kind, limit), v) in what.iter().zip(&verdicts).filter(|(_, v)| !v.allowed) {
        let d = over_quota(kind, limit, v, tier, subject);
        if kind.starts_with("miss") {
            adm.miss_denial.get_or_insert(d);
        } else {
            return Err(d);
        }
    }
    Ok(adm)
}

fn over_quota(kind: &str, l: &Limit, v: &Verdict, tier: &Tier, subject: &str) -> Denial {
    let retry = Duration::from_micros(v.wait_us.max(1000.0) as u64);
    let (reason, what) = match kind {
        "req" => (
            reason::QUOTA_REQUESTS,
            format!("too many requests: {subject} may make {}", l.requests()),
        ),
        "bytes" => (
            reason::QUOTA_BYTES,
            format!(
                "download quota used up: {subject} may download {}",
                l.bytes()
            ),
        ),
        "miss_bytes" => (
            reason::QUOTA_MISS_BYTES,
            format!(
                "upstream quota used up: {subject} may fetch {} of content that is not cached yet",
                l.bytes()
            ),
        ),
        _ => (
            reason::QUOTA_MISS_REQUESTS,
            format!(
                "upstream quota used up: {subject} may fetch {} that are not cached yet",
                l.requests()
            ),
        ),
    };
    let msg = format!("{what} ({}); retry in {}", tier.label, human(retry));
    Denial::too_many(reason, subject.to_owned(), msg, retry)
}

/// Reserves a download of `bytes` for `subject` (and of cache-miss bytes for a miss) before
/// its first byte, in one atomic batch: refused while the client is already over its byte
/// quota, so parallel downloads cannot all start on what is left.
pub(crate) async fn reserve(
    store: &Store,
    tier: &Tier,
    subject: &str,
    bytes: u64,
    miss: bool,
) -> Result<(), Denial> {
    let mut what = Vec::with_capacity(2);
    let mut ops = Vec::with_capacity(2);
    for (limit, kind) in [(&tier.bytes, "bytes"), (&tier.miss_bytes, "miss_bytes")] {
        if let Some(l) = limit.as_ref().filter(|_| kind == "bytes" || miss) {
            ops.push(Op {
                key: l.key(kind, subject),
                params: l.params(),
                cost: bytes as f64,
                mode: Mode::Reserve,
            });
            what.push((kind, l.clone()));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let verdicts = store.run(&ops).await;
    match what.iter().zip(&verdicts).find(|(_, v)| !v.allowed) {
        Some(((kind, l), v)) => Err(over_quota(kind, l, v, tier, subject)),
        None => Ok(()),
    }
}

/// The refunds of `bytes` reserved and not sent.
pub(crate) fn refunds(tier: &Tier, subject: &str, bytes: u64, miss: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    for (limit, kind) in [(&tier.bytes, "bytes"), (&tier.miss_bytes, "miss_bytes")] {
        if let Some(l) = limit
            .as_ref()
            .filter(|_| bytes > 0 && (kind == "bytes" || miss))
        {
            ops.push(Op {
                key: l.key(kind, subject),
                params: l.params(),
                cost: bytes as f64,
                mode: Mode::Refund,
            });
        }
    }
    ops
}

/// The debits of `bytes` served, of one more miss request, for `subject`.
pub(crate) fn debits(
    tier: &Tier,
    subject: &str,
    bytes: u64,
    miss: bool,
    miss_requests: u64,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut add = |limit: &Option<Limit>, kind: &str, cost: u64| {
        if let (Some(l), true) = (limit, cost > 0) {
            ops.push(Op {
                key: l.key(kind, subject),
                params: l.params(),
                cost: cost as f64,
                mode: Mode::Debit,
            });
        }
    };
    add(&tier.bytes, "bytes", bytes);
    if miss {
        add(&tier.miss_bytes, "miss_bytes", bytes);
        add(&tier.miss_requests, "miss_req", miss_requests);
    }
    ops
}

/// How long to hold back `bytes` of `subject` to keep to the tier's bandwidth (shared by all
/// of the client's connections to this replica).
pub(crate) fn throttle(local: &LocalStore, tier: &Tier, subject: &str, bytes: usize) -> Duration {
    let Some(l) = &tier.bandwidth else {
        return Duration::ZERO;
    };
    let mut params = l.params();
    params.tolerance = params.tolerance.min(BANDWIDTH_BURST.as_secs_f64() * 1e6);
    let op = Op {
        key: l.key("bw", subject),
        params,
        cost: bytes as f64,
        mode: Mode::Debit,
    };
    let v = local.run(std::slice::from_ref(&op));
    Duration::from_micros(v[0].wait_us as u64)
}

#[cfg(test)]
mod tests;
