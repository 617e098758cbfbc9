//! # ferry-testkit: what ferry's tests share (dev-only, never in the binary)
//!
//! - [`registry`]: [`registry::FaultyUpstream`], an in-process fake registry for the faults a
//!   real registry cannot produce on demand (cut connections, wrong bytes, delays, throttling,
//!   stalls, 429/5xx, redirects to a "CDN", Basic and Bearer auth, Docker Hub's pull limit,
//!   content held by some repositories only). The engine's unit tests (`crates/mirror`), the
//!   upstream client's (`crates/upstream`) and the end-to-end tests (`tests/e2e`) use it.
//! - [`s3`]: a real S3-compatible server (SeaweedFS) on 127.0.0.1 for the object store's
//!   tests and the e2e tests.
//! - [`runtime`]: a private tokio runtime that in-process servers run on, so they answer
//!   whether the test is sync or async.
//! - [`wire`]: form-encoded queries, `Basic` credentials, `sha256:` digests.
//!
//! Every crate lists it under `[dev-dependencies]` only: `cargo tree -e normal -p ferry` does
//! not show it.

pub mod registry;
pub mod runtime;
pub mod s3;
pub mod wire;
