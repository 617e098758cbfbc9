//! A refused request: the OCI error code, the message shown to the client, the headers the
//! answer needs (`Retry-After`, `WWW-Authenticate`), and a short reason for metrics and logs.

use std::time::Duration;

use ferry_oci::{ErrorCode, OciError};

/// Metric labels of [`Denial::reason`], one per rule that can refuse a request.
pub mod reason {
    /// The client network is in `block_ips`.
    pub const BLOCKED_IP: &str = "blocked_ip";
    /// The client network is not in `clients.allow`, or is in `clients.deny`.
    pub const DENIED_CLIENT: &str = "denied_client";
    /// The repository matches a `deny` pattern.
    pub const DENIED_REPO: &str = "denied_repo";
    /// An allowlist is set and the repository is not on it.
    pub const NOT_ALLOWED_REPO: &str = "not_allowed_repo";
    /// No credentials where a login is needed: the normal first step of the token flow.
    pub const AUTH_CHALLENGE: &str = "auth_challenge";
    /// Anonymous pulls are off and the client presented no login.
    pub const LOGIN_REQUIRED: &str = "login_required";
    /// Wrong user name or password.
    pub const BAD_CREDENTIALS: &str = "bad_credentials";
    /// A bearer token that is not ours, expired, or of a user that no longer exists.
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// Too many failed logins from one client IP.
    pub const LOGIN_FAILURES: &str = "login_failures";
    /// The request-rate quota is used up.
    pub const QUOTA_REQUESTS: &str = "quota_requests";
    /// The byte quota is used up.
    pub const QUOTA_BYTES: &str = "quota_bytes";
    /// The cache-miss request quota is used up.
    pub const QUOTA_MISS_REQUESTS: &str = "quota_miss_requests";
    /// The cache-miss byte quota is used up.
    pub const QUOTA_MISS_BYTES: &str = "quota_miss_bytes";
    /// Too many requests of this client in flight.
    pub const CONCURRENCY: &str = "concurrency";
    /// A fair-use rule with action `deny` fired (`access.rules`).
    pub const FAIRUSE_DENY: &str = "fairuse_deny";
    /// The client is banned by a fair-use rule (`access.rules`, action `ban`).
    pub const FAIRUSE_BAN: &str = "fairuse_ban";
    /// An egress budget step refuses anonymous clients (`access.budgets`).
    pub const BUDGET: &str = "budget";
    /// The admin API refused a caller that is no admin.
    pub const NOT_ADMIN: &str = "not_admin";

    /// Every reason, to pre-register metric label values.
    pub const ALL: &[&str] = &[
        BLOCKED_IP,
        DENIED_CLIENT,
        DENIED_REPO,
        NOT_ALLOWED_REPO,
        AUTH_CHALLENGE,
        LOGIN_REQUIRED,
        BAD_CREDENTIALS,
        INVALID_TOKEN,
        LOGIN_FAILURES,
        QUOTA_REQUESTS,
        QUOTA_BYTES,
        QUOTA_MISS_REQUESTS,
        QUOTA_MISS_BYTES,
        CONCURRENCY,
        FAIRUSE_DENY,
        FAIRUSE_BAN,
        BUDGET,
        NOT_ADMIN,
    ];
}

/// A refused request; the server turns it into the HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// `UNAUTHORIZED` (401), `DENIED` (403) or `TOOMANYREQUESTS` (429).
    pub code: ErrorCode,
    /// Shown to the client: says why, and what to do.
    pub message: String,
    /// For `Retry-After` (round up to whole seconds).
    pub retry_after: Option<Duration>,
    /// The `WWW-Authenticate` value of a 401.
    pub challenge: Option<String>,
    /// One of [`reason`], for metrics.
    pub reason: &'static str,
    /// Who was refused, for logs: `user alice` or `ip 203.0.113.7`.
    pub subject: String,
}

impl Denial {
    /// A 403 `DENIED`.
    pub fn denied(reason: &'static str, subject: String, message: String) -> Denial {
        Denial {
            code: ErrorCode::Denied,
            message,
            retry_after: None,
            challenge: None,
            reason,
            subject,
        }
    }

    /// A 401 `UNAUTHORIZED` with an optional challenge.
    pub fn unauthorized(
        reason: &'static str,
        subject: String,
        message: String,
        challenge: Option<String>,
    ) -> Denial {
        Denial {
            code: ErrorCode::Unauthorized,
            message,
            retry_after: None,
            challenge,
            reason,
            subject,
        }
    }

    /// A 429 `TOOMANYREQUESTS` with `Retry-After`.
    pub fn too_many(
        reason: &'static str,
        subject: String,
        message: String,
        retry: Duration,
    ) -> Denial {
        Denial {
            code: ErrorCode::TooManyRequests,
            message,
            retry_after: Some(retry),
            challenge: None,
            reason,
            subject,
        }
    }

    /// The OCI error of the answer body.
    pub fn to_oci(&self) -> OciError {
        OciError::new(self.code, self.message.clone())
    }

    /// `Retry-After` in whole seconds (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|s| s.max(1))
    }
}

/// A duration for people, rounded to seconds (`3s`, `35m 10s`).
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs.max(1))).to_string()
}
