//! # ferry-webhook: a Kubernetes mutating admission webhook that points pods at the mirror
//!
//! `ferry webhook --config FILE` calls [`run`]. For each AdmissionReview (v1) of a Pod (or a
//! workload's pod template) it rewrites container, init container and ephemeral container images
//! to the mirror, answers a JSONPatch, and records the original images in the annotation
//! [`ORIGINAL_IMAGES_ANNOTATION`]. It never blocks admission: any problem means "allowed,
//! unchanged, with a warning".
//!
//! The request path, one module per step:
//! - [`server`]: TLS accept loop and axum routes (`POST /mutate`, `GET /healthz`);
//! - [`admission`]: body -> AdmissionReview -> response (the never-fail boundary);
//! - [`workload`]: which kinds carry a pod template, the namespace / opt-out / health gates;
//! - [`template`]: one pod template -> JSONPatch operations + original-images annotation;
//! - [`rules`]: the pure image rewrite, `nginx` -> `mirror.example.com/docker.io/library/nginx`.
//!
//! Around it: [`config`] (the YAML file) and [`settings`] (compiled form), [`reload`] and
//! one file watcher (`ferry_watch`: hot reload of config and certificates), [`tls`] (rotating
//! certificate) and [`health`] (the mirror health gate).

pub mod admission;
pub mod config;
mod globs;
pub mod health;
pub mod reload;
pub mod rules;
pub mod server;
pub mod settings;
pub mod target;
pub mod template;
pub mod tls;
pub mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, WebhookConfig};
pub use rules::{Rewrite, Rules, Skip};
pub use settings::Settings;
pub use template::ORIGINAL_IMAGES_ANNOTATION;
pub use tls::TlsError;
pub use workload::OPT_OUT_ANNOTATION;

/// How often files are re-checked when no change event arrives.
const FALLBACK_POLL: Duration = Duration::from_secs(10);

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The config file is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The serving certificate or key is missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl WebhookError {
    /// The process exit code for this error: 2 for a bad config, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            WebhookError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the webhook with the config at `config_path` until `shutdown` completes.
pub async fn run(
    config_path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let settings = Settings::load(&config_path)?;
    let addr = settings.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    run_on(listener, config_path, settings, shutdown).await
}

/// Like [`run`], on an already bound listener (`listen` is ignored); for tests and embedding.
pub async fn run_with_listener(
    listener: TcpListener,
    config_path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let settings = Settings::load(&config_path)?;
    run_on(listener, config_path, settings, shutdown).await
}

async fn run_on(
    listener: TcpListener,
    config_path: PathBuf,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    // reqwest (health probes) uses the process-wide provider; ignore "already installed".
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = Arc::new(tls::CertStore::load(
        &settings.config.tls.cert,
        &settings.config.tls.key,
    )?);
    let tls_config = Arc::new(certs.server_config()?);
    if !settings.rules.maps_anything() {
        tracing::warn!("webhook config maps no registry: set `mirror` or `registries`");
    }
    let state = server::AppState {
        settings: Arc::new(ArcSwap::from_pointee(settings)),
        health: Arc::new(health::MirrorHealth::default()),
    };
    let cancel = CancellationToken::new();
    let tasks = background(&config_path, &state, &certs, &cancel);
    let stop = cancel.clone();
    let on_shutdown = tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, config = %config_path.display(), "ferry webhook listening (HTTPS)");
    server::serve(listener, tls_config, server::router(state), cancel.clone()).await;
    cancel.cancel();
    on_shutdown.abort();
    tasks.join_all().await;
    tracing::info!("ferry webhook stopped");
    Ok(())
}

/// Config reload, certificate reload and the health poller, all stopped by `cancel`.
fn background(
    config_path: &std::path::Path,
    state: &server::AppState,
    certs: &Arc<tls::CertStore>,
    cancel: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut reloader = reload::ConfigReloader::new(config_path, state.settings.clone());
    let store = certs.clone();
    let files = ferry_watch::FileWatch::new()
        .on_change(&[config_path.to_owned()], move || {
            reloader.reload();
            std::future::ready(())
        })
        .on_change(&certs.paths(), move || {
            store.reload();
            std::future::ready(())
        });
    tasks.spawn(files.run(FALLBACK_POLL, cancel.clone()));
    tasks.spawn(health::poll(
        state.health.clone(),
        state.settings.clone(),
        cancel.clone(),
    ));
    tasks
}
