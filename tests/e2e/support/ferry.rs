//! The ferry binary under test: a builder that writes a config file with the SPEC section 2
//! keys, and a handle on the running `ferry serve` process (its port, data directory, logs,
//! signals and restarts). The process is killed on drop, and its logs are printed when the
//! test panics.
//!
//! Safety: a config with no upstreams would make ferry fall back to the real public
//! registries, so the builder then maps them all to a dead loopback port instead; every
//! upstream a test adds must name its own URL (always a 127.0.0.1 server of the test).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::clients::DEAD_UPSTREAM;
use super::faulty::FaultyUpstream;
use super::http::raw_get;
use super::ports::{PortLease, reserve_port};
use super::process::{Daemon, scrub_env};
use super::registry::Registry;

/// The ferry binary cargo built for this test run.
pub const FERRY_BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// The binary under test: `$FERRY_E2E_BIN` if set (to run the suite against another build,
/// e.g. a release binary), else [`FERRY_BIN`].
pub fn ferry_bin() -> PathBuf {
    std::env::var_os("FERRY_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FERRY_BIN))
}

/// A `ferry` command (for one-shot subcommands such as `check-config` or `client-config`) with
/// no `FERRY_*` or proxy variables inherited.
pub fn ferry_command() -> Command {
    let mut cmd = Command::new(ferry_bin());
    scrub_env(&mut cmd, &["FERRY_"]);
    cmd
}

/// Anything that can be an upstream: gives its base URL.
pub trait UpstreamUrl {
    /// `http://127.0.0.1:<port>[/prefix]`.
    fn upstream_url(&self) -> String;
}

impl UpstreamUrl for Registry {
    fn upstream_url(&self) -> String {
        self.url()
    }
}

impl UpstreamUrl for FaultyUpstream {
    fn upstream_url(&self) -> String {
        self.url()
    }
}

impl UpstreamUrl for Ferry {
    fn upstream_url(&self) -> String {
        self.base_url()
    }
}

impl UpstreamUrl for str {
    fn upstream_url(&self) -> String {
        self.to_owned()
    }
}

impl UpstreamUrl for String {
    fn upstream_url(&self) -> String {
        self.clone()
    }
}

/// Writes a ferry config and starts `ferry serve`. Values are a JSON tree rendered as YAML;
/// [`FerryBuilder::set`] reaches any key, [`FerryBuilder::raw_yaml`] appends text verbatim.
#[derive(Debug, Clone, Default)]
pub struct FerryBuilder {
    config: Map<String, Value>,
    raw_yaml: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    ready_timeout: Option<Duration>,
}

impl FerryBuilder {
    /// Adds upstream `name` (the registry name clients use) served from `target`'s URL.
    pub fn upstream(self, name: &str, target: &(impl UpstreamUrl + ?Sized)) -> Self {
        self.upstream_with(name, target, json!({}))
    }

    /// Adds upstream `name` at `target` with more keys, e.g.
    /// `json!({"username": "u", "password": "p"})` or `json!({"mirrors": [..]})`.
    pub fn upstream_with(
        mut self,
        name: &str,
        target: &(impl UpstreamUrl + ?Sized),
        extra: Value,
    ) -> Self {
        let mut entry = Map::new();
        entry.insert("url".into(), Value::String(target.upstream_url()));
        // Every upstream here is on loopback, where a first answer is always fast enough for
        // one stream: tests keep the segmented path (and its request counts) unless they ask.
        entry.insert("segments".into(), json!({"one_stream_above": "unlimited"}));
        if let Value::Object(m) = extra {
            entry.extend(m);
        } else {
            panic!("upstream extra keys must be a JSON object, got {extra}");
        }
        set_path(&mut self.config, &["upstreams", name], Value::Object(entry));
        self
    }

    /// `default_upstream` (otherwise docker.io if configured, else the first upstream).
    pub fn default_upstream(self, name: &str) -> Self {
        self.set("default_upstream", name)
    }

    /// Host-based routing: requests with this Host header go to `upstream`.
    pub fn host(mut self, host: &str, upstream: &str) -> Self {
        set_path(&mut self.config, &["hosts", host], json!(upstream));
        self
    }

    /// `cache.tag_ttl`, e.g. `"1s"`, `"10m"`.
    pub fn tag_ttl(self, ttl: &str) -> Self {
        self.set("cache.tag_ttl", ttl)
    }

    /// `storage.max_size`, e.g. `"50MiB"`.
    pub fn max_size(self, size: &str) -> Self {
        self.set("storage.max_size", size)
    }

    /// Sets any key by dotted path (`"cache.immutable_tags"`, `"access.anonymous"`). A key
    /// containing dots is reached with [`FerryBuilder::set_path`].
    pub fn set(self, dotted: &str, value: impl Into<Value>) -> Self {
        let parts: Vec<&str> = dotted.split('.').collect();
        self.set_path(&parts, value)
    }

    /// Sets any key by explicit path components.
    pub fn set_path(mut self, path: &[&str], value: impl Into<Value>) -> Self {
        set_path(&mut self.config, path, value.into());
        self
    }

    /// Removes a key set earlier (dotted path).
    pub fn unset(mut self, dotted: &str) -> Self {
        let parts: Vec<&str> = dotted.split('.').collect();
        let (last, parents) = parts.split_last().expect("non-empty path");
        let mut map = &mut self.config;
        for p in parents {
            match map.get_mut(*p) {
                Some(Value::Object(m)) => map = m,
                _ => return self,
            }
        }
        map.remove(*last);
        self
    }

    /// Appends raw YAML (top-level keys the JSON tree does not set) to the config file.
    pub fn raw_yaml(mut self, yaml: &str) -> Self {
        self.raw_yaml.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.raw_yaml.push('\n');
        }
        self
    }

    /// Sets an environment variable for the ferry process (e.g. `FERRY_...` overrides or
    /// `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Extra arguments after `serve --config FILE`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// How long to wait for ferry to answer (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// The YAML that `start` writes, for a listen address and data directory.
    pub fn render(&self, listen: &str, data_dir: &Path) -> String {
        let mut config = self.config.clone();
        set_path(&mut config, &["listen"], json!(listen));
        if !matches!(config.get("storage"), Some(Value::Object(s)) if s.contains_key("s3")) {
            set_path(
                &mut config,
                &["storage", "fs", "root"],
                json!(data_dir.to_str().expect("utf-8 data dir")),
            );
        }
        let has_upstreams =
            matches!(config.get("upstreams"), Some(Value::Object(m)) if !m.is_empty());
        if !has_upstreams {
            for name in [
                "docker.io",
                "gcr.io",
                "ghcr.io",
                "registry.k8s.io",
                "quay.io",
            ]
            .into_iter()
            .chain(["mcr.microsoft.com", "nvcr.io"])
            {
                set_path(
                    &mut config,
                    &["upstreams", name, "url"],
                    json!(format!("http://{DEAD_UPSTREAM}")),
                );
            }
        }
        if !config.contains_key("default_upstream") {
            let upstreams = config["upstreams"].as_object().expect("upstreams map");
            let default = if upstreams.contains_key("docker.io") {
                "docker.io".to_owned()
            } else {
                upstreams.keys().next().expect("an upstream").clone()
            };
            config.insert("default_upstream".into(), json!(default));
        }
        let mut yaml = String::from("# ferry config written by the e2e test support\n");
        emit_yaml(&Value::Object(config), 0, &mut yaml);
        yaml.push_str(&self.raw_yaml);
        yaml
    }

    /// Writes the config and starts ferry; waits until it answers.
    pub fn start(self) -> Ferry {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-ferry-")
            .tempdir()
            .expect("ferry tempdir");
        let lease = reserve_port();
        let mut ferry = Ferry {
            config_path: dir.path().join("ferry.yaml"),
            data_dir: dir.path().join("data"),
            stdout_path: dir.path().join("stdout.log"),
            stderr_path: dir.path().join("stderr.log"),
            dir,
            lease,
            builder: self,
            daemon: None,
        };
        ferry.write_config();
        ferry.start_again();
        ferry
    }
}

fn set_path(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty config path");
    let mut map = map;
    for p in parents {
        let entry = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = entry.as_object_mut().expect("object");
    }
    map.insert(last.to_string(), value);
}

/// Renders JSON as block YAML: mappings as blocks, strings double-quoted (JSON escapes are
/// valid YAML escapes), sequences inline as JSON (valid YAML flow style).
fn emit_yaml(value: &Value, indent: usize, out: &mut String) {
    let Value::Object(map) = value else {
        unreachable!("emit_yaml is called on mappings")
    };
    for (key, v) in map {
        let pad = " ".repeat(indent);
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        let key = if plain {
            key.clone()
        } else {
            Value::String(key.clone()).to_string()
        };
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                emit_yaml(v, indent + 2, out);
            }
            _ => out.push_str(&format!("{pad}{key}: {v}\n")),
        }
    }
}

/// A ferry server started by a test (see the module doc).
#[derive(Debug)]
pub struct Ferry {
    dir: tempfile::TempDir,
    lease: PortLease,
    builder: FerryBuilder,
    config_path: PathBuf,
    data_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    daemon: Option<Daemon>,
}

impl Ferry {
    /// A builder; add upstreams, then `.start()`.
    pub fn builder() -> FerryBuilder {
        FerryBuilder::default()
    }

    /// The common case: `registry` as `docker.io` (the default upstream).
    pub fn for_registry(registry: &Registry) -> Ferry {
        Ferry::builder().upstream("docker.io", registry).start()
    }

    fn write_config(&self) {
        let yaml = self.builder.render(&self.lease.addr(), &self.data_dir);
        std::fs::write(&self.config_path, yaml).expect("write ferry config");
    }

    /// Starts ferry again (after `stop`, `kill9` or an exit) on the same port and data dir.
    pub fn start_again(&mut self) {
        if let Some(daemon) = self.daemon.as_mut() {
            assert!(!daemon.is_running(), "ferry is already running");
        }
        self.daemon = None;
        let mut cmd = ferry_command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.builder.args)
            .current_dir(self.dir.path());
        cmd.envs(self.builder.env.iter().map(|(k, v)| (k, v)));
        let mut daemon = Daemon::spawn("ferry", cmd, &self.stdout_path, &self.stderr_path);
        let addr = self.lease.addr();
        let timeout = self
            .builder
            .ready_timeout
            .unwrap_or(Duration::from_secs(30));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = daemon.exit_status() {
                panic!(
                    "ferry exited ({status}) before answering on {addr}\nconfig {}:\n{}\n{}",
                    self.config_path.display(),
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    daemon.log()
                );
            }
            if probe_ready(&addr) {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ferry did not answer on {addr} within {timeout:?}\n{}",
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(daemon);
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s); returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.daemon.as_mut()?.stop(Duration::from_secs(10))
    }

    /// Stops (if running) and starts again on the same port and data directory, re-reading the
    /// config file.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// SIGKILL: a crash at an arbitrary moment. Start it again with [`Ferry::start_again`].
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.daemon.as_mut()?.kill9()
    }

    /// Sends SIGTERM without waiting (see [`Ferry::wait_exit`]).
    pub fn sigterm(&mut self) {
        self.daemon_mut().signal("TERM");
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&mut self) {
        self.daemon_mut().signal("HUP");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.daemon.as_mut()?.wait_exit(timeout)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    /// The process id of the running `ferry serve` (for `/proc/<pid>/status` memory checks).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(Daemon::pid)
    }

    fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("ferry was started")
    }

    /// Changes the configuration and rewrites the config file (the running process is not
    /// told: follow with [`Ferry::sighup`] or [`Ferry::restart`]).
    pub fn update_config(&mut self, change: impl FnOnce(FerryBuilder) -> FerryBuilder) {
        self.builder = change(std::mem::take(&mut self.builder));
        self.write_config();
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.lease.addr())
    }

    /// `127.0.0.1:<port>`, as used in image references (`127.0.0.1:P/library/hello:1`).
    pub fn host(&self) -> String {
        self.lease.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The storage root (`storage.fs.root`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The private directory (config, logs, data); also ferry's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything ferry wrote to stdout so far.
    pub fn stdout(&self) -> String {
        super::process::read_lossy(&self.stdout_path)
    }

    /// Everything ferry wrote to stderr so far.
    pub fn stderr(&self) -> String {
        super::process::read_lossy(&self.stderr_path)
    }

    /// Both streams, labelled.
    pub fn log(&self) -> String {
        format!(
            "--- ferry stderr ---\n{}--- ferry stdout ---\n{}",
            self.stderr(),
            self.stdout()
        )
    }

    /// `(prefix, mirror)` pairs for a client's registries.conf: `docker.io` through ferry in
    /// registry-mirror mode (`/v2/<repo>`), every other configured upstream by path prefix
    /// (`/v2/<name>/<repo>`).
    pub fn client_mirrors(&self) -> Vec<(String, String)> {
        let mut names: Vec<String> = match self.builder.config.get("upstreams") {
            Some(Value::Object(m)) if !m.is_empty() => m.keys().cloned().collect(),
            _ => vec!["docker.io".to_owned()],
        };
        if !names.iter().any(|n| n == "docker.io") {
            names.push("docker.io".to_owned());
        }
        names
            .into_iter()
            .map(|name| {
                let location = if name == "docker.io" {
                    self.host()
                } else {
                    format!("{}/{name}", self.host())
                };
                (name, location)
            })
            .collect()
    }

    /// Writes a registries.conf that sends clients through this ferry (see
    /// [`Ferry::client_mirrors`]; the real registries stay dead ends) and returns its path, for
    /// `skopeo ... --registries-conf PATH docker://docker.io/library/x:1 ...`.
    pub fn registries_conf(&self) -> PathBuf {
        let mirrors = self.client_mirrors();
        let pairs: Vec<(&str, &str)> = mirrors
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect();
        let path = self.dir.path().join("registries.conf");
        std::fs::write(&path, super::clients::registries_conf(&pairs))
            .expect("write registries.conf");
        path
    }

    /// A podman that pulls through this ferry (see [`Ferry::client_mirrors`]), or `None` after
    /// printing why podman cannot run here.
    pub fn podman_or_skip(&self) -> Option<super::clients::Podman> {
        let mirrors = self.client_mirrors();
        let pairs: Vec<(&str, &str)> = mirrors
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect();
        super::clients::podman_or_skip(&pairs)
    }

    /// Prints config and logs to stderr (cargo shows it for failing tests).
    pub fn print_logs(&self) {
        eprintln!(
            "=== ferry on {} (config {}) ===\n{}\n{}",
            self.host(),
            self.config_path.display(),
            std::fs::read_to_string(&self.config_path).unwrap_or_default(),
            self.log()
        );
    }
}

/// Ready when `GET /healthz` answers 200; where there is no `/healthz` (404), when `GET /v2/`
/// answers 200 or 401.
fn probe_ready(addr: &str) -> bool {
    match raw_get(addr, "/healthz") {
        Ok(r) if r.status == 200 => true,
        Ok(r) if r.status == 404 => {
            matches!(raw_get(addr, "/v2/"), Ok(v) if v.status == 200 || v.status == 401)
        }
        _ => false,
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill9();
        }
    }
}
