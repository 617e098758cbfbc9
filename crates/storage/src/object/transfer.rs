//! Moving bytes between local files and the object store in large, bounded chunks.
//!
//! Uploads read the spool file part by part (`part_size` bytes, a fresh buffer per part that
//! OpenDAL's writer takes over without copying) and let the writer run a multipart upload with
//! `upload_concurrency` parts in flight, so one upload holds about
//! `part_size * (upload_concurrency + 1)` bytes whatever the blob size. A failed upload is
//! aborted, so the store drops its parts.

use std::path::Path;

use futures_util::{FutureExt, StreamExt};
use opendal::Operator;
use tokio::io::AsyncReadExt;

use super::{ObjectOptions, backend};
use crate::{ByteStream, Result, chunks::CHUNK};

/// Streams `[offset, offset + len)` of an object, regrouped into chunks of about [`CHUNK`]
/// bytes (the HTTP body arrives in small pieces; fewer, larger chunks cost less per byte).
pub async fn read_range(op: &Operator, key: &str, offset: u64, len: u64) -> Result<ByteStream> {
    if len == 0 {
        return Ok(futures_util::stream::empty().boxed());
    }
    // One ranged GET streamed as it arrives (a `chunk` option would split it into many GETs).
    let reader = op.reader(key).await.map_err(|e| backend("read", key, e))?;
    let stream = reader
        .into_bytes_stream(offset..offset + len)
        .await
        .map_err(|e| backend("read", key, e))?;
    Ok(regroup(stream.boxed()))
}

/// Joins the pieces a stream has ready into chunks of up to [`CHUNK`] bytes, waiting only for
/// the first piece of each chunk (so a slow store delays nothing).
fn regroup(stream: ByteStream) -> ByteStream {
    futures_util::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        let first = match stream.next().await? {
            Ok(b) if b.len() >= CHUNK => return Some((Ok(b), Some(stream))),
            Ok(b) => b,
            Err(e) => return Some((Err(e), None)),
        };
        let mut buf = bytes::BytesMut::from(first.as_ref());
        while buf.len() < CHUNK {
            match stream.next().now_or_never() {
                Some(Some(Ok(b))) => buf.extend_from_slice(&b),
                Some(Some(Err(e))) => return Some((Err(e), None)),
                Some(None) => return Some((Ok(buf.freeze()), None)),
                None => break,
            }
        }
        Some((Ok(buf.freeze()), Some(stream)))
    })
    .boxed()
}

/// Uploads the file at `path` to `key`; the object appears only if every part arrived.
pub async fn upload_file(
    op: &Operator,
    key: &str,
    path: &Path,
    opts: &ObjectOptions,
) -> Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut writer = op
        .writer_with(key)
        .chunk(opts.part_size)
        .concurrent(opts.upload_concurrency.max(1))
        .await
        .map_err(|e| backend("upload", key, e))?;
    let copied = async {
        loop {
            let part = read_part(&mut file, opts.part_size).await?;
            if part.is_empty() {
                break;
            }
            writer
                .write(part)
                .await
                .map_err(|e| backend("upload", key, e))?;
        }
        writer
            .close()
            .await
            .map(|_| ())
            .map_err(|e| backend("upload", key, e))
    }
    .await;
    if copied.is_err() {
        let _ = writer.abort().await;
    }
    copied
}

/// Reads up to `size` bytes (less only at the end of the file).
async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<bytes::Bytes> {
    let mut buf = bytes::BytesMut::with_capacity(size);
    while buf.len() < size {
        if file.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
