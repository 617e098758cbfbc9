//! The local-disk backend (layout in [`crate::paths`]).
//!
//! Durability rule: a file becomes visible under its final name only by `rename` from a fully
//! written and fsync'ed temporary file in the same file system, followed by an fsync of the
//! directory. Blob files are never modified in place, only unlinked, so readers holding an
//! open handle are never disturbed by eviction. The one exception is links
//! ([`BlobStore::put_links`]): empty marker files, created in place.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_oci::Digest;

use crate::chunks::ChunkReader;
use crate::mapped::FileMaps;
use crate::paths;
use crate::spool::{Spool, temp_path};
use crate::{BlobEntry, BlobInfo, BlobStore, OpenedBlob, Result, StorageError, check_key};

/// Blobs and metadata in a directory on local disk.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    spool: Arc<Spool>,
    maps: Option<FileMaps>,
}

impl FsStore {
    /// Opens (creating) a store under `root`, removes what crashed processes left in the spool
    /// and claims this process's own spool directory (see [`crate::spool`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs"), paths::meta_dir(&root)] {
            std::fs::create_dir_all(&dir)?;
        }
        let spool = Arc::new(Spool::claim(&paths::spool_dir(&root))?);
        Ok(FsStore {
            root,
            spool,
            maps: None,
        })
    }

    /// Serves blobs from memory maps registered in `maps` (see [`crate::mapped`]), so that
    /// plain-TCP connections sharing `maps` can send them with `sendfile`. Without this, blobs
    /// are read in chunks.
    pub fn with_file_maps(mut self, maps: FileMaps) -> Self {
        self.maps = Some(maps);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn meta_path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(paths::meta_dir(&self.root).join(key))
    }

    /// Writes `bytes` to `dest` atomically (temp file, fsync, rename, fsync dir).
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_path(self.spool.dir());
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            publish(&tmp, dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Moves a complete, fsync'ed file to `dest`, creating parents and syncing the directory.
fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().expect("destination has a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(tmp, dest)?;
    File::open(parent)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?
        .map_err(StorageError::Io)
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlobStore for FsStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    fn file_maps(&self) -> Option<FileMaps> {
        self.maps.clone()
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let path = paths::blob_path(&self.root, digest);
        let meta = not_found_as_none(tokio::fs::metadata(&path).await)?;
        Ok(meta.map(|m| BlobInfo { size: m.len() }))
    }

    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<OpenedBlob>> {
        let path = paths::blob_path(&self.root, digest);
        let opened = blocking(move || {
            not_found_as_none(File::open(&path)).and_then(|f| match f {
                Some(f) => Ok(Some((f.metadata()?.len(), f))),
                None => Ok(None),
            })
        })
        .await?;
        let Some((size, file)) = opened else {
            return Ok(None);
        };
        let len = len
            .unwrap_or(size.saturating_sub(offset))
            .min(size.saturating_sub(offset));
        let file = Arc::new(file);
        let stream = ChunkReader::new(file, offset, len)
            .with_maps(self.maps.clone())
            .into_stream();
        Ok(Some(OpenedBlob { size, stream }))
    }

    async fn read_all(&self, digest: &Digest) -> Result<Option<Bytes>> {
        let path = paths::blob_path(&self.root, digest);
        Ok(not_found_as_none(tokio::fs::read(&path).await)?.map(Bytes::from))
    }

    async fn put_verified(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let dest = paths::blob_path(&self.root, digest);
        let this = self.clone();
        blocking(move || this.write_atomic(&dest, &bytes)).await
    }

    async fn ingest(&self, digest: &Digest, spool: &Path) -> Result<()> {
        let dest = paths::blob_path(&self.root, digest);
        let spool = spool.to_owned();
        blocking(move || {
            let r = publish(&spool, &dest);
            if r.is_err() {
                let _ = std::fs::remove_file(&spool);
            }
            r
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        let path = paths::blob_path(&self.root, digest);
        not_found_as_none(tokio::fs::remove_file(&path).await)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        let root = self.root.join("blobs");
        blocking(move || list_blobs(&root)).await
    }

    async fn touch(&self, digests: &[Digest], when: SystemTime) -> Result<()> {
        let paths: Vec<PathBuf> = digests
            .iter()
            .map(|d| paths::blob_path(&self.root, d))
            .collect();
        blocking(move || {
            for p in paths {
                if let Some(f) = not_found_as_none(File::options().write(true).open(&p))? {
                    f.set_modified(when)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.meta_path(key)?;
        Ok(not_found_as_none(tokio::fs::read(&path).await)?.map(Bytes::from))
    }

    async fn put_meta(&self, key: &str, value: Bytes) -> Result<()> {
        let dest = self.meta_path(key)?;
        let this = self.clone();
        blocking(move || this.write_atomic(&dest, &value)).await
    }

    async fn delete_meta(&self, key: &str) -> Result<()> {
        let path = self.meta_path(key)?;
        not_found_as_none(tokio::fs::remove_file(&path).await)?;
        Ok(())
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        let base = paths::meta_dir(&self.root);
        // Walk only the directory the prefix names (not every tag and link of the cache).
        let start = match prefix.rfind('/') {
            Some(i) => self.meta_path(&prefix[..i])?,
            None => base.clone(),
        };
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk_files(&base, &start, &mut out)?;
            out.retain(|k: &String| k.starts_with(&prefix));
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn put_links(&self, upstream: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        let paths = digests
            .iter()
            .map(|d| self.meta_path(&paths::link_key(upstream, repository, d)))
            .collect::<Result<Vec<PathBuf>>>()?;
        // Empty marker files, created in place without fsync: an empty file cannot be corrupt,
        // and one lost in a crash only costs an upstream HEAD to confirm the link again.
        blocking(move || {
            for p in paths {
                if p.exists() {
                    continue;
                }
                std::fs::create_dir_all(p.parent().expect("link has a parent"))?;
                File::create(&p)?;
            }
            Ok(())
        })
        .await
    }

    async fn has_link(&self, upstream: &str, repository: &str, digest: &Digest) -> Result<bool> {
        let path = self.meta_path(&paths::link_key(upstream, repository, digest))?;
        Ok(not_found_as_none(tokio::fs::metadata(&path).await)?.is_some())
    }

    fn spool_dir(&self) -> PathBuf {
        self.spool.dir().to_owned()
    }

    async fn check_writable(&self) -> Result<()> {
        let this = self.clone();
        blocking(move || {
            // The shared spool root, so a cache directory that lost write access fails here.
            let probe = temp_path(&paths::spool_dir(&this.root));
            write_probe(&probe, |p| std::fs::write(p, b"ok"))
        })
        .await
    }
}

/// Writes the readiness probe file with `write` and removes it whether or not the write
/// worked: a write that fails after the file was created (a full disk: `ENOSPC`, `EFBIG`)
/// must not leave an empty file behind at every `/readyz`. The write's error comes first.
fn write_probe(probe: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let written = write(probe);
    let removed = match std::fs::remove_file(probe) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && written.is_err() => Ok(()),
        other => other,
    };
    written.and(removed)
}

fn list_blobs(root: &Path) -> io::Result<Vec<BlobEntry>> {
    let mut out = Vec::new();
    let Some(algos) = not_found_as_none(std::fs::read_dir(root))? else {
        return Ok(out);
    };
    for algo in algos {
        let algo = algo?;
        let algo_name = algo.file_name().to_string_lossy().into_owned();
        for shard in std::fs::read_dir(algo.path())? {
            for file in std::fs::read_dir(shard?.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                let Ok(digest) = Digest::parse(&format!("{algo_name}:{name}")) else {
                    continue;
                };
                let meta = file.metadata()?;
                let last_access = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(BlobEntry {
                    digest,
                    size: meta.len(),
                    last_access,
                });
            }
        }
    }
    Ok(out)
}

fn walk_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let Some(entries) = not_found_as_none(std::fs::read_dir(dir))? else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            walk_files(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fs_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        crate::testsuite::run_all(&store).await;
    }

    #[tokio::test]
    async fn fs_store_serving_from_maps_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let maps = FileMaps::new();
        let store = FsStore::open(dir.path())
            .unwrap()
            .with_file_maps(maps.clone());
        crate::testsuite::run_all(&store).await;
        assert_eq!(
            maps.live(),
            0,
            "every window is unmapped once its bytes are dropped"
        );
    }

    #[tokio::test]
    async fn start_up_removes_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let leftover = temp_path(&store.spool_dir());
        std::fs::write(&leftover, b"half a blob").unwrap();
        drop(store); // the process that owned the spool is gone
        let _again = FsStore::open(dir.path()).unwrap();
        assert!(!leftover.exists());
    }

    /// Probe (`.part`) files left in the shared spool root.
    fn spool_files(root: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(paths::spool_dir(root))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .collect()
    }

    #[test]
    fn a_probe_whose_write_fails_after_create_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let probe = temp_path(&paths::spool_dir(&store.root));
        let err = write_probe(&probe, |p| {
            std::fs::File::create(p)?;
            Err(io::Error::other("No space left on device"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("No space"), "{err}");
        assert!(spool_files(dir.path()).is_empty());
        // a write that never created the file is reported as is
        let err = write_probe(&probe, |_| Err(io::Error::other("read-only"))).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    /// Set in the child process of the test below.
    const PROBE_CHILD: &str = "FERRY_STORAGE_TEST_PROBE_CHILD";

    /// The real failure: a file-size limit of 0 (`ulimit -f 0`, with SIGXFSZ ignored) makes
    /// every write fail with `EFBIG` after `open` created the file, as a full disk does. The
    /// check runs in a child process of this test binary, so the limit binds nothing else.
    #[tokio::test]
    async fn a_failed_write_check_leaves_no_file_behind() {
        if let Some(root) = std::env::var_os(PROBE_CHILD) {
            let store = FsStore::open(Path::new(&root)).unwrap();
            let err = store.check_writable().await.unwrap_err();
            println!("probe child ran: {err}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        drop(FsStore::open(dir.path()).unwrap());
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\""])
            .arg(exe)
            .args([
                "--exact",
                "fs::tests::a_failed_write_check_leaves_no_file_behind",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(PROBE_CHILD, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("probe child ran"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(spool_files(dir.path()), Vec::<PathBuf>::new(), "{stdout}");
    }

    #[tokio::test]
    async fn meta_keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("cache")).unwrap();
        for key in ["../x", "a/../../x", "/etc/passwd", "", "a//b", "a/./b"] {
            assert!(
                store.put_meta(key, Bytes::from_static(b"x")).await.is_err(),
                "{key}"
            );
            assert!(store.get_meta(key).await.is_err(), "{key}");
        }
        assert!(!dir.path().join("x").exists());
    }
}
