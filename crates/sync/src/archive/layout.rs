//! An OCI image layout in a directory (the staging area of an export) and the tar archive of
//! it. Blobs are written to a temporary name, hashed on the way, and renamed into
//! `blobs/<alg>/<hex>` only when their digest checked out, so a blob file that exists is
//! complete; a resumed export still re-hashes it before trusting it.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_oci::{Digest, DigestVerifier};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::ArchiveError;

/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image of `index.json`: its top manifest and the full reference naming it.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Full reference, e.g. `docker.io/library/alpine:3.19`.
    pub name: String,
    /// Top manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
}

/// A layout directory.
pub struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    /// Opens (creating if needed) a layout at `root`.
    pub fn create(root: &Path) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(root.join("blobs")).map_err(ArchiveError::io(root))?;
        let marker = root.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(ArchiveError::io(&marker))?;
        Ok(LayoutDir {
            root: root.to_owned(),
        })
    }

    /// Another handle on the same directory.
    pub fn clone_handle(&self) -> LayoutDir {
        LayoutDir {
            root: self.root.clone(),
        }
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `d` lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Whether blob `d` is present with the right bytes; a wrong file is removed.
    pub fn has_verified(&self, d: &Digest) -> bool {
        let path = self.blob_path(d);
        let Ok(mut f) = std::fs::File::open(&path) else {
            return false;
        };
        let mut v = DigestVerifier::for_digest(d);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(0) => break,
                Ok(n) => v.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        let ok = v.finish() == *d;
        if !ok {
            let _ = std::fs::remove_file(&path);
        }
        ok
    }

    /// Writes small content (a manifest) that hashes to `d`.
    pub fn write_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<(), ArchiveError> {
        let path = self.blob_path(d);
        if self.has_verified(d) {
            return Ok(());
        }
        let tmp = self.prepare_tmp(&path)?;
        std::fs::write(&tmp, bytes).map_err(ArchiveError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(ArchiveError::io(&path))
    }

    /// A temporary name for a blob being written: unique per writer, so two images sharing a
    /// blob may write it at once (each verifies its copy; the rename is atomic).
    fn prepare_tmp(&self, path: &Path) -> Result<PathBuf, ArchiveError> {
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(ArchiveError::io(dir))?;
        Ok(path.with_extension(format!("{}.partial", super::scratch_name("w"))))
    }

    /// Streams blob `d` of `size` bytes into the layout, verifying length and digest before
    /// the file gets its name. `progress` is told every chunk's length.
    pub async fn write_stream<S>(
        &self,
        d: &Digest,
        size: u64,
        mut stream: S,
        progress: impl Fn(u64),
    ) -> Result<(), ArchiveError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let path = self.blob_path(d);
        let tmp = self.prepare_tmp(&path)?;
        let io = ArchiveError::io(&tmp);
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut v = DigestVerifier::for_digest(d);
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ArchiveError::io(&tmp))?;
            v.update(&chunk);
            got += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(ArchiveError::io(&tmp))?;
            progress(chunk.len() as u64);
        }
        file.sync_all().await.map_err(ArchiveError::io(&tmp))?;
        let actual = v.finish();
        if got != size || actual != *d {
            let _ = std::fs::remove_file(&tmp);
            return Err(ArchiveError::entry(
                &format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()),
                format!("got {got} of {size} bytes hashing to {actual}"),
            ));
        }
        std::fs::rename(&tmp, &path).map_err(ArchiveError::io(&path))
    }

    /// Writes `index.json` naming every image.
    pub fn write_index(&self, images: &[IndexEntry]) -> Result<(), ArchiveError> {
        let manifests: Vec<_> = images
            .iter()
            .map(|e| {
                json!({
                    "mediaType": e.media_type,
                    "digest": e.digest.as_str(),
                    "size": e.size,
                    "annotations": {REF_NAME: e.name},
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": ferry_oci::manifest::OCI_INDEX,
            "manifests": manifests,
        });
        let path = self.root.join("index.json");
        let bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
        std::fs::write(&path, bytes).map_err(ArchiveError::io(&path))
    }
}

/// Tars the layout at `root` into `output` (written beside it, renamed when complete):
/// `oci-layout`, `index.json`, then every blob in name order, with fixed owners and times so
/// the same content gives the same archive.
pub fn tar_layout(root: &Path, output: &Path) -> Result<(), ArchiveError> {
    let tmp = output.with_extension("tar.partial");
    let file = std::fs::File::create(&tmp).map_err(ArchiveError::io(&tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut names = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
    names.extend(blob_files(root)?);
    for name in &names {
        let path = root.join(name);
        tar.append_path_with_name(&path, name)
            .map_err(ArchiveError::io(&path))?;
    }
    let mut out = tar.into_inner().map_err(ArchiveError::io(&tmp))?;
    out.flush().map_err(ArchiveError::io(&tmp))?;
    let file = out.into_inner().map_err(|e| ArchiveError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(ArchiveError::io(&tmp))?;
    std::fs::rename(&tmp, output).map_err(ArchiveError::io(output))
}

/// `blobs/<alg>/<hex>` of every complete blob, sorted.
fn blob_files(root: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    let blobs = root.join("blobs");
    for alg in std::fs::read_dir(&blobs).map_err(ArchiveError::io(&blobs))? {
        let alg = alg.map_err(ArchiveError::io(&blobs))?;
        let dir = alg.path();
        for f in std::fs::read_dir(&dir).map_err(ArchiveError::io(&dir))? {
            let f = f.map_err(ArchiveError::io(&dir))?;
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".partial") {
                out.push(PathBuf::from("blobs").join(alg.file_name()).join(name));
            }
        }
    }
    out.sort();
    Ok(out)
}
