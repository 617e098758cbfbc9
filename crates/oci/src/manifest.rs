//! Manifest media types and the descriptors a manifest or index points at.
//!
//! ferry never re-serializes a manifest: the upstream's bytes are the truth (the digest is over
//! them). This module only reads what is needed to walk an image: an index's child manifests
//! (with platforms) and an image manifest's config and layers. Parsing is lenient: unknown
//! fields are ignored, so Docker and OCI variants both work.

use serde::Deserialize;

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (legacy, signed).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema 1 (legacy).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Every manifest media type ferry asks upstreams for, so they answer with the stored format.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5, \
application/vnd.docker.distribution.manifest.v1+json;q=0.5, \
application/json;q=0.1";

/// Whether a media type is an index / manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// A platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether this platform matches `os/arch[/variant]` (the variant only when given).
    pub fn matches(&self, spec: &str) -> bool {
        let mut parts = spec.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Platform, for index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Artifact type, for referrers.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// URLs of foreign layers (never fetched by ferry).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    fs_layers: Option<Vec<Schema1Layer>>,
    /// Kept loose: a malformed `subject` must not make the manifest unreadable.
    #[serde(default)]
    subject: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schema1Layer {
    blob_sum: Digest,
}

/// What a manifest document holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An index or manifest list: child manifests.
    Index {
        /// Media type (declared or inferred).
        media_type: String,
        /// The child manifests.
        manifests: Vec<Descriptor>,
    },
    /// An image (or artifact) manifest: its blobs.
    Image {
        /// Media type (declared or inferred).
        media_type: String,
        /// Config blob (absent for schema 1).
        config: Option<Descriptor>,
        /// Layer blobs (digests only for schema 1).
        layers: Vec<Descriptor>,
    },
}

/// Why bytes are not a manifest.
#[derive(Debug, thiserror::Error)]
#[error("not a valid manifest: {0}")]
pub struct ManifestError(String);

/// Parses a manifest or index, inferring the media type when the document omits it.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
    let declared = raw.media_type.clone().or_else(|| {
        content_type
            .filter(|c| c.contains("manifest") || c.contains("index"))
            .map(str::to_owned)
    });
    if let Some(manifests) = raw.manifests {
        let media_type = declared.unwrap_or_else(|| OCI_INDEX.to_owned());
        return Ok(Parsed::Index {
            media_type,
            manifests,
        });
    }
    if raw.schema_version == Some(1) {
        let layers = raw
            .fs_layers
            .unwrap_or_default()
            .into_iter()
            .map(|l| Descriptor {
                media_type: String::new(),
                digest: l.blob_sum,
                size: 0,
                platform: None,
                artifact_type: None,
                urls: None,
            })
            .collect();
        let media_type = declared.unwrap_or_else(|| DOCKER_SCHEMA1_SIGNED.to_owned());
        return Ok(Parsed::Image {
            media_type,
            config: None,
            layers,
        });
    }
    if raw.config.is_none() && raw.layers.is_none() {
        return Err(ManifestError("neither manifests, config nor layers".into()));
    }
    let media_type = declared.unwrap_or_else(|| OCI_MANIFEST.to_owned());
    Ok(Parsed::Image {
        media_type,
        config: raw.config,
        layers: raw.layers.unwrap_or_default(),
    })
}

/// Every digest a manifest or index names: child manifests, config, layers and `subject`
/// (empty for bytes that are not a manifest). A repository holding the manifest holds these.
pub fn references(bytes: &[u8]) -> Vec<Digest> {
    let Ok(raw) = serde_json::from_slice::<Raw>(bytes) else {
        return Vec::new();
    };
    let descriptors = raw
        .manifests
        .into_iter()
        .flatten()
        .chain(raw.config)
        .chain(raw.layers.into_iter().flatten())
        .chain(
            raw.subject
                .and_then(|v| serde_json::from_value::<Descriptor>(v).ok()),
        );
    let schema1 = raw.fs_layers.into_iter().flatten().map(|l| l.blob_sum);
    let mut out: Vec<Digest> = descriptors.map(|d| d.digest).chain(schema1).collect();
    out.sort();
    out.dedup();
    out
}

impl Parsed {
    /// The media type.
    pub fn media_type(&self) -> &str {
        match self {
            Parsed::Index { media_type, .. } | Parsed::Image { media_type, .. } => media_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn index_with_platforms() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":11,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let Parsed::Index {
            media_type,
            manifests,
        } = parse(doc.as_bytes(), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(media_type, OCI_INDEX);
        assert!(
            manifests[1]
                .platform
                .as_ref()
                .unwrap()
                .matches("linux/arm64")
        );
        assert!(
            manifests[1]
                .platform
                .as_ref()
                .unwrap()
                .matches("linux/arm64/v8")
        );
        assert!(
            !manifests[0]
                .platform
                .as_ref()
                .unwrap()
                .matches("linux/arm64")
        );
        assert_eq!(
            manifests[1].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn image_without_media_type_is_oci() {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":1}},"layers":[{{"digest":"{D2}","size":2}}]}}"#
        );
        let p = parse(doc.as_bytes(), None).unwrap();
        assert_eq!(p.media_type(), OCI_MANIFEST);
        let Parsed::Image { config, layers, .. } = p else {
            panic!()
        };
        assert_eq!(config.unwrap().digest.as_str(), D1);
        assert_eq!(layers.len(), 1);
    }

    #[test]
    fn references_name_children_config_layers_and_subject() {
        let d3 = D1.replace('1', "3");
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":1}},"layers":[{{"digest":"{D2}","size":2}},{{"digest":"{D2}","size":2}}],"subject":{{"digest":"{d3}","size":3}}}}"#
        );
        let got: Vec<String> = references(image.as_bytes())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(got, [D1, D2, d3.as_str()]);
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D2}","size":9}}]}}"#);
        assert_eq!(references(index.as_bytes())[0].as_str(), D2);
        let schema1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{D1}"}}]}}"#);
        assert_eq!(references(schema1.as_bytes())[0].as_str(), D1);
        assert!(references(b"not json").is_empty());
    }

    #[test]
    fn rejects_non_manifests() {
        assert!(parse(b"{}", None).is_err());
        assert!(parse(b"not json", None).is_err());
        assert!(parse(br#"{"layers":[{"digest":"sha256:xx"}]}"#, None).is_err());
    }
}
