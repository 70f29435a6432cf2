#!/usr/bin/env bash
# Benchmark Ferry's sftp download against OpenSSH's own clients, in one run,
# interleaved, on a private sshd over loopback, and print median wall times
# and the ratios ferry/sftp and ferry/scp (below 1.00 = Ferry is faster).
#
#   bench/sftp.sh                  # 1 GiB of urandom, 3 rounds
#   SIZE=256M ROUNDS=5 bench/sftp.sh
#
# Compared, every one a fresh process and a fresh SSH connection, all with
# the same ciphers and key exchange as Ferry (aes128-gcm first, curve25519),
# all against the same sshd whose key runs the client's read-only gate
# (sftp-server -R -p open,close,read,lstat,fstat,stat,realpath,limits):
#   sftp        sftp -b <batch with one get>
#   scp         scp (SFTP protocol, the default since OpenSSH 9.0)
#   ferry       cmds/pull/examples/ferry-sftp-get (release): own ssh child,
#               ControlMaster started and closed again, pipelined reads,
#               SHA-256 while receiving, fsync + no-replace rename
#   ferry-mux   the same through the openssh crate's native mux (measured
#               for the module's design choice; set MUX=0 to skip)
#   sftp+check  sftp, then what Ferry does on top: SHA-256 of the file
#               (OpenSSL, through Python) compared with the expected digest,
#               and an fsync (coreutils `sync FILE`) — the same guarantee
#               by hand. On loopback sshd, sftp-server and the client share
#               this machine's cores, so Ferry's hashing (about 1 s of CPU
#               per GiB with SHA-NI) shows in the wall time against plain
#               sftp; on a real node the sending side runs on the client.
# Every download is sha256-checked against the source (outside the timing).
#
# Env: SIZE (head -c syntax, default 1G), ROUNDS (3), BENCH_DIR (scratch,
# default /tmp/fsb — keep it short, it holds ssh control sockets),
# CARGO_TARGET_DIR, DEPTH / CHUNK (Ferry's read pipeline), MUX (1),
# NICE (e.g. -10: run sshd and all clients at that niceness, to shield the
# measurement from other work on the machine; needs root).
set -euo pipefail

SIZE=${SIZE:-1G}
NICE=${NICE:-}
ROUNDS=${ROUNDS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/fsb}
MUX=${MUX:-1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CIPHERS=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com
KEX=curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com
GATE="/usr/lib/openssh/sftp-server -R -p open,close,read,lstat,fstat,stat,realpath,limits"

for tool in /usr/sbin/sshd ssh sftp scp ssh-keygen python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y openssh-server openssh-client)" >&2; exit 1; }
done

echo "building ferry-sftp-get (release)..." >&2
cargo build --quiet --release -p ferry-pull --example ferry-sftp-get --manifest-path "$REPO/Cargo.toml"
FERRY=$CARGO_TARGET_DIR/release/examples/ferry-sftp-get

SSHD_PID=
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
    # A master left by an interrupted ferry run: ask it to go.
    [ -n "${PORT:-}" ] && for s in "$BENCH_DIR"/ctl/sftp-*; do
        [ -S "$s" ] && ssh -F /dev/null -o ControlPath="$s" -O exit 127.0.0.1 2>/dev/null || true
    done
    rm -rf "$BENCH_DIR/out"
}
trap cleanup EXIT

mkdir -p "$BENCH_DIR"/{sshd,node,ctl,export,out} /run/sshd
rm -f "$BENCH_DIR"/ctl/* "$BENCH_DIR"/out/*
[ -f "$BENCH_DIR/sshd/host" ] || ssh-keygen -q -t ed25519 -N '' -C bench -f "$BENCH_DIR/sshd/host"
[ -f "$BENCH_DIR/node/key" ] || ssh-keygen -q -t ed25519 -N '' -C bench -f "$BENCH_DIR/node/key"
echo "restrict,command=\"$GATE\" $(cat "$BENCH_DIR/node/key.pub")" >"$BENCH_DIR/sshd/authorized_keys"
echo "ferry-bench $(cat "$BENCH_DIR/sshd/host.pub")" >"$BENCH_DIR/node/known_hosts"
USER_NAME=$(id -un)

# OpenSSL's SHA-256 through Python: 2-10x faster than coreutils' sha256sum here.
sha256() { python3 -c 'import hashlib, sys; print(hashlib.file_digest(open(sys.argv[1], "rb"), "sha256").hexdigest())' "$1"; }

DATA=$BENCH_DIR/export/data-$SIZE
if [ ! -f "$DATA.sha256" ]; then
    echo "making $DATA ($SIZE of urandom)..." >&2
    head -c "$SIZE" /dev/urandom >"$DATA"
    sha256 "$DATA" >"$DATA.sha256"
fi
WANT=$(cat "$DATA.sha256")
BYTES=$(stat -c %s "$DATA")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
N=()
[ -n "$NICE" ] && N=(nice -n "$NICE")
"${N[@]}" /usr/sbin/sshd -D -e -f /dev/null -o ListenAddress=127.0.0.1:"$PORT" -o HostKey="$BENCH_DIR/sshd/host" \
    -o AuthorizedKeysFile="$BENCH_DIR/sshd/authorized_keys" -o PidFile=none -o StrictModes=no -o UsePAM=no \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password \
    -o "Subsystem=sftp internal-sftp" -o SetEnv=SHLVL=1 2>"$BENCH_DIR/sshd.log" &
SSHD_PID=$!
for _ in $(seq 50); do grep -q "Server listening" "$BENCH_DIR/sshd.log" && break; sleep 0.1; done

# The OpenSSH clients get Ferry's option set through a config file.
cat >"$BENCH_DIR/node/config" <<EOF
Host bench
  HostName 127.0.0.1
  Port $PORT
  User $USER_NAME
  HostKeyAlias ferry-bench
  UserKnownHostsFile $BENCH_DIR/node/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  IdentitiesOnly yes
  IdentityFile $BENCH_DIR/node/key
  IdentityAgent none
  ControlMaster no
  Ciphers $CIPHERS
  KexAlgorithms $KEX
EOF
echo "get $DATA $BENCH_DIR/out/got" >"$BENCH_DIR/node/batch"

OUT=$BENCH_DIR/out/got
run_sftp() { "${N[@]}" sftp -q -F "$BENCH_DIR/node/config" -b "$BENCH_DIR/node/batch" bench >/dev/null; }
run_sftp_checked() {
    run_sftp
    [ "$(sha256 "$OUT")" = "$WANT" ] || { echo "sftp+check: digest mismatch" >&2; exit 1; }
    sync "$OUT"
}
run_scp() { "${N[@]}" scp -q -F "$BENCH_DIR/node/config" "bench:$DATA" "$OUT"; }
run_ferry() {
    "${N[@]}" "$FERRY" host=127.0.0.1 port="$PORT" user="$USER_NAME" known_hosts="$BENCH_DIR/node/known_hosts" \
        alias=ferry-bench identity="$BENCH_DIR/node/key" control_dir="$BENCH_DIR/ctl" remote="$DATA" \
        size="$BYTES" sha256="$WANT" dest_dir="$BENCH_DIR/out" dest_name=got transport="$1" \
        ${DEPTH:+depth=$DEPTH} ${CHUNK:+chunk=$CHUNK} >/dev/null
}

METHODS="sftp scp sftp+check ferry"
[ "$MUX" = 1 ] && METHODS="$METHODS ferry-mux"
declare -A TIMES
echo "size $BYTES bytes, $ROUNDS rounds, methods: $METHODS" >&2
for round in $(seq "$ROUNDS"); do
    for m in $METHODS; do
        rm -f "$OUT"
        t0=$(date +%s.%N)
        case $m in
            sftp) run_sftp ;;
            scp) run_scp ;;
            sftp+check) run_sftp_checked ;;
            ferry) run_ferry child ;;
            ferry-mux) run_ferry mux ;;
        esac
        t1=$(date +%s.%N)
        got=$(sha256 "$OUT")
        [ "$got" = "$WANT" ] || { echo "$m round $round: sha256 mismatch ($got)" >&2; exit 1; }
        if pgrep -f "$BENCH_DIR/ctl" >/dev/null; then echo "$m left an ssh master running" >&2; exit 1; fi
        dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        TIMES[$m]="${TIMES[$m]:-} $dt"
        printf 'round %d  %-9s %6.2f s\n' "$round" "$m" "$dt" >&2
    done
done
rm -f "$OUT"

div() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf '%-10s %10s %10s\n' method "median s" "MiB/s"
declare -A MED
for m in $METHODS; do
    MED[$m]=$(echo "${TIMES[$m]}" | median)
    printf '%-10s %10.2f %10.0f\n' "$m" "${MED[$m]}" "$(awk -v x="$BYTES" -v t="${MED[$m]}" 'BEGIN { print x / 1048576 / t }')"
done
echo
printf 'ratio ferry/sftp %.2f\n' "$(div "${MED[ferry]}" "${MED[sftp]}")"
printf 'ratio ferry/scp  %.2f\n' "$(div "${MED[ferry]}" "${MED[scp]}")"
printf 'ratio ferry/(sftp + sha256 + fsync) %.2f\n' "$(div "${MED[ferry]}" "${MED[sftp+check]}")"
[ "$MUX" = 1 ] && printf 'ratio ferry-mux/ferry %.2f\n' "$(div "${MED[ferry-mux]}" "${MED[ferry]}")"
exit 0
