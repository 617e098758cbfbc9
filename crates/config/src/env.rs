//! Environment overrides: `FERRY_<SECTION>__<KEY>[__<KEY>...]=value` sets a config key, e.g.
//! `FERRY_LISTEN=127.0.0.1:6000`, `FERRY_CACHE__TAG_TTL=1m`,
//! `FERRY_UPSTREAMS__DOCKER_IO__PASSWORD=...`.
//!
//! Key segments match config keys case-insensitively, with `.` and `-` in a key written as `_`
//! (so `DOCKER_IO` finds the upstream `docker.io`). The value is read as YAML (so `true`, `42`,
//! `[a, b]` work). Overrides are applied to the config after defaults, so an override of one
//! default upstream's password keeps the other default upstreams.

use serde_json::Value;

use crate::Config;
use crate::validate::{ConfigError, ConfigErrors};

/// Prefix of override variables.
pub const PREFIX: &str = "FERRY_";

/// Applies every `FERRY_*` variable in `vars` to `config`.
pub fn apply(
    config: Config,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let mut overrides: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX) && k.len() > PREFIX.len())
        .collect();
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
