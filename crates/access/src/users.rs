//! Users who can log in: bcrypt lines of an htpasswd file and users of the config.
//!
//! bcrypt is slow on purpose (tens of milliseconds), and Basic auth sends the password with
//! every request, so a successful check is remembered as a salted SHA-256 of the password:
//! the same password is then accepted without bcrypt, a different one goes to bcrypt again.
//! bcrypt runs on the blocking pool, never on the async workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ferry_config::access::{AccessConfig, is_bcrypt, is_user_name};
use sha2::{Digest, Sha256};

use crate::error::AccessError;

/// A stored credential.
#[derive(Clone)]
enum Cred {
    Bcrypt(String),
    Plain(String),
}

/// The users of one policy.
pub(crate) struct Users {
    creds: HashMap<String, Cred>,
    salt: [u8; 16],
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.creds.len())
            .finish()
    }
}

impl Users {
    /// Users of the config and the htpasswd file; a name in both is an error.
    pub(crate) fn load(cfg: &AccessConfig) -> Result<Users, AccessError> {
        let mut creds = HashMap::new();
        if let Some(path) = &cfg.htpasswd {
            for (name, hash) in read_htpasswd(path)? {
                creds.insert(name, Cred::Bcrypt(hash));
            }
        }
        for (name, u) in &cfg.users {
            let cred = match (&u.bcrypt, &u.password) {
                (Some(h), _) => Cred::Bcrypt(h.clone()),
                (None, Some(p)) => Cred::Plain(p.expose().to_owned()),
                (None, None) => continue,
            };
            if creds.insert(name.clone(), cred).is_some() {
                let msg = format!("access.users.{name}: the user is also in the htpasswd file");
                return Err(AccessError::Invalid(vec![msg]));
            }
        }
        Ok(Users {
            creds,
            salt: rand::random(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether nobody can log in.
    pub(crate) fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }

    /// Whether `name` is a user.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.creds.contains_key(name)
    }

    /// The stored credential of `name` (bcrypt hash or password), for token stamps.
    pub(crate) fn secret(&self, name: &str) -> Option<&str> {
        self.creds.get(name).map(|c| match c {
            Cred::Bcrypt(h) => h.as_str(),
            Cred::Plain(p) => p.as_str(),
        })
    }

    /// Whether `password` is right for `name`.
    pub(crate) async fn verify(&self, name: &str, password: &str) -> bool {
        let Some(cred) = self.creds.get(name) else {
            burn_time(password.to_owned()).await;
            return false;
        };
        let fingerprint = self.fingerprint(name, password);
        match cred {
            Cred::Plain(p) => constant_eq(&self.fingerprint(name, p), &fingerprint),
            Cred::Bcrypt(hash) => {
                if self.remembered(name, &fingerprint) {
                    return true;
                }
                let ok = bcrypt_verify(password.to_owned(), hash.clone()).await;
                if ok {
                    self.remember(name, fingerprint);
                }
                ok
            }
        }
    }

    fn fingerprint(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn remembered(&self, name: &str, fingerprint: &[u8; 32]) -> bool {
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).is_some_and(|f| constant_eq(f, fingerprint))
    }

    fn remember(&self, name: &str, fingerprint: [u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_owned(), fingerprint);
    }
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn bcrypt_verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// Spends about the time of a real check, so unknown names cannot be told from wrong passwords.
async fn burn_time(password: String) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let _ = tokio::task::spawn_blocking(move || {
        let hash =
            DUMMY.get_or_init(|| bcrypt::hash("ferry", bcrypt::DEFAULT_COST).unwrap_or_default());
        bcrypt::verify(password, hash).ok()
    })
    .await;
}

/// Reads an htpasswd file: `name:bcrypt-hash` lines, `#` comments and blank lines skipped.
pub(crate) fn read_htpasswd(path: &Path) -> Result<Vec<(String, String)>, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_htpasswd(&text).map_err(|(line, message)| AccessError::Htpasswd {
        path: path.to_owned(),
        line,
        message,
    })
}

/// Parses htpasswd text; an error carries the 1-based line.
pub(crate) fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut users: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = line
            .split_once(':')
            .ok_or((i + 1, "expected name:hash".to_owned()))?;
        if !is_user_name(name) {
            return Err((i + 1, format!("{name:?} is not a user name")));
        }
        if !is_bcrypt(hash) {
            let msg = format!(
                "the password of {name:?} is not bcrypt; only bcrypt is supported (htpasswd -B)"
            );
            return Err((i + 1, msg));
        }
        if users.iter().any(|(n, _)| n == name) {
            return Err((i + 1, format!("{name:?} appears twice")));
        }
        users.push((name.to_owned(), hash.to_owned()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::Secret;
    use ferry_config::access::UserConfig;

    fn line(name: &str, password: &str) -> String {
        format!("{name}:{}", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn parses_bcrypt_lines() {
        let text = format!(
            "# users\n{}\n\n{}\n",
            line("alice", "a-pass"),
            line("ci-bot", "b")
        );
        let users = parse_htpasswd(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, "alice");
        assert!(bcrypt::verify("a-pass", &users[0].1).unwrap());
    }

    #[test]
    fn refuses_other_formats_by_line() {
        let md5 = "bob:$apr1$abcdefgh$0123456789abcdefghijkl";
        let e = parse_htpasswd(&format!("{}\n{md5}\n", line("alice", "x"))).unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("only bcrypt"), "{}", e.1);
        assert_eq!(parse_htpasswd("no-colon").unwrap_err().0, 1);
        let twice = format!("{}\n{}", line("a", "x"), line("a", "y"));
        assert!(parse_htpasswd(&twice).unwrap_err().1.contains("twice"));
    }

    #[tokio::test]
    async fn verifies_file_and_config_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, line("alice", "wonderland") + "\n").unwrap();
        let mut cfg = AccessConfig {
            htpasswd: Some(path),
            ..Default::default()
        };
        cfg.users.insert(
            "bob".into(),
            UserConfig {
                password: Some(Secret("builder".into())),
                bcrypt: None,
                admin: false,
            },
        );
        let users = Users::load(&cfg).unwrap();
        assert!(users.verify("alice", "wonderland").await);
        assert!(users.verify("alice", "wonderland").await, "remembered");
        assert!(!users.verify("alice", "wrong").await);
        assert!(users.verify("bob", "builder").await);
        assert!(!users.verify("bob", "builder!").await);
        assert!(!users.verify("carol", "x").await);
        assert!(users.contains("alice") && !users.contains("carol"));
    }

    #[test]
    fn a_user_in_both_places_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, line("alice", "x")).unwrap();
        let mut cfg = AccessConfig {
            htpasswd: Some(path),
            ..Default::default()
        };
        cfg.users.insert(
            "alice".into(),
            UserConfig {
                password: Some(Secret("y".into())),
                bcrypt: None,
                admin: false,
            },
        );
        assert!(
            Users::load(&cfg)
                .unwrap_err()
                .to_string()
                .contains("also in the htpasswd")
        );
    }

    #[test]
    fn missing_file_is_named() {
        let cfg = AccessConfig {
            htpasswd: Some("/nonexistent/htpasswd".into()),
            ..Default::default()
        };
        assert!(
            Users::load(&cfg)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/htpasswd")
        );
    }
}
