#!/usr/bin/env bash
# Builds the Debian packages `ferry-node` (node) and `ferry` (client) into
# target/debian/ with cargo-deb ([package.metadata.deb] in server/ and
# client/Cargo.toml; maintainer scripts in deploy/debian/).
#
#   deploy/package.sh        # release build, then both .debs
#
# cargo-deb is installed once into a cache outside the clone
# ($FERRY_CI_CACHE, default /var/cache/ferry-ci) and reused from there.
# Before packaging, target/package/ is staged: the systemd units and example
# files of deploy/ with the binaries' paths rewritten to /usr/bin (the
# packages install there; deploy/ documents /usr/local/bin for copied
# binaries), and the man pages and bash/zsh/fish completions that
# `ferry-gen` writes from the clap definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -z "${CARGO_TARGET_DIR:-}" ] || [ "$CARGO_TARGET_DIR" = target ] || [ "$CARGO_TARGET_DIR" = "$(pwd)/target" ] \
    || { echo "package.sh: the packages' assets are read from ./target; unset CARGO_TARGET_DIR" >&2; exit 2; }

cache=${FERRY_CI_CACHE:-/var/cache/ferry-ci}
cargo_deb="$cache/cargo/bin/cargo-deb"
if [ ! -x "$cargo_deb" ]; then
    echo "==> installing cargo-deb into $cache/cargo"
    mkdir -p "$cache"
    cargo install cargo-deb --locked --root "$cache/cargo"
fi

echo "==> cargo build --release (ferry, ferry-node, ferry-gen)"
cargo build --release --locked -p ferry-client -p ferry-node -p ferry-gen

echo "==> staging target/package"
stage=target/package
rm -rf "$stage"
mkdir -p "$stage"
target/release/ferry-gen "$stage"
# Only the ferry binaries move; other /usr/local/bin examples stay.
to_usr_bin() { # source destination
    mkdir -p "$(dirname "$2")"
    sed 's#/usr/local/bin/ferry#/usr/bin/ferry#g' "$1" > "$2"
}
for f in deploy/systemd/ferry-node-* deploy/systemd/ferry-git-daemon.service; do
    to_usr_bin "$f" "$stage/ferry-node/systemd/$(basename "$f")"
done
for f in deploy/systemd/ferry-send.* deploy/systemd/ferry-backup-all.* deploy/systemd/ferry-agent.service; do
    to_usr_bin "$f" "$stage/ferry/systemd/$(basename "$f")"
done
to_usr_bin deploy/node.toml "$stage/ferry-node/etc/node.toml"
to_usr_bin deploy/client.toml "$stage/ferry/etc/client.toml"
for f in deploy/crontab deploy/cgitrc deploy/nginx-cgit.conf deploy/sshd/node-git-account.conf; do
    to_usr_bin "$f" "$stage/ferry-node/examples/$(basename "$f")"
done
for f in deploy/crontab deploy/sshd/client-export-account.conf; do
    to_usr_bin "$f" "$stage/ferry/examples/$(basename "$f")"
done

echo "==> cargo deb"
mkdir -p target/debian
rm -f target/debian/ferry_*.deb target/debian/ferry-node_*.deb
# --strip: the release profile keeps line tables for backtraces, which
# would make the installed binaries several times larger. cargo-deb warns
# that staged assets under target/ are "not built": they are not meant to be.
for p in ferry-node ferry-client; do
    "$cargo_deb" --no-build --strip -p "$p" -o target/debian/ 2> >(grep -v 'are detected as Cargo target dir' >&2) \
        || { echo "package.sh: cargo deb -p $p failed" >&2; exit 1; }
done
ls -l target/debian/*.deb
