#!/usr/bin/env bash
# SIGKILL torture: `ferry send`, the node's queue hook (`ferry-node hook
# post-update`) and `ferry-node scan` are killed at random instants (the
# process alone, or its whole process tree) over TRIALS trials with a mix of
# dummy, git and sftp (fs and pipe source) requests; after each trial normal
# runs recover and the invariants are checked (every request F or E exactly
# once on both sides, catalog and `ferry-node verify` clean, no temporary or
# lock files left, `git fsck --strict` on every mirror and queue repo).
# Prints the counts; exits 1 on any violation. Real sshd and git on
# loopback; run as root or as a user that can run sshd.
#
#   bench/torture.sh                 # 30 trials (about a minute)
#   bench/torture.sh 500             # by hand: the long run
#   bench/torture.sh 500 --seed 42   # repeat a run (the seed is printed)
#   bench/torture.sh 100 --quiet --check-every 25 --pipe-bytes 4000000
#
# The e2e test `ops::torture_bounded` runs the same code with 24 trials.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- 30; fi
cargo build --release --workspace --bins >&2
exec target/release/ferry-torture "$@"
