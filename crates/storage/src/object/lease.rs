//! Fill claims between replicas, as expiring lock objects created with a conditional write.
//!
//! A replica that misses a blob creates `_locks/<upstream>/<algorithm>/<hex>` with
//! `If-None-Match: *`
//! (OpenDAL's `if_not_exists`). Exactly one creation succeeds: that replica downloads the blob,
//! renews the lock every [`TTL`]/3 while it works, and deletes it when done (the lease is
//! dropped). The others poll until the blob is stored (they then read it from the store) or
//! the lock disappears or expires (they then try to take it: the owner failed or crashed).
//! Waiting never exceeds the caller's bound; after it the waiter downloads on its own.
//!
//! Stores that ignore conditional writes are detected once by [`Leases::probe`]; claims are then
//! granted at once (no coordination, each replica downloads its own misses).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_oci::Digest;
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use super::{backend, found, keys};
use crate::{FillClaim, FillLease, Result};

/// Lifetime of a lock that is not renewed (its owner crashed): another replica takes the
/// download over within this (plus one poll). Renewed every `TTL / 3`, so a renewal may be
/// late by over two seconds before the lock lapses (a lapse only costs a second download of
/// identical, verified bytes).
pub const TTL: Duration = Duration::from_secs(4);

/// How often a waiting replica looks again.
const POLL: Duration = Duration::from_millis(250);

/// The lock object's content.
#[derive(Debug, Serialize, Deserialize)]
struct LockDoc {
    /// Who holds it (host, process and a random id), for operators reading the bucket.
    owner: String,
    /// Microseconds since the epoch after which the lock is void.
    expires: u64,
}

/// Fill claims over one operator.
#[derive(Clone)]
pub struct Leases {
    op: Operator,
    owner: Arc<str>,
    enabled: Arc<AtomicBool>,
}

impl Leases {
    /// Claims over `op`, enabled until [`Leases::probe`] finds conditional writes unsupported.
    pub fn new(op: Operator) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let owner = format!(
            "{}/{}/{:08x}",
            host.trim(),
            std::process::id(),
            rand::random::<u32>()
        );
        Leases {
            op,
            owner: owner.into(),
            enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Tests whether the store refuses a second `If-None-Match: *` write of one key, and
    /// enables claims accordingly. Returns whether they are enabled.
    pub async fn probe(&self) -> Result<bool> {
        let key = keys::probe();
        let first = self.create(&key, Bytes::from_static(b"1")).await;
        let second = self.create(&key, Bytes::from_static(b"2")).await;
        let _ = self.op.delete(&key).await;
        let ok = matches!((first, second), (Ok(true), Ok(false)));
        self.enabled.store(ok, Ordering::Relaxed);
        Ok(ok)
    }

    /// Creates `key` unless it exists: `Ok(false)` when it did.
    async fn create(&self, key: &str, body: Bytes) -> Result<bool> {
        match self.op.write_with(key, body).if_not_exists(true).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(backend("create", key, e)),
        }
    }

    fn doc(&self) -> Bytes {
        let expires = keys::micros(SystemTime::now() + TTL);
        let doc = LockDoc {
            owner: self.owner.to_string(),
            expires,
        };
        Bytes::from(serde_json::to_vec(&doc).expect("lock doc serializes"))
    }

    /// Claims `d` through `source`, waiting up to `wait` while another replica holds it;
    /// `stored` tells whether the blob is in the store by now.
    pub async fn claim<F, Fut>(
        &self,
        source: &str,
        d: &Digest,
        wait: Duration,
        stored: F,
    ) -> Result<FillClaim>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<u64>>>,
    {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(FillClaim::Owner(FillLease::local()));
        }
        let key = keys::lock(source, d);
        let deadline = Instant::now() + wait;
        let mut waited = false;
        loop {
            if waited && stored().await?.is_some() {
                return Ok(FillClaim::Stored);
            }
            if self.create(&key, self.doc()).await? {
                return Ok(FillClaim::Owner(self.hold(key)));
            }
            if self.expired(&key).await? {
                tracing::info!(lock = %key, "removing an expired fill claim");
                let _ = self.op.delete(&key).await;
                continue;
            }
            if Instant::now() >= deadline {
                tracing::warn!(digest = %d, "gave up waiting for another replica's download");
                return Ok(FillClaim::Owner(FillLease::local()));
            }
            if !waited {
                tracing::debug!(digest = %d, "another replica is downloading this blob; waiting");
            }
            waited = true;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the lock at `key` is void (unreadable documents count as void).
    async fn expired(&self, key: &str) -> Result<bool> {
        let Some(buf) = found(self.op.read(key).await, "read", key)? else {
            return Ok(false); // released meanwhile: the next create decides
        };
        let now = keys::micros(SystemTime::now());
        Ok(serde_json::from_slice::<LockDoc>(&buf.to_bytes()).map_or(true, |d| d.expires < now))
    }

    /// A lease that renews the lock until dropped, then deletes it.
    fn hold(&self, key: String) -> FillLease {
        let this = self.clone();
        let k = key.clone();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TTL / 3).await;
                if let Err(e) = this.op.write(&k, this.doc()).await {
                    tracing::warn!(lock = %k, error = %e, "could not renew a fill claim");
                }
            }
        });
        FillLease::guarded(Held {
            op: self.op.clone(),
            key,
            renew,
        })
    }
}

/// A held lock: stops renewing and deletes the lock when dropped.
struct Held {
    op: Operator,
    key: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renew.abort();
        let (op, key) = (self.op.clone(), std::mem::take(&mut self.key));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = op.delete(&key).await {
                    tracing::warn!(lock = %key, error = %e, "could not release a fill claim (it expires by itself)");
                }
            });
        }
    }
}
