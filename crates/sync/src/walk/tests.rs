//! The walk over an in-memory fake transfer: which manifests and blobs move, in which order,
//! with platform filters, retries and failures.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ferry_oci::manifest::{OCI_INDEX, OCI_MANIFEST};

use super::*;
use crate::progress::Quiet;
use crate::referrers::Referrers;

/// Source manifests by reference, destination blobs and published manifests.
#[derive(Default)]
struct Fake {
    manifests: HashMap<String, Fetched>,
    present: Mutex<HashSet<Digest>>,
    /// Blob -> transient failures still to answer.
    flaky: Mutex<HashMap<Digest, u32>>,
    missing: HashSet<Digest>,
    published: Mutex<Vec<(Digest, String)>>,
    /// Referrers by subject.
    referrers: HashMap<Digest, Referrers>,
}

impl Fake {
    fn add(&mut self, reference: &str, media_type: &str, json: String) -> Digest {
        let bytes = Bytes::from(json);
        let digest = Digest::sha256_of(&bytes);
        let m = Fetched {
            bytes,
            media_type: media_type.into(),
            digest: digest.clone(),
        };
        self.manifests.insert(digest.to_string(), m.clone());
        self.manifests.insert(reference.into(), m);
        digest
    }
}

impl Transfer for Fake {
    async fn manifest(&self, reference: &Reference) -> Result<Fetched, SyncError> {
        self.manifests
            .get(reference.as_str())
            .cloned()
            .ok_or_else(|| SyncError::NotFound("manifest unknown".into()))
    }

    async fn blob(&self, b: &Descriptor, _: &BlobProgress) -> Result<BlobOutcome, SyncError> {
        if self.missing.contains(&b.digest) {
            return Err(SyncError::NotFound("blob unknown".into()));
        }
        if let Some(n) = self
            .flaky
            .lock()
            .unwrap()
            .get_mut(&b.digest)
            .filter(|n| **n > 0)
        {
            *n -= 1;
            return Err(SyncError::Transient("503".into()));
        }
        if !self.present.lock().unwrap().insert(b.digest.clone()) {
            return Ok(BlobOutcome::Present);
        }
        Ok(BlobOutcome::Fetched)
    }

    async fn put_manifest(&self, m: &Fetched, r: &Reference) -> Result<(), SyncError> {
        self.published
            .lock()
            .unwrap()
            .push((m.digest.clone(), r.to_string()));
        Ok(())
    }

    async fn referrers(&self, subject: &Digest) -> Result<Option<Referrers>, SyncError> {
        Ok(self.referrers.get(subject).cloned())
    }
}

fn blob(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn image(config: u8, layers: &[u8]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{l}}}"#, blob(*l)))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{config}}},"layers":[{}]}}"#,
        blob(config),
        layers.join(",")
    )
}

/// An index `app:v1` over amd64 (config 1, layers 10, 11) and arm64/v8 (config 2, layers 10, 12).
fn two_platforms() -> (Fake, Digest, Digest, Digest) {
    let mut f = Fake::default();
    let amd = f.add("amd", OCI_MANIFEST, image(1, &[10, 11]));
    let arm = f.add("arm", OCI_MANIFEST, image(2, &[10, 12]));
    let entry = |d: &Digest, arch: &str, variant: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"{arch}"{variant}}}}}"#
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&amd, "amd64", ""),
        entry(&arm, "arm64", r#","variant":"v8""#)
    );
    let top = f.add("v1", OCI_INDEX, index);
    (f, top, amd, arm)
}

fn walk(platforms: &[&str], single_platform: bool) -> Walk {
    Walk {
        image: "test/app:v1".into(),
        reporter: Arc::new(Quiet),
        platforms: platforms.iter().map(|p| p.to_string()).collect(),
        single_platform,
        retry: RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max_wait: Duration::from_millis(5),
        },
        permits: Arc::new(Semaphore::new(2)),
        parallel: 2,
        with_referrers: false,
    }
}

fn tag(t: &str) -> Reference {
    Reference::parse(t).unwrap()
}

#[tokio::test]
async fn whole_index_children_first() {
    let (f, top, amd, arm) = two_platforms();
    let stats = walk(&[], false)
        .run(&f, &tag("v1"), &tag("v1"))
        .await
        .unwrap();
    assert_eq!(stats.manifests, 3);
    assert_eq!(stats.blobs_fetched, 5, "layer 10 is shared and moves once");
    assert_eq!(stats.digest, Some(top.clone()));
    let published = f.published.lock().unwrap().clone();
    assert_eq!(published.len(), 3);
    assert_eq!(published[2], (top, "v1".to_string()), "the index goes last");
    let children: HashSet<Digest> = published[..2].iter().map(|p| p.0.clone()).collect();
    assert_eq!(children, HashSet::from([amd, arm]));

    let again = walk(&[], false)
        .run(&f, &tag("v1"), &tag("v1"))
        .await
        .unwrap();
    assert_eq!((again.blobs_fetched, again.blobs_present), (0, 5));
}

#[tokio::test]
async fn platform_filters() {
    let (f, _, _, arm) = two_platforms();
    let stats = walk(&["linux/arm64"], true)
        .run(&f, &tag("v1"), &tag("arm"))
        .await
        .unwrap();
    assert_eq!(stats.blobs_fetched, 3);
    assert_eq!(stats.digest, Some(arm.clone()));
    assert_eq!(*f.published.lock().unwrap(), vec![(arm, "arm".to_string())]);
    assert!(f.present.lock().unwrap().contains(&blob(12)));
    assert!(!f.present.lock().unwrap().contains(&blob(11)));

    let e = walk(&["linux/s390x"], false)
        .run(&f, &tag("v1"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no manifest for platform linux/s390x")
            && e.to_string().contains("linux/arm64/v8"),
        "{e}"
    );
}

#[tokio::test]
async fn retries_and_failures_name_the_blob() {
    let (mut f, ..) = two_platforms();
    f.flaky.lock().unwrap().insert(blob(11), 2);
    let stats = walk(&[], false)
        .run(&f, &tag("v1"), &tag("v1"))
        .await
        .unwrap();
    assert_eq!(stats.blobs_fetched, 5, "two 503s, then success");

    f.missing.insert(blob(12));
    f.present.lock().unwrap().clear();
    f.published.lock().unwrap().clear();
    let e = walk(&[], false)
        .run(&f, &tag("v1"), &tag("v1"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "not found");
    assert!(e.to_string().contains(&format!("blob {}", blob(12))), "{e}");
    assert!(
        f.published.lock().unwrap().is_empty(),
        "no manifest without its blobs"
    );
    assert_eq!(
        f.present.lock().unwrap().len(),
        4,
        "the other blobs still moved"
    );

    let e = walk(&[], false)
        .run(&f, &tag("nope"), &tag("nope"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "not found: manifest nope: manifest unknown");
}

#[tokio::test]
async fn referrers_follow_their_image_with_the_fallback_tag_last() {
    let (mut f, top, amd, _) = two_platforms();
    let sig = f.add("sig", OCI_MANIFEST, image(3, &[30]));
    let sbom = f.add("sbom", OCI_MANIFEST, image(4, &[40]));
    let desc = |d: &Digest| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1}}"#);
    let index_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        desc(&sig)
    );
    let tag_index = Fetched {
        digest: Digest::sha256_of(index_json.as_bytes()),
        bytes: Bytes::from(index_json.clone()),
        media_type: OCI_INDEX.into(),
    };
    let list = |json: &str| crate::referrers::listed(json.as_bytes(), None).unwrap();
    f.referrers.insert(
        top.clone(),
        Referrers {
            list: list(
                &tag_index
                    .bytes
                    .iter()
                    .map(|b| *b as char)
                    .collect::<String>(),
            ),
            tag_index: Some(tag_index.clone()),
        },
    );
    let sbom_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        desc(&sbom)
    );
    f.referrers.insert(
        amd,
        Referrers {
            list: list(&sbom_index),
            tag_index: None,
        },
    );
    let mut w = walk(&[], false);
    w.with_referrers = true;
    let stats = w.run(&f, &tag("v1"), &tag("v1")).await.unwrap();
    assert_eq!(
        stats.referrers, 2,
        "a signature of the index, an SBOM of a platform"
    );
    assert_eq!(
        stats.blobs_fetched,
        5 + 4,
        "the referrers' configs and layers too"
    );
    assert_eq!(
        stats.digest,
        Some(top.clone()),
        "the image's digest, not a referrer's"
    );
    let published = f.published.lock().unwrap().clone();
    let at = |d: &Digest, r: &str| {
        published
            .iter()
            .position(|p| p.0 == *d && p.1 == r)
            .unwrap()
    };
    let fallback = crate::referrers::fallback_tag(&top).to_string();
    assert!(at(&top, "v1") < at(&sig, sig.as_str()), "the image first");
    assert!(
        at(&sig, sig.as_str()) < at(&tag_index.digest, &fallback),
        "the tag index last"
    );
    assert!(published.iter().any(|p| p.0 == sbom));
}
