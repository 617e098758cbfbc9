//! The OCI referrers API in the fake (`GET /v2/<name>/referrers/<digest>`), off by default so
//! that the fake behaves like docker-registry 2.8 (404); and helpers to build artifacts that
//! refer to an image (a signature-like manifest with a `subject`, a fallback-tag index).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{FaultyUpstream, Shared, oci_error};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl FaultyUpstream {
    /// Answers the referrers API from the manifests whose `subject` names the digest.
    pub fn enable_referrers_api(&self) {
        self.inner().referrers_api = true;
    }

    /// Registers an artifact of `artifact_type` whose `subject` is manifest `subject` of
    /// `repo` (a config and one layer holding `payload`). Returns its manifest digest.
    pub fn add_referrer(
        &self,
        repo: &str,
        subject: &str,
        artifact_type: &str,
        payload: &[u8],
    ) -> String {
        let size_of = |d: &str| {
            let inner = self.inner();
            let m = &inner.repos[repo].by_digest[d];
            (m.media_type.clone(), m.bytes.len())
        };
        let (subject_type, subject_size) = size_of(subject);
        let config = self.add_blob(b"{}".to_vec());
        let layer = self.add_blob(payload.to_vec());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
            "subject": {"mediaType": subject_type, "digest": subject, "size": subject_size},
        });
        self.add_manifest(repo, None, OCI_MANIFEST, manifest.to_string().into_bytes())
    }

    /// Tags an index of `subject`'s referrers as `sha256-<hex>` (the fallback tag scheme).
    pub fn tag_referrers(&self, repo: &str, subject: &str) -> String {
        let index = index_of(&self.inner().repos[repo].by_digest, subject);
        let tag = subject.replacen(':', "-", 1);
        self.add_manifest(repo, Some(&tag), OCI_INDEX, index.into_bytes())
    }
}

/// The referrers index of `subject` among `manifests`.
fn index_of(
    manifests: &std::collections::HashMap<String, super::Manifest>,
    subject: &str,
) -> String {
    let mut entries: Vec<serde_json::Value> = manifests
        .iter()
        .filter_map(|(digest, m)| {
            let json: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
            (json["subject"]["digest"] == subject).then(|| {
                serde_json::json!({
                    "mediaType": m.media_type,
                    "digest": digest,
                    "size": m.bytes.len(),
                    "artifactType": json["artifactType"],
                })
            })
        })
        .collect();
    entries.sort_by_key(|e| e["digest"].as_str().unwrap_or_default().to_owned());
    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        .to_string()
}

/// The answer to `GET /v2/<name>/referrers/<digest>`.
pub(super) fn answer(shared: &Shared, name: &str, digest: &str) -> Response {
    let inner = shared.inner.lock().unwrap();
    if !inner.referrers_api {
        return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path");
    }
    let Some(repo) = inner.repos.get(name) else {
        return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    let body = index_of(&repo.by_digest, digest);
    ([(header::CONTENT_TYPE, OCI_INDEX)], body).into_response()
}
