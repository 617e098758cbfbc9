//! The router: `/v2/...`, the token endpoints, health, readiness, metrics, the admin API and
//! the web console,
//! behind the request-head limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{StatusCode, header};

use crate::{App, admin, console, error, registry, token};

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
        .merge(admin_api("/admin/v1"))
        .merge(
            admin_api("/ui/admin/api").route_layer(middleware::from_fn_with_state(
                app.clone(),
                console::enabled,
            )),
        )
        .merge(console::routes(app.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), head_limit))
        .with_state(app)
}

/// The console's JSON (`console::api`), under `/admin/v1` for admin credentials and under
/// `/ui/admin/api` for the console's session cookie; `/ui/admin/api` also serves usage and
/// bans.
fn admin_api(prefix: &str) -> Router<Arc<App>> {
    use axum::routing::{delete, post};
    use console::api;
    let r = Router::new()
        .route(&format!("{prefix}/series"), get(api::series))
        .route(&format!("{prefix}/cache"), get(api::cache))
        .route(
            &format!("{prefix}/cache/{{upstream}}/{{*repository}}"),
            delete(api::evict_json),
        )
        .route(&format!("{prefix}/syncs"), get(api::syncs))
        .route(&format!("{prefix}/config"), get(api::config))
        .route(&format!("{prefix}/reload"), post(api::reload))
        .route(&format!("{prefix}/upstreams"), get(api::upstreams));
    if prefix == "/admin/v1" {
        return r;
    }
    r.route(&format!("{prefix}/usage"), get(admin::usage))
        .route(&format!("{prefix}/bans"), get(admin::bans))
        .route(&format!("{prefix}/bans/{{subject}}"), delete(admin::lift))
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
            if app.mirror.serves_past_failing_store() {
                let msg = "ready, degraded: the cache storage is failing; blobs and manifests come from the upstreams, uncached (details in ferry's log)\n";
                return (StatusCode::OK, msg).into_response();
            }
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
