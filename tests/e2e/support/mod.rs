//! Support for ferry's end-to-end tests, so a test reads like the user's story: start an
//! upstream, push an image, start ferry, pull through ferry, compare digests.
//!
//! - [`Registry`]: Debian's docker-registry on a private port and directory (anonymous,
//!   htpasswd Basic or token auth), stoppable and restartable, with its access log parsed.
//! - [`Fixture`] / [`push_fixture`]: deterministic test images built by
//!   `tests/fixtures/mkimage.py`, cached per machine, pushed with skopeo.
//! - [`Ferry`]: the real `ferry serve` with a generated config, logs, signals and restarts.
//! - [`skopeo_copy`], [`skopeo_inspect_raw_digest`], [`Podman`]: real pull clients that can
//!   never reach the internet.
//! - [`FaultyUpstream`]: an in-process fake registry with scripted faults (from the test kit,
//!   `crates/testkit`).
//! - [`webdriver::Browser`]: a real headless Chromium driven through chromedriver.
//! - [`http::client`]: a reqwest client without proxies and without following redirects.
//!
//! Processes and servers stop when their handle is dropped; logs are printed when a test
//! panics. Ports are leased across processes, so tests run in parallel safely.
//!
//! A typical test:
//!
//! ```text
//! #[test]
//! fn multi_platform_image_pulls_through_ferry() {
//!     let upstream = Registry::start();
//!     let image = push_fixture(&upstream, Fixture::multi(), "library/hello:1");
//!     let ferry = Ferry::builder().upstream("docker.io", &upstream).start();
//!     let reference = format!("docker://{}/docker.io/library/hello:1", ferry.host());
//!     assert_eq!(skopeo_inspect_raw_digest(&reference), image.digest);
//!     let out = tempfile::tempdir().unwrap();
//!     skopeo_copy(&reference, &format!("dir:{}", out.path().display()), &["--all"]);
//!     assert_eq!(upstream.blob_gets(), image.blobs.len());
//! }
//! ```

// A library for many test modules: each test binary build uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod clients;
pub mod digest;
pub mod faulty;
pub mod ferry;
pub mod fixtures;
pub mod http;
pub mod metrics;
pub mod ports;
pub mod process;
pub mod redis;
pub mod registry;
pub use ferry_testkit::runtime;
pub mod s3;
pub mod token;
pub mod webdriver;

pub use clients::{
    CmdOutput, Podman, assert_pulls_back, podman_or_skip, registries_conf, skopeo_copy,
    skopeo_inspect_raw, skopeo_inspect_raw_digest, try_skopeo_copy,
};
pub use digest::{sha256_digest, sha256_file};
pub use faulty::{
    Fault, FaultyUpstream, Rule, RuleId, ServeFixture, UpstreamAuth, pattern_bytes, pattern_digest,
};
pub use ferry::{Ferry, FerryBuilder, ferry_command};
pub use fixtures::{Fixture, Image, build_fixture, push_fixture, push_image, push_tags};
pub use process::wait_until;
pub use redis::RedisServer;
pub use registry::{Registry, RegistryAuth};
pub use token::TokenAuth;
