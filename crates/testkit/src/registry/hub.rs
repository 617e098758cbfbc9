//! Docker Hub's pull limit, imitated by the fake: every manifest GET counts as a pull of the
//! Basic user that made it (or `anonymous`); manifest answers carry
//! `ratelimit-limit: <limit>;w=<window>` and `ratelimit-remaining: <left>;w=<window>`; a GET
//! past the limit is answered 429 `TOOMANYREQUESTS`. HEADs are counted by nobody, like Hub's.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::{FaultyUpstream, Shared, oci_error};
use crate::wire::basic_credentials;

/// The limit and what each user has used.
#[derive(Debug, Default)]
pub(super) struct PullLimit {
    limit: u64,
    window: u64,
    used: HashMap<String, u64>,
}

impl FaultyUpstream {
    /// Imitates Docker Hub: `limit` manifest GETs per user, reported with window `window_secs`.
    pub fn set_pull_limit(&self, limit: u64, window_secs: u64) {
        self.inner().pull_limit = Some(PullLimit {
            limit,
            window: window_secs,
            used: HashMap::new(),
        });
    }

    /// Manifest GETs (pulls) per user so far, including refused ones.
    pub fn pulls_by_user(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for r in self.requests() {
            if r.method == "GET" && r.path.contains("/manifests/") {
                *out.entry(user_of(r.authorization.as_deref())).or_default() += 1;
            }
        }
        out
    }
}

/// The user named by an `Authorization: Basic` value, or `anonymous`.
pub fn user_of(authorization: Option<&str>) -> String {
    let mut h = HeaderMap::new();
    if let Some(v) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
        h.insert(axum::http::header::AUTHORIZATION, v);
    }
    basic_credentials(&h).map_or_else(|| "anonymous".to_owned(), |(u, _)| u)
}

/// Counts a manifest request against its user: `Ok(headers)` to add to the answer (none when
/// no limit is set), or the 429 answer.
pub(super) fn count(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Vec<(&'static str, String)>, Box<Response>> {
    let mut inner = shared.inner.lock().unwrap();
    let Some(pl) = inner.pull_limit.as_mut() else {
        return Ok(Vec::new());
    };
    let user = basic_credentials(headers).map_or_else(|| "anonymous".to_owned(), |(u, _)| u);
    let used = pl.used.entry(user).or_default();
    let over = *used >= pl.limit;
    if *method == Method::GET && !over {
        *used += 1;
    }
    let left = pl.limit.saturating_sub(*used);
    let headers = vec![
        ("ratelimit-limit", format!("{};w={}", pl.limit, pl.window)),
        ("ratelimit-remaining", format!("{left};w={}", pl.window)),
    ];
    if *method == Method::GET && over {
        let mut r = oci_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "You have reached your pull rate limit.",
        );
        add(&mut r, headers);
        return Err(Box::new(r));
    }
    Ok(headers)
}

/// Adds the rate-limit headers to an answer.
pub(super) fn add(resp: &mut Response, headers: Vec<(&'static str, String)>) {
    for (k, v) in headers {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("header value"));
    }
}
