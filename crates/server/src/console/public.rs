//! The public pages (`ui.public`, on by default): how to use this mirror (the configuration
//! `ferry client-config` prints, for this mirror's external URL), the mirrored registries with
//! their aliases and health, and, when repository lists are configured, the allowed images
//! with a search that says why a name is refused.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ferry_clientcfg::{Client, Target, Upstream, generate};
use http::request::Parts;
use http::{StatusCode, header};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::auth::Operator;
use super::layout::{Nav, ago, copyable, page, problem, respond};
use super::sampler::unix_now;
use crate::App;

/// The clients shown, with their headings.
const CLIENTS: [(Client, &str); 4] = [
    (Client::Docker, "Docker"),
    (
        Client::Containerd,
        "containerd (and Kubernetes nodes on containerd)",
    ),
    (Client::Podman, "Podman, Buildah, Skopeo"),
    (Client::Crio, "CRI-O"),
];

/// The public page's context: the operator if logged in (for the navigation), or the 404
/// when `ui.public` is off.
async fn public_page(app: &App, parts: &Parts) -> Result<Option<Operator>, Response> {
    if !app.console.config().ui.public {
        if parts.uri.path().trim_end_matches('/') == "/ui" {
            return Err((StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/admin/")]).into_response());
        }
        return Err(crate::error::ApiError::not_found().into_response());
    }
    // Only a session shows the operator links here; credentials are not asked for.
    Ok(app
        .console
        .sessions
        .find(&parts.headers)
        .map(Operator::Session))
}

fn nav<'a>(op: Option<&'a Operator>, here: &'a str) -> Nav<'a> {
    Nav {
        public: true,
        operator: op,
        here,
    }
}

/// The client-config target for this mirror at `base`.
fn target(app: &App, base: &str) -> Result<Target, String> {
    let c = app.console.config();
    let upstreams = c
        .upstreams
        .iter()
        .map(|(n, u)| Upstream::new(n.clone()).with_aliases(u.aliases.clone()));
    Target::new(base, upstreams, Some(c.default_upstream.as_str()))
        .and_then(|t| t.with_hosts(c.hosts.clone()))
        .map_err(|e| e.to_string())
}

/// The `ferry webhook` configuration pointing pods at this mirror.
fn webhook_config(base: &str) -> String {
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    format!(
        "# webhook.yaml for `ferry webhook` (docs/webhook.md): rewrites pod images to this mirror\n\
         mirror: {host}\n\
         mirror_health:\n  url: {base}/readyz\n"
    )
}

/// `GET /ui/`: use this mirror.
pub async fn home(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let op = match public_page(&app, &parts).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let base = app.base_url(&parts);
    let target = target(&app, &base);
    let body = html! {
        p { "This is a ferry registry mirror at " code { (base) } ". Point your container runtime at it; "
            "images are pulled through it and cached." }
        p { "Pull directly by naming the registry: " code { (base.split_once("://").map_or(base.as_str(), |(_, h)| h)) "/docker.io/library/alpine:3" } "." }
        @match &target {
            Err(e) => p class="problem" { "No client configuration: " (e) },
            Ok(t) => {
                @for (i, (client, title)) in CLIENTS.iter().enumerate() {
                    h2 { (title) }
                    (client_section(*client, t, i))
                }
            }
        }
        h2 { "Kubernetes admission webhook" }
        p { "When you cannot change the nodes, " code { "ferry webhook" } " rewrites pod images to this mirror:" }
        (copyable("cfg-webhook", &webhook_config(&base)))
        p class="note" { "The same files come from " code { "ferry client-config <client> --mirror " (base) } "." }
    };
    respond(
        StatusCode::OK,
        page(&nav(op.as_ref(), "/ui/"), "Use this mirror", body),
    )
}

fn client_section(client: Client, t: &Target, i: usize) -> Markup {
    match generate(client, t) {
        Err(e) => html! { p class="note" { (e.to_string()) } },
        Ok(out) => html! {
            (copyable(&format!("cfg-{i}"), &out.render()))
            @if !out.notes.is_empty() {
                details {
                    summary { "Where this goes, and notes (" (out.notes.len()) ")" }
                    ul class="note" { @for n in &out.notes { li { (n) } } }
                }
            }
        },
    }
}

/// The upstreams with aliases and health, for the registries page and the JSON.
pub fn upstream_rows(app: &App) -> Vec<Value> {
    let c = app.console.config();
    c.upstreams
        .iter()
        .map(|(name, u)| {
            let h = app.metrics.health.get(name);
            json!({"name": name, "aliases": u.aliases, "default": *name == c.default_upstream,
                   "health": h.state(), "last_success": h.last_success,
                   "last_failure": h.last_failure, "last_error": h.last_error,
                   "failures_in_a_row": h.failures_in_a_row})
        })
        .collect()
}

/// `GET /ui/registries`.
pub async fn registries(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let op = match public_page(&app, &parts).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let now = unix_now();
    let when = |v: &Value| v.as_u64().map_or("never".to_owned(), |t| ago(t, now));
    let rows = upstream_rows(&app);
    let body = html! {
        p { "The registries this mirror serves, by the name clients use, with what ferry saw of each in its own requests." }
        div class="table-wrap" { table {
            thead { tr { th { "Registry" } th { "Also known as" } th { "Health" } th { "Last answer" } th { "Last failure" } } }
            tbody {
                @for r in &rows {
                    tr {
                        td { (r["name"].as_str().unwrap_or_default()) @if r["default"] == true { " (default)" } }
                        td { (r["aliases"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                        td { span class=(r["health"].as_str().unwrap_or("unknown")) { (r["health"].as_str().unwrap_or("unknown")) } }
                        td { (when(&r["last_success"])) }
                        td { (when(&r["last_failure"])) @if let Some(e) = r["last_error"].as_str() { " (" (e) ")" } }
                    }
                }
            }
        } }
    };
    respond(
        StatusCode::OK,
        page(&nav(op.as_ref(), "/ui/registries"), "Registries", body),
    )
}

/// `nginx:1.25`, `ghcr.io/org/app@sha256:..` -> the name without tag or digest.
fn image_name(q: &str) -> &str {
    let q = q.trim().trim_start_matches("docker://");
    let q = q.split('@').next().unwrap_or(q);
    match q.rfind(':') {
        Some(i) if !q[i..].contains('/') => &q[..i],
        _ => q,
    }
}

/// `GET /ui/images?q=`.
pub async fn images(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let op = match public_page(&app, &parts).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let q = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    if q.len() > 300 {
        return problem(
            &nav(op.as_ref(), "/ui/images"),
            StatusCode::BAD_REQUEST,
            "Images",
            "that name is too long",
        );
    }
    let lists = app.access.repository_lists();
    let verdict = (!q.is_empty()).then(|| {
        let name = image_name(&q);
        match app.mirror.resolve(name, None, None) {
            Err(e) => Err(format!("{name} cannot be pulled here: {e}")),
            Ok(t) => {
                let full = format!("{}/{}", t.name, t.repo);
                app.access
                    .check_repository(&t.name, &t.repo.to_string())
                    .map(|()| full)
            }
        }
    });
    let matching: Vec<&String> = lists
        .allow
        .iter()
        .filter(|p| p.contains(image_name(&q)))
        .collect();
    let body = html! {
        form method="get" action="/ui/images" role="search" {
            label for="q" { "Is an image served here?" }
            input type="search" id="q" name="q" value=(q) placeholder="e.g. nginx:1.25 or ghcr.io/org/app";
            " " button type="submit" { "Check" }
        }
        @match &verdict {
            Some(Ok(full)) => p class="ok" role="status" { (full) " is served by this mirror." },
            Some(Err(why)) => p class="problem" role="status" { (why) },
            None => {},
        }
        @if lists.is_empty() {
            p { "Every image of the registries listed under " a href="/ui/registries" { "Registries" } " is served." }
        } @else {
            h2 { "Allowed images" }
            @if lists.allow.is_empty() {
                p { "Every image not denied below." }
            } @else {
                p class="note" { "Patterns over " code { "registry/repository" } ": " code { "*" } " within one path part, " code { "**" } " across parts." }
                ul { @for p in (if q.is_empty() { lists.allow.iter().collect() } else { matching.clone() }) { li { code { (p) } } } }
                @if !q.is_empty() && matching.is_empty() { p class="note" { "No allow pattern contains " code { (image_name(&q)) } "." } }
            }
            @if !lists.deny.is_empty() {
                h2 { "Not served" }
                ul { @for (p, why) in &lists.deny { li { code { (p) } @if !why.is_empty() { ": " (why) } } } }
            }
        }
    };
    respond(
        StatusCode::OK,
        page(&nav(op.as_ref(), "/ui/images"), "Images", body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_tags_and_digests() {
        assert_eq!(image_name("nginx:1.25"), "nginx");
        assert_eq!(image_name("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(image_name("ghcr.io/org/app@sha256:abc"), "ghcr.io/org/app");
        assert_eq!(image_name(" docker://quay.io/x/y:z "), "quay.io/x/y");
        let w = webhook_config("https://mirror.example");
        assert!(w.contains("mirror: mirror.example\n"), "{w}");
        assert!(w.contains("url: https://mirror.example/readyz"), "{w}");
    }
}
