//! # ferry-sync: pre-sync of image lists into ferry's cache, and copies between registries
//!
//! Two halves, as zot's sync taught: *what* to transfer and *how* to transfer it.
//!
//! What:
//! - [`list`]: the sync list format (one image per line, tag globs, platform filters);
//! - [`plan`]: lines -> images, resolving registries to configured upstreams and expanding tag
//!   patterns against the tag list.
//!
//! How:
//! - [`walk`]: one image, generically: manifests (index children filtered by platform), every
//!   blob with bounded parallelism and [`retry`], then manifests published children first,
//!   then the image's [`referrers`] (signatures, SBOMs);
//! - [`cache`]: the [`walk::Transfer`] into the cache, through the same [`ferry_mirror::Mirror`]
//!   that serves pulls (so sync and on-demand pulls are one code path);
//! - [`copy`]: the [`walk::Transfer`] from one registry to another (`ferry copy`), over
//!   [`remote`] clients with [`creds`] from flags or the Docker config file.
//!
//! Offline: [`archive`] (`ferry export` / `ferry import`: OCI-layout and docker-save tars).
//!
//! Running: [`run::sync`] (one run over a list), [`schedule`] (the periodic run inside
//! `ferry serve`). Progress goes to a [`progress::Reporter`]; the CLI draws it, this crate has
//! no display dependency. [`summary`] is the end-of-run table; [`error`] names failures.

pub mod archive;
pub mod cache;
pub mod copy;
pub mod creds;
pub mod error;
pub mod list;
pub mod plan;
pub mod progress;
pub mod referrers;
pub mod remote;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod summary;
pub mod walk;

pub use error::SyncError;
pub use list::{ListEntry, ListError, parse_list};
pub use progress::{BlobOutcome, Event, Reporter};
pub use retry::RetryPolicy;
pub use run::{SyncOptions, sync};
pub use summary::{ImageResult, ImageStats, Summary};
