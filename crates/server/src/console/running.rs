//! What the server runs: the scheduled sync's recent runs, and the running configuration
//! (redacted) with a reload button.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use maud::html;

use super::layout::{ago, bytes, copyable, csrf_field, page, respond};
use super::operator::{action, encoded, guard, nav, notice, query, see_other};
use super::sampler::unix_now;
use crate::App;

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
    let redacted = super::redact::redacted(&app.console.config());
    let shown = serde_saphyr::to_string(&redacted)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&redacted).unwrap_or_default());
    let body = html! {
        (notice(&q))
        form method="post" action="/ui/admin/reload" {
            (csrf_field(&op))
            button type="submit" { "Reload the configuration file" }
            span class="note" { " (the same as SIGHUP: an invalid file is refused and the running configuration stays)" }
        }
        h2 { "Running configuration" }
        p class="note" { "With every default filled in; as JSON: " a href="/ui/admin/api/config" { "/admin/v1/config" } "." }
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
