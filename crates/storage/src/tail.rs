//! The newest bytes of a download, kept in memory so that the readers that keep up with it are
//! fed from the network's own buffers instead of from the spool file.
//!
//! A download pushes each batch it receives ([`Tail::push`]) before it is written; a reader at
//! an offset the tail holds gets a slice of that buffer (no copy, no file read, no wait for the
//! write). The download trims the tail ([`Tail::trim`]) only below what is already in the spool
//! file, so every received byte is always in the tail or in the file: a reader that falls
//! behind, or joins late, reads the file. Memory is bounded by what the download keeps (a few
//! MiB behind the newest byte) plus the writes in flight.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// Received bytes not yet trimmed, contiguous.
#[derive(Debug, Default)]
pub struct Tail {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each buffer with the blob offset of its first byte, in order, without gaps.
    chunks: VecDeque<(u64, Bytes)>,
    /// Offset one past the last byte held.
    end: u64,
}

impl Tail {
    /// Appends `chunks`, whose first byte is at offset `at`. A push that does not continue
    /// the bytes held (a restarted download) drops them first.
    pub fn push(&self, at: u64, chunks: &[Bytes]) {
        let mut t = self.lock();
        if at != t.end {
            t.chunks.clear();
            t.end = at;
        }
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            let start = t.end;
            t.end += c.len() as u64;
            t.chunks.push_back((start, c.clone()));
        }
    }

    /// Up to `max` bytes from offset `pos`, if the tail holds it (one buffer's worth at most).
    pub fn get(&self, pos: u64, max: usize) -> Option<Bytes> {
        let t = self.lock();
        let i = t.chunks.partition_point(|(start, _)| *start <= pos);
        let (start, c) = t.chunks.get(i.checked_sub(1)?)?;
        let from = (pos - start) as usize;
        (from < c.len()).then(|| c.slice(from..c.len().min(from + max.max(1))))
    }

    /// The offset of the first byte held, if any: every byte before it is in the file.
    pub fn start(&self) -> Option<u64> {
        self.lock().chunks.front().map(|(start, _)| *start)
    }

    /// Drops the buffers that end at or before `below`.
    pub fn trim(&self, below: u64) {
        let mut t = self.lock();
        while t
            .chunks
            .front()
            .is_some_and(|(start, c)| start + c.len() as u64 <= below)
        {
            t.chunks.pop_front();
        }
    }

    /// Bytes held.
    #[cfg(test)]
    fn held(&self) -> u64 {
        let t = self.lock();
        t.chunks.front().map_or(0, |(start, _)| t.end - start)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn serves_what_it_holds_and_nothing_else() {
        let t = Tail::default();
        assert_eq!(t.get(0, 10), None);
        t.push(100, &[b("abc"), b(""), b("defg")]);
        assert_eq!(t.get(99, 10), None);
        assert_eq!(t.get(100, 10), Some(b("abc")));
        assert_eq!(t.get(101, 1), Some(b("b")));
        assert_eq!(t.get(103, 10), Some(b("defg")));
        assert_eq!(t.get(106, 10), Some(b("g")));
        assert_eq!(t.get(107, 10), None);
        assert_eq!(t.held(), 7);
    }

    #[test]
    fn trims_only_whole_buffers_below_the_mark() {
        let t = Tail::default();
        t.push(0, &[b("abc"), b("defg")]);
        t.trim(2);
        assert_eq!(t.get(0, 10), Some(b("abc")));
        t.trim(5);
        assert_eq!(t.get(0, 10), None);
        assert_eq!(t.start(), Some(3));
        assert_eq!(t.get(4, 10), Some(b("efg")));
        t.push(7, &[b("hi")]);
        assert_eq!(t.get(7, 10), Some(b("hi")));
        assert_eq!(t.held(), 6);
    }

    #[test]
    fn a_push_that_does_not_continue_starts_afresh() {
        let t = Tail::default();
        t.push(0, &[b("abc")]);
        t.push(10, &[b("xyz")]);
        assert_eq!(t.get(0, 10), None);
        assert_eq!(t.get(11, 10), Some(b("yz")));
    }
}
