#!/usr/bin/env bash
# Benchmark ferry-archive's creation against the usual tools, on a generated
# tree, and print ratios (ours / tool) for wall time and output size.
#
#   bench/archive/run.sh [tree|file] [SIZE_MB] [FILES]
#
#   bench/archive/run.sh                    # small tree: 200 MB in 20,000 files (default)
#   bench/archive/run.sh tree 1024 100000   # the issue's 1 GiB / 100,000-file case
#   bench/archive/run.sh file 1024          # the issue's 1 GiB single-file case
#
# Compared commands, all on a warm page cache (one warm-up run each):
#   ours      ferry-tar create DIR OUT          (zstd -3, workers = available_parallelism)
#   tar|zstd  tar -cf - DIR | zstd -T0 -3
#   tar czf   tar -czf OUT DIR                  (gzip -6, single-threaded)
# A ratio below 1.00 means ours is faster / smaller.
#
# Env: BENCH_OUT (where archives are written, removed at the end unless
# KEEP_OUT=1; default a tmpfs directory
# under /dev/shm when writable, else $BENCH_DIR/out). INTERLEAVE=1 runs the commands in rounds (ours, tar|zstd, tar czf,
# ours, ...) instead of hyperfine's one-block-per-command, so a machine whose
# load drifts (shared CI, other builds) biases all commands alike; it prints
# the median and the minimum. SKIP_GZ=1 leaves out the (slow) tar czf runs.
# BENCH_DIR (scratch, default /tmp/ferry-archive-bench; the generated
# tree is kept there and reused when the parameters match), RUNS (default 5),
# CARGO_TARGET_DIR (where the example binary is built).
# Uses hyperfine when installed (apt-get install -y hyperfine), otherwise
# repeats each command RUNS times and takes the median.
set -euo pipefail

MODE=${1:-tree}
SIZE_MB=${2:-200}
FILES=${3:-20000}
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-archive-bench}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

case $MODE in tree|file) ;; *) echo "usage: $0 [tree|file] [SIZE_MB] [FILES]" >&2; exit 2;; esac
for tool in tar zstd gzip python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "building ferry-tar (release)..." >&2
cargo build --quiet --release -p ferry-archive --example ferry-tar --manifest-path "$REPO/Cargo.toml"
FERRY_TAR=$CARGO_TARGET_DIR/release/examples/ferry-tar

if [ "$MODE" = tree ]; then
    DATA=$BENCH_DIR/tree-${SIZE_MB}mb-${FILES}
else
    DATA=$BENCH_DIR/file-${SIZE_MB}mb
fi
# Outputs go to tmpfs when there is one, so disk writeback of one run's
# output cannot throttle the next run (that showed up as order effects).
if [ -z "${BENCH_OUT:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    OUT=/dev/shm/ferry-archive-bench-out
else
    OUT=${BENCH_OUT:-$BENCH_DIR/out}
fi
mkdir -p "$BENCH_DIR" "$OUT"

if [ ! -e "$DATA.complete" ]; then
    echo "generating $DATA ..." >&2
    rm -rf "$DATA"
    python3 - "$MODE" "$SIZE_MB" "$FILES" "$DATA" <<'PY'
# Deterministic mixed content: ~45% text-like (words, source, logs),
# ~20% structured (CSV/JSON-ish), ~35% incompressible (media, archives),
# so the compression ratio resembles a real home or /etc + /var tree.
import os, random, sys
mode, size_mb, files, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(42)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10)))
         for _ in range(5000)]
def text(n):
    out, size = [], 0
    while size < n:
        line = ' '.join(rng.choice(words) for _ in range(rng.randint(3, 14))) + '\n'
        out.append(line); size += len(line)
    return ''.join(out).encode()[:n]
def structured(n):
    out, size, i = [], 0, 0
    while size < n:
        line = '{"id":%d,"user":"%s","ts":%d,"ok":%s,"v":%.3f}\n' % (
            i, rng.choice(words), 1700000000 + i * 7, rng.choice(['true', 'false']), rng.random() * 1000)
        out.append(line); size += len(line); i += 1
    return ''.join(out).encode()[:n]
def blob(n):
    return os.urandom(n)
def content(n):
    r = rng.random()
    if r < 0.45: return text(n)
    if r < 0.65: return structured(n)
    return blob(n)
os.makedirs(root)
total = size_mb << 20
if mode == 'file':
    with open(os.path.join(root, 'big.bin'), 'wb') as f:
        left = total
        while left > 0:
            n = min(left, 4 << 20)
            f.write(content(n)); left -= n
else:
    # Sizes: many small files, a few large ones (log-normal), scaled to total.
    sizes = [rng.lognormvariate(8.0, 1.6) for _ in range(files)]
    scale = total / sum(sizes)
    dirs = ['']
    for i, s in enumerate(sizes):
        if i % 25 == 0:
            parent = rng.choice(dirs)
            d = os.path.join(parent, 'd%05d' % i)
            os.makedirs(os.path.join(root, d), exist_ok=True)
            dirs.append(d)
        d = rng.choice(dirs[-40:])
        with open(os.path.join(root, d, 'f%06d.%s' % (i, rng.choice(['txt', 'log', 'json', 'bin', 'c']))), 'wb') as f:
            f.write(content(max(0, int(s * scale))))
PY
    touch "$DATA.complete"
fi
du -sh --apparent-size "$DATA" >&2
echo "files: $(find "$DATA" -type f | wc -l)" >&2

PARENT=$(dirname "$DATA")
NAME=$(basename "$DATA")
CMD_OURS="$FERRY_TAR create $DATA $OUT/ours.tar.zst 2>/dev/null"
CMD_ZSTD="tar -C $PARENT -cf - $NAME | zstd -q -T0 -3 -f -o $OUT/ref.tar.zst"
CMD_GZ="tar -C $PARENT -czf $OUT/ref.tar.gz $NAME"
if [ "${SKIP_GZ:-0}" = 1 ]; then
    # Keep the table's shape; the tar czf row is reported as nan.
    CMD_GZ="true"
fi

median_of() { # command -> median seconds
    local cmd=$1 t=() i s e
    eval "$cmd" # warm-up
    for ((i = 0; i < RUNS; i++)); do
        s=$(date +%s.%N); eval "$cmd"; e=$(date +%s.%N)
        t+=("$(echo "$e - $s" | bc -l)")
    done
    printf '%s\n' "${t[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

if [ "${INTERLEAVE:-0}" = 1 ]; then
    command -v /usr/bin/time >/dev/null || { echo "INTERLEAVE=1 needs /usr/bin/time" >&2; exit 1; }
    LOG=$OUT/interleaved.txt
    : > "$LOG"
    for cmd in "$CMD_OURS" "$CMD_ZSTD" "$CMD_GZ"; do eval "$cmd"; done # warm-up
    for ((i = 0; i < RUNS; i++)); do
        for name in ours zstd gz; do
            case $name in ours) cmd=$CMD_OURS;; zstd) cmd=$CMD_ZSTD;; gz) cmd=$CMD_GZ;; esac
            /usr/bin/time -f "$name %e %U %S" -a -o "$LOG" sh -c "$cmd"
        done
    done
    read -r T_OURS T_ZSTD T_GZ C_OURS C_ZSTD C_GZ < <(python3 - "$LOG" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, wall, user, sys_ = line.split()
    runs.setdefault(name, []).append((float(wall), float(user) + float(sys_)))
names = ["ours", "zstd", "gz"]
for n in names:
    w = [r[0] for r in runs[n]]
    print(f"{n:5} wall median {statistics.median(w):.3f} min {min(w):.3f}  all {' '.join(f'{x:.2f}' for x in w)}", file=sys.stderr)
print(*[statistics.median(r[0] for r in runs[n]) for n in names],
      *[statistics.median(r[1] for r in runs[n]) for n in names])
PY
)
elif command -v hyperfine >/dev/null; then
    hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$OUT/hyperfine.json" \
        -n ours "$CMD_OURS" -n "tar|zstd" "$CMD_ZSTD" -n "tar czf" "$CMD_GZ" >&2
    read -r T_OURS T_ZSTD T_GZ C_OURS C_ZSTD C_GZ < <(python3 -c '
import json, sys
res = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
names = ["ours", "tar|zstd", "tar czf"]
print(*[res[n]["median"] for n in names], *[res[n]["user"] + res[n]["system"] for n in names])' "$OUT/hyperfine.json")
else
    T_OURS=$(median_of "$CMD_OURS")
    T_ZSTD=$(median_of "$CMD_ZSTD")
    T_GZ=$(median_of "$CMD_GZ")
    C_OURS=nan C_ZSTD=nan C_GZ=nan
fi

S_IN=$(du -sb --apparent-size "$DATA" | cut -f1)
S_OURS=$(stat -c %s "$OUT/ours.tar.zst")
S_ZSTD=$(stat -c %s "$OUT/ref.tar.zst")
S_GZ=$(stat -c %s "$OUT/ref.tar.gz" 2>/dev/null || echo 0)
[ "${SKIP_GZ:-0}" = 1 ] && S_GZ=0

python3 - "$MODE" "$S_IN" "$T_OURS" "$T_ZSTD" "$T_GZ" "$S_OURS" "$S_ZSTD" "$S_GZ" "$(nproc)" \
    "$C_OURS" "$C_ZSTD" "$C_GZ" <<'PY'
import sys
mode, s_in = sys.argv[1], int(sys.argv[2])
t_ours, t_zstd, t_gz = map(float, sys.argv[3:6])
s_ours, s_zstd, s_gz = map(int, sys.argv[6:9])
c_ours, c_zstd, c_gz = map(float, sys.argv[10:13])
if s_gz == 0:
    t_gz, s_gz, c_gz = float("nan"), float("nan"), float("nan")
print(f"\n{mode}: {s_in / 2**20:.0f} MiB input, {sys.argv[9]} cores, median of runs, warm cache")
print(f"{'':10} {'wall s':>8} {'MiB/s':>8} {'cpu s':>8} {'size MiB':>9} {'comp ratio':>10}")
rows = (("ours", t_ours, c_ours, s_ours), ("tar|zstd", t_zstd, c_zstd, s_zstd), ("tar czf", t_gz, c_gz, s_gz))
for name, t, c, s in rows:
    print(f"{name:10} {t:8.3f} {s_in / 2**20 / t:8.1f} {c:8.2f} {s / 2**20:9.2f} {s_in / s:10.3f}")
print(f"\nratios ours/tool (below 1.00 = ours faster/smaller; cpu = user+system, all processes):")
print(f"  vs tar|zstd -T0 -3: time {t_ours / t_zstd:.2f}  size {s_ours / s_zstd:.3f}  cpu {c_ours / c_zstd:.2f}")
print(f"  vs tar czf:         time {t_ours / t_gz:.2f}  size {s_ours / s_gz:.3f}  cpu {c_ours / c_gz:.2f}")
PY
[ "${KEEP_OUT:-0}" = 1 ] || rm -rf "$OUT"
