//! [`App`]: what every handler shares (engine, access control, metrics, server settings), and
//! what the handlers read off a request: the client address, the host it addressed, the token
//! realm to name in challenges.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use http::header;

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
    pub console: Arc<crate::console::Console>,
}

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
