//! ferry's registry tokens: HS256-signed JWTs in the shape of docker's token protocol
//! (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`). `sub` is the user name, empty
//! for an anonymous token; `aud` is the configured service. Only `pull` is ever granted.
//!
//! A token proves who the client is. Which repositories may be pulled is decided on every
//! request by the allow/deny lists, the same for every identity, so the `access` list of a
//! token records what was asked for (with `pull` only) rather than being matched again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_config::access::TokenConfig;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One granted resource: `{"type":"repository","name":"library/nginx","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    /// `repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name as the client wrote it.
    pub name: String,
    /// Granted actions (`pull`).
    pub actions: Vec<String>,
}

/// The claims of a ferry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// User name; empty for anonymous.
    pub sub: String,
    /// The service.
    pub aud: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// What was granted.
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// The credential stamp of the user when the token was issued ([`Signer::stamp`]): a
    /// token stops working when its user's password changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cst: String,
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_in: u64,
    pub(crate) issued_at: SystemTime,
}

/// Signs and verifies tokens with one key.
pub(crate) struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    service: String,
    ttl: Duration,
    key_digest: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Clock skew allowed between replicas, in seconds.
const LEEWAY_SECS: u64 = 10;

impl Signer {
    /// A signer with `key` and the settings of `cfg`.
    pub(crate) fn new(key: &[u8], cfg: &TokenConfig) -> Signer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&cfg.service]);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Signer {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            issuer: cfg.issuer.clone(),
            service: cfg.service.clone(),
            ttl: cfg.ttl.0,
            key_digest: Sha256::digest(key).into(),
        }
    }

    /// A short keyed digest of a user's stored credential (its bcrypt hash or password): the
    /// same on every replica with the same key and users, different after a password change,
    /// and no help in guessing the password (it is keyed with the token key).
    pub(crate) fn stamp(&self, user: &str, secret: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key_digest);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// The service name of challenges.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Signs a token for `sub` (empty: anonymous) with credential stamp `cst`, issued at `now`.
    pub(crate) fn issue(
        &self,
        sub: &str,
        cst: String,
        access: Vec<ResourceActions>,
        now: SystemTime,
    ) -> Issued {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.service.clone(),
            exp: iat + self.ttl.as_secs(),
            nbf: iat.saturating_sub(LEEWAY_SECS),
            iat,
            jti: format!("{:032x}", rand::random::<u128>()),
            access,
            cst,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        Issued {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: UNIX_EPOCH + Duration::from_secs(iat),
        }
    }

    /// Checks the signature, algorithm, issuer, audience and times of a token.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// Parses a scope `repository:<name>:<actions>` (the name may hold a `:port`) and keeps only
/// `pull` (also granted for `*`); other resource types and actions are dropped.
pub(crate) fn grant_pull(scope: &str) -> Option<ResourceActions> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let wants_pull = actions.split(',').any(|a| a == "pull" || a == "*");
    (kind == "repository" && !name.is_empty() && wants_pull).then(|| ResourceActions {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: vec!["pull".to_owned()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::Dur;

    fn signer(key: &[u8]) -> Signer {
        Signer::new(
            key,
            &TokenConfig {
                ttl: Dur::secs(300),
                ..Default::default()
            },
        )
    }

    #[test]
    fn issue_and_verify() {
        let s = signer(b"0123456789abcdef0123456789abcdef");
        let access = vec![grant_pull("repository:library/nginx:pull").unwrap()];
        let t = s.issue("alice", String::new(), access.clone(), SystemTime::now());
        assert_eq!(t.expires_in, 300);
        let c = s.verify(&t.token).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.aud, "ferry");
        assert_eq!(c.access, access);
        assert!(c.exp > c.iat);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = signer(b"k");
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let t = s.issue("alice", String::new(), vec![], long_ago);
        assert!(s.verify(&t.token).unwrap_err().contains("xpired"));
    }

    #[test]
    fn tokens_of_another_key_or_service_are_refused() {
        let t = signer(b"one").issue("", String::new(), vec![], SystemTime::now());
        assert!(signer(b"two").verify(&t.token).is_err());
        let other = Signer::new(
            b"one",
            &TokenConfig {
                service: "elsewhere".into(),
                ..Default::default()
            },
        );
        assert!(other.verify(&t.token).is_err());
        assert!(signer(b"one").verify("not.a.jwt").is_err());
    }

    #[test]
    fn scopes_grant_pull_only() {
        let g = grant_pull("repository:localhost:5000/a/b:pull,push").unwrap();
        assert_eq!(g.name, "localhost:5000/a/b");
        assert_eq!(g.actions, ["pull"]);
        assert_eq!(grant_pull("repository:x:*").unwrap().actions, ["pull"]);
        assert!(grant_pull("repository:x:push").is_none());
        assert!(grant_pull("registry:catalog:*").is_none());
        assert!(grant_pull("garbage").is_none());
    }
}
