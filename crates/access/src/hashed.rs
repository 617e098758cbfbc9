//! Maps keyed by a 64-bit keyed hash of a string instead of the string.
//!
//! The counters (`quota::local`) and the heavy-hitter index (`usage::topk`) hash each key once
//! with SipHash under this process's random key ([`KeyHasher`]) and use the result as the map
//! key. The map then must not hash it again: [`HashedMap`] passes the value through, which
//! is safe because it is already a keyed hash an attacker cannot steer. A lookup allocates and
//! compares nothing; two keys share an entry only if their hashes collide (about once in
//! 2^64 / n^2 for n keys held).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// A map from an already keyed 64-bit hash to `V`.
pub(crate) type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The hasher of [`HashedMap`]: the `u64` key is its own hash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else rather than lose it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keyed hash of the keys: SipHash with a random key made when this is created.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyHasher(RandomState);

impl KeyHasher {
    /// The hash of `key`.
    pub(crate) fn of(&self, key: &str) -> u64 {
        self.0.hash_one(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_their_hash_and_distinct_keys_stay_apart() {
        let h = KeyHasher::default();
        let mut m: HashedMap<usize> = HashedMap::default();
        for i in 0..10_000 {
            m.insert(h.of(&format!("ip 10.0.{}.{}", i / 256, i % 256)), i);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&h.of("ip 10.0.3.7")), Some(&(3 * 256 + 7)));
        assert_eq!(m.get(&h.of("ip 10.0.3.7 ")), None);
    }

    #[test]
    fn two_hashers_key_differently() {
        assert_ne!(KeyHasher::default().of("k"), KeyHasher::default().of("k"));
    }
}
