#!/bin/sh
# ferry's test command (the one the README names): installs the programs the end-to-end tests
# run, then checks formatting, runs every test of the workspace and lints everything.
# Extra arguments go to the test runner, e.g. `scripts/test.sh selftest` or
# `scripts/test.sh --no-fail-fast`.
set -eu
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

cargo fmt --all --check

# Every declared dependency is used (issue 13): cargo-machete reads the sources, no build.
if ! command -v cargo-machete >/dev/null 2>&1; then
    cargo install --locked cargo-machete@0.9.2
fi
cargo machete

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features "$@"
    # nextest does not run doctests
    cargo test --workspace --all-features --doc
else
    cargo test --workspace --all-features "$@"
fi

cargo clippy --workspace --all-targets --all-features -- -D warnings
