#!/usr/bin/env bash
# Ferry on one machine, for real: a backup node and two clients on loopback
# (each with its own private OpenSSH sshd), a git repository, a directory
# and a PostgreSQL database backed up through the queue repos, restored and
# compared with the originals; the directory again as a snapshot tree, twice
# (one file changed: `ferry-node diff` names it, the rest are hard links),
# used in place with `ferry-node rescue` (an overlay: nothing copied, writes
# never reach the backup) and undone; `ferry agent` watching the tree, so a
# file written there is in a node snapshot seconds later; then cgit shows the mirrors behind
# passwords (the administrator sees every client, host-a only its own
# mirrors).
#
#   deploy/quickstart.sh          # as root: install what is missing, build, run
#   deploy/quickstart.sh --stop   # stop the demo's servers (by their pid files)
# From another account it runs itself again through sudo.
#
# Everything lives in $FERRY_QUICKSTART_DIR (default /var/tmp/ferry-quickstart);
# nothing under /etc is changed and the system's own sshd, nginx and
# PostgreSQL services are not used.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DIR=${FERRY_QUICKSTART_DIR:-/var/tmp/ferry-quickstart}
NODE_IP=127.0.0.42
A_IP=127.0.0.43
B_IP=127.0.0.44
SSH_PORT=2222
PG_PORT=5433
WEB_PORT=8080

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

stop_all() {
    # A rescue view left mounted by an interrupted run.
    if [ -d "$DIR/rescue/www" ] && mountpoint -q "$DIR/rescue/www"; then
        "$REPO/target/release/ferry-node" --config "$DIR/node/node.toml" rescue --undo "$DIR/rescue/www" >/dev/null || true
    fi
    for pidfile in "$DIR"/*/agent.pid "$DIR"/*/sshd.pid "$DIR"/web/nginx.pid "$DIR"/web/fcgiwrap.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ -f "$DIR/pg/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true
    fi
    # The node's ssh connection masters (ControlPersist) end on their own
    # within a minute; ask each to exit now through its own socket.
    [ -d "$DIR" ] || return 0
    find "$DIR" -type s -print0 | while IFS= read -r -d '' sock; do
        ssh -F /dev/null -o ControlPath="$sock" -O exit quickstart >/dev/null 2>&1 || true
    done
}

# Root starts the private sshd, PostgreSQL and nginx instances; from another
# account the script runs itself again through sudo when sudo is there.
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root: it starts private sshd, PostgreSQL and nginx instances"
    exec sudo --preserve-env=FERRY_QUICKSTART_DIR -- "$0" "$@"
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

if [ "${1:-}" = "--stop" ]; then
    stop_all
    echo "stopped the quickstart servers (data kept in $DIR)"
    exit 0
fi

say "installing missing Debian packages"
packages="openssh-server openssh-client git postgresql cgit nginx-light fcgiwrap zstd python3 curl gcc pkg-config libssl-dev zlib1g-dev util-linux"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs) and run again"

say "building ferry and ferry-node (release)"
cargo build --release --locked -p ferry-client -p ferry-node
BIN="$REPO/target/release"
FERRY="$BIN/ferry"
FNODE="$BIN/ferry-node"

say "setting up $DIR"
stop_all
rm -rf "$DIR"
mkdir -p "$DIR" && chmod 755 "$DIR"
mkdir -p /run/sshd

start_sshd() { # dir ip authorized_keys
    local d=$1 ip=$2 ak=$3
    mkdir -p "$d"
    [ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C "quickstart-$ip" -f "$d/host_key"
    /usr/sbin/sshd -f /dev/null -E "$d/sshd.log" \
        -o "ListenAddress=$ip:$SSH_PORT" -o "HostKey=$d/host_key" -o "AuthorizedKeysFile=$ak" \
        -o "PidFile=$d/sshd.pid" -o StrictModes=no -o UsePAM=no -o PasswordAuthentication=no \
        -o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password \
        -o "Subsystem=sftp internal-sftp" -o SetEnv=SHLVL=1 -o DisableForwarding=yes -o PermitTTY=no
    for _ in $(seq 50); do [ -s "$d/sshd.pid" ] && return 0; sleep 0.1; done
    die "sshd on $ip did not start; see $d/sshd.log"
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# --- the backup node ------------------------------------------------------
say "backup node backup1 on $NODE_IP:$SSH_PORT (ferry-node init = gitosis-init)"
mkdir -p "$DIR/node/admin"
cat > "$DIR/node/node.toml" <<EOF
name = "backup1"
base_dir = "$DIR/node/srv"
program = "$FNODE"
authorized_keys = "$DIR/node/srv/.ssh/authorized_keys"
EOF
ssh-keygen -q -t ed25519 -N '' -C admin@quickstart -f "$DIR/node/admin/id_ed25519"
"$FNODE" --config "$DIR/node/node.toml" init --admin-key "$DIR/node/admin/id_ed25519.pub"
start_sshd "$DIR/node" "$NODE_IP" "$DIR/node/srv/.ssh/authorized_keys"
NODE_HOSTKEY=$(cut -d' ' -f1,2 "$DIR/node/host_key.pub")
echo "[$NODE_IP]:$SSH_PORT $NODE_HOSTKEY" > "$DIR/node/admin/known_hosts"
ADMIN_SSH="ssh -F /dev/null -i $DIR/node/admin/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$DIR/node/admin/known_hosts -o StrictHostKeyChecking=yes"

# --- two clients ----------------------------------------------------------
make_client() { # name ip extra-toml
    local name=$1 ip=$2 extra=$3 d="$DIR/$1"
    mkdir -p "$d/srv/git" "$d/export"
    : > "$d/authorized_keys"
    start_sshd "$d" "$ip" "$d/authorized_keys"
    cat > "$d/client.toml" <<EOF
name = "$name"
state_dir = "$d/state"

[export]
address = "$ip"
port = $SSH_PORT
user = "root"
dir = "$d/export"
git_roots = ["$d/srv/git"]

[[node]]
name = "backup1"
url = "ssh://root@$NODE_IP:$SSH_PORT/queue/$name.git"
host_key = "$NODE_HOSTKEY"

[gate]
authorized_keys = "$d/authorized_keys"
$extra
EOF
    "$FERRY" --config "$d/client.toml" --json init --host-key "$d/host_key.pub" > "$d/init.json"
}
say "clients host-a ($A_IP) and host-b ($B_IP), each with its own sshd; ferry init"
mkdir -p "$DIR/host-a/www/docs" "$DIR/host-a/www/empty"
printf 'Welcome to host-a\n' > "$DIR/host-a/www/index.html"
printf 'manual\n' > "$DIR/host-a/www/docs/manual page.txt"
printf 'ünïcödé\n' > "$DIR/host-a/www/docs/ünïcödé.txt"
ln -s index.html "$DIR/host-a/www/home.html"
head -c 3000000 /dev/urandom > "$DIR/host-a/www/docs/blob.bin"
make_client host-a "$A_IP" "
[[source]]
name = \"www\"
module = \"fs\"
path = \"$DIR/host-a/www\"

[[source]]
name = \"site\"
module = \"fs\"
mode = \"tree\"
path = \"$DIR/host-a/www\"
watch = true

[agent]
quiet = \"2s\"
max_delay = \"10s\"
"
say "PostgreSQL for host-b on $B_IP:$PG_PORT"
mkdir -p "$DIR/pg/data" "$DIR/pg/sock"
chown -R postgres:postgres "$DIR/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg/data" --auth-local=trust \
    --auth-host=scram-sha-256 -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/log" -w \
    -o "-k $DIR/pg/sock -h $B_IP -p $PG_PORT" start >/dev/null
PSQL="runuser -u postgres -- psql -X -q -A -t -h $DIR/pg/sock -p $PG_PORT"
$PSQL -d postgres -c "CREATE DATABASE shop"
$PSQL -d shop -c "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
    INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 1000) g;
    INSERT INTO items VALUES (0, 'Käse ☺', 3.50);"
make_client host-b "$B_IP" "
[[source]]
name = \"shop\"
module = \"postgresdb\"
database = \"shop\"
os_user = \"postgres\"
host = \"$DIR/pg/sock\"
port = $PG_PORT
"

# --- enrollment: one reviewed commit to gitosis-admin ---------------------
say "enrolling both clients with one push to gitosis-admin"
GIT="git -c user.name=Admin -c user.email=admin@quickstart -c init.defaultBranch=master"
GIT_SSH_COMMAND="$ADMIN_SSH" $GIT clone -q "ssh://root@$NODE_IP:$SSH_PORT/gitosis-admin.git" "$DIR/node/admin/gitosis-admin"
for c in host-a host-b; do
    json "['public_key']" < "$DIR/$c/init.json" > "$DIR/node/admin/gitosis-admin/keydir/$c.pub"
    { echo; json "['gitosis_section']" < "$DIR/$c/init.json"; } >> "$DIR/node/admin/gitosis-admin/gitosis.conf"
    # host-a may browse its own mirrors in the web view (host-b may not).
    if [ "$c" = host-a ]; then echo "web = yes" >> "$DIR/node/admin/gitosis-admin/gitosis.conf"; fi
    # Where host-a's snapshot trees may come from (README: Snapshot trees).
    if [ "$c" = host-a ]; then echo "tree-roots = $DIR/host-a/www" >> "$DIR/node/admin/gitosis-admin/gitosis.conf"; fi
    # What the node must receive and how often (README: Monitoring).
    if [ "$c" = host-a ]; then src="project:push www:1d site:1d"; else src="shop:1d"; fi
    echo "sources = $src" >> "$DIR/node/admin/gitosis-admin/gitosis.conf"
done
(cd "$DIR/node/admin/gitosis-admin" && $GIT add -A && $GIT commit -q -m "Enroll host-a and host-b" \
    && GIT_SSH_COMMAND="$ADMIN_SSH" $GIT push -q origin master)
for c in host-a host-b; do
    "$FNODE" --config "$DIR/node/node.toml" pull-key "$c" > "$DIR/$c/pull-key.pub"
    "$FERRY" --config "$DIR/$c/client.toml" authorize-node backup1 --key "$DIR/$c/pull-key.pub" >/dev/null
done

# --- backups --------------------------------------------------------------
say "host-a: a git push to its repository requests the backup by itself"
$GIT init -q --bare "$DIR/host-a/srv/git/project.git"
"$FERRY" --config "$DIR/host-a/client.toml" hook install "$DIR/host-a/srv/git/project.git" >/dev/null
$GIT clone -q "$DIR/host-a/srv/git/project.git" "$DIR/host-a/work" 2>/dev/null
(cd "$DIR/host-a/work" && echo "# project" > README && $GIT add README && $GIT commit -q -m "first" \
    && $GIT tag v1 && echo "more" >> README && $GIT commit -q -am "second" && $GIT push -q origin master v1)
say "host-a: backup of the directory; host-b: backup of the database"
"$FERRY" --config "$DIR/host-a/client.toml" backup www --send >/dev/null
"$FERRY" --config "$DIR/host-b/client.toml" backup shop --send >/dev/null

say "waiting for the node to pull and store everything"
for _ in $(seq 120); do
    n=$("$FNODE" --config "$DIR/node/node.toml" --json list | python3 -c '
import json,sys
l=json.load(sys.stdin)
print(sum(len(c["git"]) + len(c["artifacts"]) for c in l))')
    [ "$n" -ge 3 ] && break
    sleep 0.5
done
[ "$n" -ge 3 ] || { "$FNODE" --config "$DIR/node/node.toml" events --last 20; die "the node did not store all three backups"; }

# --- restores, compared with the originals --------------------------------
say "restoring and comparing"
R="$DIR/restored"
mkdir -p "$R"
"$FNODE" --config "$DIR/node/node.toml" restore host-a project --to "$R/project.git"
a=$(git --git-dir="$DIR/host-a/srv/git/project.git" for-each-ref --format='%(objectname) %(refname)')
b=$(git --git-dir="$R/project.git" for-each-ref --format='%(objectname) %(refname)')
[ "$a" = "$b" ] || die "restored repository refs differ"
git --git-dir="$R/project.git" fsck --strict --no-dangling --no-progress
echo "  git repository: same refs and objects, fsck clean"
"$FNODE" --config "$DIR/node/node.toml" restore host-a www --to "$R/www"
diff -r --no-dereference "$DIR/host-a/www" "$R/www" || die "restored directory differs"
[ "$(readlink "$R/www/home.html")" = "index.html" ] || die "symlink not restored"
echo "  directory: identical (diff -r, symlink kept)"
"$FNODE" --config "$DIR/node/node.toml" restore host-b shop --into-db shop_restored \
    --db-user postgres --db-host "$DIR/pg/sock" --db-port "$PG_PORT" --restore-host "$B_IP"
q="SELECT id, name, price FROM items ORDER BY id"
[ "$($PSQL -d shop -c "$q" | sha256sum)" = "$($PSQL -d shop_restored -c "$q" | sha256sum)" ] \
    || die "restored database differs"
echo "  database: shop_restored has the same rows as shop (replayed as the one-time role"
echo "            ferry_restore_shop_restored, which owns only that database and can no longer log in)"

# --- snapshot trees: a second backup, diff, rescue --------------------------
say "host-a: the same directory as a snapshot tree (mode = \"tree\"), twice, one file changed in between"
trees() { "$FNODE" --config "$DIR/node/node.toml" --json find --client host-a --source site \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# files_hashed of the tree scan in `ferry --json backup --send` (two JSON documents).
hashed() { python3 -c '
import json, sys
text, dec, i, n = sys.stdin.read(), json.JSONDecoder(), 0, []
def walk(v):
    if isinstance(v, dict):
        if isinstance(v.get("files_hashed"), int): n.append(v["files_hashed"])
        for x in v.values(): walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
while i < len(text):
    if text[i].isspace(): i += 1; continue
    v, i = dec.raw_decode(text, i); walk(v)
print(sum(n))'; }
tree_backup() { # expected number of snapshots afterwards
    h=$("$FERRY" --config "$DIR/host-a/client.toml" --json backup site --send | hashed)
    for _ in $(seq 120); do [ "$(trees)" -ge "$1" ] && break; sleep 0.5; done
    [ "$(trees)" -ge "$1" ] || { "$FNODE" --config "$DIR/node/node.toml" events --last 20; die "the node did not store snapshot $1"; }
    echo "  snapshot $1 stored; the client hashed $h file(s)"
}
tree_backup 1
printf 'Welcome to host-a, version 2\n' > "$DIR/host-a/www/index.html"
tree_backup 2
SNAPS="$DIR/node/srv/data/host-a/trees/site"
mapfile -t S < <(find "$SNAPS" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | sort)
[ "$(stat -c %i "${S[0]}/docs/blob.bin")" = "$(stat -c %i "${S[1]}/docs/blob.bin")" ] \
    || die "the unchanged blob.bin is not shared between the snapshots"
echo "  unchanged files are one inode in both snapshots (docs/blob.bin: inode $(stat -c %i "${S[1]}/docs/blob.bin"), $(stat -c %h "${S[1]}/docs/blob.bin") links)"
say "ferry-node diff host-a site: what changed between the two snapshots"
"$FNODE" --config "$DIR/node/node.toml" diff host-a site
"$FNODE" --config "$DIR/node/node.toml" --json diff host-a site | grep -q index.html || die "diff does not name index.html"

say "ferry agent on host-a: a file written under the watched tree reaches the node in seconds"
"$FERRY" --config "$DIR/host-a/client.toml" agent > "$DIR/host-a/agent.log" 2>&1 &
echo $! > "$DIR/host-a/agent.pid"
watching() { "$FERRY" --config "$DIR/host-a/client.toml" --json status --agent 2>/dev/null \
    | python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["sources"] if x["name"]=="site"]; sys.exit(0 if s and s[0]["watched_dirs"] > 0 else 1)'; }
for _ in $(seq 100); do watching && break; sleep 0.2; done
watching || die "the agent does not watch host-a's tree; see $DIR/host-a/agent.log"
T0=$(date +%s.%N)
printf 'written while the agent watches\n' > "$DIR/host-a/www/docs/new.html"
newest() { find "$SNAPS" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | sort | tail -n 1; }
for _ in $(seq 240); do [ -f "$(newest)/docs/new.html" ] && break; sleep 0.25; done
[ -f "$(newest)/docs/new.html" ] || die "the agent's change did not reach the node; see $DIR/host-a/agent.log"
echo "  docs/new.html is in the node's snapshot $(basename "$(newest)") $(python3 -c "import time; print('%.1f' % (time.time() - $T0))") s after it was written (quiet = 2s, then a pull)"
kill "$(cat "$DIR/host-a/agent.pid")" && wait "$(cat "$DIR/host-a/agent.pid")" 2>/dev/null || true
rm -f "$DIR/host-a/agent.pid"

say "ferry-node rescue host-a site: the newest snapshot usable in place, nothing copied"
VIEW="$DIR/rescue/www"
mkdir -p "$DIR/rescue"
RESCUED="shown as a command"
RESCUE=("$FNODE" --config "$DIR/node/node.toml" rescue host-a site "$VIEW")
if [ "$(id -u)" -ne 0 ]; then
    echo "  (rescue mounts an overlay: as root, run)  ${RESCUE[*]}"
elif ! "${RESCUE[@]}"; then
    echo "  rescue needs overlayfs with metacopy (Linux >= 6.5) and may not mount inside some containers; skipped"
    RESCUED="not mounted here"
else
    ls -l "$VIEW"
    echo "  index.html through the view: $(cat "$VIEW/index.html")"
    printf 'edited on the rescue side\n' > "$VIEW/index.html"
    rm "$VIEW/home.html"
    [ "$(cat "${S[1]}/index.html")" = "Welcome to host-a, version 2" ] || die "a write in the view reached the backup"
    [ -L "${S[1]}/home.html" ] || die "a delete in the view reached the backup"
    echo "  wrote and deleted in the view: the snapshot is unchanged (the writes are in the overlay's upper layer)"
    "$FNODE" --config "$DIR/node/node.toml" rescue --undo "$VIEW"
    RESCUED="rescued and undone"
fi

# --- cgit -----------------------------------------------------------------
say "cgit behind nginx on $NODE_IP:$WEB_PORT, with passwords (deploy/nginx-cgit.conf)"
# The node wrote the web view's access files ($DIR/node/srv/web) when it
# applied the enrollment; passwords are set on the node, never in gitosis.conf.
ADMIN_PW=$("$FNODE" --config "$DIR/node/node.toml" web passwd admin@quickstart --random)
HOST_A_PW=$("$FNODE" --config "$DIR/node/node.toml" web passwd host-a --random)
W="$DIR/web"
mkdir -p "$W/tmp"
cp /etc/nginx/fastcgi_params "$W/fastcgi_params"
sed -e "s|@LISTEN@|$NODE_IP:$WEB_PORT|" -e "s|@WEB_DIR@|$DIR/node/srv/web|" -e "s|@FCGIWRAP@|unix:$W/fcgiwrap.sock|" \
    "$REPO/deploy/nginx-cgit.conf" > "$W/site.conf"
cat > "$W/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    access_log $W/access.log;
    client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy; fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;
    include $W/site.conf;
}
EOF
setsid fcgiwrap -s "unix:$W/fcgiwrap.sock" </dev/null >"$W/fcgiwrap.log" 2>&1 &
echo $! > "$W/fcgiwrap.pid"
nginx -c "$W/nginx.conf" -p "$W" -e "$W/error.log"
URL="http://$NODE_IP:$WEB_PORT"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
for _ in $(seq 50); do [ "$(code "$URL/cgit/")" != 000 ] && break; sleep 0.2; done
[ "$(code "$URL/cgit/")" = 401 ] || die "cgit answers without a password; see $W/error.log"
curl -fs -u "admin@quickstart:$ADMIN_PW" "$URL/cgit/" | grep -q project || die "cgit does not list the mirror; see $W/error.log"
curl -fs -u "host-a:$HOST_A_PW" "$URL/c/host-a/git/" | grep -q project || die "host-a's view does not list its mirror"
[ "$(code -u "host-a:$HOST_A_PW" "$URL/c/host-b/git/")" = 401 ] || die "host-a's password opens host-b's view"
echo "  no password: 401; the administrator sees every client; host-a only its own mirrors"

# --- the published catalog and the history page ---------------------------
say "published catalog and history page (README: Monitoring)"
# Every scan rewrites catalog.json and the page beside it; publish once
# more so the page shows all three sources even if the last scan was early.
"$FNODE" --config "$DIR/node/node.toml" publish >/dev/null
[ "$(code "$URL/history/")" = 401 ] || die "the history page answers without a password"
curl -fs -u "admin@quickstart:$ADMIN_PW" "$URL/history/" | grep -q host-b || die "the history page does not show host-b; see $W/error.log"
curl -fs -u "admin@quickstart:$ADMIN_PW" "$URL/catalog.json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["schema"] == "ferry-catalog/1", d["schema"]
n = sum(len(c["sources"]) for c in d["clients"])
print("  catalog.json: schema %s, %d clients, %d sources" % (d["schema"], len(d["clients"]), n))
' || die "catalog.json is not the published schema"
# The check another host runs from cron: it reads the published catalog
# over HTTP (password from a netrc file, never in the URL) and mails when a
# source is late, small or missing or the node's catalog goes stale.
mkdir -p "$DIR/checker"
printf 'machine %s login admin@quickstart password %s\n' "$NODE_IP" "$ADMIN_PW" > "$DIR/checker/netrc"
chmod 600 "$DIR/checker/netrc"
cat > "$DIR/checker/node.toml" <<EOF
name = "checker"
base_dir = "$DIR/checker/srv"
program = "$FNODE"

[check]
netrc = "$DIR/checker/netrc"
EOF
"$FNODE" --config "$DIR/checker/node.toml" check --from "$URL/catalog.json" \
    || die "check --from $URL/catalog.json found a problem"

# --- where to look --------------------------------------------------------
say "done: three backups stored, restored and identical; two snapshot trees, diffed, a third from the agent seconds after a write; $RESCUED"
echo
echo "Browse the mirrors:   $URL/cgit/  (user admin@quickstart, password $ADMIN_PW)"
echo "host-a's own view:    $URL/c/host-a/git/  (user host-a, password $HOST_A_PW)"
echo "                      passwords are shown once; new ones: $FNODE --config $DIR/node/node.toml web passwd USER"
echo "History page:         $URL/history/  (same administrator password: clients x sources, charts, drills)"
echo "Published catalog:    $URL/catalog.json"
echo "Check from elsewhere: $FNODE --config $DIR/checker/node.toml check --from $URL/catalog.json"
echo "What the node holds:  $FNODE --config $DIR/node/node.toml list"
echo "Snapshot trees:       $FNODE --config $DIR/node/node.toml diff host-a site   (and: rescue host-a site DIR, rescue --undo DIR)"
echo
"$FNODE" --config "$DIR/node/node.toml" list
echo
echo "Client status:        $FERRY --config $DIR/host-a/client.toml status"
echo "Event journal:        $FNODE --config $DIR/node/node.toml events"
echo "Stop the demo:        $REPO/deploy/quickstart.sh --stop"
