#!/usr/bin/env bash
# ferry on an S3-compatible object store (SeaweedFS on loopback) vs ferry on local disk: cached
# blob throughput with presigned redirects on and off, and cold pull time. See docs/storage.md.
#
#   bench/s3.sh [--quick] [--keep]
#
# Environment:
#   FERRY_BIN         use this ferry binary instead of building one (cargo build --release)
#   CARGO_TARGET_DIR  where the release build of ferry goes (default: <repo>/target)
#   FERRY_WEED_BIN    the SeaweedFS binary (default: the one scripts/install-test-deps.sh installs)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

if [[ -z "${FERRY_BIN:-}" ]]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    echo "[bench-s3] building ferry (release) into $target" >&2
    (cd "$root" && CARGO_TARGET_DIR=$target nice -n "${BENCH_NICE:-10}" cargo build --release --bin ferry)
    FERRY_BIN=$target/release/ferry
fi
[[ -x "$FERRY_BIN" ]] || { echo "[bench-s3] FERRY_BIN=$FERRY_BIN is not an executable" >&2; exit 2; }

exec python3 "$here/s3.py" --ferry-bin "$FERRY_BIN" "$@"
