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
#              vs rsync -a over ssh (and, for the record, tar mode and
#              rsync followed by `sync -f`: its copy made durable, as a
#              tree pull's is before it publishes);
#   1% changed tree mode vs tar mode vs rsync -a --link-dest (rsnapshot):
#              wall time and bytes newly stored;
#   unchanged  files_hashed of the client's --json record (goal: 0).
#
# Env: TREE_MB (200), TREE_FILES (20000), TREE_CHANGED_PERMILLE (10 = 1%),
# TREE_MARKS=1 (each step's start and end on stderr, CLOCK_MONOTONIC, for
# `perf record -a -k mono` and `perf report --time`),
# TREE_PREPARE_RESCUE=0 (node.toml [tree] prepare_rescue = false: the scan
# builds no rescue layer), TREE_FILES_IN_FLIGHT ([tree] files_in_flight),
# BENCH_DIR (scratch, default /tmp/ferry-tree-bench; needs about 5x
# TREE_MB), BENCH_LOOPFS=1 (root only: BENCH_DIR on a fresh 4 GiB ext4 with
# a journal, loop-mounted for the run and removed after), CARGO_TARGET_DIR.
#
# Why BENCH_LOOPFS: on an ext4 without a journal (this project's build VMs),
# every new inode is checked against `recently_deleted`, and an inode group
# with many inodes freed in the last minutes makes each create scan them:
# 20,000 empty files took 1.7-4.6 s in /tmp there against 0.2 s in a fresh
# directory tree or on an ext4 with a journal (the default of mkfs.ext4,
# where that check is off). Both rsync and Ferry create 20,000 inodes, so
# the tax lands on both, but it swamps what is measured and depends on
# what ran before. The loop device has a cost of its own: every sync
# (tar mode's fsync, the tree pull's syncfs) goes through it to its
# backing file, and there the repeats measured 1.2-2.2 s for tree mode and
# 2.6-3.2 s for tar mode against 0.7-0.9 s and 1.2-2.0 s in /tmp. Use it
# to take the inode allocator out of a first backup's figures, not for
# the repeats.
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
args=("${TREE_MB:-200}" "${TREE_FILES:-20000}" "${TREE_CHANGED_PERMILLE:-10}")
if [ "${BENCH_LOOPFS:-0}" != 1 ]; then
    exec "$CARGO_TARGET_DIR/release/ferry-bench-tree" "${args[@]}"
fi
[ "$(id -u)" = 0 ] || { echo "BENCH_LOOPFS=1 needs root (mount)" >&2; exit 2; }
img=$(mktemp /var/tmp/ferry-tree-bench.XXXXXX.img)
# A short mount point: below a deeper one the client's and node's ssh
# control sockets would not fit a unix socket name (87 bytes with ssh's
# suffix), every connection would make its own handshake, and the first
# backup measured 1.30-1.56x rsync there against 1.06-1.39x below a short
# path (same binaries, one session): not what a deployment sees.
mnt=$(mktemp -d /var/tmp/ftb.XXXXXX)
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; rm -f "$img"; }
trap cleanup EXIT
truncate -s 4G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
export FERRY_TEST_ROOT=$mnt
echo "scratch: a fresh journaled ext4 on $img, mounted at $mnt" >&2
"$CARGO_TARGET_DIR/release/ferry-bench-tree" "${args[@]}"
