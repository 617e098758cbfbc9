//! ferry's end-to-end tests: the real `ferry` binary against real upstream registries and real
//! clients on 127.0.0.1. One test binary (to keep link time down); each `mod` below is a group
//! of tests, and `support` is the shared toolkit (see `support/mod.rs`).
//!
//! The programs these tests run are installed by `scripts/install-test-deps.sh`.

mod support;

mod access;
mod archive;
mod console;
mod copy;
mod copy_local;
mod core;
mod edge;
mod egress;
mod fairuse;
mod freshness;
mod ops;
mod referrers;
mod s3;
mod selftest;
mod sync;
