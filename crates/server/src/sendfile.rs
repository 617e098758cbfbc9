//! A plain-TCP connection that sends cached blobs with `sendfile(2)`.
//!
//! Cached blobs reach hyper as memory-mapped windows registered in a
//! [`FileMaps`](ferry_storage::FileMaps) (see `ferry_storage::mapped`). hyper writes response
//! bodies as they are, without copying them (vectored writes), so every buffer this stream is
//! asked to write is looked up: one that lies in a window is sent from the file by the kernel;
//! anything else (response heads, manifests, errors) is written normally. The mapped pages are
//! never read in user space, so a cached download costs neither a copy nor resident memory.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ferry_storage::FileMaps;
use ferry_storage::mapped::FileSlice;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose writes of mapped blob bytes become `sendfile` calls.
pub struct SendfileStream {
    tcp: TcpStream,
    maps: FileMaps,
    from_files: u64,
}

impl SendfileStream {
    /// Wraps `tcp`; buffers found in `maps` are sent from their files.
    pub fn new(tcp: TcpStream, maps: FileMaps) -> Self {
        SendfileStream {
            tcp,
            maps,
            from_files: 0,
        }
    }

    /// Bytes sent so far with `sendfile`.
    pub fn sent_from_files(&self) -> u64 {
        self.from_files
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        slice: &FileSlice,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut offset = slice.offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                // Corked for the call, so the kernel builds full segments out of the file's
                // pages; uncorking pushes the tail at once (nothing is ever held back).
                let _ = rustix::net::sockopt::set_tcp_cork(&self.tcp, true);
                let sent =
                    rustix::fs::sendfile(&self.tcp, &*slice.file, Some(&mut offset), slice.len);
                let _ = rustix::net::sockopt::set_tcp_cork(&self.tcp, false);
                sent.map_err(io::Error::from)
            });
            match sent {
                // 0 means the file ended early (it was truncated behind our back): hyper turns
                // a zero-length write into an error and cuts the connection, never sending
                // wrong bytes.
                Ok(n) => {
                    self.from_files += n as u64;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.maps.lookup(buf) {
            Some(slice) => self.poll_sendfile(cx, &slice),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    /// Writes the leading buffers that are not mapped in one vectored write, or, when the first
    /// non-empty buffer is mapped, sends it from its file.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some(slice) = self.maps.lookup(&bufs[first]) {
            return self.poll_sendfile(cx, &slice);
        }
        let plain = bufs[first..]
            .iter()
            .position(|b| self.maps.lookup(b).is_some())
            .map_or(bufs.len(), |n| first + n);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(maps: FileMaps) -> (SendfileStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            SendfileStream::new(accepted.unwrap().0, maps),
            client.unwrap(),
        )
    }

    /// `len` bytes of `file` at `offset` as mapped windows, as the store serves them.
    fn windowed(
        maps: &FileMaps,
        file: Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> ferry_storage::ByteStream {
        ferry_storage::ChunkReader::new(file, offset, len)
            .with_maps(Some(maps.clone()))
            .into_stream()
    }

    /// Writes `bufs` fully with vectored writes, as hyper does.
    async fn write_all_vectored(s: &mut SendfileStream, bufs: &[&[u8]]) {
        let mut bufs: Vec<&[u8]> = bufs.to_vec();
        while bufs.iter().any(|b| !b.is_empty()) {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = s.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            for b in bufs.iter_mut() {
                let take = n.min(b.len());
                *b = &b[take..];
                n -= take;
            }
        }
    }

    #[tokio::test]
    async fn mapped_and_plain_buffers_arrive_in_order() {
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let file = Arc::new(std::fs::File::open(f.path()).unwrap());
        let maps = FileMaps::new();
        let windows: Vec<bytes::Bytes> = windowed(&maps, file, 3, data.len() as u64 - 3)
            .map(|r| r.unwrap())
            .collect()
            .await;
        let (mut server, mut client) = pair(maps.clone()).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });

        let mut expected = Vec::new();
        for w in &windows {
            let head = format!("{:x}\r\n", w.len());
            write_all_vectored(&mut server, &[head.as_bytes(), &w[..], b"\r\n"]).await;
            expected.extend_from_slice(head.as_bytes());
            expected.extend_from_slice(&w[..]);
            expected.extend_from_slice(b"\r\n");
        }
        let body: usize = windows.iter().map(|w| w.len()).sum();
        assert_eq!(
            server.sent_from_files(),
            body as u64,
            "every body byte came from the file"
        );
        server.write_all(b"end").await.unwrap();
        expected.extend_from_slice(b"end");
        server.shutdown().await.unwrap();
        drop(server);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        // The mapped windows carried the file's bytes.
        assert_eq!(windows.concat(), &data[3..]);
    }

    #[tokio::test]
    async fn a_mapped_buffer_is_sent_from_its_file() {
        // A buffer in the middle of a window is resolved to its file offset and sent from
        // there.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789abcdef").unwrap();
        let file = Arc::new(std::fs::File::open(f.path()).unwrap());
        let maps = FileMaps::new();
        let window = windowed(&maps, file, 4, 8).next().await.unwrap().unwrap();
        let slice = maps.lookup(&window[2..]).unwrap();
        assert_eq!((slice.offset, slice.len), (6, 6));
        let (mut server, mut client) = pair(maps.clone()).await;
        let n = server.write(&window[2..]).await.unwrap();
        assert_eq!(n, 6);
        assert_eq!(server.sent_from_files(), 6);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"6789ab");
    }
}
