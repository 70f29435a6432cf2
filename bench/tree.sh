#!/usr/bin/env bash
# Snapshot trees against tar mode and rsync, side by side in one run
# (issue 10, "Numbers"): one node and one client on loopback, each with its
# own real sshd (the e2e harness's fleet); rsync runs over ssh to the same
# client sshd the node pulls from, with the same cipher. Prints wall times,
# newly stored bytes (du, hard-linked inodes counted once), files hashed,
# and the ratios against the issue's goals. Asserts nothing.
#
#   bench/tree.sh                                  # 200 MB in 20,000 files, 1% changed
#   TREE_MB=20 TREE_FILES=2000 bench/tree.sh       # a quick run
#
# Measured (see tests/src/bin/ferry-bench-tree.rs):
#   first      tree mode (ferry backup --send until the node has published)
#              vs rsync -a over ssh (and tar mode, for the record);
#   1% changed tree mode vs tar mode vs rsync -a --link-dest (rsnapshot):
#              wall time and bytes newly stored;
#   unchanged  files_hashed of the client's --json record (goal: 0).
#
# Env: TREE_MB (200), TREE_FILES (20000), TREE_CHANGED_PERMILLE (10 = 1%),
# TREE_MARKS=1 (each step's start and end on stderr, CLOCK_MONOTONIC, for
# `perf record -a -k mono` and `perf report --time`),
# TREE_PREPARE_RESCUE=0 (node.toml [tree] prepare_rescue = false: the scan
# builds no rescue layer), TREE_FILES_IN_FLIGHT ([tree] files_in_flight), BENCH_DIR (scratch, default /tmp/ferry-tree-bench; needs about 5x
# TREE_MB), CARGO_TARGET_DIR.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
for tool in /usr/sbin/sshd ssh ssh-keygen git rsync du; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
echo "building ferry, ferry-node and ferry-bench-tree (release)..." >&2
cargo build --quiet --release -p ferry-client -p ferry-node -p ferry-tests --bin ferry --bin ferry-node \
    --bin ferry-bench-tree --manifest-path "$REPO/Cargo.toml"
export FERRY_TEST_ROOT=${BENCH_DIR:-/tmp/ferry-tree-bench}
export FERRY_BIN_DIR=$CARGO_TARGET_DIR/release
exec "$CARGO_TARGET_DIR/release/ferry-bench-tree" "${TREE_MB:-200}" "${TREE_FILES:-20000}" "${TREE_CHANGED_PERMILLE:-10}"
