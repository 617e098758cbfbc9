//! Sizes and last-served times of the blobs in the local tier, and the choice of which leave it
//! when it grows above its limit (least recently served first, down to 90% of the limit).

use std::collections::HashMap;
use std::time::SystemTime;

use ferry_oci::Digest;

use crate::BlobEntry;

/// The local tier's contents.
#[derive(Debug, Default)]
pub struct Lru {
    entries: HashMap<Digest, (u64, SystemTime)>,
    total: u64,
    max: u64,
}

impl Lru {
    /// An index of `entries` with a size limit.
    pub fn new(max: u64, entries: Vec<BlobEntry>) -> Self {
        let mut lru = Lru {
            max,
            ..Lru::default()
        };
        for e in entries {
            lru.insert(e.digest, e.size, e.last_access);
        }
        lru
    }

    /// Records a blob (replacing an older record).
    pub fn insert(&mut self, d: Digest, size: u64, when: SystemTime) {
        if let Some((old, _)) = self.entries.insert(d, (size, when)) {
            self.total -= old;
        }
        self.total += size;
    }

    /// Records that a blob was served.
    pub fn touch(&mut self, d: &Digest, when: SystemTime) {
        if let Some(e) = self.entries.get_mut(d) {
            e.1 = when;
        }
    }

    /// Forgets a blob.
    pub fn remove(&mut self, d: &Digest) {
        if let Some((size, _)) = self.entries.remove(d) {
            self.total -= size;
        }
    }

    /// Whether the blob is recorded.
    pub fn contains(&self, d: &Digest) -> bool {
        self.entries.contains_key(d)
    }

    /// Total bytes recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Blobs to drop (and forgets them) so the total gets under 90% of the limit; empty while
    /// under the limit.
    pub fn victims(&mut self) -> Vec<Digest> {
        if self.total <= self.max {
            return Vec::new();
        }
        let target = self.max / 10 * 9;
        let mut by_age: Vec<(Digest, u64, SystemTime)> = self
            .entries
            .iter()
            .map(|(d, (s, t))| (d.clone(), *s, *t))
            .collect();
        by_age.sort_by_key(|(_, _, t)| *t);
        let mut out = Vec::new();
        for (d, _, _) in by_age {
            if self.total <= target {
                break;
            }
            self.remove(&d);
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn oldest_leave_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let (a, b, c) = (
            Digest::sha256_of(b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"c"),
        );
        let mut lru = Lru::new(100, Vec::new());
        lru.insert(a.clone(), 40, t0);
        lru.insert(b.clone(), 40, t0 + Duration::from_secs(1));
        assert!(lru.victims().is_empty());
        lru.touch(&a, t0 + Duration::from_secs(2));
        lru.insert(c.clone(), 40, t0 + Duration::from_secs(3));
        assert_eq!(lru.victims(), vec![b.clone()]);
        assert!(lru.contains(&a) && lru.contains(&c) && !lru.contains(&b));
        assert_eq!(lru.total(), 80);
    }
}
