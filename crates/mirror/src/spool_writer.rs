//! Writing a download to its spool file off the async threads, overlapped with the network.
//!
//! Network chunks are grouped into batches of up to [`BATCH`] bytes without copying (a batch is
//! a list of the network's own buffers). The hash and the write of each batch run as two
//! stages on their own blocking threads, each with a short queue, so the socket, the hash and
//! the disk work at once; the caller learns how many bytes are in the file from
//! [`SpoolWriter::written`].

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferry_oci::DigestVerifier;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use tokio::sync::mpsc;
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
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
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

/// Batches queued for each stage before the download waits for it.
const QUEUE: usize = 8;

/// A spool file being written: the hash and the write are two stages on their own blocking
/// threads, each with up to [`QUEUE`] batches queued, so the network, the hash and the disk
/// run at once and the download waits only for the slowest of them.
pub struct SpoolWriter {
    hash: Stage<DigestVerifier>,
    write: Stage<io::Result<File>>,
    /// Bytes in the file, readable by others (set by the write stage).
    durable: Arc<AtomicU64>,
    /// Bytes handed to the writer.
    submitted: u64,
}

/// One stage: its queue and its thread.
struct Stage<T> {
    tx: Option<mpsc::Sender<Arc<[Bytes]>>>,
    task: JoinHandle<T>,
}

impl<T: Send + 'static> Stage<T> {
    fn spawn(work: impl FnOnce(mpsc::Receiver<Arc<[Bytes]>>) -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Stage {
            tx: Some(tx),
            task: tokio::task::spawn_blocking(move || work(rx)),
        }
    }

    /// Queues a batch; `false` when the stage has stopped.
    async fn send(&self, chunks: Arc<[Bytes]>) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunks).await.is_ok(),
            None => false,
        }
    }

    /// Ends the queue and waits for the stage's result.
    async fn finish(mut self) -> io::Result<T> {
        self.tx = None;
        self.task.await.map_err(io::Error::other)
    }
}

impl SpoolWriter {
    /// A writer appending to the spool file `file`, hashing with `hasher`.
    pub fn new(file: File, hasher: DigestVerifier) -> Self {
        let durable = Arc::new(AtomicU64::new(0));
        let mark = durable.clone();
        let hash = Stage::spawn(move |mut rx| {
            let mut hasher = hasher;
            while let Some(chunks) = rx.blocking_recv() {
                chunks.iter().for_each(|c| hasher.update(c));
            }
            hasher
        });
        let write = Stage::spawn(move |mut rx| {
            let mut file = file;
            let mut written = 0;
            while let Some(chunks) = rx.blocking_recv() {
                written += write_all_vectored(&mut file, &chunks)?;
                mark.store(written, Ordering::Release);
            }
            Ok(file)
        });
        SpoolWriter {
            hash,
            write,
            durable,
            submitted: 0,
        }
    }

    /// Bytes in the file (readable by others) so far.
    pub fn written(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Bytes written or being written.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Queues `batch` for the hash and the write (waiting while either queue is full).
    pub async fn submit(&mut self, batch: Batch) -> io::Result<()> {
        self.submitted += batch.len as u64;
        let chunks: Arc<[Bytes]> = batch.chunks.into();
        if self.hash.send(chunks.clone()).await && self.write.send(chunks).await {
            return Ok(());
        }
        // A stage stopped: only the write stage can, on an error; report it.
        self.hash.tx = None;
        self.write.tx = None;
        match (&mut self.write.task).await.map_err(io::Error::other)? {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("spool writer stopped")),
        }
    }

    /// Completes every write and returns the file and the digest of everything written.
    pub async fn finish(self) -> io::Result<(File, DigestVerifier)> {
        let hasher = self.hash.finish().await?;
        let file = self.write.finish().await??;
        Ok((file, hasher))
    }
}

/// Writes every chunk at the end of `file`, in as few `writev` calls as the kernel allows;
/// returns the bytes written.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    let mut total = 0u64;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "spool file refused bytes",
                ));
            }
            Ok(n) => {
                total += n as u64;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
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
    async fn writes_and_hashes_in_order() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let d = Digest::sha256_of(b"hello world!");
        let mut w = SpoolWriter::new(tmp.reopen().unwrap(), DigestVerifier::for_digest(&d));
        w.submit(batch(&[b"hello", b" "])).await.unwrap();
        assert_eq!(w.submitted(), 6);
        w.submit(batch(&[b"world", b"!"])).await.unwrap();
        assert_eq!(w.submitted(), 12);
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
