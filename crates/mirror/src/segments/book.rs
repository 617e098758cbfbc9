//! The bookkeeping of a segmented download: which bytes of each segment are written (by its
//! first ask and, once it ran slow, by a hedge asked of another source), which segments are
//! running, how fast finished segments went, and which ran slow.
//!
//! Two asks of one segment never write the same byte: each writes only what the other has not
//! written yet, under the segment's lock, so the file holds exactly one source's bytes at every
//! offset and nothing changes behind the hasher's back once a prefix is hashed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::Segment;
use crate::error::{MirrorError, Result};

/// A segment is not hedged before it has run this long.
const HEDGE_FLOOR: Duration = Duration::from_millis(500);

/// A segment that wrote nothing for this long is hedged, whatever the pace (a stalled source,
/// also before any segment finished).
const STALL: Duration = Duration::from_secs(2);

/// Which ask of a segment a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// The first ask, from the segment's start.
    First,
    /// The hedge, from this many bytes into the segment.
    Hedge(u64),
}

impl Ask {
    /// Where this ask starts, in bytes from the segment's start.
    pub(crate) fn base(self) -> u64 {
        match self {
            Ask::First => 0,
            Ask::Hedge(b) => b,
        }
    }
}

/// Which bytes of one segment are written (offsets from the segment's start).
#[derive(Debug)]
pub(crate) struct Cover {
    len: u64,
    /// The first ask's position: it has covered `0..first` (itself, or the hedge before it).
    first: u64,
    /// The hedge's start and position, once hedged.
    hedge: Option<(u64, u64)>,
}

impl Cover {
    fn new(len: u64) -> Self {
        Cover {
            len,
            first: 0,
            hedge: None,
        }
    }

    /// Bytes written without a gap from the segment's start.
    pub(crate) fn done(&self) -> u64 {
        let hedged = self.hedge.map_or(0, |(_, end)| end);
        self.first.max(hedged).min(self.len)
    }

    /// Starts a hedge where the written prefix ends; returns that offset.
    pub(crate) fn hedge_here(&mut self) -> u64 {
        let at = self.done();
        self.hedge = Some((at, at));
        at
    }

    /// Writes what ask `ask` read at `at` (`chunks`) through `put(offset, bytes)`, except the
    /// bytes the other ask already wrote; returns whether the segment is now complete.
    pub(crate) fn write(
        &mut self,
        ask: Ask,
        at: u64,
        chunks: &[bytes::Bytes],
        mut put: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        if self.done() == self.len {
            return Ok(true);
        }
        let other_end = match ask {
            Ask::First => self.hedge.map_or(0, |(_, end)| end),
            Ask::Hedge(_) => self.first,
        };
        let mut off = at;
        for c in chunks {
            let end = off + c.len() as u64;
            let from = off.max(other_end).min(end);
            if from < end {
                put(from, &c[(from - off) as usize..])?;
            }
            off = end;
        }
        match ask {
            Ask::First => self.first = self.first.max(off),
            Ask::Hedge(_) => {
                if let Some((_, pos)) = self.hedge.as_mut() {
                    *pos = (*pos).max(off);
                }
            }
        }
        Ok(self.done() == self.len)
    }
}

/// The coordinator's view of every segment.
pub(crate) struct Book {
    lens: Vec<u64>,
    covers: Vec<Arc<Mutex<Cover>>>,
    /// Segments whose completion was seen (their tasks are stopped, their pace recorded).
    finished: Vec<bool>,
    /// Whether a segment was hedged (once at most).
    pub(crate) hedged: Vec<bool>,
    /// The source each segment is first asked of: the first (the mirrors in order, then the
    /// registry, with the usual fallback), as every request; other sources only get hedges.
    pub(crate) source: Vec<usize>,
    /// How many sources there are.
    pub(crate) sources: usize,
    started: Vec<Option<Instant>>,
    /// When each segment last wrote (or started), and how much it had then.
    last: Vec<Option<(Instant, u64)>>,
    /// Seconds per byte of every finished segment.
    pace: Vec<f64>,
    /// The tasks working on each segment.
    pub(crate) handles: Vec<Vec<AbortHandle>>,
}

fn lock(c: &Mutex<Cover>) -> std::sync::MutexGuard<'_, Cover> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Book {
    /// A book for `segments`, spread over `sources` sources.
    pub(crate) fn new(segments: &[Segment], sources: usize) -> Self {
        let n = segments.len();
        let sources = sources.max(1);
        let lens: Vec<u64> = segments.iter().map(|s| s.end - s.start).collect();
        Book {
            covers: lens
                .iter()
                .map(|&l| Arc::new(Mutex::new(Cover::new(l))))
                .collect(),
            lens,
            finished: vec![false; n],
            hedged: vec![false; n],
            source: vec![0; n],
            sources,
            started: vec![None; n],
            last: vec![None; n],
            pace: Vec::new(),
            handles: (0..n).map(|_| Vec::new()).collect(),
        }
    }

    /// Segment `i`'s cover, shared with its workers.
    pub(crate) fn cover(&self, i: usize) -> Arc<Mutex<Cover>> {
        self.covers[i].clone()
    }

    /// Marks segment `i` started.
    pub(crate) fn start(&mut self, i: usize, now: Instant) {
        self.started[i] = Some(now);
        self.last[i] = Some((now, 0));
    }

    /// Written prefix of every segment.
    pub(crate) fn done(&self) -> Vec<u64> {
        self.covers.iter().map(|c| lock(c).done()).collect()
    }

    /// The next segment to start while fewer than `parallel` are running.
    pub(crate) fn next_to_start(&self, parallel: usize) -> Option<usize> {
        let running = (0..self.lens.len())
            .filter(|&i| self.started[i].is_some() && !self.finished[i])
            .count();
        if running >= parallel.max(1) {
            return None;
        }
        (0..self.lens.len()).find(|&i| self.started[i].is_none())
    }

    /// Segment `i` wrote: once complete, its other ask is stopped and its pace recorded.
    pub(crate) fn progressed(&mut self, i: usize) {
        let done = lock(&self.covers[i]).done();
        if self.last[i].is_some_and(|(_, n)| done > n) {
            self.last[i] = Some((Instant::now(), done));
        }
        if self.finished[i] || done < self.lens[i] {
            return;
        }
        self.finished[i] = true;
        for h in self.handles[i].drain(..) {
            h.abort();
        }
        if let Some(t) = self.started[i] {
            let secs = t.elapsed().as_secs_f64();
            self.pace.push(secs / self.lens[i].max(1) as f64);
        }
    }

    /// A worker's error fails the download, unless every running, unfinished segment still
    /// has an ask at work (the failed one was a hedge, or the ask its hedge outran).
    pub(crate) fn failed(&mut self, e: MirrorError) -> Result<()> {
        let covered = (0..self.lens.len())
            .filter(|&i| self.started[i].is_some() && !self.finished[i])
            .filter(|&i| lock(&self.covers[i]).done() < self.lens[i])
            .all(|i| self.handles[i].iter().any(|h| !h.is_finished()));
        if covered { Ok(()) } else { Err(e) }
    }

    /// Unfinished, unhedged segments that have run more than twice as long as the pace of
    /// the finished ones predicts for their length (and at least half a second), or that
    /// wrote nothing for [`STALL`].
    pub(crate) fn slow(&self, now: Instant) -> Vec<usize> {
        let pace = median(&self.pace);
        let behind = |i: usize, t: Instant| {
            let ran = now.duration_since(t);
            pace.is_some_and(|p| {
                let expected = Duration::from_secs_f64(p * self.lens[i] as f64);
                ran > HEDGE_FLOOR && ran > 2 * expected
            })
        };
        let stalled = |i: usize| self.last[i].is_some_and(|(t, _)| now.duration_since(t) > STALL);
        (0..self.lens.len())
            .filter(|&i| !self.hedged[i] && !self.finished[i])
            .filter(|&i| self.started[i].is_some_and(|t| behind(i, t) || stalled(i)))
            .collect()
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn written(c: &mut Cover, ask: Ask, at: u64, data: &[u8], file: &mut [u8]) -> bool {
        c.write(ask, at, &[Bytes::copy_from_slice(data)], |off, b| {
            file[off as usize..off as usize + b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn two_asks_write_each_byte_once_and_meet() {
        let mut file = [0u8; 10];
        let mut c = Cover::new(10);
        assert!(!written(&mut c, Ask::First, 0, b"aaa", &mut file));
        assert_eq!(c.hedge_here(), 3);
        // The hedge writes 3..7; the first ask then reads 3..6 again: nothing is rewritten.
        assert!(!written(&mut c, Ask::Hedge(3), 3, b"HHHH", &mut file));
        assert!(!written(&mut c, Ask::First, 3, b"xxx", &mut file));
        assert_eq!(c.done(), 7);
        // The first ask outruns the hedge from 6: it writes only 7..9.
        assert!(!written(&mut c, Ask::First, 6, b"xyy", &mut file));
        assert_eq!(c.done(), 9);
        // The hedge's next bytes (7..10) are written only past the first ask's 9.
        assert!(written(&mut c, Ask::Hedge(3), 7, b"HHz", &mut file));
        assert_eq!(&file, b"aaaHHHHyyz");
        assert!(
            written(&mut c, Ask::First, 9, b"q", &mut file),
            "complete: nothing more"
        );
        assert_eq!(&file, b"aaaHHHHyyz");
    }

    #[test]
    fn a_segment_is_slow_against_the_pace_of_finished_ones() {
        let segs = [
            Segment { start: 0, end: 100 },
            Segment {
                start: 100,
                end: 200,
            },
        ];
        let mut b = Book::new(&segs, 2);
        assert_eq!(b.source, [0, 0], "first asks go where every request goes");
        let t0 = Instant::now();
        b.start(0, t0);
        b.start(1, t0);
        assert!(
            b.slow(t0 + Duration::from_millis(1900)).is_empty(),
            "no pace, no stall yet"
        );
        lock(&b.covers[1]).first = 100;
        b.progressed(1);
        let pace = b.pace[0];
        let expected = Duration::from_secs_f64(pace * 100.0);
        let later = t0 + (2 * expected).max(HEDGE_FLOOR) + Duration::from_millis(10);
        assert_eq!(b.slow(later), [0]);
        b.hedged[0] = true;
        assert!(b.slow(later).is_empty(), "hedged once at most");
    }

    #[test]
    fn a_segment_that_writes_nothing_is_hedged_without_a_pace() {
        let segs = [Segment { start: 0, end: 100 }];
        let mut b = Book::new(&segs, 2);
        let t0 = Instant::now();
        b.start(0, t0);
        assert!(b.slow(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(b.slow(t0 + STALL + Duration::from_millis(10)), [0]);
        lock(&b.covers[0]).first = 10;
        b.progressed(0);
        let now = Instant::now();
        assert!(
            b.slow(now + Duration::from_secs(1)).is_empty(),
            "it wrote again"
        );
        assert_eq!(b.slow(now + STALL + Duration::from_millis(10)), [0]);
    }
}
