//! Who uses the mirror: the top clients, users and images (usage accounting), and the bans
//! and slow-downs in force (lift one), with the requests refused since start by reason.

use std::time::Duration;

use ferry_access::usage::Dimension;
use ferry_access::usage::topk::Order;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::layout::{bytes, csrf_field, page, problem, respond};
use super::operator::{action, encoded, guard, nav, notice, query, see_other};
use super::sampler::unix_now;
use crate::App;

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
