//! Reads a file as a stream of large chunks, optionally following it while it grows.
//!
//! Used for both cached blobs (a finished file) and downloads in progress (a spool file that a
//! fill task is still writing: the reader waits on a [`Progress`] channel for more bytes). Reads
//! are positional (`pread`) on a shared file handle, in chunks of [`CHUNK`] bytes, into a buffer
//! that is reused once the previous chunk has been sent, so a download costs a fixed, small
//! amount of memory whatever the blob size.
//!
//! A reader that follows a download to the end of the blob holds back the final byte until the
//! download reports [`Progress::Done`] (digest verified, blob stored): a client therefore never
//! receives a complete response whose content failed verification — on a mismatch its
//! connection is cut one byte short.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

use crate::ByteStream;
use crate::fill_error::FillError;
use crate::mapped::{FileMaps, WINDOW};
use crate::tail::Tail;

/// Bytes read per chunk.
pub const CHUNK: usize = 256 * 1024;

/// How far a growing file has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// This many bytes are written and readable.
    Growing(u64),
    /// The file is complete and verified.
    Done,
    /// The download failed; readers must stop with this error.
    Failed(FillError),
}

/// A chunked reader over `[offset, offset + len)` of a file.
pub struct ChunkReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    progress: Option<watch::Receiver<Progress>>,
    hold_last: bool,
    buf: BytesMut,
    chunk: usize,
    maps: Option<FileMaps>,
    tail: Option<Arc<Tail>>,
}

impl ChunkReader {
    /// A reader of a complete file.
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        ChunkReader {
            file,
            pos: offset,
            end: offset + len,
            progress: None,
            hold_last: false,
            buf: BytesMut::new(),
            chunk: CHUNK,
            maps: None,
            tail: None,
        }
    }

    /// A reader of a file that is still being written, as reported by `progress`.
    /// `to_end` says the range ends at the end of the blob: its last byte is then held back
    /// until the download is verified.
    pub fn growing(
        file: Arc<File>,
        offset: u64,
        len: u64,
        progress: watch::Receiver<Progress>,
        to_end: bool,
    ) -> Self {
        ChunkReader {
            progress: Some(progress),
            hold_last: to_end,
            ..Self::new(file, offset, len)
        }
    }

    /// Overrides the chunk size.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(4096);
        self
    }

    /// Serves the bytes as memory-mapped windows registered in `maps` (for `sendfile`, see
    /// [`crate::mapped`]) instead of reading them into a buffer. Only for files whose written
    /// bytes never change (blob files, spool files: these only grow).
    pub fn with_maps(mut self, maps: Option<FileMaps>) -> Self {
        if maps.is_some() {
            self.chunk = WINDOW;
        }
        self.maps = maps;
        self
    }

    /// Serves the bytes the download still holds in memory ([`Tail`]) from there; the others
    /// from the file.
    pub fn with_tail(mut self, tail: Arc<Tail>) -> Self {
        self.tail = Some(tail);
        self
    }

    /// The bytes as a stream.
    pub fn into_stream(self) -> ByteStream {
        stream::unfold(self, |mut r| async move {
            match r.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), r)),
                Ok(None) => None,
                Err(e) => {
                    r.end = r.pos; // end the stream after the error
                    Some((Err(e), r))
                }
            }
        })
        .boxed()
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let available = self.wait_available().await?;
        let want = (available.min(self.end) - self.pos).min(self.chunk as u64) as usize;
        let mut want = want;
        if let Some(tail) = &self.tail {
            if let Some(b) = tail.get(self.pos, want) {
                self.pos += b.len() as u64;
                return Ok(Some(b));
            }
            // Behind the tail: only the bytes before it are sure to be in the file.
            if let Some(start) = tail.start().filter(|&s| s > self.pos) {
                want = want.min((start - self.pos) as usize);
            }
        }
        if let Some(maps) = &self.maps {
            let window = maps.map(&self.file, self.pos, want)?;
            self.pos += want as u64;
            return Ok(Some(window));
        }
        self.buf.reserve(want);
        let mut buf = std::mem::take(&mut self.buf);
        let (file, pos) = (self.file.clone(), self.pos);
        let (buf, res) = tokio::task::spawn_blocking(move || {
            let res = read_exact_at(&file, &mut buf, want, pos);
            (buf, res)
        })
        .await
        .map_err(io::Error::other)?;
        self.buf = buf;
        res?;
        self.pos += want as u64;
        Ok(Some(self.buf.split().freeze()))
    }

    /// Waits until some bytes past `pos` are readable; returns the readable end.
    async fn wait_available(&mut self) -> io::Result<u64> {
        let Some(rx) = self.progress.as_mut() else {
            return Ok(self.end);
        };
        let limit = if self.hold_last {
            self.end - 1
        } else {
            self.end
        };
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                Progress::Done => return Ok(self.end),
                Progress::Failed(e) => return Err(e.into_io()),
                Progress::Growing(n) if n.min(limit) > self.pos => return Ok(n.min(limit)),
                Progress::Growing(_) => {}
            }
            if rx.changed().await.is_err() {
                // The writer is gone without saying Done: treat as failure.
                return Err(FillError::Abandoned.into_io());
            }
        }
    }
}

fn read_exact_at(file: &File, buf: &mut BytesMut, want: usize, pos: u64) -> io::Result<()> {
    let start = buf.len();
    buf.resize(start + want, 0);
    let mut done = 0;
    while done < want {
        let n = file.read_at(&mut buf[start + done..start + want], pos + done as u64)?;
        if n == 0 {
            buf.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file is shorter than expected",
            ));
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn collect(s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_ranges_in_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let f = Arc::new(f);
        let all = collect(
            ChunkReader::new(f.clone(), 0, 100_000)
                .with_chunk(4096)
                .into_stream(),
        )
        .await
        .unwrap();
        assert_eq!(all, data);
        let part = collect(ChunkReader::new(f.clone(), 10, 50).into_stream())
            .await
            .unwrap();
        assert_eq!(part, &data[10..60]);
        let short = collect(ChunkReader::new(f, 0, 200_000).into_stream()).await;
        assert!(
            short.is_err(),
            "reading past EOF must fail, not return short data"
        );
    }

    fn both() -> [Option<FileMaps>; 2] {
        [None, Some(FileMaps::new())]
    }

    #[tokio::test]
    async fn follows_a_growing_file() {
        for maps in both() {
            follows_a_growing_file_with(maps).await;
        }
    }

    async fn follows_a_growing_file_with(maps: Option<FileMaps>) {
        let path = tempfile::NamedTempFile::new().unwrap();
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(path.path())
            .unwrap();
        let r = Arc::new(File::open(path.path()).unwrap());
        let (tx, rx) = watch::channel(Progress::Growing(0));
        let reader = tokio::spawn(collect(
            ChunkReader::growing(r, 0, 30, rx, true)
                .with_maps(maps.clone())
                .into_stream(),
        ));
        for i in 0..3u8 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            w.write_all(&[i; 10]).unwrap();
            tx.send(Progress::Growing(10 * (i as u64 + 1))).unwrap();
        }
        tx.send(Progress::Done).unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got, [[0u8; 10], [1; 10], [2; 10]].concat());
        if let Some(m) = maps {
            assert_eq!(m.live(), 0, "windows are unmapped once sent");
        }
    }

    #[tokio::test]
    async fn a_reader_takes_the_tail_from_memory_and_only_older_bytes_from_the_file() {
        // The file holds bytes 0..10; 10..20 are not written yet (stale bytes stand in for
        // them), and the tail holds the real 6..20.
        let path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(path.path(), [[1u8; 10], [9; 10]].concat()).unwrap();
        let r = Arc::new(File::open(path.path()).unwrap());
        let tail = Arc::new(Tail::default());
        tail.push(6, &[Bytes::from(vec![1u8; 4]), Bytes::from(vec![2u8; 10])]);
        let (tx, rx) = watch::channel(Progress::Growing(20));
        let mut reader = ChunkReader::growing(r, 0, 20, rx, false)
            .with_tail(tail.clone())
            .into_stream();
        let first = reader.next().await.unwrap().unwrap();
        assert_eq!(
            &first[..],
            &[1u8; 6],
            "the file only up to the tail's start"
        );
        let got = collect(reader).await.unwrap();
        assert_eq!(got, [vec![1u8; 4], vec![2; 10]].concat());
        drop(tx);
    }

    fn mismatch() -> FillError {
        FillError::DigestMismatch {
            got: "sha256:00".into(),
        }
    }

    #[tokio::test]
    async fn reports_failure_to_followers() {
        let path = tempfile::NamedTempFile::new().unwrap();
        let r = Arc::new(File::open(path.path()).unwrap());
        let (tx, rx) = watch::channel(Progress::Growing(0));
        let reader = tokio::spawn(collect(
            ChunkReader::growing(r, 0, 10, rx, true).into_stream(),
        ));
        tx.send(Progress::Failed(mismatch())).unwrap();
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(FillError::of_io(&err), Some(&mismatch()));
        let path2 = tempfile::NamedTempFile::new().unwrap();
        let r2 = Arc::new(File::open(path2.path()).unwrap());
        let (tx2, rx2) = watch::channel(Progress::Growing(0));
        drop(tx2);
        assert!(
            collect(ChunkReader::growing(r2, 0, 10, rx2, true).into_stream())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_last_byte_waits_for_verification() {
        for maps in both() {
            the_last_byte_waits_for_verification_with(maps).await;
        }
    }

    async fn the_last_byte_waits_for_verification_with(maps: Option<FileMaps>) {
        let path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(path.path(), [7u8; 10]).unwrap();
        let r = Arc::new(File::open(path.path()).unwrap());
        let (tx, rx) = watch::channel(Progress::Growing(10));
        let mut s = ChunkReader::growing(r, 0, 10, rx, true)
            .with_maps(maps)
            .into_stream();
        assert_eq!(
            s.next().await.unwrap().unwrap().len(),
            9,
            "all but the last byte"
        );
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
        assert!(pending.is_err(), "the last byte is held until Done");
        tx.send(Progress::Failed(mismatch())).unwrap();
        assert!(
            s.next().await.unwrap().is_err(),
            "a failed download never completes the body"
        );
    }
}
