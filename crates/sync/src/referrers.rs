//! Signatures, SBOMs and attestations travel with their image: after an image's manifests, the
//! walk transfers the *referrers* of each of them (manifests whose `subject` names it), found
//! with the OCI referrers API (`GET /v2/<name>/referrers/<digest>`) or, for registries without
//! it (docker-registry 2.8), the fallback tag scheme: an index tagged `sha256-<hex>`.
//!
//! Each referrer is walked like an image (its blobs, then its manifest, published by digest).
//! Then the fallback index is published under its tag when the destination needs it: always
//! when the source used the tag scheme (its exact bytes), and when the source answered the API
//! but the destination has no API (the API's answer, an OCI index, as the tag). Referrers of
//! referrers (a signature of an SBOM) are not followed.

use std::sync::Arc;

use ferry_oci::manifest::{self, Descriptor, Parsed};
use ferry_oci::{Digest, Reference, Tag};

use crate::error::SyncError;
use crate::summary::ImageStats;
use crate::walk::{Fetched, Transfer, Walk};

/// What a source says refers to one manifest.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// The referrer manifests.
    pub list: Vec<Descriptor>,
    /// The fallback-tag index to publish at the destination after the referrers, if any.
    pub tag_index: Option<Fetched>,
}

/// The fallback tag of `subject`: `<algorithm>-<hex>` (the OCI distribution spec's scheme).
pub fn fallback_tag(subject: &Digest) -> Tag {
    let tag = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
    Tag::parse(&tag[..tag.len().min(128)]).expect("a digest makes a valid tag")
}

/// The manifests an index lists (a referrers answer or a fallback-tag index).
pub fn listed(bytes: &[u8], media_type: Option<&str>) -> Result<Vec<Descriptor>, SyncError> {
    match manifest::parse(bytes, media_type) {
        Ok(Parsed::Index { manifests, .. }) => Ok(manifests),
        Ok(Parsed::Image { .. }) => Err(SyncError::Invalid(
            "the referrers answer is an image manifest, not an index".into(),
        )),
        Err(e) => Err(SyncError::Invalid(format!("referrers index: {e}"))),
    }
}

/// A fetched index from the bytes of a referrers API answer.
pub fn api_index(bytes: bytes::Bytes) -> Fetched {
    Fetched {
        digest: Digest::sha256_of(&bytes),
        media_type: manifest::OCI_INDEX.to_owned(),
        bytes,
    }
}

/// Whether a failed referrers lookup means "this registry has no referrers for us" rather than
/// a failure worth reporting: an answer about the content, not the registry's condition.
pub fn means_none(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::NotFound(_) | SyncError::Invalid(_) | SyncError::Unauthorized(_)
    )
}

impl Walk {
    /// Transfers the referrers of every manifest in `subjects`; returns what they added.
    pub(crate) async fn referrers<T: Transfer>(
        &self,
        t: &T,
        subjects: &[Digest],
    ) -> Result<ImageStats, SyncError> {
        let mut total = ImageStats::default();
        for subject in subjects {
            let what = format!("referrers of {subject}");
            let found = self.retry(&what, || t.referrers(subject)).await?;
            let Some(found) = found else { continue };
            let plain = self.for_referrers();
            for r in &found.list {
                let reference = Reference::Digest(r.digest.clone());
                let (stats, _) = plain.transfer(t, &reference, &reference, false).await?;
                total.add(&stats);
                total.referrers += 1;
            }
            if let Some(index) = &found.tag_index {
                let tag = Reference::Tag(fallback_tag(subject));
                self.retry(&format!("manifest {tag}"), || t.put_manifest(index, &tag))
                    .await?;
            }
        }
        Ok(total)
    }

    /// The same walk without platform filters (a referrer index has no platforms).
    fn for_referrers(&self) -> Walk {
        Walk {
            image: Arc::clone(&self.image),
            reporter: self.reporter.clone(),
            platforms: Vec::new(),
            single_platform: false,
            retry: self.retry,
            permits: self.permits.clone(),
            parallel: self.parallel,
            with_referrers: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_and_indexes() {
        let d = Digest::sha256_of(b"x");
        let tag = fallback_tag(&d);
        assert_eq!(tag.as_str(), format!("sha256-{}", d.hex()));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{d}","size":3,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}}]}}"#,
            manifest::OCI_INDEX,
            manifest::OCI_MANIFEST
        );
        let listed = listed(index.as_bytes(), Some(manifest::OCI_INDEX)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, d);
        assert!(listed[0].artifact_type.is_some());
        let fetched = api_index(bytes::Bytes::from(index));
        assert_eq!(fetched.digest, Digest::sha256_of(&fetched.bytes));
        assert!(means_none(&SyncError::NotFound("x".into())));
        assert!(!means_none(&SyncError::Transient("503".into())));
    }
}
