//! Authentication of the fake: none, Basic, or the Bearer token flow with its own `/token`
//! endpoint.

use super::*;

/// How the fake authenticates `/v2/` requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Basic` with these credentials.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Basic` with any credentials (several accounts; see
    /// [`FaultyUpstream::pulls_by_user`]).
    AnyBasic,
    /// The Bearer token flow: 401 with a challenge naming `http://<fake>/token`; tokens live
    /// `expires_in` seconds; the token endpoint requires Basic `credentials` if set.
    Bearer {
        /// Token lifetime in seconds.
        expires_in: u64,
        /// Credentials the token endpoint requires (None: anonymous tokens).
        credentials: Option<(String, String)>,
    },
}

impl UpstreamAuth {
    /// Basic auth with one user.
    pub fn basic(user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// Anonymous Bearer tokens valid `expires_in` seconds.
    pub fn bearer(expires_in: u64) -> UpstreamAuth {
        UpstreamAuth::Bearer {
            expires_in,
            credentials: None,
        }
    }

    /// Bearer tokens that the token endpoint only gives to this user.
    pub fn bearer_with_credentials(expires_in: u64, user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::Bearer {
            expires_in,
            credentials: Some((user.to_owned(), password.to_owned())),
        }
    }
}

/// None when the request may proceed; otherwise the 401 answer.
/// A 401 that asks for `www_authenticate`.
fn challenge(www_authenticate: String) -> Response {
    let mut r = oci_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    let value = HeaderValue::from_str(&www_authenticate).expect("challenge header");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    r
}

pub(super) fn check_auth(
    shared: &Shared,
    headers: &HeaderMap,
    repo: Option<&str>,
) -> Option<Response> {
    let mut inner = shared.inner.lock().unwrap();
    match inner.auth.clone() {
        UpstreamAuth::None => None,
        UpstreamAuth::AnyBasic | UpstreamAuth::Basic { .. } => {
            let wanted = match &inner.auth {
                UpstreamAuth::Basic { user, password } => Some((user.clone(), password.clone())),
                _ => None,
            };
            let given = basic_credentials(headers);
            if given.is_some() && (wanted.is_none() || given == wanted) {
                return None;
            }
            Some(challenge("Basic realm=\"fake\"".into()))
        }
        UpstreamAuth::Bearer { .. } => {
            let now = Instant::now();
            inner.tokens.retain(|_, t| t.expires > now);
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let valid = presented
                .and_then(|t| inner.tokens.get(t))
                .is_some_and(|t| repo.is_none_or(|r| t.repos.iter().any(|granted| granted == r)));
            if valid {
                return None;
            }
            let mut challenge_value = format!(
                "Bearer realm=\"{}/token\",service=\"{FAKE_SERVICE}\"",
                shared.url
            );
            if let Some(repo) = repo {
                challenge_value.push_str(&format!(",scope=\"repository:{repo}:pull\""));
            }
            Some(challenge(challenge_value))
        }
    }
}

pub(super) async fn token_endpoint(shared: &Shared, req: Request) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let mut params = query_pairs(req.uri().query().unwrap_or(""));
    if method == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        params.extend(query_pairs(&String::from_utf8_lossy(&body)));
    }
    let mut inner = shared.inner.lock().unwrap();
    let UpstreamAuth::Bearer {
        expires_in,
        credentials,
    } = inner.auth.clone()
    else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "no token auth configured",
        );
    };
    if let Some(required) = credentials {
        let presented = crate::wire::token_credentials(&headers, &params);
        if presented != Some(required) {
            let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fake-token\""),
            );
            return r;
        }
    }
    let repos: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let (_, rest) = scope.split_once(':')?;
            let (name, _) = rest.rsplit_once(':')?;
            Some(name.to_owned())
        })
        .collect();
    inner.tokens_issued += 1;
    let token = format!(
        "fake-{}-{}",
        inner.tokens_issued,
        STANDARD.encode(random_u64().to_le_bytes())
    );
    inner.tokens.insert(
        token.clone(),
        IssuedToken {
            expires: Instant::now() + Duration::from_secs(expires_in),
            repos,
        },
    );
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
