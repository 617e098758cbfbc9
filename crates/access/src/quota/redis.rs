//! GCRA counters in Redis, shared by every replica: one Lua script (`gcra.lua`) runs a whole
//! batch atomically with the Redis server's clock. Keys are `<prefix><kind>:<limit>:{<who>}`;
//! the braces keep one client's keys in one Redis Cluster slot, and each key expires once it
//! holds no information.
//!
//! Redis trouble must not stop pulls: when a call fails or takes longer than
//! [`CALL_TIMEOUT`], that decision and those of the next [`RETRY_AFTER`] are made by the
//! in-memory counters of this replica (so limits still hold per replica), with a warning
//! logged at most every [`WARN_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::gcra::{Op, Verdict};
use super::local::LocalStore;
use crate::error::AccessError;

/// Longest wait for one Redis call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is left alone after a failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Least time between two "Redis is down" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// Counters in Redis with an in-memory fallback.
pub(crate) struct RedisStore {
    url: String,
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    fallback: Arc<LocalStore>,
    breaker: Mutex<Breaker>,
    failures: AtomicU64,
}

#[derive(Debug, Default)]
struct Breaker {
    open_until: Option<Instant>,
    warned_at: Option<Instant>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `url`; connects lazily, so a Redis that is down at start is no error.
    pub(crate) fn new(
        url: &str,
        prefix: &str,
        fallback: Arc<LocalStore>,
    ) -> Result<RedisStore, AccessError> {
        let client = redis::Client::open(url).map_err(|e| AccessError::Redis(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)
            .map_err(|e| AccessError::Redis(e.to_string()))?;
        Ok(RedisStore {
            url: url.to_owned(),
            conn,
            script: Script::new(include_str!("gcra.lua")),
            prefix: prefix.to_owned(),
            fallback,
            breaker: Mutex::new(Breaker::default()),
            failures: AtomicU64::new(0),
        })
    }

    /// Whether this store serves `url` with `prefix` (a reload keeps it then).
    pub(crate) fn same(&self, url: &str, prefix: &str) -> bool {
        self.url == url && self.prefix == prefix
    }

    /// Calls that failed over to memory so far.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Runs a batch in Redis, or in memory while Redis is unavailable.
    pub(crate) async fn run(&self, ops: &[Op]) -> Vec<Verdict> {
        if self.resting() {
            return self.fallback.run(ops);
        }
        match tokio::time::timeout(CALL_TIMEOUT, self.eval(ops)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => self.fail_over(&e.to_string(), ops),
            Err(_) => self.fail_over("no answer in time", ops),
        }
    }

    async fn eval(&self, ops: &[Op]) -> redis::RedisResult<Vec<Verdict>> {
        let mut call = self.script.prepare_invoke();
        for op in ops {
            call.key(format!("{}{}", self.prefix, op.key))
                .arg(op.params.interval)
                .arg(op.params.tolerance)
                .arg(op.cost)
                .arg(op.mode.as_str());
        }
        let mut conn = self.conn.clone();
        let raw: Vec<i64> = call.invoke_async(&mut conn).await?;
        if raw.len() != ops.len() * 2 {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected answer of the quota script",
            )));
        }
        Ok(raw
            .chunks(2)
            .map(|p| Verdict {
                allowed: p[0] == 1,
                wait_us: p[1] as f64,
            })
            .collect())
    }

    fn resting(&self) -> bool {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.open_until.is_some_and(|t| Instant::now() < t)
    }

    fn fail_over(&self, why: &str, ops: &[Op]) -> Vec<Verdict> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.open_until = Some(now + RETRY_AFTER);
        if b.warned_at
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            b.warned_at = Some(now);
            tracing::warn!(
                error = why,
                "redis unavailable: quotas are counted by this replica alone until it is back (fail open)"
            );
        }
        drop(b);
        self.fallback.run(ops)
    }
}
