//! The serving certificate, swapped in place when its files change (cert-manager rotation).
//!
//! [`CertStore`] is a rustls [`ResolvesServerCert`]: every TLS handshake asks it for the current
//! [`CertifiedKey`], so a rotation takes effect on the next connection without a restart.
//! [`CertStore::reload`] re-reads both files and only swaps when they form a valid pair; a
//! half-written rotation (new cert, old key) is logged and the old pair keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        message: String,
    },
    /// rustls refused the pair (unsupported key, key does not match certificate).
    #[error("certificate {cert} and key {key} are not a usable pair: {source}")]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The rustls server configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The current certificate and key, reloadable.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    last_bytes: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// The single crypto provider ferry uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl CertStore {
    /// Loads the pair; fails if it is unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertStore, TlsError> {
        let bytes = (read(cert_path)?, read(key_path)?);
        let key = certified_key(cert_path, key_path, &bytes)?;
        Ok(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(key),
            last_bytes: Mutex::new(bytes),
        })
    }

    /// Re-reads the files; swaps in a changed, valid pair. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        let bytes = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read TLS files; keeping the current certificate");
                return false;
            }
        };
        let mut last = self.last_bytes.lock().expect("cert lock");
        if *last == bytes {
            return false;
        }
        match certified_key(&self.cert_path, &self.key_path, &bytes) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                *last = bytes;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS files rejected; keeping the current certificate");
                false
            }
        }
    }

    /// The certificate and key files (watched for changes).
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert_path.clone(), self.key_path.clone()]
    }

    /// A rustls server config that resolves through this store, speaking h2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert, key): &(Vec<u8>, Vec<u8>),
) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, message: String| TlsError::Pem {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(cert_path, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| pem_error(key_path, format!("no usable private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}
