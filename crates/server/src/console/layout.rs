//! The page shell (header, navigation, logout form), the stylesheet and the copy-button
//! script, all embedded in the binary; and the headers every console page carries.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use maud::{DOCTYPE, Markup, html};

use super::auth::Operator;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/copy.js");

/// What the navigation shows.
#[derive(Debug, Clone, Copy)]
pub struct Nav<'a> {
    /// Whether the public pages exist (`ui.public`).
    pub public: bool,
    /// The operator, when one is allowed in.
    pub operator: Option<&'a Operator>,
    /// The path of this page (marked as current).
    pub here: &'a str,
}

const PUBLIC_LINKS: [(&str, &str); 3] = [
    ("/ui/", "Use this mirror"),
    ("/ui/registries", "Registries"),
    ("/ui/images", "Images"),
];

const ADMIN_LINKS: [(&str, &str); 6] = [
    ("/ui/admin/", "Overview"),
    ("/ui/admin/cache", "Cache"),
    ("/ui/admin/usage", "Top users"),
    ("/ui/admin/bans", "Bans"),
    ("/ui/admin/syncs", "Syncs"),
    ("/ui/admin/config", "Configuration"),
];

fn links(nav: &Nav, list: &[(&'static str, &'static str)]) -> Markup {
    html! {
        @for (href, label) in list {
            a href=(href) aria-current=[(nav.here == *href).then_some("page")] { (label) }
        }
    }
}

/// A whole page.
pub fn page(nav: &Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ferry" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/copy.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    span class="brand" { "ferry" }
                    nav aria-label="Pages" {
                        @if nav.public { (links(nav, &PUBLIC_LINKS)) }
                        @if nav.operator.is_some() { (links(nav, &ADMIN_LINKS)) }
                    }
                    (account(nav))
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn account(nav: &Nav) -> Markup {
    html! {
        div class="account" {
            @match nav.operator {
                Some(Operator::Session(s)) => {
                    span { (s.user) }
                    form method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                Some(Operator::Header(u)) => { span { (u) } }
                None => { a href="/ui/login" { "Operator login" } }
            }
        }
    }
}

/// The hidden CSRF field of a form (empty without a session: such a POST is refused).
pub fn csrf_field(op: &Operator) -> Markup {
    html! {
        @if let Some(s) = op.session() {
            input type="hidden" name="csrf" value=(s.csrf);
        }
    }
}

/// A `<pre>` with a copy button (the button appears only when the script runs).
pub fn copyable(id: &str, text: &str) -> Markup {
    html! {
        div class="copyable" {
            button type="button" class="copy" data-copy=(id) hidden { "Copy" }
            pre id=(id) tabindex="0" { (text) }
        }
    }
}

/// The headers of every console page: HTML, never cached, never framed, nothing loaded
/// from elsewhere.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A short page that says what went wrong.
pub fn problem(nav: &Nav, status: StatusCode, title: &str, detail: &str) -> Response {
    let body = html! { p class="problem" role="alert" { (detail) } };
    respond(status, page(nav, title, body))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/assets/console.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /ui/assets/copy.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long ago Unix second `t` was, for people: `3m ago`.
pub fn ago(t: u64, now: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..60 => format!("{d}s ago"),
        60..3600 => format!("{}m ago", d / 60),
        3600..86400 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_units() {
        assert_eq!(bytes(17), "17 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(ago(100, 130), "30s ago");
        assert_eq!(ago(0, 7200), "2h ago");
    }

    /// A colour variable of the stylesheet's `:root` as sRGB.
    fn colour(name: &str) -> [f64; 3] {
        let at = CSS
            .find(&format!("--{name}: #"))
            .unwrap_or_else(|| panic!("--{name}"));
        let hex = &CSS[at + name.len() + 5..at + name.len() + 11];
        let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f64 / 255.0;
        [c(0), c(2), c(4)]
    }

    /// WCAG 2 relative luminance and contrast ratio.
    fn contrast(a: [f64; 3], b: [f64; 3]) -> f64 {
        let lum = |c: [f64; 3]| {
            let l = |v: f64| {
                if v <= 0.03928 {
                    v / 12.92
                } else {
                    ((v + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * l(c[0]) + 0.7152 * l(c[1]) + 0.0722 * l(c[2])
        };
        let (x, y) = (lum(a) + 0.05, lum(b) + 0.05);
        x.max(y) / x.min(y)
    }

    #[test]
    fn text_colours_meet_wcag_aa_contrast() {
        let white = [1.0; 3];
        for (fg, bg) in [
            ("fg", "bg"),
            ("fg", "panel"),
            ("muted", "bg"),
            ("muted", "panel"),
            ("accent", "bg"),
            ("accent", "panel"),
            ("bad", "bg"),
            ("ok", "bg"),
            ("s0", "panel"),
            ("s1", "panel"),
            ("s2", "panel"),
            ("s3", "panel"),
        ] {
            let r = contrast(colour(fg), colour(bg));
            assert!(r >= 4.5, "--{fg} on --{bg}: {r:.2}");
        }
        for bg in ["accent", "bad"] {
            let r = contrast(white, colour(bg));
            assert!(r >= 4.5, "white on --{bg}: {r:.2}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let nav = Nav {
            public: true,
            operator: None,
            here: "/ui/",
        };
        let p = page(&nav, "<script>x</script>", html! {}).into_string();
        assert!(p.contains("&lt;script&gt;x&lt;/script&gt;"), "{p}");
        assert!(p.contains("aria-current=\"page\""), "{p}");
        assert!(!p.contains("/ui/admin/cache"), "{p}");
    }
}
