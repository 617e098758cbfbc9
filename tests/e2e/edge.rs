//! ferry at the edge of the open internet (SPEC section 11, docs/security.md): connections that
//! send nothing, drip a request head, sit idle or pile up from one address are closed or
//! refused, while normal clients pull; the HTTP answers at the edge (401 challenges, Host
//! headers, token realms behind a proxy) and error bodies that reveal nothing internal.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::metrics::Scrape;
use crate::support::*;

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("ferry's /proc fd directory")
        .count()
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to ferry");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Connects to `addr` from the loopback address `from` (127.0.0.2, ...).
fn connect_from(from: &str, addr: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let target: SocketAddr = addr.parse().unwrap();
        socket.connect(target).await.unwrap()
    });
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std
}

/// Whether the peer has closed the stream: a read gives end-of-file or a reset.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "connection closed before a response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// 2,000 connections that never send a byte and 200 that drip a request head are all closed
/// within `server.header_timeout`, while a real client pulls an image through the same port;
/// ferry's open file descriptors return to where they were.
#[test]
fn idle_and_slowloris_connections_are_closed_while_a_pull_goes_on() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::multi(), "library/hello:1");
    let ferry = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("server.header_timeout", "2s")
        .set("server.idle_timeout", "2s")
        .set("server.max_connections_per_ip", 5000)
        .start();
    let pid = ferry.pid().expect("ferry pid");
    let baseline = fd_count(pid);
    let addr = ferry.host();

    let mut idle: Vec<TcpStream> = (0..2000).map(|_| connect(&addr)).collect();
    let mut slow: Vec<TcpStream> = (0..200).map(|_| connect(&addr)).collect();
    for s in &mut slow {
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n")
            .unwrap();
    }
    let opened = Instant::now();
    let peak = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            fd_count(pid)
        })
        .max()
        .unwrap();
    eprintln!(
        "baseline {baseline} peak {peak} after {:?}",
        opened.elapsed()
    );
    assert!(
        peak >= baseline + 2000,
        "ferry held {peak} descriptors at most"
    );
    // The slowloris clients keep dripping one header line a second.
    let dripper = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut open = slow.len();
        while open > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            open = 0;
            for s in &mut slow {
                if s.write_all(b"X-Drip: 1\r\n").is_ok() {
                    open += 1;
                }
            }
        }
        slow
    });

    let reference = format!("docker://{addr}/docker.io/library/hello:1");
    assert_pulls_back(&reference, &image);

    // Every idle connection is closed by ferry (end of file), not by us.
    for s in idle.iter_mut().step_by(97) {
        assert!(closed_by_peer(s), "an idle connection stayed open");
    }
    wait_until(
        Duration::from_secs(8),
        "ferry's file descriptors to return to their baseline",
        || fd_count(pid) <= baseline + 10,
    );
    let took = opened.elapsed();
    let mut slow = dripper.join().unwrap();
    for s in slow.iter_mut().step_by(13) {
        assert!(closed_by_peer(s), "a slowloris connection stayed open");
    }
    assert!(took < Duration::from_secs(10), "closing took {took:?}");
    let m = Scrape::of(&addr);
    let timed_out = m.sum(
        "ferry_connections_timed_out_total",
        &[("reason", "header_timeout")],
    );
    assert!(timed_out >= 2200.0, "header timeouts counted: {timed_out}");
}

/// Connections beyond `server.max_connections_per_ip` from one address get a 429 with an OCI
/// error; beyond `server.max_connections` in total a 503; both are counted, and both caps give
/// their places back when connections close.
#[test]
fn connections_over_the_caps_are_refused_and_counted() {
    let upstream = Registry::start();
    let ferry = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("server.max_connections_per_ip", 20)
        .set("server.max_connections", 30)
        .start();
    let addr = ferry.host();
    let pid = ferry.pid().expect("ferry pid");
    // The start-up readiness probe's connection may still be closing: take the settled count.
    let baseline = (0..6)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            fd_count(pid)
        })
        .min()
        .unwrap();
    let accepted = |n: usize| {
        wait_until(Duration::from_secs(10), "ferry to accept them", || {
            fd_count(pid) >= baseline + n
        })
    };
    let mut held: Vec<TcpStream> = (0..20).map(|_| connect(&addr)).collect();
    // Ferry has accepted them all before the next one.
    accepted(20);

    let mut over = connect(&addr);
    let mut answer = String::new();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("TOOMANYREQUESTS"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    held.extend((0..10).map(|_| connect_from("127.0.0.2", &addr)));
    accepted(30);
    let mut full = connect_from("127.0.0.3", &addr);
    let mut answer = String::new();
    let _ = full.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("connection limit"), "{answer}");

    drop(held.drain(..15));
    wait_until(Duration::from_secs(10), "ferry to close them", || {
        fd_count(pid) <= baseline + 15
    });
    let m = Scrape::of(&addr);
    let refused = |reason| m.sum("ferry_connections_refused_total", &[("reason", reason)]);
    assert_eq!(refused("max_connections_per_ip"), 1.0);
    assert_eq!(refused("max_connections"), 1.0);
    let r = http::raw_get(&addr, "/v2/").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A kept-alive connection is not held to the head timeout between requests, but is closed
/// `server.idle_timeout` after its last response.
#[test]
fn keep_alive_connections_close_after_the_idle_timeout() {
    let upstream = Registry::start();
    let ferry = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("server.header_timeout", "1s")
        .set("server.idle_timeout", "3s")
        .start();
    let mut s = connect(&ferry.host());
    let request = b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n";
    s.write_all(request).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    // Longer than the head timeout: still open, and the next request is answered.
    std::thread::sleep(Duration::from_millis(2000));
    s.write_all(request).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    let last = Instant::now();
    assert!(closed_by_peer(&mut s));
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(2800) && idle < Duration::from_secs(6),
        "closed after {idle:?}, idle_timeout is 3s"
    );
    let m = Scrape::of(&ferry.host());
    assert!(
        m.sum(
            "ferry_connections_timed_out_total",
            &[("reason", "idle_timeout")]
        ) >= 1.0
    );
}

/// A request for a layer through a healthy upstream is served at once while a download of the
/// same digest hangs in another upstream: downloads are shared only within one upstream. Both
/// requests end with the right bytes, and the blob is cached once.
#[test]
fn a_hanging_upstream_does_not_stall_the_same_digest_through_another() {
    const SIZE: u64 = 3 << 20;
    let slow = FaultyUpstream::start();
    let fast = FaultyUpstream::start();
    let digest = slow.add_pattern_blob(7, SIZE);
    assert_eq!(fast.add_pattern_blob(7, SIZE), digest);
    slow.add_rule(Rule::blob(&digest, Fault::StallAfter(64 * 1024)));
    let ferry = Ferry::builder()
        .upstream("slow.example", &slow)
        .upstream("fast.example", &fast)
        .default_upstream("fast.example")
        .start();
    let addr = ferry.host();
    let path = |up: &str| format!("/v2/{up}/lib/app/blobs/{digest}");
    let stuck = {
        let (addr, p) = (addr.clone(), path("slow.example"));
        std::thread::spawn(move || http::raw_get(&addr, &p))
    };
    wait_until(
        Duration::from_secs(10),
        "the slow upstream to stall",
        || slow.count_matching("GET", "/blobs/") >= 1,
    );

    let started = Instant::now();
    let r = http::raw_get(&addr, &path("fast.example")).unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len() as u64, SIZE);
    assert_eq!(sha256_digest(&r.body), digest);
    assert!(
        took < Duration::from_secs(5),
        "the healthy upstream's answer took {took:?}"
    );
    assert!(!stuck.is_finished(), "the stalled download is still going");

    slow.release_stalls();
    let r = stuck.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), digest);
    // Cached once: both upstreams' names now answer from the store without a new GET.
    let gets = fast.count_matching("GET", "/blobs/") + slow.count_matching("GET", "/blobs/");
    let again = http::raw_get(&addr, &path("fast.example")).unwrap();
    assert_eq!(sha256_digest(&again.body), digest);
    assert_eq!(
        fast.count_matching("GET", "/blobs/") + slow.count_matching("GET", "/blobs/"),
        gets
    );
}

/// Starts `n` blob downloads at once, `paths[i]` on `addrs[i % addrs.len()]`; returns each
/// answer's status and body length.
fn parallel_gets(addrs: &[String], paths: &[String]) -> Vec<(u16, u64)> {
    let threads: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (addr, p) = (addrs[i % addrs.len()].clone(), p.clone());
            std::thread::spawn(move || {
                let r = http::raw_get(&addr, &p).expect("blob GET");
                (r.status, r.body.len() as u64)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

const MIB: u64 = 1 << 20;

/// Four 20 MiB blobs registered on a fake upstream; their `/v2/...` paths.
fn four_blobs(up: &FaultyUpstream) -> Vec<String> {
    (0..4)
        .map(|seed| {
            let d = up.add_pattern_blob(100 + seed, 20 * MIB);
            format!("/v2/library/big/blobs/{d}")
        })
        .collect()
}

fn assert_within_quota_plus_one(answers: &[(u16, u64)]) {
    let sent: u64 = answers.iter().filter(|a| a.0 == 200).map(|a| a.1).sum();
    assert!(
        sent <= 30 * MIB + 20 * MIB,
        "{} MiB sent on a 30 MiB quota: {answers:?}",
        sent / MIB
    );
    assert!(answers.iter().any(|a| a.0 == 200), "{answers:?}");
    assert!(answers.iter().any(|a| a.0 == 429), "{answers:?}");
}

/// Four 20 MiB downloads started at once from one address on a 30 MiB byte quota: each is
/// reserved in full before its first byte, so at most the quota plus one blob goes out.
#[test]
fn byte_quotas_hold_under_parallel_downloads() {
    let up = FaultyUpstream::start();
    let paths = four_blobs(&up);
    let ferry = Ferry::builder()
        .upstream("docker.io", &up)
        .set("access.quotas.anonymous.bytes", "30MiB/1h")
        .start();
    let answers = parallel_gets(&[ferry.host()], &paths);
    assert_within_quota_plus_one(&answers);
    let r = http::raw_get(&ferry.host(), &paths[0]).unwrap();
    assert_eq!(r.status, 429);
    assert!(r.text().contains("download quota used up"), "{}", r.text());
}

/// The same over two replicas that share the quota through a real redis-server: the
/// reservation is one atomic Redis script, so the replicas cannot both spend what is left.
#[test]
fn byte_quotas_hold_under_parallel_downloads_over_two_replicas() {
    let redis = RedisServer::start();
    let up = FaultyUpstream::start();
    let paths = four_blobs(&up);
    let replica = || {
        Ferry::builder()
            .upstream("docker.io", &up)
            .set("access.quotas.anonymous.bytes", "30MiB/1h")
            .set("redis.url", redis.url())
            .start()
    };
    let (a, b) = (replica(), replica());
    let answers = parallel_gets(&[a.host(), b.host()], &paths);
    assert_within_quota_plus_one(&answers);
    assert_eq!(redis.keys("ferry:access:bytes:*").len(), 1);
}

/// One raw HTTP/1.x request with exactly the head given (no header added).
fn raw_head(addr: &str, head: &str) -> String {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn challenge_of(r: &http::RawResponse) -> String {
    r.header("www-authenticate")
        .unwrap_or_else(|| panic!("a {} without WWW-Authenticate: {}", r.status, r.text()))
        .to_owned()
}

/// RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host header; HTTP/1.0 may have
/// none.
#[test]
fn http11_requests_need_exactly_one_host_header() {
    let upstream = Registry::start();
    let ferry = Ferry::for_registry(&upstream);
    let addr = ferry.host();
    let two = raw_head(
        &addr,
        "GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert!(two.starts_with("HTTP/1.1 400 "), "{two}");
    assert!(two.contains("exactly one Host header"), "{two}");
    let none = raw_head(&addr, "GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(none.starts_with("HTTP/1.1 400 "), "{none}");
    let old = raw_head(&addr, "GET /v2/ HTTP/1.0\r\n\r\n");
    assert!(
        old.starts_with("HTTP/1.0 200 ") || old.starts_with("HTTP/1.1 200 "),
        "{old}"
    );
}

/// Every 401 names a way to authenticate: when the upstream refuses ferry's own credentials
/// (and the message says so), and on a refused token request.
#[test]
fn every_401_carries_a_challenge() {
    let upstream = Registry::builder()
        .basic_auth(&[("ci", "right-password")])
        .start();
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &upstream,
            serde_json::json!({"username": "ci", "password": "wrong-password"}),
        )
        .set("access.users.alice.password", "alice-secret-1")
        .start();
    let addr = ferry.host();
    let r = http::raw_get(&addr, "/v2/library/hello/manifests/1").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(challenge_of(&r).starts_with("Bearer realm="), "{r:?}");

    let token = http::raw_get(&addr, "/token?service=ferry").unwrap();
    let bearer = token.text();
    let token: serde_json::Value = serde_json::from_str(&bearer).expect(&bearer);
    let auth = format!("Bearer {}", token["token"].as_str().unwrap());
    let r = http::raw_request(
        &addr,
        "GET",
        "/v2/library/hello/manifests/1",
        &[("Authorization", &auth)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text()
            .contains("rejected the credentials configured in upstreams.docker.io"),
        "{}",
        r.text()
    );
    assert!(challenge_of(&r).starts_with("Bearer realm="));

    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:wrong")
    );
    let r = http::raw_request(
        &addr,
        "GET",
        "/token?service=ferry",
        &[("Authorization", &basic)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(challenge_of(&r), "Basic realm=\"ferry\"");
}

/// The token realm in challenges: from `X-Forwarded-Proto`/`-Host` of a trusted proxy (an
/// HTTPS load balancer), never from an untrusted peer's headers, never changed by a Host
/// header once `server.external_url` is set, and never echoing a malformed host.
#[test]
fn the_token_realm_follows_trusted_proxies_only() {
    let upstream = Registry::start();
    let users = serde_json::json!({"alice": {"password": "alice-secret-1"}});
    let lb = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("access.users", users.clone())
        .set(
            "access.trusted_proxies",
            serde_json::json!(["127.0.0.1/32"]),
        )
        .start();
    let forwarded = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "mirror.example.com"),
    ];
    let realm = |ferry: &Ferry, headers: &[(&str, &str)]| {
        let r = http::raw_request(&ferry.host(), "GET", "/v2/", headers, &[]).unwrap();
        assert_eq!(r.status, 401);
        challenge_of(&r)
    };
    assert!(
        realm(&lb, &forwarded).starts_with("Bearer realm=\"https://mirror.example.com/token\""),
        "{}",
        realm(&lb, &forwarded)
    );

    let direct = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("access.users", users.clone())
        .start();
    let r = realm(&direct, &forwarded);
    assert!(
        r.starts_with(&format!("Bearer realm=\"http://{}/token\"", direct.host())),
        "{r}"
    );
    let injected = raw_head(
        &direct.host(),
        "GET /v2/ HTTP/1.1\r\nHost: evil\",x=\"y\r\nConnection: close\r\n\r\n",
    );
    assert!(
        injected.contains("realm=\"http://localhost/token\""),
        "{injected}"
    );

    let fixed = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("access.users", users)
        .set(
            "access.trusted_proxies",
            serde_json::json!(["127.0.0.1/32"]),
        )
        .set("server.external_url", "https://registry.example.org")
        .start();
    let r = raw_head(
        &fixed.host(),
        "GET /v2/ HTTP/1.1\r\nHost: attacker.example\r\nX-Forwarded-Host: attacker.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.contains("realm=\"https://registry.example.org/token\""),
        "{r}"
    );
}
