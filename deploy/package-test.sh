#!/usr/bin/env bash
# The Debian packages end to end, from the installed files only: builds
# ferry-node and ferry (deploy/package.sh), installs them with apt on this
# machine, and follows README "Install from packages" with the two-account
# node layout: init --owner git:ferry, enroll a client, one backup over a
# private sshd, a scan as the `ferry` account (which also publishes the
# catalog), a restore compared with the original; then apt-get remove and
# purge, which must leave the backups. Every program run is /usr/bin/ferry
# or /usr/bin/ferry-node, never target/.
#
#   deploy/package-test.sh     # as root, on a machine without the packages
#
# It makes the accounts git and ferry and /srv/ferry, so it refuses to run
# where any of them (or the packages) already exist, and removes them all
# again on exit, failed or not. Two private sshd instances listen on
# 127.0.0.251 (node) and 127.0.0.252 (client), outside the 127.0.0.2-250 the
# e2e tests use; nothing under /etc/ssh changes. deploy/test.sh runs this
# under CI=true as root.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
NODE_IP=127.0.0.251
CLIENT_IP=127.0.0.252

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'package-test: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages, makes accounts and starts sshd"
for a in git ferry; do
    ! getent passwd "$a" >/dev/null || die "account $a exists already: run this on a machine without it"
    ! getent group "$a" >/dev/null || die "group $a exists already: run this on a machine without it"
done
for d in /srv/ferry /var/lib/ferry /etc/ferry; do
    [ ! -e "$d" ] || die "$d exists already: run this on a machine without it"
done
for p in ferry ferry-node; do
    ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qE ' (installed|config-files|half-.*|unpacked)$' \
        || die "package $p is installed already (or not purged)"
done

# The ssh connection masters (ControlPersist) of the client's pushes and the
# node's pulls: ask each to exit through its socket.
close_masters() {
    find /srv/ferry /var/lib/ferry "${W:-/nonexistent}" -type s 2>/dev/null | while IFS= read -r sock; do
        ssh -F /dev/null -o ControlPath="$sock" -O exit x >/dev/null 2>&1 || true
    done
}
W=$(mktemp -d /var/tmp/ferry-package-test.XXXXXX)
chmod 755 "$W"
cleanup() {
    local rc=$?
    set +e
    for pidfile in "$W"/*/sshd.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    close_masters
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ferry ferry-node >/dev/null 2>&1
    # What is left running as the two accounts this run made (an sshd
    # session of a master that just closed, a scan) is ours: end it by pid.
    for _ in $(seq 50); do
        pids=$(ps -o pid= -u git,ferry 2>/dev/null | tr -d ' ' || true)
        [ -z "$pids" ] && break
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null
        sleep 0.1
    done
    for a in git ferry; do getent passwd "$a" >/dev/null && userdel "$a"; done
    for g in git ferry; do getent group "$g" >/dev/null && groupdel "$g"; done
    rm -rf /srv/ferry /var/lib/ferry /etc/ferry "$W"
    [ "$rc" -eq 0 ] || echo "package-test: FAILED (exit $rc); cleaned up" >&2
    exit "$rc"
}
trap cleanup EXIT

say "building the packages (deploy/package.sh)"
deploy/package.sh
say "apt-get install ./ferry-node_*.deb ./ferry_*.deb"
(cd target/debian && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./ferry-node_*.deb ./ferry_*.deb)
cd "$W"
FNODE=/usr/bin/ferry-node
FERRY=/usr/bin/ferry
as_ferry() { runuser -u ferry -- "$@"; }

say "what the packages installed"
id -nG git | tr ' ' '\n' | grep -qx ferry || die "git is not in group ferry"
[ "$(stat -c '%U:%G %a' /srv/ferry)" = "git:ferry 2750" ] || die "/srv/ferry: $(stat -c '%U:%G %a' /srv/ferry)"
[ "$(stat -c '%U:%G %a' /var/lib/ferry/export)" = "ferry:ferry 750" ] || die "/var/lib/ferry/export: wrong owner or mode"
[ "$(stat -c '%G %a' /etc/ferry/node.toml)" = "ferry 640" ] || die "/etc/ferry/node.toml: wrong group or mode"
for m in ferry ferry-node ferry-node-init ferry-backup; do
    man -w "$m" >/dev/null 2>&1 || ls /usr/share/man/man1/"$m".1* >/dev/null 2>&1 || die "no man page $m"
done
for f in /usr/share/bash-completion/completions/ferry-node /usr/share/bash-completion/completions/ferry \
    /usr/share/zsh/vendor-completions/_ferry-node /usr/share/zsh/vendor-completions/_ferry \
    /usr/share/fish/vendor_completions.d/ferry-node.fish /usr/share/fish/vendor_completions.d/ferry.fish \
    /lib/systemd/system/ferry-node-daemon.service /lib/systemd/system/ferry-node-scan.timer \
    /lib/systemd/system/ferry-node-scan.path /lib/systemd/system/ferry-send.timer; do
    [ -s "$f" ] || die "missing $f"
done
grep -q '^ExecStart=/usr/bin/ferry-node ' /lib/systemd/system/ferry-node-scan.service || die "scan unit does not run /usr/bin/ferry-node"
# postinst is idempotent: a second run changes nothing.
state() {
    getent passwd git ferry; getent group git ferry; getent shadow git ferry | cut -d: -f1,2
    stat -c '%n %U:%G %a' /srv/ferry /var/lib/ferry /var/lib/ferry/.ssh /var/lib/ferry/export /etc/ferry/*.toml
    cat /var/lib/ferry/.gitconfig
}
state > before
/var/lib/dpkg/info/ferry-node.postinst configure
/var/lib/dpkg/info/ferry.postinst configure
state > after
diff -u before after || die "running postinst again changed something"

say "node: init --owner git:ferry (the two-account layout)"
# The administrator edits the installed example (scans run as ferry).
cat > /etc/ferry/node.toml <<EOF
name = "backup1"
base_dir = "/srv/ferry"
authorized_keys = "/srv/ferry/.ssh/authorized_keys"
program = "$FNODE"
scan_on_push = false
EOF
mkdir -p admin
ssh-keygen -q -t ed25519 -N '' -C admin@package-test -f admin/id_ed25519
$FNODE --config /etc/ferry/node.toml init --owner git:ferry --admin-key admin/id_ed25519.pub

mkdir -p /run/sshd
start_sshd() { # dir ip port account
    local d=$1 ip=$2 port=$3 account=$4
    mkdir -p "$d"
    ssh-keygen -q -t ed25519 -N '' -C "package-test-$ip" -f "$d/host_key"
    # StrictModes stays on: the accounts' homes and keys must pass as they are.
    /usr/sbin/sshd -f /dev/null -E "$d/sshd.log" \
        -o "ListenAddress=$ip:$port" -o "HostKey=$d/host_key" -o "AllowUsers=$account" \
        -o "PidFile=$d/sshd.pid" -o UsePAM=no -o PasswordAuthentication=no \
        -o KbdInteractiveAuthentication=no -o "Subsystem=sftp internal-sftp" \
        -o DisableForwarding=yes -o PermitTTY=no
    for _ in $(seq 50); do [ -s "$d/sshd.pid" ] && return 0; sleep 0.1; done
    die "sshd on $ip did not start; see $d/sshd.log"
}
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('$1', 0)); print(s.getsockname()[1])"; }
NODE_PORT=$(free_port $NODE_IP)
CLIENT_PORT=$(free_port $CLIENT_IP)
start_sshd "$W/node" $NODE_IP "$NODE_PORT" git
start_sshd "$W/client" $CLIENT_IP "$CLIENT_PORT" ferry
NODE_HOSTKEY=$(cut -d' ' -f1,2 node/host_key.pub)
echo "[$NODE_IP]:$NODE_PORT $NODE_HOSTKEY" > admin/known_hosts
ADMIN_SSH="ssh -F /dev/null -i $W/admin/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$W/admin/known_hosts -o StrictHostKeyChecking=yes"

say "client: the data, client.toml, ferry init"
mkdir -p www/docs www/empty
printf 'Welcome\n' > www/index.html
printf 'ünïcödé\n' > "www/docs/manual page.txt"
ln -s index.html www/home.html
head -c 1000000 /dev/urandom > www/docs/blob.bin
# The client's ferry account owns what it backs up here, so its restore
# can give every file back its owner.
chown -R ferry:ferry www
install -d -o ferry -g ferry -m 0750 git restored
cat > /etc/ferry/client.toml <<EOF
name = "host-a"
state_dir = "/var/lib/ferry"

[export]
address = "$CLIENT_IP"
port = $CLIENT_PORT
user = "ferry"
dir = "/var/lib/ferry/export"
git_roots = ["$W/git"]

[[node]]
name = "backup1"
url = "ssh://git@$NODE_IP:$NODE_PORT/queue/host-a.git"
host_key = "$NODE_HOSTKEY"

[gate]
authorized_keys = "/var/lib/ferry/.ssh/authorized_keys"

[[source]]
name = "www"
module = "fs"
path = "$W/www"
EOF
as_ferry $FERRY --config /etc/ferry/client.toml --json init --host-key client/host_key.pub > init.json
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "enrolling host-a (one push to gitosis-admin, as git over ssh)"
GIT="git -c user.name=Admin -c user.email=admin@package-test -c init.defaultBranch=master"
GIT_SSH_COMMAND="$ADMIN_SSH" $GIT clone -q "ssh://git@$NODE_IP:$NODE_PORT/gitosis-admin.git" admin/gitosis-admin
json "['public_key']" < init.json > admin/gitosis-admin/keydir/host-a.pub
{ echo; json "['gitosis_section']" < init.json; } >> admin/gitosis-admin/gitosis.conf
(cd admin/gitosis-admin && $GIT add -A && $GIT commit -q -m "Enroll host-a" \
    && GIT_SSH_COMMAND="$ADMIN_SSH" $GIT push -q origin master)
as_ferry $FNODE --config /etc/ferry/node.toml pull-key host-a > pull-key.pub
as_ferry $FERRY --config /etc/ferry/client.toml authorize-node backup1 --key "$W/pull-key.pub" >/dev/null

say "backup: ferry backup www --send; scan as the ferry account"
as_ferry $FERRY --config /etc/ferry/client.toml backup www --send >/dev/null
stored() {
    as_ferry $FNODE --config /etc/ferry/node.toml --json list | python3 -c '
import json,sys
print(sum(len(c["artifacts"]) for c in json.load(sys.stdin)))'
}
n=0
for _ in 1 2 3; do
    as_ferry $FNODE --config /etc/ferry/node.toml scan > scan.out 2>&1 || { cat scan.out; die "scan failed"; }
    n=$(stored)
    [ "$n" -ge 1 ] && break
done
[ "$n" -ge 1 ] || { cat scan.out; as_ferry $FNODE --config /etc/ferry/node.toml events --last 20; die "nothing stored"; }
! grep -i "permission denied" scan.out || die "the scan as ferry hit a permission error"
[ -s /srv/ferry/web/catalog/catalog.json ] || die "the scan as ferry published no catalog"
grep -q '"host-a"' /srv/ferry/web/catalog/catalog.json || die "the published catalog lacks host-a"

say "restore as the ferry account, compared with the original"
as_ferry $FNODE --config /etc/ferry/node.toml restore host-a www --to "$W/restored/www" >/dev/null
diff -r --no-dereference www restored/www || die "restored directory differs"
[ "$(readlink restored/www/home.html)" = index.html ] || die "symlink not restored"

say "apt-get remove, then purge: the backups stay"
for pidfile in "$W"/*/sshd.pid; do kill "$(cat "$pidfile")"; done
close_masters
backups=$(find /srv/ferry/data -type f | sort | xargs sha256sum)
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q ferry ferry-node
[ ! -e /usr/bin/ferry-node ] && [ ! -e /usr/bin/ferry ] || die "binaries left after remove"
[ -f /etc/ferry/node.toml ] || die "remove must keep the conffiles"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ferry ferry-node
[ ! -e /etc/ferry/node.toml ] && [ ! -e /etc/ferry/client.toml ] || die "purge left the conffiles"
[ "$(find /srv/ferry/data -type f | sort | xargs sha256sum)" = "$backups" ] || die "purge touched the backups"
getent passwd git ferry >/dev/null || die "purge removed the accounts"
# Asked explicitly, purge deletes the backups (the postrm inside the .deb).
dpkg-deb -e "$REPO"/target/debian/ferry-node_*.deb control
FERRY_PURGE_BACKUPS=yes control/postrm purge
[ ! -e /srv/ferry ] || die "FERRY_PURGE_BACKUPS=yes left /srv/ferry"
say "package test passed (cleaning up)"
