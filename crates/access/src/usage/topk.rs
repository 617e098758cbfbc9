//! A Space-Saving heavy-hitter counter (Metwally, Agrawal, El Abbadi 2005): at most `cap`
//! keys, whatever the number of distinct keys seen. A new key beyond `cap` takes over the
//! entry of the smallest weight and inherits its counts, so a key's counts are never
//! underestimated, and overestimated by at most the weight it inherited (`error`). Every key
//! whose true weight exceeds `total / cap` is guaranteed to be held.

use serde::{Deserialize, Serialize};

use crate::hashed::{HashedMap, KeyHasher};

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
    hash: u64,
    counts: Counts,
    error: u64,
}

/// At most `cap` heavy hitters by one [`Order`].
///
/// Entries sit in a binary min-heap by weight (`heap` holds entry numbers, `pos` each entry's
/// place in it), so finding the lightest entry to take over is O(1) and every change is
/// O(log cap): no scan of the entries per new key, whatever the capacity. The index maps a
/// keyed hash of each key ([`crate::hashed`]) to its entry, so a lookup neither allocates nor
/// compares strings.
#[derive(Debug, Clone)]
pub struct TopK {
    cap: usize,
    order: Order,
    keys: KeyHasher,
    index: HashedMap<usize>,
    entries: Vec<Entry>,
    heap: Vec<usize>,
    pos: Vec<usize>,
}

impl TopK {
    /// An empty counter of at most `cap` keys (at least 1).
    pub fn new(cap: usize, order: Order) -> TopK {
        TopK::keyed(cap, order, KeyHasher::default())
    }

    /// Like [`TopK::new`], hashing keys with `keys` (counters that share it can share one
    /// hash of a key: [`TopK::add_hashed`]).
    pub(crate) fn keyed(cap: usize, order: Order, keys: KeyHasher) -> TopK {
        let cap = cap.max(1);
        TopK {
            cap,
            order,
            keys,
            index: HashedMap::with_capacity_and_hasher(cap, Default::default()),
            entries: Vec::with_capacity(cap),
            heap: Vec::with_capacity(cap),
            pos: Vec::with_capacity(cap),
        }
    }

    /// Counts `delta` for `key`.
    pub fn add(&mut self, key: &str, delta: &Counts) {
        self.add_hashed(self.keys.of(key), key, delta);
    }

    /// Counts `delta` for `key`, whose hash under this counter's [`KeyHasher`] is `hash`.
    pub(crate) fn add_hashed(&mut self, hash: u64, key: &str, delta: &Counts) {
        if let Some(&e) = self.index.get(&hash) {
            self.entries[e].counts.add(delta);
            self.sift_down(self.pos[e]);
            return;
        }
        if self.entries.len() < self.cap {
            let e = self.entries.len();
            self.index.insert(hash, e);
            self.entries.push(Entry {
                key: key.into(),
                hash,
                counts: *delta,
                error: 0,
            });
            self.heap.push(e);
            self.pos.push(e);
            self.sift_up(e);
            return;
        }
        // The lightest entry is taken over: the new key inherits its weight as its error.
        let e = self.heap[0];
        let order = self.order;
        let entry = &mut self.entries[e];
        self.index.remove(&entry.hash);
        entry.error = order.weight(&entry.counts);
        entry.key = key.into();
        entry.hash = hash;
        entry.counts.add(delta);
        self.index.insert(hash, e);
        self.sift_down(0);
    }

    fn weight_at(&self, at: usize) -> u64 {
        self.order.weight(&self.entries[self.heap[at]].counts)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a]] = a;
        self.pos[self.heap[b]] = b;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.weight_at(parent) <= self.weight_at(at) {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if l < self.heap.len() && self.weight_at(l) < self.weight_at(least) {
                least = l;
            }
            if r < self.heap.len() && self.weight_at(r) < self.weight_at(least) {
                least = r;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
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
    fn the_lightest_entry_is_always_the_one_taken_over() {
        // Against a plain scan for the minimum, over uneven byte weights.
        let mut t = TopK::new(16, Order::Bytes);
        let mut x: u64 = 1;
        for _ in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 40);
            let c = Counts {
                requests: 1,
                bytes: (x >> 40) % 1000,
                errors: 0,
            };
            let full = t.len() == 16;
            let held = t.index.contains_key(&t.keys.of(&key));
            let min = t.iter().map(|(_, c, _)| c.bytes).min();
            t.add(&key, &c);
            if !held && full {
                let (_, got, err) = t.iter().find(|(k, _, _)| *k == key).unwrap();
                assert_eq!(Some(err), min, "took over the lightest");
                assert_eq!(got.bytes, err + c.bytes);
            }
            assert_eq!(t.index.len(), t.len());
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
