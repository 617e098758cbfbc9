//! check-config and the shipped configurations.

use super::*;

fn check_config(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = ferry_command();
    cmd.arg("check-config").arg(&path).envs(env.iter().copied());
    let out = cmd.output().expect("run ferry check-config");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an operator sees from `ferry check-config` before a reload, beyond the exit codes and
/// per-key messages that `core::defaults::check_config_exits_0_or_2_naming_the_key_and_line`
/// covers: every problem of a file at once (one fix-and-retry round, not one per error), and
/// broken YAML located by line; both exit 2.
#[test]
fn check_config_reports_every_error_at_once_and_broken_yaml() {
    let (code, out, err) = check_config("listen: 127.0.0.1:5000\ncache:\n  tag_ttl: 1m\n", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");

    let (code, _, err) = check_config(
        "listen: nonsense\n\
         default_upstream: nowhere.io\n\
         upstreams:\n  docker.io:\n    url: ftp://x\n",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    for (line, key) in [
        (1, "listen"),
        (2, "default_upstream"),
        (5, "upstreams.docker.io.url"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!(":{line}:")) && l.contains(key)),
            "line {line} / {key} in:\n{err}"
        );
    }
    assert!(err.contains("3 errors"), "{err}");

    let (code, _, err) = check_config("upstreams:\n  docker.io: {url: [\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains(":2:"), "{err}");
}

/// The `ferry.yaml` embedded in a Kubernetes manifest (`ferry.yaml: |` block).
fn embedded_config(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut lines = text.lines();
    let start = lines
        .by_ref()
        .find(|l| l.trim_end().ends_with("ferry.yaml: |"))
        .unwrap_or_else(|| panic!("no ferry.yaml block in {}", manifest.display()));
    let outer = start.len() - start.trim_start().len();
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = block
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap();
    block
        .iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configurations ferry ships (systemd sample and container default, the Kubernetes
/// ConfigMaps) pass `ferry check-config`, with the secrets the S3 variant takes from its Secret.
#[test]
fn shipped_configurations_pass_check_config() {
    let root = Path::new(REPO_ROOT);
    let s3_env = [
        ("FERRY_STORAGE__S3__ACCESS_KEY_ID", "AKIAEXAMPLEKEYID"),
        (
            "FERRY_STORAGE__S3__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    ];
    let cases = [
        (
            std::fs::read_to_string(root.join("deploy/systemd/ferry.yaml")).unwrap(),
            &[][..],
        ),
        (
            embedded_config(&root.join("deploy/kubernetes/mirror/base/configmap.yaml")),
            &[][..],
        ),
        (
            embedded_config(&root.join("deploy/kubernetes/mirror/s3/configmap.yaml")),
            &s3_env[..],
        ),
    ];
    for (text, env) in cases {
        let (code, out, err) = check_config(&text, env);
        assert_eq!(code, 0, "{text}\n{out}{err}");
    }
}
