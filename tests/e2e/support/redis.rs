//! A real `redis-server` for tests that share state between ferry replicas: started on a
//! leased 127.0.0.1 port in a private directory, with no persistence (no RDB snapshots, no
//! AOF), killed on drop, and stoppable and startable again on the same port (to test what
//! happens while Redis is down). [`RedisServer::command`] speaks RESP over a plain TCP socket,
//! so tests can look at the keys ferry writes without any client library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::ports::{PortLease, reserve_port};
use super::process::{Daemon, scrub_env};

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$n` bulk string (`None` for the null bulk string).
    Bulk(Option<String>),
    /// `*n` array (`None` for the null array).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The strings of an array reply (e.g. of `KEYS`), or of a single bulk/simple string.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Resp::Simple(s) | Resp::Bulk(Some(s)) => vec![s.clone()],
            Resp::Array(Some(items)) => items.iter().flat_map(Resp::strings).collect(),
            _ => Vec::new(),
        }
    }
}

/// A running (or stopped) `redis-server`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    lease: PortLease,
    log_path: PathBuf,
    daemon: Option<Daemon>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-redis-")
            .tempdir()
            .expect("redis tempdir");
        let mut server = RedisServer {
            log_path: dir.path().join("redis.log"),
            dir,
            lease: reserve_port(),
            daemon: None,
        };
        server.start_again();
        server
    }

    /// Starts it again (after [`RedisServer::stop`]) on the same port, empty.
    pub fn start_again(&mut self) {
        if let Some(d) = self.daemon.as_mut() {
            assert!(!d.is_running(), "redis-server is already running");
        }
        let mut cmd = Command::new("redis-server");
        scrub_env(&mut cmd, &[]);
        cmd.args(["--port", &self.lease.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path());
        let mut daemon = Daemon::spawn("redis-server", cmd, &self.log_path, &self.log_path);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = daemon.exit_status() {
                panic!(
                    "redis-server exited ({status}) before answering on {} \
                     (scripts/install-test-deps.sh installs it)\n{}",
                    self.addr(),
                    daemon.log()
                );
            }
            if matches!(self.command(&["PING"]), Ok(Resp::Simple(s)) if s == "PONG") {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server did not answer on {} within 10s\n{}",
                    self.addr(),
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(daemon);
    }

    /// Kills it (SIGKILL): Redis is suddenly gone, with everything it held.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.lease.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// `redis://127.0.0.1:<port>/0`, for ferry's `redis.url`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr())
    }

    /// Runs one command on a fresh connection and returns its reply.
    pub fn command(&self, args: &[&str]) -> std::io::Result<Resp> {
        let addr = self
            .addr()
            .parse()
            .map_err(|e| std::io::Error::other(format!("{e}")))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes())?;
        read_reply(&mut BufReader::new(stream))
    }

    /// The keys matching a glob pattern (`KEYS`; fine for a test's handful of keys).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self
            .command(&["KEYS", pattern])
            .unwrap_or_else(|e| panic!("redis KEYS {pattern}: {e}"));
        let mut keys = reply.strings();
        keys.sort();
        keys
    }

    /// What redis-server logged.
    pub fn log(&self) -> String {
        super::process::read_lossy(&self.log_path)
    }
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let bad = |what: String| std::io::Error::other(format!("malformed RESP reply: {what}"));
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed".into()));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|_| bad(line.to_owned()));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Resp::Bulk(None),
            Ok(n) => {
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                Resp::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Resp::Array(None),
            Ok(n) => Resp::Array(Some(
                (0..n)
                    .map(|_| read_reply(r))
                    .collect::<std::io::Result<_>>()?,
            )),
        },
        _ => return Err(bad(line.to_owned())),
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== redis-server on {} ===\n{}", self.addr(), self.log());
        }
        self.stop();
    }
}
