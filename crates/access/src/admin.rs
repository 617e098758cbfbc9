//! Who may use the admin API (`/admin/v1/...`, `ferry usage`, `ferry bans`): a bearer token
//! of `access.admin.tokens`, or the Basic credentials of a user with `admin: true`. Anonymous
//! callers get 401 with a Basic challenge; a user who is no admin gets 403.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_metrics::Metrics;

use http::HeaderMap;
use sha2::{Digest as _, Sha256};

use crate::Access;
use crate::auth::{Presented, login, presented};
use crate::denial::{Denial, reason};
use crate::fairuse::bans::Sanction;
use crate::ip::ip_subject;
use crate::usage::topk::Order;
use crate::usage::{Dimension, UsageReport, UsageSink};

/// The challenge of the admin API.
pub const ADMIN_CHALLENGE: &str = "Basic realm=\"ferry admin\"";

/// SHA-256 of a token (compared in constant time).
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    /// The request log's end of usage accounting: one [`crate::usage::UsageRecord`] per
    /// answer.
    pub fn usage_sink(&self) -> UsageSink {
        self.fair.sink()
    }

    /// The `top` heaviest keys of `by` over `window`, ordered by `order`.
    /// With `redis:` the report covers every replica sharing it.
    pub async fn usage(
        &self,
        by: Dimension,
        window: Duration,
        top: usize,
        order: Order,
    ) -> UsageReport {
        self.fair.usage(by, window, top, order).await
    }

    /// Live bans and slow-downs, soonest end first.
    pub fn bans(&self) -> Vec<Sanction> {
        self.fair.sanctions.list()
    }

    /// Lifts the ban or slow-down of `who`: a subject (`ip 203.0.113.7`, `user alice`), an
    /// address or a user name. Returns the subject lifted. Its per-client rule counters
    /// start afresh (else the next request would ban it again).
    pub async fn lift(&self, who: &str) -> Option<String> {
        let who = who.trim();
        let mut candidates = vec![who.to_owned()];
        if let Ok(ip) = who.parse::<IpAddr>() {
            let p = self.state.load().policy.ipv6_prefix;
            candidates.push(ip_subject(ip, p));
        }
        candidates.push(format!("ip {who}"));
        candidates.push(format!("user {who}"));
        for c in candidates {
            if self.fair.sanctions.lift(&c).await {
                self.fair.forgive(&c).await;
                tracing::info!(subject = %c, "ban lifted");
                return Some(c);
            }
        }
        None
    }

    /// Keeps bans across restarts in `path` when there is no Redis (with Redis they live
    /// there).
    pub fn keep_bans_in(&self, path: PathBuf) {
        self.fair.sanctions.keep_in(path);
    }

    /// Counts rule hits, bans, slow-downs and budget steps in `metrics`.
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.fair.metrics.set(metrics);
    }

    /// Checks the password of a user who must be an admin (the console's login form, or
    /// Basic credentials of the admin API); failed logins count against
    /// `access.quotas.failed_logins` like any other login. `Ok` names the user.
    pub async fn admin_login(
        &self,
        ip: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<String, Denial> {
        let st = self.state.load_full();
        let who = login(&st, ip, user, password).await.map_err(|mut d| {
            d.challenge = Some(ADMIN_CHALLENGE.to_owned());
            d
        })?;
        if st.policy.admins.contains(user) {
            Ok(who.to_string())
        } else {
            let msg = format!("user {user} is not an admin (access.users.{user}.admin)");
            Err(Denial::denied(
                reason::NOT_ADMIN,
                format!("user {user}"),
                msg,
            ))
        }
    }

    /// Checks an admin API caller; `Ok` names who it is (`token` or the user).
    pub async fn admin(&self, ip: IpAddr, headers: &HeaderMap) -> Result<String, Denial> {
        let st = self.state.load_full();
        let p = &st.policy;
        let subject = ip_subject(ip, p.ipv6_prefix);
        let unauthorized = |msg: &str| {
            Denial::unauthorized(
                reason::NOT_ADMIN,
                subject.clone(),
                msg.to_owned(),
                Some(ADMIN_CHALLENGE.to_owned()),
            )
        };
        match presented(headers) {
            Presented::Bearer(t) => {
                let d = digest(t);
                if p.admin_tokens.iter().any(|k| same(k, &d)) {
                    Ok("token".to_owned())
                } else {
                    Err(unauthorized("this admin token is not valid"))
                }
            }
            Presented::Basic(user, password) => self.admin_login(ip, &user, &password).await,
            _ => Err(unauthorized(
                "the admin API needs an admin token (Authorization: Bearer) or an admin user",
            )),
        }
    }
}
