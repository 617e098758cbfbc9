//! A Space-Saving heavy-hitter counter (Metwally, Agrawal, El Abbadi 2005): at most `cap`
//! keys, whatever the number of distinct keys seen. A new key beyond `cap` takes over the
//! entry of the smallest weight and inherits its counts, so a key's counts are never
//! underestimated, and overestimated by at most the weight it inherited (`error`). Every key
//! whose true weight exceeds `total / cap` is guaranteed to be held.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What is counted for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Bytes served (for a redirect: the length redirected).
    pub bytes: u64,
    /// Error answers (4xx other than 401, 5xx).
    pub errors: u64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

/// Which count orders the keys (what "heavy" means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// By requests.
    Requests,
    /// By bytes.
    Bytes,
}

impl Order {
    /// The weight of `c`.
    pub fn weight(self, c: &Counts) -> u64 {
        match self {
            Order::Requests => c.requests,
            Order::Bytes => c.bytes,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: Box<str>,
    counts: Counts,
    error: u64,
}

/// At most `cap` heavy hitters by one [`Order`].
#[derive(Debug, Clone)]
pub struct TopK {
    cap: usize,
    order: Order,
    index: HashMap<Box<str>, usize>,
    entries: Vec<Entry>,
}

impl TopK {
    /// An empty counter of at most `cap` keys (at least 1).
    pub fn new(cap: usize, order: Order) -> TopK {
        let cap = cap.max(1);
        TopK {
            cap,
            order,
            index: HashMap::with_capacity(cap),
            entries: Vec::with_capacity(cap),
        }
    }

    /// Counts `delta` for `key`.
    pub fn add(&mut self, key: &str, delta: &Counts) {
        if let Some(&i) = self.index.get(key) {
            self.entries[i].counts.add(delta);
            return;
        }
        if self.entries.len() < self.cap {
            self.index.insert(key.into(), self.entries.len());
            self.entries.push(Entry {
                key: key.into(),
                counts: *delta,
                error: 0,
            });
            return;
        }
        let order = self.order;
        let (i, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| order.weight(&e.counts))
            .expect("cap is at least 1");
        let e = &mut self.entries[i];
        self.index.remove(&e.key);
        e.error = order.weight(&e.counts);
        e.key = key.into();
        e.counts.add(delta);
        self.index.insert(key.into(), i);
    }

    /// Every held key with its counts and overestimate.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Counts, u64)> {
        self.entries.iter().map(|e| (&*e.key, &e.counts, e.error))
    }

    /// Keys held (at most the capacity).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u64) -> Counts {
        Counts {
            requests: n,
            bytes: n * 10,
            errors: 0,
        }
    }

    #[test]
    fn memory_stays_bounded_with_100k_distinct_keys() {
        let mut t = TopK::new(200, Order::Requests);
        for i in 0..100_000u32 {
            t.add(
                &format!("ip 10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                &req(1),
            );
        }
        assert_eq!(t.len(), 200);
        assert_eq!(t.index.len(), 200);
    }

    #[test]
    fn true_top_talkers_are_found_among_100k_light_keys() {
        let mut t = TopK::new(200, Order::Requests);
        // Ten heavy clients (1,000 to 10,000 requests) hidden among 100k one-request clients,
        // interleaved as real traffic would be.
        for i in 0..100_000u32 {
            t.add(&format!("light {i}"), &req(1));
            if i % 10 == 0 {
                for h in 0..10u64 {
                    if u64::from(i / 10) < (h + 1) * 1000 {
                        t.add(&format!("heavy {h}"), &req(1));
                    }
                }
            }
        }
        let mut top: Vec<_> = t.iter().collect();
        top.sort_by_key(|(_, c, _)| std::cmp::Reverse(c.requests));
        let names: Vec<&str> = top.iter().take(10).map(|(k, _, _)| *k).collect();
        for h in 0..10 {
            assert!(names.contains(&format!("heavy {h}").as_str()), "{names:?}");
        }
        for (k, c, err) in top.iter().take(10) {
            let h: u64 = k.strip_prefix("heavy ").unwrap().parse().unwrap();
            let truth = (h + 1) * 1000;
            assert!(c.requests >= truth, "never underestimated: {k} {c:?}");
            assert!(
                c.requests - err <= truth,
                "error bounds the overestimate: {k}"
            );
            // 100k + 55k units over 200 entries: at most ~775 too many.
            assert!(c.requests - truth <= 155_000 / 200, "{k}: {c:?}");
        }
    }

    #[test]
    fn bytes_order_keeps_the_big_downloads() {
        let mut t = TopK::new(2, Order::Bytes);
        t.add(
            "a",
            &Counts {
                requests: 1,
                bytes: 1 << 30,
                errors: 0,
            },
        );
        for i in 0..1000 {
            t.add(
                &format!("small {i}"),
                &Counts {
                    requests: 1,
                    bytes: 10,
                    errors: 0,
                },
            );
        }
        assert!(t.iter().any(|(k, c, _)| k == "a" && c.bytes == 1 << 30));
    }
}
