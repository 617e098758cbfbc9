//! Parallel ranged downloads of large cold blobs ("segments").
//!
//! On a long, lossy link one TCP stream gets a small share of the bandwidth; several streams
//! multiply it. A fill whose first ranged request (bytes `0..threshold`) shows a blob larger
//! than `threshold` fetches the rest as `Range` requests of `segments.size` bytes, at most
//! `segments.parallel` at once (the first one included). Every segment is written at its
//! offset in the spool file. The coordinator follows the contiguous written prefix: it hashes
//! it in order (reading the spool file back, from the page cache) and publishes it, so clients
//! are fed as soon as the prefix grows, whatever order segments finish in. A segment whose
//! connection fails is retried alone, from where it stopped. Nothing is committed until the
//! whole blob hashed to its digest (the caller verifies and stores it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use ferry_oci::{Digest, DigestVerifier, RepoName};
use ferry_storage::FillError;
use ferry_upstream::{BlobDownload, Upstream};
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{MirrorError, Result};
use crate::fill::MAX_RESUMES;
use crate::spool_writer::next_batch;

/// Bytes hashed per read of the spool file.
const HASH_CHUNK: u64 = 1 << 20;

/// One segment: bytes `start..end` of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// The first request of a download: the whole blob, or, when segments are on, its first
/// `threshold` bytes (the answer says whether the blob is larger: `partial`).
pub(crate) async fn first_request(
    upstream: &Upstream,
    repo: &RepoName,
    digest: &Digest,
) -> Result<BlobDownload> {
    let cfg = upstream.segments();
    if cfg.parallel <= 1 {
        return Ok(upstream.blob(repo, digest, 0).await?);
    }
    let last = cfg.threshold.0.max(1) - 1;
    Ok(upstream.blob_range(repo, digest, 0, Some(last)).await?)
}

/// Cuts `0..size` into a first segment of `first` bytes and the rest in `each`-byte pieces.
pub(crate) fn plan(size: u64, first: u64, each: u64) -> Vec<Segment> {
    let mut out = vec![Segment {
        start: 0,
        end: first.min(size),
    }];
    let mut at = first.min(size);
    while at < size {
        let end = (at + each.max(1)).min(size);
        out.push(Segment { start: at, end });
        at = end;
    }
    out
}

/// What a segmented download works with.
pub(crate) struct Segmented {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) repo: RepoName,
    pub(crate) digest: Digest,
    /// Spool file, written at offsets.
    pub(crate) writer: Arc<File>,
    /// The same file, read back for hashing.
    pub(crate) reader: Arc<File>,
    pub(crate) size: u64,
    pub(crate) parallel: usize,
}

impl Segmented {
    /// Downloads every segment (the first from `first`, already asked for) and returns the
    /// hasher over the whole blob; `progress` gets the length of the written, hashed prefix.
    pub(crate) async fn run(
        self,
        first: BlobDownload,
        segments: Vec<Segment>,
        mut progress: impl FnMut(u64),
    ) -> Result<DigestVerifier> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u64)>();
        let mut done: Vec<u64> = vec![0; segments.len()];
        let mut workers = JoinSet::new();
        let mut next = 1;
        workers.spawn(self.worker(0, segments[0], Some(first.stream), tx.clone()));
        while next < segments.len() && next < self.parallel.max(1) {
            workers.spawn(self.worker(next, segments[next], None, tx.clone()));
            next += 1;
        }
        let mut hasher = DigestVerifier::for_digest(&self.digest);
        let mut hashed = 0u64;
        while hashed < self.size {
            tokio::select! {
                Some((i, n)) = rx.recv() => done[i] = n,
                Some(joined) = workers.join_next() => {
                    joined.map_err(|e| fill(FillError::Storage(e.to_string())))??;
                    if next < segments.len() {
                        workers.spawn(self.worker(next, segments[next], None, tx.clone()));
                        next += 1;
                    }
                    continue;
                }
            }
            let prefix = contiguous(&segments, &done);
            if prefix > hashed {
                hasher = hash_range(self.reader.clone(), hasher, hashed, prefix).await?;
                hashed = prefix;
                progress(hashed);
            }
        }
        Ok(hasher)
    }

    /// A task that fetches one segment into the file, reporting its written length.
    fn worker(
        &self,
        index: usize,
        seg: Segment,
        stream: Option<BoxStream<'static, std::io::Result<Bytes>>>,
        tx: mpsc::UnboundedSender<(usize, u64)>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (upstream, repo, digest) = (
            self.upstream.clone(),
            self.repo.clone(),
            self.digest.clone(),
        );
        let writer = self.writer.clone();
        async move {
            let mut stream = stream;
            let mut written = 0u64;
            let mut failures = 0;
            loop {
                let mut s = match stream.take() {
                    Some(s) => s,
                    None => {
                        let from = seg.start + written;
                        let dl = upstream
                            .blob_range(&repo, &digest, from, Some(seg.end - 1))
                            .await?;
                        if dl.offset != from {
                            return Err(fill(FillError::Upstream {
                                reason: "invalid",
                                message: "the upstream ignored Range for a segment".into(),
                            }));
                        }
                        dl.stream
                    }
                };
                match copy_segment(&mut s, &writer, seg, &mut written, index, &tx).await {
                    Ok(()) if written == seg.end - seg.start => return Ok(()),
                    Ok(()) => {} // ended early: resume from `written`
                    Err(e) if failures < MAX_RESUMES => {
                        tracing::info!(%digest, segment = index, at = seg.start + written, error = %e, "segment cut, retrying it");
                    }
                    Err(e) => {
                        return Err(fill(FillError::Cut {
                            resumes: MAX_RESUMES,
                            message: e.to_string(),
                        }));
                    }
                }
                failures += 1;
                if failures > MAX_RESUMES {
                    return Err(fill(FillError::Short {
                        got: written,
                        expected: seg.end - seg.start,
                    }));
                }
            }
        }
    }
}

/// Copies a segment's stream into the file at its offset until it ends (or the segment is
/// full); a stream error is returned for a retry.
async fn copy_segment(
    stream: &mut BoxStream<'static, std::io::Result<Bytes>>,
    writer: &Arc<File>,
    seg: Segment,
    written: &mut u64,
    index: usize,
    tx: &mpsc::UnboundedSender<(usize, u64)>,
) -> std::io::Result<()> {
    let want = seg.end - seg.start;
    loop {
        let (batch, eof, err) = next_batch(stream).await;
        let mut chunks: Vec<Bytes> = batch.into_chunks();
        let room = want - *written;
        let mut len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if len > room {
            // More than the range asked for: keep what belongs to this segment.
            chunks = truncate(chunks, room);
            len = room;
        }
        if len > 0 {
            let (w, at) = (writer.clone(), seg.start + *written);
            tokio::task::spawn_blocking(move || write_at(&w, at, &chunks))
                .await
                .map_err(std::io::Error::other)??;
            *written += len;
            let _ = tx.send((index, *written));
        }
        if let Some(e) = err {
            return Err(e);
        }
        if eof || *written == want {
            return Ok(());
        }
    }
}

fn truncate(chunks: Vec<Bytes>, mut room: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    for c in chunks {
        if room == 0 {
            break;
        }
        let n = (c.len() as u64).min(room) as usize;
        out.push(c.slice(..n));
        room -= n as u64;
    }
    out
}

fn write_at(file: &File, mut at: u64, chunks: &[Bytes]) -> std::io::Result<()> {
    for c in chunks {
        file.write_all_at(c, at)?;
        at += c.len() as u64;
    }
    Ok(())
}

/// Length of the prefix of the blob that is written: whole segments in order, then the
/// written part of the first incomplete one.
fn contiguous(segments: &[Segment], done: &[u64]) -> u64 {
    let mut prefix = 0;
    for (s, d) in segments.iter().zip(done) {
        prefix = s.start + d;
        if s.start + d < s.end {
            break;
        }
    }
    prefix
}

/// Hashes bytes `from..to` of the file on a blocking thread.
async fn hash_range(
    file: Arc<File>,
    mut h: DigestVerifier,
    from: u64,
    to: u64,
) -> Result<DigestVerifier> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; HASH_CHUNK as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(HASH_CHUNK) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok::<_, std::io::Error>(h)
    })
    .await
    .map_err(|e| fill(FillError::Storage(e.to_string())))?
    .map_err(|e| fill(FillError::Storage(e.to_string())))
}

fn fill(e: FillError) -> MirrorError {
    MirrorError::fill(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_a_first_segment_then_even_pieces() {
        let p = plan(100, 30, 25);
        let bounds: Vec<(u64, u64)> = p.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(bounds, [(0, 30), (30, 55), (55, 80), (80, 100)]);
        assert_eq!(plan(10, 30, 25), [Segment { start: 0, end: 10 }]);
    }

    #[test]
    fn the_prefix_stops_at_the_first_incomplete_segment() {
        let p = plan(100, 30, 25);
        assert_eq!(contiguous(&p, &[30, 25, 0, 0]), 55);
        assert_eq!(contiguous(&p, &[10, 25, 25, 20]), 10);
        assert_eq!(contiguous(&p, &[30, 25, 25, 20]), 100);
        assert_eq!(contiguous(&p, &[30, 0, 25, 20]), 30);
    }

    #[test]
    fn extra_bytes_beyond_a_range_are_dropped() {
        let t = truncate(
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")],
            4,
        );
        assert_eq!(t, [Bytes::from_static(b"abc"), Bytes::from_static(b"d")]);
    }
}
