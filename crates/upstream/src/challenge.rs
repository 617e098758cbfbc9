//! `WWW-Authenticate` challenges of registries, and the rule for where credentials may go.
//!
//! Registries answer 401 with `Bearer realm="https://auth.example/token",service="...",
//! scope="repository:org/app:pull"` (token flow) or `Basic realm="..."`. Parsing uses the
//! `http-auth` crate. Credentials are sent to a token realm only when the realm is on the
//! registry's own site (same host or same registrable domain, e.g. `auth.docker.io` for
//! `registry-1.docker.io`) or listed in the upstream's `auth_realms`; otherwise ferry asks
//! that realm for an anonymous token.

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The Docker token flow.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass back.
        service: Option<String>,
        /// `scope` the registry asked for, if any.
        scope: Option<String>,
    },
    /// HTTP Basic.
    Basic,
}

/// Parses every challenge header value and returns the first usable one (Bearer preferred).
pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        let Ok(challenges) = http_auth::parse_challenges(value) else {
            continue;
        };
        for c in challenges {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Some(Challenge::Bearer {
                        realm,
                        service: param("service"),
                        scope: param("scope"),
                    });
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// Host of a URL, lower-cased, without port.
pub fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.to_ascii_lowercase())
}

/// The last two labels of a DNS name (an approximation of the registrable domain that is right
/// for every public registry ferry knows); IP addresses are returned whole.
fn site(host: &str) -> &str {
    let host = host.split(':').next().unwrap_or(host);
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return host;
    }
    let mut dots = host.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &host[i + 1..],
        _ => host,
    }
}

/// Whether credentials for a registry at `registry_host` may be sent to `realm`.
pub fn realm_may_receive_credentials(
    registry_host: &str,
    realm: &str,
    extra_hosts: &[String],
) -> bool {
    let Some(realm_host) = host_of(realm) else {
        return false;
    };
    let registry_host = registry_host
        .split(':')
        .next()
        .unwrap_or(registry_host)
        .to_ascii_lowercase();
    if realm.starts_with("http://") && !is_loopback(&realm_host) {
        return false;
    }
    realm_host == registry_host
        || site(&realm_host) == site(&registry_host)
        || extra_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&realm_host))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            parse([v].into_iter()),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse([r#"Basic realm="Registry Realm""#].into_iter()),
            Some(Challenge::Basic)
        );
        assert_eq!(parse(["garbage ,,, ="].into_iter()), None);
        // Bearer wins over Basic when both are offered.
        let both = [r#"Basic realm="x""#, r#"Bearer realm="https://r/t""#];
        assert!(matches!(
            parse(both.into_iter()),
            Some(Challenge::Bearer { .. })
        ));
    }

    #[test]
    fn credential_destinations() {
        let none: Vec<String> = vec![];
        assert!(realm_may_receive_credentials(
            "registry-1.docker.io",
            "https://auth.docker.io/token",
            &none
        ));
        assert!(realm_may_receive_credentials(
            "ghcr.io",
            "https://ghcr.io/token",
            &none
        ));
        assert!(realm_may_receive_credentials(
            "127.0.0.1:5001",
            "http://127.0.0.1:5002/token",
            &none
        ));
        assert!(!realm_may_receive_credentials(
            "ghcr.io",
            "https://evil.example/token",
            &none
        ));
        assert!(
            !realm_may_receive_credentials("ghcr.io", "http://ghcr.io/token", &none),
            "no credentials over plain http"
        );
        assert!(!realm_may_receive_credentials(
            "nvcr.io",
            "https://authn.nvidia.com/token",
            &none
        ));
        assert!(realm_may_receive_credentials(
            "nvcr.io",
            "https://authn.nvidia.com/token",
            &["authn.nvidia.com".into()]
        ));
        assert!(!realm_may_receive_credentials(
            "127.0.0.1:5001",
            "https://10.0.0.1/token",
            &none
        ));
    }
}
