//! The running configuration with its secrets taken out, for `GET /admin/v1/config` and the
//! console's configuration page: passwords, bcrypt hashes, tokens, signing keys, S3 keys, and
//! the password of any URL (`redis://:pw@host`, an upstream URL with credentials).

use ferry_config::Config;
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: [&str; 6] = [
    "password",
    "bcrypt",
    "secret_access_key",
    "access_key_id",
    "tokens",
    "token_secret",
];

/// `config` as JSON, secrets replaced by [`REDACTED`].
pub fn redacted(config: &Config) -> Value {
    let mut v = serde_json::to_value(config).expect("the config serializes");
    walk(&mut v, &mut Vec::new());
    v
}

fn walk(v: &mut Value, path: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                path.push(k.clone());
                if is_secret(path) {
                    hide(child);
                } else {
                    walk(child, path);
                }
                path.pop();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(i, path)),
        Value::String(s) => {
            if let Some(clean) = without_url_password(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Whether the key at `path` holds a secret: one of [`SECRET_KEYS`], or the token signing
/// key (`access.token.key`; `tls.key` is a file path and stays).
fn is_secret(path: &[String]) -> bool {
    let last = path.last().map(String::as_str).unwrap_or_default();
    SECRET_KEYS.contains(&last)
        || (last == "key" && path.len() >= 2 && path[path.len() - 2] == "token")
}

fn hide(v: &mut Value) {
    match v {
        Value::Null => {}
        Value::Array(items) => items.iter_mut().for_each(hide),
        _ => *v = Value::String(REDACTED.to_owned()),
    }
}

/// `s` without the password of its URL, when it is a URL with one.
fn without_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let user = match userinfo.split_once(':') {
        Some((u, _)) => format!("{u}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    Some(format!(
        "{scheme}://{user}@{host}{}",
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
upstreams:
  docker.io:
    url: "https://mirror-user:url-secret-1@registry.example"
    username: hub
    password: upstream-secret-2
    accounts:
      - username: second
        password: account-secret-3
storage:
  s3:
    bucket: b
    access_key_id: AKIA-secret-4
    secret_access_key: s3-secret-5
redis:
  url: "redis://:redis-secret-6@127.0.0.1:6379/0"
access:
  users:
    alice:
      password: user-secret-7
      admin: true
    bob:
      bcrypt: "$2b$04$bcryptsecret8bcryptsecret8abcdefghijklmnopqrstuvwxyz0"
  token:
    key: token-key-secret-9-0123456789abcdefghijkl
  admin:
    tokens: [admin-token-secret-10]
"#;

    #[test]
    fn no_secret_is_left() {
        let c = Config::from_yaml(YAML, Vec::new()).unwrap();
        let text = redacted(&c).to_string();
        for secret in [
            "url-secret-1",
            "upstream-secret-2",
            "account-secret-3",
            "AKIA-secret-4",
            "s3-secret-5",
            "redis-secret-6",
            "user-secret-7",
            "bcryptsecret8",
            "token-key-secret-9",
            "admin-token-secret-10",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let v = redacted(&c);
        assert_eq!(v["upstreams"]["docker.io"]["username"], "hub");
        assert_eq!(
            v["upstreams"]["docker.io"]["url"],
            "https://mirror-user:***@registry.example"
        );
        assert_eq!(v["redis"]["url"], "redis://:***@127.0.0.1:6379/0");
        assert_eq!(v["access"]["admin"]["tokens"][0], REDACTED);
        assert_eq!(v["access"]["users"]["alice"]["admin"], true);
        assert_eq!(v["storage"]["s3"]["bucket"], "b");
    }

    #[test]
    fn urls_without_passwords_stay() {
        assert_eq!(without_url_password("https://registry.example/v2"), None);
        assert_eq!(without_url_password("not a url"), None);
        assert_eq!(
            without_url_password("redis://h:6379")
                .as_deref()
                .unwrap_or("redis://h:6379"),
            "redis://h:6379"
        );
        assert_eq!(
            without_url_password("https://token@h/x?y").unwrap(),
            "https://***@h/x?y"
        );
    }
}
