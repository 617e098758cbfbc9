//! Bans and slow-downs ([`Sanction`]s) that outlive one request: one per subject, until a
//! time. Shared by replicas through Redis (one hash, `<prefix>fairuse:sanctions`, read back
//! every [`SYNC_EVERY`]) and kept across restarts: in Redis, or without Redis in a small JSON
//! file (`<cache root>/fairuse-bans.json`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::error::AccessError;
use crate::quota::redis::CALL_TIMEOUT;

/// How often a replica reads the shared sanctions from Redis.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A ban (every request refused) or a slow-down (blob bandwidth capped) of one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// `ip 203.0.113.7` or `user alice`.
    pub subject: String,
    /// The rule that set it (or `admin`).
    pub rule: String,
    /// `ban` or `slow`.
    pub action: String,
    /// Why, in words (shown to the client).
    pub reason: String,
    /// When it ends, in seconds since the Unix epoch.
    pub until: u64,
    /// For `slow`: bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
}

impl Sanction {
    /// Whether it is a ban.
    pub fn is_ban(&self) -> bool {
        self.action == "ban"
    }

    /// When it ends.
    pub fn ends(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.until)
    }

    /// Time left.
    pub fn left(&self) -> Duration {
        self.ends()
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// A lazy connection to the Redis at `url` (a Redis that is down at start is no error).
pub(crate) fn connection(url: &str) -> Result<ConnectionManager, AccessError> {
    let client = redis::Client::open(url).map_err(|e| AccessError::Redis(e.to_string()))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(Some(CALL_TIMEOUT))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, cfg)
        .map_err(|e| AccessError::Redis(e.to_string()))
}

/// The Redis key of the sanctions, after `access.quotas.redis_prefix`.
pub(crate) const SANCTIONS_KEY: &str = "fairuse:sanctions";

/// Now in seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Where sanctions live.
pub(crate) struct Sanctions {
    map: RwLock<HashMap<String, Sanction>>,
    file: Mutex<Option<PathBuf>>,
    pub(crate) redis: Option<(ConnectionManager, String)>,
}

impl std::fmt::Debug for Sanctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sanctions").finish_non_exhaustive()
    }
}

impl Sanctions {
    /// Sanctions in memory, shared through `redis` (a lazy connection and the hash key).
    pub(crate) fn new(redis: Option<(ConnectionManager, String)>) -> Sanctions {
        Sanctions {
            map: RwLock::default(),
            file: Mutex::new(None),
            redis,
        }
    }

    /// Sanctions shared through `conn` (keys under `prefix`), or local ones.
    pub(crate) fn connect(conn: Option<ConnectionManager>, prefix: &str) -> Sanctions {
        Sanctions::new(conn.map(|c| (c, format!("{prefix}{SANCTIONS_KEY}"))))
    }

    /// Keeps sanctions in `path` (without Redis) and loads what it holds.
    pub(crate) fn keep_in(&self, path: PathBuf) {
        if self.redis.is_none()
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            match serde_json::from_str::<Vec<Sanction>>(&text) {
                Ok(list) => self.replace(list),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "bans file unreadable; starting without")
                }
            }
        }
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
    }

    fn replace(&self, list: Vec<Sanction>) {
        let now = now_secs();
        let map = list
            .into_iter()
            .filter(|s| s.until > now)
            .map(|s| (s.subject.clone(), s))
            .collect();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Whether no sanction is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The live sanction of `subject`.
    pub(crate) fn get(&self, subject: &str) -> Option<Sanction> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(subject).filter(|s| s.until > now_secs()).cloned()
    }

    /// Every live sanction, soonest end first.
    pub(crate) fn list(&self) -> Vec<Sanction> {
        let now = now_secs();
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Sanction> = map.values().filter(|s| s.until > now).cloned().collect();
        v.sort_by(|a, b| {
            a.until
                .cmp(&b.until)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        v
    }

    /// Sets a sanction (a ban is not replaced by a slow-down), shares and keeps it.
    pub(crate) async fn put(&self, s: Sanction) {
        {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            let now = now_secs();
            if map
                .get(&s.subject)
                .is_some_and(|old| old.until > now && old.is_ban() && !s.is_ban())
            {
                return;
            }
            map.insert(s.subject.clone(), s.clone());
        }
        match &self.redis {
            Some((conn, key)) => {
                let json = serde_json::to_string(&s).expect("a sanction serializes");
                let mut c = conn.clone();
                let call = c.hset::<_, _, _, ()>(key, &s.subject, json);
                if let Err(e) = timeout(call).await {
                    tracing::warn!(error = %e, subject = %s.subject, "ban not shared through redis");
                }
            }
            None => self.save(),
        }
    }

    /// Lifts the sanction of `subject`; whether there was one.
    pub(crate) async fn lift(&self, subject: &str) -> bool {
        let had = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(subject)
            .is_some_and(|s| s.until > now_secs());
        match &self.redis {
            Some((conn, key)) => {
                let mut c = conn.clone();
                let removed = timeout(c.hdel::<_, _, i64>(key, subject)).await;
                had || removed.is_ok_and(|n| n > 0)
            }
            None => {
                self.save();
                had
            }
        }
    }

    /// Reads the shared sanctions from Redis (and drops the ended ones there).
    pub(crate) async fn sync(&self) {
        let Some((conn, key)) = &self.redis else {
            return;
        };
        let mut c = conn.clone();
        let all: HashMap<String, String> = match timeout(c.hgetall(key)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "bans not read from redis");
                return;
            }
        };
        let now = now_secs();
        let mut list = Vec::with_capacity(all.len());
        for (field, json) in all {
            match serde_json::from_str::<Sanction>(&json) {
                Ok(s) if s.until > now => list.push(s),
                _ => {
                    let _ = timeout(c.hdel::<_, _, i64>(key, &field)).await;
                }
            }
        }
        self.replace(list);
    }

    fn save(&self) {
        let Some(path) = self.file.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let json = serde_json::to_vec_pretty(&self.list()).expect("sanctions serialize");
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "bans not saved");
        }
    }
}

async fn timeout<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}
