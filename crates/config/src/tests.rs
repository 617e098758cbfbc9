//! Tests of loading, overrides and validation.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_default_knows_eight_registries() {
    let c = Config::from_yaml("", env(&[])).unwrap();
    assert_eq!(c.listen, "0.0.0.0:5000");
    assert_eq!(c.default_upstream, "docker.io");
    assert_eq!(
        c.storage.fs_root().unwrap(),
        std::path::PathBuf::from("./ferry-data")
    );
    let names: Vec<&str> = c.upstreams.keys().map(String::as_str).collect();
    for n in [
        "docker.io",
        "gcr.io",
        "ghcr.io",
        "registry.k8s.io",
        "quay.io",
        "mcr.microsoft.com",
        "nvcr.io",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(
        c.upstreams["registry.k8s.io"]
            .aliases
            .contains(&"k8s.gcr.io".to_string())
    );
    assert_eq!(
        c.upstreams["docker.io"].base_url("docker.io"),
        "https://registry-1.docker.io"
    );
    assert_eq!(
        c.upstreams["ghcr.io"].base_url("ghcr.io"),
        "https://ghcr.io"
    );
}

#[test]
fn spec_example_parses() {
    let text = r#"
listen: 0.0.0.0:5000
storage:
  fs:
    root: ./ferry-data
  max_size: 100GiB
upstreams:
  docker.io:
    url: https://registry-1.docker.io
    username: bob
    password: secret
  ghcr.io: {}
  gcr.io:
    url: https://gcr.io
    mirrors:
      - https://m.example.cn/gcr.io
default_upstream: docker.io
hosts:
  docker.mirror.example.com: docker.io
cache:
  tag_ttl: 10m
"#;
    let c = Config::from_yaml(text, env(&[])).unwrap();
    assert_eq!(c.upstreams.len(), 3);
    assert_eq!(c.storage.max_size.0, 100 << 30);
    assert_eq!(c.cache.tag_ttl, Dur::secs(600));
    assert_eq!(
        c.upstreams["gcr.io"].mirrors,
        vec!["https://m.example.cn/gcr.io"]
    );
    assert_eq!(
        c.upstreams["docker.io"].all_accounts()[0].password.expose(),
        "secret"
    );
}

#[test]
fn unknown_key_is_named_with_line() {
    let err =
        Config::from_yaml("listen: 0.0.0.0:5000\ncache:\n  tag_tll: 5m\n", env(&[])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tag_tll"), "{text}");
    assert_eq!(err.errors[0].line, Some(3), "{text}");
}

#[test]
fn bad_values_are_explained() {
    let err = Config::from_yaml("cache:\n  tag_ttl: soon\n", env(&[])).unwrap_err();
    assert!(err.to_string().contains("soon"), "{err}");
    let err = Config::from_yaml("storage:\n  max_size: lots\n", env(&[])).unwrap_err();
    assert!(err.to_string().contains("lots"), "{err}");
}

#[test]
fn semantic_errors_name_key_and_line() {
    let text = "upstreams:\n  ghcr.io:\n    url: ftp://x\ndefault_upstream: quay.io\nhosts:\n  a.example: nope.io\n";
    let err = Config::from_yaml(text, env(&[])).unwrap_err();
    let keys: Vec<(&str, Option<usize>)> = err
        .errors
        .iter()
        .map(|e| (e.key.as_str(), e.line))
        .collect();
    assert!(
        keys.contains(&("upstreams.ghcr.io.url", Some(3))),
        "{keys:?}"
    );
    assert!(keys.contains(&("default_upstream", Some(4))), "{keys:?}");
    assert!(keys.contains(&("hosts.a.example", Some(6))), "{keys:?}");
}

#[test]
fn env_overrides_keep_other_defaults() {
    let vars = env(&[
        ("FERRY_LISTEN", "127.0.0.1:6000"),
        ("FERRY_CACHE__TAG_TTL", "1m"),
        ("FERRY_UPSTREAMS__DOCKER_IO__USERNAME", "ci"),
        ("FERRY_UPSTREAMS__DOCKER_IO__PASSWORD", "s3cret"),
        ("FERRY_STORAGE__FS__ROOT", "/var/cache/ferry"),
        ("HOME", "/root"),
    ]);
    let c = Config::from_yaml("", vars).unwrap();
    assert_eq!(c.listen, "127.0.0.1:6000");
    assert_eq!(c.cache.tag_ttl, Dur::secs(60));
    assert_eq!(c.upstreams["docker.io"].username.as_deref(), Some("ci"));
    assert_eq!(c.upstreams.len(), 7);
    assert_eq!(
        c.storage.fs_root().unwrap(),
        std::path::PathBuf::from("/var/cache/ferry")
    );
}

#[test]
fn env_override_errors_name_the_variable() {
    let err = Config::from_yaml("", env(&[("FERRY_CACHE__TAG_TTL", "never")])).unwrap_err();
    assert!(err.to_string().contains("FERRY_CACHE__TAG_TTL"), "{err}");
    let err = Config::from_yaml("", env(&[("FERRY_NOPE__X", "1")])).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // a single-segment name that is no top-level key is foreign: ignored, not an error
    let c = Config::from_yaml("", env(&[("FERRY_NOPE", "1"), ("FERRY_PORT", "tcp://x")])).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn alias_clash_and_bad_names() {
    let text = "upstreams:\n  docker.io:\n    aliases: [ghcr.io]\n  ghcr.io: {}\n  Bad_Name: {}\n";
    let err = Config::from_yaml(text, env(&[])).unwrap_err().to_string();
    assert!(err.contains("\"ghcr.io\" is both"), "{err}");
    assert!(err.contains("Bad_Name"), "{err}");
}

#[test]
fn registry_names() {
    for ok in [
        "docker.io",
        "127.0.0.1:5001",
        "localhost",
        "my-reg.example.com:443",
    ] {
        assert!(validate::is_registry_name(ok), "{ok}");
    }
    for bad in [
        "",
        "UPPER.io",
        "a..b",
        "-a.io",
        "a.io:",
        "a.io:99999",
        "a/b",
    ] {
        assert!(!validate::is_registry_name(bad), "{bad}");
    }
}

#[test]
fn type_errors_name_their_key_and_line() {
    let text = "listen: 127.0.0.1:5000\ncache:\n  immutable_tags: []\n  tag_ttl: forever\n";
    let err = Config::from_yaml(text, env(&[])).unwrap_err();
    assert_eq!(err.errors[0].key, "cache.tag_ttl");
    assert_eq!(err.errors[0].line, Some(4));
    assert!(err.to_string().contains("4: cache.tag_ttl: "), "{err}");

    let text =
        "upstreams:\n  docker.io:\n    url: http://127.0.0.1:1\nstorage:\n  max_size: lots\n";
    let err = Config::from_yaml(text, env(&[])).unwrap_err();
    assert_eq!(err.errors[0].key, "storage.max_size", "{err}");

    let text = "cache:\n  tag_tll: 5m\n";
    let err = Config::from_yaml(text, env(&[])).unwrap_err();
    assert_eq!(err.errors[0].key, "cache.tag_tll", "{err}");
    assert!(err.to_string().contains("unknown field `tag_tll`"), "{err}");
}

#[test]
fn env_secrets_that_look_like_numbers_or_booleans_stay_strings() {
    let vars = env(&[
        ("FERRY_UPSTREAMS__DOCKER_IO__USERNAME", "ci"),
        ("FERRY_UPSTREAMS__DOCKER_IO__PASSWORD", "123456"),
        ("FERRY_UPSTREAMS__GHCR_IO__USERNAME", "bot"),
        ("FERRY_UPSTREAMS__GHCR_IO__PASSWORD", "yes"),
        ("FERRY_UPSTREAMS__QUAY_IO__USERNAME", "a"),
        ("FERRY_UPSTREAMS__QUAY_IO__PASSWORD", "p: w"),
        ("FERRY_CACHE__SERVE_STALE", "false"),
    ]);
    let c = Config::from_yaml("", vars).unwrap();
    assert_eq!(
        c.upstreams["docker.io"].password.as_ref().unwrap().expose(),
        "123456"
    );
    assert_eq!(
        c.upstreams["ghcr.io"].password.as_ref().unwrap().expose(),
        "yes"
    );
    assert_eq!(
        c.upstreams["quay.io"].password.as_ref().unwrap().expose(),
        "p: w"
    );
    assert!(!c.cache.serve_stale, "booleans are still read as YAML");
}

#[test]
fn redirect_hosts_are_host_patterns_and_bad_ones_are_explained() {
    let good = "upstreams:\n  docker.io:\n    redirect_hosts: ['production.cloudflare.docker.com', '*.cloudfront.net']\n";
    let c = Config::from_yaml(good, env(&[])).unwrap();
    assert_eq!(c.upstreams["docker.io"].redirect_hosts.len(), 2);
    assert!(
        Config::from_yaml(
            "upstreams:\n  ghcr.io: {}\ndefault_upstream: ghcr.io\n",
            env(&[])
        )
        .unwrap()
        .upstreams["ghcr.io"]
            .redirect_hosts
            .is_empty(),
        "default: any host for blobs"
    );
    let bad = "upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    redirect_hosts:\n      - https://cdn.example.com\n      - '*cloudfront.net'\n";
    let err = Config::from_yaml(bad, env(&[])).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errors.len(), 2, "{text}");
    for e in &err.errors {
        assert_eq!(e.key, "upstreams.docker.io.redirect_hosts");
        assert_eq!(e.line, Some(4), "{text}");
    }
    assert!(
        text.contains("\"https://cdn.example.com\" is a URL, not a host"),
        "{text}"
    );
    assert!(text.contains("write *.cloudfront.net"), "{text}");
}

#[test]
fn source_addresses_must_be_local_ips() {
    let text = "upstreams:\n  docker.io:\n    source_addresses: [127.0.0.2, 127.0.0.3]\n";
    let c = Config::from_yaml(text, env(&[])).unwrap();
    assert_eq!(c.upstreams["docker.io"].source_addresses.len(), 2);
    let bad = "upstreams:\n  docker.io:\n    source_addresses:\n      - 127.0.0.2\n      - eth0\n      - 192.0.2.77\n";
    let e = Config::from_yaml(bad, env(&[])).unwrap_err().to_string();
    assert!(e.contains("\"eth0\" is not an IP address"), "{e}");
    assert!(
        e.contains("\"192.0.2.77\" is not usable on this host"),
        "{e}"
    );
    assert!(e.contains("upstreams.docker.io.source_addresses"), "{e}");
}
