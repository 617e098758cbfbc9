//! Which redirects an upstream request may follow. ferry never contacts a host that is not a
//! configured upstream, except where an upstream redirects a blob download to its storage
//! (CDN) host (SPEC sections 3 and 11):
//!
//! - a redirect to the host (and port) the request was sent to is always followed;
//! - a blob download (`GET` or `HEAD` of `/blobs/`) may go to another host: any host when
//!   `upstreams.<name>.redirect_hosts` is empty, else only one matching a pattern;
//! - any other request (manifests, tag lists, referrers) never leaves the registry's host.
//!
//! Token requests follow no redirect at all, and no redirect ever carries credentials (see
//! [`crate::client`]).

use ferry_config::hosts;
use url::Url;

/// The redirect rules of one upstream.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    upstream: String,
    blob_hosts: Vec<String>,
}

impl RedirectPolicy {
    /// Rules for upstream `upstream` whose blob downloads may be redirected to `blob_hosts`
    /// (patterns; empty: any host).
    pub fn new(upstream: &str, blob_hosts: Vec<String>) -> Self {
        RedirectPolicy {
            upstream: upstream.to_owned(),
            blob_hosts,
        }
    }

    /// Whether a request of `kind` (an operation label: `blob`, `blob_head`, `manifest`, ...)
    /// sent to `origin` may follow a redirect to `target`; the error names the host and why.
    pub fn check(&self, kind: &str, origin: &Url, target: &Url) -> Result<(), String> {
        if same_host(origin, target) {
            return Ok(());
        }
        let host = authority(target);
        if !matches!(kind, "blob" | "blob_head") {
            return Err(format!(
                "redirected a {} request to {host}, which is not the registry's own host \
                 (only blob downloads may be redirected to another host)",
                kind.trim_end_matches("_head")
            ));
        }
        let allowed = self.blob_hosts.is_empty()
            || self.blob_hosts.iter().any(|p| {
                hosts::matches(
                    p,
                    target.host_str().unwrap_or_default(),
                    target.port_or_known_default(),
                )
            });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "redirected a blob download to {host}, which matches none of \
                 upstreams.{}.redirect_hosts",
                self.upstream
            ))
        }
    }
}

/// Same host name and same (effective) port.
fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str()
        .zip(b.host_str())
        .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `host[:port]` as written in the URL.
fn authority(u: &Url) -> String {
    let host = u.host_str().unwrap_or("(no host)");
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_blob_downloads_leave_the_registry_host() {
        let any = RedirectPolicy::new("docker.io", Vec::new());
        let origin = url("https://registry-1.docker.io/v2/library/x/manifests/1");
        let same = url("https://registry-1.docker.io:443/v2/other/path");
        let cdn = url("https://production.cloudflare.docker.com/registry-v2/blob?sig=1");
        for kind in [
            "manifest",
            "manifest_head",
            "tags",
            "referrers",
            "blob",
            "blob_head",
        ] {
            assert_eq!(
                any.check(kind, &origin, &same),
                Ok(()),
                "{kind} to the same host"
            );
        }
        assert_eq!(any.check("blob", &origin, &cdn), Ok(()));
        assert_eq!(any.check("blob_head", &origin, &cdn), Ok(()));
        for kind in ["manifest", "manifest_head", "tags", "referrers"] {
            let e = any.check(kind, &origin, &cdn).unwrap_err();
            assert!(e.contains("production.cloudflare.docker.com"), "{e}");
            assert!(e.contains("only blob downloads"), "{e}");
        }
        // Another port is another host.
        let other_port = url("https://registry-1.docker.io:8443/v2/x");
        assert!(any.check("manifest", &origin, &other_port).is_err());
    }

    #[test]
    fn redirect_hosts_restrict_blob_downloads() {
        let p = RedirectPolicy::new(
            "docker.io",
            vec!["*.cloudfront.net".into(), "127.0.0.2".into()],
        );
        let origin = url("http://127.0.0.1:5000/v2/a/blobs/sha256:1");
        assert_eq!(
            p.check("blob", &origin, &url("https://d1.cloudfront.net/x")),
            Ok(())
        );
        assert_eq!(
            p.check("blob", &origin, &url("http://127.0.0.2:9000/x")),
            Ok(())
        );
        assert_eq!(
            p.check("blob", &origin, &url("http://127.0.0.1:5000/cdn")),
            Ok(())
        );
        let e = p
            .check("blob", &origin, &url("http://127.0.0.3:9000/x"))
            .unwrap_err();
        assert!(e.contains("127.0.0.3:9000"), "{e}");
        assert!(e.contains("upstreams.docker.io.redirect_hosts"), "{e}");
    }
}
