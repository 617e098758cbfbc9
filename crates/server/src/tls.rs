//! TLS termination with rustls (aws-lc-rs): certificate chain and key from PEM files, HTTP/2
//! and HTTP/1.1 offered by ALPN, and the files re-read when they change on disk (cert-manager or
//! certbot renewals take effect without a restart; a broken new pair is logged and the old one
//! kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::listen::{Acceptor, Io};

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The crypto provider ferry uses (installed process-wide once).
fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Loads a certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("cannot read certificate {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("bad certificate PEM in {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("cannot read private key {}: {e}", key.display())))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        TlsError(format!(
            "certificate and key do not match or are unsupported: {e}"
        ))
    })
}

#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A TLS acceptor for the accept loop, plus a task that reloads the files until `stop`.
pub fn acceptor(
    cert: PathBuf,
    key: PathBuf,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Acceptor, TlsError> {
    let resolver = Arc::new(Resolver(ArcSwap::from_pointee(load(&cert, &key)?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tasks.spawn(watch(cert, key, resolver, stop));
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok(Arc::new(move |stream| {
        let tls = tls.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(s)) => Some(Box::new(s) as Box<dyn Io>),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => None,
            }
        }
        .boxed()
    }))
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

async fn watch(cert: PathBuf, key: PathBuf, resolver: Arc<Resolver>, stop: CancellationToken) {
    let mut seen = (stamp(&cert), stamp(&key));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_CHECK) => {}
        }
        let now = (stamp(&cert), stamp(&key));
        if now == seen {
            continue;
        }
        seen = now;
        match load(&cert, &key) {
            Ok(ck) => {
                resolver.0.store(Arc::new(ck));
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate NOT reloaded; keeping the previous one")
            }
        }
    }
}
