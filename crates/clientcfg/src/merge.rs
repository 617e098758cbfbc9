//! Merging ferry's settings into a configuration file the user already has, for the clients
//! whose configuration is one shared file rather than a drop-in (Docker's `daemon.json`,
//! `buildkitd.toml`, k3s/RKE2 `registries.yaml`, `~/.testcontainers.properties`).
//!
//! Every merge keeps the user's other settings, puts ferry first where a client tries a list
//! in order, and is idempotent: when the existing file already holds ferry's settings the
//! existing text is returned unchanged (so `--write` reports it as unchanged and keeps its
//! comments and layout).

use crate::{OnExisting, merge_buildkitd_toml, merge_daemon_json, merge_properties};

/// Merges `generated` into `existing` the way `kind` says; `None` for kinds that do not merge
/// ([`OnExisting::ReplaceIfGenerated`]). The error explains why the existing text cannot be
/// merged (it is not valid for the format, or a ferry key has an unexpected type).
pub fn merge_existing(
    kind: OnExisting,
    existing: &str,
    generated: &str,
) -> Option<Result<String, String>> {
    Some(match kind {
        OnExisting::MergeDaemonJson => merge_daemon_json(existing, generated),
        OnExisting::MergeBuildkitdToml => merge_buildkitd_toml(existing, generated),
        OnExisting::MergeRegistriesYaml => crate::merge_registries_yaml(existing, generated),
        OnExisting::MergeProperties => merge_properties(existing, generated),
        OnExisting::ReplaceIfGenerated => return None,
    })
}

/// Appends the items of `theirs` that are not in `ours` (compared by `same`) to `ours`.
pub(crate) fn ours_first<T: Clone>(
    ours: &[T],
    theirs: &[T],
    same: impl Fn(&T, &T) -> bool,
) -> Vec<T> {
    let mut out = ours.to_vec();
    for t in theirs {
        if !out.iter().any(|o| same(o, t)) {
            out.push(t.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_first_keeps_order_and_drops_duplicates() {
        let merged = ours_first(&["a", "b"], &["c", "a", "d"], |x, y| x == y);
        assert_eq!(merged, ["a", "b", "c", "d"]);
    }

    /// `--write` merges every shared file into what is there, keeps a backup, and a second
    /// run changes nothing (the merged text is kept as is).
    #[test]
    fn write_merges_shared_files_and_is_idempotent() {
        use crate::{Target, WriteOptions, WriteStatus, buildkit, k3s, testcontainers};
        let dir = tempfile::tempdir().unwrap();
        let t = Target::new(
            "http://127.0.0.1:5002",
            ["docker.io", "ghcr.io"],
            Some("docker.io"),
        )
        .unwrap();
        let existing = [
            ("etc/buildkit/buildkitd.toml", "# mine\ndebug = true\n"),
            (
                "etc/rancher/k3s/registries.yaml",
                "configs:\n  r.local:\n    auth: {username: u}\n",
            ),
            (
                ".testcontainers.properties",
                "testcontainers.reuse.enable=true\n",
            ),
        ];
        for (path, text) in existing {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let opts = WriteOptions::default();
        for c in [
            buildkit(&t).unwrap(),
            k3s(&t).unwrap(),
            testcontainers(&t).unwrap(),
        ] {
            let w = c.write(dir.path(), &opts).unwrap();
            assert!(
                matches!(w[0].status, WriteStatus::Updated { backup: Some(_) }),
                "{}",
                w[0]
            );
            let again = c.write(dir.path(), &opts).unwrap();
            assert_eq!(again[0].status, WriteStatus::Unchanged, "{}", again[0]);
        }
        let bk = std::fs::read_to_string(dir.path().join(existing[0].0)).unwrap();
        assert!(
            bk.contains("debug = true") && bk.contains("127.0.0.1:5002"),
            "{bk}"
        );
        let k = std::fs::read_to_string(dir.path().join(existing[1].0)).unwrap();
        assert!(
            k.contains("username: u") && k.contains("http://127.0.0.1:5002"),
            "{k}"
        );
        let tc = std::fs::read_to_string(dir.path().join(existing[2].0)).unwrap();
        assert_eq!(
            tc,
            "testcontainers.reuse.enable=true\nhub.image.name.prefix=127.0.0.1:5002/docker.io/\n"
        );
    }

    #[test]
    fn replace_kinds_do_not_merge() {
        assert!(merge_existing(OnExisting::ReplaceIfGenerated, "", "").is_none());
    }
}
