//! [`Access`]: the one object the server calls. It holds the compiled policy behind an
//! `ArcSwap` (a reload swaps it atomically; requests in flight keep the one they started with)
//! and the counters that outlive reloads (in-memory GCRA state, concurrency slots).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use ferry_config::RedisConfig;
use ferry_config::access::AccessConfig;
use http::HeaderMap;

use crate::auth::{Presented, bearer, challenge, login, presented};
use crate::denial::{Denial, reason};
use crate::endpoint::{TokenRequest, body};
use crate::error::AccessError;
use crate::fairuse::bans::connection;
use crate::fairuse::rules::Ctx;
use crate::fairuse::{Compiled, Effects, FairUse};
use crate::grant::{Grant, Identity};
use crate::ip::ip_subject;
use crate::meter::Meter;
use crate::policy::{Policy, State};
use crate::quota::concurrency::Concurrency;
use crate::quota::local::LocalStore;
use crate::quota::redis::RedisStore;
use crate::quota::{Store, Tier, admit};
use crate::request::{RequestInfo, TargetKind};

/// Access control and fair use for one server (see the crate docs).
#[derive(Debug)]
pub struct Access {
    pub(crate) state: ArcSwap<State>,
    local: Arc<LocalStore>,
    concurrency: Arc<Concurrency>,
    generated_key: [u8; 32],
    pub(crate) fair: Arc<FairUse>,
}

impl Access {
    /// Builds access control from the `access:` section and, when set, the `redis:` section.
    /// A Redis that is down is no error (decisions fall back to memory); a bad URL is.
    pub async fn new(
        cfg: &AccessConfig,
        redis: Option<&RedisConfig>,
    ) -> Result<Access, AccessError> {
        let generated_key: [u8; 32] = rand::random();
        let local = Arc::new(LocalStore::default());
        let policy = Policy::build(cfg, &generated_key)?;
        let store = make_store(&local, redis, &cfg.quotas.redis_prefix, None)?;
        let conn = redis.map(|r| connection(&r.url)).transpose()?;
        let fair = FairUse::start(cfg, Compiled::new(cfg, store.clone())?, conn);
        Ok(Access {
            state: ArcSwap::from_pointee(State { policy, store }),
            local,
            concurrency: Arc::new(Concurrency::default()),
            generated_key,
            fair,
        })
    }

    /// Swaps in a new config. Counters survive for every limit that did not change (and the
    /// generated token key survives, so issued tokens stay valid). On error the old config
    /// stays in force.
    pub async fn reload(
        &self,
        cfg: &AccessConfig,
        redis: Option<&RedisConfig>,
    ) -> Result<(), AccessError> {
        let prepared = self.prepare_reload(cfg, redis).await?;
        self.apply_reload(prepared);
        Ok(())
    }

    /// Builds the state of a new config (users, lists, quota store) without applying it, so
    /// that a caller can check the rest of the config first ([`Access::apply_reload`]).
    pub async fn prepare_reload(
        &self,
        cfg: &AccessConfig,
        redis: Option<&RedisConfig>,
    ) -> Result<Reload, AccessError> {
        let policy = Policy::build(cfg, &self.generated_key)?;
        let old = self.state.load_full();
        let store = make_store(
            &self.local,
            redis,
            &cfg.quotas.redis_prefix,
            Some(&old.store),
        )?;
        let compiled = Compiled::new(cfg, store.clone())?;
        Ok(Reload(
            Arc::new(State { policy, store }),
            Arc::new(compiled),
        ))
    }

    /// Applies a prepared config.
    pub fn apply_reload(&self, r: Reload) {
        self.state.store(r.0);
        self.fair.compiled.store(r.1);
    }

    /// The client address: the peer, or what a trusted proxy forwarded (the right-most hop of
    /// `X-Forwarded-For` that is not a trusted proxy, else `X-Real-IP`).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.state.load().policy.proxies.client_ip(peer, headers)
    }

    /// Whether `peer` is a trusted proxy (`access.trusted_proxies`), whose `X-Forwarded-*`
    /// headers are believed.
    pub fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.state.load().policy.proxies.trusts(peer.to_canonical())
    }

    /// The `WWW-Authenticate` challenge for a 401 that access control did not produce (an
    /// upstream that refused ferry's credentials, a refused token request): ferry's token
    /// service when logins are possible, else a plain Basic challenge (RFC 7235 wants one on
    /// every 401).
    pub fn challenge(&self, realm: &str) -> String {
        let st = self.state.load();
        if st.policy.logins() {
            challenge(realm, st.policy.signer.service(), None, None)
        } else {
            "Basic realm=\"ferry\"".to_owned()
        }
    }

    /// Decides a request: client networks, repository lists, login, then concurrency, byte
    /// and request quotas. With no users, no lists and no quotas this does no work at all.
    pub async fn check(&self, req: &RequestInfo<'_>) -> Result<Grant, Denial> {
        let st = self.state.load_full();
        let p = &st.policy;
        if let Err(refused) = p.clients.check(req.ip) {
            return match req.target {
                Some(_) => Err(refused),
                None => ping_of_refused_client(p, req, refused),
            };
        }
        if let Some(t) = &req.target {
            p.repos.check(t.upstream, t.repository, || {
                ip_subject(req.ip, p.ipv6_prefix)
            })?;
        }
        let identity = if p.logins() {
            identify(&st, req).await?
        } else {
            Identity::Anonymous
        };
        let tier = match &identity {
            Identity::Anonymous => p.tiers.anonymous(),
            Identity::User(u) => p.tiers.user(u),
        };
        let subject = match &identity {
            Identity::Anonymous => ip_subject(req.ip, p.ipv6_prefix),
            Identity::User(u) => format!("user {u}"),
        };
        let fx = match &req.target {
            Some(t) if self.fair.active() => {
                let agent = crate::usage::agent_hash(req.headers);
                self.fair_use(req.ip, agent, &identity, &subject, t).await?
            }
            _ => Effects::default(),
        };
        let tier = match fx.bandwidth {
            Some(bw) => Some(Tier::slowed(tier, bw)),
            None => tier.cloned(),
        };
        let (Some(tier), Some(target)) = (tier, req.target) else {
            return Ok(Grant::free(identity, req.ip).with_warnings(fx.warnings));
        };
        let tier = &tier;
        let adm = admit(&st.store, &self.concurrency, tier, &subject).await?;
        let meter = tier.meters_bytes().then(|| Meter {
            store: st.store.clone(),
            local: self.local.clone(),
            tier: tier.clone(),
            subject,
            blob: target.kind == TargetKind::Blob,
        });
        Ok(
            Grant::counted(identity, req.ip, meter, adm.permit, adm.miss_denial)
                .with_warnings(fx.warnings),
        )
    }

    /// Fair use of a routed request: bans, budget steps, `access.rules`.
    async fn fair_use(
        &self,
        ip: std::net::IpAddr,
        agent: u64,
        identity: &Identity,
        subject: &str,
        t: &crate::request::Resource<'_>,
    ) -> Result<Effects, Denial> {
        let mut repo = String::with_capacity(t.upstream.len() + 1 + t.repository.len());
        repo.push_str(t.upstream);
        repo.push('/');
        repo.push_str(t.repository);
        let ctx = Ctx {
            ip,
            subject,
            anonymous: identity.user().is_none(),
            repo: Some(&repo),
            blob: t.digest,
            agent,
        };
        self.fair.admit(&ctx).await
    }

    /// The token endpoint (`GET /token`, `GET /auth/token`): docker's token protocol with
    /// optional Basic credentials; anonymous tokens when anonymous pulls are allowed. Returns
    /// the JSON body.
    pub async fn token(
        &self,
        ip: IpAddr,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Vec<u8>, Denial> {
        let st = self.state.load_full();
        no_token_for_refused_client(&st, ip)?;
        let req = TokenRequest::parse(query.unwrap_or("").as_bytes());
        let identity = match presented(headers) {
            Presented::Basic(user, password) => login(&st, ip, &user, &password).await?,
            _ => anonymous_or_refuse(&st, ip)?,
        };
        Ok(issue(&st, &identity, &req))
    }

    /// The OAuth2 form of the token endpoint (`POST /token`, as containerd sends when it has
    /// credentials): `grant_type=password` with `username`/`password`, or no grant for an
    /// anonymous token. Refresh tokens are not issued, so `grant_type=refresh_token` is 401
    /// (clients then fall back to `GET`).
    pub async fn token_form(&self, ip: IpAddr, form: &[u8]) -> Result<Vec<u8>, Denial> {
        let st = self.state.load_full();
        no_token_for_refused_client(&st, ip)?;
        let req = TokenRequest::parse(form);
        let identity = match (req.grant_type.as_deref(), &req.username, &req.password) {
            (Some("password"), Some(u), Some(p)) => login(&st, ip, u, p).await?,
            (None, _, _) => anonymous_or_refuse(&st, ip)?,
            _ => {
                let msg = "unsupported grant: use grant_type=password".to_owned();
                let subject = ip_subject(ip, st.policy.ipv6_prefix);
                return Err(Denial::unauthorized(
                    reason::BAD_CREDENTIALS,
                    subject,
                    msg,
                    None,
                ));
            }
        };
        Ok(issue(&st, &identity, &req))
    }

    /// Redis calls that failed and were decided in memory (for a metric).
    pub fn redis_failures(&self) -> u64 {
        self.state.load().store.failures()
    }

    /// Whether logins are possible (users exist), so requests without credentials are
    /// challenged.
    pub fn logins_enabled(&self) -> bool {
        self.state.load().policy.logins()
    }
}

/// An access config prepared by [`Access::prepare_reload`].
pub struct Reload(Arc<State>, Arc<Compiled>);

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload").finish_non_exhaustive()
    }
}

fn make_store(
    local: &Arc<LocalStore>,
    redis: Option<&RedisConfig>,
    prefix: &str,
    old: Option<&Arc<Store>>,
) -> Result<Arc<Store>, AccessError> {
    let Some(r) = redis else {
        return Ok(Arc::new(Store::Local(local.clone())));
    };
    if let Some(old) = old.filter(|o| matches!(&***o, Store::Redis(s) if s.same(&r.url, prefix))) {
        return Ok(old.clone());
    }
    Ok(Arc::new(Store::Redis(RedisStore::new(
        &r.url,
        prefix,
        local.clone(),
    )?)))
}

/// Who sent `req`, when logins are possible: a request without credentials is challenged so
/// that clients log in or fetch an anonymous token (docker's token flow).
async fn identify(st: &State, req: &RequestInfo<'_>) -> Result<Identity, Denial> {
    let p = &st.policy;
    let service = p.signer.service();
    let target = req.target.as_ref();
    let with_challenge = |mut d: Denial, error: Option<&str>| {
        d.challenge = Some(challenge(req.realm, service, target, error));
        d
    };
    match presented(req.headers) {
        Presented::Basic(user, password) => {
            login(st, req.ip, &user, &password).await.map_err(|d| {
                if d.code == ferry_oci::ErrorCode::Unauthorized {
                    with_challenge(d, None)
                } else {
                    d
                }
            })
        }
        Presented::Bearer(token) => {
            bearer(st, req.ip, token).map_err(|d| with_challenge(d, Some("invalid_token")))
        }
        Presented::Nothing | Presented::Unusable => {
            let subject = ip_subject(req.ip, p.ipv6_prefix);
            let (why, msg) = if p.anonymous {
                (reason::AUTH_CHALLENGE, "authentication required".to_owned())
            } else {
                (
                    reason::LOGIN_REQUIRED,
                    "this mirror requires a login (docker login)".to_owned(),
                )
            };
            Err(with_challenge(
                Denial::unauthorized(why, subject, msg, None),
                None,
            ))
        }
    }
}

/// The ping (`GET /v2/`) of a client whose network is refused (`block_ips`, `clients`).
/// containers/image (podman, skopeo, CRI-O) prints only the status of a failed ping, never its
/// message, so refusing the ping would hide the reason from those users. The ping is answered
/// as for anyone (200, or the login challenge when users exist, without looking at any
/// credentials); the refusal and its reason come with the token request or the first request
/// for content, whose messages every client prints.
fn ping_of_refused_client(
    p: &Policy,
    req: &RequestInfo<'_>,
    refused: Denial,
) -> Result<Grant, Denial> {
    if !p.logins() {
        return Ok(Grant::free(Identity::Anonymous, req.ip));
    }
    let challenge = challenge(req.realm, p.signer.service(), None, None);
    Err(Denial::unauthorized(
        refused.reason,
        refused.subject,
        refused.message,
        Some(challenge),
    ))
}

/// A client whose network is refused gets no token, and no password check (no bcrypt is spent
/// on it). The answer is a 401 carrying the reason, not a 403: containers/image prints the
/// message of a 401 token answer, but only the status of any other.
fn no_token_for_refused_client(st: &State, ip: IpAddr) -> Result<(), Denial> {
    st.policy
        .clients
        .check(ip)
        .map_err(|d| Denial::unauthorized(d.reason, d.subject, d.message, None))
}

fn anonymous_or_refuse(st: &State, ip: IpAddr) -> Result<Identity, Denial> {
    if st.policy.anonymous {
        return Ok(Identity::Anonymous);
    }
    let msg = "this mirror requires a login (docker login)".to_owned();
    let subject = ip_subject(ip, st.policy.ipv6_prefix);
    Err(Denial::unauthorized(
        reason::LOGIN_REQUIRED,
        subject,
        msg,
        None,
    ))
}

fn issue(st: &State, identity: &Identity, req: &TokenRequest) -> Vec<u8> {
    let p = &st.policy;
    let sub = identity.user().unwrap_or("");
    let cst = p
        .users
        .secret(sub)
        .map(|s| p.signer.stamp(sub, s))
        .unwrap_or_default();
    let issued = p.signer.issue(sub, cst, req.granted(), SystemTime::now());
    body(&issued)
}
