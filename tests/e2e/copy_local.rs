//! `ferry copy` with local ends, named as skopeo names them: `oci:DIR[:REF]`,
//! `oci-archive:FILE[:REF]` and `docker-archive:FILE[:REF]`. skopeo reads what ferry writes
//! and ferry reads what skopeo writes; OCI ends keep every digest, a docker-archive (one
//! platform, no registry manifest) is rebuilt as a Docker schema 2 image.

use crate::support::*;
use crate::sync::Run;

fn copy(src: &str, dst: &str, extra: &[&str]) -> Run {
    let mut cmd = ferry_command();
    cmd.env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .args(["copy", "--progress", "plain"])
        .args(extra)
        .arg(src)
        .arg(dst);
    Run::of(cmd)
}

fn must_copy(src: &str, dst: &str, extra: &[&str]) -> Run {
    let out = copy(src, dst, extra);
    assert!(
        out.success(),
        "ferry copy {src} {dst} {extra:?}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

#[test]
fn an_index_goes_through_oci_archives_and_layouts_with_every_digest() {
    let a = Registry::start();
    let b = Registry::start();
    let image = push_fixture(&a, Fixture::multi().seed("copy-oci"), "test/multi:v1");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();
    let src = format!("{}/test/multi:v1", a.host());

    let archive = format!("oci-archive:{t}/m.tar:docker.io/test/multi:v1");
    let out = must_copy(&src, &archive, &[]);
    assert!(out.stdout.contains(&image.digest), "{}", out.stdout);
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&archive, &[])),
        image.digest
    );

    let dst = format!("docker://{}/copied/multi:v1", b.host());
    must_copy(&archive, &dst, &[]);
    assert_pulls_back(&dst, &image);

    // A layout directory takes several images; each is found by its name.
    must_copy(&src, &format!("oci:{t}/layout:v1"), &[]);
    must_copy(&archive, &format!("oci:{t}/layout:again"), &[]);
    for name in ["v1", "again"] {
        let r = format!("oci:{t}/layout:{name}");
        assert_eq!(
            sha256_digest(&skopeo_inspect_raw(&r, &[])),
            image.digest,
            "{r}"
        );
    }
    let back = format!("docker://{}/from-layout/multi:v2", b.host());
    must_copy(&format!("oci:{t}/layout:again"), &back, &[]);
    assert_pulls_back(&back, &image);

    // What skopeo writes, ferry reads.
    let by_skopeo = format!("oci-archive:{t}/s.tar:docker.io/test/s:1");
    skopeo_copy(
        &image.skopeo_source(),
        &by_skopeo,
        &["--all", "--preserve-digests"],
    );
    let third = format!("docker://{}/from-skopeo/multi:1", b.host());
    must_copy(&by_skopeo, &third, &[]);
    assert_eq!(skopeo_inspect_raw_digest(&third), image.digest);
    let missing = copy(&format!("oci-archive:{t}/s.tar:nope"), &third, &[]);
    assert!(!missing.success());
    assert!(
        missing.stderr.contains("no image named"),
        "{}",
        missing.stderr
    );
}

#[test]
fn docker_archives_are_read_and_written() {
    let a = Registry::start();
    let image = push_fixture(&a, Fixture::single().seed("copy-docker"), "test/app:1");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();
    let saved = format!("docker-archive:{t}/app.tar:test/app:1");
    must_copy(&format!("{}/test/app:1", a.host()), &saved, &[]);

    // skopeo reads ferry's docker-archive: the same config and layers.
    let dir = tempfile::tempdir().unwrap();
    skopeo_copy(&saved, &format!("dir:{}", dir.path().display()), &[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&image.manifest_bytes(&image.digest)).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let got = std::fs::read(dir.path().join(config.trim_start_matches("sha256:"))).unwrap();
    assert_eq!(sha256_digest(&got), config);

    // ferry reads it back into a registry as a Docker schema 2 image.
    let b = Registry::start();
    let dst = format!("docker://{}/test/app:1", b.host());
    must_copy(&saved, &dst, &[]);
    let raw: serde_json::Value = serde_json::from_slice(&skopeo_inspect_raw(&dst, &[])).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(raw["config"]["digest"], config);
    let pulled = tempfile::tempdir().unwrap();
    skopeo_copy(&dst, &format!("dir:{}", pulled.path().display()), &[]);
}

#[test]
fn a_docker_archive_of_an_index_takes_one_platform() {
    let a = Registry::start();
    let image = push_fixture(&a, Fixture::multi().seed("copy-docker-multi"), "test/m:1");
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("{}/test/m:1", a.host());
    let dst = format!("docker-archive:{}/m.tar:test/m:1", tmp.path().display());
    let refused = copy(&src, &dst, &[]);
    assert!(!refused.success());
    assert!(refused.stderr.contains("--platform"), "{}", refused.stderr);
    must_copy(&src, &dst, &["--platform", "linux/arm64"]);
    let arm = image.manifest_for("arm64");
    let m: serde_json::Value = serde_json::from_slice(&image.manifest_bytes(&arm.digest)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    skopeo_copy(&dst, &format!("dir:{}", dir.path().display()), &[]);
    let config = m["config"]["digest"].as_str().unwrap();
    assert!(
        dir.path()
            .join(config.trim_start_matches("sha256:"))
            .exists()
    );
}
