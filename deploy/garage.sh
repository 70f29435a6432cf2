#!/usr/bin/env bash
# Garage (S3-compatible object storage) for the S3 store's tests: Garage is
# not a Debian package, and building it takes about 15 minutes, so CI builds
# it once into a cache directory kept between runs and reuses it after.
# The tests find it there (tests/src/garage/mod.rs), or at $FERRY_GARAGE.
#
#   deploy/garage.sh        # build only if /var/cache/ferry-ci/garage/bin/garage is missing
set -euo pipefail

root="${FERRY_GARAGE_ROOT:-/var/cache/ferry-ci/garage}"
version="2.5.0"
bin="$root/bin/garage"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "cargo:$version"; then
    echo "==> garage $version: cached at $bin"
    exit 0
fi
echo "==> building garage $version into $root (once; about 15 minutes)"
mkdir -p "$root"
cargo install garage --version "$version" --locked --root "$root"
"$bin" --version
