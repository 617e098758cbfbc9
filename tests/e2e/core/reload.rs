//! Reloads apply a new configuration whole or not at all: access control and upstreams are
//! both built before either is applied.

use std::time::Duration;

use crate::support::*;

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
    )
}

/// A reload whose access part is good (a new user) but whose upstreams are not (a CA file
/// that is no certificate) changes nothing: the new user cannot log in, and the old config
/// keeps serving. Fixing the file then applies both.
#[test]
fn a_reload_applies_access_and_upstreams_together_or_not_at_all() {
    let upstream = Registry::start();
    let image = push_fixture(&upstream, Fixture::single(), "library/hello:1");
    let mut ferry = Ferry::builder()
        .upstream("docker.io", &upstream)
        .set("access.users.alice.password", "alice-secret-1")
        .start();
    let bad_ca = ferry.dir().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "this is not a certificate\n").unwrap();
    let login = |ferry: &Ferry, user: &str, pw: &str| {
        let r = http::raw_request(
            &ferry.host(),
            "GET",
            "/token?service=ferry",
            &[("Authorization", &basic(user, pw))],
            &[],
        )
        .unwrap();
        r.status
    };
    assert_eq!(login(&ferry, "bob", "bob-secret-12"), 401);

    let ca = bad_ca.display().to_string();
    ferry.update_config(|b| {
        b.set("access.users.bob.password", "bob-secret-12")
            .set_path(&["upstreams", "docker.io", "ca_file"], ca.as_str())
    });
    ferry.sighup();
    wait_until(
        Duration::from_secs(10),
        "the refused reload in the log",
        || ferry.log().contains("configuration NOT reloaded"),
    );
    assert_eq!(
        login(&ferry, "bob", "bob-secret-12"),
        401,
        "access was not applied alone"
    );
    assert_eq!(login(&ferry, "alice", "alice-secret-1"), 200);
    let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());
    let creds = "alice:alice-secret-1";
    let out = tempfile::tempdir().unwrap();
    skopeo_copy(
        &reference,
        &format!("dir:{}", out.path().display()),
        &["--src-creds", creds],
    );
    assert_eq!(
        sha256_file(&out.path().join("manifest.json")),
        image.digest,
        "the old upstreams still serve"
    );

    ferry.update_config(|b| {
        b.set_path(
            &["upstreams", "docker.io", "ca_file"],
            serde_json::Value::Null,
        )
    });
    ferry.sighup();
    wait_until(Duration::from_secs(10), "bob to be able to log in", || {
        login(&ferry, "bob", "bob-secret-12") == 200
    });
}
