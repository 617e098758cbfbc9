//! Images written to local files by `ferry copy`: an OCI layout directory (`oci:DIR[:REF]`,
//! added to its `index.json`, replacing an entry of the same name), an OCI-layout tar
//! (`oci-archive:FILE[:REF]`) or a docker-save tar (`docker-archive:FILE[:REF]`, one
//! platform: `manifest.json`, `<hex>.json` config and `<hex>.tar` layers). Archives are staged
//! in a scratch layout and written whole (`FILE.partial`, then renamed).

use std::path::{Path, PathBuf};

use ferry_oci::manifest::{self, Parsed};
use serde_json::{Value, json};

use super::ArchiveError;
use super::layout::{IndexEntry, LayoutDir, REF_NAME, tar_layout};

/// Which kind of file a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// An OCI layout directory.
    OciDir,
    /// An OCI-layout tar at this path.
    OciArchive(PathBuf),
    /// A docker-save tar at this path.
    DockerArchive(PathBuf),
}

/// Where a copy's blobs and manifests go before the image is named.
pub struct LocalSink {
    /// The layout blobs are written into.
    pub layout: LayoutDir,
    kind: SinkKind,
    scratch: Option<PathBuf>,
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        if let Some(s) = &self.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

impl LocalSink {
    /// A sink of `kind`; `dir` is the layout directory for [`SinkKind::OciDir`].
    pub fn new(kind: SinkKind, dir: Option<&Path>) -> Result<Self, ArchiveError> {
        let (root, scratch) = match (&kind, dir) {
            (SinkKind::OciDir, Some(d)) => (d.to_owned(), None),
            _ => {
                let s = std::env::temp_dir().join(super::scratch_name("ferry-copy-out"));
                (s.clone(), Some(s))
            }
        };
        Ok(LocalSink {
            layout: LayoutDir::create(&root)?,
            kind,
            scratch,
        })
    }

    /// Names the image whose top manifest is `top` and writes the result.
    pub fn finish(&self, top: &IndexEntry) -> Result<(), ArchiveError> {
        match &self.kind {
            SinkKind::OciDir => self.add_to_index(top),
            SinkKind::OciArchive(file) => {
                self.layout.write_index(std::slice::from_ref(top))?;
                tar_layout(self.layout.root(), file)
            }
            SinkKind::DockerArchive(file) => self.write_docker(top, file),
        }
    }

    /// `index.json` with `top` added, replacing an entry of the same name.
    fn add_to_index(&self, top: &IndexEntry) -> Result<(), ArchiveError> {
        let path = self.layout.root().join("index.json");
        let old: Vec<Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["manifests"].as_array().cloned())
            .unwrap_or_default();
        let mut manifests: Vec<Value> = old
            .into_iter()
            .filter(|e| e["annotations"][REF_NAME].as_str() != Some(top.name.as_str()))
            .collect();
        manifests.push(json!({
            "mediaType": top.media_type,
            "digest": top.digest.as_str(),
            "size": top.size,
            "annotations": {REF_NAME: top.name},
        }));
        let index =
            json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
        std::fs::write(&path, bytes).map_err(ArchiveError::io(&path))
    }

    fn write_docker(&self, top: &IndexEntry, file: &Path) -> Result<(), ArchiveError> {
        let bytes = std::fs::read(self.layout.blob_path(&top.digest))
            .map_err(ArchiveError::io(self.layout.blob_path(&top.digest)))?;
        let parsed = manifest::parse(&bytes, Some(&top.media_type))
            .map_err(|e| ArchiveError::Format(e.to_string()))?;
        let Parsed::Image {
            config: Some(config),
            layers,
            ..
        } = parsed
        else {
            return Err(ArchiveError::Format(
                "a docker-archive holds one platform's image: pass --platform os/arch".into(),
            ));
        };
        let mut files = vec![(
            format!("{}.json", config.digest.hex()),
            config.digest.clone(),
        )];
        let mut layer_names = Vec::new();
        for l in &layers {
            let name = format!("{}.tar", l.digest.hex());
            layer_names.push(name.clone());
            files.push((name, l.digest.clone()));
        }
        let list = json!([{"Config": files[0].0, "RepoTags": [top.name], "Layers": layer_names}]);
        let tmp = file.with_extension("tar.partial");
        let out = std::fs::File::create(&tmp).map_err(ArchiveError::io(&tmp))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
        tar.mode(tar::HeaderMode::Deterministic);
        for (name, d) in &files {
            let path = self.layout.blob_path(d);
            tar.append_path_with_name(&path, name)
                .map_err(ArchiveError::io(&path))?;
        }
        let body = serde_json::to_vec(&list).expect("manifest.json serializes");
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "manifest.json", body.as_slice())
            .map_err(ArchiveError::io(&tmp))?;
        tar.into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(ArchiveError::io(&tmp))?;
        std::fs::rename(&tmp, file).map_err(ArchiveError::io(file))
    }
}
