#!/usr/bin/env bash
# Long fuzz runs of the targets in tests/fuzz.rs (config parser, archive reader).
# CI runs them with 256 cases each; this runs as many as you like, in release mode.
#
#   scripts/fuzz.sh                 # 100 000 cases per target
#   FUZZ_CASES=1000000 scripts/fuzz.sh
#
# Prints each target's result and the wall time. A failure prints the minimal input
# proptest shrank it to; nothing is written into the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${FUZZ_CASES:-100000}"
echo "fuzzing with ${cases} cases per target ($(nproc) cores)"
start=$(date +%s)
FUZZ_CASES="$cases" cargo test --release --locked --test tests fuzz:: -- --test-threads="$(nproc)"
end=$(date +%s)
echo "fuzz run: ${cases} cases per target, $((end - start)) s wall time, no failures"
