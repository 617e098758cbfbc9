//! Moving bytes between local files and the object store in large, bounded chunks.
//!
//! Uploads read the spool file part by part (`part_size` bytes, a fresh buffer per part that
//! OpenDAL's writer takes over without copying) and let the writer run a multipart upload with
//! `upload_concurrency` parts in flight, so one upload holds about
//! `part_size * (upload_concurrency + 1)` bytes whatever the blob size. A failed upload is
//! aborted, so the store drops its parts.

use std::path::Path;

use futures_util::StreamExt;
use opendal::Operator;
use tokio::io::AsyncReadExt;

use super::{ObjectOptions, backend};
use crate::{ByteStream, Result, chunks::CHUNK};

/// Streams `[offset, offset + len)` of an object in chunks of [`CHUNK`] bytes.
pub async fn read_range(op: &Operator, key: &str, offset: u64, len: u64) -> Result<ByteStream> {
    if len == 0 {
        return Ok(futures_util::stream::empty().boxed());
    }
    let reader = op
        .reader_with(key)
        .chunk(CHUNK)
        .await
        .map_err(|e| backend("read", key, e))?;
    let stream = reader
        .into_bytes_stream(offset..offset + len)
        .await
        .map_err(|e| backend("read", key, e))?;
    Ok(stream.boxed())
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

/// Removes spool files left by a crash (`*.part` files directly in `dir`).
pub fn clear_spool(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "part") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
