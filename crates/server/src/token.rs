//! `/token` and `/auth/token`: ferry's own token service for `docker login` and friends
//! (GET with Basic credentials, as Docker and skopeo do; POST with an OAuth2 password form, as
//! containerd does). The work is done by `ferry-access`; this only adapts HTTP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ferry_metrics::ReasonLabels;
use http::{Method, StatusCode, header};

use crate::error::ApiError;
use crate::observe::RequestLog;
use crate::{App, peer_ip};

/// Largest token request body read.
const MAX_FORM: usize = 16 * 1024;

/// Longest time a token request body may take to arrive (the connection's head timeout does
/// not run while a request is in progress).
const FORM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The challenge of a refused token request: the token endpoint itself takes Basic.
const TOKEN_CHALLENGE: &str = "Basic realm=\"ferry\"";

/// The token endpoint handler.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ip = app.access.client_ip(peer_ip(&parts), &parts.headers);
    let log = RequestLog::new(
        app.metrics.clone(),
        ip,
        parts.method.clone(),
        parts.uri.path(),
        "token",
    );
    let result = if parts.method == Method::POST {
        match tokio::time::timeout(FORM_TIMEOUT, axum::body::to_bytes(body, MAX_FORM)).await {
            Ok(Ok(form)) => app.access.token_form(ip, &form).await,
            Ok(Err(_)) => {
                let e = ApiError::bad_request(format!(
                    "token request body too large (at most {MAX_FORM} bytes)"
                ));
                return log.finish(e.into_response());
            }
            Err(_) => {
                let e = ApiError::bad_request(format!(
                    "token request body did not arrive within {} s",
                    FORM_TIMEOUT.as_secs()
                ));
                return log.finish(e.into_response());
            }
        }
    } else {
        app.access
            .token(ip, &parts.headers, parts.uri.query())
            .await
    };
    let resp = match result {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(json),
        )
            .into_response(),
        Err(d) => {
            app.metrics
                .rejected
                .get_or_create(&ReasonLabels { reason: d.reason })
                .inc();
            app.metrics.totals.rejected(d.reason);
            tracing::info!(subject = %d.subject, reason = d.reason, "token request refused");
            ApiError::from(d)
                .challenged(|| TOKEN_CHALLENGE.to_owned())
                .into_response()
        }
    };
    log.finish(resp)
}
