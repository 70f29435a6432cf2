#!/usr/bin/env bash
# Issue 11's figures for `ferry agent`: RPO (closed on the client -> present
# in the node's newest snapshot, p50/p90/p99/max) with the default quiet
# (10 s) and max_delay (60 s), over real sshd on loopback; idle CPU; memory
# with 100,000 watched directories. The work is the ignored e2e test
# agent_bench (it uses the e2e harness: node, client, sshd) with release
# builds of ferry and ferry-node.
#
#   bench/agent.sh
#   AGENT_BENCH_FILES=20000 AGENT_BENCH_WRITES=50 AGENT_BENCH_MAX_GAP=20 bench/agent.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
# The agent and the node under test are release builds (what is deployed);
# the harness finds them through FERRY_BIN_DIR.
cargo build --quiet --release --locked -p ferry-client -p ferry-node
export FERRY_BIN_DIR="$REPO/target/release"
exec cargo test --quiet -p ferry-tests --test e2e agent_bench -- --ignored --nocapture --test-threads 1
