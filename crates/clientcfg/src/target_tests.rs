//! Tests of [`super`]: endpoints, registry names and plans.

use super::*;
use proptest::prelude::*;

#[test]
fn endpoint_forms() {
    let e = Endpoint::parse("http://127.0.0.1:5002").unwrap();
    assert!(e.is_plain_http());
    assert_eq!(e.authority(), "127.0.0.1:5002");
    assert_eq!(e.origin(), "http://127.0.0.1:5002");
    let e = Endpoint::parse("https://Mirror.Example.com/").unwrap();
    assert!(!e.is_plain_http());
    assert_eq!(e.authority(), "mirror.example.com");
    assert_eq!(e.to_string(), "https://mirror.example.com");
    // default ports are dropped, as clients write them
    assert_eq!(
        Endpoint::parse("https://m.example:443")
            .unwrap()
            .authority(),
        "m.example"
    );
    assert_eq!(
        Endpoint::parse("http://m.example:80").unwrap().authority(),
        "m.example"
    );
    assert_eq!(
        Endpoint::parse("https://m.example:5000")
            .unwrap()
            .authority(),
        "m.example:5000"
    );
    assert_eq!(
        Endpoint::parse("http://[::1]:5000").unwrap().authority(),
        "[::1]:5000"
    );
}

#[test]
fn endpoint_rejections_explain() {
    for (input, words) in [
        ("127.0.0.1:5000", "no scheme"),
        ("mirror.example.com", "no scheme"),
        ("ftp://m.example", "not http or https"),
        ("https://m.example/ferry", "path is not allowed"),
        ("https://m.example/?x=1", "query"),
        ("https://u:p@m.example", "credentials"),
        ("https://", "empty host"),
    ] {
        let err = Endpoint::parse(input).unwrap_err().to_string();
        assert!(err.contains(words), "{input}: {err}");
        assert!(err.contains(input), "{input}: {err}");
    }
}

#[test]
fn registry_names() {
    assert_eq!(normalize_registry_name("Docker.IO").unwrap(), "docker.io");
    assert_eq!(
        normalize_registry_name("reg.local:5000").unwrap(),
        "reg.local:5000"
    );
    assert_eq!(normalize_registry_name("localhost").unwrap(), "localhost");
    for bad in [
        "", "../etc", "a/b", "_default", "a..b", ".a", "a:", "a:0", "a:65536", "a:x", "-a.b",
        "a b", "[::1]",
    ] {
        assert!(normalize_registry_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn plan_entries_and_defaults() {
    let t = Target::new(
        "http://127.0.0.1:5000",
        [
            Upstream::new("docker.io").with_aliases(["index.docker.io"]),
            Upstream::new("registry.k8s.io").with_aliases(["k8s.gcr.io"]),
            Upstream::new("ghcr.io"),
        ],
        Some("docker.io"),
    )
    .unwrap();
    let p = t.plan().unwrap();
    let names: Vec<_> = p.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "docker.io",
            "index.docker.io",
            "registry.k8s.io",
            "k8s.gcr.io",
            "ghcr.io"
        ]
    );
    assert_eq!(
        p.entries[0].fallback.origin(),
        "https://registry-1.docker.io"
    );
    assert_eq!(
        p.entries[1].fallback.origin(),
        "https://registry-1.docker.io"
    );
    assert_eq!(p.entries[3].fallback.origin(), "https://k8s.gcr.io");
    assert_eq!(p.entries[3].upstream, "registry.k8s.io");
    assert!(p.upstream_is_docker_hub("docker.io"));
    assert!(!p.upstream_is_docker_hub("ghcr.io"));
    assert_eq!(p.dedicated_to, None);
}

#[test]
fn plan_errors() {
    let none: [&str; 0] = [];
    assert!(matches!(
        Target::new("http://m:5000", none, None),
        Err(Error::NoUpstreams)
    ));
    let e = Target::new("http://m:5000", ["ghcr.io"], Some("docker.io")).unwrap_err();
    assert!(e.to_string().contains("default_upstream"), "{e}");
    let e = Target::new("http://m:5000", ["ghcr.io"], None)
        .unwrap()
        .with_hosts([("ghcr.m", "quay.io")])
        .unwrap_err();
    assert!(e.to_string().contains("quay.io"), "{e}");
    let e = Target::new(
        "http://m:5000",
        [
            Upstream::new("a.io").with_aliases(["b.io"]),
            Upstream::new("b.io"),
        ],
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Error::DuplicateName { .. }), "{e}");
    let e = Target::new("http://m:5000", ["ghcr.io/x"], None).unwrap_err();
    assert!(matches!(e, Error::InvalidRegistryName { .. }), "{e}");
}

#[test]
fn plan_skips_unnameable_and_self() {
    let t = Target::new(
        "http://127.0.0.1:5000",
        ["internal", "127.0.0.1:5000", "quay.io"],
        None,
    )
    .unwrap();
    let p = t.plan().unwrap();
    assert_eq!(p.entries.len(), 1);
    assert_eq!(p.skipped.len(), 2);
    assert!(
        p.skipped[0].contains("127.0.0.1:5000/internal/<repo>"),
        "{:?}",
        p.skipped
    );
    let e = Target::new("http://m:5000", ["internal"], None).unwrap_err();
    assert!(matches!(e, Error::NothingToConfigure { .. }), "{e}");
}

#[test]
fn plan_dedicated_host() {
    let t = Target::new(
        "https://docker.mirror.example.com",
        [
            Upstream::new("docker.io").with_aliases(["index.docker.io"]),
            Upstream::new("ghcr.io"),
        ],
        Some("ghcr.io"),
    )
    .unwrap()
    .with_hosts([("Docker.Mirror.Example.com", "docker.io")])
    .unwrap();
    let p = t.plan().unwrap();
    assert_eq!(p.dedicated_to.as_deref(), Some("docker.io"));
    let names: Vec<_> = p.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["docker.io", "index.docker.io"]);
    // a host:port key matches too
    let t = Target::new("http://m.example:5000", ["docker.io", "ghcr.io"], None)
        .unwrap()
        .with_hosts([("m.example:5000", "ghcr.io")])
        .unwrap();
    assert_eq!(t.plan().unwrap().dedicated_to.as_deref(), Some("ghcr.io"));
}

#[test]
fn fallback_override() {
    let t = Target::new("http://127.0.0.1:5000", ["docker.io"], None)
        .unwrap()
        .with_fallback_server("docker.io", "http://127.0.0.1:1")
        .unwrap();
    let p = t.plan().unwrap();
    assert_eq!(p.entries[0].fallback.origin(), "http://127.0.0.1:1");
    assert!(!p.entries[0].fallback_is_default);
    let e = Target::new("http://127.0.0.1:5000", ["docker.io"], None)
        .unwrap()
        .with_fallback_server("quay.io", "http://127.0.0.1:1")
        .unwrap()
        .plan()
        .unwrap_err();
    assert!(e.to_string().contains("fallback_servers"), "{e}");
}

#[test]
fn ca_file_needs_https_and_an_absolute_path() {
    let t = Target::new("https://m.example", ["ghcr.io"], None).unwrap();
    let p = t
        .clone()
        .with_ca_file("/etc/ssl/ferry-ca.pem")
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(p.ca_file.as_deref(), Some("/etc/ssl/ferry-ca.pem"));
    let e = t.with_ca_file("ca.pem").unwrap_err().to_string();
    assert!(e.contains("absolute path"), "{e}");
    let e = Target::new("http://m.example:5000", ["ghcr.io"], None)
        .unwrap()
        .with_ca_file("/ca.pem")
        .unwrap_err()
        .to_string();
    assert!(e.contains("plain http://"), "{e}");
}

proptest! {
    #[test]
    fn normalized_names_are_safe_path_components(s in "[a-zA-Z0-9._:/-]{0,40}") {
        if let Ok(n) = normalize_registry_name(&s) {
            prop_assert!(!n.contains('/'));
            prop_assert!(n != "." && n != ".." && !n.starts_with('.'));
            prop_assert!(!n.starts_with('_'));
            prop_assert_eq!(normalize_registry_name(&n).unwrap(), n.clone());
        }
    }

    #[test]
    fn endpoint_parse_never_panics(s in ".{0,80}") {
        let _ = Endpoint::parse(&s);
    }
}
