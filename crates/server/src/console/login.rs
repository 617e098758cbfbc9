//! `GET /ui/login` (the form), `POST /ui/login` (checks an admin user's password through
//! ferry-access, starts a session) and `POST /ui/logout`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use maud::{Markup, html};

use super::auth::{Operator, check_action, cross_site, operator, secure_cookies};
use super::layout::{Nav, page, problem, respond};
use super::session;
use crate::{App, peer_ip};

/// Largest form body read.
const MAX_FORM: usize = 16 * 1024;

/// Reads an `application/x-www-form-urlencoded` body.
pub async fn read_form(body: Body) -> Option<HashMap<String, String>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

fn nav<'a>(app: &App, op: Option<&'a Operator>) -> Nav<'a> {
    Nav {
        public: app.console.config().ui.public,
        operator: op,
        here: "/ui/login",
    }
}

/// The login form, with a message when a login failed.
pub fn login_page(app: &App, status: StatusCode, message: Option<&str>) -> Response {
    let body: Markup = html! {
        @if let Some(m) = message { p class="problem" role="alert" { (m) } }
        p { "Log in with a ferry user that has " code { "admin: true" } " in " code { "access.users" } "." }
        form method="post" action="/ui/login" {
            label for="user" { "User" }
            input type="text" id="user" name="user" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input type="password" id="password" name="password" autocomplete="current-password" required;
            p { button type="submit" { "Log in" } }
        }
    };
    respond(status, page(&nav(app, None), "Operator login", body))
}

/// `GET /ui/login`.
pub async fn form(State(app): State<Arc<App>>) -> Response {
    login_page(&app, StatusCode::OK, None)
}

/// `POST /ui/login`.
pub async fn submit(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = cross_site(&app, &parts) {
        tracing::warn!(reason = e, "console login refused (CSRF)");
        return login_page(&app, StatusCode::FORBIDDEN, Some(e));
    }
    let Some(form) = read_form(body).await else {
        return login_page(
            &app,
            StatusCode::BAD_REQUEST,
            Some("the form could not be read"),
        );
    };
    let user = form.get("user").map(String::as_str).unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    let ip = app.access.client_ip(peer_ip(&parts), &parts.headers);
    match app.access.admin_login(ip, user, password).await {
        Ok(who) => {
            let s = app.console.sessions.start(&who);
            tracing::info!(user = %who, client = %ip, "console login");
            let idle = app.console.config().ui.session_idle.0;
            let cookie = session::set_cookie(&s.id, secure_cookies(&app), idle);
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/ui/admin/".to_owned()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response()
        }
        Err(d) => {
            tracing::info!(client = %ip, user, reason = d.reason, "console login refused");
            let e = crate::error::ApiError::from(d);
            login_page(&app, e.status(), Some(e.message()))
        }
    }
}

/// `POST /ui/logout`.
pub async fn logout(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let form = read_form(body).await.unwrap_or_default();
    let op = match operator(&app, &parts).await {
        Ok(op @ Operator::Session(_)) => op,
        _ => {
            return login_page(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("you are not logged in"),
            );
        }
    };
    if let Err(e) = check_action(&app, &parts, &op, form.get("csrf").map(String::as_str)) {
        return problem(&nav(&app, Some(&op)), StatusCode::FORBIDDEN, "Refused", &e);
    }
    if let Some(s) = op.session() {
        app.console.sessions.end(&s.id);
        tracing::info!(user = %s.user, "console logout");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/login".to_owned()),
            (
                header::SET_COOKIE,
                session::clear_cookie(secure_cookies(&app)),
            ),
        ],
    )
        .into_response()
}
