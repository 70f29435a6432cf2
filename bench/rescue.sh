#!/usr/bin/env bash
# Time from `ferry-node rescue` to a usable view, at 20,000 and 200,000
# files (issue 10: under 2 s, and the same at both sizes). Root only (the
# view is an overlay mount).
#
#   sudo bench/rescue.sh                 # 20000 and 200000 files
#   sudo FILES="20000" ROUNDS=5 bench/rescue.sh
#
# For each size: a tree of FILES small files (100 directories, distinct
# contents of 64 to 4,160 bytes, owners and modes varied) is snapshotted on
# a scratch node through the library (examples/tree-snapshot.rs, the pull
# job's steps), twice. Then, measured with the release ferry-node:
#   on-demand  the first snapshot's first rescue, as with node.toml
#              `[tree] prepare_rescue = false` (or a node not running as
#              root): builds its metadata layer (O(files), once per
#              snapshot, cached under the state dir) and mounts the view;
#   cached     later rescues of it (median of ROUNDS): mounts only;
#   prepare    the second snapshot, then what the pull does after
#              publishing with `prepare_rescue = true` (the default):
#              builds that snapshot's layer and drops the first one's;
#              part of the backup, not of the rescue;
#   prepared   the second snapshot's first rescue: a mount only;
#   usable     each timing ends when a file deep in the view has been read
#              and its owner checked, i.e. the view is in use.
# --undo runs between rounds (not timed).
#
# Env: BENCH_DIR (scratch, default /tmp/ferry-rescue-bench; needs ~1.5 GB
# at 200,000 files), CARGO_TARGET_DIR, FILES, ROUNDS (default 3).
set -euo pipefail

FILES=${FILES:-"20000 200000"}
ROUNDS=${ROUNDS:-3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-rescue-bench}
PROFILE=${PROFILE:-release}

if [ "$(id -u)" != 0 ]; then
    echo "bench/rescue.sh mounts overlays: run it as root" >&2
    exit 1
fi

echo "building ferry-node and tree-snapshot ($PROFILE)..." >&2
flag=--release
[ "$PROFILE" = release ] || flag=
cargo build --quiet $flag -p ferry-node --bin ferry-node --example tree-snapshot --manifest-path "$REPO/Cargo.toml"
NODE_BIN=$CARGO_TARGET_DIR/$PROFILE/ferry-node
SNAP_BIN=$CARGO_TARGET_DIR/$PROFILE/examples/tree-snapshot

cleanup() {
    for v in "$BENCH_DIR"/view-*; do
        [ -d "$v" ] && "$NODE_BIN" --config "$BENCH_DIR/node.toml" rescue --undo "$v" >/dev/null 2>&1 || true
    done
    rm -rf "$BENCH_DIR"
}
cleanup
mkdir -p "$BENCH_DIR"
trap cleanup EXIT
printf 'name = "bench"\nbase_dir = "%s/srv"\nprogram = "%s"\n' "$BENCH_DIR" "$NODE_BIN" >"$BENCH_DIR/node.toml"
node() { "$NODE_BIN" --config "$BENCH_DIR/node.toml" "$@"; }
ms() { date +%s%N | cut -c1-13; }

printf '%-8s %-10s %-10s %-10s %-10s %-10s %s\n' files snapshot on-demand cached prepare prepared "cached rounds (ms)"
for n in $FILES; do
    src=$BENCH_DIR/src-$n
    python3 - "$src" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.makedirs(f"{root}/d{d:03}/sub", exist_ok=True)
for i in range(n):
    p = f"{root}/d{i % 100:03}/sub/f{i:07}"
    with open(p, "wb") as f:
        f.write((b"%07d " % i) * (8 + i % 512))
    os.chown(p, 1000 + i % 7, 1000 + i % 3)
    os.chmod(p, (0o644, 0o600, 0o755, 0o640)[i % 4])
PY
    t0=$(ms)
    "$SNAP_BIN" "$BENCH_DIR/node.toml" host "src$n" 20261201T000000Z "$src" >/dev/null
    snap=$(( $(ms) - t0 ))
    view=$BENCH_DIR/view-$n
    probe="$view/d099/sub/f$(printf %07d $((n - 1)))"
    t0=$(ms)
    node rescue host "src$n" "$view" >/dev/null
    head -c1 "$probe" >/dev/null && stat -c %u "$probe" >/dev/null
    first=$(( $(ms) - t0 ))
    node rescue --undo "$view" >/dev/null
    rounds=()
    for _ in $(seq "$ROUNDS"); do
        t0=$(ms)
        node rescue host "src$n" "$view" >/dev/null
        head -c1 "$probe" >/dev/null && stat -c %u "$probe" >/dev/null
        rounds+=($(( $(ms) - t0 )))
        node rescue --undo "$view" >/dev/null
    done
    median=$(printf '%s\n' "${rounds[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
    # The second snapshot, prepared as the pull does.
    out=$("$SNAP_BIN" "$BENCH_DIR/node.toml" host "src$n" 20261202T000000Z "$src" --prepare)
    prep=$(echo "$out" | sed -n 's/.*rescue layer prepared in \([0-9]*\) ms.*/\1/p')
    layers=$(find "$BENCH_DIR/srv/state/rescue-meta/host/src$n" -mindepth 1 -maxdepth 1 ! -name '.*' | wc -l)
    [ "$layers" = 1 ] || { echo "expected the pull to leave one layer, found $layers" >&2; exit 1; }
    t0=$(ms)
    built=$(node --json rescue host "src$n" "$view" | python3 -c 'import json,sys; print(json.load(sys.stdin)["meta_built"])')
    head -c1 "$probe" >/dev/null && stat -c %u "$probe" >/dev/null
    prepared=$(( $(ms) - t0 ))
    node rescue --undo "$view" >/dev/null
    [ "$built" = False ] || { echo "the rescue of a prepared snapshot built its layer" >&2; exit 1; }
    printf '%-8s %-10s %-10s %-10s %-10s %-10s %s\n' "$n" "${snap}ms" "${first}ms" "${median}ms" "${prep}ms" "${prepared}ms" "${rounds[*]}"
    rm -rf "$src"
done
