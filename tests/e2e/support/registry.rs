//! A real upstream registry for tests: Debian's `docker-registry` (distribution 2.8) serving a
//! private temporary directory on a leased 127.0.0.1 port, anonymous or behind htpasswd Basic
//! auth or token (Bearer) auth. It can be stopped and started again on the same port with the
//! same data, and its access log tells which requests reached it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::http::{RawResponse, percent_encode, raw_get, raw_request};
use super::ports::{PortLease, reserve_port};
use super::process::{Daemon, read_lossy, scrub_env};
use super::token::{self, TokenAuth, TokenServer};

/// Every manifest media type a registry may hold, for `Accept` headers.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How the registry authenticates clients.
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    #[default]
    Anonymous,
    /// htpasswd (bcrypt) Basic auth with these users; anonymous requests get 401.
    Basic(Vec<(String, String)>),
    /// `auth: token` with a [`TokenServer`] issuing JWTs (see `token.rs`).
    Token(TokenAuth),
}

/// Builder for a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryBuilder {
    auth: RegistryAuth,
    extra_yaml: String,
}

impl RegistryBuilder {
    /// Requires htpasswd Basic auth for these `(user, password)` pairs.
    pub fn basic_auth(mut self, users: &[(&str, &str)]) -> Self {
        self.auth = RegistryAuth::Basic(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        );
        self
    }

    /// Requires Bearer tokens from a token server configured by `auth`.
    pub fn token_auth(mut self, auth: TokenAuth) -> Self {
        self.auth = RegistryAuth::Token(auth);
        self
    }

    /// Appends raw top-level YAML to the generated config (e.g. `proxy:` or `notifications:`).
    pub fn extra_yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self.extra_yaml.push('\n');
        self
    }

    /// Starts the registry and waits until `/v2/` answers.
    pub fn start(self) -> Registry {
        Registry::launch(self)
    }
}

/// One line of docker-registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// Request method.
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// The client's User-Agent.
    pub user_agent: String,
}

/// A running (or stopped) docker-registry; killed on drop.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    lease: PortLease,
    config_path: PathBuf,
    log_path: PathBuf,
    daemon: Option<Daemon>,
    token: Option<TokenServer>,
    users: Vec<(String, String)>,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Registry::builder().start()
    }

    /// A builder, for auth and extra configuration.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// A registry with htpasswd Basic auth for `users`.
    pub fn with_basic_auth(users: &[(&str, &str)]) -> Registry {
        Registry::builder().basic_auth(users).start()
    }

    /// A registry with token auth (the real Bearer flow).
    pub fn with_token_auth(auth: TokenAuth) -> Registry {
        Registry::builder().token_auth(auth).start()
    }

    fn launch(builder: RegistryBuilder) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-registry-")
            .tempdir()
            .expect("registry tempdir");
        let mut auth_yaml = String::new();
        let mut token = None;
        let mut users = Vec::new();
        match &builder.auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Basic(list) => {
                let htpasswd = dir.path().join("htpasswd");
                let mut lines = String::new();
                for (user, password) in list {
                    lines.push_str(&htpasswd_line(user, password));
                }
                std::fs::write(&htpasswd, lines).expect("write htpasswd");
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: ferry-test-basic\n    path: {}\n",
                    htpasswd.display()
                );
                users = list.clone();
            }
            RegistryAuth::Token(opts) => {
                let server = TokenServer::start(dir.path(), opts.clone());
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm(),
                    token::SERVICE,
                    token::ISSUER,
                    server.cert_path().display()
                );
                users = opts.users.clone();
                token = Some(server);
            }
        }
        let lease = reserve_port();
        let config_path = dir.path().join("config.yml");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: ferry-e2e-test-secret\n  headers:\n    X-Content-Type-Options: [nosniff]\n\
             health:\n  storagedriver:\n    enabled: false\n\
             {auth_yaml}{extra}",
            data = dir.path().join("data").display(),
            addr = lease.addr(),
            extra = builder.extra_yaml,
        );
        std::fs::write(&config_path, config).expect("write registry config");
        let log_path = dir.path().join("registry.log");
        let mut registry = Registry {
            dir,
            lease,
            config_path,
            log_path,
            daemon: None,
            token,
            users,
        };
        registry.start_again();
        registry
    }

    /// Starts the (stopped) registry again on the same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.daemon.is_none(), "registry is already running");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&self.config_path);
        // REGISTRY_* variables override the config file; none may leak in from the outside.
        scrub_env(&mut cmd, &["REGISTRY_", "OTEL_"]);
        let mut daemon = Daemon::spawn("docker-registry", cmd, &self.log_path, &self.log_path);
        let addr = self.lease.addr();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.exit_status() {
                panic!(
                    "docker-registry exited ({status}) before answering on {addr} \
                     (is it installed? scripts/install-test-deps.sh). Log:\n{}",
                    daemon.log()
                );
            }
            if let Ok(r) = raw_get(&addr, "/v2/")
                && (r.status == 200 || r.status == 401)
            {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "docker-registry did not answer on {addr} within 30 s. Log:\n{}",
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(daemon);
    }

    /// Stops the registry (SIGTERM, then SIGKILL); the port stays reserved and data is kept.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop(Duration::from_secs(5));
        }
    }

    /// True while the registry process runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    /// `127.0.0.1:<port>`, as used in image references.
    pub fn host(&self) -> String {
        self.lease.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.lease.addr())
    }

    /// The first configured user, used to push fixtures (None for an anonymous registry).
    pub fn credentials(&self) -> Option<(String, String)> {
        self.users.first().cloned()
    }

    /// The token server of a token-auth registry.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The registry's storage root (`rootdirectory`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The whole log (application log and access log) so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Parsed access-log lines. The registry writes a line after the response is sent, so
    /// this first waits (at most 1 s) until the log stops growing.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        let size = || {
            std::fs::metadata(&self.log_path)
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let now = size();
            if now == last || Instant::now() >= deadline {
                break;
            }
            last = now;
        }
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// How many requests with `method` had a path containing `path_part`.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.method == method && e.path.contains(path_part))
            .count()
    }

    /// How many `GET`s of blobs by digest reached the registry (uploads are not counted).
    pub fn blob_gets(&self) -> usize {
        self.count("GET", "/blobs/sha256:")
    }

    /// Blocking request to the registry with its credentials (Basic, or a token with
    /// pull, push and delete scope for `repo`).
    pub fn request(
        &self,
        method: &str,
        repo: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let auth = self.authorization(repo);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        raw_request(&self.host(), method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path} on registry {}: {e}", self.host()))
    }

    fn authorization(&self, repo: &str) -> Option<String> {
        let (user, password) = self.credentials()?;
        let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let Some(server) = &self.token else {
            return Some(basic);
        };
        let realm = server.realm();
        let realm_addr = realm
            .trim_start_matches("http://")
            .trim_end_matches("/token");
        let scope = percent_encode(&format!("repository:{repo}:pull,push,delete"));
        let path = format!("/token?service={}&scope={scope}", token::SERVICE);
        let r = raw_request(realm_addr, "GET", &path, &[("Authorization", &basic)], &[])
            .expect("token request");
        assert_eq!(r.status, 200, "token server refused: {}", r.text());
        let json: serde_json::Value = serde_json::from_slice(&r.body).expect("token JSON");
        Some(format!(
            "Bearer {}",
            json["token"].as_str().expect("token field")
        ))
    }

    /// The digest a tag (or digest) resolves to, by `HEAD`; None if unknown.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let r = self.request(
            "HEAD",
            repo,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", MANIFEST_ACCEPT)],
            &[],
        );
        (r.status == 200).then(|| {
            r.header("docker-content-digest")
                .expect("Docker-Content-Digest")
                .to_owned()
        })
    }

    /// Points `new_tag` at the manifest `reference` already names (same bytes, no new blobs).
    pub fn tag(&self, repo: &str, reference: &str, new_tag: &str) {
        let got = self.request(
            "GET",
            repo,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", MANIFEST_ACCEPT)],
            &[],
        );
        assert_eq!(
            got.status,
            200,
            "GET manifest {repo}:{reference}: {}",
            got.text()
        );
        let media_type = got.header("content-type").expect("Content-Type").to_owned();
        let put = self.request(
            "PUT",
            repo,
            &format!("/v2/{repo}/manifests/{new_tag}"),
            &[("Content-Type", &media_type)],
            &got.body,
        );
        assert_eq!(
            put.status,
            201,
            "PUT manifest {repo}:{new_tag}: {}",
            put.text()
        );
    }

    /// Deletes a manifest by digest (the registry has `delete: enabled`).
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        let r = self.request(
            "DELETE",
            repo,
            &format!("/v2/{repo}/manifests/{digest}"),
            &[],
            &[],
        );
        assert_eq!(r.status, 202, "DELETE {repo}@{digest}: {}", r.text());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "=== docker-registry on {} (last {} log lines of {}) ===",
                self.host(),
                tail.len(),
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.stop();
    }
}

/// One bcrypt htpasswd line made by Apache's `htpasswd -Bbn`.
pub fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap_or_else(|e| {
            panic!("run htpasswd (apache2-utils; scripts/install-test-deps.sh): {e}")
        });
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("htpasswd output is text");
    format!("{}\n", text.trim())
}

/// Parses `127.0.0.1 - user [date] "GET /v2/... HTTP/1.1" 200 92 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    if !line.contains("] \"") {
        return None;
    }
    let mut quoted = line.split('"');
    quoted.next()?;
    let request = quoted.next()?;
    let after = quoted.next()?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let status = after.split_whitespace().next()?.parse().ok()?;
    quoted.next(); // referer
    let user_agent = quoted.nth(1).unwrap_or_default().to_owned();
    Some(AccessLogEntry {
        method,
        path,
        status,
        user_agent,
    })
}
