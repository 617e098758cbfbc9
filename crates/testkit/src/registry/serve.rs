//! Request handling: recording, faults, routing of `/v2/` paths, and the CDN listener.

use super::*;

/// Records the request and takes the faults of every matching rule with uses left.
fn begin(shared: &Shared, req: &Request, cdn: bool) -> Vec<Fault> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let record = RequestRecord {
        method,
        path,
        query: req.uri().query().map(str::to_owned),
        authorization: header_string(req.headers(), header::AUTHORIZATION),
        range: header_string(req.headers(), header::RANGE),
        user_agent: header_string(req.headers(), header::USER_AGENT),
        cdn,
        peer,
    };
    let mut inner = shared.inner.lock().unwrap();
    let mut faults = Vec::new();
    for state in &mut inner.rules {
        if state.rule.times.is_some_and(|t| state.hits >= t) {
            continue;
        }
        if state.rule.matches(&record) {
            state.hits += 1;
            faults.push(state.rule.fault.clone());
        }
    }
    inner.requests.push(record);
    faults
}

/// A 307 for a redirect fault.
fn redirect_fault(shared: &Shared, faults: &[Fault], uri: &axum::http::Uri) -> Option<Response> {
    let location = faults.iter().find_map(|f| match f {
        Fault::RedirectTo(to) if to.starts_with('/') => Some(format!("{}{to}", shared.url)),
        Fault::RedirectTo(to) => Some(to.clone()),
        Fault::RedirectToCdnPath => Some(format!("{}{}", shared.cdn_url, uri.path())),
        _ => None,
    })?;
    Some(
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
    )
}

/// Applies header delays; returns an immediate answer if a `Status` fault applies.
async fn early_faults(faults: &[Fault]) -> Option<Response> {
    for fault in faults {
        if let Fault::DelayHeaders(d) = fault {
            tokio::time::sleep(*d).await;
        }
    }
    faults.iter().find_map(|f| match f {
        Fault::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status).expect("valid status");
            let code = match status.as_u16() {
                429 => "TOOMANYREQUESTS",
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 => "NAME_UNKNOWN",
                _ => "UNKNOWN",
            };
            let mut r = oci_error(status, code, "injected fault");
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(r)
        }
        _ => None,
    })
}

/// The parts of a `/v2/<name>/<kind>/<rest>` path.
enum Target {
    Root,
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
    Unknown,
}

fn parse_target(path: &str) -> Target {
    if path == "/v2/" || path == "/v2" {
        return Target::Root;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Target::Unknown;
    };
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Target::Referrers {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Target::Tags {
            name: name.to_owned(),
        };
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Target::Manifest {
            name: name.to_owned(),
            reference: reference.to_owned(),
        };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Target::Blob {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    Target::Unknown
}

fn target_repo(target: &Target) -> Option<&str> {
    match target {
        Target::Manifest { name, .. }
        | Target::Blob { name, .. }
        | Target::Tags { name }
        | Target::Referrers { name, .. } => Some(name),
        _ => None,
    }
}

pub(super) async fn registry_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let faults = begin(&shared, &req, false);
    if let Some(r) = early_faults(&faults).await {
        return r;
    }
    if req.uri().path() == "/token" {
        return token_endpoint(&shared, req).await;
    }
    if req.uri().path().starts_with("/cdn/blobs/") {
        return stored_object(&shared, req, &faults).await;
    }
    let target = parse_target(req.uri().path());
    if let Some(denied) = check_auth(&shared, req.headers(), target_repo(&target)) {
        return denied;
    }
    if let Some(r) = redirect_fault(&shared, &faults, req.uri()) {
        return r;
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the fake upstream is read-only",
        );
    }
    match target {
        Target::Root => (
            [(header::CONTENT_TYPE, "application/json")],
            "{}".to_owned(),
        )
            .into_response(),
        Target::Manifest { name, reference } => {
            let found = shared.inner.lock().unwrap().manifest(&name, &reference);
            let limit = match hub::count(&shared, req.method(), req.headers()) {
                Ok(headers) => headers,
                Err(refused) => return *refused,
            };
            let Some((digest, manifest)) = found else {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    &format!("manifest unknown: {name}:{reference}"),
                );
            };
            if faults.contains(&Fault::RedirectToCdn) {
                let location = format!("{}/cdn/manifests/{name}/{reference}", shared.cdn_url);
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            let mut resp = serve_content(
                &shared,
                Source::Memory(manifest.bytes),
                &digest,
                &manifest.media_type,
                req.headers(),
                head,
                &faults,
            )
            .await;
            hub::add(&mut resp, limit);
            resp
        }
        Target::Blob { name, digest } => {
            let source = shared.inner.lock().unwrap().blob(&name, &digest);
            let Some(source) = source else {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    &format!("blob unknown: {name}@{digest}"),
                );
            };
            if !head && faults.contains(&Fault::RedirectToCdn) {
                let location = format!(
                    "{}/cdn/blobs/{digest}?expires=never&sig={}",
                    shared.cdn_url,
                    percent_encode(&name)
                );
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            serve_content(
                &shared,
                source,
                &digest,
                "application/octet-stream",
                req.headers(),
                head,
                &faults,
            )
            .await
        }
        Target::Tags { name } => tags_list(&shared, &name, req.uri().query().unwrap_or("")),
        Target::Referrers { name, digest } => referrers::answer(&shared, &name, &digest),
        Target::Unknown => oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path"),
    }
}

pub(super) async fn cdn_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let faults = begin(&shared, &req, true);
    if let Some(r) = early_faults(&faults).await {
        return r;
    }
    stored_object(&shared, req, &faults).await
}

/// A blob as a storage host serves it: by a path ending in `/blobs/<digest>`, no auth.
async fn stored_object(shared: &Shared, req: Request, faults: &[Fault]) -> Response {
    let Some((_, digest)) = req.uri().path().rsplit_once("/blobs/") else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    let source = shared.inner.lock().unwrap().blobs.get(digest).cloned();
    let Some(source) = source else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    let head = req.method() == Method::HEAD;
    let digest = digest.to_owned();
    serve_content(
        shared,
        source,
        &digest,
        "application/octet-stream",
        req.headers(),
        head,
        faults,
    )
    .await
}

fn tags_list(shared: &Shared, name: &str, query: &str) -> Response {
    let params = query_pairs(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let inner = shared.inner.lock().unwrap();
    let Some(repo) = inner.repos.get(name) else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            &format!("repository name not known to registry: {name}"),
        );
    };
    let last = param("last");
    let mut tags: Vec<&String> = repo
        .tags
        .keys()
        .filter(|t| last.as_ref().is_none_or(|l| *t > l))
        .collect();
    let asked = param("n").and_then(|n| n.parse::<usize>().ok());
    let n = match (asked, inner.tags_page) {
        (Some(a), Some(cap)) => Some(a.min(cap)),
        (a, cap) => a.or(cap),
    };
    let mut link = None;
    if let Some(n) = n
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            link = Some(format!(
                "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                percent_encode(last)
            ));
        }
    }
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(link) = link {
        r.headers_mut()
            .insert(header::LINK, HeaderValue::from_str(&link).expect("link"));
    }
    r
}
