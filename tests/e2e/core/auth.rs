//! Upstream authentication (SPEC section 5): the anonymous Bearer token flow against a real
//! docker-registry with token auth (challenge parsed, one token per repository scope, cached
//! until it expires, a rejected token refreshed and the request retried once), Basic auth and
//! token auth with per-upstream username/password (also from `FERRY_*` variables), and blob
//! downloads redirected to another host (a CDN) followed without sending credentials there.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// Token requests ferry made for `repository:<repo>:pull`, anonymous or as `user`.
fn token_requests(registry: &Registry, repo: &str, user: Option<&str>) -> usize {
    let scope = format!("repository:{repo}:pull");
    registry
        .token_server()
        .expect("token auth registry")
        .requests()
        .iter()
        .filter(|r| r.user.as_deref() == user && r.scopes.contains(&scope))
        .count()
}

#[tokio::test]
async fn anonymous_bearer_tokens_are_fetched_once_per_repository_and_reused() {
    let registry =
        Registry::with_token_auth(TokenAuth::new().user("pusher", "pw").anonymous_pull(true));
    let hello = push_fixture(
        &registry,
        Fixture::single().seed("token"),
        "library/hello:1",
    );
    let other = push_fixture(&registry, Fixture::multi().seed("token"), "team/other:1");
    let ferry = Ferry::builder()
        .upstream("docker.io", &registry)
        .tag_ttl("1s")
        .set("cache.revalidate", "blocking")
        .start();

    // A real pull: manifest, config and layer, all with one token.
    let hello_ref = format!("docker://{}/library/hello:1", ferry.host());
    assert_eq!(pull_to_dir(&hello_ref, &[])["manifest.json"], hello.digest);
    assert_eq!(token_requests(&registry, "library/hello", None), 1);
    let seen = ferry_requests(&registry);
    let challenged = seen.iter().filter(|e| e.status == 401).count();
    assert_eq!(challenged, 1, "one 401 to learn the challenge: {seen:?}");
    // 206: the first request of a download asks for a range (it may be the whole blob).
    assert!(
        seen.iter()
            .filter(|e| e.status == 200 || e.status == 206)
            .count()
            >= 3
    );

    // Another repository needs its own scope: one more token, no second challenge.
    let other_ref = format!("docker://{}/team/other:1", ferry.host());
    assert_eq!(
        pull_to_dir(&other_ref, &["--all"])["manifest.json"],
        other.digest
    );
    assert_eq!(token_requests(&registry, "team/other", None), 1);
    assert_eq!(
        ferry_requests(&registry)
            .iter()
            .filter(|e| e.status == 401)
            .count(),
        1
    );

    // After tag_ttl, the HEAD revalidation re-uses the cached token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = get_manifest(&ferry, "/v2/library/hello/manifests/1").await;
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(hello.digest.as_str())
    );
    assert_eq!(registry.count("HEAD", "/v2/library/hello/manifests/1"), 1);
    assert_eq!(token_requests(&registry, "library/hello", None), 1);
    assert!(
        ferry_requests(&registry)
            .iter()
            .all(|e| e.status != 401 || e.method != "HEAD"),
        "the revalidation was not challenged"
    );
}

#[tokio::test]
async fn tokens_are_renewed_when_they_expire_and_a_rejected_token_is_retried_once() {
    let up = FaultyUpstream::start();
    // Tokens live 4 s; ferry stops using them a little earlier (after 3 s).
    up.set_auth(UpstreamAuth::bearer(4));
    let blobs: Vec<String> = (0..4)
        .map(|i| up.add_blob(format!("layer {i}").into_bytes()))
        .collect();
    let ferry = Ferry::builder().upstream("docker.io", &up).start();
    let fetch = |i: usize| {
        let path = format!("/v2/org/app/blobs/{}", blobs[i]);
        let ferry = &ferry;
        async move {
            let resp = get(ferry, &path).await;
            assert_eq!(resp.status(), 200, "{path}");
            resp.bytes().await.unwrap()
        }
    };

    let first = Instant::now();
    assert_eq!(fetch(0).await.as_ref(), b"layer 0");
    assert_eq!(up.tokens_issued(), 1);
    assert_eq!(fetch(1).await.as_ref(), b"layer 1");
    assert_eq!(up.tokens_issued(), 1, "the token is cached");
    assert!(first.elapsed() < Duration::from_secs(3), "too slow to test");

    // Expired: a new token is fetched before the request, not after a 401.
    tokio::time::sleep(Duration::from_secs(3) - first.elapsed() + Duration::from_millis(300)).await;
    assert_eq!(fetch(2).await.as_ref(), b"layer 2");
    assert_eq!(up.tokens_issued(), 2);
    assert_eq!(
        up.count("GET", &format!("/v2/org/app/blobs/{}", blobs[2])),
        1
    );

    // Revoked: the upstream answers 401; ferry gets a new token and retries once.
    up.revoke_tokens();
    assert_eq!(fetch(3).await.as_ref(), b"layer 3");
    assert_eq!(up.tokens_issued(), 3);
    let tries = up
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/v2/org/app/blobs/{}", blobs[3]))
        .collect::<Vec<_>>();
    assert_eq!(tries.len(), 2, "rejected, then retried once: {tries:?}");
    assert_ne!(tries[0].authorization, tries[1].authorization);
    let token_scopes: Vec<String> = up
        .requests()
        .into_iter()
        .filter(|r| r.path == "/token")
        .map(|r| r.query.unwrap_or_default())
        .collect();
    assert!(
        token_scopes
            .iter()
            .all(|q| q.contains("scope=repository%3Aorg%2Fapp%3Apull")),
        "{token_scopes:?}"
    );
}

#[test]
fn a_basic_auth_upstream_is_pulled_with_the_configured_credentials() {
    let registry = Registry::with_basic_auth(&[("alice", "s3cret")]);
    let image = push_fixture(&registry, Fixture::multi().seed("basic"), "private/app:1");
    let reference = |f: &Ferry| format!("docker://{}/private/app:1", f.host());

    let with_creds = Ferry::builder()
        .upstream_with(
            "docker.io",
            &registry,
            json!({"username": "alice", "password": "s3cret"}),
        )
        .start();
    let pulled = pull_to_dir(&reference(&with_creds), &["--all"]);
    assert_eq!(pulled["manifest.json"], image.digest);
    assert_eq!(
        pulled.len(),
        1 + image.manifests.len() + image.blobs.len() + 1
    );

    // The password can stay out of the file: FERRY_UPSTREAMS__<NAME>__PASSWORD.
    let from_env = Ferry::builder()
        .upstream_with("docker.io", &registry, json!({"username": "alice"}))
        .env("FERRY_UPSTREAMS__DOCKER_IO__PASSWORD", "s3cret")
        .start();
    assert_eq!(
        skopeo_inspect_raw_digest(&reference(&from_env)),
        image.digest
    );
    assert!(
        !std::fs::read_to_string(from_env.config_path())
            .unwrap()
            .contains("s3cret")
    );

    // Without credentials, or with wrong ones, the client gets the upstream's 401.
    for (name, ferry) in [
        (
            "no credentials",
            Ferry::builder().upstream("docker.io", &registry).start(),
        ),
        (
            "wrong password",
            Ferry::builder()
                .upstream_with(
                    "docker.io",
                    &registry,
                    json!({"username": "alice", "password": "nope"}),
                )
                .start(),
        ),
    ] {
        let r = crate::support::http::raw_request(
            &ferry.host(),
            "GET",
            "/v2/private/app/manifests/1",
            &[("Accept", ACCEPT_MANIFESTS)],
            &[],
        )
        .unwrap();
        expect_raw_error(&r, 401, "UNAUTHORIZED", name);
        let out = try_skopeo_copy(
            &reference(&ferry),
            &format!("dir:{}", tempfile::tempdir().unwrap().path().display()),
            &[],
        );
        assert!(!out.success, "{name}: the pull must fail");
    }
}

#[test]
fn a_token_auth_upstream_gets_the_configured_credentials_at_its_token_service() {
    let registry = Registry::with_token_auth(TokenAuth::new().user("carol", "pw"));
    let image = push_fixture(&registry, Fixture::single().seed("carol"), "private/app:1");
    let ferry = Ferry::builder()
        .upstream_with(
            "docker.io",
            &registry,
            json!({"username": "carol", "password": "pw"}),
        )
        .start();
    let reference = format!("docker://{}/private/app:1", ferry.host());
    assert_eq!(pull_to_dir(&reference, &[])["manifest.json"], image.digest);
    assert_eq!(token_requests(&registry, "private/app", Some("carol")), 1);

    let anonymous = Ferry::builder().upstream("docker.io", &registry).start();
    let r = crate::support::http::raw_request(
        &anonymous.host(),
        "GET",
        "/v2/private/app/manifests/1",
        &[("Accept", ACCEPT_MANIFESTS)],
        &[],
    )
    .unwrap();
    expect_raw_error(&r, 401, "UNAUTHORIZED", "anonymous ferry");
}

#[test]
fn blob_redirects_to_a_cdn_are_followed_without_credentials() {
    let up = FaultyUpstream::start();
    let image = build_fixture(&Fixture::docker().seed("cdn"));
    up.add_fixture(&image, "org/app", "1");
    up.add_rule(Rule::blobs(Fault::RedirectToCdn).method("GET"));
    let creds = json!({"username": "u", "password": "p"});

    for auth in [
        UpstreamAuth::basic("u", "p"),
        UpstreamAuth::bearer_with_credentials(300, "u", "p"),
    ] {
        up.set_auth(auth.clone());
        up.clear_requests();
        let ferry = Ferry::builder()
            .upstream_with("docker.io", &up, creds.clone())
            .start();
        let pulled = pull_to_dir(&format!("docker://{}/org/app:1", ferry.host()), &["--all"]);
        assert_eq!(pulled["manifest.json"], image.digest, "{auth:?}");
        for blob in &image.blobs {
            let name = blob.digest.trim_start_matches("sha256:");
            assert_eq!(pulled.get(name), Some(&blob.digest), "{auth:?}");
        }

        let cdn = up.cdn_requests();
        assert_eq!(cdn.len(), image.blobs.len(), "every blob came from the CDN");
        for r in &cdn {
            assert_eq!(
                r.authorization, None,
                "credentials leaked to the CDN: {r:?}"
            );
        }
        let registry_blob_gets: Vec<_> = up
            .requests()
            .into_iter()
            .filter(|r| !r.cdn && r.method == "GET" && r.path.contains("/blobs/"))
            .collect();
        assert!(
            registry_blob_gets.iter().any(|r| r.authorization.is_some()),
            "the registry itself got credentials: {registry_blob_gets:?}"
        );
    }
}
