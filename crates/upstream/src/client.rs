//! The request loop of one upstream: endpoints in order (mirrors, then the registry itself),
//! (source address, account) pairs round-robin with 429 back-off, the 401 challenge answered
//! once per attempt, and redirects followed by hand so that no `Authorization` header ever
//! leaves for another host (and only where [`crate::redirect`] allows).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferry_metrics::Metrics;
use ferry_oci::ErrorCode;
use futures_util::StreamExt;
use http::{Method, StatusCode, header};
use reqwest::Response;

use crate::accounts::{AccountPool, Slot};
use crate::challenge::{self, Challenge};
use crate::endpoint::Endpoint;
use crate::error::{UpstreamError, parse_oci_error, retry_after};
use crate::redirect::RedirectPolicy;
use crate::sources::Source;
use crate::token::{Token, TokenCache, TokenResponse};

/// Requests other than blob downloads must finish within this time.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 5;
/// Largest error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One request to make against whichever endpoint answers.
pub struct Op<'a> {
    /// GET or HEAD.
    pub method: Method,
    /// Path after `/v2/<prefix>`, starting with the repository.
    pub tail: String,
    /// Repository (without prefix), for the token scope.
    pub repo: &'a str,
    /// Metric label and default 404 code selector.
    pub kind: &'static str,
    /// `Accept` header.
    pub accept: Option<&'static str>,
    /// `Range: bytes=<n>-` for resumed blob downloads.
    pub range_from: Option<u64>,
    /// Last byte (inclusive) of the range, for segmented downloads: `Range: bytes=<n>-<m>`.
    pub range_to: Option<u64>,
    /// Whole-request timeout (None for blob bodies).
    pub timeout: Option<Duration>,
}

impl Op<'_> {
    /// The `Range` header value, if the operation asks for part of a blob.
    fn range_header(&self) -> Option<String> {
        match (self.range_from.unwrap_or(0), self.range_to) {
            (from, Some(to)) => Some(format!("bytes={from}-{to}")),
            (0, None) => None,
            (from, None) => Some(format!("bytes={from}-")),
        }
    }
}

/// Everything one upstream needs to make requests.
pub struct Client {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) http: reqwest::Client,
    pub(crate) accounts: AccountPool,
    /// Source addresses (one client each); never empty.
    pub(crate) sources: Vec<Source>,
    pub(crate) challenges: Vec<Mutex<Option<Challenge>>>,
    pub(crate) tokens: TokenCache,
    pub(crate) realm_hosts: Vec<String>,
    pub(crate) redirects: RedirectPolicy,
    pub(crate) metrics: Arc<Metrics>,
    /// Token scope actions: `pull`, or `pull,push` for a push destination.
    pub(crate) actions: &'static str,
}

impl Client {
    /// Sends `op` to each endpoint in turn until one answers with success.
    pub async fn send(&self, op: &Op<'_>) -> Result<Response, UpstreamError> {
        self.send_from(0, op).await
    }

    /// Sends `op` to endpoint `first` (modulo their number), then to the ones after it in
    /// turn, wrapping around, until one answers with success: segments of one blob spread
    /// over the mirrors and the registry this way, and each still falls back to the others.
    pub async fn send_from(&self, first: usize, op: &Op<'_>) -> Result<Response, UpstreamError> {
        let n = self.endpoints.len();
        for step in 0..n {
            let ep = (first + step) % n;
            match self.send_to(ep, op).await {
                Ok(resp) => return Ok(resp),
                Err(e) if step + 1 < n => {
                    tracing::debug!(upstream = %self.name, endpoint = %self.endpoints[ep].origin, error = %e, "endpoint failed, trying the next one");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("an upstream has at least one endpoint")
    }

    async fn send_to(&self, ep: usize, op: &Op<'_>) -> Result<Response, UpstreamError> {
        let mut tried = Vec::new();
        let mut slot = self
            .accounts
            .pick(&tried)
            .ok_or_else(|| self.rate_limited(self.accounts.soonest_available()))?;
        let mut challenged = false;
        loop {
            let auth = self.auth_header(ep, slot.account, op.repo).await?;
            let resp = self.execute(ep, op, auth, slot.source).await?;
            self.note_rate_limit(slot, resp.headers());
            let status = resp.status();
            self.observe_budget(slot, status, resp.headers());
            if status.is_success() {
                return Ok(resp);
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                return self.follow(resp, op).await;
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                self.learn_challenge(ep, slot.account, op.repo, &resp)
                    .await?;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(resp.headers());
                self.rest(
                    slot,
                    wait,
                    "upstream rate-limited this address and account (429)",
                );
                tried.push(slot);
                match self.accounts.pick(&tried) {
                    Some(next) => {
                        slot = next;
                        challenged = false;
                        continue;
                    }
                    None => {
                        return Err(self.rate_limited(wait.or(self.accounts.soonest_available())));
                    }
                }
            }
            return Err(self.error_from(resp, op.kind).await);
        }
    }

    /// Rests a (source address, account) pair, logging the address and updating its gauge.
    fn rest(&self, slot: Slot, wait: Option<Duration>, why: &str) {
        self.accounts.rest(slot, wait);
        let address = self.sources[slot.source].label();
        let resting = self.accounts.resting_on(slot.source);
        self.metrics
            .source_resting(&self.name, &address, resting as i64);
        tracing::warn!(upstream = %self.name, address = %address, account = slot.account, ?wait, "{why}; it rests");
    }

    /// Counts a response per source address and updates its resting gauge. A pair whose
    /// `ratelimit-remaining` runs low is not rested outright: the ledger (already told by
    /// [`Client::note_rate_limit`]) moves requests to pairs with requests to spare, leaves
    /// its last requests to interactive pulls, and skips it when none is left; the gauge
    /// counts it as resting meanwhile.
    fn observe_budget(&self, slot: Slot, status: StatusCode, headers: &http::HeaderMap) {
        let address = self.sources[slot.source].label();
        self.metrics
            .source_request(&self.name, &address, status.as_u16());
        if status != StatusCode::TOO_MANY_REQUESTS
            && let Some(window) = crate::sources::rest_for_low_budget(headers)
        {
            tracing::info!(upstream = %self.name, address = %address, account = slot.account, ?window, "ratelimit-remaining is low for this address and account; it rests but for interactive pulls with no other pair left");
        }
        let resting = self.accounts.resting_on(slot.source) as i64;
        self.metrics.source_resting(&self.name, &address, resting);
    }

    async fn execute(
        &self,
        ep: usize,
        op: &Op<'_>,
        auth: Option<String>,
        source: usize,
    ) -> Result<Response, UpstreamError> {
        let url = self.endpoints[ep].url(&op.tail);
        let mut req = self.sources[source].http.request(op.method.clone(), &url);
        if let Some(a) = op.accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(range) = op.range_header() {
            req = req.header(header::RANGE, range);
        }
        if let Some(t) = op.timeout {
            req = req.timeout(t);
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.timed(op.kind, req).await
    }

    pub(crate) async fn timed(
        &self,
        kind: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Response, UpstreamError> {
        let start = Instant::now();
        let result = req.send().await;
        let secs = start.elapsed().as_secs_f64();
        let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        self.metrics
            .upstream_request(&self.name, kind, status, secs);
        result.map_err(|e| self.unreachable(&e))
    }

    /// Follows a redirect chain without credentials (blob downloads from a CDN or bucket),
    /// where [`RedirectPolicy`] allows it.
    async fn follow(&self, mut resp: Response, op: &Op<'_>) -> Result<Response, UpstreamError> {
        let origin = resp.url().clone();
        for _ in 0..MAX_REDIRECTS {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.invalid("redirect without a Location header"))?;
            let target = resp
                .url()
                .join(location)
                .map_err(|e| self.invalid(&format!("bad redirect Location {location:?}: {e}")))?;
            if !matches!(target.scheme(), "http" | "https") {
                return Err(self.invalid("redirect to a non-HTTP URL"));
            }
            if let Err(why) = self.redirects.check(op.kind, &origin, &target) {
                tracing::warn!(upstream = %self.name, kind = op.kind, target = %target.host_str().unwrap_or_default(), "refused a redirect to another host");
                return Err(self.invalid(&why));
            }
            let mut req = self.http.request(op.method.clone(), target);
            if let Some(from) = op.range_from.filter(|&n| n > 0) {
                req = req.header(header::RANGE, format!("bytes={from}-"));
            }
            if let Some(t) = op.timeout {
                req = req.timeout(t);
            }
            resp = self.timed("redirect", req).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if !status.is_redirection() {
                return Err(self.error_from(resp, op.kind).await);
            }
        }
        Err(self.invalid("too many redirects"))
    }

    pub(crate) async fn learn_challenge(
        &self,
        ep: usize,
        account: usize,
        repo: &str,
        resp: &Response,
    ) -> Result<(), UpstreamError> {
        let values = resp.headers().get_all(header::WWW_AUTHENTICATE);
        let parsed = challenge::parse(values.iter().filter_map(|v| v.to_str().ok()));
        let Some(ch) = parsed else {
            return Err(self.unauthorized("401 without a usable WWW-Authenticate challenge"));
        };
        if ch == Challenge::Basic && self.accounts.get(account).is_none() {
            return Err(self
                .unauthorized("the upstream requires a login and no credentials are configured"));
        }
        let scope = self.scope(ep, repo);
        self.tokens.invalidate(&(ep, account, scope)).await;
        *self.challenges[ep].lock().expect("challenge lock") = Some(ch);
        Ok(())
    }

    pub(crate) fn scope(&self, ep: usize, repo: &str) -> String {
        let repo = self.endpoints[ep].repository(repo);
        format!("repository:{repo}:{}", self.actions)
    }

    /// The `Authorization` value for a request, fetching a token if the endpoint uses the
    /// token flow and none is cached.
    async fn auth_header(
        &self,
        ep: usize,
        account: usize,
        repo: &str,
    ) -> Result<Option<String>, UpstreamError> {
        self.auth_header_for(ep, account, self.scope(ep, repo))
            .await
    }

    /// Like `auth_header` for an explicit scope (several scopes separated by spaces).
    pub(crate) async fn auth_header_for(
        &self,
        ep: usize,
        account: usize,
        scope: String,
    ) -> Result<Option<String>, UpstreamError> {
        let known = self.challenges[ep].lock().expect("challenge lock").clone();
        match known {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .accounts
                .get(account)
                .map(|a| basic(&a.username, a.password.expose()))),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = (ep, account, scope);
                for _ in 0..2 {
                    let fetch = self.fetch_token(ep, account, &realm, service.as_deref(), &key.2);
                    let token = self
                        .tokens
                        .try_get_with(key.clone(), fetch)
                        .await
                        .map_err(|e| (*e).clone())?;
                    if token.is_fresh() {
                        return Ok(Some(format!("Bearer {}", token.value)));
                    }
                    self.tokens.invalidate(&key).await;
                }
                Err(self.invalid("token service issued an already expired token"))
            }
        }
    }

    async fn fetch_token(
        &self,
        ep: usize,
        account: usize,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Arc<Token>, UpstreamError> {
        let mut url = url::Url::parse(realm)
            .map_err(|e| self.invalid(&format!("bad token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.split(' ') {
                q.append_pair("scope", s);
            }
        }
        let mut req = self.http.get(url).timeout(SHORT_TIMEOUT);
        let host = &self.endpoints[ep].host;
        if let Some(a) = self.accounts.get(account) {
            if challenge::realm_may_receive_credentials(host, realm, &self.realm_hosts) {
                req = req.header(
                    header::AUTHORIZATION,
                    basic(&a.username, a.password.expose()),
                );
            } else {
                tracing::warn!(upstream = %self.name, realm, "token realm is not on the registry's site; asking for an anonymous token");
            }
        }
        let resp = self.timed("token", req).await?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "token").await);
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| self.invalid(&format!("token response is not JSON: {e}")))?;
        body.into_token()
            .map(Arc::new)
            .ok_or_else(|| self.invalid("token response has no token"))
    }

    /// Turns an error response into an [`UpstreamError`], reading a bounded body.
    pub async fn error_from(&self, resp: Response, kind: &'static str) -> UpstreamError {
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let body = read_limited(resp, MAX_ERROR_BODY).await;
        let (code, message) = parse_oci_error(&body).unwrap_or((
            None,
            String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        ));
        let name = self.name.clone();
        match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound {
                code: code.unwrap_or(match kind {
                    "blob" | "blob_head" => ErrorCode::BlobUnknown,
                    "tags" => ErrorCode::NameUnknown,
                    _ => ErrorCode::ManifestUnknown,
                }),
                message: if message.is_empty() {
                    "not found upstream".into()
                } else {
                    message
                },
            },
            StatusCode::UNAUTHORIZED if !self.accounts.is_empty() => UpstreamError::Unauthorized {
                message: format!(
                    "the upstream rejected the credentials configured in upstreams.{name} \
                     (username/password or accounts){}",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                ),
                upstream: name,
            },
            StatusCode::UNAUTHORIZED => UpstreamError::Unauthorized {
                upstream: name,
                message,
            },
            StatusCode::FORBIDDEN => UpstreamError::Denied {
                upstream: name,
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => self.rate_limited(wait),
            _ if code == Some(ErrorCode::DigestInvalid) => UpstreamError::DigestMismatch {
                upstream: name,
                message,
            },
            s => UpstreamError::Status {
                upstream: name,
                status: s.as_u16(),
                message,
            },
        }
    }

    pub(crate) fn invalid(&self, message: &str) -> UpstreamError {
        UpstreamError::Invalid {
            upstream: self.name.clone(),
            message: message.to_owned(),
        }
    }

    fn unauthorized(&self, message: &str) -> UpstreamError {
        UpstreamError::Unauthorized {
            upstream: self.name.clone(),
            message: message.to_owned(),
        }
    }

    fn rate_limited(&self, retry_after: Option<Duration>) -> UpstreamError {
        UpstreamError::RateLimited {
            upstream: self.name.clone(),
            retry_after,
        }
    }

    /// No answer. The message names what failed (refused, timed out, TLS) but not the URL,
    /// which may be an internal address: clients see it.
    pub(crate) fn unreachable(&self, e: &reqwest::Error) -> UpstreamError {
        let mut message = clean(e).to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        UpstreamError::Unreachable {
            upstream: self.name.clone(),
            message,
        }
    }
}

/// A reqwest error without its URL.
fn clean(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(&format!(" for url ({url})"), "");
        msg = msg.replace(url.as_str(), "<upstream>");
    }
    msg
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Reads at most `limit` bytes of a body (the rest is dropped with the connection).
pub async fn read_limited(resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}
