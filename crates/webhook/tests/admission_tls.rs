//! The user's story over the wire: real AdmissionReview documents POSTed over TLS to a running
//! webhook by an HTTPS client that trusts a test CA; the answered JSONPatch, applied to the
//! object, must give the mirrored images and the original-images annotation.

mod support;

use serde_json::{Value, json};
use support::{Webhook, fixture, images, patched};

const CONFIG: &str =
    "mirror: mirror.example.com\nregistries:\n  quay.io: quay.mirror.example.com\n";
const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn original_images(object: &Value, meta: &str) -> Value {
    let raw = object
        .pointer(&format!("{meta}/annotations/ferry.dev~1original-images"))
        .and_then(Value::as_str);
    serde_json::from_str(raw.expect("annotation present")).unwrap()
}

#[tokio::test]
async fn pod_containers_are_rewritten_and_originals_recorded() {
    let hook = Webhook::start(CONFIG).await;
    let review = fixture("pod-create.json");
    let response = hook.review(&review).await;
    let pod = patched(&review, &response);
    assert_eq!(
        images(&pod, "/spec/initContainers"),
        [format!(
            "migrate=mirror.example.com/ghcr.io/acme/migrate:1.0@{DIGEST}"
        )]
    );
    assert_eq!(
        images(&pod, "/spec/containers"),
        [
            "nginx=mirror.example.com/docker.io/library/nginx:1.25",
            "sidecar=quay.mirror.example.com/prometheus/node-exporter:v1.8.0",
            "cached=mirror.example.com/docker.io/library/redis:7",
            "local=127.0.0.1:5001/test/multi:v1",
        ]
    );
    assert_eq!(
        original_images(&pod, "/metadata"),
        json!({
            "migrate": format!("ghcr.io/acme/migrate:1.0@{DIGEST}"),
            "nginx": "nginx:1.25",
            "sidecar": "quay.io/prometheus/node-exporter:v1.8.0",
        })
    );
    assert_eq!(
        pod["metadata"]["annotations"]["team"], "frontend",
        "other annotations kept"
    );
    let warnings = response["warnings"]
        .as_array()
        .expect("warning for the unmappable image");
    assert!(
        warnings[0].as_str().unwrap().contains("127.0.0.1:5001"),
        "{warnings:?}"
    );
    hook.stop().await;
}

#[tokio::test]
async fn rewriting_is_idempotent_on_reinvocation() {
    let hook = Webhook::start(CONFIG).await;
    let mut review = fixture("pod-create.json");
    let first = patched(&review, &hook.review(&review).await);
    review["request"]["object"] = first.clone();
    let second = hook.review(&review).await;
    assert!(
        second.get("patch").is_none(),
        "second pass changes nothing: {second}"
    );
    hook.stop().await;
}

#[tokio::test]
async fn only_new_ephemeral_containers_are_rewritten() {
    let hook = Webhook::start(CONFIG).await;
    let review = fixture("pod-ephemeral.json");
    let response = hook.review(&review).await;
    let pod = patched(&review, &response);
    assert_eq!(
        images(&pod, "/spec/ephemeralContainers"),
        [
            "debugger-old=busybox:1.36",
            "debugger-new=mirror.example.com/docker.io/library/busybox:1.36"
        ]
    );
    assert!(
        pod["metadata"].get("annotations").is_none(),
        "no metadata change on the subresource"
    );
    hook.stop().await;
}

#[tokio::test]
async fn deployment_and_cronjob_templates_are_rewritten() {
    let hook = Webhook::start(CONFIG).await;
    let review = fixture("deployment-create.json");
    let deployment = patched(&review, &hook.review(&review).await);
    assert_eq!(
        images(&deployment, "/spec/template/spec/containers"),
        [
            "api=mirror.example.com/registry.k8s.io/e2e-test-images/agnhost:2.39",
            "proxy=mirror.example.com/docker.io/envoyproxy/envoy:v1.30.1",
        ]
    );
    assert_eq!(
        images(&deployment, "/spec/template/spec/initContainers"),
        ["wait=mirror.example.com/docker.io/library/busybox"]
    );
    assert_eq!(
        original_images(&deployment, "/spec/template/metadata")["wait"],
        "busybox"
    );
    assert!(
        deployment["metadata"].get("annotations").is_none(),
        "annotation goes on the template"
    );

    let review = fixture("cronjob-create.json");
    let cronjob = patched(&review, &hook.review(&review).await);
    let at = "/spec/jobTemplate/spec/template";
    assert_eq!(
        images(&cronjob, &format!("{at}/spec/containers")),
        ["backup=mirror.example.com/docker.io/bitnami/postgresql:16"]
    );
    assert_eq!(
        original_images(&cronjob, &format!("{at}/metadata"))["backup"],
        "docker.io/bitnami/postgresql:16"
    );
    hook.stop().await;
}

#[tokio::test]
async fn excluded_namespace_and_opt_out_are_left_alone() {
    let hook = Webhook::start(CONFIG).await;
    let mut review = fixture("pod-create.json");
    review["request"]["namespace"] = json!("kube-system");
    review["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    let response = hook.review(&review).await;
    assert!(response.get("patch").is_none(), "{response}");

    let mut review = fixture("pod-create.json");
    review["request"]["object"]["metadata"]["annotations"]["ferry.dev/rewrite"] = json!("false");
    let response = hook.review(&review).await;
    assert!(response.get("patch").is_none(), "{response}");
    hook.stop().await;
}

#[tokio::test]
async fn disabled_webhook_allows_unchanged() {
    let hook = Webhook::start(&format!("{CONFIG}enabled: false\n")).await;
    let review = fixture("pod-create.json");
    let response = hook.review(&review).await;
    assert!(response.get("patch").is_none(), "{response}");
    hook.stop().await;
}

#[tokio::test]
async fn malformed_input_never_blocks() {
    let hook = Webhook::start(CONFIG).await;
    // A request with a uid but an object that is not a pod: allowed, unchanged, with a warning.
    let review = fixture("malformed-object.json");
    let response = hook.review(&review).await;
    assert!(response.get("patch").is_none());
    assert!(
        response["warnings"][0].as_str().unwrap().contains("ferry"),
        "{response}"
    );
    // Invalid image strings are warned about and left alone.
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["containers"][0]["image"] = json!("NGINX:Latest");
    let pod = patched(&review, &hook.review(&review).await);
    assert_eq!(pod["spec"]["containers"][0]["image"], "NGINX:Latest");
    // Bodies that are not AdmissionReviews at all: 400 (the apiserver applies failurePolicy).
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
    ] {
        let (status, _) = hook.post(body.to_vec()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
    }
    hook.stop().await;
}

#[tokio::test]
async fn healthz_answers() {
    let hook = Webhook::start(CONFIG).await;
    let r = hook
        .client()
        .get(hook.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN negotiates h2");
    hook.stop().await;
}
