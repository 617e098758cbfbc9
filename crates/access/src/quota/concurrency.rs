//! Requests in flight per client: a counter per subject and a permit that gives its slot back
//! when dropped (when the response body ends or is abandoned). Counted per replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counters of requests in flight.
#[derive(Debug, Default)]
pub(crate) struct Concurrency {
    counts: Mutex<HashMap<String, u32>>,
}

/// One slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<Concurrency>,
    key: String,
}

impl Concurrency {
    /// Takes a slot of `key` if fewer than `limit` are taken.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: &str, limit: u32) -> Option<Permit> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Permit {
            owner: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Slots of `key` taken now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, key: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_and_released_on_drop() {
        let c = Arc::new(Concurrency::default());
        let a = c.try_acquire("ip 1.2.3.4", 2).unwrap();
        let b = c.try_acquire("ip 1.2.3.4", 2).unwrap();
        assert!(c.try_acquire("ip 1.2.3.4", 2).is_none());
        assert!(
            c.try_acquire("ip 5.6.7.8", 2).is_some(),
            "other clients are separate"
        );
        drop(a);
        assert_eq!(c.in_flight("ip 1.2.3.4"), 1);
        let _c = c.try_acquire("ip 1.2.3.4", 2).unwrap();
        drop(b);
        drop(_c);
        assert!(c.counts.lock().unwrap().is_empty(), "no key left behind");
    }
}
