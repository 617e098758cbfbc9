//! Runs one task per key at a time: concurrent callers with the same key share the result.
//! The work runs on its own task, on the engine's tracker (so shutdown waits for it), and a
//! caller that goes away (a client that disconnects) does not cancel it for the others or
//! leave a half-done cache entry.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio_util::task::TaskTracker;

type Flights<K, V> = Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>;

/// A map of in-flight work by key.
pub struct SingleFlight<K, V: Clone> {
    map: Flights<K, V>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            map: Arc::default(),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` on `tasks`, or joins the run already in flight. Returns the value
    /// and whether this call joined someone else's run.
    pub async fn run<F>(&self, tasks: &TaskTracker, key: K, work: F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flight, joined) = {
            let mut map = self.map.lock().expect("single-flight lock");
            match map.get(&key) {
                Some(f) => (f.clone(), true),
                None => {
                    let map2 = self.map.clone();
                    let key2 = key.clone();
                    let task = tasks.spawn(async move {
                        let v = work.await;
                        map2.lock().expect("single-flight lock").remove(&key2);
                        v
                    });
                    let shared = async move { task.await.expect("single-flight task panicked") }
                        .boxed()
                        .shared();
                    map.insert(key, shared.clone());
                    (shared, false)
                }
            }
        };
        (flight.await, joined)
    }

    /// Number of runs in flight.
    pub fn len(&self) -> usize {
        self.map.lock().expect("single-flight lock").len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf = Arc::new(SingleFlight::<u32, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..10 {
            let (sf, runs) = (sf.clone(), runs.clone());
            handles.push(tokio::spawn(async move {
                sf.run(&TaskTracker::new(), 7, async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    42
                })
                .await
            }));
        }
        let mut joined = 0;
        for h in handles {
            let (v, j) = h.await.unwrap();
            assert_eq!(v, 42);
            joined += j as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 9);
        assert!(sf.is_empty(), "finished runs are forgotten");
    }

    #[tokio::test]
    async fn work_survives_a_caller_that_goes_away() {
        let sf = Arc::new(SingleFlight::<u32, u32>::default());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let caller = tokio::spawn({
            let sf = sf.clone();
            async move {
                sf.run(&TaskTracker::new(), 1, async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                    1
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        caller.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "the work finished without its caller"
        );
    }

    #[tokio::test]
    async fn the_work_is_owned_by_the_tracker() {
        let (sf, tasks) = (SingleFlight::<u32, u32>::default(), TaskTracker::new());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let work = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.fetch_add(1, Ordering::SeqCst);
            1
        };
        let caller = sf.run(&tasks, 1, work);
        // The caller goes away before the work is done; the tracker still holds the work.
        let _ = tokio::time::timeout(Duration::from_millis(10), caller).await;
        assert_eq!(tasks.len(), 1, "the run is a tracked task");
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "waiting on the tracker waits for it"
        );
    }
}
