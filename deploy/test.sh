#!/usr/bin/env bash
# Ferry's whole test suite, from a fresh Debian 12 machine: installs the
# Debian packages the tests start (sshd, git, PostgreSQL, MariaDB, an SMTP
# server, cgit behind nginx, Chromium, ...), checks formatting and lints,
# builds, runs every test against those real programs, then builds the fuzz
# targets and runs each for a bounded time. `.ci/run` calls this script.
# Under CI=true as root it also builds the Debian packages, installs them
# and runs a backup and restore from the installed files
# (deploy/package-test.sh: adds a release build, kept in
# /var/cache/ferry-ci/release between CI runs: 21 min cold on two busy
# cores, then the changed crates and about 30 s).
#
#   sudo deploy/test.sh            # everything
#   FERRY_FUZZ_SECONDS=0 deploy/test.sh   # skip the fuzzing runs
#
# Under CI=true a test whose program is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Build dependencies plus every program the tests start (tests/PACKAGES).
packages="gcc pkg-config libssl-dev zlib1g-dev zstd time hyperfine rsync $(grep -v '^#' tests/PACKAGES | tr '\n' ' ')"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "==> installing Debian packages:$missing"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi
# The distribution's sshd/nginx/postgresql services are not used: every
# test starts private instances on 127.0.0.x.
$sudo mkdir -p /run/sshd
deploy/garage.sh  # Garage for the S3 store tests, built once and cached

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build"
cargo build --workspace --bins --locked
echo "==> cargo test"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --doc --locked
else
    cargo test --workspace --locked --no-fail-fast
fi

if [ "${CI:-}" = true ] && [ "$(id -u)" -eq 0 ]; then
    echo "==> Debian packages: build, install, back up and restore (deploy/package-test.sh)"
    # CI clones afresh each time: keep the release build (its dependencies
    # take minutes) outside the clone. cargo rebuilds what changed.
    if [ ! -e target/release ]; then
        mkdir -p /var/cache/ferry-ci/release target
        ln -s /var/cache/ferry-ci/release target/release
    fi
    deploy/package-test.sh
fi

if [ -x fuzz/run.sh ]; then
    echo "==> fuzz targets"
    fuzz/run.sh "${FERRY_FUZZ_SECONDS:-30}"
fi
echo "==> all tests passed"
