//! Test harness: a throwaway CA (rcgen), a webhook running on 127.0.0.1:0 over real TLS with its
//! config and certificates in a temp directory, and an HTTPS client (reqwest + rustls) that
//! trusts only that CA. Helpers decode the answered JSONPatch and apply it to the object.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tokio::sync::oneshot;

/// A test certificate authority.
pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferry test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Pki {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for localhost / 127.0.0.1 with this common name: (cert PEM, key PEM).
    pub fn leaf(&self, common_name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A running webhook.
pub struct Webhook {
    /// Temp dir holding `config/webhook.yaml` and `tls/tls.{crt,key}`.
    pub dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate.
    pub pki: Pki,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ferry_webhook::WebhookError>>>,
}

impl Webhook {
    /// Starts a webhook whose config is `yaml` plus the `tls` section of the harness.
    pub async fn start(yaml: &str) -> Webhook {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        let (cert, key) = pki.leaf("webhook-1");
        write_atomic(&dir.path().join("tls/tls.crt"), &cert);
        write_atomic(&dir.path().join("tls/tls.key"), &key);
        let mut hook = Webhook {
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            pki,
            stop: None,
            task: None,
        };
        hook.write_config(yaml);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hook.addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let path = hook.config_path();
        hook.task = Some(tokio::spawn(ferry_webhook::run_with_listener(
            listener,
            path,
            async {
                let _ = rx.await;
            },
        )));
        hook.stop = Some(tx);
        hook.wait_healthy().await;
        hook
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config/webhook.yaml")
    }

    /// Replaces the config file (atomically, as kubelet does) with `yaml` + the harness TLS paths.
    pub fn write_config(&self, yaml: &str) {
        let tls = format!(
            "\ntls:\n  cert: {}\n  key: {}\n",
            self.dir.path().join("tls/tls.crt").display(),
            self.dir.path().join("tls/tls.key").display()
        );
        write_atomic(&self.config_path(), &format!("{yaml}{tls}"));
    }

    /// A new HTTPS client trusting only the test CA, without connection reuse.
    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.client().get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "webhook did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs raw bytes to /mutate: (status, body).
    pub async fn post(&self, body: Vec<u8>) -> (u16, Vec<u8>) {
        let r = self
            .client()
            .post(self.url("/mutate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// POSTs an AdmissionReview; asserts 200 and returns the `response` object.
    pub async fn review(&self, review: &Value) -> Value {
        let (status, body) = self.post(serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["apiVersion"], review["apiVersion"]);
        let response = answer["response"].clone();
        assert_eq!(response["uid"], review["request"]["uid"]);
        assert_eq!(response["allowed"], true, "{response}");
        response
    }

    /// The leaf certificate's DER the server presents on a new connection.
    pub async fn presented_cert(&self) -> Vec<u8> {
        let r = self
            .client()
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap();
        let info = r
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .expect("tls info");
        info.peer_certificate().expect("peer cert").to_vec()
    }

    /// Stops the webhook and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap()).await;
        result
            .expect("webhook stops")
            .expect("task")
            .expect("run ok");
    }
}

/// Writes `text` to `path` via a temp file and rename.
pub fn write_atomic(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Loads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The review's object with the response's JSONPatch applied (unchanged if there is none).
pub fn patched(review: &Value, response: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = response.get("patch").and_then(Value::as_str) {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

/// `name=image` of every container in the list at `pointer` (e.g. `/spec/containers`).
pub fn images(object: &Value, pointer: &str) -> Vec<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["image"].as_str().unwrap()
            )
        })
        .collect()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ferry_webhook=debug".into()),
        )
        .with_test_writer()
        .try_init();
}
