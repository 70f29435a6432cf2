#!/usr/bin/env bash
# Spine benchmarks (issue 2), on loopback with real sshd and git. Prints
# figures and ratios; nothing here asserts a time.
#   bench/spine.sh                 # all three, default sizes
#   bench/spine.sh latency 20
#   bench/spine.sh scan 1000 10
#   bench/spine.sh fetch 50000 10
#   FERRY_BENCH_SCAN_LOG=/tmp/scan.log bench/spine.sh fetch   # keep every measured scan's debug log (with times)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins >&2
bin=target/release/ferry-bench-spine
if [ $# -gt 0 ]; then exec "$bin" "$@"; fi
"$bin" latency 20
"$bin" scan 1000 10
"$bin" fetch 50000 10
