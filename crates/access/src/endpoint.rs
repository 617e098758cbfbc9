//! The token endpoint's wire format: docker's token protocol (`GET /token?service=..&scope=..`
//! with optional Basic credentials) and the OAuth2 password form (`POST /token`,
//! `grant_type=password&username=..&password=..&scope=..`), answered with
//! `{"token","access_token","expires_in","issued_at"}`.

use serde::Serialize;

use crate::token::{Issued, ResourceActions, grant_pull};

/// The parameters of a token request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    /// Requested scopes (each may be space-separated in the OAuth2 form).
    pub(crate) scopes: Vec<String>,
    /// `grant_type` (OAuth2 form).
    pub(crate) grant_type: Option<String>,
    /// `username` (OAuth2 form).
    pub(crate) username: Option<String>,
    /// `password` (OAuth2 form).
    pub(crate) password: Option<String>,
}

impl TokenRequest {
    /// Parses a query string or an `application/x-www-form-urlencoded` body.
    pub(crate) fn parse(form: &[u8]) -> TokenRequest {
        let mut req = TokenRequest::default();
        for (k, v) in url::form_urlencoded::parse(form) {
            match &*k {
                "scope" => req
                    .scopes
                    .extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
                "grant_type" => req.grant_type = Some(v.into_owned()),
                "username" => req.username = Some(v.into_owned()),
                "password" => req.password = Some(v.into_owned()),
                _ => {}
            }
        }
        req
    }

    /// The scopes granted: `pull` on each requested repository.
    pub(crate) fn granted(&self) -> Vec<ResourceActions> {
        self.scopes.iter().filter_map(|s| grant_pull(s)).collect()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: String,
}

/// The JSON answer.
pub(crate) fn body(issued: &Issued) -> Vec<u8> {
    let body = Body {
        token: &issued.token,
        access_token: &issued.token,
        expires_in: issued.expires_in,
        issued_at: humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
    };
    serde_json::to_vec(&body).expect("token body serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_and_space_separated_scopes() {
        let q = TokenRequest::parse(b"service=ferry&scope=repository%3Alibrary%2Fnginx%3Apull&scope=repository:a/b:pull,push");
        assert_eq!(
            q.scopes,
            ["repository:library/nginx:pull", "repository:a/b:pull,push"]
        );
        let f = TokenRequest::parse(b"grant_type=password&username=alice&password=p%40ss&scope=repository:x:pull+registry:catalog:*");
        assert_eq!(f.grant_type.as_deref(), Some("password"));
        assert_eq!(f.password.as_deref(), Some("p@ss"));
        assert_eq!(f.scopes.len(), 2);
        assert_eq!(f.granted().len(), 1, "only repository pull is granted");
    }
}
