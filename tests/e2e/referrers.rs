//! Signatures and SBOMs travel with their image (SPEC section 10): `ferry copy` and `ferry sync`
//! carry an image's referrers, found with the OCI referrers API (the fake upstream) or the
//! fallback tag scheme `sha256-<hex>` (Debian's docker-registry 2.8, which has no API).

use crate::core::get_manifest;
use crate::support::http::client;
use crate::support::*;
use crate::sync::{Run, run_sync};

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn copy(src: &str, dst: &str) -> Run {
    let mut cmd = ferry_command();
    cmd.env("DOCKER_CONFIG", "/nonexistent-ferry-test").args([
        "copy",
        "--progress",
        "plain",
        src,
        dst,
    ]);
    let run = Run::of(cmd);
    assert!(
        run.success(),
        "ferry copy {src} {dst}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// The digests an index (a referrers answer or a fallback-tag index) lists.
fn listed(body: &[u8]) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(body).expect("an index");
    let mut out: Vec<String> = json["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// A fake registry with the referrers API: `org/app:v1` with a signature and an SBOM.
fn signed_image() -> (FaultyUpstream, String, Vec<String>) {
    let up = FaultyUpstream::start();
    up.enable_referrers_api();
    let layer = up.add_blob(b"app layer".to_vec());
    let image = up.add_image("org/app", "v1", &[layer]);
    let mut refs = vec![
        up.add_referrer("org/app", &image, SIG, b"signature"),
        up.add_referrer("org/app", &image, SBOM, b"{\"spdxVersion\":\"SPDX-2.3\"}"),
    ];
    refs.sort();
    (up, image, refs)
}

fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

#[test]
fn copy_carries_referrers_from_the_api_and_by_the_fallback_tag() {
    let (up, image, refs) = signed_image();
    let a = Registry::start();
    let out = copy(
        &format!("{}/org/app:v1", up.host()),
        &format!("docker://{}/mirror/app:v1", a.host()),
    );
    assert!(
        out.stdout.contains("+2 referrers") || out.stderr.contains("+2 referrers"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    // docker-registry has no referrers API: ferry published the fallback tag for it.
    for r in &refs {
        assert_eq!(
            a.manifest_digest("mirror/app", r).as_deref(),
            Some(r.as_str())
        );
    }
    let tag = fallback_tag(&image);
    let index = a.request(
        "GET",
        "mirror/app",
        &format!("/v2/mirror/app/manifests/{tag}"),
        &[("Accept", OCI_INDEX)],
        &[],
    );
    assert_eq!(index.status, 200, "{}", index.text());
    assert_eq!(listed(&index.body), refs);

    // From there (tag scheme) to another registry: the same index, byte for byte.
    let b = Registry::start();
    copy(
        &format!("{}/mirror/app:v1", a.host()),
        &format!("docker://{}/again/app:v1", b.host()),
    );
    for r in &refs {
        assert_eq!(
            b.manifest_digest("again/app", r).as_deref(),
            Some(r.as_str())
        );
    }
    assert_eq!(
        b.manifest_digest("again/app", &tag),
        a.manifest_digest("mirror/app", &tag),
        "the fallback index is copied as it is"
    );
}

#[tokio::test]
async fn sync_carries_referrers_into_the_cache_by_api_and_by_tag() {
    // The API: a fake upstream.
    let (up, image, refs) = signed_image();
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let run = run_sync(&ferry, "docker.io/org/app:v1\n", &[]);
    assert!(run.success(), "{}\n{}", run.stdout, run.stderr);
    drop(up);
    let resp = client()
        .get(format!("{}/v2/org/app/referrers/{image}", ferry.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the referrers answer is cached");
    assert_eq!(listed(&resp.bytes().await.unwrap()), refs);
    for r in &refs {
        let resp = get_manifest(&ferry, &format!("/v2/org/app/manifests/{r}")).await;
        assert_eq!(resp.status(), 200, "referrer {r} with the upstream gone");
    }

    // The tag scheme: a real docker-registry, filled by a copy from a fresh fake.
    let (up, image, refs) = signed_image();
    let mut registry = Registry::start();
    copy(
        &format!("{}/org/app:v1", up.host()),
        &format!("docker://{}/signed/app:v1", registry.host()),
    );
    let ferry = Ferry::builder().upstream("docker.io", &registry).start();
    let run = run_sync(&ferry, "docker.io/signed/app:v1\n", &[]);
    assert!(run.success(), "{}\n{}", run.stdout, run.stderr);
    registry.stop();
    let tag = fallback_tag(&image);
    let resp = get_manifest(&ferry, &format!("/v2/signed/app/manifests/{tag}")).await;
    assert_eq!(resp.status(), 200, "the fallback tag is cached");
    assert_eq!(listed(&resp.bytes().await.unwrap()), refs);
    for r in &refs {
        let resp = get_manifest(&ferry, &format!("/v2/signed/app/manifests/{r}")).await;
        assert_eq!(resp.status(), 200, "referrer {r} with the upstream stopped");
        let m: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        let blob = client()
            .get(format!("{}/v2/signed/app/blobs/{layer}", ferry.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(blob.status(), 200, "the referrer's content is cached too");
    }
}
