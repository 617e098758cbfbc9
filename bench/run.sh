#!/usr/bin/env bash
# ferry's side-by-side benchmark: ferry vs distribution's registry in proxy mode vs nginx
# (sendfile) vs the upstream registry direct, on this machine. See bench/README.md.
#
#   bench/run.sh [--quick] [--reps N] [--keep] [--workdir DIR]
#
# Environment:
#   FERRY_BIN         use this ferry binary instead of building one (cargo build --release)
#   CARGO_TARGET_DIR  where the release build of ferry goes (default: <repo>/target)
#   BENCH_NICE        niceness of the cargo builds (default 10)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
nice_level=${BENCH_NICE:-10}

if [[ -z "${FERRY_BIN:-}" ]]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    echo "[bench] building ferry (release) into $target" >&2
    (cd "$root" && CARGO_TARGET_DIR=$target nice -n "$nice_level" cargo build --release --bin ferry)
    FERRY_BIN=$target/release/ferry
fi
[[ -x "$FERRY_BIN" ]] || { echo "[bench] FERRY_BIN=$FERRY_BIN is not an executable" >&2; exit 2; }

echo "[bench] building the load client (bench/loadgen)" >&2
(cd "$here/loadgen" && CARGO_TARGET_DIR="$here/loadgen/target" nice -n "$nice_level" cargo build --release --quiet)
load_bin=$here/loadgen/target/release/ferry-bench-load

exec python3 "$here/bench.py" --ferry-bin "$FERRY_BIN" --load-bin "$load_bin" "$@"
