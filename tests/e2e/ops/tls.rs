//! TLS.

use super::*;

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
