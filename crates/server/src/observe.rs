//! One structured log line and the HTTP metrics for every request, emitted when the response
//! body has been sent (or dropped), so the line carries the bytes actually served and the full
//! duration: client IP, user, method, path, upstream, repository, cache outcome, status, bytes.
//! The same record goes to usage accounting ([`ferry_access::usage`]) through a channel, so
//! the request never waits on the accounts.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use ferry_access::usage::{UsageRecord, UsageSink};
use ferry_metrics::{HttpLabels, KindLabels, Metrics, ServedLabels};
use ferry_mirror::Outcome;
use http::Method;
use http_body::{Body as _, Frame, SizeHint};

/// What is known about a request, filled in as it is handled.
pub struct RequestLog {
    start: Instant,
    metrics: Arc<Metrics>,
    /// Client address (after trusted-proxy resolution).
    pub client: IpAddr,
    /// HTTP method.
    pub method: Method,
    /// Request path.
    pub path: String,
    /// Endpoint family (metric label).
    pub route: &'static str,
    /// Upstream, once routed.
    pub upstream: String,
    /// Repository, once routed.
    pub repository: String,
    /// Cache outcome, once known.
    pub outcome: Option<Outcome>,
    /// Logged-in user, if any.
    pub user: Option<String>,
    /// A random id, in the log line and the `X-Request-Id` response header.
    pub request_id: String,
    /// Where the answer is accounted (usage, fair-use rules, budgets).
    pub usage: Option<UsageSink>,
    /// Bytes of a blob answered with a redirect (its length, or the range asked): accounted
    /// as served, though they flow from the object store.
    pub redirected: u64,
    /// Fair-use notes: sent as `Warning` headers and logged.
    pub warnings: Vec<String>,
    /// [`ferry_access::usage::agent_hash`] of the `User-Agent` (for rules with `agents:`).
    pub agent: u64,
}

impl RequestLog {
    /// Starts the record of a request.
    pub fn new(
        metrics: Arc<Metrics>,
        client: IpAddr,
        method: Method,
        path: &str,
        route: &'static str,
    ) -> Self {
        RequestLog {
            start: Instant::now(),
            metrics,
            client,
            method,
            path: path.chars().take(300).collect(),
            route,
            upstream: String::new(),
            repository: String::new(),
            outcome: None,
            user: None,
            request_id: format!("{:016x}", rand::random::<u64>()),
            usage: None,
            redirected: 0,
            warnings: Vec::new(),
            agent: 0,
        }
    }

    /// Counts the response head and arranges for the log line when its body ends.
    pub fn finish(self, mut resp: Response) -> Response {
        if let Ok(v) = http::HeaderValue::from_str(&self.request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        for w in &self.warnings {
            if let Some(v) = warning_header(w) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
        let status = resp.status().as_u16();
        self.metrics
            .http_duration
            .get_or_create(&KindLabels {
                upstream: self.upstream.clone(),
                kind: self.route,
            })
            .observe(self.start.elapsed().as_secs_f64());
        let (parts, body) = resp.into_parts();
        let expected = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let counted = Counted {
            inner: body,
            bytes: 0,
            expected,
            status,
            log: Some(self),
        };
        Response::from_parts(parts, Body::new(counted))
    }

    fn emit(self, status: u16, bytes: u64, complete: bool) {
        let m = &self.metrics;
        let method = method_label(&self.method);
        m.totals.request(bytes);
        m.http_requests
            .get_or_create(&HttpLabels {
                route: self.route,
                method,
                status,
                upstream: self.upstream.clone(),
            })
            .inc();
        if bytes > 0 && !self.upstream.is_empty() {
            let source = if self.outcome.is_some_and(|o| !o.is_hit()) {
                "upstream"
            } else {
                "cache"
            };
            m.served_bytes
                .get_or_create(&ServedLabels {
                    upstream: self.upstream.clone(),
                    source,
                })
                .inc_by(bytes);
        }
        self.account(status, bytes);
        tracing::info!(
            target: "ferry::request",
            warning = self.warnings.first().map(String::as_str),
            request_id = %self.request_id,
            client = %self.client,
            user = self.user.as_deref().unwrap_or("-"),
            method,
            path = %self.path,
            upstream = %self.upstream,
            repository = %self.repository,
            cache = self.outcome.map_or("-", |o| o.as_str()),
            status,
            bytes,
            complete,
            duration_ms = self.start.elapsed().as_millis() as u64,
        );
    }

    /// Sends the answer to usage accounting.
    fn account(&self, status: u16, bytes: u64) {
        let Some(sink) = &self.usage else { return };
        let repository = if self.upstream.is_empty() {
            String::new()
        } else {
            format!("{}/{}", self.upstream, self.repository)
        };
        let blob = (self.route == "blob")
            .then(|| self.path.rsplit_once("/blobs/").map(|(_, d)| d.to_owned()))
            .flatten();
        sink.send(UsageRecord {
            ip: Some(self.client),
            user: self.user.clone(),
            upstream: self.upstream.clone(),
            repository,
            blob,
            bytes: bytes + self.redirected,
            error: status >= 400 && status != 401,
            agent: self.agent,
        });
    }
}

/// `Warning: 299 ferry "<note>"` (RFC 7234 section 5.5), quotes and controls dropped.
fn warning_header(note: &str) -> Option<http::HeaderValue> {
    let clean: String = note
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .take(400)
        .collect();
    http::HeaderValue::from_str(&format!("299 ferry \"{clean}\"")).ok()
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A response body that counts its bytes and logs when finished or dropped.
struct Counted {
    inner: Body,
    bytes: u64,
    /// `Content-Length`: hyper stops polling once that many bytes are sent.
    expected: Option<u64>,
    status: u16,
    log: Option<RequestLog>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                let (status, bytes) = (self.status, self.bytes);
                if let Some(log) = self.log.take() {
                    log.emit(status, bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let complete = self.inner.is_end_stream() || self.expected == Some(self.bytes);
            log.emit(self.status, self.bytes, complete);
        }
    }
}
