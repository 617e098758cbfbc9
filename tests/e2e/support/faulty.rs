//! The fake registry with scripted faults lives in the test kit (`ferry_testkit::registry`,
//! shared with the engine's and the upstream client's unit tests); this adds what only the e2e
//! tests have: serving a built fixture.

pub use ferry_testkit::registry::*;

use super::fixtures::Image;

/// Serving the e2e fixtures from a [`FaultyUpstream`].
pub trait ServeFixture {
    /// Serves a built fixture as `repo:tag`: its manifests (exact bytes) and its blobs (from the
    /// fixture's files).
    fn add_fixture(&self, image: &Image, repo: &str, tag: &str);
}

impl ServeFixture for FaultyUpstream {
    fn add_fixture(&self, image: &Image, repo: &str, tag: &str) {
        for blob in &image.blobs {
            self.add_file_blob(&blob.digest, &image.blob_path(&blob.digest));
        }
        for child in &image.manifests {
            self.add_manifest(
                repo,
                None,
                &child.media_type,
                image.manifest_bytes(&child.digest),
            );
        }
        self.add_manifest(
            repo,
            Some(tag),
            &image.media_type,
            image.manifest_bytes(&image.digest),
        );
    }
}
