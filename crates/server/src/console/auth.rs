//! Who is using the console: an operator logged in through the form (a session cookie), or
//! an admin API caller (admin bearer token, or Basic credentials of an admin user) reading a
//! page or JSON. Actions (POST) from the console's forms need a session and its CSRF token.

use http::HeaderMap;
use http::request::Parts;

use super::session::{self, Session};
use crate::error::ApiError;
use crate::{App, peer_ip, request_host};

/// An operator allowed in.
#[derive(Debug, Clone)]
pub enum Operator {
    /// Logged in through the console's form.
    Session(Session),
    /// An admin API caller (`token` or the user name).
    Header(String),
}

impl Operator {
    /// Who it is.
    pub fn user(&self) -> &str {
        match self {
            Operator::Session(s) => &s.user,
            Operator::Header(u) => u,
        }
    }

    /// The session, when logged in through the form.
    pub fn session(&self) -> Option<&Session> {
        match self {
            Operator::Session(s) => Some(s),
            Operator::Header(_) => None,
        }
    }
}

/// Checks an operator: a live session cookie, else the admin API's credentials.
/// Anonymous callers get 401, users who are no admin 403.
pub async fn operator(app: &App, req: &Parts) -> Result<Operator, ApiError> {
    if let Some(s) = app.console.sessions.find(&req.headers) {
        return Ok(Operator::Session(s));
    }
    let ip = app.access.client_ip(peer_ip(req), &req.headers);
    match app.access.admin(ip, &req.headers).await {
        Ok(who) => Ok(Operator::Header(who)),
        Err(d) => {
            tracing::info!(subject = %d.subject, path = %req.uri.path(), "console refused");
            Err(d.into())
        }
    }
}

/// The hosts this server is reached at, for the `Origin` check: the request's host and the
/// external URL's.
pub fn own_hosts(app: &App, req: &Parts) -> Vec<String> {
    let mut hosts: Vec<String> = request_host(req).into_iter().collect();
    if let Some(ext) = &app.external_url
        && let Some((_, rest)) = ext.split_once("://")
    {
        hosts.push(rest.split('/').next().unwrap_or_default().to_owned());
    }
    hosts
}

/// The CSRF check of an action: a same-site request from a session, with its token (the
/// form field `csrf`, or the `X-CSRF-Token` header of a script).
pub fn check_action(
    app: &App,
    req: &Parts,
    op: &Operator,
    form_token: Option<&str>,
) -> Result<(), String> {
    let Some(s) = op.session() else {
        // Admin API credentials (a script): still refuse a cross-site browser request, since
        // browsers resend cached Basic credentials.
        return cross_site(app, req).map_err(str::to_owned);
    };
    let hosts = own_hosts(app, req);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let token = form_token.or_else(|| header(&req.headers, "x-csrf-token"));
    session::check_post(&req.headers, &hosts, s, token).map_err(|e| {
        tracing::warn!(user = %s.user, path = %req.uri.path(), reason = e, "console action refused (CSRF)");
        e.to_owned()
    })
}

/// Refuses a browser request from another site.
pub fn cross_site(app: &App, req: &Parts) -> Result<(), &'static str> {
    let hosts = own_hosts(app, req);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    session::check_origin(&req.headers, &hosts)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether cookies must be `Secure`: TLS, or an `https://` external URL (a TLS proxy).
pub fn secure_cookies(app: &App) -> bool {
    app.tls
        || app
            .external_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}
