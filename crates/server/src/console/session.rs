//! Console logins: a random 256-bit session id in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Path=/ui`, `Secure` over TLS or an `https://` external URL), a server-side table with an
//! idle timeout (per replica: a login on one replica is unknown to the others), and a
//! per-session CSRF token that every form carries and every POST is checked against.

use std::time::Duration;

use http::HeaderMap;

/// The cookie's name.
pub const COOKIE: &str = "ferry_console";

/// Most sessions kept at once (the oldest idle ones go first).
const MAX_SESSIONS: u64 = 10_000;

/// One logged-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id (64 hex digits), as in the cookie.
    pub id: String,
    /// Who logged in.
    pub user: String,
    /// The token every form of this session carries (64 hex digits).
    pub csrf: String,
}

/// The session table.
#[derive(Debug, Clone)]
pub struct Sessions {
    table: moka::sync::Cache<String, Session>,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A table whose sessions end after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            table: moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// Starts a session for `user`.
    pub fn start(&self, user: &str) -> Session {
        let s = Session {
            id: random_hex(),
            user: user.to_owned(),
            csrf: random_hex(),
        };
        self.table.insert(s.id.clone(), s.clone());
        s
    }

    /// The live session named by the request's cookie, if any (and keeps it alive).
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.table.get(&id)
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.table.invalidate(id);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str, secure: bool, idle: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        idle.as_secs()
    )
}

/// The `Set-Cookie` value that ends it.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Refuses a request a browser sent from another site: `Sec-Fetch-Site` other than
/// `same-origin` or `none`, or an `Origin` whose host is none of `hosts` (the hosts this
/// console is reached at: the request's `Host`, the external URL's). Clients that send neither header (curl, scripts) pass this check; they
/// still need the session's token.
pub fn check_origin(headers: &HeaderMap, hosts: &[&str]) -> Result<(), &'static str> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err("the request came from another site (Sec-Fetch-Site)");
    }
    if let Some(origin) = get("origin") {
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if !origin_host.is_some_and(|o| hosts.contains(&o)) {
            return Err("the request came from another origin (Origin)");
        }
    }
    Ok(())
}

/// The CSRF check of a POST from a console form: a same-site request carrying the
/// session's token.
pub fn check_post(
    headers: &HeaderMap,
    hosts: &[&str],
    session: &Session,
    token: Option<&str>,
) -> Result<(), &'static str> {
    check_origin(headers, hosts)?;
    match token {
        Some(t) if same_token(t, &session.csrf) => Ok(()),
        Some(_) => Err("the form's CSRF token is not this session's"),
        None => Err("the form carries no CSRF token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn sessions_are_found_by_cookie_and_ended() {
        let t = Sessions::new(Duration::from_secs(60));
        let s = t.start("alice");
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        let h = headers(&[("cookie", &format!("a=b; {COOKIE}={}; c=d", s.id))]);
        assert_eq!(t.find(&h), Some(s.clone()));
        assert_eq!(t.find(&headers(&[("cookie", "ferry_console=00")])), None);
        assert_eq!(t.find(&HeaderMap::new()), None);
        t.end(&s.id);
        assert_eq!(t.find(&h), None);
    }

    #[test]
    fn idle_sessions_end() {
        let t = Sessions::new(Duration::from_millis(1000));
        let s = t.start("alice");
        let h = headers(&[("cookie", &format!("{COOKIE}={}", s.id))]);
        std::thread::sleep(Duration::from_millis(500));
        assert!(t.find(&h).is_some(), "a request keeps it alive");
        std::thread::sleep(Duration::from_millis(600));
        assert!(t.find(&h).is_some(), "1 s after the last request only");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(t.find(&h), None, "idle too long");
    }

    #[test]
    fn cookies_have_the_flags() {
        let c = set_cookie("ab", true, Duration::from_secs(3600));
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/ui",
            "Secure",
            "Max-Age=3600",
        ] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!set_cookie("ab", false, Duration::from_secs(1)).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn csrf_needs_the_token_and_the_same_site() {
        let s = Sessions::new(Duration::from_secs(60)).start("alice");
        let host = &["mirror.example:5000"][..];
        let same = headers(&[
            ("origin", "https://mirror.example:5000"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check_post(&same, host, &s, Some(&s.csrf)), Ok(()));
        assert!(check_post(&same, host, &s, None).is_err());
        assert!(check_post(&same, host, &s, Some("0")).is_err());
        let mut wrong = s.csrf.clone();
        wrong.replace_range(0..1, if wrong.starts_with('a') { "b" } else { "a" });
        assert!(check_post(&same, host, &s, Some(&wrong)).is_err());
        let cross = headers(&[("origin", "https://evil.example")]);
        assert!(check_post(&cross, host, &s, Some(&s.csrf)).is_err());
        let site = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check_post(&site, host, &s, Some(&s.csrf)).is_err());
        let null = headers(&[("origin", "null")]);
        assert!(check_post(&null, host, &s, Some(&s.csrf)).is_err());
        assert_eq!(
            check_post(&HeaderMap::new(), host, &s, Some(&s.csrf)),
            Ok(())
        );
    }
}
