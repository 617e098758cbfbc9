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
//!
//! Before the other segments are asked for, the first answer is watched for a moment
//! ([`probe`]): one that streams faster than `segments.one_stream_above` comes from a near
//! upstream, where one stream is as fast, and the caller fetches the rest as one stream.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_config::access::Rate;
use ferry_metrics::Metrics;
use ferry_oci::{Digest, DigestVerifier, RepoName};
use ferry_storage::FillError;
use ferry_upstream::{BlobDownload, Upstream};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{MirrorError, Result};
use crate::fill::MAX_RESUMES;
use crate::spool_writer::next_batch;

mod book;

use book::{Ask, Book, Cover};

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

/// How long the first answer is watched before the other segments are asked for.
const PROBE_TIME: Duration = Duration::from_millis(100);

/// Watches the first answer of a segmented download (bytes `0..first_len`) for up to
/// [`PROBE_TIME`]: whether it streams faster than `one_stream_above` (then one stream is as
/// fast as several: the caller fetches the rest as one). The bytes read meanwhile stay at the
/// front of the returned download's stream.
pub(crate) async fn probe(dl: BlobDownload, first_len: u64, above: Rate) -> (BlobDownload, bool) {
    let Some((amount, window)) = above.limit() else {
        return (dl, false);
    };
    let rate = amount as f64 / window.as_secs_f64().max(1e-6);
    let want = ((rate * PROBE_TIME.as_secs_f64()) as u64).max(1);
    if want > first_len {
        return (dl, false);
    }
    // The clock starts at the first body byte (an upstream may take a while to open the
    // blob; that is latency, not bandwidth), which must itself come within PROBE_TIME.
    let mut deadline = tokio::time::Instant::now() + PROBE_TIME;
    let mut stream = dl.stream.fuse();
    let (mut read, mut got) = (Vec::new(), 0u64);
    while got < want {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => {
                if read.is_empty() {
                    deadline = tokio::time::Instant::now() + PROBE_TIME;
                }
                got += chunk.as_ref().map_or(0, |c| c.len() as u64);
                let failed = chunk.is_err();
                read.push(chunk);
                if failed {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let stream = futures_util::stream::iter(read).chain(stream).boxed();
    (BlobDownload { stream, ..dl }, got >= want)
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
    /// Whether slow segments are asked again of another source.
    pub(crate) hedge: bool,
    pub(crate) metrics: Arc<Metrics>,
}

/// How often the coordinator looks for slow segments.
const HEDGE_CHECK: Duration = Duration::from_millis(200);

impl Segmented {
    /// Downloads every segment (the first from `first`, already asked for) and returns the
    /// hasher over the whole blob; `progress` gets the length of the written, hashed prefix.
    pub(crate) async fn run(
        self,
        first: BlobDownload,
        segments: Vec<Segment>,
        mut progress: impl FnMut(u64),
    ) -> Result<DigestVerifier> {
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        let mut book = Book::new(&segments, self.upstream.sources());
        let mut workers = JoinSet::new();
        let mut first = Some(first.stream);
        let mut hasher = DigestVerifier::for_digest(&self.digest);
        let mut hashed = 0u64;
        let mut tick = tokio::time::interval(HEDGE_CHECK);
        while hashed < self.size {
            while let Some(i) = book.next_to_start(self.parallel) {
                book.start(i, Instant::now());
                let w = Work {
                    index: i,
                    copy: Ask::First,
                    seg: segments[i],
                    source: book.source[i],
                };
                let stream = if i == 0 { first.take() } else { None };
                let task = self.worker(w, book.cover(i), stream, tx.clone());
                book.handles[i].push(workers.spawn(task));
            }
            tokio::select! {
                Some(i) = rx.recv() => book.progressed(i),
                Some(joined) = workers.join_next() => {
                    match joined {
                        Ok(Ok(())) => {}
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => return Err(fill(FillError::Storage(e.to_string()))),
                        Ok(Err(e)) => book.failed(e)?,
                    }
                    continue;
                }
                _ = tick.tick(), if self.hedge => {
                    for i in book.slow(Instant::now()) {
                        self.start_hedge(&mut book, &mut workers, segments[i], i, &tx);
                    }
                    continue;
                }
            }
            let prefix = contiguous(&segments, &book.done());
            if prefix > hashed {
                hasher = hash_range(self.reader.clone(), hasher, hashed, prefix).await?;
                hashed = prefix;
                progress(hashed);
            }
        }
        workers.abort_all();
        Ok(hasher)
    }

    /// Asks the rest of slow segment `i` of the next source, as a second copy; whichever
    /// copy writes a byte first writes it, and the segment is done when they meet.
    fn start_hedge(
        &self,
        book: &mut Book,
        workers: &mut JoinSet<Result<()>>,
        seg: Segment,
        i: usize,
        tx: &mpsc::UnboundedSender<usize>,
    ) {
        let cover = book.cover(i);
        let base = cover.lock().unwrap_or_else(|p| p.into_inner()).hedge_here();
        let source = (book.source[i] + 1) % book.sources;
        tracing::info!(digest = %self.digest, segment = i, at = seg.start + base, source, "segment slow, asking another source for the rest");
        Metrics::per_upstream(&self.metrics.segment_hedges, self.upstream.name(), 1);
        book.hedged[i] = true;
        let w = Work {
            index: i,
            copy: Ask::Hedge(base),
            seg,
            source,
        };
        book.handles[i].push(workers.spawn(self.worker(w, cover, None, tx.clone())));
    }

    /// A task that fetches one segment (or, for a hedge, its rest) into the file, telling
    /// the coordinator each time it wrote.
    fn worker(
        &self,
        w: Work,
        cover: Arc<Mutex<Cover>>,
        stream: Option<BoxStream<'static, std::io::Result<Bytes>>>,
        tx: mpsc::UnboundedSender<usize>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (upstream, repo, digest) = (
            self.upstream.clone(),
            self.repo.clone(),
            self.digest.clone(),
        );
        let writer = self.writer.clone();
        async move {
            let mut stream = stream;
            let mut at = w.copy.base();
            let mut failures = 0;
            let sink = Sink {
                file: &writer,
                cover: &cover,
                seg: w.seg,
                copy: w.copy,
            };
            loop {
                let mut s = match stream.take() {
                    Some(s) => s,
                    None => {
                        let from = w.seg.start + at;
                        let dl = upstream
                            .blob_range_via(w.source, &repo, &digest, from, Some(w.seg.end - 1))
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
                let report = || {
                    let _ = tx.send(w.index);
                };
                match copy_segment(&mut s, &sink, &mut at, &report).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {} // ended early: resume from `at`
                    Err(e) if failures < MAX_RESUMES => {
                        tracing::info!(%digest, segment = w.index, at = w.seg.start + at, error = %e, "segment cut, retrying it");
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
                        got: at,
                        expected: w.seg.end - w.seg.start,
                    }));
                }
            }
        }
    }
}

/// What one worker fetches.
#[derive(Clone, Copy)]
struct Work {
    index: usize,
    copy: Ask,
    seg: Segment,
    /// The source asked first.
    source: usize,
}

/// Where a segment's bytes are written: the file, and the segment's [`Cover`].
struct Sink<'a> {
    file: &'a Arc<File>,
    cover: &'a Arc<Mutex<Cover>>,
    seg: Segment,
    copy: Ask,
}

/// Copies a segment's stream into the file from `at` (bytes from the segment's start) until
/// the stream ends or the segment is complete (`Ok(true)`); a stream error is returned for a
/// retry.
async fn copy_segment(
    stream: &mut BoxStream<'static, std::io::Result<Bytes>>,
    sink: &Sink<'_>,
    at: &mut u64,
    report: &impl Fn(),
) -> std::io::Result<bool> {
    let want = sink.seg.end - sink.seg.start;
    loop {
        let (batch, eof, err) = next_batch(stream).await;
        let mut chunks: Vec<Bytes> = batch.into_chunks();
        let room = want - *at;
        let mut len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if len > room {
            // More than the range asked for: keep what belongs to this segment.
            chunks = truncate(chunks, room);
            len = room;
        }
        if len > 0 {
            let (file, cover) = (sink.file.clone(), sink.cover.clone());
            let (copy, from, start) = (sink.copy, *at, sink.seg.start);
            let complete = tokio::task::spawn_blocking(move || {
                let mut c = cover.lock().unwrap_or_else(|p| p.into_inner());
                c.write(copy, from, &chunks, |off, bytes| {
                    write_at(&file, start + off, bytes)
                })
            })
            .await
            .map_err(std::io::Error::other)??;
            *at += len;
            report();
            if complete {
                return Ok(true);
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        if *at == want {
            return Ok(true);
        }
        if eof {
            return Ok(false);
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

fn write_at(file: &File, at: u64, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all_at(bytes, at)
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
