//! GCRA counters in this process's memory (one replica, or the fallback while Redis is down).
//!
//! One mutex over one map: each operation is a few float operations, so contention is not the
//! bottleneck. Keys whose TAT has passed carry no information and are pruned as the map grows,
//! so memory follows the number of recently active clients, not of all clients ever seen.
//!
//! The map holds a 64-bit keyed hash of each key ([`crate::hashed`]), not the key: a lookup
//! allocates, hashes again and compares nothing, and an entry is 16 bytes.

use std::sync::Mutex;

use tokio::time::Instant;

use super::gcra::{Op, Verdict, evaluate};
use crate::hashed::{HashedMap, KeyHasher};

/// In-memory counters.
#[derive(Debug)]
pub(crate) struct LocalStore {
    epoch: Instant,
    keys: KeyHasher,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tats: HashedMap<f64>,
    prune_at: usize,
}

const MIN_PRUNE: usize = 4096;

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            epoch: Instant::now(),
            keys: KeyHasher::default(),
            state: Mutex::new(State {
                tats: HashedMap::default(),
                prune_at: MIN_PRUNE,
            }),
        }
    }
}

impl LocalStore {
    /// Microseconds since this store was made.
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e6
    }

    /// Runs a batch atomically.
    pub(crate) fn run(&self, ops: &[Op]) -> Vec<Verdict> {
        let now = self.now();
        let keys: Vec<u64> = ops.iter().map(|o| self.keys.of(&o.key)).collect();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tats: Vec<Option<f64>> = keys.iter().map(|k| st.tats.get(k).copied()).collect();
        let (verdicts, stores) = evaluate(now, ops, &tats);
        for (i, tat) in stores {
            st.tats.insert(keys[i], tat);
        }
        if st.tats.len() >= st.prune_at {
            st.tats.retain(|_, tat| *tat > now);
            st.prune_at = (st.tats.len() * 2).max(MIN_PRUNE);
        }
        verdicts
    }

    /// How many keys are held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::gcra::{Mode, Params};
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expired_keys_are_pruned() {
        let store = LocalStore::default();
        let op = |k: usize| Op {
            key: format!("k{k}"),
            params: Params::per(1, 1e6),
            cost: 1.0,
            mode: Mode::Take,
        };
        for k in 0..MIN_PRUNE - 1 {
            store.run(&[op(k)]);
        }
        assert_eq!(store.len(), MIN_PRUNE - 1);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        store.run(&[op(MIN_PRUNE)]);
        assert_eq!(store.len(), 1);
    }
}
