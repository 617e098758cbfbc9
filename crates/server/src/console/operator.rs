//! The operator pages' shared parts (the login guard, actions with their CSRF check, notices)
//! and the cache browser (evict a repository). Top users and bans are in [`super::people`],
//! sync runs and the configuration in [`super::running`]. Every action is a POST form
//! carrying the session's CSRF token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, header};
use maud::{Markup, html};

use super::api;
use super::auth::{Operator, check_action, operator};
use super::layout::{Nav, ago, bytes, csrf_field, page, problem, respond};
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

pub(super) fn nav<'a>(app: &App, op: Option<&'a Operator>, here: &'a str) -> Nav<'a> {
    Nav {
        public: app.console.config().ui.public,
        operator: op,
        here,
    }
}

pub(super) fn query(parts: &Parts) -> HashMap<String, String> {
    url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// An action: the operator, the form, after the CSRF check.
pub(super) async fn action(
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

pub(super) fn notice(q: &HashMap<String, String>) -> Markup {
    html! {
        @if let Some(m) = q.get("done") { p class="ok" role="status" { (m) } }
        @if let Some(m) = q.get("error") { p class="problem" role="alert" { (m) } }
    }
}

pub(super) fn encoded(s: &str) -> String {
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
