//! Environment overrides: `FERRY_<KEY>=value` for a top-level key and
//! `FERRY_<SECTION>__<KEY>[__<KEY>...]=value` for a key inside a section, e.g.
//! `FERRY_LISTEN=127.0.0.1:6000`, `FERRY_CACHE__TAG_TTL=1m`,
//! `FERRY_UPSTREAMS__DOCKER_IO__PASSWORD=...`.
//!
//! Key segments match config keys case-insensitively, with `.` and `-` in a key written as `_`
//! (so `DOCKER_IO` finds the upstream `docker.io`). The value is read as YAML (so `true`, `42`,
//! `[a, b]` work). Overrides are applied to the config after defaults, so an override of one
//! default upstream's password keeps the other default upstreams.
//!
//! **Foreign variables.** Other programs put `FERRY_*` names in the environment too: a script's
//! `FERRY_BIN`, and Kubernetes service links for a Service named `ferry` (`FERRY_PORT`,
//! `FERRY_PORT_5000_TCP_ADDR`, `FERRY_SERVICE_HOST`, ...). So only the two documented forms
//! are overrides ([`is_override`]): a name without `__` whose rest is a top-level key, and a
//! name with `__` whose first segment is not empty. Every other `FERRY_*` name is foreign: it is
//! ignored, and [`foreign_warning`] describes them in one line for the binary to print once at
//! startup. A name in the `__` form is always an override, so a misspelt key
//! (`FERRY_CACHE__TAG_TTLL`, `FERRY_CACH__TAG_TTL`) stays an error that names the variable.

use serde_json::Value;

use crate::Config;
use crate::validate::{ConfigError, ConfigErrors};

/// Prefix of override variables.
pub const PREFIX: &str = "FERRY_";

/// ferry's own variables that are not configuration overrides (read by `ferry copy`, `ferry
/// usage` and `ferry bans`); they
/// are neither applied nor warned about.
pub const OWN_VARIABLES: [&str; 5] = [
    "FERRY_COPY_SRC_CREDS",
    "FERRY_COPY_DST_CREDS",
    "FERRY_ADMIN_SERVER",
    "FERRY_ADMIN_TOKEN",
    "FERRY_ADMIN_USER",
];

/// Applies every override variable in `vars` to `config`; foreign `FERRY_*` names and other
/// variables are ignored (see the module documentation).
pub fn apply(
    config: Config,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let mut overrides: Vec<(String, String)> =
        vars.into_iter().filter(|(k, _)| is_override(k)).collect();
    if overrides.is_empty() {
        return Ok(config);
    }
    overrides.sort();
    let mut tree = serde_json::to_value(&config).expect("config serializes");
    for (name, raw) in &overrides {
        tree = apply_one(tree, name, raw)?;
    }
    Ok(serde_json::from_value(tree).expect("every override was checked"))
}

/// Whether `name` is an override in one of the documented forms: `FERRY_<KEY>` where `<KEY>`
/// is a top-level config key (`FERRY_LISTEN`, `FERRY_DEFAULT_UPSTREAM`), or
/// `FERRY_<SECTION>__<KEY>...` with a non-empty first segment (checked when applied, so an
/// unknown section or key there is an error).
pub fn is_override(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    match rest.split_once("__") {
        Some((first, _)) => !first.is_empty(),
        None => top_level_keys().contains(&normalize(rest)),
    }
}

/// The `FERRY_*` names in `vars` that are not overrides (nor ferry's own [`OWN_VARIABLES`]),
/// sorted.
pub fn foreign_variables(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut names: Vec<String> = vars
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(PREFIX) && !is_override(k))
        .filter(|k| !OWN_VARIABLES.contains(&k.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One line that names every foreign `FERRY_*` variable in `vars` (never their values), with
/// the forms an override takes and a guess when a name is close to a top-level key; `None`
/// when there are none.
pub fn foreign_warning(vars: impl IntoIterator<Item = (String, String)>) -> Option<String> {
    let names = foreign_variables(vars);
    if names.is_empty() {
        return None;
    }
    let keys = top_level_keys();
    let described: Vec<String> = names
        .iter()
        .map(|n| match near_key(&normalize(&n[PREFIX.len()..]), &keys) {
            Some(k) => format!("{n} (did you mean {PREFIX}{}?)", k.to_ascii_uppercase()),
            None => n.clone(),
        })
        .collect();
    Some(format!(
        "ignoring environment variable{} {}: not a configuration override (overrides are \
         FERRY_<KEY> for a top-level key, e.g. FERRY_LISTEN, or FERRY_<SECTION>__<KEY>, e.g. \
         FERRY_CACHE__TAG_TTL)",
        if names.len() == 1 { "" } else { "s" },
        described.join(", ")
    ))
}

/// The top-level keys of the configuration, normalized (`listen`, `default_upstream`, ...).
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(map)) => map.keys().map(|k| normalize(k)).collect(),
        _ => Vec::new(),
    }
}

/// A top-level key within two edits of `word` (a likely typo), if there is one.
fn near_key<'a>(word: &str, keys: &'a [String]) -> Option<&'a String> {
    if word.len() < 4 {
        return None;
    }
    keys.iter().find(|k| edit_distance(word, k) <= 2)
}

/// Levenshtein distance over bytes (names here are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Lays one variable over the tree: its YAML reading first (`true`, `42`, `[a, b]`), and its raw
/// text when that does not fit the key (a password `123456` or `yes` is a string).
fn apply_one(tree: Value, name: &str, raw: &str) -> Result<Value, ConfigErrors> {
    let path: Vec<&str> = name[PREFIX.len()..].split("__").collect();
    let mut first_error = None;
    for value in [parse_value(raw), Value::String(raw.to_owned())] {
        let mut candidate = tree.clone();
        set_path(&mut candidate, &path, value).map_err(|m| env_error(name, m))?;
        match serde_json::from_value::<Config>(candidate.clone()) {
            Ok(_) => return Ok(candidate),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let e = first_error.expect("at least one attempt");
    Err(env_error(name, e.to_string()))
}

fn env_error(var: &str, message: String) -> ConfigErrors {
    ConfigErrors::single(ConfigError::new(format!("environment {var}"), message))
}

fn parse_value(raw: &str) -> Value {
    serde_saphyr::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

fn normalize(key: &str) -> String {
    key.to_ascii_lowercase().replace(['.', '-'], "_")
}

fn set_path(tree: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return Ok(());
    };
    if first.is_empty() {
        return Err("empty key segment (use __ only between keys)".into());
    }
    if tree.is_null() {
        *tree = Value::Object(Default::default());
    }
    let Value::Object(map) = tree else {
        return Err(format!("{first}: the parent key is not a section"));
    };
    let wanted = normalize(first);
    let key = map
        .keys()
        .find(|k| normalize(k) == wanted)
        .cloned()
        .unwrap_or_else(|| first.to_ascii_lowercase());
    set_path(map.entry(key).or_insert(Value::Null), rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What Kubernetes puts in a pod for a Service named `ferry` on port 5000, and a script's
    /// own variable.
    const SERVICE_LINKS: [(&str, &str); 8] = [
        ("FERRY_BIN", "/usr/local/bin/ferry"),
        ("FERRY_PORT", "tcp://10.0.0.1:5000"),
        ("FERRY_PORT_5000_TCP", "tcp://10.0.0.1:5000"),
        ("FERRY_PORT_5000_TCP_ADDR", "10.0.0.1"),
        ("FERRY_PORT_5000_TCP_PORT", "5000"),
        ("FERRY_PORT_5000_TCP_PROTO", "tcp"),
        ("FERRY_SERVICE_HOST", "10.0.0.1"),
        ("FERRY_SERVICE_PORT", "5000"),
    ];

    #[test]
    fn documented_forms_are_overrides() {
        for name in [
            "FERRY_LISTEN",
            "FERRY_DEFAULT_UPSTREAM",
            "FERRY_default-upstream",
            "FERRY_CACHE",
            "FERRY_CACHE__TAG_TTL",
            "FERRY_CACHE__TAG_TTLL",
            "FERRY_CACH__TAG_TTL",
            "FERRY_UPSTREAMS__DOCKER_IO__PASSWORD",
        ] {
            assert!(is_override(name), "{name}");
        }
        for (name, _) in SERVICE_LINKS {
            assert!(!is_override(name), "{name}");
        }
        for name in ["FERRY_", "FERRY__X", "FERRY", "HOME", "ferry_listen"] {
            assert!(!is_override(name), "{name}");
        }
    }

    #[test]
    fn foreign_variables_are_ignored_and_named_once() {
        let mut env = vars(&SERVICE_LINKS);
        env.extend(vars(&[
            ("FERRY_LISTEN", "127.0.0.1:6000"),
            ("FERRY_COPY_SRC_CREDS", "u:p"),
            ("PATH", "/bin"),
        ]));
        let c = apply(Config::default(), env.clone()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000");
        let names = foreign_variables(env.clone());
        assert_eq!(names.len(), SERVICE_LINKS.len(), "{names:?}");
        let w = foreign_warning(env).unwrap();
        assert!(
            w.contains("FERRY_BIN, FERRY_PORT, FERRY_PORT_5000_TCP"),
            "{w}"
        );
        assert!(w.contains("FERRY_CACHE__TAG_TTL"), "{w}");
        assert!(!w.contains("10.0.0.1"), "values are never shown: {w}");
        assert!(!w.contains("COPY_SRC"), "{w}");
        assert_eq!(foreign_warning(vars(&[("FERRY_LISTEN", "x")])), None);
    }

    #[test]
    fn a_near_miss_gets_a_guess() {
        let w = foreign_warning(vars(&[("FERRY_LISTN", "x")])).unwrap();
        assert!(
            w.contains("FERRY_LISTN (did you mean FERRY_LISTEN?)"),
            "{w}"
        );
        assert!(
            w.starts_with("ignoring environment variable FERRY_LISTN"),
            "{w}"
        );
        let w = foreign_warning(vars(&[("FERRY_BIN", "x")])).unwrap();
        assert!(!w.contains("did you mean"), "{w}");
    }

    #[test]
    fn misspelt_keys_in_the_section_form_are_errors() {
        for (name, words) in [
            ("FERRY_CACHE__TAG_TTLL", "tag_ttll"),
            ("FERRY_CACH__TAG_TTL", "cach"),
            ("FERRY_LISTEN__X", "not a section"),
        ] {
            let err = apply(Config::default(), vars(&[(name, "1m")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(words), "{name}: {err}");
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("listn", "listen"), 1);
        assert_eq!(edit_distance("bin", "tls"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
