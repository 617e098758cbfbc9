//! TLS termination with rustls (aws-lc-rs): certificate chain and key from PEM files, HTTP/2
//! and HTTP/1.1 offered by ALPN, and the files re-read when they change on disk (cert-manager or
//! certbot renewals take effect without a restart; a broken new pair is logged and the old one
//! kept). The process's one file watcher calls [`CertReload::reload`] when the files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::listen::{Acceptor, Io};

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

/// Re-reads the certificate and key into a running acceptor.
#[derive(Debug, Clone)]
pub struct CertReload {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<Resolver>,
}

impl CertReload {
    /// The certificate and key files.
    pub fn paths(&self) -> [PathBuf; 2] {
        [self.cert.clone(), self.key.clone()]
    }

    /// Loads the files again and serves the new pair from the next handshake on; a pair that
    /// does not load is logged and the current one kept.
    pub fn reload(&self) {
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                self.resolver.0.store(Arc::new(ck));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate NOT reloaded; keeping the previous one")
            }
        }
    }
}

/// A TLS acceptor for the accept loop, and the handle that reloads its files.
pub fn acceptor(cert: PathBuf, key: PathBuf) -> Result<(Acceptor, CertReload), TlsError> {
    let resolver = Arc::new(Resolver(ArcSwap::from_pointee(load(&cert, &key)?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let reload = CertReload {
        cert,
        key,
        resolver,
    };
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let acceptor: Acceptor = Arc::new(move |stream| {
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
    });
    Ok((acceptor, reload))
}
