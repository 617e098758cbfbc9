//! Operating ferry, as the people who run it for months see it: `/metrics` counters that move
//! the way a pull says they should, `/healthz` and `/readyz`, one JSON log line per request,
//! `check-config` exit codes, configuration reloads (SIGHUP and file changes, good and broken)
//! that never drop a download in flight, SIGTERM that lets in-flight responses finish and leaves
//! no partial cache entry, TLS termination with a test CA (HTTP/2 and HTTP/1.1, certificate
//! reload), and the shipped artefacts that depend on metric and config names: the metrics table
//! of docs/operations.md, the Grafana dashboard and the sample configurations in deploy/.
//!
//! One file a topic: [`metrics`], [`health`] (health, readiness and logs), [`check_config`]
//! (and the shipped configurations), [`reload`], [`shutdown`], [`tls`], [`artefacts`] (the
//! docs table and the dashboard); the helpers they share are here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::core::{is_cached, spool_files};
use crate::support::clients::{run, skopeo_command};
use crate::support::ferry::ferry_command;
use crate::support::http::{client_builder, raw_get, raw_request};
use crate::support::metrics::Scrape;
use crate::support::ports::{PortLease, reserve_port};
use crate::support::process::{Daemon, read_lossy};
use crate::support::registry::MANIFEST_ACCEPT;
use crate::support::*;

mod artefacts;
mod check_config;
mod health;
mod metrics;
mod reload;
mod shutdown;
mod tls;

const REPO_ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MIB: u64 = 1024 * 1024;

// Helpers shared by the topics below.

/// A blob download on its own thread over a plain socket, so a test can signal ferry, reload
/// it or look at its metrics while the body is still arriving.
struct Download {
    received: Arc<AtomicU64>,
    thread: JoinHandle<Downloaded>,
}

#[derive(Debug)]
struct Downloaded {
    status: u16,
    content_length: Option<u64>,
    body: Vec<u8>,
    /// Why the body ended early (an I/O error), if it did.
    error: Option<String>,
}

impl Downloaded {
    fn complete(&self) -> bool {
        self.error.is_none() && Some(self.body.len() as u64) == self.content_length
    }
}

impl Download {
    fn start(addr: &str, path: &str) -> Download {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let (addr, path) = (addr.to_owned(), path.to_owned());
        let thread = std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).expect("connect to ferry");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut head_end = None;
            let mut error = None;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
                if head_end.is_none() {
                    head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                }
                if let Some(h) = head_end {
                    counter.store((raw.len() - h) as u64, Ordering::SeqCst);
                }
            }
            let h = head_end.expect("a response head");
            let head = String::from_utf8_lossy(&raw[..h]).into_owned();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let content_length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            });
            Downloaded {
                status,
                content_length,
                body: raw[h..].to_vec(),
                error,
            }
        });
        Download { received, thread }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn wait_for_bytes(&self, n: u64) {
        wait_until(Duration::from_secs(30), "the first body bytes", || {
            self.received() >= n || self.thread.is_finished()
        });
        assert!(
            self.received() >= n,
            "download ended after {} bytes",
            self.received()
        );
    }

    fn finish(self) -> Downloaded {
        self.thread.join().expect("download thread")
    }

    /// Waits for the end and asserts a whole 200 response with exactly the blob's bytes.
    fn finish_whole(self, digest: &str) {
        let got = self.finish();
        assert_eq!(got.status, 200);
        assert!(
            got.complete(),
            "{} of {:?} bytes: {:?}",
            got.body.len(),
            got.content_length,
            got.error
        );
        assert_eq!(sha256_digest(&got.body), digest);
    }
}

fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/docker.io/{repo}/blobs/{digest}")
}

/// The `Docker-Content-Digest` ferry answers for `repo:tag` through the docker.io prefix.
fn tag_digest(ferry_host: &str, repo: &str, tag: &str) -> String {
    let r = raw_request(
        ferry_host,
        "GET",
        &format!("/v2/docker.io/{repo}/manifests/{tag}"),
        &[("Accept", MANIFEST_ACCEPT)],
        &[],
    )
    .expect("GET manifest");
    assert_eq!(r.status, 200, "GET {repo}:{tag}: {}", r.text());
    let digest = r.header("docker-content-digest").expect("digest header");
    assert_eq!(sha256_digest(&r.body), digest);
    digest.to_owned()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Writes `config` as the config file of `ferry` (started from [`start_for_sighup`]) without
/// changing the file's size or modification time (a comment pads it), in one atomic rename: the
/// file watcher (which compares both) cannot notice, so only SIGHUP can make ferry read it.
fn replace_config_unnoticed(ferry: &Ferry, config: &FerryBuilder) {
    let path = ferry.config_path();
    let text = config
        .render(&ferry.host(), ferry.data_dir())
        .replace(PADDING, "");
    let old = std::fs::metadata(path).expect("config metadata");
    let (len, mtime) = (old.len() as usize, old.modified().unwrap());
    let mut text = text.trim_end().to_owned();
    text.push('\n');
    assert!(
        text.len() + 3 <= len,
        "the new config ({} bytes) must be shorter than the old one ({len}); pad the original",
        text.len()
    );
    let pad = len - text.len() - 2;
    text.push('#');
    text.push_str(&"-".repeat(pad));
    text.push('\n');
    assert_eq!(text.len(), len);
    let tmp = path.with_extension("unnoticed");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Padding appended to configs that [`replace_config_unnoticed`] will later replace.
const PADDING: &str = "# padding for the unnoticed rewrite ................................................................................";

/// A ferry for `upstream` (as docker.io, tag TTL 1 s) whose config file is padded for
/// [`replace_config_unnoticed`], with the builder it was started from.
fn start_for_sighup(upstream: &FaultyUpstream) -> (FerryBuilder, Ferry) {
    let builder = Ferry::builder()
        .upstream("docker.io", upstream)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking")
        .raw_yaml(PADDING);
    let ferry = builder.clone().start();
    (builder, ferry)
}

/// Two fake upstreams serving different images under the same name `library/app:1`.
fn two_upstreams() -> (FaultyUpstream, String, FaultyUpstream, String) {
    let a = FaultyUpstream::start();
    let layer = a.add_pattern_blob(101, 2000);
    let da = a.add_image("library/app", "1", &[layer]);
    let b = FaultyUpstream::start();
    let layer = b.add_pattern_blob(102, 2000);
    let db = b.add_image("library/app", "1", &[layer]);
    assert_ne!(da, db);
    (a, da, b, db)
}

/// Waits until the tag TTL (1 s in these tests) has passed, so the next request revalidates.
fn past_tag_ttl() {
    std::thread::sleep(Duration::from_millis(1300));
}

/// A ferry (with `server.shutdown_timeout: grace`) over an upstream that sends one blob of
/// `size` bytes at `rate` bytes per second, and a download of that blob through ferry that has
/// received its first `started` bytes.
struct SlowDownload {
    up: FaultyUpstream,
    blob: String,
    throttle: RuleId,
    ferry: Ferry,
    path: String,
    download: Download,
}

impl SlowDownload {
    fn start(seed: u64, size: u64, rate: u64, grace: &str, started: u64) -> SlowDownload {
        let up = FaultyUpstream::start();
        let blob = up.add_pattern_blob(seed, size);
        let throttle = up.add_rule(Rule::blob(&blob, Fault::Throttle(rate)));
        let ferry = Ferry::builder()
            .upstream("docker.io", &up)
            .set("server.shutdown_timeout", grace)
            .start();
        let path = blob_path("library/big", &blob);
        let download = Download::start(&ferry.host(), &path);
        download.wait_for_bytes(started);
        SlowDownload {
            up,
            blob,
            throttle,
            ferry,
            path,
            download,
        }
    }
}
