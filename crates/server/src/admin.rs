//! The admin API on the serve port (`docs/access.md`, "The admin API"), for `ferry usage` and
//! `ferry bans`:
//! - `GET /admin/v1/usage?by=client|user|upstream|repository|blob&top=20&window=24h&order=bytes|requests`
//! - `GET /admin/v1/bans`
//! - `DELETE /admin/v1/bans/<subject or address>`
//!
//! Every call is authenticated ([`ferry_access::Access::admin`]): 401 with a challenge for
//! anonymous callers, 403 for users who are no admin.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use ferry_access::usage::topk::Order;
use ferry_access::usage::{Dimension, parse_window};
use http::StatusCode;
use http::request::Parts;
use serde_json::json;

use crate::App;
use crate::error::ApiError;

/// Longest `top`.
pub const MAX_TOP: usize = 1000;

/// Admin credentials, or the console's session (for a DELETE, with its CSRF token).
async fn authorize(app: &App, req: &Parts) -> Result<String, ApiError> {
    let op = crate::console::auth::operator(app, req).await?;
    if req.method != http::Method::GET {
        crate::console::auth::check_action(app, req, &op, None)
            .map_err(|e| ApiError::new(ferry_oci::ErrorCode::Denied, format!("refused: {e}")))?;
    }
    Ok(op.user().to_owned())
}

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The usage query's parameters.
struct UsageQuery {
    by: Dimension,
    top: usize,
    window: std::time::Duration,
    order: Order,
}

fn usage_query(q: Option<&str>) -> Result<UsageQuery, ApiError> {
    let mut out = UsageQuery {
        by: Dimension::Client,
        top: 20,
        window: std::time::Duration::from_secs(24 * 3600),
        order: Order::Bytes,
    };
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "by" => {
                out.by = Dimension::parse(&v).ok_or_else(|| {
                    ApiError::bad_request("by: client, user, upstream, repository or blob")
                })?
            }
            "top" => {
                out.top = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_TOP).contains(n))
                    .ok_or_else(|| ApiError::bad_request("top: a number from 1 to 1000"))?
            }
            "window" => out.window = parse_window(&v).map_err(ApiError::bad_request)?,
            "order" => {
                out.order = match v.as_ref() {
                    "bytes" => Order::Bytes,
                    "requests" => Order::Requests,
                    _ => return Err(ApiError::bad_request("order: bytes or requests")),
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `GET /admin/v1/usage`.
pub async fn usage(State(app): State<Arc<App>>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let run = async {
        authorize(&app, &req).await?;
        let q = usage_query(req.uri.query())?;
        let report = app.access.usage(q.by, q.window, q.top, q.order).await;
        Ok::<_, ApiError>(json_ok(json!(report)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /admin/v1/bans`.
pub async fn bans(State(app): State<Arc<App>>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    match authorize(&app, &req).await {
        Ok(_) => {
            let refused: serde_json::Map<String, serde_json::Value> = app
                .metrics
                .totals
                .rejections()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            json_ok(json!({ "bans": app.access.bans(), "refused": refused }))
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /admin/v1/bans/<subject>`.
pub async fn lift(
    State(app): State<Arc<App>>,
    Path(subject): Path<String>,
    req: Request,
) -> Response {
    let (req, _) = req.into_parts();
    let who = match authorize(&app, &req).await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    match app.access.lift(&subject).await {
        Some(s) => {
            tracing::info!(subject = %s, by = %who, "ban lifted through the admin API");
            json_ok(json!({ "lifted": s }))
        }
        None => ApiError::new(
            ferry_oci::ErrorCode::NameUnknown,
            format!("no ban or slow-down of {subject:?}"),
        )
        .into_response(),
    }
}
