//! Writing a download to its spool file off the async threads, overlapped with the network.
//!
//! Network chunks are grouped into batches of up to [`BATCH`] bytes without copying (a batch is
//! a list of the network's own buffers). Each batch is hashed and written with one vectored
//! write on a blocking thread while the next batch is read from the socket; the caller learns
//! how many bytes are durable in the file when a write completes.

use std::fs::File;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;
use ferry_oci::DigestVerifier;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

/// Largest batch written at once.
pub const BATCH: usize = 1024 * 1024;

/// Chunks read from the network, in order.
#[derive(Default)]
pub struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.chunks.push(b);
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The network's buffers, in order.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// Drops the first `*skip` bytes (already written before a resume restarted at 0).
    pub fn skip(&mut self, skip: &mut u64) {
        while *skip > 0 && !self.chunks.is_empty() {
            let first = &mut self.chunks[0];
            let n = (*skip).min(first.len() as u64) as usize;
            *skip -= n as u64;
            self.len -= n;
            if n == first.len() {
                self.chunks.remove(0);
            } else {
                *first = first.slice(n..);
            }
        }
    }
}

/// Reads what the stream has ready, up to [`BATCH`] bytes, waiting only for the first chunk.
/// Returns the batch, whether the stream ended, and an error that ended it.
pub async fn next_batch(
    stream: &mut BoxStream<'static, io::Result<Bytes>>,
) -> (Batch, bool, Option<io::Error>) {
    let mut batch = Batch::default();
    match stream.next().await {
        None => return (batch, true, None),
        Some(Err(e)) => return (batch, false, Some(e)),
        Some(Ok(c)) => batch.push(c),
    }
    while batch.len < BATCH {
        match stream.next().now_or_never() {
            Some(Some(Ok(c))) => batch.push(c),
            Some(Some(Err(e))) => return (batch, false, Some(e)),
            Some(None) => return (batch, true, None),
            None => break,
        }
    }
    (batch, false, None)
}

type Done = io::Result<(File, DigestVerifier)>;

/// A spool file being written, with at most one write in flight.
pub struct SpoolWriter {
    idle: Option<(File, DigestVerifier)>,
    inflight: Option<(JoinHandle<Done>, usize)>,
    /// Bytes durable in the file.
    written: u64,
}

impl SpoolWriter {
    /// A writer appending to `file`, hashing with `hasher`.
    pub fn new(file: File, hasher: DigestVerifier) -> Self {
        SpoolWriter {
            idle: Some((file, hasher)),
            inflight: None,
            written: 0,
        }
    }

    /// Bytes durable in the file so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes written or being written.
    pub fn submitted(&self) -> u64 {
        self.written + self.inflight.as_ref().map_or(0, |(_, n)| *n as u64)
    }

    /// Starts writing `batch` (after the previous write completes). Returns the durable length
    /// when the previous write completed, if one was in flight.
    pub async fn submit(&mut self, batch: Batch) -> io::Result<Option<u64>> {
        let completed = self.flush().await?;
        let (mut file, mut hasher) = self.idle.take().expect("writer is idle after flush");
        let len = batch.len;
        let task = tokio::task::spawn_blocking(move || {
            for c in &batch.chunks {
                hasher.update(c);
            }
            write_all_vectored(&mut file, &batch.chunks)?;
            Ok((file, hasher))
        });
        self.inflight = Some((task, len));
        Ok(completed)
    }

    /// Waits for the write in flight; returns the new durable length if there was one.
    pub async fn flush(&mut self) -> io::Result<Option<u64>> {
        let Some((task, len)) = self.inflight.take() else {
            return Ok(None);
        };
        let (file, hasher) = task.await.map_err(io::Error::other)??;
        self.idle = Some((file, hasher));
        self.written += len as u64;
        Ok(Some(self.written))
    }

    /// Completes every write and returns the file and the digest of everything written.
    pub async fn finish(mut self) -> io::Result<(File, DigestVerifier)> {
        self.flush().await?;
        Ok(self.idle.take().expect("writer is idle after flush"))
    }
}

/// Writes every chunk, in as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "spool file refused bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_oci::Digest;

    fn batch(parts: &[&[u8]]) -> Batch {
        let mut b = Batch::default();
        for p in parts {
            b.push(Bytes::copy_from_slice(p));
        }
        b
    }

    #[tokio::test]
    async fn writes_and_hashes_in_order_with_one_write_in_flight() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let d = Digest::sha256_of(b"hello world!");
        let mut w = SpoolWriter::new(tmp.reopen().unwrap(), DigestVerifier::for_digest(&d));
        assert_eq!(w.submit(batch(&[b"hello", b" "])).await.unwrap(), None);
        assert_eq!(w.submitted(), 6);
        assert_eq!(w.submit(batch(&[b"world", b"!"])).await.unwrap(), Some(6));
        let (_, hasher) = w.finish().await.unwrap();
        assert_eq!(hasher.finish(), d);
        assert_eq!(std::fs::read(tmp.path()).unwrap(), b"hello world!");
    }

    #[test]
    fn skipping_spans_chunks() {
        let mut b = batch(&[b"abc", b"def", b"gh"]);
        let mut skip = 4;
        b.skip(&mut skip);
        assert_eq!((skip, b.len()), (0, 4));
        assert_eq!(b.chunks.concat(), b"efgh");
        let mut skip = 10;
        b.skip(&mut skip);
        assert_eq!((skip, b.len(), b.is_empty()), (6, 0, true));
    }
}
