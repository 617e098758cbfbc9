//! Test images: built by `tests/fixtures/mkimage.py` (deterministic, so the same digests on
//! every machine), cached once per machine under `<target>/test-fixtures/`, and pushed to a
//! registry with skopeo. A pushed fixture comes back as an [`Image`]: its manifest digest, the
//! child manifests of an index and every blob, so tests can request any of them directly.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::clients::skopeo_copy;
use super::digest::{digest_hex, sha256_file};
use super::registry::Registry;

/// The image builder script.
pub const MKIMAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkimage.py");

/// Which image to build. Start from a kind, then optionally make it distinct with a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    kind: &'static str,
    mib: Option<u32>,
    seed: Option<String>,
    layers: u32,
}

impl Fixture {
    fn kind(kind: &'static str) -> Fixture {
        Fixture {
            kind,
            mib: None,
            seed: None,
            layers: 1,
        }
    }

    /// One small linux/amd64 OCI image.
    pub fn single() -> Fixture {
        Fixture::kind("single")
    }

    /// An OCI index over linux/amd64 and linux/arm64/v8 images.
    pub fn multi() -> Fixture {
        Fixture::kind("multi")
    }

    /// A Docker manifest list over linux/amd64 and linux/arm64/v8 Docker schema 2 manifests.
    pub fn docker() -> Fixture {
        Fixture::kind("docker")
    }

    /// One linux/amd64 Docker schema 2 manifest.
    pub fn docker_single() -> Fixture {
        Fixture::kind("docker-single")
    }

    /// One linux/amd64 image with a single uncompressed layer of `mib` MiB of incompressible
    /// pseudo-random bytes.
    pub fn big(mib: u32) -> Fixture {
        Fixture {
            mib: Some(mib),
            ..Fixture::kind("big")
        }
    }

    /// The same shape with different content (and so different digests) per seed.
    pub fn seed(mut self, seed: &str) -> Fixture {
        self.seed = Some(seed.to_owned());
        self
    }

    /// `n` small layers per image instead of one (not for `big`).
    pub fn layers(mut self, n: u32) -> Fixture {
        assert!(self.kind != "big", "big images have exactly one layer");
        assert!(n >= 1, "an image needs a layer");
        self.layers = n;
        self
    }

    /// mkimage.py arguments after KIND OUTDIR.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(mib) = self.mib {
            args.push(mib.to_string());
        }
        if let Some(seed) = &self.seed {
            args.push("--seed".into());
            args.push(seed.clone());
        }
        if self.layers != 1 {
            args.push("--layers".into());
            args.push(self.layers.to_string());
        }
        args
    }

    /// A file-name-safe cache key that changes whenever the parameters or the script do.
    fn cache_key(&self) -> String {
        let script = std::fs::read(MKIMAGE).unwrap_or_else(|e| panic!("read {MKIMAGE}: {e}"));
        let params = format!(
            "{}|{:?}|{:?}|{}",
            self.kind, self.mib, self.seed, self.layers
        );
        let hash = super::digest::sha256_digest(&[script.as_slice(), params.as_bytes()].concat());
        let readable: String = format!(
            "{}{}-{}",
            self.kind,
            self.mib.map(|m| format!("-{m}m")).unwrap_or_default(),
            self.seed.as_deref().unwrap_or("")
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
        format!("{readable}-{}", &digest_hex(&hash)[..16])
    }
}

/// Platform of a child manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8`.
    pub variant: Option<String>,
}

/// A content descriptor from the fixture summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Set for the child manifests of an index.
    pub platform: Option<Platform>,
}

/// A built fixture: a local skopeo source plus what it contains.
#[derive(Debug, Clone)]
pub struct Image {
    /// The layout directory (shared cache; do not modify).
    pub dir: PathBuf,
    /// `oci` (OCI image layout) or `dir` (skopeo directory, Docker media types).
    pub transport: String,
    /// Digest of the top manifest (or index / manifest list).
    pub digest: String,
    /// Media type of the top manifest.
    pub media_type: String,
    /// Size of the top manifest in bytes.
    pub size: u64,
    /// The child manifests of an index or list (empty for a single manifest).
    pub manifests: Vec<Descriptor>,
    /// Every blob (configs and layers), sorted by digest.
    pub blobs: Vec<Descriptor>,
}

impl Image {
    /// The skopeo source reference (`oci:DIR:latest` or `dir:DIR`).
    pub fn skopeo_source(&self) -> String {
        match self.transport.as_str() {
            "oci" => format!("oci:{}:latest", self.dir.display()),
            _ => format!("dir:{}", self.dir.display()),
        }
    }

    /// Digests of every blob.
    pub fn blob_digests(&self) -> Vec<String> {
        self.blobs.iter().map(|b| b.digest.clone()).collect()
    }

    /// The largest blob (the layer of a `big` image).
    pub fn largest_blob(&self) -> &Descriptor {
        self.blobs
            .iter()
            .max_by_key(|b| b.size)
            .expect("an image has blobs")
    }

    /// The local file holding a blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest_hex(digest);
        match self.transport.as_str() {
            "oci" => self.dir.join("blobs/sha256").join(hex),
            _ => self.dir.join(hex),
        }
    }

    /// A blob's bytes.
    pub fn blob_bytes(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The exact bytes of a manifest of this image (the top one or a child), by digest.
    pub fn manifest_bytes(&self, digest: &str) -> Vec<u8> {
        let hex = digest_hex(digest);
        let path = match self.transport.as_str() {
            "oci" => self.dir.join("blobs/sha256").join(hex),
            _ if digest == self.digest => self.dir.join("manifest.json"),
            _ => self.dir.join(format!("{hex}.manifest.json")),
        };
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The child manifest for an architecture (`amd64`, `arm64`).
    pub fn manifest_for(&self, architecture: &str) -> &Descriptor {
        self.manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == architecture)
            })
            .unwrap_or_else(|| panic!("no {architecture} manifest in {}", self.digest))
    }
}

fn descriptor(v: &serde_json::Value) -> Descriptor {
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("fixture.json: {k}"))
            .to_owned()
    };
    Descriptor {
        digest: s("digest"),
        media_type: s("mediaType"),
        size: v["size"].as_u64().expect("fixture.json: size"),
        platform: v.get("platform").map(|p| Platform {
            os: p["os"].as_str().unwrap_or_default().to_owned(),
            architecture: p["architecture"].as_str().unwrap_or_default().to_owned(),
            variant: p["variant"].as_str().map(str::to_owned),
        }),
    }
}

fn load_image(dir: &Path) -> Image {
    let path = dir.join("fixture.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&text).expect("fixture.json is JSON");
    let list = |k: &str| -> Vec<Descriptor> {
        v[k].as_array()
            .map(|a| a.iter().map(descriptor).collect())
            .unwrap_or_default()
    };
    Image {
        dir: dir.to_owned(),
        transport: v["transport"].as_str().unwrap_or("oci").to_owned(),
        digest: v["digest"].as_str().expect("digest").to_owned(),
        media_type: v["mediaType"].as_str().expect("mediaType").to_owned(),
        size: v["size"].as_u64().expect("size"),
        manifests: list("manifests"),
        blobs: list("blobs"),
    }
}

/// `<target>/test-fixtures` (the target directory is the parent of `CARGO_TARGET_TMPDIR`).
pub fn fixtures_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = tmp.parent().unwrap_or(tmp).join("test-fixtures");
    std::fs::create_dir_all(&root).expect("create fixture cache directory");
    root
}

/// Builds `fixture` (or finds it in the cache) and returns its description. Safe to call from
/// many threads and processes at once: a file lock per fixture serializes the builders.
pub fn build_fixture(fixture: &Fixture) -> Image {
    let root = fixtures_root();
    let key = fixture.cache_key();
    let dir = root.join(&key);
    if dir.join("fixture.json").exists() {
        return load_image(&dir);
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!(".{key}.lock")))
        .expect("open fixture lock");
    lock.lock().expect("lock fixture");
    if !dir.join("fixture.json").exists() {
        let tmp = root.join(format!(".{key}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new("python3")
            .arg(MKIMAGE)
            .arg(fixture.kind)
            .arg(&tmp)
            .args(fixture.args())
            .output()
            .unwrap_or_else(|e| panic!("run python3 {MKIMAGE}: {e}"));
        assert!(
            out.status.success(),
            "mkimage.py {} failed: {}",
            fixture.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &dir).expect("move built fixture into the cache");
    }
    lock.unlock().expect("unlock fixture");
    load_image(&dir)
}

/// Builds `fixture` and pushes it, all platforms, digests preserved, to `registry` as
/// `reference` (`repo:tag`), with the registry's credentials when it has any.
pub fn push_fixture(registry: &Registry, fixture: Fixture, reference: &str) -> Image {
    let image = build_fixture(&fixture);
    push_image(registry, &image, reference);
    image
}

/// Pushes `fixture` to `repo` under every tag in `tags` (one skopeo push, then cheap manifest
/// PUTs), for tag-listing and many-tags tests.
pub fn push_tags(registry: &Registry, fixture: Fixture, repo: &str, tags: &[&str]) -> Image {
    let (first, rest) = tags.split_first().expect("at least one tag");
    let image = push_fixture(registry, fixture, &format!("{repo}:{first}"));
    for tag in rest {
        registry.tag(repo, first, tag);
    }
    image
}

/// Pushes an already built image to `registry` as `reference` (`repo:tag`).
pub fn push_image(registry: &Registry, image: &Image, reference: &str) {
    let mut extra = vec!["--all".to_owned(), "--preserve-digests".to_owned()];
    if let Some((user, password)) = registry.credentials() {
        extra.push("--dest-creds".into());
        extra.push(format!("{user}:{password}"));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    skopeo_copy(
        &image.skopeo_source(),
        &format!("docker://{}/{reference}", registry.host()),
        &extra,
    );
}

/// Checks that every blob file of the image still hashes to its name (cache corruption guard,
/// used by the self-tests).
pub fn verify_image_files(image: &Image) {
    for blob in &image.blobs {
        assert_eq!(sha256_file(&image.blob_path(&blob.digest)), blob.digest);
    }
}
