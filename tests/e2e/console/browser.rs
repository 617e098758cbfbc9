//! The console in a real headless Chromium (Debian's, through chromedriver): every page
//! opens, the operator logs in through the form, evicts a cached image, lifts a ban and
//! reloads the configuration; the overview's charts draw lines from real pulls through
//! ferry. A screenshot of each page goes to `target/test-output/console/<page>.png`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ADMIN_TOKEN, ALICE, console_ferry, get};
use crate::support::http::raw_request;
use crate::support::webdriver::{Browser, browser_available, test_output};
use crate::support::*;

/// WebDriver's Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// The points of an SVG path's `d` (`M1,2 L3,4 ...`).
fn points(d: &str) -> Vec<(f64, f64)> {
    d.split_whitespace()
        .filter_map(|p| p.get(1..)?.split_once(','))
        .filter_map(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
        .collect()
}

/// Three requests by bob from one address for a repository the rule watches: a ban.
fn get_banned(ferry: &Ferry, ip: &str) {
    let bob = super::basic(super::BOB);
    for _ in 0..3 {
        let _ = raw_request(
            &ferry.host(),
            "GET",
            "/v2/library/banme/manifests/1",
            &[("X-Forwarded-For", ip), ("Authorization", &bob)],
            &[],
        );
    }
}

/// Waits until the page shows `text` (a click may still be loading the next page).
fn wait_text(b: &Browser, text: &str) {
    let start = std::time::Instant::now();
    while !b.source().contains(text) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {text:?} in {}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(ferry: &Ferry, path: &str) -> Value {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    serde_json::from_slice(&get(ferry, path, &[("Authorization", &bearer)]).body).unwrap()
}

#[test]
fn console_in_a_real_browser_logs_in_evicts_lifts_a_ban_and_reloads() {
    if !browser_available() {
        panic!("chromium and chromedriver are needed (scripts/install-test-deps.sh)");
    }
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let rules = json!([{"name": "ban-banme", "per": "client", "window": "1m", "requests": 2,
        "action": "ban", "duration": "10m", "repositories": ["docker.io/library/banme"],
        "message": "too many pulls of banme"}]);
    let ferry = console_ferry(&upstream)
        .set("access.trusted_proxies", json!(["127.0.0.1"]))
        .set("access.rules", rules)
        .start();
    assert_pulls_back(
        &format!("docker://{}/docker.io/library/hello:1", ferry.host()),
        &image,
    );
    // Again: now from the cache (hits).
    assert_pulls_back(
        &format!("docker://{}/docker.io/library/hello:1", ferry.host()),
        &image,
    );
    get_banned(&ferry, "203.0.113.9");
    let bans = json_of(&ferry, "/admin/v1/bans");
    assert_eq!(bans["bans"].as_array().unwrap().len(), 1, "{bans}");
    let banned = bans["bans"][0]["subject"].as_str().unwrap().to_owned();
    let refused = bans["refused"].as_object().unwrap();
    assert!(refused.values().any(|n| n.as_u64() >= Some(1)), "{bans}");
    wait_until(
        Duration::from_secs(20),
        "the sampler to count the pull",
        || {
            let v = json_of(&ferry, "/admin/v1/series?window=1h");
            v["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["upstream_bytes"].as_u64() > Some(0))
        },
    );

    let out = test_output("console");
    let shot = |b: &Browser, name: &str| b.screenshot(&out.join(format!("{name}.png")));
    let base = ferry.base_url();
    let b = Browser::start(1280, 1000);

    // Public pages.
    b.open(&format!("{base}/ui/"));
    let home = b.source();
    assert!(
        home.contains("registry-mirrors") && home.contains(&base),
        "home page"
    );
    assert_eq!(
        b.script("return document.querySelectorAll('pre').length")
            .as_u64(),
        Some(5)
    );
    // The script shows the copy buttons (they stay hidden without it); a click copies or
    // says to copy by hand.
    let shown = b.script(
        "return [...document.querySelectorAll('button.copy')].filter(x => !x.hidden).length",
    );
    assert_eq!(shown.as_u64(), Some(5), "copy buttons");
    b.click("button[data-copy='cfg-0']");
    std::thread::sleep(Duration::from_millis(300));
    let label =
        b.script("return document.querySelector(\"button[data-copy='cfg-0']\").textContent");
    assert!(
        label == json!("Copied") || label == json!("Select and copy by hand"),
        "{label}"
    );
    shot(&b, "home");
    b.open(&format!("{base}/ui/registries"));
    assert!(b.source().contains("ghcr.example"));
    shot(&b, "registries");
    b.open(&format!("{base}/ui/images"));
    b.type_into("#q", "library/nginx:1.25");
    b.click("form[role=search] button");
    wait_text(&b, "docker.io/library/nginx is served");
    assert!(b.url().contains("/ui/images?q="), "a GET form: {}", b.url());
    shot(&b, "images");

    // Login, with the keyboard: the skip link is the first Tab stop and Tab goes on to the
    // navigation; in the form, Tab goes from the user to the password, Enter submits.
    b.open(&format!("{base}/ui/admin/"));
    assert!(b.source().contains("Operator login"));
    shot(&b, "login");
    let first = b.script(
        "return [...document.querySelectorAll('a[href], button:not([hidden]), input')][0].textContent",
    );
    assert_eq!(first, json!("Skip to content"), "the first Tab stop");
    b.script("document.querySelector('a.skip').focus(); return null");
    b.press(TAB);
    let next = b.script("return document.activeElement.textContent");
    assert_eq!(
        next,
        json!("Use this mirror"),
        "Tab goes on to the navigation"
    );
    b.script("document.getElementById('user').focus(); return null");
    b.press(&format!("{}{TAB}{}{ENTER}", ALICE.0, ALICE.1));
    wait_text(&b, "chart-traffic");
    assert!(b.url().ends_with("/ui/admin/"), "{}", b.url());

    // Overview: charts with lines from the pulls.
    let d = b.script("return document.querySelector('#chart-traffic path.line').getAttribute('d')");
    let p = points(d.as_str().expect("a traffic line"));
    assert_eq!(p.len(), 60, "one point a minute");
    let floor = p.iter().map(|q| q.1).fold(f64::MIN, f64::max);
    assert!(p.iter().any(|q| q.1 < floor), "a non-zero point: {d}");
    let req =
        b.script("return document.querySelector('#chart-requests path.line').getAttribute('d')");
    assert!(
        points(req.as_str().unwrap()).iter().any(|q| q.1 < floor),
        "requests drawn: {req}"
    );
    assert_eq!(
        b.script("return document.querySelectorAll('svg.chart').length")
            .as_u64(),
        Some(4)
    );
    shot(&b, "overview");
    b.open(&format!("{base}/ui/admin/?window=7d"));
    shot(&b, "overview-7d");

    // Cache: evict the pulled image.
    b.open(&format!("{base}/ui/admin/cache"));
    assert!(b.source().contains("library/hello"));
    shot(&b, "cache");
    b.click("button[aria-label='Evict docker.io/library/hello']");
    wait_text(&b, "Evicted docker.io/library/hello");
    shot(&b, "cache-evicted");
    let cache = json_of(&ferry, "/admin/v1/cache");
    assert!(
        cache["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["repository"] != "library/hello")
    );

    // Bans: lift the one set above.
    b.open(&format!("{base}/ui/admin/bans"));
    assert!(b.source().contains(&banned));
    shot(&b, "bans");
    b.click(&format!("button[aria-label='Lift {banned}']"));
    wait_text(&b, &format!("Lifted {banned}"));
    assert!(
        json_of(&ferry, "/admin/v1/bans")["bans"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Usage, syncs, config and reload.
    b.open(&format!("{base}/ui/admin/usage"));
    assert!(
        b.source().contains("203.0.113.9"),
        "the banned client is a top client"
    );
    shot(&b, "usage");
    b.open(&format!("{base}/ui/admin/syncs"));
    shot(&b, "syncs");
    b.open(&format!("{base}/ui/admin/config"));
    assert!(!b.source().contains(ADMIN_TOKEN));
    shot(&b, "config");
    b.click("form[action='/ui/admin/reload'] button");
    wait_text(&b, "Configuration reloaded.");
    assert!(ferry.log().contains("configuration reloaded"));

    // Narrow screens: one column, nothing wider than the window.
    b.resize(390, 844);
    b.open(&format!("{base}/ui/"));
    shot(&b, "home-narrow");
    let wide = b.script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
         document.documentElement.clientWidth + 1).map(e => e.tagName + '.' + e.className).slice(0, 5)",
    );
    assert_eq!(wide, json!([]), "no element wider than a narrow window");
    b.open(&format!("{base}/ui/admin/"));
    shot(&b, "overview-narrow");

    // Logout.
    b.click("form[action='/ui/logout'] button");
    wait_text(&b, "autocomplete=\"current-password\"");
    b.open(&format!("{base}/ui/admin/"));
    assert!(b.source().contains("Log in as an operator"));
}
