//! The on-disk layout of the local-disk backend (object stores use the same keys):
//!
//! ```text
//! <root>/blobs/<algorithm>/<first two hex digits>/<hex>      blob and manifest bytes, by digest
//! <root>/meta/<key>                                          metadata documents (JSON), e.g.
//!     meta/manifests/<algorithm>/<hex>                       media type of a manifest
//!     meta/tags/<upstream>/<repository>/_tags/<tag>          tag -> digest answer + fetch time
//!     meta/links/<upstream>/<repository>/_links/<alg>/<hex>  empty: that repository has the digest
//! <root>/_spool/<id>/<random>.part                           downloads in progress, one directory per
//! <root>/_spool/<id>.lock                                   process (its lock held while it runs;
//!                                                           unlocked ones are removed at start)
//! ```
//!
//! Repository components always begin with a letter or digit, so the `_tags` and `_links`
//! directories can never collide with a repository name, and validated names cannot hold `..`.
//!
//! Content is stored once per digest, whatever upstream or repository it came through; a *link*
//! (`meta/links/...`) records that one repository of one upstream is known to hold a digest, so
//! the content may be served under that name (see [`crate::BlobStore::put_links`]).

use std::path::{Path, PathBuf};

use ferry_oci::Digest;

/// Path of a blob's data file under `root`.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("blobs")
        .join(digest.algorithm().as_str())
        .join(&hex[..2])
        .join(hex)
}

/// Directory of metadata documents.
pub fn meta_dir(root: &Path) -> PathBuf {
    root.join("meta")
}

/// Directory of in-progress downloads.
pub fn spool_dir(root: &Path) -> PathBuf {
    root.join("_spool")
}

/// Metadata key of a manifest's media-type record.
pub fn manifest_key(digest: &Digest) -> String {
    format!("manifests/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Metadata key of a tag answer.
pub fn tag_key(upstream: &str, repository: &str, tag: &str) -> String {
    format!("tags/{upstream}/{repository}/_tags/{tag}")
}

/// Metadata key prefix of all tags of one upstream repository.
pub fn tags_prefix(upstream: &str, repository: &str) -> String {
    format!("tags/{upstream}/{repository}/_tags/")
}

/// Metadata key of a link: `repository` on `upstream` holds `digest`.
pub fn link_key(upstream: &str, repository: &str, digest: &Digest) -> String {
    format!(
        "{}{}/{}",
        links_prefix(upstream, repository),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// Metadata key prefix of all links of one upstream repository.
pub fn links_prefix(upstream: &str, repository: &str) -> String {
    format!("links/{upstream}/{repository}/_links/")
}

/// The digest a link key (below [`links_prefix`]) names.
pub fn link_digest(key: &str) -> Option<Digest> {
    let (_, tail) = key.rsplit_once("/_links/")?;
    let (algorithm, hex) = tail.split_once('/')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}
