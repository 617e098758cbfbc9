//! Imported content against an unreachable upstream: blobs and manifests are served from the
//! cache under the repository they were imported into (its links), an imported tag past its
//! TTL is served stale even with `serve_stale: false`, while an ordinary pulled tag is not.

use bytes::Bytes;
use ferry_oci::{Digest, Reference, Tag};
use ferry_storage::fs::FsStore;

use super::*;
use crate::meta::{self, TagEntry, now_secs};

/// An image manifest whose one layer is `layer` (`size` bytes).
fn manifest(layer: &Digest, size: usize) -> Bytes {
    let text = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{size}}}]}}"#
    );
    Bytes::from(text)
}

#[tokio::test]
async fn imported_tags_are_served_stale_when_the_upstream_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let text = "upstreams:\n  docker.io:\n    url: http://127.0.0.1:9\ncache:\n  tag_ttl: 0s\n  serve_stale: false\n  revalidate: blocking\n";
    let config = Config::from_yaml(text, Vec::new()).unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(dir.path().join("c")).unwrap());
    let mirror = Mirror::start(&config, store.clone(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    let t = mirror.resolve("docker.io/test/app", None, None).unwrap();

    let layer = Bytes::from_static(b"an imported layer");
    let ld = Digest::sha256_of(&layer);
    let spool = dir.path().join("layer");
    std::fs::write(&spool, &layer).unwrap();
    mirror
        .import_blob(&ld, &spool, layer.len() as u64)
        .await
        .unwrap();
    assert!(
        mirror.has_content(&ld) && !spool.exists(),
        "the spool file is consumed"
    );
    let body = manifest(&ld, layer.len());
    let md = Digest::sha256_of(&body);
    let mt = ferry_oci::manifest::OCI_MANIFEST;
    mirror.import_manifest(&md, body.clone(), mt).await.unwrap();
    mirror
        .import_links("docker.io", &t.repo, &md)
        .await
        .unwrap();
    let tag = Tag::parse("1.0").unwrap();
    let size = body.len() as u64;
    mirror
        .import_tag(("docker.io", &t.repo, &tag), &md, mt, size)
        .await
        .unwrap();

    let a = mirror
        .manifest(&t, &Reference::Tag(tag), &Ungated)
        .await
        .unwrap();
    assert_eq!(a.manifest.digest, md);
    assert_eq!(a.outcome, Outcome::Stale);
    let b = mirror
        .blob(&t, &ld, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!((b.size, b.outcome), (layer.len() as u64, Outcome::Hit));
    let other = mirror.resolve("docker.io/test/other", None, None).unwrap();
    assert!(
        mirror
            .blob(&other, &ld, None, Delivery::Stream, &Ungated)
            .await
            .is_err(),
        "not served under a repository it was not imported into"
    );

    // The same record without the imported mark fails with the upstream, as configured.
    let plain = TagEntry {
        digest: md,
        media_type: mt.into(),
        size,
        fetched_at: now_secs(),
        deleted_upstream_at: None,
        imported: false,
    };
    meta::put(
        store.as_ref(),
        &meta::tag_key("docker.io", "test/app", "2.0"),
        &plain,
    )
    .await
    .unwrap();
    let two = Reference::Tag(Tag::parse("2.0").unwrap());
    assert!(mirror.manifest(&t, &two, &Ungated).await.is_err());
}
