//! Real pull clients: skopeo (always available in the test environment) and podman (skipped
//! with a printed reason where it cannot run). Neither may ever reach the internet: every public
//! registry name is mapped to a dead loopback port, credentials come only from the test, and
//! TLS verification is off because every registry in a test is plain HTTP on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::digest::{sha256_digest, sha256_file};
use super::fixtures::{Image, fixtures_root};
use super::process::scrub_env;

/// A loopback port nothing listens on: where public registry names point, so that a client
/// falling back to "the real registry" fails at once instead of leaving the machine.
pub const DEAD_UPSTREAM: &str = "127.0.0.1:9";

/// The public registries of the SPEC (plus common aliases); clients must never reach them.
pub const PUBLIC_REGISTRIES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "gcr.io",
    "ghcr.io",
    "k8s.gcr.io",
    "registry.k8s.io",
    "quay.io",
    "mcr.microsoft.com",
    "nvcr.io",
];

/// The outcome of a client command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
    /// The raw stdout bytes.
    pub stdout_bytes: Vec<u8>,
}

impl CmdOutput {
    fn from_output(out: Output) -> CmdOutput {
        CmdOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout_bytes: out.stdout,
        }
    }
}

/// Runs `cmd`, returning its output whatever the exit status.
pub fn run(mut cmd: Command) -> CmdOutput {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (scripts/install-test-deps.sh installs it)"));
    CmdOutput::from_output(out)
}

/// Writes `content` to `<target>/test-fixtures/clients/<name>` unless it is already there
/// (atomically, so parallel tests never see a half-written file).
fn shared_file(name: &str, content: &str) -> PathBuf {
    let dir = fixtures_root().join("clients");
    std::fs::create_dir_all(&dir).expect("create client config directory");
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
        let tmp = dir.join(format!(
            ".{name}.{}.{:x}",
            std::process::id(),
            super::ports::random_u64()
        ));
        std::fs::write(&tmp, content).expect("write client config");
        std::fs::rename(&tmp, &path).expect("install client config");
    }
    path
}

/// registries.conf text that maps every public registry to [`DEAD_UPSTREAM`], with optional
/// `[[registry.mirror]]` entries: `(prefix, mirror location)` pairs such as
/// `("docker.io", "127.0.0.1:5000")` or `("ghcr.io", "127.0.0.1:5000/ghcr.io")`.
pub fn registries_conf(mirrors: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "# written by ferry's e2e test support: no public registry is reachable from a test\n\
         unqualified-search-registries = [\"docker.io\"]\n\
         short-name-mode = \"permissive\"\n",
    );
    let mut prefixes: Vec<&str> = PUBLIC_REGISTRIES.to_vec();
    for (prefix, _) in mirrors {
        if !prefixes.contains(prefix) {
            prefixes.push(prefix);
        }
    }
    for prefix in prefixes {
        text.push_str(&format!(
            "\n[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{DEAD_UPSTREAM}\"\ninsecure = true\n"
        ));
        for (p, mirror) in mirrors {
            if *p == prefix {
                text.push_str(&format!(
                    "\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n"
                ));
            }
        }
    }
    text
}

/// A `skopeo` command with safe global options: an accept-anything signature policy, the
/// dead-end registries.conf, an empty auth file, and no proxy variables.
pub fn skopeo_command() -> Command {
    let policy = shared_file(
        "policy.json",
        "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n",
    );
    let registries = shared_file("registries.conf", &registries_conf(&[]));
    let auth = shared_file("auth.json", "{\"auths\":{}}\n");
    let mut cmd = Command::new("skopeo");
    scrub_env(&mut cmd, &[]);
    cmd.env("REGISTRY_AUTH_FILE", &auth)
        .arg("--policy")
        .arg(policy)
        .arg("--registries-conf")
        .arg(registries);
    cmd
}

/// `skopeo copy --src-tls-verify=false --dest-tls-verify=false [extra] SRC DST`, returning the
/// output whatever happened.
pub fn try_skopeo_copy(src: &str, dst: &str, extra: &[&str]) -> CmdOutput {
    let mut cmd = skopeo_command();
    cmd.args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(extra)
        .arg(src)
        .arg(dst);
    run(cmd)
}

/// Like [`try_skopeo_copy`], but panics with skopeo's stderr if it fails.
pub fn skopeo_copy(src: &str, dst: &str, extra: &[&str]) -> CmdOutput {
    let out = try_skopeo_copy(src, dst, extra);
    assert!(
        out.success,
        "skopeo copy {extra:?} {src} {dst} failed:\n{}",
        out.stderr
    );
    out
}

/// `skopeo inspect --raw` of a `docker://` reference (or any transport): the manifest's exact
/// bytes. Panics on failure.
pub fn skopeo_inspect_raw(reference: &str, extra: &[&str]) -> Vec<u8> {
    let mut cmd = skopeo_command();
    cmd.args(["inspect", "--raw", "--tls-verify=false"])
        .args(extra)
        .arg(reference);
    let out = run(cmd);
    assert!(
        out.success,
        "skopeo inspect --raw {reference} failed:\n{}",
        out.stderr
    );
    out.stdout_bytes
}

/// The digest of the manifest `reference` resolves to, computed from its raw bytes.
pub fn skopeo_inspect_raw_digest(reference: &str) -> String {
    sha256_digest(&skopeo_inspect_raw(reference, &[]))
}

/// podman with a private, throwaway configuration (vfs storage, its own registries.conf,
/// containers.conf and temp dirs) so parallel tests never share state.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// A podman whose registries.conf sends each `(prefix, location)` to a mirror (see
    /// [`registries_conf`]); `Err(reason)` when podman cannot run on this machine.
    pub fn new(mirrors: &[(&str, &str)]) -> Result<Podman, String> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-podman-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        let write = |name: &str, text: String| -> Result<(), String> {
            std::fs::write(d.join(name), text).map_err(|e| format!("write {name}: {e}"))
        };
        write("registries.conf", registries_conf(mirrors))?;
        write(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                d.join("run").display(),
                d.join("graph").display()
            ),
        )?;
        write(
            "containers.conf",
            format!(
                "[engine]\ntmp_dir = \"{}\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
                d.join("tmp").display()
            ),
        )?;
        write("auth.json", "{\"auths\":{}}\n".to_owned())?;
        let podman = Podman { dir };
        let probe = podman.run(&["info", "--format", "{{.Store.GraphDriverName}}"]);
        if !probe.success {
            return Err(format!(
                "`podman info` failed here: {}",
                probe.stderr.trim()
            ));
        }
        if probe.stdout.trim() != "vfs" {
            return Err(format!(
                "podman did not take the vfs storage config: {}",
                probe.stdout
            ));
        }
        Ok(podman)
    }

    /// The private configuration directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `podman` command with this instance's configuration.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        scrub_env(&mut cmd, &["CONTAINERS_", "REGISTRY_AUTH_FILE"]);
        cmd.env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("TMPDIR", d);
        cmd
    }

    /// Runs podman with `args`, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd)
    }

    /// `podman pull [extra] IMAGE`; panics with podman's stderr on failure.
    pub fn pull(&self, image: &str, extra: &[&str]) -> CmdOutput {
        let mut args = vec!["pull"];
        args.extend_from_slice(extra);
        args.push(image);
        let out = self.run(&args);
        assert!(out.success, "podman pull {image} failed:\n{}", out.stderr);
        out
    }

    /// The repo digest podman recorded for a pulled image.
    pub fn image_digest(&self, image: &str) -> String {
        let out = self.run(&["image", "inspect", "--format", "{{.Digest}}", image]);
        assert!(out.success, "podman image inspect {image}:\n{}", out.stderr);
        out.stdout.trim().to_owned()
    }
}

/// `Some(podman)`, or `None` after printing why podman tests are skipped here.
pub fn podman_or_skip(mirrors: &[(&str, &str)]) -> Option<Podman> {
    match Podman::new(mirrors) {
        Ok(p) => Some(p),
        Err(reason) => {
            eprintln!("SKIP (podman unavailable): {reason}");
            None
        }
    }
}

/// Pulls `reference` back with skopeo (all platforms, digests preserved) into a `dir:` copy and
/// checks every manifest and blob `image` has.
pub fn assert_pulls_back(reference: &str, image: &Image) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().display());
    skopeo_copy(reference, &dest, &["--all", "--preserve-digests"]);
    let top = std::fs::read(out.path().join("manifest.json")).unwrap();
    assert_eq!(
        sha256_digest(&top),
        image.digest,
        "top manifest of {reference}"
    );
    for child in &image.manifests {
        let hex = child.digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(out.path().join(format!("{hex}.manifest.json"))).unwrap();
        assert_eq!(sha256_digest(&bytes), child.digest, "child of {reference}");
    }
    for blob in &image.blobs {
        let path = out.path().join(blob.digest.trim_start_matches("sha256:"));
        assert_eq!(
            sha256_file(&path),
            blob.digest,
            "blob {} of {reference}",
            blob.digest
        );
    }
}
