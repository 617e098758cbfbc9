//! Where rewritten images point: `host[:port]` plus an optional repository path prefix.
//!
//! Both the `mirror` key and the values of `registries` are targets. A path prefix is allowed
//! (`m.example.cn/dockerhub` gives `m.example.cn/dockerhub/library/nginx`) so one mirror can sit
//! behind a reverse proxy that routes by path, as `upstreams.*.mirrors` in the server config may.
//! The host must look like a registry to Docker's parser (contain `.` or `:`, or be
//! `localhost`), otherwise `mirror/library/nginx` would mean `docker.io/mirror/library/nginx`.

use std::fmt;

use ferry_oci::image_ref::{DOCKER_HUB, canonical_registry, looks_like_registry};
use ferry_oci::name::is_component;

/// A parsed, validated mirror target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Registry host and optional port, lower-cased.
    pub host: String,
    /// Repository path prefix without slashes at the ends; empty for none.
    pub prefix: String,
}

impl Target {
    /// Parses `host[:port][/prefix]`, with an optional `https://` or `http://` in front.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        let host = host.to_ascii_lowercase();
        if !looks_like_registry(&host) || !valid_host(&host) {
            return Err(format!(
                "{s:?} is not a registry host: write host[:port][/prefix] with a host that \
                 contains '.' or ':' or is 'localhost'"
            ));
        }
        if canonical_registry(&host) == DOCKER_HUB {
            return Err(format!("{host:?} is Docker Hub itself, not a mirror"));
        }
        if !prefix.is_empty() && !prefix.split('/').all(is_component) {
            return Err(format!(
                "path prefix {prefix:?} must be lower-case repository components separated by '/'"
            ));
        }
        Ok(Target {
            host,
            prefix: prefix.to_owned(),
        })
    }

    /// The repository under this target for `path` (e.g. `prefix/docker.io/library/nginx`).
    pub fn repository(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    name_ok && port_ok
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_prefixes() {
        let t = Target::parse("Mirror.Example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.prefix.as_str()),
            ("mirror.example.com", "")
        );
        let t = Target::parse("https://m.example.cn:5000/dockerhub/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.prefix.as_str()),
            ("m.example.cn:5000", "dockerhub")
        );
        assert_eq!(t.repository("library/nginx"), "dockerhub/library/nginx");
        assert_eq!(t.to_string(), "m.example.cn:5000/dockerhub");
        assert!(Target::parse("localhost:5000").is_ok());
        assert!(Target::parse("127.0.0.1:5000").is_ok());
    }

    #[test]
    fn rejects_what_would_not_parse_back() {
        for bad in [
            "",
            "mirror",
            "mirror/x",
            "m.example.com/Upper",
            "m.example.com//x",
            "m.example.com:99999",
            "m.example.com:",
            "bad host.com",
            "index.docker.io",
            "docker.io",
            "a..b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
