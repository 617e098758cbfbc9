//! Where requests for an upstream go: its mirrors in order, then its own URL. Each endpoint is
//! a base URL plus an optional path prefix placed after `/v2/`, so `https://m.example.cn/gcr.io`
//! means `https://m.example.cn/v2/gcr.io/<repo>/...` (one ferry behind another).

use url::Url;

/// One place to send registry requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]`.
    pub origin: String,
    /// Host (and port) as it appears in URLs, for auth decisions.
    pub host: String,
    /// Path prefix after `/v2/`, empty or ending in `/`.
    pub prefix: String,
}

impl Endpoint {
    /// Parses a configured URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let u = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = u.path().trim_matches('/');
        let path = path
            .strip_prefix("v2")
            .map(|p| p.trim_start_matches('/'))
            .unwrap_or(path);
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        Ok(Endpoint {
            origin: format!("{}://{}", u.scheme(), host),
            host,
            prefix,
        })
    }

    /// Full URL of an API path below `/v2/` (e.g. `library/nginx/manifests/latest`).
    pub fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}{}", self.origin, self.prefix, tail)
    }

    /// The repository name as this endpoint knows it (with the prefix).
    pub fn repository(&self, repo: &str) -> String {
        format!("{}{}", self.prefix, repo)
    }

    /// Whether this endpoint is plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.origin.starts_with("http://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_prefixed() {
        let e = Endpoint::parse("http://127.0.0.1:5001").unwrap();
        assert_eq!(
            e.url("a/b/manifests/1"),
            "http://127.0.0.1:5001/v2/a/b/manifests/1"
        );
        assert_eq!(e.host, "127.0.0.1:5001");
        let m = Endpoint::parse("https://m.example.cn/gcr.io/").unwrap();
        assert_eq!(
            m.url("x/blobs/sha256:1"),
            "https://m.example.cn/v2/gcr.io/x/blobs/sha256:1"
        );
        assert_eq!(m.repository("x"), "gcr.io/x");
        let v = Endpoint::parse("https://ferry.internal/v2/ghcr.io").unwrap();
        assert_eq!(
            v.url("o/a/tags/list"),
            "https://ferry.internal/v2/ghcr.io/o/a/tags/list"
        );
        assert!(Endpoint::parse("nope").is_err());
    }
}
