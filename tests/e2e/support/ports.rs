//! Loopback ports that parallel test processes cannot hand out twice.
//!
//! A port is leased by taking an exclusive `flock` on `$TMPDIR/ferry-e2e-ports/<port>.lock` and
//! holding it as long as the lease lives, so a server can be stopped and started again on the
//! same port without another test grabbing it in between. Candidates come from below Linux's
//! ephemeral range (32768+), so outgoing connections never occupy them either. A crashed test
//! process releases its locks with its file descriptors.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;

/// Ports are picked from this range; it sits below the kernel's ephemeral port range.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A reserved port on 127.0.0.1, held until dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: File,
}

impl PortLease {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("ferry-e2e-ports");
    std::fs::create_dir_all(&dir).expect("create port lock directory");
    dir
}

pub(crate) use ferry_testkit::wire::random_u64;

/// Reserves a free port on 127.0.0.1 (nobody listens on it and no other test holds it).
pub fn reserve_port() -> PortLease {
    let dir = lock_dir();
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..2000 {
        let port = PORT_RANGE.start + (random_u64() % span) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .expect("open port lock file");
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        return PortLease { port, _lock: lock };
    }
    panic!("no free loopback port found in {PORT_RANGE:?}");
}

/// Leases one given port (e.g. ferry's default 5000), or `None` when another test holds it or
/// something already listens on it. Ports outside [`PORT_RANGE`] are never handed out by
/// [`reserve_port`], so only tests asking for the same fixed port compete for it.
pub fn lease_port(port: u16) -> Option<PortLease> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir().join(format!("{port}.lock")))
        .expect("open port lock file");
    lock.try_lock().ok()?;
    TcpListener::bind(("127.0.0.1", port)).ok()?;
    TcpListener::bind(("0.0.0.0", port)).ok()?;
    Some(PortLease { port, _lock: lock })
}
