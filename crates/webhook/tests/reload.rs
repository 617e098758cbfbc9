//! Things that change under a running webhook: the config file (edited in place or swapped the
//! way kubelet updates a ConfigMap volume), the serving certificate (cert-manager rotation), and
//! the mirror's health.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use support::{Webhook, eventually, fixture, images, patched, write_atomic};

const LIMIT: Duration = Duration::from_secs(5);

/// The first container's image after the webhook's patch.
async fn nginx_image(hook: &Webhook) -> String {
    let review = fixture("pod-create.json");
    let pod = patched(&review, &hook.review(&review).await);
    images(&pod, "/spec/containers")[0].clone()
}

#[tokio::test]
async fn config_changes_apply_without_restart() {
    let hook = Webhook::start("mirror: a.example.com\n").await;
    assert_eq!(
        nginx_image(&hook).await,
        "nginx=a.example.com/docker.io/library/nginx:1.25"
    );

    hook.write_config("mirror: b.example.com\n");
    let switched = eventually(LIMIT, async || {
        nginx_image(&hook).await.contains("b.example.com")
    })
    .await;
    assert!(switched, "new mapping not applied within {LIMIT:?}");

    // An invalid config (unknown key) is rejected and the last good one stays.
    hook.write_config("mirror: c.example.com\nmirrors: oops\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        nginx_image(&hook).await,
        "nginx=b.example.com/docker.io/library/nginx:1.25"
    );

    hook.write_config("registries: {docker.io: docker.mirror.example.com}\n");
    let switched = eventually(LIMIT, async || {
        nginx_image(&hook).await == "nginx=docker.mirror.example.com/library/nginx:1.25"
    })
    .await;
    assert!(switched, "override not applied");
    hook.stop().await;
}

#[tokio::test]
async fn configmap_symlink_swap_is_seen() {
    let hook = Webhook::start("mirror: a.example.com\n").await;
    let dir = hook.dir.path().join("config");
    let tls = std::fs::read_to_string(hook.config_path())
        .unwrap()
        .replace("mirror: a.example.com\n", "");
    // Kubelet's layout: webhook.yaml -> ..data/webhook.yaml, ..data -> ..<timestamp>.
    let version = |name: &str, mirror: &str| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(
            dir.join(name).join("webhook.yaml"),
            format!("mirror: {mirror}\n{tls}"),
        )
        .unwrap();
        std::os::unix::fs::symlink(name, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    version("..v1", "a.example.com");
    std::os::unix::fs::symlink("..data/webhook.yaml", dir.join("link_tmp")).unwrap();
    std::fs::rename(dir.join("link_tmp"), hook.config_path()).unwrap();
    version("..v2", "swapped.example.com");
    let switched = eventually(LIMIT, async || {
        nginx_image(&hook).await.contains("swapped.example.com")
    })
    .await;
    assert!(switched, "symlink swap not seen within {LIMIT:?}");
    hook.stop().await;
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn rotated_certificate_is_served_on_new_connections() {
    let hook = Webhook::start("mirror: a.example.com\n").await;
    let tls_dir = hook.dir.path().join("tls");
    let first = std::fs::read_to_string(tls_dir.join("tls.crt")).unwrap();
    assert_eq!(hook.presented_cert().await, der(&first));

    let (cert, key) = hook.pki.leaf("webhook-2");
    write_atomic(&tls_dir.join("tls.key"), &key);
    write_atomic(&tls_dir.join("tls.crt"), &cert);
    let rotated = eventually(LIMIT, async || hook.presented_cert().await == der(&cert)).await;
    assert!(rotated, "rotated certificate not served within {LIMIT:?}");

    // A certificate whose key is missing (half-done rotation) is refused; the last pair stays.
    let (orphan, _) = hook.pki.leaf("webhook-3");
    write_atomic(&tls_dir.join("tls.crt"), &orphan);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.presented_cert().await, der(&cert));
    assert!(
        nginx_image(&hook).await.contains("a.example.com"),
        "still serving reviews"
    );
    hook.stop().await;
}

/// A fake mirror whose `/healthz` answers the status in `status`.
async fn fake_mirror(status: Arc<AtomicU16>) -> String {
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let code = status.load(Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(code).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn review_while(hook: &Webhook) -> Value {
    hook.review(&fixture("pod-create.json")).await
}

#[tokio::test]
async fn unhealthy_mirror_stops_rewriting() {
    let status = Arc::new(AtomicU16::new(200));
    let url = fake_mirror(status.clone()).await;
    let config = format!(
        "mirror: m.example.com\nmirror_health: {{url: '{url}', interval: 200ms, timeout: 1s, failure_threshold: 2}}\n"
    );
    let hook = Webhook::start(&config).await;
    let rewriting = async || review_while(&hook).await.get("patch").is_some();
    assert!(
        eventually(LIMIT, rewriting).await,
        "healthy mirror: rewriting"
    );

    status.store(503, Ordering::SeqCst);
    let stopped = eventually(LIMIT, async || {
        let r = review_while(&hook).await;
        r.get("patch").is_none()
            && r["warnings"][0]
                .as_str()
                .unwrap_or("")
                .contains("mirror unhealthy")
    })
    .await;
    assert!(
        stopped,
        "unhealthy mirror: pods admitted unchanged with a warning"
    );

    status.store(200, Ordering::SeqCst);
    assert!(
        eventually(LIMIT, rewriting).await,
        "recovered mirror: rewriting again"
    );
    hook.stop().await;
}
