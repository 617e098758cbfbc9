//! # ferry-server: the HTTP face of the mirror
//!
//! The router sends `/v2/...` to [`registry::handle`], which parses the path, routes it to an
//! upstream repository and calls [`ferry_mirror::Mirror`]; failures become OCI errors in one
//! place ([`error`]). Around it: `/healthz` (alive), `/readyz` (storage writable),
//! `/metrics` (Prometheus text), one log line per request ([`observe`]) and the accept loop
//! with graceful shutdown ([`listen`]).

pub mod conn_limits;
pub mod error;
pub mod listen;
pub mod observe;
pub mod registry;
pub mod sendfile;
pub mod timed_io;
pub mod tls;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use http::{StatusCode, header};

/// Everything the handlers share.
pub struct App {
    /// The cache engine.
    pub mirror: Mirror,
    /// Access control and quotas.
    pub access: ferry_access::Access,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Public base URL (`server.external_url`), for the token realm.
    pub external_url: Option<String>,
    /// Whether clients reach this server over TLS (for a realm derived from `Host`).
    pub tls: bool,
    /// Largest request head accepted (`server.max_header_bytes`).
    pub max_header_bytes: usize,
}

/// Most request headers accepted.
pub const MAX_HEADER_COUNT: usize = 200;

impl App {
    /// The absolute URL of the token endpoint to put in `WWW-Authenticate` challenges.
    pub fn token_realm(&self, req: &http::request::Parts) -> String {
        if let Some(base) = &self.external_url {
            return format!("{}/token", base.trim_end_matches('/'));
        }
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "localhost".into());
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }
}

/// The full router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2", any(registry::handle))
        .route("/v2/", any(registry::handle))
        .route("/v2/{*rest}", any(registry::handle))
        .route("/token", get(token::handle).post(token::handle))
        .route("/auth/token", get(token::handle).post(token::handle))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), head_limit))
        .with_state(app)
}

/// Refuses request heads over `server.max_header_bytes` (or with too many headers) with 431
/// and an OCI error body, before any handler runs.
async fn head_limit(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let size = req.uri().to_string().len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > app.max_header_bytes || headers.len() > MAX_HEADER_COUNT {
        let message = format!(
            "request head is {size} bytes with {} headers; the limit is {} bytes and {MAX_HEADER_COUNT} headers (server.max_header_bytes)",
            headers.len(),
            app.max_header_bytes
        );
        let mut e = error::ApiError::new(ferry_oci::ErrorCode::Unsupported, message);
        e.status = Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        return e.into_response();
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.mirror.check_ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics.inflight_fills.get();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error::ApiError::new(
        ferry_oci::ErrorCode::NameUnknown,
        "not found: ferry serves the registry API under /v2/",
    )
    .into_response()
}
