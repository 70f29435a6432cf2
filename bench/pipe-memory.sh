#!/usr/bin/env bash
# Peak memory of the pipe module (ferry-prepare) while it streams a large
# command output into the export directory, against the 64 MB target.
#
#   bench/pipe-memory.sh [SIZE]        # SIZE as head -c takes it, default 4G
#
# What is measured: the release build of cmds/prepare/examples/ferry-pipe.rs
# runs the real module (prepare_source with a pipe source) on
# `head -c SIZE /dev/zero`, under `/usr/bin/time -v`. "Maximum resident set
# size" is the peak RSS of ferry-pipe (getrusage via wait4 also folds in its
# waited-for children; `head` itself stays under 2 MB). Page cache used by
# the written file is not RSS and is not counted.
#
# Env: BENCH_DIR (scratch; the artifact is written there and deleted at the
# end; needs SIZE of free disk), CARGO_TARGET_DIR (where the example is
# built), LIMIT_MB (default 64).
set -euo pipefail

SIZE=${1:-4G}
LIMIT_MB=${LIMIT_MB:-64}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-pipe-bench}

if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y time >/dev/null
    else
        echo "missing /usr/bin/time: apt-get install -y time" >&2
        exit 1
    fi
fi

echo "building ferry-pipe (release)..." >&2
cargo build --quiet --release -p ferry-prepare --example ferry-pipe --manifest-path "$REPO/Cargo.toml"
FERRY_PIPE=$CARGO_TARGET_DIR/release/examples/ferry-pipe

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
trap 'rm -rf "$BENCH_DIR"' EXIT
EXPORT=$BENCH_DIR/export

echo "streaming head -c $SIZE /dev/zero through the pipe module..." >&2
/usr/bin/time -v -o "$BENCH_DIR/time.txt" "$FERRY_PIPE" "$EXPORT" zeros head -c "$SIZE" /dev/zero >"$BENCH_DIR/request.txt"

REQUEST=$(cat "$BENCH_DIR/request.txt")
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$BENCH_DIR/time.txt")
WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$BENCH_DIR/time.txt")
BYTES=$(sed -n 's/.* size=\([0-9]*\) .*/\1/p' <<<"$REQUEST")

echo "request:  $REQUEST"
echo "streamed: $BYTES bytes in $WALL (wall)"
awk -v kb="$RSS_KB" -v lim="$LIMIT_MB" -v bytes="$BYTES" 'BEGIN {
    mb = kb / 1024
    printf "peak RSS: %.1f MB (%d KB) for %.2f GiB streamed; target < %d MB: %s\n",
        mb, kb, bytes / 1073741824, lim, (mb < lim ? "OK" : "OVER")
    exit (mb < lim ? 0 : 1)
}'
