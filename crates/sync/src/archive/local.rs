//! Images in local files as `ferry copy` sources: an OCI layout directory (`oci:DIR[:REF]`),
//! an OCI-layout tar (`oci-archive:FILE[:REF]`) or a docker-save tar
//! (`docker-archive:FILE[:REF]`). Archives are extracted (hashed, bad entries named) into a
//! scratch directory that is removed when the [`LocalImage`] is dropped. A docker-save image
//! gets the Docker schema 2 manifest `ferry import` writes for it (see [`super::import`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_oci::{Digest, ImageRef};
use serde_json::Value;

use super::ArchiveError;
use super::extract::{Extracted, extract};
use super::import::docker_manifest;
use super::layout::REF_NAME;

/// Where a local image's files are.
enum Files {
    /// An OCI layout directory: `blobs/<alg>/<hex>`.
    Dir(PathBuf),
    /// Extracted archive files by digest.
    Extracted(HashMap<Digest, PathBuf>),
}

/// One image in local files.
pub struct LocalImage {
    files: Files,
    docs: HashMap<Digest, (Bytes, String)>,
    /// Its top manifest.
    pub top: Digest,
    /// Media type of the top manifest, when the layout says.
    pub media_type: String,
    /// The name the layout gives it (`ref.name` or RepoTags), if any.
    pub name: Option<String>,
    scratch: Option<PathBuf>,
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        if let Some(s) = &self.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

impl LocalImage {
    /// The image `reference` names in the layout directory `dir` (the only one when `None`).
    pub fn open_oci_dir(dir: &Path, reference: Option<&str>) -> Result<Self, ArchiveError> {
        let path = dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(ArchiveError::io(&path))?;
        let index: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ArchiveError::entry("index.json", format!("not JSON: {e}")))?;
        let (top, media_type, name) = pick(&index, reference)?;
        Ok(LocalImage {
            files: Files::Dir(dir.to_owned()),
            docs: HashMap::new(),
            top,
            media_type,
            name,
            scratch: None,
        })
    }

    /// The image `reference` names in an OCI-layout or docker-save tar.
    pub fn open_archive(file: &Path, reference: Option<&str>) -> Result<Self, ArchiveError> {
        let scratch = std::env::temp_dir().join(super::scratch_name("ferry-copy"));
        let x = extract(file, &scratch);
        let opened = x.and_then(|x| Self::from_extracted(&x, reference));
        match opened {
            Ok(mut image) => {
                image.scratch = Some(scratch);
                Ok(image)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    fn from_extracted(x: &Extracted, reference: Option<&str>) -> Result<Self, ArchiveError> {
        let files = x
            .files
            .values()
            .map(|f| (f.digest.clone(), f.path.clone()))
            .collect();
        let mut docs = HashMap::new();
        let (top, media_type, name) = if x.files.contains_key("manifest.json") {
            let (doc, name) = docker_image(x, reference)?;
            let picked = (doc.digest.clone(), doc.media_type.clone(), Some(name));
            docs.insert(doc.digest, (doc.bytes, doc.media_type));
            picked
        } else {
            let bytes = x.read("index.json", "an OCI layout needs it")?;
            let index: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ArchiveError::entry("index.json", format!("not JSON: {e}")))?;
            pick(&index, reference)?
        };
        Ok(LocalImage {
            files: Files::Extracted(files),
            docs,
            top,
            media_type,
            name,
            scratch: None,
        })
    }

    /// The file holding content `d`, if present.
    pub fn path(&self, d: &Digest) -> Option<PathBuf> {
        match &self.files {
            Files::Dir(dir) => {
                let p = dir.join("blobs").join(d.algorithm().as_str()).join(d.hex());
                p.exists().then_some(p)
            }
            Files::Extracted(m) => m.get(d).cloned(),
        }
    }

    /// A manifest's bytes and media type (`""`: unknown, the caller infers it).
    pub fn manifest(&self, d: &Digest) -> Result<(Bytes, String), ArchiveError> {
        if let Some((b, m)) = self.docs.get(d) {
            return Ok((b.clone(), m.clone()));
        }
        let name = format!("blobs/{}/{}", d.algorithm().as_str(), d.hex());
        let path = self
            .path(d)
            .ok_or_else(|| ArchiveError::entry(&name, "missing (a manifest of the image)"))?;
        let bytes = std::fs::read(&path).map_err(ArchiveError::io(&path))?;
        if Digest::sha256_of(&bytes) != *d && d.algorithm() == ferry_oci::digest::Algorithm::Sha256
        {
            return Err(ArchiveError::entry(
                &name,
                "content does not hash to its name",
            ));
        }
        let media_type = if *d == self.top {
            self.media_type.clone()
        } else {
            String::new()
        };
        Ok((Bytes::from(bytes), media_type))
    }
}

/// The `index.json` entry `reference` names (by `ref.name`), or the only one.
fn pick(
    index: &Value,
    reference: Option<&str>,
) -> Result<(Digest, String, Option<String>), ArchiveError> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = entries
        .iter()
        .map(|e| e["annotations"][REF_NAME].as_str().unwrap_or("").to_owned())
        .collect();
    let i = match reference {
        Some(r) => names.iter().position(|n| n == r),
        None if entries.len() == 1 => Some(0),
        None => None,
    };
    let Some(i) = i else {
        return Err(ArchiveError::entry(
            "index.json",
            format!(
                "no image named {reference:?} (it has {names:?}); name one after the path, e.g. oci:DIR:NAME"
            ),
        ));
    };
    let e = &entries[i];
    let digest = e["digest"]
        .as_str()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| ArchiveError::entry("index.json", "an entry without a valid digest"))?;
    let media_type = e["mediaType"].as_str().unwrap_or("").to_owned();
    let name = Some(names[i].clone()).filter(|n| !n.is_empty());
    Ok((digest, media_type, name))
}

/// The docker-save image `reference` names (by RepoTags), or the only one, converted.
fn docker_image(
    x: &Extracted,
    reference: Option<&str>,
) -> Result<(super::import::Doc, String), ArchiveError> {
    let list: Value = serde_json::from_slice(&x.read("manifest.json", "required")?)
        .map_err(|e| ArchiveError::entry("manifest.json", format!("not JSON: {e}")))?;
    let images = list.as_array().cloned().unwrap_or_default();
    let tags = |img: &Value| -> Vec<String> {
        img["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let same = |a: &str, b: &str| {
        a == b || matches!((ImageRef::parse(a), ImageRef::parse(b)), (Ok(x), Ok(y)) if x == y)
    };
    let found = images.iter().enumerate().find(|(_, img)| match reference {
        Some(r) => tags(img).iter().any(|t| same(t, r)),
        None => images.len() == 1,
    });
    let Some((i, img)) = found else {
        return Err(ArchiveError::entry(
            "manifest.json",
            format!(
                "no image tagged {reference:?}; name one after the file, e.g. docker-archive:FILE:repo:tag"
            ),
        ));
    };
    let name = reference
        .map(str::to_owned)
        .or_else(|| tags(img).into_iter().next())
        .unwrap_or_default();
    Ok((docker_manifest(x, img, i)?, name))
}
