//! Operating ferry, as the people who run it for months see it: `/metrics` counters that move
//! the way a pull says they should, `/healthz` and `/readyz`, one JSON log line per request,
//! `check-config` exit codes, configuration reloads (SIGHUP and file changes, good and broken)
//! that never drop a download in flight, SIGTERM that lets in-flight responses finish and leaves
//! no partial cache entry, TLS termination with a test CA (HTTP/2 and HTTP/1.1, certificate
//! reload), and the shipped artefacts that depend on metric and config names: the metrics table
//! of docs/operations.md, the Grafana dashboard and the sample configurations in deploy/.

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

const REPO_ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// A cold pull counts misses, upstream requests and bytes from upstream; the same pull again
/// counts only hits and bytes from the cache, and sends nothing upstream.
#[test]
fn metrics_count_misses_then_hits_during_a_pull() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::multi(), "library/hello:1");
    let ferry = Ferry::for_registry(&upstream);
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());
    let blobs = image.blobs.len() as f64;
    let blob_bytes = image.blobs.iter().map(|b| b.size).sum::<u64>() as f64;
    let pull = || {
        let out = tempfile::tempdir().unwrap();
        skopeo_copy(
            &reference,
            &format!("dir:{}", out.path().display()),
            &["--all"],
        );
    };
    let blob_kind = [("upstream", "docker.io"), ("kind", "blob")];
    let blob_gets = [
        ("route", "blob"),
        ("method", "GET"),
        ("status", "200"),
        ("upstream", "docker.io"),
    ];

    let fresh = Scrape::of(&ferry.host());
    assert_eq!(fresh.sum("ferry_cache_hits_total", &[]), 0.0);
    assert_eq!(fresh.sum("ferry_cache_misses_total", &[]), 0.0);
    assert_eq!(fresh.sum("ferry_inflight_fills", &[]), 0.0);

    pull();
    let cold = Scrape::of(&ferry.host());
    assert_eq!(cold.sum("ferry_cache_misses_total", &blob_kind), blobs);
    assert_eq!(cold.sum("ferry_cache_hits_total", &blob_kind), 0.0);
    assert!(cold.sum("ferry_cache_misses_total", &[("kind", "manifest")]) >= 1.0);
    // Each cold blob's first request asks for a range (206), and large ones come in segments.
    let requests: f64 = image
        .blobs
        .iter()
        .map(|b| crate::core::segment_gets(b.size) as f64)
        .sum();
    let upstream_blob = |status| {
        cold.sum(
            "ferry_upstream_requests_total",
            &[
                ("upstream", "docker.io"),
                ("kind", "blob"),
                ("status", status),
            ],
        )
    };
    assert_eq!(upstream_blob("200") + upstream_blob("206"), requests);
    assert_eq!(
        cold.sum(
            "ferry_upstream_request_duration_seconds_count",
            &[("upstream", "docker.io"), ("kind", "blob")]
        ),
        requests,
        "one latency observation per upstream blob request"
    );
    assert!(
        cold.sum(
            "ferry_upstream_received_bytes_total",
            &[("upstream", "docker.io")]
        ) >= blob_bytes
    );
    assert!(cold.sum("ferry_served_bytes_total", &[("source", "upstream")]) >= blob_bytes);
    assert_eq!(cold.sum("ferry_http_requests_total", &blob_gets), blobs);
    assert!(cold.sum("ferry_storage_used_bytes", &[]) >= blob_bytes);
    assert_eq!(cold.sum("ferry_inflight_fills", &[]), 0.0);
    assert_eq!(cold.sum("ferry_fill_failures_total", &[]), 0.0);

    pull();
    let warm = Scrape::of(&ferry.host());
    assert_eq!(warm.sum("ferry_cache_hits_total", &blob_kind), blobs);
    assert_eq!(
        warm.sum("ferry_cache_misses_total", &[]),
        cold.sum("ferry_cache_misses_total", &[]),
        "a warm pull misses nothing"
    );
    assert!(warm.sum("ferry_cache_hits_total", &[("kind", "manifest")]) >= 1.0);
    assert_eq!(
        warm.sum("ferry_upstream_requests_total", &[]),
        cold.sum("ferry_upstream_requests_total", &[]),
        "a warm pull within tag_ttl sends nothing upstream"
    );
    assert_eq!(
        warm.sum("ferry_served_bytes_total", &[("source", "upstream")]),
        cold.sum("ferry_served_bytes_total", &[("source", "upstream")])
    );
    let from_cache = warm.sum("ferry_served_bytes_total", &[("source", "cache")])
        - cold.sum("ferry_served_bytes_total", &[("source", "cache")]);
    assert!(
        from_cache >= blob_bytes,
        "{from_cache} bytes from the cache"
    );
    assert_eq!(
        warm.sum("ferry_http_requests_total", &blob_gets),
        2.0 * blobs
    );
    assert_eq!(
        warm.sum(
            "ferry_http_request_duration_seconds_count",
            &[("kind", "blob")]
        ),
        warm.sum("ferry_http_requests_total", &[("route", "blob")]),
        "one latency observation per blob request"
    );
    assert_eq!(upstream.blob_gets(), image.blobs.len());
}

/// While one slow download runs, `ferry_inflight_fills` is 1 and every other request for the
/// same blob is counted in `ferry_coalesced_waiters_total`; afterwards the gauge is back to 0.
#[test]
fn metrics_show_downloads_in_flight_and_coalesced_waiters() {
    let up = FaultyUpstream::start();
    let size = 5 * MIB;
    let blob = up.add_pattern_blob(7, size);
    up.add_rule(Rule::blob(&blob, Fault::Throttle(MIB)));
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let path = blob_path("library/slow", &blob);

    let first = Download::start(&ferry.host(), &path);
    wait_until(Duration::from_secs(10), "the download to start", || {
        Scrape::of(&ferry.host()).sum("ferry_inflight_fills", &[]) == 1.0
    });
    let others: Vec<Download> = (0..2)
        .map(|_| Download::start(&ferry.host(), &path))
        .collect();
    for d in &others {
        d.wait_for_bytes(1);
    }
    let during = Scrape::of(&ferry.host());
    assert_eq!(during.sum("ferry_inflight_fills", &[]), 1.0);
    assert_eq!(
        during.sum(
            "ferry_coalesced_waiters_total",
            &[("upstream", "docker.io")]
        ),
        2.0
    );
    for d in std::iter::once(first).chain(others) {
        d.finish_whole(&blob);
    }
    let after = Scrape::of(&ferry.host());
    assert_eq!(after.sum("ferry_inflight_fills", &[]), 0.0);
    let blob_kind = [("kind", "blob")];
    assert_eq!(
        after.sum("ferry_cache_misses_total", &blob_kind)
            + after.sum("ferry_cache_hits_total", &blob_kind),
        3.0,
        "every request counted once, as a hit or a miss"
    );
    assert_eq!(
        up.blob_gets(&blob),
        1,
        "one upstream download for three clients"
    );
}

// ---------------------------------------------------------------------------------------------
// Health and logs
// ---------------------------------------------------------------------------------------------

/// Makes the cache's spool directory (where `/readyz` writes its probe) unwritable for ferry,
/// and undoes it on drop. For a non-root ferry `chmod 0555` does it; root ignores permissions
/// (CAP_DAC_OVERRIDE), so there the directory is swapped for a regular file, which no one can
/// create files in.
struct Unwritable {
    spool: PathBuf,
    moved: Option<PathBuf>,
}

impl Unwritable {
    fn make(spool: &Path) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = spool.join("probe-from-the-test");
        if std::fs::write(&probe, b"x").is_err() {
            return Unwritable {
                spool: spool.to_owned(),
                moved: None,
            };
        }
        // Running as root: permissions do not stop us, nor ferry.
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let moved = spool.with_extension("moved-by-test");
        std::fs::rename(spool, &moved).unwrap();
        std::fs::write(spool, b"not a directory\n").unwrap();
        Unwritable {
            spool: spool.to_owned(),
            moved: Some(moved),
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        match self.moved.take() {
            Some(moved) => {
                let _ = std::fs::remove_file(&self.spool);
                let _ = std::fs::rename(moved, &self.spool);
            }
            None => {
                let _ =
                    std::fs::set_permissions(&self.spool, std::fs::Permissions::from_mode(0o755));
            }
        }
    }
}

/// `/healthz` says the process is alive; `/readyz` says the cache is writable: 503 while it is
/// not (the pod leaves the Service), 200 again once it is, with no restart.
#[test]
fn readyz_fails_while_the_cache_is_not_writable() {
    let ferry = Ferry::builder().start();
    let get = |path: &str| raw_get(&ferry.host(), path).expect(path);
    assert_eq!(get("/healthz").status, 200);
    assert_eq!(get("/readyz").status, 200, "{}", get("/readyz").text());

    let spool = ferry.data_dir().join("_spool");
    assert!(
        spool.is_dir(),
        "the fs backend spools under {}",
        spool.display()
    );
    let broken = Unwritable::make(&spool);
    let r = get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("not ready"), "{}", r.text());
    assert_eq!(get("/healthz").status, 200, "alive while not ready");

    drop(broken);
    wait_until(Duration::from_secs(5), "/readyz to recover", || {
        get("/readyz").status == 200
    });
}

/// The request-log fields docs/operations.md promises, in every JSON request line.
const REQUEST_LOG_FIELDS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "client",
    "user",
    "method",
    "path",
    "upstream",
    "repository",
    "cache",
    "status",
    "bytes",
    "duration_ms",
];

/// The JSON lines of a log, all of which must parse.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// With `--log-format json`, stderr is JSON lines only, and each request gets exactly one line
/// with client IP, user, upstream, repository, cache outcome, status, bytes and duration.
#[test]
fn json_log_has_one_line_per_request_with_the_documented_fields() {
    let up = FaultyUpstream::start();
    let layer = up.add_pattern_blob(31, 100_000);
    up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .arg("--log-format")
        .arg("json")
        .start();
    let host = ferry.host();
    let manifest = "/v2/docker.io/library/app/manifests/1";
    let blob = blob_path("library/app", &layer);
    let blob = blob.as_str();
    let missing = "/v2/docker.io/library/nothere/manifests/1";
    // (method, path, status, cache outcome, body bytes or None)
    let plan: Vec<(&str, &str, u16, &str, Option<u64>)> = vec![
        ("GET", "/v2/", 200, "-", None),
        ("GET", manifest, 200, "miss", None),
        ("HEAD", manifest, 200, "hit", Some(0)),
        ("GET", blob, 200, "miss", Some(100_000)),
        ("GET", blob, 200, "hit", Some(100_000)),
        ("GET", missing, 404, "-", None),
    ];
    for (method, path, status, _, _) in &plan {
        let r = raw_request(&host, method, path, &[], &[]).unwrap();
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
    }
    let request_lines = || {
        json_lines(&ferry.stderr())
            .into_iter()
            .filter(|v| v["target"] == "ferry::request")
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(5), "a log line per request", || {
        request_lines().len() >= plan.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = request_lines();
    assert_eq!(lines.len(), plan.len(), "one line per request: {lines:#?}");
    for (line, (method, path, status, cache, bytes)) in lines.iter().zip(&plan) {
        for field in REQUEST_LOG_FIELDS {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(line["method"], *method, "{line}");
        assert_eq!(line["path"], *path, "{line}");
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert_eq!(line["user"], "-", "{line}");
        assert!(line["duration_ms"].is_u64(), "{line}");
        if path.contains("/docker.io/") {
            assert_eq!(line["upstream"], "docker.io", "{line}");
        }
        if *status == 200 && *path != "/v2/" {
            assert_eq!(line["cache"], *cache, "{line}");
            assert_eq!(line["repository"], "library/app", "{line}");
        }
        if let Some(b) = bytes {
            assert_eq!(line["bytes"], *b, "{line}");
        }
    }
    // The other lines (start-up, ...) are JSON too, with a message.
    let serving = json_lines(&ferry.stderr())
        .into_iter()
        .find(|v| v["message"] == "ferry is serving")
        .expect("a start-up line");
    assert_eq!(serving["level"], "INFO");
}

/// `RUST_LOG` filters by target: request lines can be switched off while the rest stays.
#[test]
fn rust_log_filters_request_lines_by_target() {
    let ferry = Ferry::builder()
        .env("RUST_LOG", "info,ferry::request=off")
        .start();
    for _ in 0..3 {
        assert_eq!(raw_get(&ferry.host(), "/v2/").unwrap().status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = ferry.stderr();
    assert!(log.contains("ferry is serving"), "{log}");
    assert!(!log.contains("ferry::request"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// check-config and the shipped configurations
// ---------------------------------------------------------------------------------------------

fn check_config(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = ferry_command();
    cmd.arg("check-config").arg(&path).envs(env.iter().copied());
    let out = cmd.output().expect("run ferry check-config");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an operator sees from `ferry check-config` before a reload, beyond the exit codes and
/// per-key messages that `core::defaults::check_config_exits_0_or_2_naming_the_key_and_line`
/// covers: every problem of a file at once (one fix-and-retry round, not one per error), and
/// broken YAML located by line; both exit 2.
#[test]
fn check_config_reports_every_error_at_once_and_broken_yaml() {
    let (code, out, err) = check_config("listen: 127.0.0.1:5000\ncache:\n  tag_ttl: 1m\n", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");

    let (code, _, err) = check_config(
        "listen: nonsense\n\
         default_upstream: nowhere.io\n\
         upstreams:\n  docker.io:\n    url: ftp://x\n",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    for (line, key) in [
        (1, "listen"),
        (2, "default_upstream"),
        (5, "upstreams.docker.io.url"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!(":{line}:")) && l.contains(key)),
            "line {line} / {key} in:\n{err}"
        );
    }
    assert!(err.contains("3 errors"), "{err}");

    let (code, _, err) = check_config("upstreams:\n  docker.io: {url: [\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains(":2:"), "{err}");
}

/// The `ferry.yaml` embedded in a Kubernetes manifest (`ferry.yaml: |` block).
fn embedded_config(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut lines = text.lines();
    let start = lines
        .by_ref()
        .find(|l| l.trim_end().ends_with("ferry.yaml: |"))
        .unwrap_or_else(|| panic!("no ferry.yaml block in {}", manifest.display()));
    let outer = start.len() - start.trim_start().len();
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = block
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap();
    block
        .iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configurations ferry ships (systemd sample and container default, the Kubernetes
/// ConfigMaps) pass `ferry check-config`, with the secrets the S3 variant takes from its Secret.
#[test]
fn shipped_configurations_pass_check_config() {
    let root = Path::new(REPO_ROOT);
    let s3_env = [
        ("FERRY_STORAGE__S3__ACCESS_KEY_ID", "AKIAEXAMPLEKEYID"),
        (
            "FERRY_STORAGE__S3__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    ];
    let cases = [
        (
            std::fs::read_to_string(root.join("deploy/systemd/ferry.yaml")).unwrap(),
            &[][..],
        ),
        (
            embedded_config(&root.join("deploy/kubernetes/mirror/base/configmap.yaml")),
            &[][..],
        ),
        (
            embedded_config(&root.join("deploy/kubernetes/mirror/s3/configmap.yaml")),
            &s3_env[..],
        ),
    ];
    for (text, env) in cases {
        let (code, out, err) = check_config(&text, env);
        assert_eq!(code, 0, "{text}\n{out}{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

/// SIGHUP makes ferry read a changed upstream: the next revalidation goes to the new registry
/// and the old one hears nothing more. (The file is swapped so that the watcher cannot see it:
/// this is the signal alone.)
#[test]
fn sighup_switches_to_a_changed_upstream() {
    let (a, da, b, db) = two_upstreams();
    let (builder, mut ferry) = start_for_sighup(&a);
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    replace_config_unnoticed(&ferry, &builder.upstream("docker.io", &b));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the reload", || {
        ferry.stderr().contains("configuration reloaded")
    });
    let a_seen = a.requests().len();
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), db);
    assert_eq!(a.requests().len(), a_seen, "the old upstream is not asked");
    assert!(
        !ferry.stderr().contains("configuration file changed"),
        "the signal, not the watcher, reloaded:\n{}",
        ferry.stderr()
    );
}

/// SIGHUP with a broken file: ferry logs why, keeps its old config (nothing of the broken file
/// applies, not even its valid parts) and keeps serving and ready.
#[test]
fn sighup_with_a_broken_config_keeps_serving() {
    let (a, da, b, _) = two_upstreams();
    let (builder, mut ferry) = start_for_sighup(&a);
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    let broken = builder
        .upstream("docker.io", &b)
        .set("cache.no_such_key", true);
    replace_config_unnoticed(&ferry, &broken);
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the refusal", || {
        ferry.stderr().contains("configuration NOT reloaded")
    });
    assert!(
        ferry.stderr().contains("no_such_key"),
        "the log says why:\n{}",
        ferry.stderr()
    );
    assert!(ferry.is_running());
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    assert_eq!(b.requests().len(), 0, "nothing of the broken file applies");
    assert_eq!(raw_get(&ferry.host(), "/readyz").unwrap().status, 200);
}

/// Builds the layout kubelet gives a mounted ConfigMap: `<dir>/ferry.yaml -> ..data/ferry.yaml`
/// and `..data -> ..<version>`, where a new version is swapped in with one atomic rename.
struct ConfigMapDir {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: &Path) -> ConfigMapDir {
        std::fs::create_dir_all(dir).unwrap();
        ConfigMapDir {
            dir: dir.to_owned(),
            version: 0,
        }
    }

    /// Publishes a new version of the file; its modification time can be forced, so that only
    /// the symlink target differs from the previous version.
    fn publish(&mut self, text: &str, mtime: Option<SystemTime>) -> PathBuf {
        self.version += 1;
        let versioned = self.dir.join(format!("..v{}", self.version));
        std::fs::create_dir(&versioned).unwrap();
        let file = versioned.join("ferry.yaml");
        std::fs::write(&file, text).unwrap();
        if let Some(t) = mtime {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{}", self.version), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        file
    }
}

/// Without any signal: ferry reloads when its config file is rewritten in place, when the file
/// becomes a kubelet-style symlink, and when a ConfigMap update swaps the `..data` symlink (even
/// with the same size and modification time); a broken version is refused and the last good
/// one kept.
#[test]
fn config_file_changes_reload_without_a_signal() {
    let (a, da, b, db) = two_upstreams();
    let builder = Ferry::builder()
        .upstream("docker.io", &a)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking");
    let mut ferry = builder.clone().start();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    let reloads = |f: &Ferry| count(&f.stderr(), "configuration reloaded");
    let wait_reload = |f: &Ferry, before: usize, what: &str| {
        wait_until(Duration::from_secs(15), what, || reloads(f) > before);
    };

    // 1. The file rewritten in place.
    let n = reloads(&ferry);
    ferry.update_config(|c| c.upstream("docker.io", &b));
    wait_reload(&ferry, n, "a reload after an in-place rewrite");
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), db);

    // 2. The same content, now behind kubelet's symlinks.
    let render = |c: FerryBuilder| c.render(&ferry.host(), ferry.data_dir());
    let mut cm = ConfigMapDir::new(&ferry.dir().join("configmap"));
    let v1 = cm.publish(&render(builder.clone().upstream("docker.io", &b)), None);
    let n = reloads(&ferry);
    let link = ferry.dir().join("ferry.yaml.link");
    std::os::unix::fs::symlink("configmap/..data/ferry.yaml", &link).unwrap();
    std::fs::rename(&link, ferry.config_path()).unwrap();
    wait_reload(&ferry, n, "a reload after the file became a symlink");

    // 3. A ConfigMap update: same size and modification time, another ..data target.
    let mut text_a = render(builder.clone());
    let len_b = std::fs::metadata(&v1).unwrap().len() as usize;
    while text_a.len() < len_b {
        text_a.push('\n');
    }
    assert_eq!(text_a.len(), len_b, "upstream URLs of equal length");
    let mtime = std::fs::metadata(&v1).unwrap().modified().unwrap();
    let n = reloads(&ferry);
    cm.publish(&text_a, Some(mtime));
    wait_reload(&ferry, n, "a reload after the ..data swap");
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);

    // 4. A broken version: refused, the last good config stays.
    let refusals = count(&ferry.stderr(), "configuration NOT reloaded");
    cm.publish("listen: [broken\n", None);
    wait_until(Duration::from_secs(15), "the refusal", || {
        count(&ferry.stderr(), "configuration NOT reloaded") > refusals
    });
    past_tag_ttl();
    assert_eq!(tag_digest(&ferry.host(), "library/app", "1"), da);
    assert!(ferry.is_running());
}

/// A reload in the middle of a download does not disturb it: the body completes, verified, from
/// the upstream it started on, and the blob is cached (the new upstream is never asked for it).
#[test]
fn a_download_in_flight_survives_a_reload() {
    let size = 4 * MIB;
    let SlowDownload {
        up: a,
        blob,
        mut ferry,
        path,
        download,
        ..
    } = SlowDownload::start(41, size, MIB, "30s", 256 * 1024);
    let b = FaultyUpstream::start();
    ferry.update_config(|c| c.upstream("docker.io", &b).tag_ttl("5s"));
    ferry.sighup();
    wait_until(Duration::from_secs(10), "the reload", || {
        ferry.stderr().contains("configuration reloaded")
    });
    assert!(
        download.received() < size,
        "the reload happened while the download was in flight"
    );
    download.finish_whole(&blob);
    assert_eq!(a.blob_gets(&blob), 1, "the download was not restarted");

    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(b.blob_gets(&blob), 0, "served from the cache");
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// Starts a stopped ferry again and checks that no partial download is left in its spool.
fn start_again_with_an_empty_spool(ferry: &mut Ferry) {
    ferry.start_again();
    let spool = spool_files(ferry);
    assert!(
        spool.is_empty(),
        "left in _spool/ after a restart: {spool:?}"
    );
}

/// SIGTERM during a large, slow download: ferry stops accepting at once, the response in flight
/// completes (verified) within the grace period, ferry exits 0, and the cache holds the
/// complete verified blob or nothing; the next start finds `_spool/` empty.
#[test]
fn sigterm_lets_the_download_in_flight_finish() {
    let size = 8 * MIB;
    let SlowDownload {
        up,
        blob,
        mut ferry,
        path,
        download,
        ..
    } = SlowDownload::start(51, size, 2 * MIB, "30s", 512 * 1024);
    let signalled = Instant::now();
    ferry.sigterm();
    wait_until(Duration::from_secs(3), "ferry to stop accepting", || {
        TcpStream::connect(ferry.host()).is_err()
    });
    assert!(
        download.received() < size,
        "SIGTERM arrived while the response was in flight"
    );

    download.finish_whole(&blob);
    let status = ferry
        .wait_exit(Duration::from_secs(35))
        .expect("ferry exits within the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "ferry exited when the response was done, not at the end of the grace period ({:?})",
        signalled.elapsed()
    );

    // A complete, verified entry or none (is_cached panics on a corrupt one).
    let cached = is_cached(&ferry, &blob);
    eprintln!(
        "after SIGTERM the cache holds {}",
        if cached {
            "the verified blob"
        } else {
            "no entry for the blob"
        }
    );
    start_again_with_an_empty_spool(&mut ferry);
    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(
        up.blob_gets(&blob),
        if cached { 1 } else { 2 },
        "a complete entry is served from the cache; without one ferry downloads again"
    );
}

/// SIGTERM with a download that cannot finish within `server.shutdown_timeout`: ferry waits out
/// the grace period, closes the connection and exits 0; the cut download leaves no entry in the
/// cache (only verified blobs there), its spool file is gone after the next start, and the blob
/// is downloaded again, whole, on request.
#[test]
fn sigterm_past_the_grace_period_leaves_no_partial_entry() {
    let SlowDownload {
        up,
        blob,
        throttle,
        mut ferry,
        path,
        download,
    } = SlowDownload::start(61, 16 * MIB, MIB, "2s", 256 * 1024);
    let signalled = Instant::now();
    ferry.sigterm();
    let status = ferry
        .wait_exit(Duration::from_secs(15))
        .expect("ferry exits after the grace period");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "waited the 2 s grace period, then stopped ({took:?})"
    );
    let got = download.finish();
    assert!(!got.complete(), "the response was cut at exit");

    assert!(
        !is_cached(&ferry, &blob),
        "a cut download is not a cache entry"
    );
    start_again_with_an_empty_spool(&mut ferry);
    up.remove_rule(throttle);
    let again = raw_get(&ferry.host(), &path).unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(sha256_digest(&again.body), blob);
    assert_eq!(up.blob_gets(&blob), 2, "downloaded again after the cut");
    assert!(is_cached(&ferry, &blob));
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new unencrypted P-256 key.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// A test CA in `dir/<name>/` (`ca.crt`, `ca.key`, and `certs/ca.crt` for skopeo's
/// `--cert-dir`) that signs server certificates for 127.0.0.1.
struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    fn new(parent: &Path, name: &str) -> TestCa {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let subject = format!("/CN=ferry test {name}");
        let mut args = vec![
            "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        ];
        args.extend(NEW_EC_KEY);
        args.extend(["-subj", subject.as_str()]);
        openssl(&args, &dir);
        std::fs::copy(dir.join("ca.crt"), dir.join("certs/ca.crt")).unwrap();
        TestCa { dir }
    }

    fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).unwrap()
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Issues a server certificate for 127.0.0.1 and localhost; installs it as `cert`/`key`
    /// with atomic renames (key first), as cert-manager or certbot would.
    fn issue(&self, cert: &Path, key: &Path) {
        let d = &self.dir;
        let mut args = vec!["req", "-keyout", "server.key", "-out", "server.csr"];
        args.extend(NEW_EC_KEY);
        args.extend(["-subj", "/CN=127.0.0.1"]);
        openssl(&args, d);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.crt",
                "-extfile",
                "server.ext",
            ],
            d,
        );
        for (from, to) in [("server.key", key), ("server.crt", cert)] {
            let tmp = to.with_extension("new");
            std::fs::copy(d.join(from), &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    }
}

/// `ferry serve` with `tls:` (the e2e `Ferry` probes readiness over plain HTTP, so this one
/// waits for `https://.../healthz` itself).
struct TlsFerry {
    dir: tempfile::TempDir,
    lease: PortLease,
    daemon: Daemon,
}

impl TlsFerry {
    fn start(builder: FerryBuilder, ca: &TestCa, rt: &tokio::runtime::Runtime) -> TlsFerry {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-tls-")
            .tempdir()
            .unwrap();
        let lease = reserve_port();
        let config = dir.path().join("ferry.yaml");
        let yaml = builder.render(&lease.addr(), &dir.path().join("data"));
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = ferry_command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path());
        let log = dir.path().join("ferry.log");
        let mut daemon = Daemon::spawn("ferry", cmd, &log, &log);
        let url = format!("https://{}/healthz", lease.addr());
        let client = https_client(ca, false);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.exit_status() {
                panic!("ferry exited ({status}):\n{}", daemon.log());
            }
            let ok = rt.block_on(async { client.get(&url).send().await.map(|r| r.status()) });
            if matches!(ok, Ok(s) if s == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no https answer:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFerry { dir, lease, daemon }
    }

    fn host(&self) -> String {
        self.lease.addr()
    }

    fn log(&self) -> String {
        read_lossy(&self.dir.path().join("ferry.log"))
    }
}

impl Drop for TlsFerry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== TLS ferry log ===\n{}", self.log());
        }
        self.daemon.kill9();
    }
}

/// A client that trusts only `ca`, HTTP/2 by ALPN unless `http1_only`. A fresh client per call
/// means a fresh connection, so a reloaded certificate is seen.
fn https_client(ca: &TestCa, http1_only: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&ca.cert_pem()).unwrap();
    let mut b = client_builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(10));
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// TLS termination: skopeo pulls over HTTPS verifying ferry with a test CA (and refuses
/// without it), ALPN gives HTTP/2 or HTTP/1.1 as the client asks, plain HTTP on the TLS port
/// gets nothing, and a renewed certificate (from another CA) is served without a restart while
/// a broken one is refused.
#[test]
fn tls_pull_with_skopeo_and_a_test_ca_then_certificate_reload() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.path().join("tls.crt"), pki.path().join("tls.key"));
    let ca1 = TestCa::new(pki.path(), "ca1");
    ca1.issue(&cert, &key);

    let image = build_fixture(&Fixture::single());
    let up = FaultyUpstream::start();
    up.add_fixture(&image, "library/hello", "1");
    let builder = Ferry::builder()
        .upstream("docker.io", &up)
        .set("tls.cert", cert.to_str().unwrap())
        .set("tls.key", key.to_str().unwrap());
    let ferry = TlsFerry::start(builder, &ca1, &rt);
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());

    // skopeo verifies ferry's certificate with the test CA.
    let out = tempfile::tempdir().unwrap();
    let mut cmd = skopeo_command();
    cmd.arg("copy")
        .arg("--src-cert-dir")
        .arg(ca1.cert_dir())
        .arg(&reference)
        .arg(format!("dir:{}", out.path().display()));
    let pulled = run(cmd);
    assert!(pulled.success, "skopeo over TLS:\n{}", pulled.stderr);
    let manifest = std::fs::read(out.path().join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&manifest), image.digest);
    for b in &image.blobs {
        let hex = b.digest.trim_start_matches("sha256:");
        assert_eq!(sha256_file(&out.path().join(hex)), b.digest);
    }
    // ... and refuses it without the CA.
    let mut cmd = skopeo_command();
    cmd.args(["inspect", "--raw"]).arg(&reference);
    let refused = run(cmd);
    assert!(!refused.success, "an unknown CA must fail verification");
    assert!(refused.stderr.contains("certificate"), "{}", refused.stderr);

    // ALPN: HTTP/2 when offered, HTTP/1.1 when that is all the client speaks.
    let base = format!("https://{}/v2/", ferry.host());
    for (http1_only, want) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let client = https_client(&ca1, http1_only);
        let r = rt
            .block_on(async { client.get(&base).send().await })
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), want);
    }
    // Plain HTTP on the TLS port is not answered as HTTP.
    assert!(!matches!(raw_get(&ferry.host(), "/v2/"), Ok(r) if r.status == 200));

    // A renewed certificate from another CA: served from the next connections on.
    let ca2 = TestCa::new(pki.path(), "ca2");
    ca2.issue(&cert, &key);
    let trusts = |ca: &TestCa| {
        let client = https_client(ca, false);
        rt.block_on(async { client.get(&base).send().await })
            .is_ok_and(|r| r.status() == 200)
    };
    wait_until(Duration::from_secs(20), "the renewed certificate", || {
        trusts(&ca2)
    });
    assert!(!trusts(&ca1), "the old certificate is no longer served");
    assert!(
        ferry.log().contains("TLS certificate reloaded"),
        "{}",
        ferry.log()
    );

    // A broken renewal is refused; the current certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    wait_until(Duration::from_secs(20), "the refusal", || {
        ferry.log().contains("TLS certificate NOT reloaded")
    });
    assert!(trusts(&ca2), "still serving the last good certificate");
}

// ---------------------------------------------------------------------------------------------
// Shipped artefacts built on metric names: docs/operations.md and the Grafana dashboard
// ---------------------------------------------------------------------------------------------

/// A metric family as Prometheus shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    name: String,
    kind: String,
    labels: Vec<String>,
    help: String,
}

impl Family {
    /// The series names a query can use.
    fn series(&self) -> Vec<String> {
        match self.kind.as_str() {
            "counter" => vec![format!("{}_total", self.name)],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// Every metric family of `ferry_metrics::Metrics` with its type, labels and help, read from
/// the exposition after one sample per family, and checked against the names crates/metrics
/// registers (so a new family cannot be missed here, in the docs or on the dashboard).
fn metric_families() -> Vec<Family> {
    use ferry_metrics::*;
    let m = Metrics::new();
    let up = || "docker.io".to_owned();
    m.http_requests
        .get_or_create(&HttpLabels {
            route: "blob",
            method: "GET",
            status: 200,
            upstream: up(),
        })
        .inc();
    m.http_duration
        .get_or_create(&KindLabels {
            upstream: up(),
            kind: "blob",
        })
        .observe(0.01);
    m.served_bytes
        .get_or_create(&ServedLabels {
            upstream: up(),
            source: "cache",
        })
        .inc();
    m.cache("docker.io", "blob", true);
    m.cache("docker.io", "blob", false);
    Metrics::per_upstream(&m.revalidations, "docker.io", 1);
    Metrics::per_upstream(&m.stale_served, "docker.io", 1);
    Metrics::per_upstream(&m.deleted_upstream_served, "docker.io", 1);
    let account = AccountLabels {
        upstream: up(),
        account: "anonymous".into(),
    };
    m.ratelimit_limit.get_or_create(&account).set(100);
    m.ratelimit_remaining.get_or_create(&account).set(76);
    m.upstream_request("docker.io", "blob", 200, 0.01);
    m.source_request("docker.io", "192.0.2.10", 429);
    m.source_resting("docker.io", "192.0.2.10", 1);
    Metrics::per_upstream(&m.upstream_bytes, "docker.io", 1);
    Metrics::per_upstream(&m.segment_hedges, "docker.io", 1);
    Metrics::per_upstream(&m.coalesced_waiters, "docker.io", 1);
    m.inflight_fills.set(0);
    m.fill_failures
        .get_or_create(&ReasonLabels { reason: "digest" })
        .inc();
    m.storage_bytes.set(0);
    m.evictions.inc();
    m.evicted_bytes.inc();
    m.rejected
        .get_or_create(&ReasonLabels { reason: "quota" })
        .inc();
    m.connections_open.set(1);
    m.connections_refused
        .get_or_create(&ReasonLabels {
            reason: "max_connections_per_ip",
        })
        .inc();
    m.connections_timed_out
        .get_or_create(&ReasonLabels {
            reason: "header_timeout",
        })
        .inc();
    m.rule_hit("ip-daily-requests", "deny");
    m.set_sanctions(1, 0);
    m.set_budget("total", 81, 1);
    let text = m.render();

    let mut families: Vec<Family> = Vec::new();
    let mut help = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap();
            help.insert(name.to_owned(), h.trim_end_matches('.').to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                labels: Vec::new(),
                help: help.get(name).cloned().unwrap_or_default(),
            });
        }
    }
    let scrape = Scrape::parse(&text);
    for f in &mut families {
        let series = f.series();
        let sample = scrape
            .samples
            .iter()
            .find(|(n, _, _)| series.contains(n))
            .unwrap_or_else(|| panic!("no sample of {}", f.name));
        f.labels = sample.1.keys().filter(|k| *k != "le").cloned().collect();
        // Keep the declaration order of the label struct (the exposition's order).
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}{{", sample.0)))
            .unwrap_or("");
        f.labels
            .sort_by_key(|l| line.find(&format!("{l}=\"")).unwrap_or(usize::MAX));
    }

    let source =
        std::fs::read_to_string(Path::new(REPO_ROOT).join("crates/metrics/src/lib.rs")).unwrap();
    let registered: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("ferry_") && !s.contains(' '))
        .map(str::to_owned)
        .filter(|s| source.contains(&format!("\"{s}\",")))
        .collect();
    let rendered: BTreeSet<String> = families.iter().map(|f| f.name.clone()).collect();
    assert_eq!(
        rendered, registered,
        "crates/metrics registers a family this test does not sample: add one sample of it to \
         metric_families() in tests/e2e/ops.rs, then update docs/operations.md and the dashboard"
    );
    families
}

const TABLE_START: &str = "<!-- metrics-table:start (generated: FERRY_BLESS_DOCS=1 cargo test --test e2e ops::operations_doc) -->";
const TABLE_END: &str = "<!-- metrics-table:end -->";

fn metrics_table() -> String {
    let mut out =
        String::from("| metric (as queried) | type | labels | meaning |\n|---|---|---|---|\n");
    for f in metric_families() {
        let name = match f.kind.as_str() {
            "counter" => format!("`{}_total`", f.name),
            "histogram" => format!("`{}_bucket`, `_sum`, `_count`", f.name),
            _ => format!("`{}`", f.name),
        };
        let labels = if f.labels.is_empty() {
            "–".to_owned()
        } else {
            f.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {name} | {} | {labels} | {} |\n",
            f.kind, f.help
        ));
    }
    out
}

/// The metrics reference in docs/operations.md is exactly what crates/metrics exports (names,
/// types, labels, help). `FERRY_BLESS_DOCS=1` rewrites the table.
#[test]
fn operations_doc_metrics_table_matches_crates_metrics() {
    let path = Path::new(REPO_ROOT).join("docs/operations.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(TABLE_START).expect("table start marker") + TABLE_START.len();
    let end = doc.find(TABLE_END).expect("table end marker");
    let current = doc[start..end].trim();
    let table = metrics_table();
    if std::env::var_os("FERRY_BLESS_DOCS").is_some() {
        let new = format!("{}\n{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        current,
        table.trim(),
        "docs/operations.md's metrics table is out of date: run \
         FERRY_BLESS_DOCS=1 cargo test --test e2e ops::operations_doc"
    );
}

/// Every panel of a dashboard, including those inside rows.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels.as_array().expect("panels array") {
        out.push(p);
        if let Some(inner) = p.get("panels") {
            out.extend(all_panels(inner));
        }
    }
    out
}

/// The Grafana dashboard is well-formed JSON with the panels an operator needs, and queries
/// only series ferry exports, covering every one of its metric families.
#[test]
fn grafana_dashboard_is_built_on_ferrys_metrics() {
    let path = Path::new(REPO_ROOT).join("deploy/grafana/ferry-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["schemaVersion"].as_u64().is_some());
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"datasource"), "{variables:?}");

    let families = metric_families();
    let known: BTreeMap<String, String> = families
        .iter()
        .flat_map(|f| f.series().into_iter().map(move |s| (s, f.name.clone())))
        .collect();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in all_panels(&dash["panels"]) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "gridPos.{k} of panel {id}");
        }
        let title = p["title"].as_str().expect("panel title");
        titles.push(title.to_owned());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: {expr}"
            );
            let mut rest = expr;
            while let Some(i) = rest.find("ferry_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = known.get(&name).unwrap_or_else(|| {
                    panic!("{title}: {name} is not a series ferry exports ({expr})")
                });
                used.insert(family.clone());
                rest = &rest[i + name.len()..];
            }
        }
    }
    let all: BTreeSet<String> = families.iter().map(|f| f.name.clone()).collect();
    let unused: Vec<_> = all.difference(&used).collect();
    assert!(unused.is_empty(), "families on no panel: {unused:?}");
    for wanted in [
        "Request rate by route and status",
        "Cache hit ratio",
        "Bytes served: cache vs upstream",
        "Upstream request rate by upstream and status",
        "Upstream latency to response head (p50 / p99) by upstream",
        "Downloads in flight",
        "Coalesced waiters",
        "Cache size",
        "Evictions",
        "Rejected requests by reason",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted:?}");
    }
}
