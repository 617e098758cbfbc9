//! The console's data as JSON, under the admin API (`docs/access.md`, "The admin API"):
//!
//! - `GET /admin/v1/series?window=1h|24h|7d`: the time series behind the charts
//! - `GET /admin/v1/cache`: what the cache holds, per repository
//! - `DELETE /admin/v1/cache/<upstream>/<repository>`: evict a repository
//! - `GET /admin/v1/syncs`: the scheduled sync's recent runs
//! - `GET /admin/v1/config`: the running configuration, secrets redacted
//! - `POST /admin/v1/reload`: reload the configuration file (as SIGHUP does)
//! - `GET /admin/v1/upstreams`: the upstreams, aliases and health
//!
//! The same handlers answer under `/ui/admin/api/...` for the console's session cookie
//! (which is scoped to `/ui`); there, a DELETE or POST needs the session's token in
//! `X-CSRF-Token`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use ferry_metrics::series::Window;
use ferry_mirror::inspect::{self, Evicted, Inventory};
use ferry_oci::ErrorCode;
use http::StatusCode;
use http::request::Parts;
use serde_json::{Value, json};

use super::auth::{Operator, check_action, operator};
use super::redact::redacted;
use super::sampler::unix_now;
use crate::App;
use crate::error::ApiError;

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// An admin API caller; for a change (`mutating`), also the CSRF check.
async fn caller(app: &App, parts: &Parts, mutating: bool) -> Result<Operator, ApiError> {
    let op = operator(app, parts).await?;
    if mutating {
        check_action(app, parts, &op, None)
            .map_err(|e| ApiError::new(ErrorCode::Denied, format!("refused: {e}")))?;
    }
    Ok(op)
}

/// Runs `f` for an authorized caller.
async fn answer<F, Fut>(app: Arc<App>, req: Request, mutating: bool, f: F) -> Response
where
    F: FnOnce(Arc<App>, Parts, Operator) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let (parts, _) = req.into_parts();
    let run = async {
        let op = caller(&app, &parts, mutating).await?;
        f(app.clone(), parts, op).await
    };
    match run.await {
        Ok(v) => json_ok(v),
        Err(e) => e.into_response(),
    }
}

/// The cache's inventory.
pub async fn inventory(app: &App) -> Result<Inventory, ApiError> {
    inspect::scan(app.mirror.store().as_ref())
        .await
        .map_err(ApiError::from)
}

/// Evicts `<upstream>/<repository>`: its tag records and the blobs no other repository
/// uses.
pub async fn evict(app: &App, name: &str, by: &str) -> Result<Evicted, ApiError> {
    let (upstream, repo) = name
        .split_once('/')
        .ok_or_else(|| ApiError::bad_request("name: <upstream>/<repository>"))?;
    if !app.console.config().upstreams.contains_key(upstream) {
        return Err(ApiError::bad_request(format!(
            "{upstream:?} is not an upstream"
        )));
    }
    ferry_oci::RepoName::parse(repo)
        .map_err(|e| ApiError::bad_request(format!("repository {repo:?}: {e}")))?;
    let inv = inventory(app).await?;
    if !inv.repos.iter().any(|r| r.name == name) {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            format!("the cache holds no repository {name}"),
        ));
    }
    let e = inspect::evict_repositories(app.mirror.store().as_ref(), &inv, name, false).await?;
    for d in &e.blobs {
        app.mirror.index().remove(d);
    }
    tracing::info!(repository = %name, by, blobs = e.blobs.len(), bytes = e.bytes, tags = e.tags, "repository evicted");
    Ok(e)
}

/// `GET /admin/v1/series?window=1h|24h|7d`.
pub async fn series(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, false, |app, parts, _| async move {
        let w = match parts.uri.query() {
            None => Window::Hour,
            Some(_) => {
                let w = super::overview::window_of(parts.uri.query());
                let asked = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "window")
                    .map(|(_, v)| v.into_owned());
                if asked.as_deref().is_some_and(|a| Window::parse(a).is_none()) {
                    return Err(ApiError::bad_request("window: 1h, 24h or 7d"));
                }
                w
            }
        };
        let points = app.console.points(w, unix_now());
        Ok(json!({"window": w.as_str(), "step_secs": w.step(), "points": points}))
    })
    .await
}

/// `GET /admin/v1/cache`.
pub async fn cache(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, false, |app, _, _| async move {
        let inv = inventory(&app).await?;
        let repos: Vec<Value> = inv
            .repos
            .iter()
            .map(|r| {
                let (upstream, repository) = r.name.split_once('/').unwrap_or(("", &r.name));
                json!({"upstream": upstream, "repository": repository, "tags": r.tags,
                       "blobs": r.blobs.len(), "bytes": r.bytes, "last_served": unix(r.last_served)})
            })
            .collect();
        Ok(json!({"total_bytes": inv.total_bytes(), "unattributed_bytes": inv.unattributed_bytes(),
                  "blobs": inv.blobs.len(), "repositories": repos}))
    })
    .await
}

/// `DELETE /admin/v1/cache/<upstream>/<repository>`.
pub async fn evict_json(
    State(app): State<Arc<App>>,
    Path((upstream, repository)): Path<(String, String)>,
    req: Request,
) -> Response {
    answer(app, req, true, |app, _, op| async move {
        let name = format!("{upstream}/{repository}");
        let e = evict(&app, &name, op.user()).await?;
        Ok(json!({"evicted": name, "blobs": e.blobs.len(), "bytes": e.bytes, "tags": e.tags}))
    })
    .await
}

/// `GET /admin/v1/syncs`.
pub async fn syncs(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, false, |app, _, _| async move {
        let c = app.console.config();
        let scheduled = c.sync.as_ref().map(|s| {
            json!({"list": s.list.display().to_string(), "interval": s.interval.to_string(), "jobs": s.jobs})
        });
        Ok(json!({"scheduled": scheduled, "runs": app.console.syncs.list()}))
    })
    .await
}

/// `GET /admin/v1/config`.
pub async fn config(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, false, |app, _, _| async move {
        Ok(redacted(&app.console.config()))
    })
    .await
}

/// `POST /admin/v1/reload`.
pub async fn reload(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, true, |app, _, op| async move {
        tracing::info!(by = %op.user(), "configuration reload asked through the admin API");
        match app.console.reload().await {
            Ok(()) => Ok(json!({"reloaded": true})),
            Err(e) => Err(ApiError::bad_request(format!("not reloaded: {e}"))),
        }
    })
    .await
}

/// `GET /admin/v1/upstreams`.
pub async fn upstreams(State(app): State<Arc<App>>, req: Request) -> Response {
    answer(app, req, false, |app, _, _| async move {
        Ok(json!({"upstreams": super::public::upstream_rows(&app)}))
    })
    .await
}
