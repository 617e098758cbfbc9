//! Small values other parts of ferry keep in the Redis of `redis:` (the web console's time
//! series), under `access.quotas.redis_prefix`. Without Redis, or when it fails, there is
//! nothing: callers keep their local copy.

use redis::aio::ConnectionManager;

use crate::Access;
use crate::fairuse::bans::SANCTIONS_KEY;
use crate::quota::redis::CALL_TIMEOUT;

/// Longest value stored (the console's series are some 100 KiB).
pub const MAX_SHARED_VALUE: usize = 4 << 20;

impl Access {
    /// The fair-use Redis connection and `access.quotas.redis_prefix`.
    fn redis(&self) -> Option<(ConnectionManager, &str)> {
        let (conn, key) = self.fair.sanctions.redis.as_ref()?;
        Some((conn.clone(), key.strip_suffix(SANCTIONS_KEY).unwrap_or(key)))
    }

    /// Whether `redis:` is configured.
    pub fn has_redis(&self) -> bool {
        self.fair.sanctions.redis.is_some()
    }

    /// The value stored under `<prefix><name>`, if Redis has one.
    pub async fn shared_get(&self, name: &str) -> Option<String> {
        let (mut conn, prefix) = self.redis()?;
        let key = format!("{prefix}{name}");
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let call = cmd.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT * 4, call).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(key, error = %e, "cannot read from redis");
                None
            }
            Err(_) => {
                tracing::warn!(key, "redis did not answer in time");
                None
            }
        }
    }

    /// Stores `value` under `<prefix><name>`; `Err` says why not.
    pub async fn shared_set(&self, name: &str, value: &str) -> Result<(), String> {
        let (mut conn, prefix) = self.redis().ok_or("no redis")?;
        if value.len() > MAX_SHARED_VALUE {
            return Err(format!(
                "{} bytes is more than {MAX_SHARED_VALUE}",
                value.len()
            ));
        }
        let key = format!("{prefix}{name}");
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(value);
        let call = cmd.query_async::<()>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT * 4, call).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("redis did not answer in time".into()),
        }
    }
}
