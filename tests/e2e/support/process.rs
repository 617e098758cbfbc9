//! Background processes of a test (registries, ferry): spawned with their output in log files,
//! signalled, stopped, and always killed on drop so no test leaves a server behind.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variables no child process of a test may inherit: proxies would send loopback
/// traffic elsewhere (or let a process reach the internet).
const SCRUBBED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Removes proxy settings and every inherited variable that starts with one of `prefixes`.
pub fn scrub_env(cmd: &mut Command, prefixes: &[&str]) {
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if prefixes.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
}

/// A running (or stopped) background process whose stdout and stderr go to two files.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with stdout and stderr appended to `stdout` and `stderr` (the same path
    /// twice is fine: both streams then share one file).
    pub fn spawn(name: &str, mut cmd: Command, stdout: &Path, stderr: &Path) -> Daemon {
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open log {}: {e}", p.display()))
        };
        let out = open(stdout);
        let err = if stdout == stderr {
            out.try_clone().expect("clone log handle")
        } else {
            open(stderr)
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_owned(),
            child: Some(child),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => None,
            Err(e) => panic!("wait for {}: {e}", self.name),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`, `KILL`, ...) without waiting.
    pub fn signal(&mut self, signal: &str) {
        if !self.is_running() {
            panic!("{} is not running; cannot send SIG{signal}", self.name);
        }
        let pid = self.pid().expect("running process has a pid");
        // The shell's builtin kill is present everywhere `sh` is; no libc, no unsafe code.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -s {signal} {pid}"))
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap: the process gets no chance to clean up.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal("TERM");
            if let Some(status) = self.wait_exit(grace) {
                return Some(status);
            }
            eprintln!("{} ignored SIGTERM for {grace:?}; killing it", self.name);
        }
        self.kill9()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Both streams, labelled (one of them if they share a file).
    pub fn log(&self) -> String {
        if self.stdout == self.stderr {
            return self.stdout();
        }
        format!(
            "--- stderr ({}) ---\n{}--- stdout ({}) ---\n{}",
            self.stderr.display(),
            self.stderr(),
            self.stdout.display(),
            self.stdout()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A file's text, with invalid UTF-8 replaced; empty if it does not exist.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Polls `ready` every 25 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
