//! Health and logs.

use super::*;

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
