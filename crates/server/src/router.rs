//! The router: `/v2/...`, the token endpoints, health, readiness, metrics and the admin API,
//! behind the request-head limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{StatusCode, header};

use crate::{App, admin, error, registry, token};

/// Most request headers accepted.
pub const MAX_HEADER_COUNT: usize = 200;

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
        .route("/admin/v1/usage", get(admin::usage))
        .route("/admin/v1/bans", get(admin::bans))
        .route(
            "/admin/v1/bans/{subject}",
            axum::routing::delete(admin::lift),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), head_limit))
        .with_state(app)
}

/// Refuses request heads over `server.max_header_bytes` (or with too many headers) with 431
/// and an OCI error body, and HTTP/1.1 requests without exactly one `Host` header with 400
/// (RFC 9112 section 3.2), before any handler runs.
async fn head_limit(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let hosts = headers.get_all(header::HOST).iter().count();
    if req.version() == http::Version::HTTP_11 && hosts != 1 {
        return error::ApiError::bad_request(format!(
            "an HTTP/1.1 request needs exactly one Host header, this one has {hosts} (RFC 9112 section 3.2)"
        ))
        .into_response();
    }
    let size = req.uri().to_string().len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > app.max_header_bytes || headers.len() > MAX_HEADER_COUNT {
        let e = error::ApiError::head_too_large(
            size,
            headers.len(),
            app.max_header_bytes,
            MAX_HEADER_COUNT,
        );
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
        Err(e) => {
            // The detail (a store URL, a bucket, a path) is for the log, not for whoever asks.
            tracing::warn!(error = %e, "readiness check failed");
            let msg = "not ready: the cache storage is not writable (details in ferry's log)\n";
            (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
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
    error::ApiError::not_found().into_response()
}
