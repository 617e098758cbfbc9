//! `--write DIR`: puts a [`ClientConfig`]'s files under a root directory in their real
//! relative paths (`DIR/etc/docker/daemon.json`, ...), so `--write /` installs them and
//! `--write ./out` stages them for review or for a configuration-management tool.
//!
//! Safety rules, checked for every file before anything is written (all or nothing):
//! - a shared configuration file (`daemon.json`, `buildkitd.toml`, `registries.yaml`,
//!   `.testcontainers.properties`) is merged into an existing one (see
//!   [`crate::merge_existing`]); the previous content is kept as `<file>.ferry-bak`;
//! - a TOML file that exists is replaced only when ferry generated it (it starts with
//!   [`crate::GENERATED_MARKER`]) or it already has the wanted content; any other existing
//!   file is a [`Conflict`] unless [`WriteOptions::force`] is set, and then the previous
//!   content is kept as `<file>.ferry-bak`;
//! - each file is written to a temporary file in the same directory and renamed over the
//!   old one, so a reader never sees half a file; the old file's permissions are kept, and a
//!   symlink is followed rather than replaced.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{ClientConfig, GENERATED_MARKER, GeneratedFile, merge_existing};

/// Options for [`ClientConfig::write`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Replace existing files that ferry did not generate (a backup is kept), and replace a
    /// `daemon.json` that cannot be merged.
    pub force: bool,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteStatus {
    /// The file did not exist.
    Created,
    /// The file existed with other content.
    Updated {
        /// Where the previous content was saved, if it was.
        backup: Option<PathBuf>,
    },
    /// The file already had the wanted content; it was not touched.
    Unchanged,
}

/// One file handled by [`ClientConfig::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The full path (root joined with the file's relative path).
    pub path: PathBuf,
    /// What was done.
    pub status: WriteStatus,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.status {
            WriteStatus::Created => write!(f, "created {p}"),
            WriteStatus::Updated { backup: Some(b) } => {
                write!(f, "updated {p} (previous content in {})", b.display())
            }
            WriteStatus::Updated { backup: None } => write!(f, "updated {p}"),
            WriteStatus::Unchanged => write!(f, "unchanged {p}"),
        }
    }
}

/// An existing file that writing would clobber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The file.
    pub path: PathBuf,
    /// Why it was not replaced.
    pub reason: String,
}

/// Why writing failed. Nothing was written when this is [`WriteError::Conflicts`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Existing files that would be clobbered; nothing was written.
    #[error("nothing written: {}", .0.iter().map(|c| format!("{}: {}", c.path.display(), c.reason)).collect::<Vec<_>>().join("; "))]
    Conflicts(Vec<Conflict>),
    /// A filesystem operation failed (files before this one may have been written).
    #[error("{}: {source}", path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What will be done to one file.
enum Action {
    Create(String),
    Replace { new: String, backup: bool },
    Unchanged,
}

struct Step {
    /// The path reported to the caller.
    path: PathBuf,
    /// The path written (a symlink's target).
    real: PathBuf,
    action: Action,
}

impl ClientConfig {
    /// Writes the files under `root` (e.g. `/` to install them), following the rules in the
    /// module documentation, and returns what happened to each file. Snippets are not
    /// written: they belong in files ferry does not own.
    pub fn write(&self, root: &Path, opts: &WriteOptions) -> Result<Vec<Written>, WriteError> {
        let mut steps = Vec::new();
        let mut conflicts = Vec::new();
        for file in &self.files {
            match plan_file(root, file, opts)? {
                Ok(step) => steps.push(step),
                Err(c) => conflicts.push(c),
            }
        }
        if !conflicts.is_empty() {
            return Err(WriteError::Conflicts(conflicts));
        }
        steps.into_iter().map(execute).collect()
    }
}

fn plan_file(
    root: &Path,
    file: &GeneratedFile,
    opts: &WriteOptions,
) -> Result<Result<Step, Conflict>, WriteError> {
    let path = root.join(&file.path);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Ok(Step {
                real: path.clone(),
                path,
                action: Action::Create(file.contents.clone()),
            }));
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let real = fs::canonicalize(&path).map_err(io_err(&path))?;
    let conflict = |reason: String| Conflict {
        path: path.clone(),
        reason,
    };
    let existing = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) if opts.force => {
            return Ok(Ok(Step {
                path: path.clone(),
                real,
                action: Action::Replace {
                    new: file.contents.clone(),
                    backup: true,
                },
            }));
        }
        Err(_) => {
            return Ok(Err(conflict(
                "it exists and is not UTF-8 text; move it away or use --force (a backup is kept)"
                    .to_owned(),
            )));
        }
    };
    let action = match existing_action(file, &existing, opts) {
        Ok(action) => action,
        Err(reason) => return Ok(Err(conflict(reason))),
    };
    Ok(Ok(Step { path, real, action }))
}

/// What to do with a file that exists as UTF-8 text: merge into it, replace it, leave it, or
/// (`Err`) why not without `--force`.
fn existing_action(
    file: &GeneratedFile,
    existing: &str,
    opts: &WriteOptions,
) -> Result<Action, String> {
    let replace = |backup| Action::Replace {
        new: file.contents.clone(),
        backup,
    };
    if let Some(merged) = merge_existing(file.on_existing, existing, &file.contents) {
        return match merged {
            Ok(merged) if merged == existing => Ok(Action::Unchanged),
            Ok(merged) => Ok(Action::Replace {
                new: merged,
                backup: true,
            }),
            Err(_) if opts.force => Ok(replace(true)),
            Err(why) => Err(format!(
                "cannot merge into it because {why}; fix it or use --force to replace it \
                 (a backup is kept)"
            )),
        };
    }
    if existing == file.contents {
        Ok(Action::Unchanged)
    } else if existing.starts_with(GENERATED_MARKER) {
        Ok(replace(false))
    } else if opts.force {
        Ok(replace(true))
    } else {
        Err(
            "it exists and was not generated by ferry; merge ferry's version (printed \
             on stdout by `ferry client-config`) into it by hand, or use --force to \
             replace it (a backup is kept)"
                .to_owned(),
        )
    }
}

fn execute(step: Step) -> Result<Written, WriteError> {
    let status = match step.action {
        Action::Unchanged => WriteStatus::Unchanged,
        Action::Create(contents) => {
            atomic_write(&step.real, &contents, None)?;
            WriteStatus::Created
        }
        Action::Replace { new, backup } => {
            let perms = fs::metadata(&step.real)
                .map_err(io_err(&step.real))?
                .permissions();
            let backup = if backup {
                let b = sibling(&step.real, ".ferry-bak", false);
                fs::copy(&step.real, &b).map_err(io_err(&b))?;
                Some(b)
            } else {
                None
            };
            atomic_write(&step.real, &new, Some(perms))?;
            WriteStatus::Updated { backup }
        }
    };
    Ok(Written {
        path: step.path,
        status,
    })
}

/// `dir/name<suffix>`, or `dir/.name<suffix>` when `hidden`.
fn sibling(path: &Path, suffix: &str, hidden: bool) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dot = if hidden { "." } else { "" };
    path.with_file_name(format!("{dot}{name}{suffix}"))
}

fn atomic_write(
    path: &Path,
    contents: &str,
    perms: Option<fs::Permissions>,
) -> Result<(), WriteError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = sibling(path, &format!(".ferry-tmp-{}", std::process::id()), true);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        if let Some(p) = perms {
            f.set_permissions(p)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Target, Upstream, containerd, docker, podman};
    use serde_json::{Value, json};

    fn target() -> Target {
        Target::new(
            "http://127.0.0.1:5002",
            [Upstream::new("docker.io"), Upstream::new("ghcr.io")],
            Some("docker.io"),
        )
        .unwrap()
    }

    #[test]
    fn writes_real_relative_paths_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let t = target();
        let mut all = Vec::new();
        for c in [
            docker(&t).unwrap(),
            containerd(&t).unwrap(),
            podman(&t).unwrap(),
        ] {
            all.extend(c.write(dir.path(), &WriteOptions::default()).unwrap());
        }
        let rel: Vec<_> = all
            .iter()
            .map(|w| {
                w.path
                    .strip_prefix(dir.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "etc/docker/daemon.json",
                "etc/containerd/certs.d/docker.io/hosts.toml",
                "etc/containerd/certs.d/ghcr.io/hosts.toml",
                "etc/containers/registries.conf.d/ferry.conf",
            ]
        );
        assert!(all.iter().all(|w| w.status == WriteStatus::Created));
        assert!(all[0].to_string().starts_with("created "));
        // a second run changes nothing
        for c in [
            docker(&t).unwrap(),
            containerd(&t).unwrap(),
            podman(&t).unwrap(),
        ] {
            for w in c.write(dir.path(), &WriteOptions::default()).unwrap() {
                assert_eq!(w.status, WriteStatus::Unchanged, "{w}");
            }
        }
        // no temporary files left behind
        for entry in walk(dir.path()) {
            assert!(
                !entry.to_string_lossy().contains("ferry-tmp"),
                "{}",
                entry.display()
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn daemon_json_is_merged_with_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/docker/daemon.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let original = "{\"log-level\": \"warn\", \"registry-mirrors\": [\"https://old.example\"]}";
        fs::write(&path, original).unwrap();
        let w = docker(&target())
            .unwrap()
            .write(dir.path(), &WriteOptions::default())
            .unwrap();
        let backup = dir.path().join("etc/docker/daemon.json.ferry-bak");
        assert_eq!(
            w[0].status,
            WriteStatus::Updated {
                backup: Some(backup.clone())
            }
        );
        assert_eq!(fs::read_to_string(&backup).unwrap(), original);
        let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({
                "log-level": "warn",
                "registry-mirrors": ["http://127.0.0.1:5002", "https://old.example"],
                "insecure-registries": ["127.0.0.1:5002"],
            })
        );
    }

    #[test]
    fn foreign_files_conflict_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let ghcr = dir.path().join("etc/containerd/certs.d/ghcr.io/hosts.toml");
        fs::create_dir_all(ghcr.parent().unwrap()).unwrap();
        fs::write(&ghcr, "server = \"https://ghcr.io\"\n").unwrap();
        let c = containerd(&target()).unwrap();
        let err = c.write(dir.path(), &WriteOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, WriteError::Conflicts(v) if v.len() == 1),
            "{msg}"
        );
        assert!(
            msg.contains("ghcr.io/hosts.toml") && msg.contains("--force"),
            "{msg}"
        );
        assert!(!dir.path().join("etc/containerd/certs.d/docker.io").exists());

        let w = c.write(dir.path(), &WriteOptions { force: true }).unwrap();
        let g = w.iter().find(|w| w.path == ghcr).unwrap();
        assert!(
            matches!(&g.status, WriteStatus::Updated { backup: Some(_) }),
            "{g}"
        );
        assert!(
            fs::read_to_string(&ghcr)
                .unwrap()
                .starts_with(GENERATED_MARKER)
        );

        // a broken daemon.json is a conflict, not clobbered
        let dj = dir.path().join("etc/docker/daemon.json");
        fs::create_dir_all(dj.parent().unwrap()).unwrap();
        fs::write(&dj, "{ not json").unwrap();
        let e = docker(&target())
            .unwrap()
            .write(dir.path(), &WriteOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        assert_eq!(fs::read_to_string(&dj).unwrap(), "{ not json");
    }

    #[test]
    fn generated_files_are_replaced_without_backup() {
        let dir = tempfile::tempdir().unwrap();
        podman(&target())
            .unwrap()
            .write(dir.path(), &WriteOptions::default())
            .unwrap();
        let mut t = target();
        t.mirror = "https://mirror.example.com".parse().unwrap();
        let w = podman(&t)
            .unwrap()
            .write(dir.path(), &WriteOptions::default())
            .unwrap();
        assert_eq!(w[0].status, WriteStatus::Updated { backup: None });
        assert!(
            fs::read_to_string(&w[0].path)
                .unwrap()
                .contains("mirror.example.com/ghcr.io")
        );
    }

    #[cfg(unix)]
    #[test]
    fn keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-daemon.json");
        fs::write(&real, "{}").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("etc/docker/daemon.json");
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&real, &link).unwrap();
        docker(&target())
            .unwrap()
            .write(dir.path(), &WriteOptions::default())
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            fs::read_to_string(&real)
                .unwrap()
                .contains("registry-mirrors")
        );
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
