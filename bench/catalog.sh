#!/usr/bin/env bash
# Issue 14's catalog figure: `ferry-node find` over 1,000,000 generated
# artifact rows in SQLite (the node's own catalog) and in PostgreSQL (a
# shared catalog), side by side, on the same machine in one run. The work
# is the ignored e2e test catalog_bench (it starts a private PostgreSQL
# with the suite's harness).
#
#   bench/catalog.sh
#   CATALOG_BENCH_RUNS=9 bench/catalog.sh
#   FERRY_BIN_DIR=target/release bench/catalog.sh   # an optimised ferry-node
#
# A debug ferry-node carries a debug (-O0) build of SQLite, which makes
# SQLite's side slower than it is in a release build; PostgreSQL is the
# distribution's optimised server either way.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
cargo build --quiet -p ferry-node
exec cargo test --quiet -p ferry-tests --test e2e catalog_bench -- --ignored --nocapture --test-threads 1
