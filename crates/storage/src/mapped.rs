//! Cached blobs served from read-only memory maps, so that a plain-TCP connection can hand them
//! to the kernel (`sendfile`) instead of copying them through user space.
//!
//! A [`ChunkReader`](crate::ChunkReader) given a registry
//! ([`with_maps`](crate::ChunkReader::with_maps)) hands out a file as [`Bytes`], each backed by
//! a read-only map of at most [`WINDOW`] bytes of the file ([`FileMaps::map`]). While a window
//! is alive, the [`FileMaps`] registry records its address with the file and offset it maps. A
//! connection that can send from files looks up each buffer it is asked to write
//! ([`FileMaps::lookup`]): a buffer inside a window is sent by the kernel straight from the page
//! cache, and its pages are never touched in user space — no copy, and no resident memory. Every
//! other writer (TLS, HTTP/2 framing, a test) just reads the mapped bytes, which are the file's
//! bytes: correctness never depends on the lookup.
//!
//! Maps are sound only while their file is neither truncated nor rewritten. Blob files are
//! written once under a temporary name, renamed into place and never modified ([`crate::fs`]);
//! eviction unlinks them, which leaves existing maps (and open handles) intact.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// Largest map (and so the most one `sendfile` call sends).
pub const WINDOW: usize = 4 * 1024 * 1024;

/// The registry of live windows, shared by the store that creates them and the connections that
/// write them. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct FileMaps {
    windows: Arc<Mutex<BTreeMap<usize, Region>>>,
}

impl std::fmt::Debug for FileMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMaps")
            .field("live_windows", &self.lock().len())
            .finish()
    }
}

/// What one live window maps.
#[derive(Clone)]
struct Region {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// A part of a file whose bytes are exactly those of a buffer being written.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// The file.
    pub file: Arc<File>,
    /// Where the buffer's first byte is in the file.
    pub offset: u64,
    /// How many bytes of the buffer, from its start, come from the file (at most its length).
    pub len: usize,
}

impl FileMaps {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file bytes behind `buf`, if `buf` starts inside a live window.
    pub fn lookup(&self, buf: &[u8]) -> Option<FileSlice> {
        if buf.is_empty() {
            return None;
        }
        let addr = buf.as_ptr() as usize;
        let windows = self.lock();
        let (&start, region) = windows.range(..=addr).next_back()?;
        let into = addr - start;
        if into >= region.len {
            return None;
        }
        Some(FileSlice {
            file: region.file.clone(),
            offset: region.offset + into as u64,
            len: buf.len().min(region.len - into),
        })
    }

    /// Maps `len` (> 0, at most [`WINDOW`]) bytes of `file` at `offset` and registers the
    /// window. The bytes must already be written and never change afterwards.
    pub fn map(&self, file: &Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
        // SAFETY: the map is read-only and blob files are never truncated or written after they
        // are renamed into place (module docs); eviction only unlinks them.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(&**file)? };
        let region = Region {
            len: map.len(),
            file: file.clone(),
            offset,
        };
        self.lock().insert(map.as_ptr() as usize, region);
        Ok(Bytes::from_owner(Window {
            map,
            maps: self.clone(),
        }))
    }

    /// How many windows are alive.
    pub fn live(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Region>> {
        // The map is only ever left consistent: a panic while locked cannot corrupt it.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mapped window; unregistered before it is unmapped.
struct Window {
    map: Mmap,
    maps: FileMaps,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.maps.lock().remove(&(self.map.as_ptr() as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteStream, ChunkReader};
    use futures_util::StreamExt;
    use std::io::Write;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    async fn collect(s: ByteStream) -> Vec<Bytes> {
        s.map(|r| r.unwrap()).collect().await
    }

    fn windows(maps: &FileMaps, file: Arc<File>, offset: u64, len: u64) -> ByteStream {
        ChunkReader::new(file, offset, len)
            .with_maps(Some(maps.clone()))
            .into_stream()
    }

    #[tokio::test]
    async fn streams_exact_ranges_in_windows() {
        let (f, data) = file_of(WINDOW * 2 + 12345);
        let file = Arc::new(File::open(f.path()).unwrap());
        let maps = FileMaps::new();
        for (off, len) in [(0, data.len()), (1, WINDOW), (4097, WINDOW + 3), (77, 0)] {
            let parts = collect(windows(&maps, file.clone(), off as u64, len as u64)).await;
            assert!(parts.iter().all(|p| p.len() <= WINDOW && !p.is_empty()));
            assert_eq!(
                parts.concat(),
                &data[off..off + len],
                "offset {off} len {len}"
            );
        }
        assert_eq!(maps.live(), 0, "dropped windows are unregistered");
    }

    #[tokio::test]
    async fn lookup_finds_the_file_offset_of_any_buffer_inside_a_window() {
        let (f, data) = file_of(WINDOW + 5000);
        let file = Arc::new(File::open(f.path()).unwrap());
        let maps = FileMaps::new();
        let mut s = windows(&maps, file, 100, (WINDOW + 4000) as u64);
        let first = s.next().await.unwrap().unwrap();
        let second = s.next().await.unwrap().unwrap();
        assert_eq!(maps.live(), 2);

        let hit = maps.lookup(&first[10..20]).unwrap();
        assert_eq!((hit.offset, hit.len), (110, 10));
        let hit = maps.lookup(&second[..]).unwrap();
        assert_eq!((hit.offset, hit.len), ((100 + WINDOW) as u64, 4000));
        // What the lookup promises is what the buffer holds.
        assert_eq!(&second[..], &data[100 + WINDOW..100 + WINDOW + 4000]);

        let plain = vec![1u8; 64];
        assert!(maps.lookup(&plain).is_none());
        assert!(maps.lookup(&first[..0]).is_none());
        drop(first);
        assert_eq!(maps.live(), 1);
        // A slice keeps its window alive.
        let tail = second.slice(3990..);
        drop(second);
        assert_eq!(maps.lookup(&tail).unwrap().len, 10);
        drop(tail);
        assert_eq!(maps.live(), 0);
    }
}
