//! Quotas in a real Redis: each test starts its own `redis-server` on a free 127.0.0.1 port
//! (skipped, with the reason printed, when the binary is missing). Two `Access` instances
//! stand for two replicas.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_access::{Access, CacheOutcome, REDIS_RETRY_AFTER, reason};
use ferry_config::RedisConfig;
use http::HeaderMap;

/// A `redis-server` child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts one on a free port, or `None` (with a printed reason) without the binary.
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server::start_on(port)
    }

    fn start_on(port: u16) -> Option<Server> {
        let dir = tempfile::tempdir().unwrap();
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                println!(
                    "SKIPPED: cannot run redis-server ({e}); install it with apt-get install redis-server"
                );
                return None;
            }
        };
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        server.wait_ready();
        Some(server)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn config(&self) -> RedisConfig {
        RedisConfig {
            url: format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn replica(yaml: &str, redis: &RedisConfig) -> Access {
    Access::new(&config(yaml), Some(redis)).await.unwrap()
}

async fn keys(server: &Server) -> Vec<(String, i64)> {
    let client = redis::Client::open(server.config().url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in names {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        out.push((k, ttl));
    }
    out
}

#[tokio::test]
async fn two_replicas_share_one_request_quota() {
    let Some(server) = Server::start() else {
        return;
    };
    let cfg = "quotas: {anonymous: {requests: 4/1m}, redis_prefix: 'test:'}";
    let (a, b) = (
        replica(cfg, &server.config()).await,
        replica(cfg, &server.config()).await,
    );
    let none = HeaderMap::new();
    for i in 0..4 {
        let r = if i % 2 == 0 { &a } else { &b };
        pull(r, "192.0.2.1", &none).await.unwrap();
    }
    for r in [&a, &b] {
        let d = pull(r, "192.0.2.1", &none).await.unwrap_err();
        assert_eq!(d.reason, reason::QUOTA_REQUESTS);
        assert_eq!(d.retry_after_secs(), Some(15));
    }
    assert!(pull(&b, "192.0.2.2", &none).await.is_ok());
    assert_eq!((a.redis_failures(), b.redis_failures()), (0, 0));
    let keys = keys(&server).await;
    assert!(!keys.is_empty());
    for (k, ttl) in keys {
        assert!(k.starts_with("test:req:4/60000:{ip 192.0.2."), "{k}");
        assert!(ttl > 0 && ttl <= 61_000, "{k} expires ({ttl} ms)");
    }
}

#[tokio::test]
async fn two_replicas_share_one_byte_quota() {
    let Some(server) = Server::start() else {
        return;
    };
    let cfg = "quotas: {anonymous: {bytes: 1MiB/1h}}";
    let (a, b) = (
        replica(cfg, &server.config()).await,
        replica(cfg, &server.config()).await,
    );
    let none = HeaderMap::new();
    let g = pull(&a, "192.0.2.1", &none).await.unwrap();
    assert_eq!(
        drain(g.meter(body(32, 64 << 10), CacheOutcome::Hit)).await,
        2 << 20
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match pull(&b, "192.0.2.1", &none).await {
            Err(d) => {
                assert_eq!(d.reason, reason::QUOTA_BYTES);
                let retry = d.retry_after.unwrap();
                assert!(
                    retry > Duration::from_secs(3590) && retry <= Duration::from_secs(3600),
                    "{retry:?}"
                );
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("replica b never saw the bytes served by replica a"),
        }
    }
}

#[tokio::test]
async fn a_quota_in_redis_comes_back_after_its_window() {
    let Some(server) = Server::start() else {
        return;
    };
    let a = replica("quotas: {anonymous: {requests: 2/1s}}", &server.config()).await;
    let none = HeaderMap::new();
    pull(&a, "192.0.2.1", &none).await.unwrap();
    pull(&a, "192.0.2.1", &none).await.unwrap();
    assert!(pull(&a, "192.0.2.1", &none).await.is_err());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull(&a, "192.0.2.1", &none).await.unwrap();
    pull(&a, "192.0.2.1", &none).await.unwrap();
}

#[tokio::test]
async fn redis_down_fails_open_to_per_replica_counting() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let a = replica("quotas: {anonymous: {requests: 3/1m}}", &server.config()).await;
    let none = HeaderMap::new();
    pull(&a, "192.0.2.1", &none).await.unwrap();
    pull(&a, "192.0.2.1", &none).await.unwrap();
    server.stop();
    for _ in 0..3 {
        let start = Instant::now();
        pull(&a, "192.0.2.1", &none)
            .await
            .expect("Redis down does not refuse pulls");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no long wait on a dead Redis"
        );
    }
    assert!(a.redis_failures() >= 1);
    let d = pull(&a, "192.0.2.1", &none).await.unwrap_err();
    assert_eq!(
        d.reason,
        reason::QUOTA_REQUESTS,
        "the replica still limits on its own"
    );
}

#[tokio::test]
async fn a_redis_that_is_not_there_at_start_is_no_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisConfig {
        url: format!("redis://127.0.0.1:{port}/"),
    };
    let a = replica("quotas: {anonymous: {requests: 3/1m}}", &redis).await;
    pull(&a, "192.0.2.1", &HeaderMap::new()).await.unwrap();
    assert!(a.redis_failures() >= 1);
    let bad = Access::new(
        &config("{}"),
        Some(&RedisConfig {
            url: "nope://x".into(),
        }),
    )
    .await;
    assert!(bad.unwrap_err().to_string().starts_with("redis.url:"));
}

#[tokio::test]
async fn counting_returns_to_redis_when_it_is_back() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let port = server.port;
    let cfg = "quotas: {anonymous: {requests: 2/1m}}";
    let (a, b) = (
        replica(cfg, &server.config()).await,
        replica(cfg, &server.config()).await,
    );
    let none = HeaderMap::new();
    server.stop();
    pull(&a, "192.0.2.1", &none).await.unwrap();
    let Some(_again) = Server::start_on(port) else {
        return;
    };
    tokio::time::sleep(REDIS_RETRY_AFTER + Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut shared = 0;
    while Instant::now() < deadline && shared < 2 {
        let before = a.redis_failures();
        if pull(&a, "192.0.2.7", &none).await.is_ok() && a.redis_failures() == before {
            shared += 1;
        } else {
            tokio::time::sleep(REDIS_RETRY_AFTER).await;
        }
    }
    assert_eq!(shared, 2, "replica a counts in Redis again");
    let d = pull(&b, "192.0.2.7", &none).await.unwrap_err();
    assert_eq!(
        d.reason,
        reason::QUOTA_REQUESTS,
        "and replica b sees those counts"
    );
}
