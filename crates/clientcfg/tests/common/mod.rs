//! Helpers for the real-client acceptance tests: a loopback HTTP recorder that plays a
//! registry answering `NAME_UNKNOWN` to everything but `/v2/`, process helpers with
//! deadlines, and skip reporting.
//!
//! Nothing here touches the network beyond 127.0.0.1: every generated file points the
//! clients' fallback servers at [`DEAD`], a loopback port nothing listens on.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback address where nothing listens (port 1, tcpmux): connections are refused at once.
pub const DEAD: &str = "http://127.0.0.1:1";

/// Records the request line (`METHOD target`) of every HTTP request it receives.
pub struct Recorder {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Starts listening on a free loopback port; the accept thread lives as long as the test
    /// process.
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(stream, &log));
            }
        });
        Recorder { addr, seen }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request line so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a request line containing `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.requests().iter().any(|r| r.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // A TLS hello (clients that try https first) starts with 0x16: drop it at once.
        if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return; // not HTTP (e.g. a TLS hello from a client trying https first)
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return;
    }
    log.lock().unwrap().push(format!("{method} {target}"));
    let path = target.split('?').next().unwrap_or_default();
    let (status, body) = if path == "/v2/" || path == "/v2" {
        ("200 OK", "{}".to_owned())
    } else {
        (
            "404 Not Found",
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"test recorder knows no repositories"}]}"#
                .to_owned(),
        )
    };
    let body_out = if method == "HEAD" { "" } else { body.as_str() };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
         Docker-Distribution-API-Version: registry/2.0\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body_out}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes());
}

/// The full path of `bin` on `PATH` (or in /usr/sbin, /sbin), if any.
pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Prints a skip line that names the test and the reason. Tests cannot report "skipped",
/// so the line is written straight to stderr, past the test harness's output capture
/// (which only takes `print!`/`eprint!`), and shows in every `cargo test` run.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {reason}");
}

/// Runs a command to completion or kills it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish in {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A background daemon that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> std::io::Result<Daemon> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        Ok(Daemon {
            child,
            log: log.to_owned(),
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `path` exists (a socket), the daemon exits, or `timeout` passes.
    pub fn wait_for_path(&mut self, path: &Path, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if path.exists() {
                return true;
            }
            if !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // SIGTERM lets dockerd stop the containerd it started; this targets our own child only.
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both output streams as text.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
