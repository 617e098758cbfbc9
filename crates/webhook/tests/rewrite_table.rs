//! Table tests of the pure rewrite function: image forms people write, and what each becomes.

use ferry_webhook::{Rewrite, Settings, Skip};

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const CONFIG: &str = "\
mirror: mirror.example.com
registries:
  quay.io: quay.mirror.example.com
  gcr.io: m.example.cn/gcr
  localhost:5000: local-mirror.example.com:5443
exclude_registries: ['*.corp.example']
";

fn rewrite_with(config: &str, image: &str) -> Rewrite {
    Settings::from_yaml(config).unwrap().rules.rewrite(image)
}

fn rewritten(config: &str, image: &str) -> String {
    match rewrite_with(config, image) {
        Rewrite::Rewritten(s) => s,
        other => panic!("{image:?}: expected a rewrite, got {other:?}"),
    }
}

#[test]
fn docker_hub_short_names_and_library() {
    for (image, want) in [
        ("nginx", "mirror.example.com/docker.io/library/nginx"),
        (
            "nginx:1.25",
            "mirror.example.com/docker.io/library/nginx:1.25",
        ),
        (
            "library/nginx:1.25",
            "mirror.example.com/docker.io/library/nginx:1.25",
        ),
        (
            "docker.io/nginx",
            "mirror.example.com/docker.io/library/nginx",
        ),
        (
            "docker.io/library/nginx:latest",
            "mirror.example.com/docker.io/library/nginx:latest",
        ),
        (
            "index.docker.io/library/nginx:1",
            "mirror.example.com/docker.io/library/nginx:1",
        ),
        (
            "bitnami/redis:7.2",
            "mirror.example.com/docker.io/bitnami/redis:7.2",
        ),
        ("a/b/c", "mirror.example.com/docker.io/a/b/c"),
    ] {
        assert_eq!(rewritten(CONFIG, image), want, "{image}");
    }
}

#[test]
fn other_registries_tags_and_digests() {
    for (image, want) in [
        (
            format!("ghcr.io/a/b:1@{DIGEST}"),
            format!("mirror.example.com/ghcr.io/a/b:1@{DIGEST}"),
        ),
        (
            format!("ghcr.io/a/b@{DIGEST}"),
            format!("mirror.example.com/ghcr.io/a/b@{DIGEST}"),
        ),
        (
            format!("nginx@{DIGEST}"),
            format!("mirror.example.com/docker.io/library/nginx@{DIGEST}"),
        ),
        (
            "registry.k8s.io/a/b/c/d:v1.2.3".into(),
            "mirror.example.com/registry.k8s.io/a/b/c/d:v1.2.3".into(),
        ),
        (
            "MCR.Microsoft.com/dotnet/runtime:8.0".into(),
            "mirror.example.com/mcr.microsoft.com/dotnet/runtime:8.0".into(),
        ),
        (
            "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04".into(),
            "mirror.example.com/nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04".into(),
        ),
        (
            "localhost/app:dev".into(),
            "mirror.example.com/localhost/app:dev".into(),
        ),
        (
            "my-registry.example.com/team/app:Tag_1.0".into(),
            "mirror.example.com/my-registry.example.com/team/app:Tag_1.0".into(),
        ),
    ] {
        assert_eq!(rewritten(CONFIG, &image), want, "{image}");
    }
}

#[test]
fn overrides_map_to_host_and_optional_prefix() {
    for (image, want) in [
        (
            "quay.io/prometheus/node-exporter:v1.8.0",
            "quay.mirror.example.com/prometheus/node-exporter:v1.8.0",
        ),
        (
            "gcr.io/distroless/static:nonroot",
            "m.example.cn/gcr/distroless/static:nonroot",
        ),
        (
            "localhost:5000/app:1",
            "local-mirror.example.com:5443/app:1",
        ),
    ] {
        assert_eq!(rewritten(CONFIG, image), want, "{image}");
    }
    let hub = "registries: {docker.io: docker.mirror.example.com}";
    assert_eq!(
        rewritten(hub, "nginx"),
        "docker.mirror.example.com/library/nginx"
    );
    assert_eq!(
        rewrite_with(hub, "ghcr.io/a/b"),
        Rewrite::Unchanged(Skip::NoMapping)
    );
}

#[test]
fn mirror_with_port_and_prefix() {
    let c = "mirror: 127.0.0.1:5000/ferry";
    assert_eq!(
        rewritten(c, "nginx:1"),
        "127.0.0.1:5000/ferry/docker.io/library/nginx:1"
    );
    assert_eq!(
        rewritten(c, &format!("quay.io/a/b@{DIGEST}")),
        format!("127.0.0.1:5000/ferry/quay.io/a/b@{DIGEST}")
    );
}

#[test]
fn already_mirrored_images_are_left_alone() {
    for image in [
        "mirror.example.com/docker.io/library/nginx:1.25",
        "MIRROR.example.com/ghcr.io/a/b",
        "mirror.example.com/anything",
        "quay.mirror.example.com/prometheus/node-exporter",
        "m.example.cn/gcr/distroless/static",
        "local-mirror.example.com:5443/app",
    ] {
        assert_eq!(
            rewrite_with(CONFIG, image),
            Rewrite::Unchanged(Skip::AlreadyMirrored),
            "{image}"
        );
    }
}

#[test]
fn registry_selection() {
    assert_eq!(
        rewrite_with(CONFIG, "registry.corp.example/team/app"),
        Rewrite::Unchanged(Skip::NotSelected)
    );
    let only_hub = "mirror: m.example.com\nrewrite_registries: [docker.io]";
    assert_eq!(
        rewrite_with(only_hub, "ghcr.io/a/b"),
        Rewrite::Unchanged(Skip::NotSelected)
    );
    assert_eq!(
        rewritten(only_hub, "index.docker.io/nginx"),
        "m.example.com/docker.io/library/nginx"
    );
    let none = "registries: {}";
    assert_eq!(
        rewrite_with(none, "nginx"),
        Rewrite::Unchanged(Skip::NoMapping)
    );
}

#[test]
fn registries_with_ports_cannot_sit_under_a_mirror_path() {
    for image in [
        "127.0.0.1:5001/test/multi:v1",
        "registry.example.com:8443/a",
        "[::1]:5000/x",
    ] {
        match rewrite_with(CONFIG, image) {
            Rewrite::Unchanged(Skip::Unrepresentable(why)) => {
                // the advice comes first, so the 250-character warning keeps it
                let registry = image.split('/').next().unwrap();
                let advice = format!("map registry {registry} with a `registries` override: ");
                assert!(why.starts_with(&advice), "{why}")
            }
            Rewrite::Invalid(_) if image.starts_with('[') => {}
            other => panic!("{image}: {other:?}"),
        }
    }
}

#[test]
fn garbage_is_invalid_and_untouched() {
    for image in [
        "",
        "   ",
        "NGINX",
        "Nginx:1",
        "UPPER/case:tag",
        "nginx:",
        "nginx:bad tag",
        "nginx@sha256:12",
        "nginx@md5:abc",
        "bad host!/x",
        "ghcr.io/",
        "a//b",
        "-nginx",
        "nginx:-1",
    ] {
        assert!(
            matches!(rewrite_with(CONFIG, image), Rewrite::Invalid(_)),
            "{image:?}"
        );
    }
}
