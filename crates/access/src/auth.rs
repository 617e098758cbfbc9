//! Who is asking: the `Authorization` header (Basic credentials or one of our Bearer
//! tokens), the `WWW-Authenticate` challenge that starts docker's token flow, and the guard
//! against password guessing (failed logins per client IP, counted like any quota).

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;

use crate::denial::{Denial, human, reason};
use crate::grant::Identity;
use crate::ip::ip_subject;
use crate::policy::State;
use crate::quota::gcra::{Mode, Op};
use crate::request::Resource;

/// What the client presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No `Authorization` header.
    Nothing,
    /// `Basic` user and password.
    Basic(String, String),
    /// `Bearer` token.
    Bearer(&'a str),
    /// Anything else (another scheme, bad encoding).
    Unusable,
}

/// Reads the `Authorization` header.
pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Presented::Nothing;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Unusable;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Presented::Bearer(rest);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Presented::Unusable;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok();
    let text = decoded.and_then(|d| String::from_utf8(d).ok());
    match text.as_deref().and_then(|t| t.split_once(':')) {
        Some((u, p)) if !u.is_empty() => Presented::Basic(u.to_owned(), p.to_owned()),
        _ => Presented::Unusable,
    }
}

/// The `WWW-Authenticate` value pointing at our token service.
pub(crate) fn challenge(
    realm: &str,
    service: &str,
    target: Option<&Resource<'_>>,
    error: Option<&str>,
) -> String {
    let mut c = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if let Some(t) = target {
        c.push_str(&format!(
            ",scope=\"repository:{}/{}:pull\"",
            t.upstream, t.repository
        ));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

/// Checks a user name and password, refusing clients with too many failed logins.
pub(crate) async fn login(
    st: &State,
    ip: IpAddr,
    user: &str,
    password: &str,
) -> Result<Identity, Denial> {
    let p = &st.policy;
    let subject = ip_subject(ip, p.ipv6_prefix);
    let guard = p.failed_logins.as_ref().map(|l| Op {
        key: l.key("fail", &subject),
        params: l.params(),
        cost: 1.0,
        mode: Mode::Require,
    });
    if let Some(op) = &guard {
        let v = st.store.run(std::slice::from_ref(op)).await;
        if !v[0].allowed {
            let retry = Duration::from_micros(v[0].wait_us as u64);
            let msg = format!(
                "too many failed logins from {subject}; retry in {}",
                human(retry)
            );
            return Err(Denial::too_many(
                reason::LOGIN_FAILURES,
                subject,
                msg,
                retry,
            ));
        }
    }
    if p.users.verify(user, password).await {
        return Ok(Identity::User(user.to_owned()));
    }
    if let Some(mut op) = guard {
        op.mode = Mode::Debit;
        st.store.run(std::slice::from_ref(&op)).await;
    }
    tracing::info!(client = %subject, user, "failed login");
    let msg = "invalid username or password".to_owned();
    Err(Denial::unauthorized(
        reason::BAD_CREDENTIALS,
        subject,
        msg,
        None,
    ))
}

/// Checks one of our tokens.
pub(crate) fn bearer(st: &State, ip: IpAddr, token: &str) -> Result<Identity, Denial> {
    let p = &st.policy;
    let subject = || ip_subject(ip, p.ipv6_prefix);
    let claims = p.signer.verify(token).map_err(|e| {
        let msg = format!("invalid token ({e}); log in again");
        Denial::unauthorized(reason::INVALID_TOKEN, subject(), msg, None)
    })?;
    if claims.sub.is_empty() {
        if !p.anonymous {
            let msg = "this mirror requires a login".to_owned();
            return Err(Denial::unauthorized(
                reason::LOGIN_REQUIRED,
                subject(),
                msg,
                None,
            ));
        }
        return Ok(Identity::Anonymous);
    }
    let Some(secret) = p.users.secret(&claims.sub) else {
        let msg = format!("the user {:?} of this token no longer exists", claims.sub);
        return Err(Denial::unauthorized(
            reason::INVALID_TOKEN,
            subject(),
            msg,
            None,
        ));
    };
    if p.signer.stamp(&claims.sub, secret) != claims.cst {
        let msg = format!(
            "the password of user {:?} changed since this token was issued; log in again",
            claims.sub
        );
        return Err(Denial::unauthorized(
            reason::INVALID_TOKEN,
            subject(),
            msg,
            None,
        ));
    }
    Ok(Identity::User(claims.sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TargetKind;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn reads_the_authorization_header() {
        assert_eq!(presented(&HeaderMap::new()), Presented::Nothing);
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(
            presented(&auth(&format!("Basic {basic}"))),
            Presented::Basic("alice".into(), "pa:ss".into())
        );
        assert_eq!(
            presented(&auth("bearer abc.def.ghi")),
            Presented::Bearer("abc.def.ghi")
        );
        assert_eq!(presented(&auth("Basic !!!")), Presented::Unusable);
        assert_eq!(presented(&auth("Digest x")), Presented::Unusable);
    }

    #[test]
    fn challenges_name_realm_service_and_scope() {
        let t = Resource {
            upstream: "docker.io",
            repository: "library/nginx",
            kind: TargetKind::Manifest,
            digest: None,
        };
        assert_eq!(
            challenge("https://m.example/token", "ferry", Some(&t), None),
            r#"Bearer realm="https://m.example/token",service="ferry",scope="repository:docker.io/library/nginx:pull""#
        );
        assert_eq!(
            challenge("http://h/token", "ferry", None, Some("invalid_token")),
            r#"Bearer realm="http://h/token",service="ferry",error="invalid_token""#
        );
    }
}
