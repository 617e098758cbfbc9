//! A real headless Chromium for console tests: Debian's `chromedriver` started on a leased
//! loopback port, and the few W3C WebDriver commands the tests need (open a page, find and
//! type into elements, click, read the page, run a line of script, take a screenshot),
//! spoken over a small blocking HTTP/1.1 client. The browser reaches only the
//! loopback ferry the test started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::ports::{PortLease, reserve_port};
use super::process::Daemon;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One WebDriver request: chromedriver keeps connections open whatever `Connection` says,
/// so the answer is read by its `Content-Length`. Returns the status and the body.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut out = vec![0; length];
    reader.read_exact(&mut out)?;
    Ok((status, out))
}

/// The element key of W3C WebDriver.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the browser and its driver stop when it is dropped.
pub struct Browser {
    session: String,
    lease: PortLease,
    _driver: Daemon,
    _profile: tempfile::TempDir,
}

/// Whether chromium and chromedriver are installed (scripts/install-test-deps.sh).
pub fn browser_available() -> bool {
    ["chromium", "chromedriver"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (`--headless=new --no-sandbox`: the tests
    /// run as root), `width` x `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("ferry-e2e-chromium-")
            .tempdir()
            .unwrap();
        let lease = reserve_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={}", lease.port()))
            .arg("--allowed-ips=127.0.0.1");
        let log = profile.path().join("chromedriver.log");
        let driver = Daemon::spawn("chromedriver", cmd, &log, &log);
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(&lease.addr(), "GET", "/status", &[]).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start: {}",
                driver.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run", "--no-proxy-server",
                         format!("--user-data-dir={}", profile.path().join("profile").display()),
                         format!("--window-size={width},{height}")],
            }
        }}});
        let mut b = Browser {
            session: String::new(),
            lease,
            _driver: driver,
            _profile: profile,
        };
        let v = b.command("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, answer) = request(&self.lease.addr(), method, path, body.as_bytes())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: {e}: {}",
                String::from_utf8_lossy(&answer)
            )
        });
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.session_command("POST", "/url", Some(json!({"url": url})));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.session_command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser has it.
    pub fn source(&self) -> String {
        self.session_command("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let v = self.session_command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.session_command(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Clicks the element matching `css` (a submit button waits for the next page).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.session_command("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Presses keys (WebDriver key codes such as `\u{E004}` for Tab, `\u{E007}` for Enter)
    /// in the focused element, as a person at the keyboard would.
    pub fn press(&self, keys: &str) {
        let mut actions = Vec::new();
        for k in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": k.to_string()}));
            actions.push(json!({"type": "keyUp", "value": k.to_string()}));
        }
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.session_command("POST", "/actions", Some(body));
    }

    /// Runs a script in the page and returns its value.
    pub fn script(&self, script: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a PNG screenshot of the viewport at `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.session_command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = request(&self.lease.addr(), "DELETE", &path, &[]);
        }
    }
}

/// `target/test-output/<name>` (or under `CARGO_TARGET_DIR`).
pub fn test_output(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-output").join(name)
}
