//! # ferry-server: the HTTP face of the mirror
//!
//! The router sends `/v2/...` to [`registry::handle`], which parses the path, routes it to an
//! upstream repository and calls [`ferry_mirror::Mirror`]; failures become OCI errors in one
//! place ([`error`]). Around it: `/healthz` (alive), `/readyz` (storage writable),
//! `/metrics` (Prometheus text), one log line per request ([`observe`]), the admin API
//! (`/admin/v1/...`, [`admin`] and [`console::api`]), the web console (`/ui/...`,
//! [`console`]) and the accept loop with graceful shutdown ([`listen`]).

pub mod admin;
pub mod conn_limits;
pub mod console;
pub mod error;
pub mod listen;
mod miss_quota;
pub mod observe;
pub mod registry;
pub mod respond;
pub mod sendfile;
pub mod timed_io;
pub mod tls;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use http::{StatusCode, header};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    /// The web console's state (sessions, time series, sync runs, running config).
    pub console: Arc<console::Console>,
}

/// Most request headers accepted.
pub const MAX_HEADER_COUNT: usize = 200;

impl App {
    /// The absolute URL of the token endpoint to put in `WWW-Authenticate` challenges:
    /// `server.external_url` when set (no request header changes it then); else the scheme and
    /// host a trusted proxy forwarded (`X-Forwarded-Proto`, `X-Forwarded-Host`); else this
    /// connection's scheme and the request's host. A host that is not a plain `host[:port]`
    /// is never echoed (it would land inside a quoted header value).
    pub fn token_realm(&self, req: &http::request::Parts) -> String {
        format!("{}/token", self.base_url(req))
    }

    /// This mirror's URL as its clients know it (no trailing slash), found as for
    /// [`App::token_realm`].
    pub fn base_url(&self, req: &http::request::Parts) -> String {
        if let Some(base) = &self.external_url {
            return base.trim_end_matches('/').to_owned();
        }
        let peer = peer_ip(req).ip();
        let forwarded = |name: &str| {
            self.access
                .trusts_proxy(peer)
                .then(|| first_value(&req.headers, name))
                .flatten()
        };
        let host = forwarded("x-forwarded-host")
            .or_else(|| request_host(req))
            .filter(|h| is_authority(h))
            .unwrap_or_else(|| "localhost".into());
        let scheme = match forwarded("x-forwarded-proto").as_deref() {
            Some("https") => "https",
            Some("http") => "http",
            _ if self.tls => "https",
            _ => "http",
        };
        format!("{scheme}://{host}")
    }
}

/// The client address from the accept loop (unspecified in in-process tests).
pub fn peer_ip(req: &http::request::Parts) -> SocketAddr {
    req.extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |c| {
            c.0
        })
}

/// The host the client addressed (`:authority` or `Host`).
pub(crate) fn request_host(req: &http::request::Parts) -> Option<String> {
    req.uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| first_value(&req.headers, header::HOST.as_str()))
}

/// The first comma-separated element of a header (proxies append to `X-Forwarded-*`).
fn first_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next()?.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Whether `s` is a bare `host[:port]` (letters, digits, `.-:[]`).
fn is_authority(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
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
