//! The one place where failures become HTTP answers: every error is an OCI JSON error with the
//! status of its code (plus `Retry-After` for rate limits and `Content-Range` for bad ranges).

use axum::response::{IntoResponse, Response};
use ferry_mirror::{FillError, MirrorError, RouteError, UpstreamError};
use ferry_oci::errcode::{ErrorCode, OciError};
use ferry_oci::reference::ReferenceError;
use ferry_oci::route::PathError;
use http::{HeaderValue, StatusCode, header};

/// An error answer: the OCI error plus optional extra headers. Built only here, by the named
/// constructors below and the `From` conversions of every error type the handlers meet.
#[derive(Debug)]
pub struct ApiError {
    error: OciError,
    /// Status override (upstream failures answer 502/503 with an OCI code).
    status: Option<StatusCode>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// What went wrong inside (store URLs, buckets, keys, paths): logged with the request id,
    /// never sent to the client ([`ApiError::logged`]).
    internal: Option<String>,
}

impl ApiError {
    /// An error with the status of its code.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            error: OciError::new(code, message),
            status: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    /// A failure of the cache storage: `UNAVAILABLE` (503) with a short message; `detail`
    /// goes to the log only.
    pub fn storage(detail: String) -> Self {
        let mut e = ApiError::new(
            ErrorCode::Unavailable,
            "the mirror's cache storage is unavailable; retry later",
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE);
        e.internal = Some(detail);
        e
    }

    /// Logs the internal detail of this error, if any, with `request_id`, and names the id in
    /// the message the client sees, so an operator can find the log line.
    pub fn logged(mut self, request_id: &str) -> Self {
        if let Some(detail) = self.internal.take() {
            tracing::error!(request_id, error = %detail, "request failed inside ferry");
            self.error.message = format!("{} (request id {request_id})", self.error.message);
        }
        self
    }

    /// A method other than GET and HEAD on the registry API.
    pub fn read_only() -> Self {
        ApiError::new(
            ErrorCode::Unsupported,
            "ferry is a read-only mirror: only GET and HEAD are served",
        )
    }

    /// A blob upload.
    pub fn push_refused() -> Self {
        ApiError::new(
            ErrorCode::Unsupported,
            "ferry is a read-only mirror: pushes are not accepted",
        )
    }

    /// `/v2/_catalog`.
    pub fn no_catalog() -> Self {
        ApiError::new(
            ErrorCode::Unsupported,
            "the catalog of a mirror is not served",
        )
    }

    /// A path outside the registry API.
    pub fn not_found() -> Self {
        ApiError::new(
            ErrorCode::NameUnknown,
            "not found: ferry serves the registry API under /v2/",
        )
    }

    /// A request head over `server.max_header_bytes` or with too many headers (431).
    pub fn head_too_large(size: usize, headers: usize, limit: usize, max_headers: usize) -> Self {
        let message = format!(
            "request head is {size} bytes with {headers} headers; the limit is {limit} bytes and \
             {max_headers} headers (server.max_header_bytes)"
        );
        ApiError::new(ErrorCode::Unsupported, message)
            .with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    }

    /// The referrers API asked of an upstream that has none.
    pub fn no_referrers_api(upstream: &str) -> Self {
        ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("upstream {upstream} has no referrers API"),
        )
    }

    /// A response that could not be built (a value no header can carry): a bug, logged.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut e = ApiError::new(ErrorCode::Unknown, "ferry could not build the answer");
        e.internal = Some(detail.to_string());
        e.with_status(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The OCI error code.
    pub fn code(&self) -> ErrorCode {
        self.error.code
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.error.message
    }

    /// A 400 with the `UNSUPPORTED` code: a request ferry cannot read as the protocol says.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
    }

    /// Adds `WWW-Authenticate: <challenge()>` to a 401 that has none.
    pub fn challenged(self, challenge: impl FnOnce() -> String) -> Self {
        let has = self
            .headers
            .iter()
            .any(|(k, _)| k == header::WWW_AUTHENTICATE);
        if self.status() == StatusCode::UNAUTHORIZED && !has {
            self.with_header(header::WWW_AUTHENTICATE, challenge())
        } else {
            self
        }
    }

    fn with_status(mut self, s: StatusCode) -> Self {
        self.status = Some(s);
        self
    }

    fn with_header(mut self, name: header::HeaderName, value: String) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.error.status())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.error.to_json(),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<ferry_access::Denial> for ApiError {
    fn from(d: ferry_access::Denial) -> Self {
        let mut e = ApiError::new(d.code, d.message.clone());
        if let Some(secs) = d.retry_after_secs() {
            e = e.with_header(header::RETRY_AFTER, secs.to_string());
        }
        if let Some(ch) = &d.challenge {
            e = e.with_header(header::WWW_AUTHENTICATE, ch.clone());
        }
        e
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotFound => ApiError::new(ErrorCode::NameUnknown, "unknown API endpoint"),
            PathError::TooLong | PathError::Name(_) => {
                ApiError::new(ErrorCode::NameInvalid, e.to_string())
            }
            PathError::Digest(d) => ApiError::new(ErrorCode::DigestInvalid, d.to_string()),
            PathError::Reference(ReferenceError::Digest(d)) => {
                ApiError::new(ErrorCode::DigestInvalid, d.to_string())
            }
            PathError::Reference(ReferenceError::Tag(t)) => {
                ApiError::new(ErrorCode::TagInvalid, t.to_string())
            }
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::UnknownRegistry(_) => ApiError::new(ErrorCode::NameUnknown, e.to_string()),
            RouteError::InvalidName(_) | RouteError::MissingRepository(_) => {
                ApiError::new(ErrorCode::NameInvalid, e.to_string())
            }
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        let msg = e.to_string();
        match e {
            UpstreamError::NotFound { code, .. } => ApiError::new(code, msg),
            UpstreamError::Unauthorized { .. } => ApiError::new(ErrorCode::Unauthorized, msg),
            UpstreamError::Denied { .. } => ApiError::new(ErrorCode::Denied, msg),
            UpstreamError::RateLimited { retry_after, .. } => {
                let secs = retry_after.map_or(60, |d| d.as_secs().max(1));
                ApiError::new(ErrorCode::TooManyRequests, msg)
                    .with_header(header::RETRY_AFTER, secs.to_string())
            }
            UpstreamError::Unreachable { .. } => ApiError::new(ErrorCode::Unavailable, msg),
            UpstreamError::Status { .. }
            | UpstreamError::Invalid { .. }
            | UpstreamError::DigestMismatch { .. } => {
                ApiError::new(ErrorCode::Unavailable, msg).with_status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

impl From<MirrorError> for ApiError {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::Route(r) => r.into(),
            MirrorError::Upstream(u) => u.into(),
            MirrorError::Storage(m) => ApiError::storage(m),
            MirrorError::Invalid(m) => ApiError::bad_request(m),
            MirrorError::Range { size, message } => ApiError::new(ErrorCode::RangeInvalid, message)
                .with_header(header::CONTENT_RANGE, format!("bytes */{size}")),
            MirrorError::Fill {
                error: FillError::Storage(detail),
                ..
            } => ApiError::storage(detail),
            e @ MirrorError::Fill { .. } => ApiError::new(ErrorCode::Unavailable, e.to_string())
                .with_status(StatusCode::BAD_GATEWAY),
            // Answered with the gate's own denial where the server set one (`registry`).
            e @ MirrorError::MissRefused(_) => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn upstream_errors_keep_their_meaning() {
        let nf: ApiError = UpstreamError::NotFound {
            code: ErrorCode::ManifestUnknown,
            message: "m".into(),
        }
        .into();
        assert_eq!(
            (nf.status(), nf.error.code),
            (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown)
        );
        let rl: ApiError = UpstreamError::RateLimited {
            upstream: "u".into(),
            retry_after: Some(Duration::from_secs(9)),
        }
        .into();
        assert_eq!(rl.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            rl.headers[0],
            (header::RETRY_AFTER, HeaderValue::from_static("9"))
        );
        let down: ApiError = UpstreamError::Status {
            upstream: "u".into(),
            status: 500,
            message: String::new(),
        }
        .into();
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn route_errors_name_the_problem() {
        let e: ApiError = RouteError::UnknownRegistry("quay.io".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert!(e.error.message.contains("quay.io"));
        let e: ApiError = ferry_oci::route::parse("/v2/a/blobs/sha256:zz")
            .unwrap_err()
            .into();
        assert_eq!(e.error.code, ErrorCode::DigestInvalid);
    }
}
