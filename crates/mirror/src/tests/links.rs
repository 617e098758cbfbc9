//! Content is served only where it belongs ([`crate::links`]): under a repository it was
//! fetched through, that one of its manifests names, or that an upstream `HEAD` confirmed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_config::Config;
use ferry_metrics::Metrics;
use ferry_oci::{Digest, ErrorCode, Reference, manifest};
use ferry_storage::BlobStore;
use ferry_storage::fs::FsStore;
use ferry_upstream::UpstreamError;
use http::StatusCode;

use super::fake::*;
use crate::meta::{self, ManifestMeta, TagEntry};
use crate::{Delivery, MirrorError, Outcome, Target, Ungated};

fn only_in(fake: &Fake, d: &Digest, repos: &[&str]) {
    fake.hold_only_in(&d.to_string(), repos);
}

fn target(env: &Env, repo: &str) -> Target {
    env.mirror.resolve(repo, None, None).unwrap()
}

#[track_caller]
fn assert_unknown<T>(r: Result<T, MirrorError>, want: ErrorCode) {
    match r {
        Err(MirrorError::Upstream(UpstreamError::NotFound { code, .. })) if code == want => {}
        Err(e) => panic!("expected {want:?}, got {e:?}"),
        Ok(_) => panic!("expected {want:?}, got the content"),
    }
}

/// An image manifest with one layer.
fn manifest_with_layer(layer: &Digest, size: usize) -> String {
    MANIFEST.replace(
        "\"layers\":[]",
        &format!("\"layers\":[{{\"digest\":\"{layer}\",\"size\":{size}}}]"),
    )
}

/// A mirror over `root` whose only upstream is a dead port.
async fn offline_mirror(root: &std::path::Path) -> crate::Mirror {
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(root).unwrap());
    let config = Config::from_yaml(
        "upstreams:\n  docker.io:\n    url: http://127.0.0.1:1\n",
        Vec::new(),
    )
    .unwrap();
    crate::Mirror::start(&config, store, Arc::new(Metrics::new()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cached_blob_is_not_served_under_a_repository_that_does_not_hold_it() {
    let env = env_with("").await;
    let (d, data) = add_blob(&env.fake, 10_000, 1);
    only_in(&env.fake, &d, &["org/app"]);
    let (app, other) = (target(&env, "org/app"), target(&env, "org/other"));
    let got = read_all(
        env.mirror
            .blob(&app, &d, None, Delivery::Stream, &Ungated)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.unwrap() == data);
    assert!(env.mirror.settle_blob(&d).await);
    for _ in 0..3 {
        assert_unknown(
            env.mirror
                .blob(&other, &d, None, Delivery::Stream, &Ungated)
                .await,
            ErrorCode::BlobUnknown,
        );
        assert_unknown(
            env.mirror
                .blob(&other, &d, Some("bytes=0-9"), Delivery::Stream, &Ungated)
                .await,
            ErrorCode::BlobUnknown,
        );
        assert_unknown(
            env.mirror.blob_head(&other, &d).await,
            ErrorCode::BlobUnknown,
        );
    }
    let path = format!("/org/other/blobs/{d}");
    assert_eq!(
        env.fake.hits("HEAD", &path),
        1,
        "one upstream HEAD, then the 404 is remembered"
    );
    assert_eq!(env.fake.hits("GET", &path), 0);
}

#[tokio::test]
async fn a_repository_that_holds_a_cached_blob_is_confirmed_once_then_served_from_cache() {
    let env = env_with("").await;
    let (d, data) = add_blob(&env.fake, 10_000, 2);
    only_in(&env.fake, &d, &["org/app", "org/other"]);
    let (app, other) = (target(&env, "org/app"), target(&env, "org/other"));
    pull(&env.mirror, &app, &d).await;
    assert!(env.mirror.settle_blob(&d).await);

    let first = env
        .mirror
        .blob(&other, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Revalidated);
    assert!(read_all(first).await.unwrap() == data);
    let again = env
        .mirror
        .blob(&other, &d, Some("bytes=10-19"), Delivery::Stream, &Ungated);
    let again = again.await.unwrap();
    assert_eq!(again.outcome, Outcome::Hit);
    assert_eq!(read_all(again).await.unwrap(), &data[10..20]);
    assert_eq!(
        env.mirror.blob_head(&other, &d).await.unwrap(),
        (10_000, Outcome::Hit)
    );
    let path = format!("/org/other/blobs/{d}");
    assert_eq!(env.fake.hits("HEAD", &path), 1, "confirmed once");
    assert_eq!(env.fake.hits("GET", &path), 0, "never downloaded again");
    assert_eq!(env.fake.hits("HEAD", &format!("/org/app/blobs/{d}")), 0);
}

#[tokio::test]
async fn manifests_link_what_they_name_and_are_served_only_where_they_belong() {
    let env = env_with("").await;
    let (layer, _) = add_blob(&env.fake, 5000, 3);
    only_in(&env.fake, &layer, &["org/app", "org/third"]);
    let (app, third, other) = (
        target(&env, "org/app"),
        target(&env, "org/third"),
        target(&env, "org/other"),
    );
    pull(&env.mirror, &app, &layer).await;
    assert!(env.mirror.settle_blob(&layer).await);
    let m = add_manifest(&env.fake, "v1", &manifest_with_layer(&layer, 5000));
    only_in(&env.fake, &m, &["org/third"]);

    let tag = Reference::parse("v1").unwrap();
    assert_eq!(
        env.mirror
            .manifest(&third, &tag, &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Miss
    );
    let a = env
        .mirror
        .blob(&third, &layer, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(
        a.outcome,
        Outcome::Hit,
        "the manifest of org/third names it"
    );
    let layer_path = format!("/org/third/blobs/{layer}");
    assert_eq!(
        env.fake.hits("HEAD", &layer_path) + env.fake.hits("GET", &layer_path),
        0
    );

    let by_digest = Reference::Digest(m.clone());
    let hit = env
        .mirror
        .manifest(&third, &by_digest, &Ungated)
        .await
        .unwrap();
    assert_eq!(hit.outcome, Outcome::Hit);
    for t in [&other, &app] {
        assert_unknown(
            env.mirror.manifest(t, &by_digest, &Ungated).await,
            ErrorCode::ManifestUnknown,
        );
    }
    let path = format!("/org/other/manifests/{m}");
    assert_eq!(env.fake.hits("HEAD", &path), 1);
    assert_eq!(env.fake.hits("GET", &path), 0);
}

#[tokio::test]
async fn an_upstream_that_cannot_confirm_refuses_instead_of_leaking() {
    let env = env_with("").await;
    let (d, _) = add_blob(&env.fake, 1000, 4);
    only_in(&env.fake, &d, &["org/app"]);
    let (app, other) = (target(&env, "org/app"), target(&env, "org/other"));
    pull(&env.mirror, &app, &d).await;
    assert!(env.mirror.settle_blob(&d).await);
    env.fake.set_down(Some(StatusCode::SERVICE_UNAVAILABLE));
    let err = env
        .mirror
        .blob(&other, &d, None, Delivery::Stream, &Ungated)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, MirrorError::Upstream(u) if u.is_transient()),
        "{err:?}"
    );
    let hit = env
        .mirror
        .blob(&app, &d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(hit.outcome, Outcome::Hit, "a known link needs no upstream");
    // A failure is not remembered as "not found": once the upstream is back, it decides.
    env.fake.set_down(None);
    assert_unknown(
        env.mirror
            .blob(&other, &d, None, Delivery::Stream, &Ungated)
            .await,
        ErrorCode::BlobUnknown,
    );
}

#[tokio::test]
async fn a_download_through_another_repository_is_not_joined_without_confirmation() {
    let env = env_with("").await;
    env.fake.set_slow(Duration::from_millis(20));
    let (d, data) = add_blob(&env.fake, 20 * 64 * 1024, 5);
    only_in(&env.fake, &d, &["org/app"]);
    let (app, other) = (target(&env, "org/app"), target(&env, "org/other"));
    let (m, app2, d2) = (env.mirror.clone(), app.clone(), d.clone());
    let first = tokio::spawn(async move {
        read_all(
            m.blob(&app2, &d2, None, Delivery::Stream, &Ungated)
                .await
                .unwrap(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(env.mirror.inflight(), 1, "downloading");
    assert_unknown(
        env.mirror
            .blob(&other, &d, None, Delivery::Stream, &Ungated)
            .await,
        ErrorCode::BlobUnknown,
    );
    let joined = read_all(
        env.mirror
            .blob(&app, &d, None, Delivery::Stream, &Ungated)
            .await
            .unwrap(),
    );
    assert!(joined.await.unwrap() == data);
    assert!(first.await.unwrap().unwrap() == data);
    assert_eq!(env.fake.hits("GET", &format!("/blobs/{d}")), 1);
    assert_eq!(
        env.fake.hits("HEAD", &format!("/org/app/blobs/{d}")),
        0,
        "joining a download from the same repository needs no HEAD"
    );
}

#[tokio::test]
async fn links_survive_a_restart() {
    let env = env_with("").await;
    let (layer, _) = add_blob(&env.fake, 3000, 6);
    let m = add_manifest(&env.fake, "v1", &manifest_with_layer(&layer, 3000));
    let app = target(&env, "org/app");
    env.mirror
        .manifest(&app, &Reference::parse("v1").unwrap(), &Ungated)
        .await
        .unwrap();
    pull(&env.mirror, &app, &layer).await;
    assert!(env.mirror.settle_blob(&layer).await);
    env.mirror.shutdown().await;

    let again = offline_mirror(&env.root).await;
    let (app, other) = (
        again.resolve("org/app", None, None).unwrap(),
        again.resolve("org/other", None, None).unwrap(),
    );
    let blob = again
        .blob(&app, &layer, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(
        blob.outcome,
        Outcome::Hit,
        "served with the upstream unreachable"
    );
    let by_digest = Reference::Digest(m);
    assert_eq!(
        again
            .manifest(&app, &by_digest, &Ungated)
            .await
            .unwrap()
            .outcome,
        Outcome::Hit
    );
    let refused = again
        .blob(&other, &layer, None, Delivery::Stream, &Ungated)
        .await
        .err()
        .unwrap();
    assert!(matches!(
        refused,
        MirrorError::Upstream(UpstreamError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn an_older_cache_gets_links_from_its_tag_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let layer = Bytes::from_static(b"a layer cached before links existed");
    let layer_d = Digest::sha256_of(&layer);
    store.put_verified(&layer_d, layer).await.unwrap();
    let body = Bytes::from(manifest_with_layer(&layer_d, 35));
    let m = Digest::sha256_of(&body);
    store.put_verified(&m, body.clone()).await.unwrap();
    let media_type = manifest::OCI_MANIFEST.to_owned();
    let mm = ManifestMeta {
        media_type: media_type.clone(),
    };
    meta::put(&store, &meta::manifest_key(&m), &mm)
        .await
        .unwrap();
    let entry = TagEntry {
        digest: m.clone(),
        media_type,
        size: body.len() as u64,
        fetched_at: 0,
        deleted_upstream_at: None,
        imported: false,
    };
    let key = meta::tag_key("docker.io", "org/app", "v1");
    meta::put(&store, &key, &entry).await.unwrap();
    drop(store);

    let mirror = offline_mirror(dir.path()).await;
    let marker = || async {
        mirror
            .store()
            .get_meta(crate::migrate::MARKER)
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if marker().await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(marker().await.is_some(), "the migration ran");
    let app = mirror.resolve("org/app", None, None).unwrap();
    let blob = mirror
        .blob(&app, &layer_d, None, Delivery::Stream, &Ungated)
        .await
        .unwrap();
    assert_eq!(blob.outcome, Outcome::Hit);
    let got = mirror
        .manifest(&app, &Reference::Digest(m), &Ungated)
        .await
        .unwrap();
    assert_eq!(got.outcome, Outcome::Hit);
    let other = mirror.resolve("org/other", None, None).unwrap();
    assert!(
        mirror
            .blob(&other, &layer_d, None, Delivery::Stream, &Ungated)
            .await
            .is_err()
    );
    assert_eq!(
        crate::migrate::links_from_tags(&mirror).await.unwrap(),
        None,
        "done once per store"
    );
}
