//! The in-memory index of stored blobs: sizes, last-served times, and the size-capped
//! least-recently-served eviction that keeps the cache under `storage.max_size`.
//!
//! The index is rebuilt from the store at start-up (file modification times hold the last
//! access). Accesses are recorded in memory and written back in batches, so serving a blob costs
//! no extra I/O. When the total goes above the limit, the least recently served blobs are
//! deleted until it is below 90% of the limit. Deleting a blob that is being served is safe:
//! readers keep their open handle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_metrics::Metrics;
use ferry_oci::Digest;
use ferry_storage::BlobStore;
use tokio::sync::Notify;

/// How often recorded accesses are written back.
pub const TOUCH_FLUSH_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    /// Microseconds since the epoch.
    last_access: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, Entry>,
    total: u64,
    touched: HashSet<Digest>,
}

/// The blob index.
pub struct Index {
    inner: Mutex<Inner>,
    max_bytes: AtomicU64,
    metrics: Arc<Metrics>,
    wake: Notify,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

impl Index {
    /// An empty index with a size limit.
    pub fn new(max_bytes: u64, metrics: Arc<Metrics>) -> Self {
        Index {
            inner: Mutex::default(),
            max_bytes: AtomicU64::new(max_bytes),
            metrics,
            wake: Notify::new(),
        }
    }

    /// Loads every blob the store holds.
    pub async fn load(&self, store: &dyn BlobStore) -> ferry_storage::Result<()> {
        let list = store.list().await?;
        let mut inner = self.inner.lock().expect("index lock");
        for b in list {
            let e = Entry {
                size: b.size,
                last_access: micros(b.last_access),
            };
            if let Some(old) = inner.entries.insert(b.digest, e) {
                inner.total -= old.size;
            }
            inner.total += b.size;
        }
        self.metrics.storage_bytes.set(inner.total as i64);
        Ok(())
    }

    /// Changes the size limit (config reload).
    pub fn set_max(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether a blob is known to be stored.
    pub fn contains(&self, d: &Digest) -> bool {
        self.inner
            .lock()
            .expect("index lock")
            .entries
            .contains_key(d)
    }

    /// Size of a stored blob.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        self.inner
            .lock()
            .expect("index lock")
            .entries
            .get(d)
            .map(|e| e.size)
    }

    /// Records a newly stored blob (as just served).
    pub fn insert(&self, d: Digest, size: u64) {
        let mut inner = self.inner.lock().expect("index lock");
        let e = Entry {
            size,
            last_access: micros(SystemTime::now()),
        };
        if let Some(old) = inner.entries.insert(d, e) {
            inner.total -= old.size;
        }
        inner.total += size;
        self.metrics.storage_bytes.set(inner.total as i64);
        if inner.total > self.max_bytes.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Records that a blob was served now.
    pub fn touch(&self, d: &Digest) {
        let mut inner = self.inner.lock().expect("index lock");
        if let Some(e) = inner.entries.get_mut(d) {
            e.last_access = micros(SystemTime::now());
            if !inner.touched.contains(d) {
                inner.touched.insert(d.clone());
            }
        }
    }

    /// Forgets a blob (found missing in the store).
    pub fn remove(&self, d: &Digest) {
        let mut inner = self.inner.lock().expect("index lock");
        if let Some(old) = inner.entries.remove(d) {
            inner.total -= old.size;
            self.metrics.storage_bytes.set(inner.total as i64);
        }
    }

    /// Total bytes stored.
    pub fn total(&self) -> u64 {
        self.inner.lock().expect("index lock").total
    }

    /// Number of blobs stored.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("index lock").entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes recorded accesses back to the store.
    pub async fn flush(&self, store: &dyn BlobStore) {
        let touched: Vec<Digest> =
            std::mem::take(&mut self.inner.lock().expect("index lock").touched)
                .into_iter()
                .collect();
        if !touched.is_empty()
            && let Err(e) = store.touch(&touched, SystemTime::now()).await
        {
            tracing::warn!(error = %e, "could not record blob access times");
        }
    }

    /// Deletes least-recently-served blobs until the total is under 90% of the limit.
    /// Returns the number of blobs evicted.
    pub async fn evict(&self, store: &dyn BlobStore) -> usize {
        let max = self.max_bytes.load(Ordering::Relaxed);
        let victims = self.pick_victims(max);
        let mut evicted = 0;
        for (d, size) in victims {
            match store.delete(&d).await {
                Ok(()) => {
                    self.remove(&d);
                    self.metrics.evictions.inc();
                    self.metrics.evicted_bytes.inc_by(size);
                    evicted += 1;
                    tracing::info!(digest = %d, size, "evicted least recently served blob");
                }
                Err(e) => tracing::warn!(digest = %d, error = %e, "eviction failed"),
            }
        }
        evicted
    }

    fn pick_victims(&self, max: u64) -> Vec<(Digest, u64)> {
        let inner = self.inner.lock().expect("index lock");
        if inner.total <= max {
            return Vec::new();
        }
        let target = max / 10 * 9;
        let mut by_age: Vec<(&Digest, &Entry)> = inner.entries.iter().collect();
        by_age.sort_by_key(|(_, e)| e.last_access);
        let mut total = inner.total;
        let mut out = Vec::new();
        for (d, e) in by_age {
            if total <= target {
                break;
            }
            total -= e.size;
            out.push((d.clone(), e.size));
        }
        out
    }

    /// Background upkeep: writes back access times and evicts when over the limit, until
    /// `stop` fires.
    pub async fn maintain(
        self: Arc<Self>,
        store: Arc<dyn BlobStore>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TOUCH_FLUSH_EVERY) => {}
            }
            self.flush(store.as_ref()).await;
            self.evict(store.as_ref()).await;
        }
        self.flush(store.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferry_storage::fs::FsStore;

    async fn put(store: &FsStore, idx: &Index, n: u8, size: usize) -> Digest {
        let data = vec![n; size];
        let d = Digest::sha256_of(&data);
        store.put_verified(&d, Bytes::from(data)).await.unwrap();
        idx.insert(d.clone(), size as u64);
        d
    }

    #[tokio::test]
    async fn evicts_least_recently_served_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let idx = Index::new(1000, Arc::new(Metrics::new()));
        let a = put(&store, &idx, 1, 400).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let b = put(&store, &idx, 2, 400).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        idx.touch(&a); // a is now more recent than b
        let c = put(&store, &idx, 3, 400).await;
        assert_eq!(idx.total(), 1200);
        assert_eq!(idx.evict(&store).await, 1);
        assert!(
            !idx.contains(&b) && store.stat(&b).await.unwrap().is_none(),
            "b was least recently served"
        );
        assert!(idx.contains(&a) && idx.contains(&c));
        assert_eq!(idx.total(), 800);
        assert_eq!(idx.evict(&store).await, 0, "under the limit: nothing to do");
    }

    #[tokio::test]
    async fn reload_from_store_keeps_access_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let m = Arc::new(Metrics::new());
        let idx = Index::new(u64::MAX, m.clone());
        let old = put(&store, &idx, 1, 100).await;
        let new = put(&store, &idx, 2, 100).await;
        store
            .touch(
                std::slice::from_ref(&old),
                SystemTime::now() - Duration::from_secs(3600),
            )
            .await
            .unwrap();
        let again = Index::new(150, m);
        again.load(&store).await.unwrap();
        assert_eq!(again.len(), 2);
        again.evict(&store).await;
        assert!(!again.contains(&old) && again.contains(&new));
    }
}
