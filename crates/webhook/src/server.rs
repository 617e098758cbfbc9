//! The HTTPS side: an axum router (`POST /mutate`, `GET /healthz`) behind a rustls accept loop.
//!
//! The accept loop is ours rather than a library's so the certificate resolver can be swapped on
//! rotation and shutdown is explicit: on cancel it stops accepting, lets in-flight reviews finish
//! (up to [`DRAIN`]) and returns.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Reply};
use crate::health::MirrorHealth;
use crate::settings::Settings;

/// Largest accepted review (an object plus its old version, each up to etcd's 1.5 MiB).
const MAX_BODY: usize = 8 << 20;
/// Time limit of a TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Current settings (swapped on reload).
    pub settings: Arc<ArcSwap<Settings>>,
    /// Mirror health gate.
    pub health: Arc<MirrorHealth>,
}

/// The webhook's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn mutate(State(state): State<AppState>, body: Bytes) -> Response {
    let settings = state.settings.load_full();
    let gate = state.health.gate(&settings);
    match admission::handle(&body, &settings, &gate) {
        Reply::Review(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Reply::BadRequest(message) => {
            tracing::warn!(%message, "rejected a body that is not an AdmissionReview");
            (StatusCode::BAD_REQUEST, message).into_response()
        }
    }
}

/// Serves `app` over TLS on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    cancel: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}
