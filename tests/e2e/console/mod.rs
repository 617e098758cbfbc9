//! The web console (docs/console.md) through the real `ferry serve`: admin pages and the
//! console's JSON refuse anonymous callers (401) and users who are no admin (403); the login
//! sets a strict session cookie and logout ends it; every action refuses a missing or wrong
//! CSRF token and a cross-site request; no page or JSON shows a secret of the config;
//! `ui.public: false` hides the public pages and `ui.enabled: false` the whole console; the
//! charts count real pulls and survive a restart (`data.rs`, with the public pages and the
//! JSON API's evict, reload and sync runs). `browser.rs` drives the pages in a real headless
//! Chromium.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::http::{RawResponse, raw_request};
use crate::support::*;

mod browser;
mod data;

const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";
const ALICE: (&str, &str) = ("alice", "wonderland-4711");
const BOB: (&str, &str) = ("bob", "builder-4711");

/// Secrets put into the config; none may appear in any page or JSON.
const SECRETS: [&str; 4] = [
    ADMIN_TOKEN,
    "upstream-password-7f3a9c",
    "token-signing-key-5d1e8b-0123456789abcdefghij",
    "account-password-c2b7e4",
];

/// Every operator page.
const ADMIN_PAGES: [&str; 6] = [
    "/ui/admin/",
    "/ui/admin/cache",
    "/ui/admin/usage",
    "/ui/admin/bans",
    "/ui/admin/syncs",
    "/ui/admin/config",
];

/// Every GET of the console's JSON (under /admin/v1 and /ui/admin/api).
const JSON_GETS: [&str; 6] = [
    "/series?window=1h",
    "/cache",
    "/syncs",
    "/config",
    "/upstreams",
    "/series?window=7d",
];

/// The public pages.
const PUBLIC_PAGES: [&str; 4] = ["/ui/", "/ui/registries", "/ui/images", "/ui/images?q=nginx"];

/// A ferry on `upstream` (as docker.io) with an admin (alice), a user (bob), an admin
/// token and secrets in its config.
fn console_ferry(upstream: &Registry) -> FerryBuilder {
    Ferry::builder()
        .upstream("docker.io", upstream)
        .upstream_with(
            "ghcr.io",
            "http://127.0.0.1:9",
            json!({"username": "ci", "password": SECRETS[1], "aliases": ["ghcr.example"],
                   "accounts": [{"username": "second", "password": SECRETS[3]}]}),
        )
        .set(
            "access",
            json!({
                "users": {"alice": {"password": ALICE.1, "admin": true},
                          "bob": {"password": BOB.1}},
                "anonymous": true,
                "token": {"key": SECRETS[2]},
                "admin": {"tokens": [ADMIN_TOKEN]},
            }),
        )
}

fn basic((user, password): (&str, &str)) -> String {
    let c = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {c}")
}

fn call(
    ferry: &Ferry,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    raw_request(&ferry.host(), method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn get(ferry: &Ferry, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    call(ferry, "GET", path, headers, &[])
}

/// A logged-in console session.
#[derive(Debug, Clone)]
struct Session {
    /// `ferry_console=<id>` for the Cookie header.
    cookie: String,
    /// The whole Set-Cookie value.
    set_cookie: String,
    /// The session's CSRF token.
    csrf: String,
}

impl Session {
    fn headers(&self) -> Vec<(&str, &str)> {
        vec![("Cookie", self.cookie.as_str())]
    }
}

fn form_post(ferry: &Ferry, path: &str, headers: &[(&str, &str)], form: &str) -> RawResponse {
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    call(ferry, "POST", path, &h, form.as_bytes())
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[start..start + 64].to_owned()
}

fn login(ferry: &Ferry, (user, password): (&str, &str)) -> Session {
    let r = form_post(
        ferry,
        "/ui/login",
        &[],
        &format!("user={user}&password={password}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/admin/"));
    let set_cookie = r.header("set-cookie").expect("a session cookie").to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = get(ferry, "/ui/admin/config", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200, "{}", page.text());
    Session {
        cookie,
        set_cookie,
        csrf: csrf_of(&page.text()),
    }
}

/// Anonymous callers get 401 and users who are no admin 403, on every operator page and
/// every JSON endpoint of the console; admins (Basic or token) get 200; a login form with a
/// wrong password is 401, with a user who is no admin 403.
#[test]
fn console_admin_pages_and_json_need_the_admin_role() {
    let ferry = console_ferry(&Registry::start()).start();
    let (alice, bob) = (basic(ALICE), basic(BOB));
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for page in ADMIN_PAGES {
        let anon = get(&ferry, page, &[]);
        assert_eq!(anon.status, 401, "{page}");
        assert!(
            anon.header("www-authenticate").is_none(),
            "{page}: no browser prompt"
        );
        assert!(
            anon.text().contains("action=\"/ui/login\""),
            "{page}: the login form"
        );
        assert_eq!(
            get(&ferry, page, &[("Authorization", &bob)]).status,
            403,
            "{page}"
        );
        assert_eq!(
            get(&ferry, page, &[("Authorization", &alice)]).status,
            200,
            "{page}"
        );
    }
    for prefix in ["/admin/v1", "/ui/admin/api"] {
        for path in JSON_GETS {
            let p = format!("{prefix}{path}");
            assert_eq!(get(&ferry, &p, &[]).status, 401, "{p}");
            assert_eq!(
                get(&ferry, &p, &[("Authorization", &bob)]).status,
                403,
                "{p}"
            );
            let ok = get(&ferry, &p, &[("Authorization", &bearer)]);
            assert_eq!(ok.status, 200, "{p}: {}", ok.text());
            serde_json::from_slice::<Value>(&ok.body).expect("JSON");
        }
        let p = format!("{prefix}/reload");
        assert_eq!(call(&ferry, "POST", &p, &[], &[]).status, 401, "{p}");
        let del = format!("{prefix}/cache/docker.io/library/hello");
        assert_eq!(
            call(&ferry, "DELETE", &del, &[("Authorization", &bob)], &[]).status,
            403
        );
    }
    let wrong = form_post(&ferry, "/ui/login", &[], "user=alice&password=nope");
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let not_admin = form_post(&ferry, "/ui/login", &[], "user=bob&password=builder-4711");
    assert_eq!(not_admin.status, 403);
    assert!(
        not_admin.text().contains("not an admin"),
        "{}",
        not_admin.text()
    );
    assert!(
        ferry.log().contains("console login refused"),
        "failed logins are logged"
    );
}

/// Failed console logins count against `access.quotas.failed_logins`: past the limit the
/// form answers 429, even with the right password.
#[test]
fn console_failed_logins_are_rate_limited() {
    let ferry = console_ferry(&Registry::start())
        .set("access.quotas.failed_logins", "3/1m")
        .start();
    for _ in 0..3 {
        assert_eq!(
            form_post(&ferry, "/ui/login", &[], "user=alice&password=guess").status,
            401
        );
    }
    let limited = form_post(
        &ferry,
        "/ui/login",
        &[],
        "user=alice&password=wonderland-4711",
    );
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(
        limited.text().contains("too many failed logins"),
        "{}",
        limited.text()
    );
    assert!(limited.header("set-cookie").is_none());
}

/// The login sets an HttpOnly, SameSite=Strict cookie for /ui; the session opens every
/// operator page and the console's JSON under /ui/admin/api; logout ends it.
#[test]
fn console_login_sets_a_strict_cookie_and_logout_ends_it() {
    let ferry = console_ferry(&Registry::start()).start();
    let s = login(&ferry, ALICE);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(s.set_cookie.contains(flag), "{}", s.set_cookie);
    }
    assert!(
        !s.set_cookie.contains("Secure"),
        "plain http, no external https URL"
    );
    let id = s.cookie.trim_start_matches("ferry_console=");
    assert_eq!(id.len(), 64, "256 random bits");
    for page in ADMIN_PAGES {
        let r = get(&ferry, page, &s.headers());
        assert_eq!(r.status, 200, "{page}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(
            r.header("content-security-policy")
                .is_some_and(|c| c.contains("default-src 'none'"))
        );
    }
    assert_eq!(
        get(&ferry, "/ui/admin/api/series", &s.headers()).status,
        200
    );
    let out = form_post(
        &ferry,
        "/ui/logout",
        &s.headers(),
        &format!("csrf={}", s.csrf),
    );
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    assert_eq!(get(&ferry, "/ui/admin/", &s.headers()).status, 401);
    // A forged cookie is nobody.
    let forged = format!("ferry_console={}", "ab".repeat(32));
    assert_eq!(
        get(&ferry, "/ui/admin/", &[("Cookie", &forged)]).status,
        401
    );
}

/// With an https external URL, the cookie is Secure.
#[test]
fn console_cookie_is_secure_behind_an_https_external_url() {
    let ferry = console_ferry(&Registry::start())
        .set("server.external_url", "https://mirror.example")
        .start();
    let r = form_post(
        &ferry,
        "/ui/login",
        &[],
        "user=alice&password=wonderland-4711",
    );
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("; Secure")),
        "{:?}",
        r.headers
    );
    let home = get(&ferry, "/ui/", &[]).text();
    assert!(
        home.contains("https://mirror.example"),
        "the external URL in the client configs"
    );
}

/// Every action refuses a missing or wrong CSRF token and a cross-site request (Origin or
/// Sec-Fetch-Site), and works with the session's token; the login form refuses a cross-site
/// post; the JSON API under /ui refuses a change without X-CSRF-Token.
#[test]
fn console_actions_refuse_a_missing_or_wrong_csrf_token_and_cross_site_requests() {
    let ferry = console_ferry(&Registry::start()).start();
    let s = login(&ferry, ALICE);
    let cookie = s.cookie.as_str();
    for action in [
        "/ui/admin/reload",
        "/ui/admin/bans/lift",
        "/ui/admin/cache/evict",
        "/ui/logout",
    ] {
        let none = form_post(&ferry, action, &[("Cookie", cookie)], "subject=x");
        assert_eq!(
            none.status,
            403,
            "{action} without a token: {}",
            none.text()
        );
        let wrong = form_post(
            &ferry,
            action,
            &[("Cookie", cookie)],
            &format!("csrf={}", "0".repeat(64)),
        );
        assert_eq!(wrong.status, 403, "{action} with a wrong token");
        let good = format!("csrf={}", s.csrf);
        let evil = form_post(
            &ferry,
            action,
            &[("Cookie", cookie), ("Origin", "http://evil.example")],
            &good,
        );
        assert_eq!(evil.status, 403, "{action} from another origin");
        let site = form_post(
            &ferry,
            action,
            &[("Cookie", cookie), ("Sec-Fetch-Site", "cross-site")],
            &good,
        );
        assert_eq!(site.status, 403, "{action} from another site");
    }
    let origin = format!("http://{}", ferry.host());
    let ok = form_post(
        &ferry,
        "/ui/admin/reload",
        &[
            ("Cookie", cookie),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &format!("csrf={}", s.csrf),
    );
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert!(
        ok.header("location").unwrap().contains("done="),
        "{:?}",
        ok.header("location")
    );
    let login_cross = form_post(
        &ferry,
        "/ui/login",
        &[("Origin", "http://evil.example")],
        "user=alice&password=wonderland-4711",
    );
    assert_eq!(login_cross.status, 403);
    assert!(login_cross.header("set-cookie").is_none());
    let del = call(
        &ferry,
        "POST",
        "/ui/admin/api/reload",
        &[("Cookie", cookie)],
        &[],
    );
    assert_eq!(del.status, 403, "{}", del.text());
    let with = call(
        &ferry,
        "POST",
        "/ui/admin/api/reload",
        &[("Cookie", cookie), ("X-CSRF-Token", &s.csrf)],
        &[],
    );
    assert_eq!(with.status, 200, "{}", with.text());
    assert!(ferry.log().contains("(CSRF)"), "refusals are logged");
}

/// No page and no JSON shows a secret of the config (upstream and account passwords, the
/// token signing key, the admin token), nor a user's password.
#[test]
fn console_never_shows_a_secret() {
    let ferry = console_ferry(&Registry::start()).start();
    let s = login(&ferry, ALICE);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let mut seen = Vec::new();
    for page in ADMIN_PAGES.iter().chain(PUBLIC_PAGES.iter()) {
        seen.push((page.to_string(), get(&ferry, page, &s.headers())));
    }
    for prefix in ["/admin/v1", "/ui/admin/api"] {
        for path in JSON_GETS.iter().chain(["/usage", "/bans"].iter()) {
            let p = format!("{prefix}{path}");
            seen.push((
                p.clone(),
                get(
                    &ferry,
                    &p,
                    &[("Authorization", &bearer), ("Cookie", &s.cookie)],
                ),
            ));
        }
    }
    for (path, r) in &seen {
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let text = r.text();
        for secret in SECRETS.iter().chain([&ALICE.1, &BOB.1]) {
            assert!(!text.contains(secret), "{path} shows {secret}");
        }
    }
    let config: Value = serde_json::from_slice(
        &get(&ferry, "/admin/v1/config", &[("Authorization", &bearer)]).body,
    )
    .unwrap();
    assert_eq!(config["upstreams"]["ghcr.io"]["password"], "***");
    assert_eq!(config["upstreams"]["ghcr.io"]["username"], "ci");
    assert_eq!(config["access"]["admin"]["tokens"][0], "***");
}

/// `ui.public: false` hides the public pages (the operator pages stay); `ui.enabled: false`
/// removes the console.
#[test]
fn console_public_pages_can_be_hidden_and_the_console_turned_off() {
    let upstream = Registry::start();
    let ferry = console_ferry(&upstream).set("ui.public", false).start();
    assert_eq!(get(&ferry, "/ui/registries", &[]).status, 404);
    assert_eq!(get(&ferry, "/ui/images?q=nginx", &[]).status, 404);
    let home = get(&ferry, "/ui/", &[]);
    assert_eq!(
        (home.status, home.header("location")),
        (303, Some("/ui/admin/"))
    );
    assert_eq!(
        get(&ferry, "/ui/admin/", &[("Authorization", &basic(ALICE))]).status,
        200
    );
    let s = login(&ferry, ALICE);
    assert!(
        !get(&ferry, "/ui/admin/", &s.headers())
            .text()
            .contains("href=\"/ui/registries\"")
    );
    let off = console_ferry(&upstream).set("ui.enabled", false).start();
    for p in [
        "/ui/",
        "/ui/login",
        "/ui/admin/",
        "/ui/assets/console.css",
        "/ui/admin/api/series",
    ] {
        assert_eq!(
            get(&off, p, &[("Authorization", &basic(ALICE))]).status,
            404,
            "{p}"
        );
    }
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let api = get(&off, "/admin/v1/series", &[("Authorization", &bearer)]);
    assert_eq!(api.status, 200, "the admin API stays");
    let public = console_ferry(&upstream).start();
    for p in PUBLIC_PAGES {
        assert_eq!(get(&public, p, &[]).status, 200, "{p}");
    }
}
