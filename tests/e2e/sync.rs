//! `ferry sync`: a list of images (tag patterns, a multi-platform index, platform filters) is
//! pre-fetched into the cache a `ferry serve` uses; then the upstream goes down and everything
//! still pulls through ferry. Failures are named and set the exit code; an interrupted sync
//! resumes without fetching completed blobs again; `ferry serve` runs the list on a schedule.

use std::path::Path;
use std::time::Duration;

use crate::support::process::Daemon;
use crate::support::*;

/// What a one-shot `ferry` command did.
pub struct Run {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion.
    pub fn of(mut cmd: std::process::Command) -> Run {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `ferry sync --config <ferry's config> --progress plain LIST [extra]` to completion.
pub fn run_sync(ferry: &Ferry, list: &str, extra: &[&str]) -> Run {
    let path = ferry.dir().join("sync-list.txt");
    std::fs::write(&path, list).expect("write the sync list");
    let mut cmd = ferry_command();
    cmd.arg("sync")
        .arg("--config")
        .arg(ferry.config_path())
        .args(["--progress", "plain"])
        .args(extra)
        .arg(&path);
    Run::of(cmd)
}

fn via(ferry: &Ferry, image: &str) -> String {
    format!("docker://{}/{image}", ferry.host())
}

fn cached_blob(data_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[test]
fn synced_list_is_served_with_the_upstream_stopped() {
    let mut upstream = Registry::start();
    let multi = push_fixture(
        &upstream,
        Fixture::multi().seed("sync-multi"),
        "test/multi:v1",
    );
    let app10 = push_fixture(&upstream, Fixture::single().seed("app-1.0"), "test/app:1.0");
    let app11 = push_fixture(&upstream, Fixture::single().seed("app-1.1"), "test/app:1.1");
    push_fixture(&upstream, Fixture::single().seed("app-2.0"), "test/app:2.0");
    let mut ferry = Ferry::builder().upstream("docker.io", &upstream).start();
    ferry.stop();

    let list = "# warm these before anyone asks\n\ndocker.io/test/multi:v1\ntest/app:1.*   # a tag pattern\n";
    let out = run_sync(&ferry, list, &["--jobs", "3"]);
    assert!(
        out.success(),
        "sync failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    for row in [
        "docker.io/test/multi:v1",
        "docker.io/test/app:1.0",
        "docker.io/test/app:1.1",
    ] {
        assert!(
            out.stdout.contains(row),
            "{row} missing from the summary:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("app:2.0"),
        "2.0 does not match 1.*:\n{}",
        out.stdout
    );
    let blobs = multi.blobs.len() + app10.blobs.len() + app11.blobs.len();
    assert_eq!(upstream.blob_gets(), blobs, "each blob fetched once");

    // A rerun finds everything in the cache.
    let again = run_sync(&ferry, list, &[]);
    assert!(again.success(), "{}", again.stderr);
    assert_eq!(upstream.blob_gets(), blobs, "a rerun fetches no blob");

    upstream.stop();
    ferry.start_again();
    assert_pulls_back(&via(&ferry, "docker.io/test/multi:v1"), &multi);
    assert_pulls_back(&via(&ferry, "docker.io/test/app:1.0"), &app10);
    assert_pulls_back(&via(&ferry, "test/app:1.1"), &app11);
    let dir = tempfile::tempdir().unwrap();
    let missing = try_skopeo_copy(
        &via(&ferry, "docker.io/test/app:2.0"),
        &format!("dir:{}", dir.path().display()),
        &[],
    );
    assert!(
        !missing.success,
        "2.0 was never synced and the upstream is down"
    );
}

#[test]
fn platform_filter_fetches_only_that_platform() {
    let upstream = Registry::start();
    let multi = push_fixture(
        &upstream,
        Fixture::multi().seed("sync-plat"),
        "test/plat:v1",
    );
    let ferry = Ferry::builder().upstream("docker.io", &upstream).start();
    let out = run_sync(&ferry, "docker.io/test/plat:v1 linux/arm64\n", &[]);
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let arm = multi.manifest_for("arm64");
    let arm_manifest: serde_json::Value =
        serde_json::from_slice(&multi.manifest_bytes(&arm.digest)).unwrap();
    let mut arm_blobs = vec![
        arm_manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    for l in arm_manifest["layers"].as_array().unwrap() {
        arm_blobs.push(l["digest"].as_str().unwrap().to_owned());
    }
    for d in multi.blob_digests() {
        let cached = cached_blob(ferry.data_dir(), &d).exists();
        assert_eq!(cached, arm_blobs.contains(&d), "blob {d} cached: {cached}");
    }
    assert_eq!(upstream.blob_gets(), arm_blobs.len());
}

#[test]
fn failures_are_named_and_the_rest_still_syncs() {
    let upstream = Registry::start();
    let app = push_fixture(&upstream, Fixture::single().seed("sync-fail"), "test/ok:1");
    let ferry = Ferry::builder().upstream("docker.io", &upstream).start();
    let list = "quay.io/org/tool:1\ndocker.io/test/ok:1\ndocker.io/test/nope:1\ntest/ok:9.*\n";
    let out = run_sync(&ferry, list, &["--retries", "1"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("quay.io"), "{}", out.stderr);
    assert!(out.stderr.contains("not mirrored here"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: docker.io/test/nope:1: not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no tag of docker.io/test/ok matches"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("1 ok, 3 failed"), "{}", out.stdout);
    for d in app.blob_digests() {
        assert!(cached_blob(ferry.data_dir(), &d).exists());
    }

    let bad = run_sync(&ferry, "ok/line:1\nNot A Reference\n", &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("line 2"), "{}", bad.stderr);
}

#[test]
fn interrupted_sync_resumes_without_refetching_completed_blobs() {
    let upstream = FaultyUpstream::start();
    let small: Vec<Image> = ["a", "b"]
        .iter()
        .map(|s| build_fixture(&Fixture::single().seed(&format!("resume-{s}"))))
        .collect();
    upstream.add_fixture(&small[0], "test/small-a", "v1");
    upstream.add_fixture(&small[1], "test/small-b", "v1");
    let big_layer = upstream.add_pattern_blob(7, 8 << 20);
    upstream.add_image("test/big", "v1", std::slice::from_ref(&big_layer));
    let stall = upstream.add_rule(Rule::blob(&big_layer, Fault::StallAfter(1 << 20)));
    let ferry = Ferry::builder().upstream("docker.io", &upstream).start();
    let mut ferry = ferry;
    ferry.stop();

    let list = "test/small-a:v1\ntest/big:v1\ntest/small-b:v1\n";
    let list_path = ferry.dir().join("resume-list.txt");
    std::fs::write(&list_path, list).unwrap();
    let log = ferry.dir().join("sync-interrupted.log");
    let mut cmd = ferry_command();
    cmd.arg("sync")
        .arg("--config")
        .arg(ferry.config_path())
        .args(["--progress", "plain"])
        .arg(&list_path);
    let mut sync = Daemon::spawn("ferry sync", cmd, &log, &log);
    wait_until(
        Duration::from_secs(30),
        "small images synced, big one stalled",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.matches(": ok (").count() == 2 && upstream.rule_hits(stall) >= 1
        },
    );
    sync.signal("INT");
    let status = sync
        .wait_exit(Duration::from_secs(10))
        .expect("sync exits on Ctrl-C");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        !cached_blob(ferry.data_dir(), &big_layer).exists(),
        "no partial blob"
    );
    upstream.remove_rule(stall);
    upstream.release_stalls();

    let out = run_sync(&ferry, list, &[]);
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    for image in &small {
        for d in image.blob_digests() {
            assert_eq!(upstream.blob_gets(&d), 1, "blob {d} fetched again");
        }
    }
    assert_eq!(
        upstream.blob_gets(&big_layer),
        2,
        "the cut blob is fetched again"
    );
    let path = cached_blob(ferry.data_dir(), &big_layer);
    assert_eq!(sha256_file(&path), big_layer);
}

#[test]
fn serve_runs_the_sync_list_on_a_schedule() {
    let mut upstream = Registry::start();
    let image = push_fixture(
        &upstream,
        Fixture::multi().seed("sync-sched"),
        "test/sched:v1",
    );
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "docker.io/test/sched:v1\n").unwrap();
    let ferry = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("sync.list", list.to_str().unwrap())
        .set("sync.interval", "1h")
        .start();
    wait_until(
        Duration::from_secs(30),
        "scheduled sync fetched every blob",
        || {
            image
                .blob_digests()
                .iter()
                .all(|d| cached_blob(ferry.data_dir(), d).exists())
        },
    );
    wait_until(
        Duration::from_secs(10),
        "scheduled sync logged its end",
        || ferry.log().contains("scheduled sync finished"),
    );
    upstream.stop();
    assert_pulls_back(&via(&ferry, "docker.io/test/sched:v1"), &image);
}

#[test]
fn transient_failures_are_retried_and_a_digest_mismatch_is_named() {
    let upstream = FaultyUpstream::start();
    let good = upstream.add_pattern_blob(11, 300_000);
    upstream.add_image("test/flaky", "v1", std::slice::from_ref(&good));
    let bad = upstream.add_pattern_blob(12, 200_000);
    upstream.add_image("test/corrupt", "v1", std::slice::from_ref(&bad));
    upstream.add_rule(Rule::blob(&good, Fault::status(503)).method("GET").times(2));
    upstream.add_rule(Rule::manifest("test/flaky", "v1", Fault::too_many_requests(1)).times(1));
    upstream.add_rule(Rule::blob(&bad, Fault::WrongBytes));
    let ferry = Ferry::builder().upstream("docker.io", &upstream).start();

    let out = run_sync(&ferry, "test/flaky:v1\ntest/corrupt:v1\n", &[]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("retry 1 in"), "{}", out.stderr);
    assert!(
        out.stdout.contains("docker.io/test/flaky:v1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("error: docker.io/test/corrupt:v1: digest mismatch"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("1 ok, 1 failed"), "{}", out.stdout);
    assert_eq!(sha256_file(&cached_blob(ferry.data_dir(), &good)), good);
    assert!(
        !cached_blob(ferry.data_dir(), &bad).exists(),
        "a bad blob never enters the cache"
    );
}
