//! Clients for arbitrary registries (`ferry copy` talks to registries that are not configured
//! upstreams). Like Docker, a registry on a loopback address (`localhost`, `127.0.0.0/8`,
//! `::1`) is reached over plain HTTP; any other over HTTPS unless `--plain-http` says
//! otherwise; `--insecure` skips TLS certificate verification.

use std::net::IpAddr;
use std::sync::Arc;

use ferry_config::{Secret, UpstreamConfig};
use ferry_metrics::Metrics;
use ferry_oci::image_ref::DOCKER_HUB;
use ferry_upstream::Upstream;

use crate::creds::Credentials;
use crate::error::SyncError;

/// How to reach registries that are not loopback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteOptions {
    /// Use `http://` for every registry.
    pub plain_http: bool,
    /// Accept any TLS certificate.
    pub insecure: bool,
}

/// Whether `registry` (`host[:port]`) is a loopback address.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The base URL of `registry`.
pub fn registry_url(registry: &str, opts: RemoteOptions) -> String {
    if registry == DOCKER_HUB && !opts.plain_http {
        return "https://registry-1.docker.io".into();
    }
    let scheme = if opts.plain_http || is_loopback(registry) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{registry}")
}

/// A client for `registry`; `push` asks for push tokens too.
pub fn client(
    registry: &str,
    creds: Option<Credentials>,
    opts: RemoteOptions,
    push: bool,
    metrics: Arc<Metrics>,
) -> Result<Arc<Upstream>, SyncError> {
    let (username, password) = match creds {
        Some(c) => (Some(c.username), Some(Secret(c.password))),
        None => (None, None),
    };
    let cfg = UpstreamConfig {
        url: Some(registry_url(registry, opts)),
        username,
        password,
        insecure: opts.insecure,
        ..Default::default()
    };
    let up = Upstream::new(registry, &cfg, metrics).map_err(SyncError::from)?;
    Ok(Arc::new(if push { up.for_push() } else { up }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http() {
        let o = RemoteOptions::default();
        assert_eq!(registry_url("127.0.0.1:5001", o), "http://127.0.0.1:5001");
        assert_eq!(registry_url("localhost:5000", o), "http://localhost:5000");
        assert_eq!(registry_url("[::1]:5000", o), "http://[::1]:5000");
        assert_eq!(registry_url("ghcr.io", o), "https://ghcr.io");
        assert_eq!(registry_url("docker.io", o), "https://registry-1.docker.io");
        let plain = RemoteOptions {
            plain_http: true,
            ..o
        };
        assert_eq!(registry_url("reg.lan:5000", plain), "http://reg.lan:5000");
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
    }
}
