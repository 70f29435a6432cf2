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
#   ferry-base  BASE=<another ferry-sftp-get binary> runs it too (before and
#               after a change, in the same interleaved rounds)
# Every download is sha256-checked against the source (outside the timing).
#
# Env: SIZE (head -c syntax, default 1G), ROUNDS (3), BENCH_DIR (scratch,
# default /tmp/fsb — keep it short, it holds ssh control sockets),
# CARGO_TARGET_DIR, DEPTH / CHUNK (Ferry's read pipeline), MUX (1),
# NICE (e.g. -10: run sshd and all clients at that niceness, to shield the
# measurement from other work on the machine; needs root), BASE,
# METHODS (a subset, e.g. "sftp ferry ferry-base"),
# CPU=1 (root, cgroup cpuacct or cgroup v2): also the CPU seconds of the
# client side (the method's processes) and of the server side (sshd and
# sftp-server), which other work on a shared machine disturbs much less
# than wall time.
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

# CPU accounting: two cgroups, one for sshd (server side) and one that
# each method runs in (client side).
CG=
cg_setup() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        CG=/sys/fs/cgroup
    elif [ -d /sys/fs/cgroup/cpuacct ]; then
        CG=/sys/fs/cgroup/cpuacct
    else
        echo "CPU=1: no cgroup cpuacct or cgroup v2 here" >&2; exit 1
    fi
    mkdir -p "$CG/ferry-bench-server" "$CG/ferry-bench-client"
}
cg_usage() { # ns of CPU used by cgroup $1
    if [ -f "$CG/$1/cpuacct.usage" ]; then cat "$CG/$1/cpuacct.usage"
    else awk '$1 == "usage_usec" { print $2 * 1000 }' "$CG/$1/cpu.stat"; fi
}
in_cg() { # run "$@" (a command or a function) inside cgroup $1
    local g=$1; shift
    if [ -n "$CG" ]; then ( echo $BASHPID >"$CG/$g/cgroup.procs"; "$@" ); else "$@"; fi
}
[ "${CPU:-0}" = 1 ] && cg_setup

SSHD_PID=
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
    # A master left by an interrupted ferry run: ask it to go.
    [ -n "${PORT:-}" ] && for s in "$BENCH_DIR"/ctl/sftp-*; do
        [ -S "$s" ] && ssh -F /dev/null -o ControlPath="$s" -O exit 127.0.0.1 2>/dev/null || true
    done
    rm -rf "$BENCH_DIR/out"
    if [ -n "$CG" ]; then
        echo $$ >"$CG/cgroup.procs" 2>/dev/null || true
        rmdir "$CG/ferry-bench-server" "$CG/ferry-bench-client" 2>/dev/null || true
    fi
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
( [ -n "$CG" ] && echo $BASHPID >"$CG/ferry-bench-server/cgroup.procs"; exec "${N[@]}" /usr/sbin/sshd -D -e -f /dev/null -o ListenAddress=127.0.0.1:"$PORT" -o HostKey="$BENCH_DIR/sshd/host" \
    -o AuthorizedKeysFile="$BENCH_DIR/sshd/authorized_keys" -o PidFile=none -o StrictModes=no -o UsePAM=no \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password \
    -o "Subsystem=sftp internal-sftp" -o SetEnv=SHLVL=1 ) 2>"$BENCH_DIR/sshd.log" &
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
    local bin=$FERRY
    [ "$1" = base ] && { bin=$BASE; set -- child; }
    "${N[@]}" "$bin" host=127.0.0.1 port="$PORT" user="$USER_NAME" known_hosts="$BENCH_DIR/node/known_hosts" \
        alias=ferry-bench identity="$BENCH_DIR/node/key" control_dir="$BENCH_DIR/ctl" remote="$DATA" \
        size="$BYTES" sha256="$WANT" dest_dir="$BENCH_DIR/out" dest_name=got transport="$1" \
        ${DEPTH:+depth=$DEPTH} ${CHUNK:+chunk=$CHUNK} >/dev/null
}

if [ -z "${METHODS:-}" ]; then
    METHODS="sftp scp sftp+check ferry"
    [ "$MUX" = 1 ] && METHODS="$METHODS ferry-mux"
    [ -n "${BASE:-}" ] && METHODS="$METHODS ferry-base"
fi
declare -A TIMES CCPU SCPU
echo "size $BYTES bytes, $ROUNDS rounds, methods: $METHODS" >&2
for round in $(seq "$ROUNDS"); do
    for m in $METHODS; do
        rm -f "$OUT"
        sync
        [ -n "$CG" ] && { c0=$(cg_usage ferry-bench-client); s0=$(cg_usage ferry-bench-server); }
        t0=$(date +%s.%N)
        case $m in
            sftp) in_cg ferry-bench-client run_sftp ;;
            scp) in_cg ferry-bench-client run_scp ;;
            sftp+check) in_cg ferry-bench-client run_sftp_checked ;;
            ferry) in_cg ferry-bench-client run_ferry child ;;
            ferry-mux) in_cg ferry-bench-client run_ferry mux ;;
            ferry-base) in_cg ferry-bench-client run_ferry base ;;
        esac
        t1=$(date +%s.%N)
        if [ -n "$CG" ]; then
            c=$(awk -v a="$c0" -v b="$(cg_usage ferry-bench-client)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
            s=$(awk -v a="$s0" -v b="$(cg_usage ferry-bench-server)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
            CCPU[$m]="${CCPU[$m]:-} $c"
            SCPU[$m]="${SCPU[$m]:-} $s"
        fi
        got=$(sha256 "$OUT")
        [ "$got" = "$WANT" ] || { echo "$m round $round: sha256 mismatch ($got)" >&2; exit 1; }
        if pgrep -f "$BENCH_DIR/ctl" >/dev/null; then echo "$m left an ssh master running" >&2; exit 1; fi
        dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        TIMES[$m]="${TIMES[$m]:-} $dt"
        printf 'round %d  %-10s %6.2f s%s\n' "$round" "$m" "$dt" "${c:+  cpu client $c s server $s s}" >&2
    done
done
rm -f "$OUT"

div() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
spread() { tr ' ' '\n' | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }
printf '%-10s %10s %12s %8s' method "median s" "min-max" "MiB/s"
[ -n "$CG" ] && printf ' %12s %12s' "client cpu s" "server cpu s"
echo
declare -A MED
for m in $METHODS; do
    MED[$m]=$(echo "${TIMES[$m]}" | median)
    printf '%-10s %10.2f %12s %8.0f' "$m" "${MED[$m]}" "$(echo "${TIMES[$m]}" | spread)" \
        "$(awk -v x="$BYTES" -v t="${MED[$m]}" 'BEGIN { print x / 1048576 / t }')"
    [ -n "$CG" ] && printf ' %12.2f %12.2f' "$(echo "${CCPU[$m]}" | median)" "$(echo "${SCPU[$m]}" | median)"
    echo
done
echo
has() { [[ " $METHODS " == *" $1 "* ]]; }
ratio() { has "$1" && has "$2" && printf 'ratio %s/%s %.2f\n' "$1" "$2" "$(div "${MED[$1]}" "${MED[$2]}")"; return 0; }
ratio ferry sftp
ratio ferry scp
ratio ferry sftp+check
ratio ferry-mux ferry
ratio ferry-base sftp
ratio ferry ferry-base
exit 0
