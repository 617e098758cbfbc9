//! `/v2/...`: parse the path, route it to an upstream repository, call the mirror, answer.
//!
//! Only GET and HEAD are served (ferry is a read-only mirror). Every answer carries
//! `Docker-Distribution-API-Version: registry/2.0`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ferry_access::{CacheOutcome, Grant, RequestInfo, TargetKind};
use ferry_metrics::ReasonLabels;
use ferry_mirror::{BlobBody, Delivery, Outcome, Target};
use ferry_oci::route::{self, Endpoint, Route};
use ferry_oci::{Digest, Reference};
use futures_util::StreamExt;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, header};

use crate::error::ApiError;
use crate::miss_quota::MissQuota;
use crate::observe::RequestLog;
use crate::{App, peer_ip, request_host, respond};

const API_VERSION: &str = "docker-distribution-api-version";

/// Query parameters the pull API uses.
#[derive(Debug, Default)]
struct Query {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
    artifact_type: Option<String>,
}

fn parse_query(q: Option<&str>) -> Query {
    let mut out = Query::default();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "ns" => out.ns = v,
            "n" => out.n = v,
            "last" => out.last = v,
            "artifactType" => out.artifact_type = v,
            _ => {}
        }
    }
    out
}

fn route_label(r: &Result<Route<'_>, route::PathError>) -> &'static str {
    match r {
        Ok(Route::Base) => "base",
        Ok(Route::Catalog) => "catalog",
        Ok(Route::Repo { endpoint, .. }) => match endpoint {
            Endpoint::Manifest(_) => "manifest",
            Endpoint::Blob(_) => "blob",
            Endpoint::BlobUpload => "upload",
            Endpoint::TagsList => "tags",
            Endpoint::Referrers(_) => "referrers",
        },
        Err(_) => "invalid",
    }
}

/// The `/v2/...` handler.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (req, _body) = req.into_parts();
    let path = req.uri.path().to_owned();
    let parsed = route::parse(&path);
    let ip = app.access.client_ip(peer_ip(&req), &req.headers);
    let mut log = RequestLog::new(
        app.metrics.clone(),
        ip,
        req.method.clone(),
        &path,
        route_label(&parsed),
    );
    log.usage = Some(app.access.usage_sink());
    let result = dispatch(&app, &req, parsed, &mut log).await;
    let mut resp = match result {
        Ok(resp) => resp,
        // RFC 7235: every 401 names a way to authenticate, also when it is the upstream that
        // refused ferry's credentials.
        Err(e) => e
            .challenged(|| app.access.challenge(&app.token_realm(&req)))
            .logged(&log.request_id)
            .into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    log.finish(resp)
}

async fn dispatch(
    app: &App,
    req: &Parts,
    parsed: Result<Route<'_>, route::PathError>,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let method = req.method.clone();
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::read_only());
    }
    let (name, endpoint) = match parsed? {
        Route::Base => {
            let grant = admit(app, req, None, log).await?;
            drop(grant);
            return Ok(respond::json("{}".into(), None));
        }
        Route::Catalog => {
            return Err(ApiError::no_catalog());
        }
        Route::Repo { name, endpoint } => (name, endpoint),
    };
    let query = parse_query(req.uri.query());
    let target = app
        .mirror
        .resolve(name, query.ns.as_deref(), request_host(req).as_deref())?;
    log.upstream = target.name.clone();
    log.repository = target.repo.to_string();
    let kind = match endpoint {
        Endpoint::Manifest(_) => TargetKind::Manifest,
        Endpoint::Blob(_) => TargetKind::Blob,
        Endpoint::TagsList => TargetKind::Tags,
        Endpoint::Referrers(_) => TargetKind::Referrers,
        Endpoint::BlobUpload => {
            return Err(ApiError::push_refused());
        }
    };
    let access_target = ferry_access::Resource {
        upstream: &target.name,
        repository: target.repo.as_str(),
        kind,
        digest: blob_digest(&endpoint),
    };
    let grant = admit(app, req, Some(access_target), log).await?;
    let head = method == Method::HEAD;
    match endpoint {
        Endpoint::Manifest(r) => manifest(app, &target, &r, head, grant, log).await,
        Endpoint::Blob(d) if head => blob_head(app, &target, &d, log).await,
        Endpoint::Blob(d) => blob(app, &target, &d, &req.headers, grant, log).await,
        Endpoint::TagsList => tags(app, &target, name, &query, log).await,
        Endpoint::Referrers(d) => referrers(app, &target, &d, &query, head, log).await,
        Endpoint::BlobUpload => unreachable!("refused above"),
    }
}

/// The digest of a blob request (for fair-use rules per client and blob).
fn blob_digest(e: &Endpoint) -> Option<&str> {
    match e {
        Endpoint::Blob(d) => Some(d.as_str()),
        _ => None,
    }
}

/// Asks access control about the request; a refusal is counted and answered.
async fn admit(
    app: &App,
    req: &Parts,
    target: Option<ferry_access::Resource<'_>>,
    log: &mut RequestLog,
) -> Result<Grant, ApiError> {
    let realm = app.token_realm(req);
    log.agent = ferry_access::usage::agent_hash(&req.headers);
    let info = RequestInfo {
        ip: log.client,
        headers: &req.headers,
        target,
        realm: &realm,
    };
    match app.access.check(&info).await {
        Ok(grant) => {
            log.user = grant.identity().user().map(str::to_owned);
            log.warnings = grant.warnings().to_vec();
            Ok(grant)
        }
        Err(d) => {
            log.user = d.subject.strip_prefix("user ").map(str::to_owned);
            Err(refused(app, d))
        }
    }
}

fn refused(app: &App, d: ferry_access::Denial) -> ApiError {
    app.metrics
        .rejected
        .get_or_create(&ReasonLabels { reason: d.reason })
        .inc();
    if d.reason != ferry_access::reason::AUTH_CHALLENGE {
        app.metrics.totals.rejected(d.reason);
        tracing::info!(subject = %d.subject, reason = d.reason, "request refused");
    }
    d.into()
}

/// A mirror error as answered: the quota's own denial (counted) when the gate refused a miss.
fn miss_refused(app: &App, gate: MissQuota<'_>, e: ferry_mirror::MirrorError) -> ApiError {
    match gate.refusal(e) {
        Ok(denial) => refused(app, denial),
        Err(e) => e.into(),
    }
}

fn cache_outcome(o: Outcome) -> CacheOutcome {
    if o.is_hit() {
        CacheOutcome::Hit
    } else {
        CacheOutcome::Miss
    }
}

async fn manifest(
    app: &App,
    t: &Target,
    r: &Reference,
    head: bool,
    mut grant: Grant,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let gate = MissQuota::new(&grant);
    let answer = app.mirror.manifest(t, r, &gate).await;
    let a = answer.map_err(|e| miss_refused(app, gate, e))?;
    log.outcome = Some(a.outcome);
    let m = &a.manifest;
    let body = if head {
        Body::empty()
    } else {
        grant
            .reserve(m.bytes.len() as u64, cache_outcome(a.outcome))
            .await
            .map_err(|e| refused(app, e))?;
        let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(
            m.bytes.clone(),
        )));
        Body::from_stream(grant.meter(once, cache_outcome(a.outcome)))
    };
    let mut resp = respond::manifest(&m.media_type, m.bytes.len(), &m.digest, body);
    // cache.keep_deleted: say that the upstream no longer has it, and until when ferry serves it.
    if let Some(d) = &a.deleted_upstream
        && let Ok(v) = HeaderValue::from_str(&d.header_value())
    {
        resp.headers_mut().insert("ferry-deleted-upstream", v);
    }
    Ok(resp)
}

async fn blob_head(
    app: &App,
    t: &Target,
    d: &Digest,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let (size, outcome) = app.mirror.blob_head(t, d).await?;
    log.outcome = Some(outcome);
    Ok(respond::blob(d, size, None, Body::empty()))
}

async fn blob(
    app: &App,
    t: &Target,
    d: &Digest,
    headers: &HeaderMap,
    mut grant: Grant,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let gate = MissQuota::new(&grant);
    let answer = app
        .mirror
        .blob(t, d, range, Delivery::MayRedirect, &gate)
        .await;
    let a = answer.map_err(|e| miss_refused(app, gate, e))?;
    log.outcome = Some(a.outcome);
    // The whole length is reserved before the first byte (a redirect counts it too, at
    // redirect time): parallel downloads cannot all start on one remaining allowance.
    let len = a.range.map_or(a.size, |r| r.len());
    grant
        .reserve(len, cache_outcome(a.outcome))
        .await
        .map_err(|e| refused(app, e))?;
    let stream = match a.body {
        BlobBody::Redirect(url) => {
            log.redirected = len;
            return Ok(respond::redirect(&url));
        }
        BlobBody::Stream(s) => s,
    };
    let metered = grant.meter(stream, cache_outcome(a.outcome)).boxed();
    Ok(respond::blob(
        d,
        a.size,
        a.range,
        Body::from_stream(metered),
    ))
}

async fn tags(
    app: &App,
    t: &Target,
    name: &str,
    q: &Query,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let n = match q.n.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return Err(ApiError::bad_request("query parameter n must be a number"));
        }
    };
    let (mut all, outcome) = app.mirror.tags(t).await?;
    log.outcome = Some(outcome);
    all.sort();
    all.dedup();
    let start = q
        .last
        .as_ref()
        .map_or(0, |l| all.partition_point(|t| t <= l));
    let end = n.map_or(all.len(), |n| (start + n).min(all.len()));
    let page = &all[start..end];
    let body = serde_json::json!({ "name": name, "tags": page }).to_string();
    let link = match (n, page.last()) {
        (Some(n), Some(last)) if end < all.len() => {
            let ns =
                q.ns.as_ref()
                    .map(|ns| format!("&ns={ns}"))
                    .unwrap_or_default();
            Some(format!(
                "</v2/{name}/tags/list?n={n}&last={last}{ns}>; rel=\"next\""
            ))
        }
        _ => None,
    };
    Ok(respond::json(body, link))
}

async fn referrers(
    app: &App,
    t: &Target,
    d: &Digest,
    q: &Query,
    head: bool,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let answer = app
        .mirror
        .referrers(t, d, q.artifact_type.as_deref())
        .await?;
    let Some(a) = answer else {
        return Err(ApiError::no_referrers_api(&t.name));
    };
    log.outcome = Some(a.outcome);
    let body = if head {
        Body::empty()
    } else {
        Body::from(a.body)
    };
    Ok(respond::referrers(
        &a.content_type,
        q.artifact_type.is_some(),
        body,
    ))
}
