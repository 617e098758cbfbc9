//! `ferry copy SRC DST`: a multi-platform image goes from one real registry to another with
//! every digest intact (checked with skopeo); blobs the destination has are skipped; big blobs
//! go up in chunks; a copy inside one registry mounts instead of uploading; `--platform` copies
//! one platform; credentials come from flags or a Docker config file; failures are named.

use base64::Engine as _;

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
fn copies_a_multi_platform_image_between_registries() {
    let a = Registry::start();
    let b = Registry::start();
    let image = push_fixture(&a, Fixture::multi().seed("copy-multi"), "test/multi:v1");
    let src = format!("{}/test/multi:v1", a.host());
    let out = must_copy(&src, &format!("docker://{}/mirror/multi:v1", b.host()), &[]);
    assert!(out.stdout.contains(&image.digest), "{}", out.stdout);
    let dst = format!("docker://{}/mirror/multi:v1", b.host());
    assert_eq!(skopeo_inspect_raw_digest(&dst), image.digest);
    for child in &image.manifests {
        let r = format!("docker://{}/mirror/multi@{}", b.host(), child.digest);
        assert_eq!(skopeo_inspect_raw_digest(&r), child.digest);
    }
    assert_pulls_back(&dst, &image);
    assert_eq!(
        b.count("PATCH", "/blobs/uploads/"),
        0,
        "small blobs go up in one PUT"
    );

    // Again: every blob is there already, nothing is downloaded.
    let gets = a.blob_gets();
    let out = must_copy(&src, &format!("{}/mirror/multi", b.host()), &[]);
    assert_eq!(a.blob_gets(), gets, "{}", out.stderr);
    assert!(out.stderr.contains("0 blobs fetched"), "{}", out.stderr);

    // Inside one registry: cross-repository mounts, no upload, no download.
    let puts = b.count("PUT", "/blobs/uploads/");
    let gets = b.blob_gets();
    let out = must_copy(
        &format!("{}/mirror/multi:v1", b.host()),
        &format!("{}/other/multi:v1", b.host()),
        &[],
    );
    assert!(out.stderr.contains("mounted blob"), "{}", out.stderr);
    assert!(b.count("POST", "mount=") >= image.blobs.len());
    assert_eq!(
        b.count("PUT", "/blobs/uploads/"),
        puts,
        "mounted, not uploaded"
    );
    assert_eq!(b.blob_gets(), gets);
    assert_eq!(
        skopeo_inspect_raw_digest(&format!("docker://{}/other/multi:v1", b.host())),
        image.digest
    );
}

#[test]
fn big_blobs_are_uploaded_in_chunks() {
    let a = Registry::start();
    let b = Registry::start();
    let image = push_fixture(&a, Fixture::big(3), "test/big:v1");
    must_copy(
        &format!("{}/test/big:v1", a.host()),
        &format!("{}/test/big:v1", b.host()),
        &["--chunk-size", "1MiB"],
    );
    assert!(
        b.count("PATCH", "/blobs/uploads/") >= 3,
        "3 MiB in 1 MiB chunks"
    );
    let dst = format!("docker://{}/test/big:v1", b.host());
    assert_eq!(skopeo_inspect_raw_digest(&dst), image.digest);
    assert_pulls_back(&dst, &image);
}

#[test]
fn one_platform_of_an_index() {
    let a = Registry::start();
    let b = Registry::start();
    let image = push_fixture(&a, Fixture::multi().seed("copy-plat"), "test/multi:v1");
    must_copy(
        &format!("{}/test/multi:v1", a.host()),
        &format!("{}/test/arm:v1", b.host()),
        &["--platform", "linux/arm64"],
    );
    let arm = image.manifest_for("arm64");
    let dst = format!("docker://{}/test/arm:v1", b.host());
    assert_eq!(skopeo_inspect_raw_digest(&dst), arm.digest);
}

#[test]
fn credentials_from_flags_and_docker_config() {
    let a = Registry::start();
    let b = Registry::with_token_auth(TokenAuth::new().user("pusher", "s3cret"));
    let image = push_fixture(&a, Fixture::single().seed("copy-auth"), "test/app:1");
    let src = format!("{}/test/app:1", a.host());

    let denied = copy(
        &src,
        &format!("{}/test/app:1", b.host()),
        &["--retries", "1"],
    );
    assert_eq!(denied.code, Some(1), "{}", denied.stderr);
    assert!(denied.stderr.contains("unauthorized"), "{}", denied.stderr);
    assert!(denied.stderr.contains("test/app:1"), "{}", denied.stderr);

    must_copy(
        &src,
        &format!("{}/flags/app:1", b.host()),
        &["--dst-creds", "pusher:s3cret"],
    );
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
    let config = dir.path().join("config.json");
    let json = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, b.host());
    std::fs::write(&config, json).unwrap();
    must_copy(
        &src,
        &format!("{}/file/app:1", b.host()),
        &["--authfile", config.to_str().unwrap()],
    );
    let scopes: Vec<String> = b
        .token_server()
        .unwrap()
        .requests()
        .into_iter()
        .flat_map(|r| r.scopes)
        .collect();
    assert!(
        scopes.iter().any(|s| s == "repository:file/app:pull,push"),
        "{scopes:?}"
    );
    // A mount inside the token-auth registry needs one token for both repositories.
    let creds = [
        "--src-creds",
        "pusher:s3cret",
        "--dst-creds",
        "pusher:s3cret",
    ];
    let out = must_copy(
        &format!("{}/flags/app:1", b.host()),
        &format!("{}/mounted/app:1", b.host()),
        &creds,
    );
    assert!(out.stderr.contains("mounted blob"), "{}", out.stderr);
    let multi_scope = b.token_server().unwrap().requests().into_iter().any(|r| {
        r.scopes
            .contains(&"repository:mounted/app:pull,push".to_string())
            && r.scopes.contains(&"repository:flags/app:pull".to_string())
    });
    assert!(multi_scope, "the mount asked for both scopes in one token");
    let (user, pass) = ("pusher", "s3cret");
    let out = tempfile::tempdir().unwrap();
    skopeo_copy(
        &format!("docker://{}/file/app:1", b.host()),
        &format!("dir:{}", out.path().display()),
        &["--src-creds", &format!("{user}:{pass}")],
    );
    let top = std::fs::read(out.path().join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&top), image.digest);
}

#[test]
fn missing_source_is_named() {
    let a = Registry::start();
    let b = Registry::start();
    let out = copy(
        &format!("{}/test/none:1", a.host()),
        &format!("{}/test/none:1", b.host()),
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("test/none:1") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    let bad = copy("not a ref", "x", &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}
