//! # ferry-oci: the vocabulary of the OCI distribution API, with no I/O
//!
//! Everything here is a pure function or a validated value type, parsed once at the edge
//! and passed around typed afterwards:
//!
//! - [`digest`]: [`Digest`] (`sha256:<hex>`) and the streaming [`DigestVerifier`];
//! - [`name`]: [`RepoName`], a repository path checked against the OCI grammar;
//! - [`reference`]: [`Reference`], a tag or a digest, as in `/manifests/<reference>`;
//! - [`route`]: parses the path after `/v2/` from the right into a [`route::Route`];
//! - [`image_ref`]: a full image reference such as `ghcr.io/org/app:1.0@sha256:...`;
//! - [`range`]: the `Range: bytes=a-b` header of blob requests;
//! - [`manifest`]: media types and the child descriptors of manifests and indexes;
//! - [`errcode`]: OCI error codes, their HTTP status and the JSON error envelope.
//!
//! The parsers are property-tested here and fuzzed under `fuzz/`.

pub mod digest;
pub mod errcode;
pub mod image_ref;
pub mod manifest;
pub mod name;
pub mod range;
pub mod reference;
pub mod route;

pub use digest::{Digest, DigestError, DigestVerifier};
pub use errcode::{ErrorCode, OciError};
pub use image_ref::{ImageRef, ImageRefError};
pub use name::{NameError, RepoName};
pub use reference::{Reference, Tag};
