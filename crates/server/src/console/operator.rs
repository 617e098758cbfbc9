//! The operator pages besides the overview: the cache browser (evict a repository), top
//! clients, users and images, bans (lift one), the scheduled sync's runs, and the running
//! configuration (redacted) with a reload button. Every action is a POST form carrying the
//! session's CSRF token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ferry_access::usage::Dimension;
use ferry_access::usage::topk::Order;
use http::request::Parts;
use http::{StatusCode, header};
use maud::{Markup, html};

use super::api;
use super::auth::{Operator, check_action, operator};
use super::layout::{Nav, ago, bytes, copyable, csrf_field, page, problem, respond};
use super::login::{login_page, read_form};
use super::sampler::unix_now;
use crate::App;

/// The operator of an operator page, or the answer instead: the login form (401) for
/// anonymous callers, a 403 page for users who are no admin.
pub async fn guard(app: &App, parts: &Parts, here: &str) -> Result<Operator, Response> {
    match operator(app, parts).await {
        Ok(op) => Ok(op),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => Err(login_page(
            app,
            StatusCode::UNAUTHORIZED,
            Some(&format!("Log in as an operator to see {here}.")),
        )),
        Err(e) => {
            let nav = nav(app, None, here);
            Err(problem(&nav, e.status(), "Not allowed", e.message()))
        }
    }
}

fn nav<'a>(app: &App, op: Option<&'a Operator>, here: &'a str) -> Nav<'a> {
    Nav {
        public: app.console.config().ui.public,
        operator: op,
        here,
    }
}

fn query(parts: &Parts) -> HashMap<String, String> {
    url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// An action: the operator, the form, after the CSRF check.
async fn action(
    app: &App,
    req: Request,
    here: &str,
) -> Result<(Operator, HashMap<String, String>), Response> {
    let (parts, body) = req.into_parts();
    let op = guard(app, &parts, here).await?;
    let form = read_form(body).await.unwrap_or_default();
    if let Err(e) = check_action(app, &parts, &op, form.get("csrf").map(String::as_str)) {
        return Err(problem(
            &nav(app, Some(&op), here),
            StatusCode::FORBIDDEN,
            "Refused",
            &e,
        ));
    }
    if op.session().is_none() {
        let msg = "console forms need a console login (POST /ui/login)";
        return Err(problem(
            &nav(app, Some(&op), here),
            StatusCode::FORBIDDEN,
            "Refused",
            msg,
        ));
    }
    Ok((op, form))
}

fn notice(q: &HashMap<String, String>) -> Markup {
    html! {
        @if let Some(m) = q.get("done") { p class="ok" role="status" { (m) } }
        @if let Some(m) = q.get("error") { p class="problem" role="alert" { (m) } }
    }
}

fn encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /ui/admin/cache?q=`.
pub async fn cache(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let here = "/ui/admin/cache";
    let op = match guard(&app, &parts, here).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let q = query(&parts);
    let filter = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    let inv = match api::inventory(&app).await {
        Ok(i) => i,
        Err(e) => {
            return problem(
                &nav(&app, Some(&op), here),
                e.status(),
                "Cache",
                e.message(),
            );
        }
    };
    let now = unix_now();
    let rows: Vec<_> = inv
        .repos
        .iter()
        .filter(|r| r.name.contains(filter.as_str()))
        .collect();
    let body = html! {
        (notice(&q))
        p { (inv.repos.len()) " repositories, " (bytes(inv.total_bytes())) " stored ("
            (bytes(inv.unattributed_bytes())) " in blobs no tag reaches)." }
        form method="get" action=(here) role="search" {
            label for="q" { "Filter repositories" }
            input type="search" id="q" name="q" value=(filter);
            " " button type="submit" { "Filter" }
        }
        div class="table-wrap" { table {
            thead { tr { th { "Upstream" } th { "Repository" } th { "Tags" } th class="num" { "Size" } th { "Last served" } th { "Evict" } } }
            tbody {
                @for r in rows.iter().take(500) {
                    @let (upstream, repo) = r.name.split_once('/').unwrap_or(("", &r.name));
                    tr {
                        td { (upstream) } td { (repo) }
                        td { (r.tags.join(", ")) }
                        td class="num" { (bytes(r.bytes)) }
                        td { (ago(api::unix(r.last_served), now)) }
                        td { form method="post" action="/ui/admin/cache/evict" {
                            (csrf_field(&op))
                            input type="hidden" name="name" value=(r.name);
                            button type="submit" class="danger" aria-label=(format!("Evict {}", r.name)) { "Evict" }
                        } }
                    }
                }
            }
        } }
        @if rows.len() > 500 { p class="note" { "Showing 500 of " (rows.len()) "; filter to see the rest." } }
    };
    respond(
        StatusCode::OK,
        page(&nav(&app, Some(&op), here), "Cache", body),
    )
}

/// `POST /ui/admin/cache/evict` (`name=<upstream>/<repository>`).
pub async fn evict(State(app): State<Arc<App>>, req: Request) -> Response {
    let (op, form) = match action(&app, req, "/ui/admin/cache").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = form.get("name").cloned().unwrap_or_default();
    match api::evict(&app, &name, op.user()).await {
        Ok(e) => see_other(&format!(
            "/ui/admin/cache?done={}",
            encoded(&format!(
                "Evicted {name}: {} blobs, {}, {} tags.",
                e.blobs.len(),
                bytes(e.bytes),
                e.tags
            ))
        )),
        Err(e) => see_other(&format!("/ui/admin/cache?error={}", encoded(e.message()))),
    }
}

fn usage_table(title: &str, report: &ferry_access::usage::UsageReport) -> Markup {
    html! {
        h2 { (title) }
        div class="table-wrap" { table {
            thead { tr { th { "Who / what" } th class="num" { "Requests" } th class="num" { "Bytes" } th class="num" { "Errors" } } }
            tbody {
                @for r in &report.top {
                    tr { td { (r.key) } td class="num" { (r.counts.requests) } td class="num" { (bytes(r.counts.bytes)) } td class="num" { (r.counts.errors) } }
                }
                @if report.top.is_empty() { tr { td colspan="4" class="note" { "Nothing in this window." } } }
            }
        } }
    }
}

/// `GET /ui/admin/usage?window=24h`.
pub async fn usage(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let here = "/ui/admin/usage";
    let op = match guard(&app, &parts, here).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let q = query(&parts);
    let window = q.get("window").map_or("24h", String::as_str);
    let Ok(w) = ferry_access::usage::parse_window(window) else {
        return problem(
            &nav(&app, Some(&op), here),
            StatusCode::BAD_REQUEST,
            "Top users",
            "window: e.g. 1h, 24h, 7d",
        );
    };
    let mut tables = Vec::new();
    for (title, by) in [
        ("Clients", Dimension::Client),
        ("Users", Dimension::User),
        ("Images", Dimension::Repository),
    ] {
        tables.push(usage_table(
            title,
            &app.access.usage(by, w, 20, Order::Bytes).await,
        ));
    }
    let body = html! {
        nav class="windows" aria-label="Time span" {
            @for x in ["1h", "24h", "7d"] {
                a href=(format!("{here}?window={x}")) aria-current=[(x == window).then_some("page")] { "last " (x) }
            }
        }
        @for t in tables { (t) }
        p class="note" { "From usage accounting (" code { "ferry usage" } "); counts of the top keys may be overestimated, see docs/access.md." }
    };
    respond(
        StatusCode::OK,
        page(
            &nav(&app, Some(&op), here),
            "Top clients, users and images",
            body,
        ),
    )
}

/// `GET /ui/admin/bans`.
pub async fn bans(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let here = "/ui/admin/bans";
    let op = match guard(&app, &parts, here).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let q = query(&parts);
    let now = unix_now();
    let list = app.access.bans();
    let refused = app.metrics.totals.rejections();
    let body = html! {
        (notice(&q))
        div class="table-wrap" { table {
            thead { tr { th { "Subject" } th { "Action" } th { "Rule" } th { "Reason" } th { "Ends" } th { "Lift" } } }
            tbody {
                @for b in &list {
                    tr {
                        td { (b.subject) } td { (b.action) } td { (b.rule) } td { (b.reason) }
                        td { "in " (humantime::format_duration(Duration::from_secs(b.until.saturating_sub(now)))) }
                        td { form method="post" action="/ui/admin/bans/lift" {
                            (csrf_field(&op))
                            input type="hidden" name="subject" value=(b.subject);
                            button type="submit" aria-label=(format!("Lift {}", b.subject)) { "Lift" }
                        } }
                    }
                }
                @if list.is_empty() { tr { td colspan="6" class="note" { "No bans or slow-downs in force." } } }
            }
        } }
        p class="note" { "Bans and slow-downs are set by the fair-use rules (" code { "access.rules" } ")." }
        h2 { "Refused requests since start, by reason" }
        div class="table-wrap" { table {
            thead { tr { th { "Reason" } th class="num" { "Requests" } } }
            tbody {
                @for (reason, n) in &refused { tr { td { code { (reason) } } td class="num" { (n) } } }
                @if refused.is_empty() { tr { td colspan="2" class="note" { "None." } } }
            }
        } }
        p class="note" { "Quotas, lists, bans and budgets (see docs/access.md); login challenges are not counted." }
    };
    respond(
        StatusCode::OK,
        page(&nav(&app, Some(&op), here), "Bans and slow-downs", body),
    )
}

/// `POST /ui/admin/bans/lift` (`subject=...`).
pub async fn lift(State(app): State<Arc<App>>, req: Request) -> Response {
    let (op, form) = match action(&app, req, "/ui/admin/bans").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let subject = form.get("subject").cloned().unwrap_or_default();
    match app.access.lift(&subject).await {
        Some(s) => {
            tracing::info!(subject = %s, by = %op.user(), "ban lifted through the console");
            see_other(&format!(
                "/ui/admin/bans?done={}",
                encoded(&format!("Lifted {s}."))
            ))
        }
        None => see_other(&format!(
            "/ui/admin/bans?error={}",
            encoded(&format!("No ban of {subject}."))
        )),
    }
}

/// `GET /ui/admin/syncs`.
pub async fn syncs(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let here = "/ui/admin/syncs";
    let op = match guard(&app, &parts, here).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let runs = app.console.syncs.list();
    let now = unix_now();
    let scheduled = app.console.config().sync.clone();
    let body = html! {
        @match &scheduled {
            Some(s) => p { "The list " code { (s.list.display()) } " is synced every " (s.interval) " (" (s.jobs) " jobs)." },
            None => p class="note" { "No scheduled sync is configured (" code { "sync:" } ", docs/sync.md)." },
        }
        div class="table-wrap" { table {
            thead { tr { th { "Started" } th class="num" { "Took" } th class="num" { "Images" } th class="num" { "Failed" } th class="num" { "Fetched" } th { "Problems" } } }
            tbody {
                @for r in &runs {
                    tr {
                        td { (ago(r.started, now)) } td class="num" { (r.seconds) " s" }
                        td class="num" { (r.images) }
                        td class="num" { span class=(if r.failed > 0 { "failing" } else { "ok" }) { (r.failed) } }
                        td class="num" { (bytes(r.bytes_fetched)) }
                        td { @for e in &r.errors { div { (e) } } }
                    }
                }
                @if runs.is_empty() { tr { td colspan="6" class="note" { "No run since this server started." } } }
            }
        } }
    };
    respond(
        StatusCode::OK,
        page(&nav(&app, Some(&op), here), "Sync runs", body),
    )
}

/// `GET /ui/admin/config`.
pub async fn config(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let here = "/ui/admin/config";
    let op = match guard(&app, &parts, here).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let q = query(&parts);
    let shown = serde_json::to_string_pretty(&super::redact::redacted(&app.console.config()))
        .unwrap_or_default();
    let body = html! {
        (notice(&q))
        form method="post" action="/ui/admin/reload" {
            (csrf_field(&op))
            button type="submit" { "Reload the configuration file" }
            span class="note" { " (the same as SIGHUP: an invalid file is refused and the running configuration stays)" }
        }
        h2 { "Running configuration" }
        p class="note" { "Secrets (passwords, tokens, keys, URL passwords) are shown as ***." }
        (copyable("config", &shown))
    };
    respond(
        StatusCode::OK,
        page(&nav(&app, Some(&op), here), "Configuration", body),
    )
}

/// `POST /ui/admin/reload`.
pub async fn reload(State(app): State<Arc<App>>, req: Request) -> Response {
    let (op, _) = match action(&app, req, "/ui/admin/config").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    tracing::info!(by = %op.user(), "configuration reload asked through the console");
    match app.console.reload().await {
        Ok(()) => see_other(&format!(
            "/ui/admin/config?done={}",
            encoded("Configuration reloaded.")
        )),
        Err(e) => see_other(&format!(
            "/ui/admin/config?error={}",
            encoded(&format!("Not reloaded: {e}"))
        )),
    }
}
