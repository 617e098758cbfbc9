//! # ferry-access: access control and fair use
//!
//! Who may pull (anonymous clients, users of an htpasswd file or the config, client networks),
//! what may be pulled (repository allow/deny patterns), and how much (request, byte,
//! concurrency and bandwidth quotas per client IP or per user, with per-user overrides).
//!
//! The server calls it with plain function calls, in this order:
//! 1. [`Access::client_ip`]: the client address (forwarded headers only from trusted proxies);
//! 2. [`Access::check`]: `Ok(Grant)` or a [`Denial`] to answer (401 with a challenge, 403, 429);
//! 3. [`Grant::miss_allowed`] before an upstream fetch, when cache-miss quotas are set;
//! 4. [`Grant::meter`] around the response body: counts bytes, throttles blobs, and frees
//!    the concurrency slot when the body ends;
//! 5. [`Access::token`] / [`Access::token_form`] for `/token` and `/auth/token`;
//! 6. [`Access::usage_sink`]: the request log sends one [`usage::UsageRecord`] per answer
//!    (usage accounting, bytes and error answers for `access.rules` and `access.budgets`);
//! 7. [`Access::admin`], [`Access::usage`], [`Access::bans`], [`Access::lift`] for the admin
//!    API.
//!
//! Counters are GCRA token buckets (see `quota/gcra.rs`), in memory or, with `redis:`, in
//! Redis through one atomic Lua script, so replicas share one quota. Fair-use rules count with
//! the same counters; bans are shared through Redis too (`fairuse/`). `docs/access.md` documents
//! every setting.

mod access;
mod admin;
mod auth;
mod denial;
mod endpoint;
mod error;
mod fairuse;
mod grant;
mod hashed;
mod ip;
mod kv;
mod lists;
mod lists_view;
mod meter;
mod policy;
mod quota;
mod request;
mod token;
pub mod usage;
mod users;

pub use access::{Access, Reload};
pub use admin::ADMIN_CHALLENGE;
pub use denial::{Denial, reason};
pub use error::AccessError;
pub use fairuse::bans::Sanction;
pub use grant::{CacheOutcome, Grant, Identity};
pub use lists_view::RepositoryLists;
pub use meter::{FLUSH_BYTES, FLUSH_EVERY, Metered};
pub use quota::redis::{CALL_TIMEOUT as REDIS_CALL_TIMEOUT, RETRY_AFTER as REDIS_RETRY_AFTER};
pub use request::{RequestInfo, Resource, TargetKind};
pub use token::{Claims, ResourceActions};
