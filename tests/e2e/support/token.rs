//! A token server for docker-registry's `auth: token` mode: the real Bearer flow.
//!
//! docker-registry (distribution 2.8) answers 401 with `WWW-Authenticate: Bearer realm=...,
//! service=...,scope=...`; the client asks this server for a token; the registry then verifies
//! the JWT: RS256, signed by a key whose self-signed certificate is both in the token header's
//! `x5c` chain and in the registry's `rootcertbundle`, with matching `iss`, `aud`, time claims
//! and an `access` claim that covers the repository and action. The key and certificate are
//! made with the `openssl` command at test time and the signature is computed by
//! `openssl dgst -sha256 -sign`, so no crypto crate is needed.
//!
//! The server counts requests, can require Basic credentials, and grants what the `scope`
//! parameters ask for: everything to a known user, `pull` only to anonymous clients when
//! anonymous pulls are allowed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::AsyncWriteExt as _;

use super::http::query_pairs;
use super::runtime::BackgroundRuntime;

/// The `service` the registry names in its challenge and expects as the token audience.
pub const SERVICE: &str = "ferry-test-registry";
/// The token issuer the registry trusts.
pub const ISSUER: &str = "ferry-test-token-issuer";

/// Who may get tokens, and for how long they are valid.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Known users (name, password); they are granted every action they ask for.
    pub users: Vec<(String, String)>,
    /// Whether clients without credentials get `pull` tokens.
    pub anonymous_pull: bool,
    /// Token lifetime in seconds (`expires_in`).
    pub expires_in: u64,
}

impl Default for TokenAuth {
    fn default() -> Self {
        TokenAuth {
            users: Vec::new(),
            anonymous_pull: false,
            expires_in: 300,
        }
    }
}

impl TokenAuth {
    /// No users, no anonymous access, 300 s tokens.
    pub fn new() -> TokenAuth {
        TokenAuth::default()
    }

    /// Adds a user who may pull and push.
    pub fn user(mut self, name: &str, password: &str) -> TokenAuth {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Lets clients without credentials pull.
    pub fn anonymous_pull(mut self, allowed: bool) -> TokenAuth {
        self.anonymous_pull = allowed;
        self
    }

    /// Sets the token lifetime.
    pub fn expires_in(mut self, secs: u64) -> TokenAuth {
        self.expires_in = secs;
        self
    }
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST` (OAuth2 form).
    pub method: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Whether the request carried credentials (valid or not).
    pub had_credentials: bool,
    /// The `scope` parameters as sent.
    pub scopes: Vec<String>,
    /// HTTP status answered.
    pub status: u16,
}

#[derive(Debug)]
struct TokenState {
    opts: TokenAuth,
    key_path: PathBuf,
    x5c: String,
    log: Mutex<Vec<TokenRequest>>,
}

/// A running token server (see the module doc).
#[derive(Debug)]
pub struct TokenServer {
    _runtime: BackgroundRuntime,
    addr: std::net::SocketAddr,
    state: Arc<TokenState>,
    cert_path: PathBuf,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (scripts/install-test-deps.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TokenServer {
    /// Generates a signing key and certificate in `dir` and starts serving `/token`.
    pub fn start(dir: &Path, opts: TokenAuth) -> TokenServer {
        let key_path = dir.join("token.key");
        let cert_path = dir.join("token.crt");
        let (key, cert) = (
            key_path.to_str().expect("utf-8 path"),
            cert_path.to_str().expect("utf-8 path"),
        );
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=ferry-test-token-issuer",
        ]);
        let der = openssl(&["x509", "-in", cert, "-outform", "DER"]);
        let state = Arc::new(TokenState {
            opts,
            key_path,
            x5c: STANDARD.encode(der),
            log: Mutex::new(Vec::new()),
        });
        let runtime = BackgroundRuntime::new("token-server");
        let router = axum::Router::new()
            .route("/token", get(token).post(token))
            .with_state(state.clone());
        let addr = runtime.serve(router);
        TokenServer {
            _runtime: runtime,
            addr,
            state,
            cert_path,
        }
    }

    /// The realm URL a registry puts in its challenge.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry must trust (`rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// How many token requests were made.
    pub fn request_count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub use ferry_testkit::wire::basic_credentials;

fn unauthorized(message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]});
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"ferry-test-token\""),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `GET /token?service=..&scope=..` (Docker token protocol) and `POST /token` (OAuth2 password
/// grant form) both end here.
async fn token(
    State(state): State<Arc<TokenState>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params = query_pairs(query.as_deref().unwrap_or(""));
    if method == Method::POST {
        params.extend(query_pairs(&String::from_utf8_lossy(&body)));
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let credentials = ferry_testkit::wire::token_credentials(&headers, &params);
    let mut record = TokenRequest {
        method: method.to_string(),
        user: None,
        had_credentials: credentials.is_some(),
        scopes: scopes.clone(),
        status: 200,
    };
    let user = match credentials {
        Some((u, p)) if state.opts.users.iter().any(|(n, w)| *n == u && *w == p) => Some(u),
        Some(_) => {
            record.status = 401;
            state.log.lock().unwrap().push(record);
            return unauthorized("invalid username or password");
        }
        None if state.opts.anonymous_pull => None,
        None => {
            record.status = 401;
            state.log.lock().unwrap().push(record);
            return unauthorized("authentication required");
        }
    };
    record.user = user.clone();

    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| user.is_some() || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = unix_now();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": param("service").unwrap_or_else(|| SERVICE.to_owned()),
        "exp": now + state.opts.expires_in,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{:016x}", super::ports::random_u64()),
        "access": access,
    });
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [state.x5c]});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match sign(&state.key_path, signing_input.as_bytes()).await {
        Ok(s) => s,
        Err(e) => {
            record.status = 500;
            state.log.lock().unwrap().push(record);
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("signing failed: {e}"),
            )
                .into_response();
        }
    };
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    state.log.lock().unwrap().push(record);
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": state.opts.expires_in,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RS256 signature (PKCS#1 v1.5 over SHA-256) of `input` by the PEM key at `key`.
async fn sign(key: &Path, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(out.stdout)
}
