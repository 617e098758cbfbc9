//! Checks that types cannot express, and error values that name the key and line.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::Config;

/// One problem in a config, located by key path and, when known, line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `upstreams.docker.io.url` (empty for syntax errors).
    pub key: String,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when loaded from one.
    pub file: Option<String>,
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single problem.
    pub fn single(e: ConfigError) -> Self {
        ConfigErrors {
            file: None,
            errors: vec![e],
        }
    }

    /// Names the file the errors are in.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.display().to_string());
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                Some(l) => write!(f, "{file}:{l}: ")?,
                None => write!(f, "{file}: ")?,
            }
            if !e.key.is_empty() {
                write!(f, "{}: ", e.key)?;
            }
            f.write_str(&e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Validates cross-references and formats; `text` is the source, used to find lines.
pub fn validate(c: &Config, text: &str) -> Result<(), ConfigErrors> {
    let mut errs = Vec::new();
    let mut err = |path: &[&str], msg: String| {
        errs.push(ConfigError {
            key: path.join("."),
            line: locate(text, path),
            message: msg,
        });
    };
    if c.listen.parse::<SocketAddr>().is_err() {
        err(
            &["listen"],
            format!(
                "{:?} is not an address like 0.0.0.0:5000 or [::]:5000",
                c.listen
            ),
        );
    }
    check_upstreams(c, &mut err);
    check_server(&c.server, &mut err);
    if c.ui.session_idle.0.is_zero() {
        err(&["ui", "session_idle"], "must be longer than zero".into());
    }
    c.access.check(&mut err);
    check_storage(&c.storage, &mut err);
    for (i, pattern) in c.cache.immutable_tags.iter().enumerate() {
        if let Err(e) = regex::Regex::new(pattern) {
            err(
                &["cache", "immutable_tags"],
                format!(
                    "pattern #{} {pattern:?} is not a regular expression: {e}",
                    i + 1
                ),
            );
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        errs.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors {
            file: None,
            errors: errs,
        })
    }
}

fn check_upstreams(c: &Config, err: &mut impl FnMut(&[&str], String)) {
    let mut names: Vec<&str> = Vec::new();
    for (name, u) in &c.upstreams {
        check_upstream(name, u, err);
        names.push(name);
        names.extend(u.aliases.iter().map(String::as_str));
    }
    names.sort_unstable();
    for w in names.windows(2) {
        if w[0] == w[1] {
            err(
                &["upstreams"],
                format!(
                    "{:?} is both an upstream name and an alias, or an alias twice",
                    w[0]
                ),
            );
        }
    }
    let known = |n: &str| names.binary_search(&n).is_ok();
    if !known(&c.default_upstream) {
        err(
            &["default_upstream"],
            format!(
                "{:?} is not one of the configured upstreams",
                c.default_upstream
            ),
        );
    }
    for (host, target) in &c.hosts {
        if !known(target) {
            err(
                &["hosts", host],
                format!("{target:?} is not one of the configured upstreams"),
            );
        }
    }
}

/// One upstream's own settings: its name and aliases, URLs, redirect hosts, segments, source
/// addresses and credentials.
fn check_upstream(name: &str, u: &crate::UpstreamConfig, err: &mut impl FnMut(&[&str], String)) {
    if !is_registry_name(name) {
        err(
            &["upstreams", name],
            format!("{name:?} is not a registry name (lower-case host[:port], e.g. ghcr.io)"),
        );
    }
    let url = u.base_url(name);
    if let Err(m) = check_url(&url) {
        err(&["upstreams", name, "url"], m);
    }
    for m in &u.mirrors {
        if let Err(msg) = check_url(m) {
            err(&["upstreams", name, "mirrors"], msg);
        }
    }
    for a in &u.aliases {
        if !is_registry_name(a) {
            err(
                &["upstreams", name, "aliases"],
                format!("alias {a:?} is not a registry name"),
            );
        }
    }
    for (i, pattern) in u.redirect_hosts.iter().enumerate() {
        if let Err(m) = crate::hosts::check(pattern) {
            err(
                &["upstreams", name, "redirect_hosts"],
                format!("pattern #{} {pattern:?} {m}", i + 1),
            );
        }
    }
    let seg = &u.segments;
    if seg.parallel == 0 || seg.size.0 < 64 * 1024 || seg.threshold.0 < 64 * 1024 {
        err(
            &["upstreams", name, "segments"],
            "parallel must be at least 1, size and threshold at least 64KiB".into(),
        );
    }
    for a in &u.source_addresses {
        if let Err(m) = check_source_address(a) {
            err(&["upstreams", name, "source_addresses"], m);
        }
    }
    if u.password.is_some() && u.username.is_none() {
        err(
            &["upstreams", name, "password"],
            "a password needs a username".into(),
        );
    }
}

/// A source address must be an IP address that is assignable on this host (binding a socket
/// to it succeeds), so a typo fails at start-up rather than on the first pull.
pub fn check_source_address(a: &str) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = a.trim().parse().map_err(|_| {
        format!("source address {a:?} is not an IP address (e.g. 192.0.2.10 or 2001:db8::10)")
    })?;
    std::net::TcpListener::bind((ip, 0))
        .map_err(|e| format!("source address {a:?} is not usable on this host: {e}"))?;
    Ok(ip)
}

fn check_server(s: &crate::ServerConfig, err: &mut impl FnMut(&[&str], String)) {
    for (key, d) in [
        ("header_timeout", s.header_timeout),
        ("idle_timeout", s.idle_timeout),
        ("send_timeout", s.send_timeout),
    ] {
        if d.0.is_zero() {
            err(&["server", key], "must be longer than zero".into());
        }
    }
    for (key, n) in [
        ("max_connections", s.max_connections),
        ("max_connections_per_ip", s.max_connections_per_ip),
    ] {
        if n == 0 {
            err(&["server", key], "must be at least 1".into());
        }
    }
}

fn check_storage(s: &crate::StorageConfig, err: &mut impl FnMut(&[&str], String)) {
    if s.fs.is_some() && s.s3.is_some() {
        err(
            &["storage"],
            "set either storage.fs or storage.s3, not both".into(),
        );
    }
    if s.max_size.0 == 0 {
        err(&["storage", "max_size"], "must be greater than zero".into());
    }
    match &s.s3 {
        Some(s3) => check_s3(s3, err),
        None => {
            let only_s3 = [
                ("spool_dir", s.spool_dir.is_some()),
                ("local_cache", s.local_cache.is_some()),
            ];
            for (key, set) in only_s3 {
                if set {
                    err(
                        &["storage", key],
                        format!("storage.{key} applies to an object store (storage.s3) only"),
                    );
                }
            }
        }
    }
    if s.local_cache.as_ref().is_some_and(|l| l.max_size.0 == 0) {
        err(
            &["storage", "local_cache", "max_size"],
            "must be greater than zero".into(),
        );
    }
}

fn check_s3(s3: &crate::S3Config, err: &mut impl FnMut(&[&str], String)) {
    let key = |k: &'static str| ["storage", "s3", k];
    if s3.bucket.is_empty() {
        err(&key("bucket"), "an S3 bucket name is required".into());
    }
    if let Some(ep) = &s3.endpoint
        && let Err(m) = check_url(ep)
    {
        err(&key("endpoint"), m);
    }
    if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
        err(
            &key("access_key_id"),
            "set both access_key_id and secret_access_key, or neither (then the AWS \
             environment variables, profile or instance role are used)"
                .into(),
        );
    }
    let expiry = s3.redirect_expiry.0.as_secs();
    if !(1..=7 * 24 * 3600).contains(&expiry) {
        err(
            &key("redirect_expiry"),
            "presigned URLs last between 1s and 7 days".into(),
        );
    }
    if s3.timeout.0.is_zero() {
        err(&key("timeout"), "must be greater than zero".into());
    }
    if !(5 << 20..=5 << 30).contains(&s3.part_size.0) {
        err(
            &key("part_size"),
            "S3 multipart parts are 5MiB to 5GiB".into(),
        );
    }
    if !(1..=64).contains(&s3.upload_concurrency) {
        err(&key("upload_concurrency"), "must be 1 to 64".into());
    }
}

/// Lower-case `host[:port]`.
pub fn is_registry_name(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

fn check_url(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{u:?} must be an http:// or https:// URL with a host"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{u:?} must not have a query or fragment"));
    }
    Ok(())
}

/// Best-effort line of a block-style key path in YAML text (1-based).
pub fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best = None;
    for (i, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with('-') {
            continue;
        }
        let indent = line.len() - content.len();
        let Some(key) = yaml_key(content) else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let depth = stack.len().min(path.len());
        if stack.len() <= path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            if depth == path.len() {
                return Some(i + 1);
            }
            best = Some(i + 1);
        }
    }
    best
}

fn yaml_key(content: &str) -> Option<String> {
    let (k, _) = content.split_once(':')?;
    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
    (!k.is_empty() && !k.contains(' ')).then(|| k.to_owned())
}
