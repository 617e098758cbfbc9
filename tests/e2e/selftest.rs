//! Tests of the e2e support itself (no ferry involved): real registries take and serve the
//! fixtures byte for byte, their auth modes accept and refuse the right clients, podman can
//! pull with its private config, and the fake upstream's faults behave as scripted.

use std::time::{Duration, Instant};

use crate::support::http::{client, raw_get, raw_request, read_body};
use crate::support::*;

/// The digest of the default `single` fixture. mkimage.py is deterministic, so this is the
/// same on every machine; update it only when mkimage.py's output changes on purpose.
const SINGLE_DIGEST: &str =
    "sha256:b05739a65364cd427b79a4dc68669a28bb817df5dbaced20fbfbe9c68c12c072";

fn roundtrip(fixture: Fixture, repo_tag: &str) {
    let registry = Registry::start();
    let image = push_fixture(&registry, fixture, repo_tag);
    let reference = format!("docker://{}/{repo_tag}", registry.host());
    assert_eq!(skopeo_inspect_raw_digest(&reference), image.digest);
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    assert_eq!(
        registry.manifest_digest(repo, tag).as_deref(),
        Some(image.digest.as_str())
    );
    assert_pulls_back(&reference, &image);
}

#[test]
fn registry_roundtrips_single_fixture() {
    roundtrip(Fixture::single(), "library/hello:latest");
}

#[test]
fn registry_roundtrips_multi_platform_index() {
    let image = build_fixture(&Fixture::multi());
    assert_eq!(image.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(image.manifests.len(), 2);
    assert_eq!(
        image
            .manifest_for("arm64")
            .platform
            .as_ref()
            .unwrap()
            .variant
            .as_deref(),
        Some("v8")
    );
    roundtrip(Fixture::multi(), "test/multi:v1");
}

#[test]
fn registry_roundtrips_docker_media_types() {
    let list = build_fixture(&Fixture::docker());
    assert_eq!(
        list.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert!(
        list.manifests
            .iter()
            .all(|m| m.media_type == "application/vnd.docker.distribution.manifest.v2+json")
    );
    roundtrip(Fixture::docker(), "test/docker:v1");

    let single = build_fixture(&Fixture::docker_single());
    assert_eq!(
        single.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    roundtrip(Fixture::docker_single(), "test/docker-single:v1");
}

#[test]
fn registry_roundtrips_big_fixture_and_counts_blob_gets() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::big(20), "test/big:v1");
    let layer = image.largest_blob();
    assert_eq!(
        layer.size,
        20 * 1024 * 1024 + 512 + 1024,
        "one file in a tar"
    );
    assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar");
    let before = registry.blob_gets();
    assert_pulls_back(&format!("docker://{}/test/big:v1", registry.host()), &image);
    let after = registry.blob_gets();
    assert_eq!(
        after - before,
        image.blobs.len(),
        "one GET per blob: {:?}",
        registry.requests()
    );
}

#[test]
fn fixtures_are_deterministic_and_seeds_make_distinct_images() {
    let image = build_fixture(&Fixture::single());
    assert_eq!(image.digest, SINGLE_DIGEST);
    fixtures::verify_image_files(&image);
    // Built again from scratch in another directory: identical bytes.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(fixtures::MKIMAGE)
        .arg("single")
        .arg(dir.path().join("again"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SINGLE_DIGEST);

    let a = build_fixture(&Fixture::single().seed("a"));
    let b = build_fixture(&Fixture::single().seed("b"));
    assert_ne!(a.digest, b.digest);
    assert_ne!(a.digest, image.digest);
    let layered = build_fixture(&Fixture::multi().seed("layers").layers(3));
    assert_eq!(
        layered.blobs.len(),
        2 * 4,
        "3 layers + 1 config per platform"
    );
}

#[test]
fn registry_stop_and_start_again_keeps_port_and_data() {
    let mut registry = Registry::start();
    let image = push_fixture(&registry, Fixture::single(), "library/hello:1");
    let host = registry.host();
    registry.stop();
    assert!(
        raw_get(&host, "/v2/").is_err(),
        "registry still answers after stop"
    );
    registry.start_again();
    assert_eq!(registry.host(), host);
    assert_eq!(
        registry.manifest_digest("library/hello", "1").as_deref(),
        Some(image.digest.as_str())
    );
    registry.tag("library/hello", "1", "2");
    push_tags(
        &registry,
        Fixture::single().seed("tags"),
        "many/tags",
        &["t1", "t2", "t3"],
    );
    let list = raw_get(&host, "/v2/many/tags/tags/list").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let mut tags: Vec<&str> = json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort(); // distribution lists tags in directory order without `n`
    assert_eq!(tags, ["t1", "t2", "t3"]);
    assert_eq!(
        skopeo_inspect_raw_digest(&format!("docker://{host}/library/hello:2")),
        image.digest
    );
    registry.delete_manifest("library/hello", &image.digest);
    assert_eq!(registry.manifest_digest("library/hello", "1"), None);
}

#[test]
fn basic_auth_registry_rejects_anonymous_and_accepts_credentials() {
    let registry = Registry::with_basic_auth(&[("alice", "s3cret"), ("bob", "hunter2")]);
    let anonymous = raw_get(&registry.host(), "/v2/").unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = raw_request(
        &registry.host(),
        "GET",
        "/v2/",
        &[("Authorization", "Basic YWxpY2U6bm9wZQ==")], // alice:nope
        &[],
    )
    .unwrap();
    assert_eq!(wrong.status, 401);

    let image = push_fixture(&registry, Fixture::single(), "private/app:1");
    let reference = format!("docker://{}/private/app:1", registry.host());
    let mut cmd = crate::support::clients::skopeo_command();
    cmd.args(["inspect", "--raw", "--tls-verify=false", &reference]);
    let denied = crate::support::clients::run(cmd);
    assert!(!denied.success, "anonymous inspect must fail");
    let raw = skopeo_inspect_raw(&reference, &["--creds", "bob:hunter2"]);
    assert_eq!(sha256_digest(&raw), image.digest);
}

#[test]
fn token_auth_registry_runs_the_bearer_flow() {
    let registry = Registry::with_token_auth(TokenAuth::new().user("carol", "pw"));
    let path = "/v2/private/app/manifests/1";
    let challenge = raw_get(&registry.host(), path).unwrap();
    assert_eq!(challenge.status, 401);
    let www = challenge.header("www-authenticate").unwrap().to_owned();
    let tokens = registry.token_server().unwrap();
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(
        www.contains(&format!("realm=\"{}\"", tokens.realm())),
        "{www}"
    );
    assert!(
        www.contains("scope=\"repository:private/app:pull\""),
        "{www}"
    );

    // The token server refuses anonymous clients (no anonymous_pull) and wrong passwords.
    let token_addr = tokens
        .realm()
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_owned();
    let scope = "/token?service=ferry-test-registry&scope=repository%3Aprivate%2Fapp%3Apull";
    assert_eq!(raw_get(&token_addr, scope).unwrap().status, 401);

    let image = push_fixture(&registry, Fixture::single(), "private/app:1");
    assert!(
        tokens.request_count() > 0,
        "skopeo must have fetched tokens to push"
    );
    let reference = format!("docker://{}/private/app:1", registry.host());
    let raw = skopeo_inspect_raw(&reference, &["--creds", "carol:pw"]);
    assert_eq!(sha256_digest(&raw), image.digest);
    let wrong = crate::support::clients::run({
        let mut cmd = crate::support::clients::skopeo_command();
        cmd.args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "carol:bad",
            &reference,
        ]);
        cmd
    });
    assert!(!wrong.success);
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.status == 401 && r.had_credentials)
    );

    // A token is only good for the repository it was issued for.
    let auth = basic_header("carol", "pw");
    let other_scope = "/token?service=ferry-test-registry&scope=repository%3Aother%2Frepo%3Apull";
    let t = raw_request(
        &token_addr,
        "GET",
        other_scope,
        &[("Authorization", &auth)],
        &[],
    )
    .unwrap();
    assert_eq!(t.status, 200);
    let jwt = serde_json::from_slice::<serde_json::Value>(&t.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {jwt}");
    let accept = ("Accept", crate::support::registry::MANIFEST_ACCEPT);
    let r = raw_request(
        &registry.host(),
        "GET",
        path,
        &[("Authorization", &bearer), accept],
        &[],
    )
    .unwrap();
    assert_eq!(
        r.status, 401,
        "token for other/repo must not open private/app"
    );
    let r = raw_request(
        &registry.host(),
        "GET",
        "/v2/other/repo/tags/list",
        &[("Authorization", &bearer)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 404, "right scope, unknown repo: {}", r.text());
}

#[test]
fn token_auth_registry_with_anonymous_pull() {
    let registry =
        Registry::with_token_auth(TokenAuth::new().user("dave", "pw").anonymous_pull(true));
    let image = push_fixture(&registry, Fixture::single(), "public/app:1");
    let reference = format!("docker://{}/public/app:1", registry.host());
    assert_eq!(skopeo_inspect_raw_digest(&reference), image.digest);
    // Anonymous clients only get pull: pushing fails.
    let push = try_skopeo_copy(
        &image.skopeo_source(),
        &format!("docker://{}/public/app:2", registry.host()),
        &[],
    );
    assert!(!push.success, "anonymous push must be refused");
    let anonymous = registry
        .token_server()
        .unwrap()
        .requests()
        .into_iter()
        .filter(|r| r.user.is_none() && r.status == 200)
        .count();
    assert!(anonymous > 0);
}

#[test]
fn podman_pulls_from_a_registry_with_private_config() {
    let registry = Registry::start();
    let image = push_fixture(&registry, Fixture::multi(), "test/multi:v1");
    let Some(podman) = podman_or_skip(&[("docker.io", &registry.host())]) else {
        return;
    };
    podman.pull("docker.io/test/multi:v1", &[]);
    assert_eq!(podman.image_digest("docker.io/test/multi:v1"), image.digest);
    let before = registry.count("GET", "/v2/test/multi/manifests/");
    assert!(before >= 1);
}

fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

// ---- Ferry config ----

#[test]
fn ferry_builder_writes_a_config_ferry_accepts() {
    let registry = Registry::start();
    let up = FaultyUpstream::start();
    let builder = Ferry::builder()
        .upstream("docker.io", &registry)
        .upstream_with(
            "ghcr.io",
            &up,
            serde_json::json!({"username": "u", "password": "p"}),
        )
        .host("docker.mirror.test", "docker.io")
        .tag_ttl("2s")
        .max_size("64MiB")
        .set(
            "cache.immutable_tags",
            serde_json::json!(["v?[0-9]+\\.[0-9]+"]),
        );
    let data = std::path::Path::new("/tmp/ferry-e2e-data \"quoted\"");
    let yaml = builder.render("127.0.0.1:5999", data);
    let config = ferry_config::Config::from_yaml(&yaml, std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(config.listen, "127.0.0.1:5999");
    assert_eq!(config.default_upstream, "docker.io");
    assert_eq!(config.upstreams.len(), 2, "{yaml}");
    assert_eq!(
        config.upstreams["docker.io"].url.as_deref(),
        Some(registry.url().as_str())
    );
    assert_eq!(config.upstreams["ghcr.io"].username.as_deref(), Some("u"));
    assert_eq!(config.hosts["docker.mirror.test"], "docker.io");
    assert_eq!(config.cache.tag_ttl.0, Duration::from_secs(2));
    assert_eq!(config.cache.immutable_tags, ["v?[0-9]+\\.[0-9]+"]);
    assert_eq!(config.storage.max_size.0, 64 << 20);
    assert_eq!(config.storage.fs_root().as_deref(), Some(data));

    // With no upstreams, every public registry points at a dead loopback port.
    let yaml = Ferry::builder().render("127.0.0.1:5999", data);
    let config = ferry_config::Config::from_yaml(&yaml, std::iter::empty()).unwrap();
    assert!(config.upstreams.len() >= 7);
    for (name, upstream) in &config.upstreams {
        assert_eq!(
            upstream.url.as_deref(),
            Some("http://127.0.0.1:9"),
            "{name}"
        );
    }
}

// ---- FaultyUpstream ----

#[tokio::test]
async fn faulty_upstream_serves_content_ranges_and_tags() {
    let up = FaultyUpstream::start();
    let layer = up.add_pattern_blob(1, 3 * 1024 * 1024 + 5);
    let digest = up.add_image("lib/app", "1.0", std::slice::from_ref(&layer));
    up.set_tag("lib/app", "latest", &digest);
    let http = client();

    let r = http.get(format!("{}/v2/", up.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/v2/lib/app/manifests/1.0", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(sha256_digest(&r.bytes().await.unwrap()), digest);

    let blob_url = format!("{}/v2/lib/app/blobs/{layer}", up.url());
    let head = http.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        (3 * 1024 * 1024 + 5).to_string().as_str()
    );
    let body = http
        .get(&blob_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&body), layer);
    assert_eq!(&body[1000..1100], pattern_bytes(1, 1000, 100).as_slice());

    let part = http
        .get(&blob_url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", body.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), body.slice(100..200));

    for tag in ["a", "b", "c"] {
        up.set_tag("lib/app", tag, &digest);
    }
    let page = http
        .get(format!("{}/v2/lib/app/tags/list?n=2", up.url()))
        .send()
        .await
        .unwrap();
    assert!(page.headers()["link"].to_str().unwrap().contains("last=a"));
    let json: serde_json::Value = page.json().await.unwrap();
    assert_eq!(json["tags"], serde_json::json!(["1.0", "a"]));
    let rest: serde_json::Value = http
        .get(format!("{}/v2/lib/app/tags/list?last=b", up.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tags"], serde_json::json!(["c", "latest"]));

    let missing = http
        .get(format!("{}/v2/lib/app/manifests/nope", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(up.count("GET", &format!("/v2/lib/app/blobs/{layer}")), 2);
    assert_eq!(up.count("HEAD", &format!("/v2/lib/app/blobs/{layer}")), 1);
    assert_eq!(up.blob_gets(&layer), 2);
}

#[tokio::test]
async fn faulty_upstream_cuts_corrupts_and_recovers() {
    let up = FaultyUpstream::start();
    let blob = up.add_pattern_blob(2, 1024 * 1024);
    let url = format!("{}/v2/x/blobs/{blob}", up.url());
    let http = client();

    let cut = up.add_rule(Rule::blob(&blob, Fault::CutAfter(100_000)).times(1));
    let (got, failed) = read_body(http.get(&url).send().await.unwrap()).await;
    assert!(failed, "a cut body must end in an error");
    assert_eq!(got.len(), 100_000);
    assert_eq!(up.rule_hits(cut), 1);
    let (got, failed) = read_body(http.get(&url).send().await.unwrap()).await;
    assert!(
        !failed && sha256_digest(&got) == blob,
        "the rule was for one request only"
    );

    let wrong = up.add_rule(Rule::blob(&blob, Fault::WrongBytes));
    let (got, failed) = read_body(http.get(&url).send().await.unwrap()).await;
    assert!(!failed);
    assert_eq!(got.len(), 1024 * 1024);
    assert_ne!(sha256_digest(&got), blob);
    up.remove_rule(wrong);
    let (got, _) = read_body(http.get(&url).send().await.unwrap()).await;
    assert_eq!(sha256_digest(&got), blob);
}

#[tokio::test]
async fn faulty_upstream_answers_scripted_statuses() {
    let up = FaultyUpstream::start();
    let blob = up.add_blob(b"hello".to_vec());
    let url = format!("{}/v2/x/blobs/{blob}", up.url());
    let http = client();
    up.add_rule(
        Rule::blob(&blob, Fault::too_many_requests(7))
            .method("GET")
            .times(1),
    );
    up.add_rule(Rule::blob(&blob, Fault::status(503)).method("GET").times(2));
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));
    // The 429 rule is spent; the 503 rule applied to the first request too (both matched).
    assert_eq!(http.get(&url).send().await.unwrap().status(), 503);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(http.head(&url).send().await.unwrap().status(), 200);
    up.add_rule(Rule::manifests(Fault::status(502)));
    let r = http
        .get(format!("{}/v2/x/manifests/latest", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn faulty_upstream_delays_throttles_and_stalls() {
    let up = FaultyUpstream::start();
    let blob = up.add_pattern_blob(3, 400_000);
    let url = format!("{}/v2/x/blobs/{blob}", up.url());
    let http = client();

    let delay = up.add_rule(Rule::blob(
        &blob,
        Fault::DelayHeaders(Duration::from_millis(400)),
    ));
    let t = Instant::now();
    let r = http.get(&url).send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400));
    r.bytes().await.unwrap();
    up.remove_rule(delay);

    let throttle = up.add_rule(Rule::blob(&blob, Fault::Throttle(800_000)));
    let t = Instant::now();
    let (got, _) = read_body(http.get(&url).send().await.unwrap()).await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sha256_digest(&got), blob);
    up.remove_rule(throttle);

    up.add_rule(Rule::blob(&blob, Fault::StallAfter(150_000)).times(1));
    let mut resp = http.get(&url).send().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 150_000 {
        got.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    assert_eq!(
        got.len(),
        150_000,
        "the first bytes arrive before the stall"
    );
    let waited = tokio::time::timeout(Duration::from_millis(300), resp.chunk()).await;
    assert!(waited.is_err(), "no byte may pass the stall before release");
    up.release_stalls();
    let (rest, failed) = read_body(resp).await;
    assert!(!failed);
    got.extend_from_slice(&rest);
    assert_eq!(sha256_digest(&got), blob);
}

#[tokio::test]
async fn faulty_upstream_bearer_flow_counts_tokens_and_expires_them() {
    let up = FaultyUpstream::start();
    up.set_auth(UpstreamAuth::bearer_with_credentials(1, "u", "p"));
    let blob = up.add_blob(b"secret layer".to_vec());
    let url = format!("{}/v2/org/app/blobs/{blob}", up.url());
    let http = client();

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        www,
        format!(
            "Bearer realm=\"{}/token\",service=\"fake\",scope=\"repository:org/app:pull\"",
            up.url()
        )
    );
    let token_url = format!(
        "{}/token?service=fake&scope=repository:org/app:pull",
        up.url()
    );
    assert_eq!(http.get(&token_url).send().await.unwrap().status(), 401);
    let json: serde_json::Value = http
        .get(&token_url)
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["expires_in"], 1);
    let token = json["token"].as_str().unwrap().to_owned();
    let ok = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().as_ref(), b"secret layer");
    let other = http
        .get(format!("{}/v2/org/other/blobs/{blob}", up.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401, "token scoped to org/app");
    assert_eq!(up.token_requests(), 2);
    assert_eq!(up.tokens_issued(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(expired.status(), 401, "tokens expire after expires_in");

    up.set_auth(UpstreamAuth::basic("u", "p"));
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let r = http
        .get(&url)
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn faulty_upstream_redirects_blobs_to_a_cdn_that_records_authorization() {
    let up = FaultyUpstream::start();
    let blob = up.add_pattern_blob(4, 70_000);
    up.add_rule(Rule::blobs(Fault::RedirectToCdn).method("GET"));
    let http = client();
    let r = http
        .get(format!("{}/v2/org/app/blobs/{blob}", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&up.cdn_url()), "{location}");
    assert_ne!(up.cdn_url(), up.url());

    let body = http
        .get(&location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&body), blob);
    http.get(&location)
        .bearer_auth("leaked")
        .send()
        .await
        .unwrap();
    let cdn = up.cdn_requests();
    assert_eq!(cdn.len(), 2);
    assert_eq!(cdn[0].authorization, None);
    assert_eq!(cdn[1].authorization.as_deref(), Some("Bearer leaked"));

    // A CDN fault applies to the CDN listener only.
    up.add_rule(Rule::any(Fault::status(403)).on_cdn().times(1));
    assert_eq!(http.get(&location).send().await.unwrap().status(), 403);
    assert_eq!(http.get(&location).send().await.unwrap().status(), 200);
}

#[test]
fn skopeo_copies_a_fixture_out_of_the_faulty_upstream() {
    let up = FaultyUpstream::start();
    let image = build_fixture(&Fixture::docker());
    up.add_fixture(&image, "test/docker", "v1");
    let reference = format!("docker://{}/test/docker:v1", up.host());
    assert_eq!(skopeo_inspect_raw_digest(&reference), image.digest);
    assert_pulls_back(&reference, &image);
}
