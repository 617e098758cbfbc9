//! The layout writer, the tar of it and the reader agree; bad entries are named.

use bytes::Bytes;
use ferry_oci::Digest;

use super::ArchiveError;
use super::export::staging_dir;
use super::extract::{blob_name, extract};
use super::layout::{IndexEntry, LayoutDir, REF_NAME, tar_layout};

fn layout_with(blobs: &[&[u8]]) -> (tempfile::TempDir, Vec<Digest>) {
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutDir::create(&dir.path().join("stage")).unwrap();
    let digests: Vec<Digest> = blobs
        .iter()
        .map(|b| {
            let d = Digest::sha256_of(b);
            layout.write_bytes(&d, b).unwrap();
            d
        })
        .collect();
    let entry = IndexEntry {
        name: "docker.io/library/alpine:3.19".into(),
        digest: digests[0].clone(),
        media_type: ferry_oci::manifest::OCI_MANIFEST.into(),
        size: blobs[0].len() as u64,
    };
    layout.write_index(&[entry]).unwrap();
    (dir, digests)
}

#[test]
fn a_tarred_layout_reads_back_with_digests() {
    let (dir, digests) = layout_with(&[b"{\"schemaVersion\":2}", b"layer bytes"]);
    let tar = dir.path().join("images.tar");
    tar_layout(&dir.path().join("stage"), &tar).unwrap();
    let x = extract(&tar, &dir.path().join("out")).unwrap();
    assert!(x.files.contains_key("oci-layout"));
    let index: serde_json::Value =
        serde_json::from_slice(&x.read("index.json", "test").unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"][REF_NAME],
        "docker.io/library/alpine:3.19"
    );
    for d in &digests {
        assert_eq!(x.blob(d).unwrap().digest, *d);
        assert!(x.files.contains_key(&blob_name(d)));
    }
}

#[test]
fn truncated_and_corrupt_entries_are_named() {
    let layer = vec![7u8; 300_000];
    let (dir, digests) = layout_with(&[b"{}", &layer]);
    let tar = dir.path().join("images.tar");
    tar_layout(&dir.path().join("stage"), &tar).unwrap();
    let bytes = std::fs::read(&tar).unwrap();
    let at = bytes
        .windows(1024)
        .position(|w| w.iter().all(|b| *b == 7))
        .unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..at + 1000]).unwrap();
    let e = extract(&cut, &dir.path().join("x1")).unwrap_err();
    let name = blob_name(&digests[1]);
    assert!(
        matches!(&e, ArchiveError::Entry { entry, message } if *entry == name && message.contains("truncated")),
        "{e}"
    );
    let mut bad = bytes.clone();
    bad[at + 10] = 8;
    let corrupt = dir.path().join("corrupt.tar");
    std::fs::write(&corrupt, &bad).unwrap();
    let e = extract(&corrupt, &dir.path().join("x2")).unwrap_err();
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("hashes to"),
        "{e}"
    );
}

#[tokio::test]
async fn a_streamed_blob_with_wrong_bytes_never_gets_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutDir::create(dir.path()).unwrap();
    let d = Digest::sha256_of(b"right");
    let wrong = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"wrong"))]);
    assert!(layout.write_stream(&d, 5, wrong, |_| {}).await.is_err());
    assert!(!layout.blob_path(&d).exists());
    assert!(!layout.has_verified(&d));
    let right = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"right"))]);
    layout.write_stream(&d, 5, right, |_| {}).await.unwrap();
    assert!(layout.has_verified(&d));
    std::fs::write(layout.blob_path(&d), b"rotten").unwrap();
    assert!(
        !layout.has_verified(&d),
        "a damaged staged blob is not trusted"
    );
    assert!(!layout.blob_path(&d).exists(), "and is removed");
}

#[test]
fn staging_sits_next_to_the_output() {
    let p = staging_dir(std::path::Path::new("/tmp/out/images.tar"));
    assert_eq!(p, std::path::Path::new("/tmp/out/images.tar.partial.d"));
}

#[test]
fn copy_ends_are_named_as_skopeo_names_them() {
    use super::transports::Location;
    use std::path::PathBuf;
    let p = |s: &str| Location::parse(s).unwrap();
    assert!(matches!(
        p("docker://127.0.0.1:5001/a/b:1"),
        Location::Registry(_)
    ));
    assert!(matches!(p("ghcr.io/o/a:1"), Location::Registry(_)));
    assert_eq!(
        p("oci:/tmp/l:v1"),
        Location::Oci(PathBuf::from("/tmp/l"), Some("v1".into()))
    );
    assert_eq!(
        p("oci-archive:/tmp/x.tar:docker.io/library/alpine:3.19"),
        Location::OciArchive(
            PathBuf::from("/tmp/x.tar"),
            Some("docker.io/library/alpine:3.19".into())
        )
    );
    assert_eq!(
        p("docker-archive:x.tar"),
        Location::DockerArchive(PathBuf::from("x.tar"), None)
    );
    assert_eq!(p("oci:/d:n").to_string(), "oci:/d:n");
    assert!(Location::parse("oci:").is_err());
    assert!(Location::parse("Not A Ref").is_err());
}

#[tokio::test]
async fn two_writers_of_one_blob_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutDir::create(dir.path()).unwrap();
    let data = Bytes::from(vec![3u8; 1 << 20]);
    let d = Digest::sha256_of(&data);
    let chunks = || {
        let parts: Vec<std::io::Result<Bytes>> = data
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    };
    let size = data.len() as u64;
    let (a, b) = tokio::join!(
        layout.write_stream(&d, size, chunks(), |_| {}),
        layout.write_stream(&d, size, chunks(), |_| {})
    );
    a.unwrap();
    b.unwrap();
    assert!(layout.has_verified(&d));
}
