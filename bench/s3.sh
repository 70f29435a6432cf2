#!/usr/bin/env bash
# Benchmark Ferry's S3 store against the AWS CLI on the same Garage, in one
# run, interleaved, and print median wall times and the ratios ferry/aws
# (below 1.00 = Ferry is faster); then Ferry's peak RSS while it stores a
# 4 GiB artifact (issue 14: store and restore ≤ 1.1× the tool, < 128 MB).
#
#   bench/s3.sh                     # 1 GiB of urandom, 3 rounds, 4 GiB for RSS
#   SIZE=256M ROUNDS=5 BIG=1G bench/s3.sh
#   ENCRYPT=1 BIG=0 bench/s3.sh     # Ferry's objects age-encrypted ([store] encrypt)
#
# Garage: one server (SQLite metadata, replication 1) on 127.0.0.1, set up
# with the `garage` CLI like the tests' harness; the binary from $FERRY_GARAGE,
# /var/cache/ferry-ci/garage/bin/garage (deploy/garage.sh) or PATH.
# Compared, each a fresh process:
#   ferry-put      tests/src/bin/ferry-store-put.rs (release): the node's
#                  S3Store::put, as the pull job calls it after a verified
#                  download: multipart upload (part_size_mib, 4 parts in
#                  flight) under a temporary key, SHA-256 while uploading,
#                  sidecar, server-side copy to the final key, delete the
#                  temporary; then the catalog row
#   aws-put        aws s3 cp FILE s3://… (awscli: 8 MiB parts, 10 threads)
#   ferry-restore  ferry-node restore CLIENT SOURCE --to DIR (release): what
#                  an administrator runs; one pass, hashed while written to
#                  a temporary that is renamed only when the digest matches
#   ferry-get      ferry-store-put --get: the object read once through the store
#                  (ArtifactStore::open) into FILE, nothing checked: the
#                  floor for a restore
#   aws-get        aws s3 cp s3://… FILE (10 threads of ranged GETs)
#   aws-get-sync   the same, then `sync FILE` (fsync): on disk, as a restore
#                  leaves it (ferry-restore fsyncs before the rename)
# Every download is sha256-checked against the source (outside the timing).
# Before each timed step: `sync` and SETTLE seconds of rest, so that every
# step starts from the same state (no writeback of the previous step's
# 1 GiB still running under it). On VMs with free page reporting
# (virtio-balloon, as here) memory freed by a deleted download also goes
# back to the host within seconds, and the next writer pays to fault it in
# again; the rest makes every step pay that alike. Without it (SETTLE=0)
# the order decides: ferry-get and aws-get each follow a deleted 1 GiB
# download and find its freed pages at hand, ferry-restore follows an
# upload and does not (restore/aws 1.62 back to back, 0.94 and 1.11
# settled, in one session).
#
# Env: SIZE (head -c syntax, 1G), BIG (4G: peak RSS storing and restoring it; 0 skips), ROUNDS (3),
# SETTLE (5; seconds of rest before each timed step, 0 for none),
# ENCRYPT (1: encrypt = true with a key from `store keygen`; aws stays plain),
# PART_MIB (16, the node's default part_size_mib), BENCH_DIR (/tmp/ferry-s3b),
# CARGO_TARGET_DIR, AWS (the aws binary; `aws` on PATH), BIN_DIR (use its
# ferry-node and ferry-store-put instead of building them).
set -euo pipefail

SIZE=${SIZE:-1G}
BIG=${BIG:-4G}
ROUNDS=${ROUNDS:-3}
PART_MIB=${PART_MIB:-16}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-s3b}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
AWS=${AWS:-$(command -v aws || true)}
GARAGE=${FERRY_GARAGE:-}
[ -n "$GARAGE" ] || { [ -x /var/cache/ferry-ci/garage/bin/garage ] && GARAGE=/var/cache/ferry-ci/garage/bin/garage; } || true
[ -n "$GARAGE" ] || GARAGE=$(command -v garage || true)
[ -n "$GARAGE" ] || { echo "no garage binary: deploy/garage.sh builds it" >&2; exit 1; }
[ -n "$AWS" ] || { echo "no aws CLI: apt-get install awscli, or pip install awscli" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install time)" >&2; exit 1; }

if [ -n "${BIN_DIR:-}" ]; then
    # Binaries built elsewhere (comparing two builds on the same Garage).
    NODE=$BIN_DIR/ferry-node
    PUT=$BIN_DIR/ferry-store-put
else
    echo "building ferry-node and ferry-store-put (release)..." >&2
    cargo build --quiet --release -p ferry-node -p ferry-tests --bin ferry-node --bin ferry-store-put \
        --manifest-path "$REPO/Cargo.toml"
    NODE=$CARGO_TARGET_DIR/release/ferry-node
    PUT=$CARGO_TARGET_DIR/release/ferry-store-put
fi

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
GPID=
cleanup() {
    [ -z "$GPID" ] || kill "$GPID" 2>/dev/null || true
    [ -z "$GPID" ] || wait "$GPID" 2>/dev/null || true
    rm -rf "$BENCH_DIR/garage/data" "$BENCH_DIR"/*.bin "$BENCH_DIR"/out
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPC=$(free_port)
S3=$(free_port)
mkdir -p garage
cat >garage/garage.toml <<EOF
metadata_dir = "$BENCH_DIR/garage/meta"
data_dir = "$BENCH_DIR/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC"
rpc_public_addr = "127.0.0.1:$RPC"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3"
root_domain = ".s3.garage.localhost"
EOF
g() { "$GARAGE" -c garage/garage.toml "$@"; }
"$GARAGE" -c garage/garage.toml server >garage/log 2>&1 &
GPID=$!
for _ in $(seq 100); do g node id -q >/dev/null 2>&1 && break; sleep 0.2; done
ID=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 100G "$ID" >/dev/null
g layout apply --version 1 >/dev/null
KEY=GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
g key import --yes -n bench "$KEY" "$SECRET" >/dev/null
g bucket create ferry >/dev/null
g bucket allow --read --write --owner ferry --key "$KEY" >/dev/null

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=garage
export AWS_CONFIG_FILE=$BENCH_DIR/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$BENCH_DIR/no-aws-credentials
awscp() { "$AWS" --endpoint-url "http://127.0.0.1:$S3" s3 cp --only-show-errors "$@"; }
awsrm() { "$AWS" --endpoint-url "http://127.0.0.1:$S3" s3 rm --only-show-errors "$@"; }

printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$KEY" "$SECRET" >s3.toml
chmod 600 s3.toml
cat >node.toml <<EOF
name = "bench"
base_dir = "$BENCH_DIR/srv"

[store]
kind = "s3"
endpoint = "http://127.0.0.1:$S3"
region = "garage"
bucket = "ferry"
prefix = "bench"
credentials = "$BENCH_DIR/s3.toml"
part_size_mib = $PART_MIB
EOF
if [ "${ENCRYPT:-0}" = 1 ]; then
    printf 'encrypt = true\nkey = "%s"\n' "$BENCH_DIR/store.key" >>node.toml
    "$NODE" --config node.toml store keygen >/dev/null
fi
mkdir -p srv/data

echo "generating $SIZE of urandom..." >&2
head -c "$SIZE" /dev/urandom >src.bin
SHA=$(sha256sum src.bin | cut -d' ' -f1)
now() { date +%s.%N; }
SETTLE=${SETTLE:-5}
settle() { sync; sleep "$SETTLE"; }
declare -A T
# Each stored artifact is a run of its own: RECEIVED 20260101T0000NNZ.
stamp() { printf '20260101T%06dZ' "$1"; }
for r in $(seq "$ROUNDS"); do
    rec=$(stamp "$r")
    settle
    t0=$(now); "$PUT" node.toml bench big "$rec" src.bin "$SHA" >/dev/null; t1=$(now)
    T[ferry-put]+="$(echo "$t1 - $t0" | bc) "
    settle
    t0=$(now); awscp src.bin "s3://ferry/aws/$r.bin"; t1=$(now)
    T[aws-put]+="$(echo "$t1 - $t0" | bc) "
    rm -rf restored
    settle
    t0=$(now); "$NODE" --config node.toml restore bench big --to restored >>restore.log 2>&1; t1=$(now)
    T[ferry-restore]+="$(echo "$t1 - $t0" | bc) "
    [ "$(cat restored/* | sha256sum | cut -d' ' -f1)" = "$SHA" ] || { echo "ferry restore differs" >&2; exit 1; }
    rm -rf restored
    settle
    t0=$(now); "$PUT" --get node.toml bench big "$rec" out >/dev/null; t1=$(now)
    T[ferry-get]+="$(echo "$t1 - $t0" | bc) "
    [ "$(sha256sum out | cut -d' ' -f1)" = "$SHA" ] || { echo "ferry get differs" >&2; exit 1; }
    rm -f out
    settle
    t0=$(now); awscp "s3://ferry/aws/$r.bin" out; t1=$(now); sync out; t2=$(now)
    T[aws-get]+="$(echo "$t1 - $t0" | bc) "
    T[aws-get-sync]+="$(echo "$t2 - $t0" | bc) "
    [ "$(sha256sum out | cut -d' ' -f1)" = "$SHA" ] || { echo "aws download differs" >&2; exit 1; }
    rm -f out
    awsrm "s3://ferry/aws/$r.bin"
    echo "round $r done" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "$SIZE, $ROUNDS rounds,$([ "${ENCRYPT:-0}" = 1 ] && echo ' Ferry encrypted (age),') one Garage $("$GARAGE" --version | head -1 | cut -d' ' -f2) on loopback, part_size_mib = $PART_MIB, $("$AWS" --version 2>&1 | cut -d' ' -f1)"
printf '%-14s %10s  %s\n' method "median s" "all runs (s)"
for m in ferry-put aws-put ferry-restore ferry-get aws-get aws-get-sync; do
    printf '%-14s %10.2f  %s\n' "$m" "$(echo "${T[$m]}" | median)" "${T[$m]}"
done
ratio() { echo "scale=2; $(echo "${T[$1]}" | median) / $(echo "${T[$2]}" | median)" | bc; }
echo "store   ferry/aws = $(ratio ferry-put aws-put)"
echo "restore ferry/aws = $(ratio ferry-restore aws-get)"
echo "restore ferry/(aws + fsync) = $(ratio ferry-restore aws-get-sync)"
echo "one read (ferry-get)/aws = $(ratio ferry-get aws-get)"

if [ "$BIG" != 0 ]; then
    echo "generating $BIG for the memory run..." >&2
    rm -f src.bin
    head -c "$BIG" /dev/urandom >big.bin
    BSHA=$(sha256sum big.bin | cut -d' ' -f1)
    /usr/bin/time -v -o rss.txt "$PUT" node.toml bench huge "$(stamp 99)" big.bin "$BSHA" >/dev/null
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' rss.txt)
    echo "peak RSS storing $BIG: $((kib / 1024)) MiB ($kib KiB; goal < 128 MB)"
    rm -f big.bin
    rm -rf restored-big
    /usr/bin/time -v -o rss-restore.txt "$NODE" --config node.toml restore bench huge --to restored-big >>restore.log 2>&1
    [ "$(cat restored-big/* | sha256sum | cut -d' ' -f1)" = "$BSHA" ] || { echo "ferry restore of $BIG differs" >&2; exit 1; }
    rm -rf restored-big
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' rss-restore.txt)
    echo "peak RSS restoring $BIG: $((kib / 1024)) MiB ($kib KiB)"
fi
