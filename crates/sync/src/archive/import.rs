//! `ferry import`: an OCI image-layout archive (what `ferry export` writes) or a `docker save`
//! archive into the cache of a mirror, on whichever storage backend it is configured with.
//!
//! Every entry is spooled and its digest checked first ([`super::extract`]). Then, per image:
//! every blob is stored (verified, content-addressed, so a blob is never half there), then its
//! manifests (children before the index), then the repository's links to all of it (so it is
//! served under that repository), and only then its tag, marked imported
//! ([`Mirror::import_tag`]). A failure at any point leaves no tag pointing at missing content.
//!
//! A docker-save archive has no registry manifest (`manifest.json` lists a config and layer
//! tars), so ferry writes a Docker v2 schema 2 manifest for it; its digest is that of the bytes
//! ferry writes, not the digest the image had in the registry it came from.

use std::collections::HashSet;
use std::path::Path;

use bytes::Bytes;
use ferry_mirror::Mirror;
use ferry_oci::manifest::{self, Descriptor, Parsed};
use ferry_oci::{Digest, ImageRef};
use serde_json::{Value, json};

use super::ArchiveError;
use super::extract::{Extracted, blob_name, extract};
use super::layout::REF_NAME;

/// One image imported: its full reference and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// e.g. `docker.io/library/alpine:3.19`.
    pub name: String,
    /// The top manifest's digest.
    pub digest: Digest,
}

/// A manifest ready to store.
pub(crate) struct Doc {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Bytes,
}

/// Imports `archive` into the cache of `mirror`.
pub async fn import(mirror: &Mirror, archive: &Path) -> Result<Vec<Imported>, ArchiveError> {
    let dir = mirror
        .store()
        .spool_dir()
        .join(super::scratch_name("import"));
    let (archive2, dir2) = (archive.to_owned(), dir.clone());
    let extracted = tokio::task::spawn_blocking(move || extract(&archive2, &dir2))
        .await
        .map_err(|e| ArchiveError::Format(format!("extraction failed: {e}")))?;
    let result = match extracted {
        Ok(x) if names_images(&x) => import_oci(mirror, &x).await,
        Ok(x) if x.files.contains_key("manifest.json") => import_docker(mirror, &x).await,
        Ok(x) if x.files.contains_key("index.json") => import_oci(mirror, &x).await,
        Ok(_) => Err(ArchiveError::Format(
            "neither an OCI image layout (no index.json) nor a docker-save archive (no manifest.json)"
                .into(),
        )),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Whether the archive's `index.json` names every image by reference, so it is imported as an
/// OCI layout (keeping the registry's digests) even when a `manifest.json` is there too (a
/// Docker 25+ `docker save` writes both, with bare tags in `index.json`).
fn names_images(x: &Extracted) -> bool {
    let Ok(bytes) = x.read("index.json", "") else {
        return false;
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    !entries.is_empty()
        && entries.iter().all(|e| {
            e["annotations"][REF_NAME]
                .as_str()
                .is_some_and(|n| n.contains(['/', ':', '@']))
        })
}

async fn import_oci(mirror: &Mirror, x: &Extracted) -> Result<Vec<Imported>, ArchiveError> {
    let index: Value = parse_json(x, "index.json")?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for e in entries {
        let d: Descriptor = serde_json::from_value(e.clone())
            .map_err(|err| ArchiveError::entry("index.json", format!("bad descriptor: {err}")))?;
        let name = e["annotations"][REF_NAME].as_str().ok_or_else(|| {
            ArchiveError::entry(
                "index.json",
                format!("{} has no {REF_NAME} annotation naming the image", d.digest),
            )
        })?;
        if !name.contains(['/', ':', '@']) {
            return Err(ArchiveError::entry(
                "index.json",
                format!(
                    "{REF_NAME} {name:?} is only a tag; ferry needs the full reference (e.g. docker.io/library/alpine:3.19)"
                ),
            ));
        }
        let image = ImageRef::parse(name).map_err(|err| {
            ArchiveError::entry(
                "index.json",
                format!("{REF_NAME} {name:?} is not a full image reference: {err}"),
            )
        })?;
        let docs = oci_docs(x, &d)?;
        store_image(mirror, x, &image, docs).await?;
        out.push(Imported {
            name: image.to_string(),
            digest: d.digest,
        });
    }
    Ok(out)
}

/// The manifests of the image `top` names, children first, read from the archive.
fn oci_docs(x: &Extracted, top: &Descriptor) -> Result<Vec<Doc>, ArchiveError> {
    let doc = read_doc(x, &top.digest, &top.media_type)?;
    let mut docs = Vec::new();
    if let Parsed::Index { manifests, .. } = parse(&doc)? {
        for child in manifests {
            docs.push(read_doc(x, &child.digest, &child.media_type)?);
        }
    }
    docs.push(doc);
    Ok(docs)
}

fn read_doc(x: &Extracted, d: &Digest, media_type: &str) -> Result<Doc, ArchiveError> {
    let bytes = Bytes::from(x.read(&blob_name(d), &format!("manifest {d}"))?);
    let media_type = if media_type.is_empty() {
        manifest::parse(&bytes, None)
            .map(|p| p.media_type().to_owned())
            .unwrap_or_else(|_| manifest::OCI_MANIFEST.into())
    } else {
        media_type.to_owned()
    };
    Ok(Doc {
        digest: d.clone(),
        media_type,
        bytes,
    })
}

fn parse(doc: &Doc) -> Result<Parsed, ArchiveError> {
    manifest::parse(&doc.bytes, Some(&doc.media_type))
        .map_err(|e| ArchiveError::entry(&blob_name(&doc.digest), e.to_string()))
}

/// Stores every blob, then every manifest, then the tag of one image.
async fn store_image(
    mirror: &Mirror,
    x: &Extracted,
    image: &ImageRef,
    docs: Vec<Doc>,
) -> Result<(), ArchiveError> {
    let target = mirror.resolve(
        &format!("{}/{}", image.registry, image.repository),
        None,
        None,
    )?;
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    for doc in &docs {
        if let Parsed::Image { config, layers, .. } = parse(doc)? {
            for b in config.into_iter().chain(layers) {
                let foreign =
                    b.media_type.contains("foreign") || b.media_type.contains("nondistributable");
                if !foreign && seen.insert(b.digest.clone()) {
                    blobs.push(b);
                }
            }
        }
    }
    for b in &blobs {
        match x.blob(&b.digest) {
            Some(f) => mirror.import_blob(&b.digest, &f.path, f.size).await?,
            None if mirror.has_content(&b.digest) => {}
            None => {
                return Err(ArchiveError::entry(
                    &blob_name(&b.digest),
                    format!("missing from the archive (a blob of {image})"),
                ));
            }
        }
    }
    for doc in &docs {
        mirror
            .import_manifest(&doc.digest, doc.bytes.clone(), &doc.media_type)
            .await?;
    }
    let top = docs.last().expect("an image has a top manifest");
    mirror
        .import_links(&target.name, &target.repo, &top.digest)
        .await?;
    if let Some(tag) = &image.tag {
        let size = top.bytes.len() as u64;
        mirror
            .import_tag(
                (&target.name, &target.repo, tag),
                &top.digest,
                &top.media_type,
                size,
            )
            .await?;
    }
    Ok(())
}

fn parse_json(x: &Extracted, name: &str) -> Result<Value, ArchiveError> {
    let bytes = x.read(name, "required")?;
    serde_json::from_slice(&bytes).map_err(|e| ArchiveError::entry(name, format!("not JSON: {e}")))
}

/// Media type of a Docker image config.
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

async fn import_docker(mirror: &Mirror, x: &Extracted) -> Result<Vec<Imported>, ArchiveError> {
    let list: Value = parse_json(x, "manifest.json")?;
    let images = list.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let doc = docker_manifest(x, img, i)?;
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if tags.is_empty() {
            return Err(ArchiveError::entry(
                "manifest.json",
                format!("image #{} has no RepoTags to import it under", i + 1),
            ));
        }
        for t in tags {
            let image = ImageRef::parse(t).map_err(|e| {
                ArchiveError::entry("manifest.json", format!("RepoTags {t:?}: {e}"))
            })?;
            let docs = vec![Doc {
                digest: doc.digest.clone(),
                media_type: doc.media_type.clone(),
                bytes: doc.bytes.clone(),
            }];
            store_image(mirror, x, &image, docs).await?;
            out.push(Imported {
                name: image.to_string(),
                digest: doc.digest.clone(),
            });
        }
    }
    Ok(out)
}

/// The Docker v2 schema 2 manifest of one `manifest.json` entry.
pub(crate) fn docker_manifest(x: &Extracted, img: &Value, i: usize) -> Result<Doc, ArchiveError> {
    let at = |what: &str| format!("image #{} of manifest.json: {what}", i + 1);
    let config = img["Config"]
        .as_str()
        .ok_or_else(|| ArchiveError::entry("manifest.json", at("no Config")))?;
    let c = x.get(config, &at("its Config"))?;
    let mut layers = Vec::new();
    for l in img["Layers"].as_array().cloned().unwrap_or_default() {
        let name = l.as_str().ok_or_else(|| {
            ArchiveError::entry("manifest.json", at("a Layers entry is not a string"))
        })?;
        let f = x.get(name, &at("a layer"))?;
        let media_type = if is_gzip(&f.path) {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.docker.image.rootfs.diff.tar"
        };
        layers.push(json!({"mediaType": media_type, "size": f.size, "digest": f.digest.as_str()}));
    }
    let m = json!({
        "schemaVersion": 2,
        "mediaType": manifest::DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": c.size, "digest": c.digest.as_str()},
        "layers": layers,
    });
    let bytes = Bytes::from(serde_json::to_vec_pretty(&m).expect("manifest serializes"));
    Ok(Doc {
        digest: Digest::sha256_of(&bytes),
        media_type: manifest::DOCKER_MANIFEST.into(),
        bytes,
    })
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == [0x1f, 0x8b])
}
