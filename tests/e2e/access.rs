//! Access control and fair use (SPEC section 7, `docs/access.md`) with the real `ferry serve`,
//! a real upstream registry and real clients: logins with `skopeo login`, `--creds` and
//! `podman login`; anonymous pulls allowed or refused; htpasswd users; request, byte,
//! concurrency and bandwidth quotas, their 429 answers and their recovery; client addresses
//! behind trusted and untrusted proxies; repository allow/deny lists and blocked networks
//! with the reason shown to the user; reloads on SIGHUP; the rejection metrics and the request
//! log; and two replicas sharing one quota through a real `redis-server`.
//!
//! Every client of these tests is 127.0.0.1. Tests that need several client addresses make
//! 127.0.0.1 a trusted proxy and send `X-Forwarded-For`, as a load balancer would. Quota
//! windows are seconds long, so recovery is waited for in seconds.
//!
//! Requests a test wants to look at closely (status, headers, the OCI error body) are sent
//! with the blocking HTTP client of the support code: what Docker or containerd would see.
//! containers/image (skopeo, podman) retries a 429 itself, sleeping `Retry-After` (at most
//! 60 s, five attempts), so skopeo is used where a 429 should only slow a pull down, never
//! where it has to fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::clients::{run, skopeo_command};
use crate::support::http::{RawResponse, percent_encode, raw_request};
use crate::support::registry::htpasswd_line;
use crate::support::*;

/// A user of several tests, and a password that is not a dictionary word.
const ALICE: (&str, &str) = ("alice", "wonderland-4711");

/// A ferry on `upstream` (as docker.io) with this `access:` section, logging JSON lines so
/// tests can read the request log.
fn ferry_with(upstream: &Registry, access: Value) -> FerryBuilder {
    Ferry::builder()
        .upstream("docker.io", upstream)
        .set("access", access)
        .set("log.format", "json")
}

/// A registry holding the `single` fixture as `library/hello:1`.
fn registry_with_hello() -> (Registry, Image) {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single(), "library/hello:1");
    (registry, image)
}

/// `Authorization: Basic ...` for a user and password.
fn basic((user, password): (&str, &str)) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {creds}")
}

/// One blocking request to ferry with extra headers.
fn get(ferry: &Ferry, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw_request(&ferry.host(), "GET", path, headers, &[])
        .unwrap_or_else(|e| panic!("GET {path} on ferry: {e}"))
}

/// The manifest of `library/hello:1` through ferry (registry-mirror mode).
const HELLO: &str = "/v2/library/hello/manifests/1";

/// `GET` of the hello manifest with an OCI `Accept` header.
fn get_hello(ferry: &Ferry, headers: &[(&str, &str)]) -> RawResponse {
    let mut all = vec![("Accept", registry::MANIFEST_ACCEPT)];
    all.extend_from_slice(headers);
    get(ferry, HELLO, &all)
}

/// The first OCI error of an answer: `(code, message)`.
fn oci_error(resp: &RawResponse) -> (String, String) {
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
        panic!(
            "status {} with a body that is not JSON ({e}): {}",
            resp.status,
            resp.text()
        )
    });
    let first = &body["errors"][0];
    (
        first["code"].as_str().unwrap_or_default().to_owned(),
        first["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Asserts a 429 `TOOMANYREQUESTS` whose message contains `needle`; returns `Retry-After`.
fn assert_too_many(resp: &RawResponse, needle: &str) -> u64 {
    let (code, message) = oci_error(resp);
    assert_eq!(
        (resp.status, code.as_str()),
        (429, "TOOMANYREQUESTS"),
        "{message}"
    );
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
    resp.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a 429 needs Retry-After in seconds: {:?}", resp.headers))
}

/// Asserts a 403 `DENIED` whose message contains every needle.
fn assert_denied(resp: &RawResponse, needles: &[&str]) {
    let (code, message) = oci_error(resp);
    assert_eq!((resp.status, code.as_str()), (403, "DENIED"), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// `ferry_rejected_requests_total{reason="<reason>"}` from `/metrics` (0 when absent).
fn rejected(ferry: &Ferry, reason: &str) -> u64 {
    let text = get(ferry, "/metrics", &[]).text();
    let prefix = format!("ferry_rejected_requests_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| {
            v.trim().parse::<f64>().expect("a counter value") as u64
        })
}

/// The request log lines (target `ferry::request`) ferry wrote so far, as JSON.
fn request_log(ferry: &Ferry) -> Vec<Value> {
    ferry
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "ferry::request")
        .collect()
}

/// How often ferry logged a message containing `text` (JSON `message` fields).
fn logged(ferry: &Ferry, text: &str) -> usize {
    ferry
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
        .count()
}

/// Sends SIGHUP and waits until ferry has logged the outcome (`configuration reloaded` or
/// `NOT reloaded`); returns whether it reloaded.
fn reload(ferry: &mut Ferry) -> bool {
    let (ok, refused) = (
        logged(ferry, "configuration reloaded"),
        logged(ferry, "NOT reloaded"),
    );
    ferry.sighup();
    let mut outcome = None;
    wait_until(Duration::from_secs(10), "ferry to log the reload", || {
        if logged(ferry, "configuration reloaded") > ok {
            outcome = Some(true);
        } else if logged(ferry, "NOT reloaded") > refused {
            outcome = Some(false);
        }
        outcome.is_some()
    });
    outcome.expect("an outcome")
}

/// skopeo with its own auth file, so what `skopeo login` stores stays in one test.
struct Skopeo {
    dir: tempfile::TempDir,
}

impl Skopeo {
    fn new() -> Skopeo {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-skopeo-")
            .tempdir()
            .expect("skopeo tempdir");
        std::fs::write(dir.path().join("auth.json"), "{\"auths\":{}}\n").expect("auth file");
        Skopeo { dir }
    }

    fn run(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = skopeo_command();
        cmd.env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .args(args);
        run(cmd)
    }

    /// `skopeo login` to ferry.
    fn login(&self, ferry: &Ferry, (user, password): (&str, &str)) -> CmdOutput {
        let host = ferry.host();
        self.run(&[
            "login",
            "--tls-verify=false",
            "--username",
            user,
            "--password",
            password,
            &host,
        ])
    }

    /// Pulls `repo_tag` from ferry into a fresh `dir:` copy (with `--src-creds` when given);
    /// on success, returns the digest of the manifest it got.
    fn pull(&self, ferry: &Ferry, repo_tag: &str, creds: Option<(&str, &str)>) -> PullOutcome {
        let out_dir = self
            .dir
            .path()
            .join(format!("pull-{:x}", crate::support::ports::random_u64()));
        let src = format!("docker://{}/{repo_tag}", ferry.host());
        let dst = format!("dir:{}", out_dir.display());
        let creds = creds.map(|(u, p)| format!("{u}:{p}"));
        let mut args = vec![
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ];
        if let Some(c) = &creds {
            args.extend(["--src-creds", c.as_str()]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        let started = Instant::now();
        let out = self.run(&args);
        let digest = out
            .success
            .then(|| sha256_file(&out_dir.join("manifest.json")));
        let _ = std::fs::remove_dir_all(&out_dir);
        PullOutcome {
            out,
            digest,
            took: started.elapsed(),
        }
    }
}

/// What a skopeo pull did.
struct PullOutcome {
    out: CmdOutput,
    digest: Option<String>,
    took: Duration,
}

impl PullOutcome {
    /// Asserts success and that the manifest is the image's; returns self for more checks.
    fn assert_pulled(&self, image: &Image) -> &Self {
        assert!(self.out.success, "skopeo pull failed:\n{}", self.out.stderr);
        assert_eq!(self.digest.as_deref(), Some(image.digest.as_str()));
        self
    }

    /// Asserts failure with every needle in skopeo's error output.
    fn assert_refused(&self, needles: &[&str]) {
        assert!(
            !self.out.success,
            "skopeo pull should have failed:\n{}",
            self.out.stdout
        );
        for needle in needles {
            assert!(
                self.out.stderr.contains(needle),
                "{needle:?} not in skopeo's error:\n{}",
                self.out.stderr
            );
        }
    }
}

/// A file in a private directory (kept alive by the returned handle).
fn temp_file(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("ferry-e2e-access-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write file");
    (dir, path)
}

/// A request to ferry's token service (as `docker login` sends it), with Basic credentials
/// or anonymous, and extra headers.
fn token_request(
    ferry: &Ferry,
    creds: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> RawResponse {
    let scope = percent_encode("repository:library/hello:pull");
    let path = format!("/token?service=ferry&scope={scope}");
    let auth = creds.map(basic);
    let mut all: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    all.extend_from_slice(headers);
    get(ferry, &path, &all)
}

/// A token from ferry's token service, with Basic credentials or anonymous.
fn token(ferry: &Ferry, creds: Option<(&str, &str)>) -> String {
    let resp = token_request(ferry, creds, &[]);
    assert_eq!(resp.status, 200, "token request: {}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).expect("token JSON");
    body["token"].as_str().expect("a token").to_owned()
}

/// A blob download held open on a raw socket: the request is in flight until dropped.
struct OpenDownload {
    _stream: TcpStream,
}

impl OpenDownload {
    /// Sends `GET path` and reads the response head; panics unless it is a 200.
    fn start(ferry: &Ferry, path: &str) -> OpenDownload {
        let mut stream = TcpStream::connect(ferry.host()).expect("connect to ferry");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            ferry.host()
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "download answered {status}");
        let mut first = [0u8; 1];
        // Up to the end of the head, then one byte of body: the body is streaming.
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        reader.read_exact(&mut first).unwrap();
        OpenDownload { _stream: stream }
    }
}

/// Downloads `path` whole; returns its length and how long it took.
fn timed_download(ferry: &Ferry, path: &str) -> (usize, Duration) {
    let started = Instant::now();
    let resp = get(ferry, path, &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    (resp.body.len(), started.elapsed())
}

// --- Logins ---------------------------------------------------------------------------------

/// A user whose password comes from the environment logs in with `skopeo login` and pulls;
/// `--src-creds` works without a login; wrong passwords fail at once and anonymous pulls
/// still work (anonymous: true). The request log names the user of each pull.
#[test]
fn skopeo_login_and_creds_pull_as_the_user_and_wrong_passwords_fail() {
    let (upstream, image) = registry_with_hello();
    let ferry = ferry_with(&upstream, json!({"anonymous": true}))
        .env("FERRY_ACCESS__USERS__ALICE__PASSWORD", ALICE.1)
        .start();

    // The ping is a challenge pointing at ferry's own token service.
    let ping = get(&ferry, "/v2/", &[]);
    assert_eq!(ping.status, 401, "{}", ping.text());
    assert_eq!(
        ping.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://{}/token\",service=\"ferry\"",
                ferry.host()
            )
            .as_str()
        )
    );
    assert_eq!(oci_error(&ping).0, "UNAUTHORIZED");

    let logged_in = Skopeo::new();
    let login = logged_in.login(&ferry, ALICE);
    assert!(login.success, "skopeo login failed:\n{}", login.stderr);
    logged_in
        .pull(&ferry, "library/hello:1", None)
        .assert_pulled(&image);

    let wrong = Skopeo::new();
    let login = wrong.login(&ferry, (ALICE.0, "not-her-password"));
    assert!(!login.success, "a wrong password must not log in");
    assert!(
        login.stderr.contains("invalid username/password"),
        "{}",
        login.stderr
    );

    Skopeo::new()
        .pull(&ferry, "library/hello:1", Some(ALICE))
        .assert_pulled(&image);
    Skopeo::new()
        .pull(&ferry, "library/hello:1", Some((ALICE.0, "guess")))
        .assert_refused(&["invalid username or password"]);
    Skopeo::new()
        .pull(&ferry, "library/hello:1", Some(("mallory", ALICE.1)))
        .assert_refused(&["invalid username or password"]);

    // anonymous: true: no login needed (skopeo fetches an anonymous token).
    Skopeo::new()
        .pull(&ferry, "library/hello:1", None)
        .assert_pulled(&image);

    let manifests: Vec<Value> = request_log(&ferry)
        .into_iter()
        .filter(|l| l["path"] == HELLO && l["status"] == 200)
        .collect();
    let users: Vec<&str> = manifests
        .iter()
        .map(|l| l["user"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        users.iter().filter(|u| **u == "alice").count(),
        2,
        "two pulls as alice: {users:?}"
    );
    assert!(users.contains(&"-"), "the anonymous pull: {users:?}");
    assert!(manifests.iter().all(|l| l["client"] == "127.0.0.1"));
    assert!(rejected(&ferry, "bad_credentials") >= 3);
    assert!(rejected(&ferry, "auth_challenge") >= 1);
}

/// `anonymous: false` with an htpasswd file of bcrypt users (written by Apache's
/// `htpasswd -B`): a request without credentials is a 401 that names the login, anonymous
/// tokens are refused, skopeo without a login fails, and a login works. A user added to the
/// file can log in after SIGHUP.
#[test]
fn anonymous_off_refuses_anonymous_pulls_and_htpasswd_users_log_in() {
    let (upstream, image) = registry_with_hello();
    let bob = ("bob", "builder-2024");
    let carol = ("carol", "c4r0l-secret");
    let (_dir, htpasswd) = temp_file("htpasswd", &htpasswd_line(bob.0, bob.1));
    let mut ferry = ferry_with(
        &upstream,
        json!({"anonymous": false, "htpasswd": htpasswd.to_str().unwrap()}),
    )
    .start();

    let resp = get_hello(&ferry, &[]);
    assert_eq!(resp.status, 401, "{}", resp.text());
    let (code, message) = oci_error(&resp);
    assert_eq!(code, "UNAUTHORIZED");
    assert!(message.contains("requires a login"), "{message}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("scope=\"repository:docker.io/library/hello:pull\""),
        "{challenge}"
    );
    let anonymous_token = get(&ferry, "/token?service=ferry", &[]);
    assert_eq!(anonymous_token.status, 401, "{}", anonymous_token.text());
    assert!(upstream.count("GET", "/manifests/") == 0, "nothing fetched");

    Skopeo::new()
        .pull(&ferry, "library/hello:1", None)
        .assert_refused(&["requires a login"]);
    assert!(rejected(&ferry, "login_required") >= 1);

    let skopeo = Skopeo::new();
    let login = skopeo.login(&ferry, bob);
    assert!(login.success, "{}", login.stderr);
    skopeo
        .pull(&ferry, "library/hello:1", None)
        .assert_pulled(&image);
    // Basic auth straight on the API works too (`curl -u`).
    assert_eq!(
        get_hello(&ferry, &[("Authorization", &basic(bob))]).status,
        200
    );

    assert!(!Skopeo::new().login(&ferry, carol).success);
    let both = format!(
        "{}{}",
        htpasswd_line(bob.0, bob.1),
        htpasswd_line(carol.0, carol.1)
    );
    std::fs::write(&htpasswd, both).unwrap();
    assert!(reload(&mut ferry), "the htpasswd file is re-read on SIGHUP");
    let skopeo = Skopeo::new();
    let login = skopeo.login(&ferry, carol);
    assert!(login.success, "carol after the reload: {}", login.stderr);
    skopeo
        .pull(&ferry, "library/hello:1", None)
        .assert_pulled(&image);
}

/// podman logs in to ferry and pulls; without the login the pull is refused.
#[test]
fn podman_login_and_pull() {
    let (upstream, image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({"anonymous": false, "users": {"alice": {"password": ALICE.1}}}),
    )
    .start();
    let Some(podman) = ferry.podman_or_skip() else {
        return;
    };
    let reference = format!("{}/library/hello:1", ferry.host());
    let refused = podman.run(&["pull", "--tls-verify=false", &reference]);
    assert!(!refused.success, "podman pulled without a login");
    assert!(
        refused.stderr.contains("requires a login"),
        "{}",
        refused.stderr
    );
    let login = podman.run(&[
        "login",
        "--tls-verify=false",
        "--username",
        ALICE.0,
        "--password",
        ALICE.1,
        &ferry.host(),
    ]);
    assert!(login.success, "podman login: {}", login.stderr);
    podman.pull(&reference, &["--tls-verify=false"]);
    assert_eq!(podman.image_digest(&reference), image.digest);
    assert!(
        request_log(&ferry)
            .iter()
            .any(|l| l["path"] == HELLO && l["user"] == "alice" && l["status"] == 200),
        "the pull is logged as alice"
    );
}

/// Password guessing is cut off per client address: after `failed_logins` wrong passwords,
/// every login from that address, right or wrong, on the token service or with Basic auth on
/// the API, is a 429 with `Retry-After`; other addresses log in as usual.
#[test]
fn password_guessing_is_cut_off_per_client_address() {
    let (upstream, _image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({
            "users": {"alice": {"password": ALICE.1}},
            "trusted_proxies": ["127.0.0.1"],
            "quotas": {"failed_logins": "3/1m"},
        }),
    )
    .start();
    let guesser = [("X-Forwarded-For", "198.51.100.66")];
    for guess in ["123456", "password", "alice"] {
        let resp = token_request(&ferry, Some((ALICE.0, guess)), &guesser);
        assert_eq!(resp.status, 401, "{}", resp.text());
        assert!(oci_error(&resp).1.contains("invalid username or password"));
    }
    let cut_off = token_request(&ferry, Some(ALICE), &guesser);
    let retry = assert_too_many(&cut_off, "too many failed logins from ip 198.51.100.66");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let auth = basic(ALICE);
    let headers = [("Authorization", auth.as_str()), guesser[0]];
    assert_too_many(&get_hello(&ferry, &headers), "too many failed logins");
    assert!(rejected(&ferry, "login_failures") >= 2);

    let elsewhere = token_request(&ferry, Some(ALICE), &[("X-Forwarded-For", "198.51.100.67")]);
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
}

// --- Quotas ---------------------------------------------------------------------------------

/// The request quota of an anonymous client runs out: 429 `TOOMANYREQUESTS` with
/// `Retry-After` and a message that says who and how much; the ping stays free. Waiting as
/// told gives one more request, and after a whole idle window the full burst is back.
#[test]
fn request_quota_runs_out_and_comes_back_after_the_window() {
    let (upstream, _image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({"quotas": {"anonymous": {"requests": "3/3s"}}}),
    )
    .start();

    for i in 0..3 {
        assert_eq!(get_hello(&ferry, &[]).status, 200, "request {i}");
    }
    let over = get_hello(&ferry, &[]);
    let retry = assert_too_many(&over, "ip 127.0.0.1 may make 3 requests per 3s");
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert!(oci_error(&over).1.contains("retry in"));
    assert_eq!(
        get(&ferry, "/v2/", &[]).status,
        200,
        "the ping is not counted"
    );
    assert_eq!(rejected(&ferry, "quota_requests"), 1);

    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(get_hello(&ferry, &[]).status, 200, "after Retry-After");
    assert_eq!(get_hello(&ferry, &[]).status, 429, "and only one");

    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(
            get_hello(&ferry, &[]).status,
            200,
            "new window, request {i}"
        );
    }
    let line = request_log(&ferry)
        .into_iter()
        .find(|l| l["status"] == 429)
        .expect("a refused request is logged");
    assert_eq!(line["client"], "127.0.0.1");
}

/// A pull that goes over the request quota is only slowed down: skopeo waits as
/// `Retry-After` says and completes.
#[test]
fn skopeo_over_its_request_quota_waits_and_completes() {
    let (upstream, image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({"quotas": {"anonymous": {"requests": "2/4s"}}}),
    )
    .start();
    // A pull is a manifest, a config and a layer: three requests for a burst of two.
    let pull = Skopeo::new().pull(&ferry, "library/hello:1", None);
    pull.assert_pulled(&image);
    assert!(rejected(&ferry, "quota_requests") >= 1, "it went over");
    assert!(pull.took >= Duration::from_secs(1), "took {:?}", pull.took);
}

/// Byte quotas: a logged-in user's download in progress is never cut, but afterwards the
/// user is refused with 429 until the excess is paid back; a user with a bigger quota
/// (`quotas.users`) still pulls, with skopeo, twice.
#[test]
fn byte_quota_runs_out_and_a_user_with_a_bigger_quota_still_pulls() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::big(2), "library/big:1");
    let layer = image.largest_blob().clone();
    let ferry = ferry_with(
        &upstream,
        json!({
            "users": {"alice": {"password": ALICE.1}, "bigcat": {"password": "meow-meow-1"}},
            "quotas": {
                "authenticated": {"bytes": "1MiB/1h"},
                "users": {"bigcat": {"bytes_per_hour": "64MiB"}},
            },
        }),
    )
    .start();
    let alice = basic(ALICE);
    let blob = format!("/v2/library/big/blobs/{}", layer.digest);

    let resp = get(&ferry, &blob, &[("Authorization", &alice)]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body.len() as u64, layer.size, "never cut mid-download");
    wait_until(Duration::from_secs(5), "alice to be over her quota", || {
        get(
            &ferry,
            "/v2/library/big/manifests/1",
            &[("Authorization", &alice)],
        )
        .status
            == 429
    });
    let over = get(
        &ferry,
        "/v2/library/big/manifests/1",
        &[("Authorization", &alice)],
    );
    let retry = assert_too_many(&over, "download quota used up: user alice may download");
    assert!(
        oci_error(&over).1.contains("quota of logged-in users"),
        "{}",
        oci_error(&over).1
    );
    // 2 MiB on 1 MiB/h: about an hour to pay back.
    assert!(retry > 1800, "Retry-After {retry}");
    assert!(rejected(&ferry, "quota_bytes") >= 1);
    let refusals: Vec<Value> = request_log(&ferry)
        .into_iter()
        .filter(|l| l["status"] == 429)
        .collect();
    assert!(
        !refusals.is_empty() && refusals.iter().all(|l| l["user"] == "alice"),
        "a refused request of a logged-in user is logged with the user: {refusals:?}"
    );

    let bigcat = ("bigcat", "meow-meow-1");
    for _ in 0..2 {
        Skopeo::new()
            .pull(&ferry, "library/big:1", Some(bigcat))
            .assert_pulled(&image);
    }
    assert_eq!(
        get(&ferry, &blob, &[("Authorization", &basic(bigcat))]).status,
        200
    );
    assert_eq!(
        get(&ferry, &blob, &[("Authorization", &alice)]).status,
        429,
        "alice is still over"
    );
}

/// `concurrent: 1`: while a download is in flight a second request of the same client is
/// refused (429, `Retry-After: 1`), other clients are not affected, and the slot is free again
/// once the client goes away. skopeo, whose layer downloads run in parallel, still completes.
#[test]
fn concurrency_limit_refuses_a_second_request_in_flight() {
    let upstream = Registry::start();
    let big = push_fixture(&upstream, Fixture::big(2), "library/big:1");
    let layered = push_fixture(
        &upstream,
        Fixture::single().seed("concurrency").layers(4),
        "library/layered:1",
    );
    let ferry = ferry_with(
        &upstream,
        json!({
            "trusted_proxies": ["127.0.0.1"],
            "quotas": {"anonymous": {"concurrent": 1, "bandwidth": "256KiB/s"}},
        }),
    )
    .start();
    let blob = format!("/v2/library/big/blobs/{}", big.largest_blob().digest);

    let download = OpenDownload::start(&ferry, &blob);
    let busy = get(&ferry, "/v2/library/big/manifests/1", &[]);
    let retry = assert_too_many(&busy, "ip 127.0.0.1 may have 1 at once");
    assert_eq!(retry, 1);
    let other = get(
        &ferry,
        "/v2/library/big/manifests/1",
        &[("X-Forwarded-For", "198.51.100.20")],
    );
    assert_eq!(other.status, 200, "another client has its own slots");
    assert_eq!(rejected(&ferry, "concurrency"), 1);

    drop(download);
    wait_until(Duration::from_secs(10), "the slot to be freed", || {
        get(&ferry, "/v2/library/big/manifests/1", &[]).status == 200
    });

    Skopeo::new()
        .pull(&ferry, "library/layered:1", None)
        .assert_pulled(&layered);
}

/// `bandwidth: 1MiB/s`: a 2 MiB blob takes about two seconds, and two parallel downloads of
/// the same client share the cap (about four seconds). Bounds are loose on purpose.
#[test]
fn bandwidth_cap_slows_blob_downloads_to_about_the_configured_rate() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::big(2), "library/big:1");
    let layer = image.largest_blob().clone();
    let ferry = ferry_with(
        &upstream,
        json!({"quotas": {"anonymous": {"bandwidth": "1MiB/s"}}}),
    )
    .start();
    let blob = format!("/v2/library/big/blobs/{}", layer.digest);

    let (len, took) = timed_download(&ferry, &blob);
    assert_eq!(len as u64, layer.size);
    let rate = len as f64 / took.as_secs_f64() / 1048576.0;
    eprintln!("one download: {took:?}, {rate:.2} MiB/s");
    assert!(took >= Duration::from_millis(1400), "too fast: {took:?}");
    assert!(took <= Duration::from_secs(20), "far too slow: {took:?}");

    let started = Instant::now();
    std::thread::scope(|s| {
        let a = s.spawn(|| timed_download(&ferry, &blob));
        let b = s.spawn(|| timed_download(&ferry, &blob));
        for h in [a, b] {
            assert_eq!(h.join().unwrap().0 as u64, layer.size);
        }
    });
    let both = started.elapsed();
    eprintln!("two parallel downloads: {both:?}");
    assert!(both >= Duration::from_millis(3000), "not shared: {both:?}");
    assert!(both <= Duration::from_secs(30), "far too slow: {both:?}");
}

/// Cache-miss quotas: a client over `miss_requests` cannot make ferry fetch another blob from
/// the upstream (429), but still pulls what is already cached, whoever cached it.
#[test]
fn a_client_over_its_cache_miss_quota_still_pulls_what_is_cached() {
    let (upstream, image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({
            "trusted_proxies": ["127.0.0.1"],
            "quotas": {"anonymous": {"miss_requests": "1/1h"}},
        }),
    )
    .start();
    let (a, b) = (
        [("X-Forwarded-For", "198.51.100.1")],
        [("X-Forwarded-For", "198.51.100.2")],
    );
    let blob = |i: usize| format!("/v2/library/hello/blobs/{}", image.blobs[i].digest);

    assert_eq!(get(&ferry, &blob(0), &a).status, 200, "a's one cache miss");
    let over = get(&ferry, &blob(1), &a);
    assert_too_many(&over, "upstream quota used up: ip 198.51.100.1");
    assert_eq!(
        upstream.count("GET", &image.blobs[1].digest),
        0,
        "the refused blob was not fetched"
    );
    assert_eq!(rejected(&ferry, "quota_miss_requests"), 1);

    assert_eq!(get(&ferry, &blob(1), &b).status, 200, "b fetches it");
    assert_eq!(
        get(&ferry, &blob(1), &a).status,
        200,
        "now a cache hit for a"
    );
    assert_eq!(get(&ferry, &blob(0), &a).status, 200, "and so is a's own");
    assert_eq!(upstream.blob_gets(), 2, "each blob fetched once");
}

/// Cache-miss quotas cover manifests too: a client over `miss_requests` cannot make ferry fetch
/// a manifest it does not have (manifest GETs are what Docker Hub's pull limit counts).
#[test]
fn a_client_over_its_cache_miss_quota_cannot_make_ferry_fetch_a_manifest() {
    let (upstream, image) = registry_with_hello();
    push_image(&upstream, &image, "library/other:1");
    let ferry = ferry_with(
        &upstream,
        json!({"quotas": {"anonymous": {"miss_requests": "1/1h"}}}),
    )
    .start();
    assert_eq!(get_hello(&ferry, &[]).status, 200, "the one cache miss");
    let accept = [("Accept", registry::MANIFEST_ACCEPT)];
    let other = get(&ferry, "/v2/library/other/manifests/1", &accept);
    assert_too_many(&other, "upstream quota used up: ip 127.0.0.1");
    assert_eq!(
        upstream.count("GET", "/v2/library/other/manifests/"),
        0,
        "the refused manifest was not fetched"
    );
    assert_eq!(get_hello(&ferry, &[]).status, 200, "cached: still served");
}

// --- Client addresses -----------------------------------------------------------------------

/// From a peer that is not a trusted proxy, `X-Forwarded-For` and `X-Real-IP` are ignored: a
/// client cannot get a fresh quota by inventing addresses, nor escape a block.
#[test]
fn forged_forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let (upstream, _image) = registry_with_hello();
    let mut ferry = ferry_with(
        &upstream,
        json!({
            "trusted_proxies": ["10.0.0.0/8"],
            "quotas": {"anonymous": {"requests": "2/1m"}},
        }),
    )
    .start();
    let forged = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
    assert_eq!(
        get_hello(&ferry, &[("X-Forwarded-For", forged[0])]).status,
        200
    );
    assert_eq!(get_hello(&ferry, &[("X-Real-IP", forged[1])]).status, 200);
    let over = get_hello(
        &ferry,
        &[("X-Forwarded-For", forged[2]), ("X-Real-IP", forged[2])],
    );
    assert_too_many(&over, "ip 127.0.0.1 may make 2 requests per 1m");
    let clients: Vec<Value> = request_log(&ferry)
        .iter()
        .filter(|l| l["path"] == HELLO)
        .map(|l| l["client"].clone())
        .collect();
    assert_eq!(clients, vec![json!("127.0.0.1"); 3]);

    ferry.update_config(|b| {
        b.set(
            "access.block_ips",
            json!([{"cidr": "127.0.0.1", "reason": "testing blocks"}]),
        )
    });
    assert!(reload(&mut ferry));
    let blocked = get_hello(&ferry, &[("X-Forwarded-For", forged[0])]);
    assert_denied(&blocked, &["127.0.0.1", "testing blocks"]);
}

/// Behind a trusted proxy (127.0.0.1 here), the forwarded address is the client: quotas
/// count per forwarded address (read from the right, past trusted hops; `X-Real-IP` when
/// there is no `X-Forwarded-For`), blocks apply to it, and the log names it.
#[test]
fn trusted_proxy_forwarded_address_is_the_client() {
    let (upstream, _image) = registry_with_hello();
    let ferry = ferry_with(
        &upstream,
        json!({
            "trusted_proxies": ["127.0.0.1"],
            "quotas": {"anonymous": {"requests": "2/1m"}},
            "block_ips": [{"cidr": "203.0.113.0/24", "reason": "abuse, contact ops@example.com"}],
        }),
    )
    .start();
    let xff = |ip: &'static str| [("X-Forwarded-For", ip)];

    assert_eq!(get_hello(&ferry, &xff("198.51.100.7")).status, 200);
    assert_eq!(get_hello(&ferry, &xff("198.51.100.7")).status, 200);
    assert_too_many(
        &get_hello(&ferry, &xff("198.51.100.7")),
        "ip 198.51.100.7 may make 2 requests",
    );
    // The same client through two proxies (the nearest one trusted).
    assert_too_many(
        &get_hello(&ferry, &xff("6.6.6.6, 198.51.100.7, 127.0.0.1")),
        "ip 198.51.100.7",
    );
    assert_eq!(get_hello(&ferry, &xff("198.51.100.8")).status, 200);
    assert_eq!(
        get_hello(&ferry, &[("X-Real-IP", "198.51.100.9")]).status,
        200
    );
    // Without forwarded headers, the proxy itself is the client.
    assert_eq!(get_hello(&ferry, &[]).status, 200);

    let blocked = get_hello(&ferry, &xff("203.0.113.5"));
    assert_denied(
        &blocked,
        &[
            "203.0.113.5",
            "203.0.113.0/24",
            "abuse, contact ops@example.com",
        ],
    );
    let token = get(&ferry, "/token?service=ferry", &xff("203.0.113.5"));
    assert_eq!(token.status, 401, "blocked clients get no tokens");
    assert!(
        oci_error(&token)
            .1
            .contains("abuse, contact ops@example.com")
    );
    let clients: Vec<String> = request_log(&ferry)
        .iter()
        .filter(|l| l["path"] == HELLO && l["status"] == 200)
        .map(|l| l["client"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        clients,
        [
            "198.51.100.7",
            "198.51.100.7",
            "198.51.100.8",
            "198.51.100.9",
            "127.0.0.1"
        ]
    );
}

// --- What may be pulled -------------------------------------------------------------------

/// A blocked network, without and then with logins: skopeo shows the block's reason (with the
/// first request for content, or with the token request when users exist), no token is
/// given, nothing is fetched upstream; removing the block with a reload lets the pull through.
#[test]
fn blocked_client_sees_the_reason_and_is_let_in_after_a_reload() {
    let (upstream, image) = registry_with_hello();
    let block = json!([{"cidr": "127.0.0.0/8", "reason": "abuse, contact ops@example.com"}]);
    let mut ferry = ferry_with(&upstream, json!({"block_ips": block})).start();
    let why = [
        "your address 127.0.0.1 is blocked by this mirror (127.0.0.0/8)",
        "abuse, contact ops@example.com",
    ];

    Skopeo::new()
        .pull(&ferry, "library/hello:1", None)
        .assert_refused(&why);
    assert_denied(&get_hello(&ferry, &[]), &why);
    let token = get(&ferry, "/token?service=ferry", &[]);
    assert_eq!(token.status, 401, "no token: {}", token.text());
    assert!(oci_error(&token).1.contains(why[1]), "{}", token.text());
    assert!(rejected(&ferry, "blocked_ip") >= 3);

    ferry.update_config(|b| b.set("access.users", json!({"alice": {"password": ALICE.1}})));
    assert!(reload(&mut ferry));
    let login = Skopeo::new().login(&ferry, ALICE);
    // (skopeo login prints only "invalid username/password" for any refused login.)
    assert!(!login.success, "a blocked client cannot log in");
    Skopeo::new()
        .pull(&ferry, "library/hello:1", None)
        .assert_refused(&why);
    Skopeo::new()
        .pull(&ferry, "library/hello:1", Some(ALICE))
        .assert_refused(&why);
    assert_eq!(upstream.count("GET", "/manifests/"), 0, "nothing fetched");

    ferry.update_config(|b| b.unset("access.block_ips"));
    assert!(reload(&mut ferry));
    Skopeo::new()
        .pull(&ferry, "library/hello:1", Some(ALICE))
        .assert_pulled(&image);
}

/// An allowlist and a denylist with a reason: skopeo users read why a repository is not
/// served and where to ask; deny wins over allow; refused repositories are never fetched
/// upstream; each refusal is counted by reason.
#[test]
fn allow_and_deny_patterns_refuse_with_the_reason_shown_by_skopeo() {
    let (upstream, image) = registry_with_hello();
    push_image(&upstream, &image, "library/secret-tool:1");
    push_image(&upstream, &image, "someone/app:1");
    let ferry = ferry_with(
        &upstream,
        json!({
            "allow": ["docker.io/library/*"],
            "deny": [{"pattern": "docker.io/library/secret-*", "reason": "internal images stay internal"}],
            "denied_message": "Ask for an image at https://example.com/mirror/issues.",
        }),
    )
    .start();
    let before = upstream.requests().len();

    Skopeo::new()
        .pull(&ferry, "library/hello:1", None)
        .assert_pulled(&image);
    Skopeo::new()
        .pull(&ferry, "library/secret-tool:1", None)
        .assert_refused(&[
            "docker.io/library/secret-tool is not served by this mirror",
            "denied by docker.io/library/secret-*",
            "internal images stay internal",
            "Ask for an image at https://example.com/mirror/issues.",
        ]);
    Skopeo::new()
        .pull(&ferry, "someone/app:1", None)
        .assert_refused(&[
            "docker.io/someone/app is not in this mirror's allowlist",
            "Ask for an image at https://example.com/mirror/issues.",
        ]);
    // Every endpoint of a refused repository is refused, not only manifests.
    let blob = format!("/v2/someone/app/blobs/{}", image.blobs[0].digest);
    assert_denied(&get(&ferry, &blob, &[]), &["allowlist"]);
    assert_denied(
        &get(&ferry, "/v2/docker.io/library/secret-tool/tags/list", &[]),
        &["internal images stay internal"],
    );

    assert!(rejected(&ferry, "denied_repo") >= 2);
    assert!(rejected(&ferry, "not_allowed_repo") >= 2);
    let fetched: Vec<String> = upstream.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        fetched
            .iter()
            .all(|p| !p.contains("secret-tool") && !p.contains("someone/app")),
        "refused repositories reached the upstream: {fetched:?}"
    );
}

// --- Reloading ------------------------------------------------------------------------------

/// SIGHUP applies a new quota and a new denylist without a restart; counters survive a reload
/// that does not change their limit; a config that does not validate (an unknown key, or an
/// htpasswd file in a refused format) is refused and the previous one stays in force.
#[test]
fn sighup_reloads_quotas_and_lists_and_refuses_a_bad_config() {
    let (upstream, _image) = registry_with_hello();
    let (_dir, htpasswd) = temp_file("htpasswd", &htpasswd_line(ALICE.0, ALICE.1));
    let mut ferry = ferry_with(
        &upstream,
        json!({
            "anonymous": true,
            "htpasswd": htpasswd.to_str().unwrap(),
            "quotas": {"authenticated": {"requests": "2/1m"}},
        }),
    )
    .start();
    let alice = basic(ALICE);
    let pull = |ferry: &Ferry| get_hello(ferry, &[("Authorization", &alice)]).status;
    assert_eq!([pull(&ferry), pull(&ferry), pull(&ferry)], [200, 200, 429]);

    ferry.update_config(|b| b.set("access.denied_message", "Ask ops."));
    assert!(reload(&mut ferry));
    assert_eq!(pull(&ferry), 429, "an unchanged limit keeps its counters");

    ferry.update_config(|b| b.set("access.quotas.authenticated.requests", "100/1m"));
    assert!(reload(&mut ferry));
    assert_eq!(pull(&ferry), 200, "the new quota is in force");

    ferry.update_config(|b| {
        b.set("access.quotas.authenticated.requests", "1/1m")
            .set("access.no_such_key", true)
    });
    assert!(!reload(&mut ferry), "an unknown key is refused");
    assert!(
        ferry.stderr().contains("no_such_key"),
        "the log names the bad key"
    );
    assert_eq!([pull(&ferry), pull(&ferry), pull(&ferry)], [200, 200, 200]);

    ferry.update_config(|b| b.unset("access.no_such_key"));
    std::fs::write(&htpasswd, "alice:$apr1$abcdefgh$0123456789abcdefghijkl\n").unwrap();
    assert!(!reload(&mut ferry), "an MD5 htpasswd line is refused");
    assert!(ferry.stderr().contains("only bcrypt"), "the log says why");
    assert_eq!(
        [pull(&ferry), pull(&ferry)],
        [200, 200],
        "old users and quota"
    );

    std::fs::write(&htpasswd, htpasswd_line(ALICE.0, ALICE.1)).unwrap();
    ferry.update_config(|b| {
        b.set("access.quotas.authenticated.requests", "100/1m")
            .set("access.deny", json!(["docker.io/library/hello"]))
    });
    assert!(reload(&mut ferry));
    assert_denied(
        &get_hello(&ferry, &[("Authorization", &alice)]),
        &["denied by docker.io/library/hello", "Ask ops."],
    );
    assert!(ferry.is_running());
    assert_eq!(logged(&ferry, "ferry is serving"), 1, "never restarted");
}

// --- Several replicas -----------------------------------------------------------------------

/// Two replicas with one `redis:` share the request and byte quotas of a client, accept each
/// other's tokens (same `token.key`), and keep serving when Redis goes away (fail open).
#[test]
fn two_replicas_share_one_quota_through_redis() {
    let mut redis = RedisServer::start();
    let upstream = Registry::start();
    let hello = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let big = push_fixture(&upstream, Fixture::big(2), "library/big:1");
    let key = "a-token-key-shared-by-both-replicas-0123456789";
    let replica = || {
        ferry_with(
            &upstream,
            json!({
                "users": {"alice": {"password": ALICE.1}},
                "quotas": {
                    "anonymous": {"requests": "4/1m"},
                    "authenticated": {"bytes": "1MiB/1h"},
                },
            }),
        )
        .set("redis.url", redis.url())
        .env("FERRY_ACCESS__TOKEN__KEY", key)
        .start()
    };
    let (a, b) = (replica(), replica());

    // Anonymous clients use anonymous tokens (users exist, so bare requests are challenged);
    // a token from one replica works on the other.
    let anon = format!("Bearer {}", token(&a, None));
    let auth = [("Authorization", anon.as_str())];
    assert_eq!(get_hello(&a, &auth).status, 200);
    assert_eq!(get_hello(&a, &auth).status, 200);
    assert_eq!(get_hello(&b, &auth).status, 200);
    assert_eq!(get_hello(&b, &auth).status, 200);
    assert_too_many(
        &get_hello(&a, &auth),
        "ip 127.0.0.1 may make 4 requests per 1m",
    );
    assert_too_many(
        &get_hello(&b, &auth),
        "ip 127.0.0.1 may make 4 requests per 1m",
    );
    assert_eq!(
        redis.keys("ferry:access:req:*"),
        ["ferry:access:req:4/60000:{ip 127.0.0.1}"]
    );

    // alice downloads 2 MiB on replica a; replica b then refuses her on the byte quota.
    let alice = format!("Bearer {}", token(&a, Some(ALICE)));
    let blob = format!("/v2/library/big/blobs/{}", big.largest_blob().digest);
    let resp = get(&a, &blob, &[("Authorization", &alice)]);
    assert_eq!(resp.body.len() as u64, big.largest_blob().size);
    wait_until(Duration::from_secs(10), "b to see alice's bytes", || {
        get(&b, HELLO, &[("Authorization", &alice)]).status == 429
    });
    assert_too_many(
        &get_hello(&b, &[("Authorization", &alice)]),
        "download quota used up: user alice",
    );
    assert_eq!(redis.keys("ferry:access:bytes:*").len(), 1);

    // Redis goes away: pulls go on, counted per replica, with a warning.
    redis.stop();
    let started = Instant::now();
    let resp = get_hello(&a, &auth);
    assert_eq!(resp.status, 200, "fail open: {}", resp.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_until(Duration::from_secs(5), "the fail-open warning", || {
        logged(&a, "redis unavailable") >= 1
    });
    assert_eq!(hello.digest, sha256_digest(&resp.body));
}
