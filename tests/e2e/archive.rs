//! Images carried offline: `ferry export` from a ferry with a real upstream, `ferry import`
//! into a second ferry whose upstream is unreachable, then real clients (skopeo, podman) pull
//! every image through it with the upstream's digests. Corrupt and truncated archives are
//! refused naming the entry, docker-save archives import under their RepoTags, a second import
//! is harmless, and an interrupted export resumes.

use std::path::Path;

use crate::support::clients::DEAD_UPSTREAM;
use crate::support::{
    Ferry, Fixture, assert_pulls_back, build_fixture, ferry_command, http, push_fixture,
    sha256_digest, skopeo_copy, skopeo_inspect_raw, try_skopeo_copy,
};

/// A finished command.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], config: &Path, tail: &[&str]) -> Run {
    let mut cmd = ferry_command();
    cmd.args(args).arg("--config").arg(config).args(tail);
    let out = cmd.output().expect("run ferry");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn export(ferry: &Ferry, list: &str, output: &Path) -> Run {
    let path = ferry.dir().join("export-list.txt");
    std::fs::write(&path, list).unwrap();
    let (p, o) = (path.to_str().unwrap(), output.to_str().unwrap());
    run(
        &["export"],
        ferry.config_path(),
        &["--progress", "plain", p, "--output", o],
    )
}

fn import(ferry: &Ferry, archive: &Path) -> Run {
    run(
        &["import"],
        ferry.config_path(),
        &[archive.to_str().unwrap()],
    )
}

/// A stopped ferry whose only upstream (docker.io) is a dead port: nothing it serves can come
/// from anywhere but its cache. Tags are past their TTL at once and `serve_stale` is off, so
/// serving them at all shows imported tags are served stale regardless.
fn offline_ferry() -> Ferry {
    let mut ferry = Ferry::builder()
        .upstream("docker.io", &format!("http://{DEAD_UPSTREAM}"))
        .tag_ttl("1s")
        .set("cache.serve_stale", false)
        .start();
    ferry.stop();
    ferry
}

fn via(ferry: &Ferry, image: &str) -> String {
    format!("docker://{}/{image}", ferry.host())
}

#[test]
fn exported_images_import_into_an_offline_ferry_and_pull_back() {
    let upstream = crate::support::Registry::start();
    let multi = push_fixture(
        &upstream,
        Fixture::multi().seed("export-multi"),
        "test/multi:v1",
    );
    let app = push_fixture(
        &upstream,
        Fixture::single().seed("export-app"),
        "test/app:1.0",
    );
    let mut online = Ferry::builder().upstream("docker.io", &upstream).start();
    // One image is in the cache already: export reads it from there.
    assert_pulls_back(&via(&online, "docker.io/test/app:1.0"), &app);
    online.stop();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("images.tar");
    let out = export(&online, "docker.io/test/multi:v1\ntest/app:1.0\n", &archive);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("exported 2 images"), "{}", out.stdout);
    assert!(!tmp.path().join("images.tar.partial.d").exists());
    let blobs = multi.blobs.len() + app.blobs.len();
    assert_eq!(
        upstream.blob_gets(),
        blobs,
        "cached blobs are not fetched again"
    );

    // skopeo reads what ferry wrote, under the full reference.
    let raw = skopeo_inspect_raw(
        &format!("oci-archive:{}:docker.io/test/multi:v1", archive.display()),
        &[],
    );
    assert_eq!(sha256_digest(&raw), multi.digest);

    let mut offline = offline_ferry();
    import_twice(&offline, &archive, &multi);

    offline.start_again();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // past the tag TTL
    assert_pulls_back(&via(&offline, "docker.io/test/multi:v1"), &multi);
    assert_pulls_back(&via(&offline, "docker.io/test/app:1.0"), &app);
    let log = offline.log();
    // Served stale by the blocking path, or answered at once while a background revalidation
    // fails (cache.revalidate: background, the default).
    assert!(
        log.contains("serving the cached tag") || log.contains("the cached tag stays in use"),
        "imported tags past their TTL are served stale with serve_stale off:\n{log}"
    );
    pull_with_podman(
        &offline,
        &[
            ("docker.io/test/multi:v1", &multi),
            ("docker.io/test/app:1.0", &app),
        ],
    );
}

/// Imports `archive` twice (the second is harmless); the first names `image` and its digest.
fn import_twice(ferry: &Ferry, archive: &Path, image: &crate::support::Image) {
    let out = import(ferry, archive);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let line = format!("imported docker.io/test/multi:v1 {}", image.digest);
    assert!(out.stdout.contains(&line), "{}", out.stdout);
    let again = import(ferry, archive);
    assert_eq!(again.code, Some(0), "a second import: {}", again.stderr);
    assert!(again.stdout.contains(&line), "{}", again.stdout);
}

/// Pulls each image with podman (when it runs here) and compares the digest it recorded.
fn pull_with_podman(ferry: &Ferry, images: &[(&str, &crate::support::Image)]) {
    let Some(podman) = ferry.podman_or_skip() else {
        return;
    };
    for (name, image) in images {
        podman.pull(name, &[]);
        assert_eq!(podman.image_digest(name), image.digest, "{name}");
    }
}

#[test]
fn a_truncated_archive_is_refused_naming_the_entry_and_nothing_is_served() {
    let image = build_fixture(&Fixture::single().seed("cut-archive").layers(3));
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.tar");
    let oci = format!("oci-archive:{}:docker.io/test/cut:v1", good.display());
    skopeo_copy(&image.skopeo_source(), &oci, &["--preserve-digests"]);
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();

    let mut offline = offline_ferry();
    let out = import(&offline, &cut);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("archive entry blobs/sha256/") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );
    offline.start_again();
    let r = http::raw_get(&offline.host(), "/v2/test/cut/manifests/v1").unwrap();
    assert_ne!(r.status, 200, "a half-imported image is not served");

    // The whole archive imports and is served.
    offline.stop();
    let out = import(&offline, &good);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    offline.start_again();
    assert_pulls_back(&via(&offline, "docker.io/test/cut:v1"), &image);
}

#[test]
fn a_corrupt_blob_in_an_archive_is_refused_naming_it() {
    let image = build_fixture(&Fixture::single().seed("corrupt-archive"));
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.tar");
    let oci = format!("oci-archive:{}:docker.io/test/bad:v1", good.display());
    skopeo_copy(&image.skopeo_source(), &oci, &["--preserve-digests"]);
    let mut bytes = std::fs::read(&good).unwrap();
    let layer = image.largest_blob();
    let needle = image.blob_bytes(&layer.digest);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("the layer is stored whole in the tar");
    bytes[at + needle.len() / 2] ^= 0xff;
    let bad = tmp.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let offline = offline_ferry();
    let out = import(&offline, &bad);
    assert_eq!(out.code, Some(1));
    let hex = layer.digest.trim_start_matches("sha256:");
    assert!(
        out.stderr
            .contains(&format!("archive entry blobs/sha256/{hex}"))
            && out.stderr.contains("hashes to"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_docker_save_archive_imports_under_its_repo_tags() {
    let image = build_fixture(&Fixture::single().seed("docker-save"));
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("saved.tar");
    let dest = format!("docker-archive:{}:test/saved:1", saved.display());
    skopeo_copy(&image.skopeo_source(), &dest, &[]);
    let mut offline = offline_ferry();
    let out = import(&offline, &saved);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("imported docker.io/test/saved:1 sha256:"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let digest = line.rsplit(' ').next().unwrap().to_owned();
    offline.start_again();
    let raw = skopeo_inspect_raw(&via(&offline, "docker.io/test/saved:1"), &[]);
    assert_eq!(sha256_digest(&raw), digest, "served as ferry wrote it");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let dir = tempfile::tempdir().unwrap();
    let pulled = try_skopeo_copy(
        &via(&offline, "docker.io/test/saved:1"),
        &format!("dir:{}", dir.path().display()),
        &[],
    );
    assert!(pulled.success, "{}", pulled.stderr);
    let config = manifest["config"]["digest"].as_str().unwrap();
    let config_bytes =
        std::fs::read(dir.path().join(config.trim_start_matches("sha256:"))).unwrap();
    assert_eq!(sha256_digest(&config_bytes), config);
    let original: serde_json::Value =
        serde_json::from_slice(&image.blob_bytes(&fixture_config(&image))).unwrap();
    let served: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(
        served["rootfs"], original["rootfs"],
        "the same image config"
    );
}

fn fixture_config(image: &crate::support::Image) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&image.manifest_bytes(&image.digest)).unwrap();
    m["config"]["digest"].as_str().unwrap().to_owned()
}

#[test]
fn an_interrupted_export_resumes_from_its_staging_directory() {
    let upstream = crate::support::Registry::start();
    let app = push_fixture(
        &upstream,
        Fixture::single().seed("resume-app"),
        "test/app:2.0",
    );
    let mut online = Ferry::builder().upstream("docker.io", &upstream).start();
    online.stop();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("images.tar");
    let list = "test/app:2.0\ntest/missing:1\n";
    let first = export(&online, list, &archive);
    assert_eq!(first.code, Some(1), "{}\n{}", first.stdout, first.stderr);
    assert!(!archive.exists(), "no archive while an image is missing");
    let staging = tmp.path().join("images.tar.partial.d");
    let layer = app.largest_blob();
    let staged = staging
        .join("blobs/sha256")
        .join(layer.digest.trim_start_matches("sha256:"));
    assert!(staged.exists(), "the complete image stays staged");
    std::fs::write(&staged, b"damaged while the export was stopped").unwrap();

    let second = export(&online, "test/app:2.0\n", &archive);
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    assert_eq!(
        upstream.blob_gets(),
        app.blobs.len(),
        "each blob fetched once in all"
    );
    assert!(!staging.exists());
    let raw = skopeo_inspect_raw(
        &format!("oci-archive:{}:docker.io/test/app:2.0", archive.display()),
        &[],
    );
    assert_eq!(sha256_digest(&raw), app.digest);
    let out = tempfile::tempdir().unwrap();
    skopeo_copy(
        &format!("oci-archive:{}:docker.io/test/app:2.0", archive.display()),
        &format!("dir:{}", out.path().display()),
        &["--preserve-digests"],
    );
    let hex = layer.digest.trim_start_matches("sha256:");
    assert_eq!(
        crate::support::sha256_file(&out.path().join(hex)),
        layer.digest
    );
}

/// The object-store backend: an archive imports into the bucket and is served from it (with
/// the upstream unreachable); an OCI layout that names an image by a bare tag is refused.
#[test]
fn an_archive_imports_into_an_object_store_cache() {
    let Some(s3) = crate::support::s3::S3::start_or_skip() else {
        return;
    };
    let image = build_fixture(&Fixture::multi().seed("import-s3"));
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("multi.tar");
    let oci = format!(
        "oci-archive:{}:docker.io/test/s3multi:v1",
        archive.display()
    );
    skopeo_copy(
        &image.skopeo_source(),
        &oci,
        &["--all", "--preserve-digests"],
    );
    let builder = Ferry::builder().upstream("docker.io", &format!("http://{DEAD_UPSTREAM}"));
    let mut ferry = s3.apply(builder, serde_json::json!({})).start();
    ferry.stop();
    let out = import(&ferry, &archive);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    for b in &image.blobs {
        assert!(
            s3.holds(&b.digest, &image.blob_bytes(&b.digest)),
            "{} in the bucket",
            b.digest
        );
    }
    ferry.start_again();
    assert_pulls_back(&via(&ferry, "docker.io/test/s3multi:v1"), &image);

    ferry.stop();
    let bare = tmp.path().join("bare.tar");
    skopeo_copy(
        &image.skopeo_source(),
        &format!("oci-archive:{}:v1", bare.display()),
        &["--all"],
    );
    let out = import(&ferry, &bare);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("is only a tag"), "{}", out.stderr);
}
