//! Host patterns, as in `upstreams.<name>.redirect_hosts`: the hosts a blob download may be
//! redirected to.
//!
//! A pattern is a host name or IP address in which `*` stands for any run of characters
//! (dots included) and `?` for one character — `*.cloudfront.net`,
//! `production.cloudflare.docker.com`, `10.0.0.?` — optionally followed by `:<port>`. Without a
//! port it matches the host on any port. Matching ignores case. An IPv6 address is written in
//! brackets (`[2001:db8::1]:443`).

/// Checks a pattern; the error says what is wrong and how to write it instead.
pub fn check(pattern: &str) -> Result<(), String> {
    const EXAMPLE: &str = "write a host such as cdn.example.com or *.cloudfront.net";
    if pattern.trim().is_empty() {
        return Err(format!("is empty: {EXAMPLE}"));
    }
    if pattern.contains("://") {
        return Err(format!("is a URL, not a host: {EXAMPLE}"));
    }
    if pattern.contains('/') {
        return Err(format!("has a path: {EXAMPLE}"));
    }
    let (host, port) = split(pattern).ok_or_else(|| format!("has a bad port: {EXAMPLE}"))?;
    if port.is_some_and(|p| p == 0) {
        return Err("port 0 is not a port".into());
    }
    let bracketed = host.starts_with('[');
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '-' | '.' | '*' | '?')
            || (bracketed && matches!(c, ':' | '[' | ']'))
    };
    if let Some(bad) = host.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "has {bad:?}: a host holds letters, digits, '-' and '.', plus the wildcards '*' and '?'"
        ));
    }
    if host.starts_with('*') && host.len() > 1 && !host[1..].starts_with('.') {
        return Err(format!(
            "would also match hosts that merely end like it (evil{}): write *.{}",
            &host[1..],
            &host[1..]
        ));
    }
    Ok(())
}

/// Whether `host` (with `port`, when the URL has one or its scheme implies one) matches
/// `pattern`. A pattern that does not [`check`] matches nothing.
pub fn matches(pattern: &str, host: &str, port: Option<u16>) -> bool {
    let Some((want_host, want_port)) = split(pattern) else {
        return false;
    };
    if want_port.is_some_and(|p| Some(p) != port) {
        return false;
    }
    glob(
        want_host.to_ascii_lowercase().as_bytes(),
        host.to_ascii_lowercase().as_bytes(),
    )
}

/// `host[:port]` (or `[v6][:port]`) -> (host, port); `None` for a port that is not a number.
fn split(pattern: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if pattern.starts_with('[') {
        let end = pattern.find(']')? + 1;
        let port = match &pattern[end..] {
            "" => None,
            rest => Some(rest.strip_prefix(':')?),
        };
        (&pattern[..end], port)
    } else {
        match pattern.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (pattern, None),
        }
    };
    match port {
        Some(p) => Some((host, Some(p.parse().ok()?))),
        None => Some((host, None)),
    }
}

/// `*` and `?` glob over bytes, with backtracking to the last `*`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_ports_and_case() {
        assert!(matches("*.cloudfront.net", "d1.cloudfront.net", Some(443)));
        assert!(matches("*.cloudfront.net", "a.b.CloudFront.net", None));
        assert!(!matches("*.cloudfront.net", "cloudfront.net", Some(443)));
        assert!(!matches("*.cloudfront.net", "evil.net", Some(443)));
        assert!(!matches(
            "*.cloudfront.net",
            "cloudfront.net.evil.com",
            Some(443)
        ));
        assert!(matches(
            "production.cloudflare.docker.com",
            "production.cloudflare.docker.com",
            Some(443)
        ));
        assert!(matches("10.0.0.?", "10.0.0.7", Some(80)));
        assert!(!matches("10.0.0.?", "10.0.0.17", Some(80)));
        assert!(matches("127.0.0.2", "127.0.0.2", Some(5000)));
        assert!(matches("127.0.0.2:5000", "127.0.0.2", Some(5000)));
        assert!(!matches("127.0.0.2:5000", "127.0.0.2", Some(5001)));
        assert!(matches("[::1]:8443", "[::1]", Some(8443)));
        assert!(matches("*", "anything.example", None));
        assert!(!matches("https://cdn.example", "cdn.example", None));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for ok in [
            "*.cloudfront.net",
            "cdn-*.example.com",
            "127.0.0.2:9000",
            "*",
            "[::1]",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("https://cdn.example.com", "is a URL"),
            ("cdn.example.com/blobs", "has a path"),
            ("cdn.example.com:https", "bad port"),
            ("cdn.example.com:0", "port 0"),
            ("", "is empty"),
            ("cdn example.com", "has ' '"),
            ("*cloudfront.net", "write *.cloudfront.net"),
        ];
        for (bad, why) in cases {
            let e = check(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
