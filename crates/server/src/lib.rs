//! # ferry-server: the HTTP face of the mirror
//!
//! The router sends `/v2/...` to [`registry::handle`], which parses the path, routes it to an
//! upstream repository and calls [`ferry_mirror::Mirror`]; failures become OCI errors in one
//! place ([`error`]). Around it: `/healthz` (alive), `/readyz` (storage writable),
//! `/metrics` (Prometheus text), one log line per request ([`observe`]), the admin API
//! (`/admin/v1/...`, [`admin`] and [`console::api`]), the web console (`/ui/...`,
//! [`console`]) and the accept loop with graceful shutdown ([`listen`]). [`App`] (`app.rs`)
//! is what the handlers share; [`router()`] (`router.rs`) wires the routes.

pub mod admin;
mod app;
pub mod conn_limits;
pub mod console;
pub mod error;
pub mod listen;
mod miss_quota;
pub mod observe;
pub mod registry;
pub mod respond;
mod router;
pub mod sendfile;
pub mod timed_io;
pub mod tls;
pub mod token;

pub(crate) use app::request_host;
pub use app::{App, peer_ip};
pub use router::{MAX_HEADER_COUNT, router};
