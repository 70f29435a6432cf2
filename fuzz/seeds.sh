#!/usr/bin/env bash
# Writes the seed corpora for the fuzz targets into fuzz/corpus/<target>/
# (gitignored; libFuzzer adds what it finds there too). The samples are the
# valid and hostile examples of shared/SECURITY.md (RP-*, GU-*, AC-*, AX-*)
# and shared/GITOSIS.md, generated here rather than committed (SECURITY.md
# C13). Idempotent: existing seed files are overwritten, other corpus files
# are left alone.
#
#   fuzz/seeds.sh            # all targets
#   fuzz/seeds.sh request    # one target
#
# Needs bash, printf and base64; the archive seeds also use python3 (tarfile)
# and, for one compressed seed, zstd; without them those seeds are skipped.
set -euo pipefail
cd "$(dirname "$0")"

only="${1:-}"
n=0
dir=""

start() { # start TARGET: subsequent `seed` calls write into its corpus
    dir="corpus/$1"
    n=0
    mkdir -p "$dir"
}

seed() { # seed PRINTF-FORMAT: one seed file; \xNN, \r, \n, \t as in printf
    n=$((n + 1))
    printf -- "$1" >"$dir/seed-$(printf %03d "$n")"
}

seed_raw() { # seed_raw: one seed file from stdin
    n=$((n + 1))
    cat >"$dir/seed-$(printf %03d "$n")"
}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

# An ssh-ed25519 / ecdsa-sha2-nistp256 public key in authorized_keys form,
# built from fixed bytes (well-formed blobs; no key generation needed).
ed25519_key() { # ed25519_key BYTE
    printf '\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20' >/tmp/ferry-seed-blob.$$
    head -c 32 /dev/zero | tr '\0' "\\$(printf %03o "$1")" >>/tmp/ferry-seed-blob.$$
    printf 'ssh-ed25519 %s' "$(base64 -w0 </tmp/ferry-seed-blob.$$)"
    rm -f /tmp/ferry-seed-blob.$$
}
ecdsa_key() {
    {
        printf '\x00\x00\x00\x13ecdsa-sha2-nistp256\x00\x00\x00\x08nistp256\x00\x00\x00\x41\x04'
        head -c 64 /dev/zero | tr '\0' '\7'
    } >/tmp/ferry-seed-blob.$$
    printf 'ecdsa-sha2-nistp256 %s' "$(base64 -w0 </tmp/ferry-seed-blob.$$)"
    rm -f /tmp/ferry-seed-blob.$$
}
KEY_A="$(ed25519_key 65)"
KEY_B="$(ed25519_key 66)"
KEY_EC="$(ecdsa_key)"
SHA=6b86b273ff34fce19c6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
SHA0=$(printf '0%.0s' $(seq 64))

# --------------------------------------------------------------------------
if want request; then
    start request
    # valid
    seed 'git git://172.16.0.60/project.git\n'
    seed 'git git://client.example/repo.git\n'
    seed 'git git://client.example/repo.git\r\n' # RP-02 (a): CRLF accepted
    seed 'git ssh://adminbackup@client.example:2222/srv/git/repo.git\n'
    seed 'git https://client.example/r/a_b-c.d/x.git\n'
    seed 'git git://client.example:9418/a/b/c/d/e/f/g/h.git\n'
    seed "sftp 20260101T000000Z sftp://adminbackup@client.example/var/backup/export/app-20260101.tar.zst sha256=$SHA size=1048576 source=app\n"
    seed "sftp 20240229T235959Z sftp://adminbackup@10.0.0.7:2222/e/db.sql.zst sha256=$SHA0 size=0 source=db\n"
    seed "sftp 99991231T235959Z sftp://u@h.example/a sha256=$SHA size=9223372036854775807 source=Z9\n"
    seed 'dummy hello\n'
    seed 'dummy a.b_c-d\n'
    # RP-01 NUL; RP-02 (b), (c) CR
    seed 'git git://client.example/repo\x00/../../etc.git\n'
    seed 'git git://client.example/repo.git\r'
    seed 'git git://client.example/re\rpo.git\n'
    # RP-03 overlong, no LF; RP-04 two requests
    seed "git git://client.example/$(printf 'a%.0s' $(seq 5000))"
    seed 'git git://client.example/a.git\ngit git://client.example/b.git\n'
    # RP-05 grammar deviations
    seed 'GIT git://client.example/repo.git\n'
    seed 'git  git://client.example/repo.git\n'
    seed 'git\tgit://client.example/repo.git\n'
    seed ' git git://client.example/repo.git\n'
    seed 'git git://client.example/repo.git \n'
    seed 'git\n'
    seed 'git git://client.example/repo.git extra\n'
    seed 'sftp 20260101T000000Z sftp://adminbackup@client.example/x\n'
    seed '# comment\n'
    seed "sftp 20260101T000000Z sftp://a@client.example/x size=1 sha256=$SHA source=app\n"
    seed "sftp 20260101T000000Z sftp://a@client.example/x sha256=$SHA sha256=$SHA size=1 source=app\n"
    # RP-06 BOM, invalid UTF-8
    seed '\xef\xbb\xbfgit git://client.example/repo.git\n'
    seed 'git git://client.example/\xff\xfe.git\n'
    # RP-07 / RP-08 non-ASCII, confusables, bidi
    seed 'git git://cl\xd1\x96ent.example/repo.git\n'
    seed 'git git://\xef\xbd\x83lient.example/repo.git\n'
    seed 'git git://client.example\xe2\x80\x8b/repo.git\n'
    seed 'git git://xn--clent-7ve.example/repo.git\n'
    seed "sftp 20260101T000000Z sftp://adminbackup@client.example/var/backup/export/app-\xe2\x80\xaeexe.tar.zst sha256=$SHA size=1 source=app\n"
    # RP-09 traversal in names
    seed 'git git://client.example/../../../srv/backup/data/clientb/x.git\n'
    seed 'git git://client.example/..\n'
    seed 'git git://client.example/.\n'
    seed 'git git://client.example/.git\n'
    seed 'git git://client.example/repo.git/\n'
    seed 'git git://client.example/%%2e%%2e%%2f%%2e%%2e%%2fx.git\n'
    seed 'git git://client.example/a\\..\\..\\b.git\n'
    seed "dummy $(printf 'n%.0s' $(seq 300))\n"
    # RP-10 timestamps
    for s in 99999999999999999999 -1 0 +1767225600 1e10 0x6955B900 017672256 1767225600.5 253402300800 \
        20260230T000000Z 20261301T000000Z 20260101T240000Z 20260101T235960Z 19691231T235959Z 20250229T000000Z; do
        seed "sftp $s sftp://adminbackup@client.example/x sha256=$SHA size=1 source=app\n"
    done
    # RP-11 digests
    for d in "${SHA:1}" "${SHA}0" "$(echo "$SHA" | tr a-f A-F)" "sha256:$SHA" "g${SHA:1}"; do
        seed "sftp 20260101T000000Z sftp://a@client.example/x sha256=$d size=1 source=app\n"
    done
    for s in 01 -1 +1 1e3 9223372036854775808 18446744073709551616 ''; do
        seed "sftp 20260101T000000Z sftp://a@client.example/x sha256=$SHA size=$s source=app\n"
    done
    # AC-10 identity in content
    seed 'client=clientb git git://client.example/r.git\n'
    # GU-01..GU-05, GU-11, GU-13, GU-15 URLs
    for u in 'ext::sh -c touch%% /tmp/pwned' 'ext::sh' 'fd::17' 'foo::bar' 'hg::https://client.example/r' \
        'persistent-https://client.example/r' 'file:///etc' '/srv/backup/data/clientb/repo.git' './x' \
        '../clientb/repo.git' '~backupq/queue/clientb.git' 'client.example:repo.git' 'C:/x' \
        '--upload-pack=touch /tmp/x' '-u/bin/sh' '--config=core.sshCommand=id' \
        'git://client.example/--upload-pack=x' 'ssh://-oProxyCommand=sh%%20-c%%20id/x' \
        'ssh://-oProxyCommand=id@client.example/r' 'git://client.example:22/r' 'git://client.example:0/r' \
        'git://client.example:65536/r' 'git://client.example:-1/r' 'git://client.example:+22/r' \
        'git://client.example:022/r' 'https://user:token@client.example/repo.git' 'git://user@client.example/r' \
        'https://client.example/%%0ahost=evil.example/r.git' 'https://client.example/%%0d/r' \
        'http://client.example/r' 'git+ssh://client.example/r' 'GIT://client.example/r' \
        'git://[::1]/r' 'git://127.1/r' 'git://2130706433/r' 'git://0x7f.1/r' 'git://01.2.3.4/r' \
        'git://256.1.1.1/r' 'git://a-.example/r' 'git://client.example./r' 'git://Client.example/r' \
        'git://client.example/r?x=1' 'git://client.example/r#f' 'git://client.example'; do
        seed "git $u\n"
    done
    seed "sftp 20260101T000000Z sftp://-oProxyCommand=id@client.example/var/backup/export/a sha256=$SHA size=1 source=a\n"
    seed "sftp 20260101T000000Z sftp://adminbackup@-oProxyCommand=id/x sha256=$SHA size=1 source=a\n"
    seed "sftp 20260101T000000Z sftp://client.example/x sha256=$SHA size=1 source=a\n"
    echo "seeds: request: $n"
fi

# --------------------------------------------------------------------------
if want ssh_command; then
    start ssh_command
    # GITOSIS.md 2.2 / 2.3 and SECURITY.md AC-01, AC-02, AC-04
    for c in "git-upload-pack 'foo.git'" "git-upload-pack 'foo'" "git-upload-pack '/foo.git'" \
        "git-upload-pack '~/foo.git'" "git-upload-pack 'sub/dir/it'\\''s.git'" "git-receive-pack 'foo.git'" \
        "git-upload-archive 'foo.git'" "git upload-pack 'foo'" "git receive-pack 'foo'" \
        "git upload-archive 'public/docs'" "  git-upload-pack 'foo'" "git-upload-pack 'foo' " \
        "git-upload-pack" "git" "git upload-pack" "git foo 'bar'" "GIT-UPLOAD-PACK 'foo'" \
        "git git-upload-pack 'foo'" "git shell -c 'foo'" "git-upload-pack foo" 'git-upload-pack "foo"' \
        "git-upload-pack 'foo' 'bar'" "git-upload-pack 'foo" "git-upload-pack ''" "git-upload-pack '/'" \
        "git-upload-pack '--upload-pack=touch /tmp/x'" "git-upload-pack '///a/b.git'" "git-upload-pack 'a..b'" \
        "git-upload-pack 'a@b.c'" "git-upload-pack '../x'" "git-upload-pack 'a/../b'" "git-upload-pack '.hidden'" \
        "git-upload-pack 'a/.git/b'" "git-upload-pack '-x'" "git-upload-pack 'a;b'" "git-upload-pack 'a\$b'" \
        "git-receive-pack 'queue/clientb.git'" "git-receive-pack 'queue/clienta/../clientb.git'" \
        "git-receive-pack '/queue/clientb.git'" "git-receive-pack 'queue//clientb.git'" \
        "git-receive-pack 'queue/clientb.git/'" "git-receive-pack 'queue/CLIENTB.git'" \
        "git-receive-pack '~backupq/queue/clientb.git'" \
        "git-receive-pack 'queue/clienta.git' 'queue/clientb.git'" 'git-receive-pack "queue/clientb.git"' \
        "git-receive-pack 'queue/clienta.git'" "git receive-pack 'queue/clienta.git'" \
        "git-receive-pack '//queue/clienta'" "git-receive-pack 'queue/clienta.git.git'" \
        "git-receive-pack 'VISIBLE'" "git-upload-pack 'evil'" "git-upload-pack 'dotgit'" "git-upload-pack 'dash'" \
        "git-receive-pack 'mine'" "git-receive-pack 'clienta.git'" "git-receive-pack 'gitosis-admin.git'" \
        "git-receive-pack 'typo'" "git-receive-pack 'ro'" "sh" "cat /etc/passwd" "id; cat /etc/passwd" \
        "git-upload-archive 'queue/clientb.git'" "git-upload-pack '--help'" "git-upload-pack --help" "scp -t /tmp" \
        "sftp" "internal-sftp" "/usr/lib/openssh/sftp-server" "git-upload-pack 'x'; sh" "git-upload-pack \$(id)" \
        "git-upload-pack \`id\`" ""; do
        seed_raw < <(printf '%s' "$c")
    done
    seed 'git\tupload-pack \t '"'"'foo'"'"
    seed 'git-upload-pack\t'"'"'foo'"'"
    seed 'git-upload-pack '"'"'foo'"'"'\n'
    seed 'git-receive-pack '"'"'queue/clienta.git'"'"'\ngit-receive-pack '"'"'queue/clientb.git'"'"
    seed 'git-upload-pack\x00'"'"'foo'"'"
    seed 'git-upload-pack '"'"'foo\r'"'"
    seed 'git-upload-pack\x0b'"'"'foo'"'"
    seed 'git-upload-pack '"'"'\xff'"'"
    seed 'git-upload-pa\xffck '"'"'x'"'"
    seed 'git-upload-pack '"'"'h\xc3\xa9llo'"'"
    seed_raw < <(printf "git-upload-pack '%s'" "$(printf 'a%.0s' $(seq 4080))") # just under the cap
    seed_raw < <(printf "git-upload-pack '%s'" "$(printf 'a%.0s' $(seq 4100))") # over it
    echo "seeds: ssh_command: $n"
fi

# --------------------------------------------------------------------------
if want gitosis_conf; then
    start gitosis_conf
    # GITOSIS.md 1.9
    seed_raw <<'EOF'
[gitosis]
daemon = no
gitweb = no

[group gitosis-admin]
members = admin@workstation
writable = gitosis-admin

[group backup-hosts]
members = host-a host-b @new-hosts
writable = queue/host-a queue/host-b

[group new-hosts]
members = host-c

[group readers]
members = @all
readonly = public/docs

[repo queue/host-a]
description = backup request queue for host-a
owner = Backup Bot
EOF
    # a complete Ferry enrollment (accepted with a key per user)
    enroll=$(
        cat <<EOF
[gitosis]
loglevel = INFO

[group admins]
members = admin@ws
writable = gitosis-admin

[group readers]
members = @all clienta
readonly = public/docs
map readonly docs = public/docs

[ferry client clienta]
address = client.example
port = 2222
user = adminbackup
hostkey = $KEY_A
git-scheme = ssh
git-roots = /srv/git /home/git
export = /var/backup/export
quota = 500G
max-artifact = 10G
max-objects = 100000
job-timeout = 2h
description = The first client

[ferry client clientb]
address = 10.0.0.7
user = _ferry
hostkey = $KEY_EC
git-scheme = git
git-port = 9418
git-roots = /srv/git
export = /export
EOF
    )
    seed_raw < <(printf '%s\n' "$enroll")
    # the same with hostile additions
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[group steal]\nmembers = clienta\nwritable = queue/clientb\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[group g]\nmembers = clientb\nmap writable x = queue/clienta\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[group adm]\nmembers = @all\nwriteable = gitosis-admin\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[DEFAULT]\ngitweb = maybe\n[group all]\nmembers = nobody\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[group m]\nmembers = clienta\nmap writable a = ../../etc\nmap readonly b = x.git\nmap bogus c = d\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[ferry client clientc]\naddress = 1.2.3.4\nqouta = 1G\n[ferry client ../x]\n[ferry]\n'; })
    seed_raw < <({ printf '%s\n' "$enroll"; printf '[ferry client clientd]\naddress = -oProxyCommand=id\nuser = Root\nhostkey = ssh-dss AAAA\nexport = /a/../b\nport = 0\nquota = 0x10\njob-timeout = 1d\n'; })
    # roots at the request grammar's edge (issue 9): 31 segments and 1022
    # bytes leave room for a request path below; one byte more does not
    deep=""
    for i in $(seq 1 30); do deep+=$(printf '/%032d' "$i"); done
    deep+=/rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr
    seed_raw < <(printf '%s\n' "${enroll/git-roots = \/srv\/git \/home\/git/git-roots = $deep /home/git}")
    seed_raw < <(printf '%s\n' "${enroll/export = \/export/export = ${deep}r}")
    # parser rules and quirks (GITOSIS.md 1.1)
    seed '[group a]\nmembers = x\n  y\n\tz\nwritable: r1 ; comment\nreadonly = r2;not-a-comment\n'
    seed '[group a]\r\nmembers = jdoe\r\nwritable = foo\r\n'
    seed '# comment\n; comment\nrem comment\nREM x\n\n[group a]\nmembers = jdoe\n'
    seed '[group a] trailing text\nmembers = ""\n[group a]\nwritable = more\n'
    seed '[DEFAULT]\nwritable = everything\n[group a]\nmembers = jdoe\n'
    seed 'members = jdoe\n[group a]\n'
    seed 'garbage\n'
    seed '[group a]\nnot an option line\n'
    seed '[group a\nmembers = x\n'
    seed '[]\n'
    seed '  indented = x\n'
    seed '[group a]\nmembers = jdoe\x00\n'
    seed '[group a]\nmembers = jdoe\rx\n'
    seed '[group a]\nmembers = jdoe\x1b[31m\n'
    seed '[group a]\nmembers = \xff\n'
    seed '[group a]\ndescription = caf\xc3\xa9 \xe2\x80\xae\n'
    seed '[group a]\nmembers = @b\n[group b]\nmembers = @a jdoe\n[group c]\nmembers = @all\n'
    seed '[group a]\nmembers = jdoe\nmap writable Visible = real/repo\nmap WRITABLE x = y\n'
    seed '[gitosis]\nrepositories = /etc\ngenerate-files-in = /tmp\nssh-authorized-keys-path = /root/.ssh/authorized_keys\ndaemon = maybe\n'
    seed '[repo foo]\ngitweb = yes\ndaemon = 2\nbogus = 1\n[gitweb]\nhomelink = x\n[other]\n'
    seed '[group a]\nrepositories = elsewhere\nmembers = jdoe\nwritable = foo.git a//b -x\n'
    seed '[a]\nx = y\n[a]\n;\n'
    seed ''
    echo "seeds: gitosis_conf: $n"
fi

# --------------------------------------------------------------------------
if want keys; then
    start keys
    # key lines (SECURITY.md AC-07) and key files
    seed "$KEY_A jdoe@laptop"
    seed "$KEY_A"
    seed "  $KEY_EC\tcomment with spaces  "
    seed "$KEY_A a\n$KEY_B b\n\n   \n"
    seed "$KEY_A a\n$KEY_A again\n"
    seed "$KEY_A a\ncommand=\"/bin/sh\" $KEY_B evil\n"
    seed "command=\"/bin/sh\",no-pty $KEY_A"
    seed "environment=\"LD_PRELOAD=/tmp/x.so\" $KEY_A"
    seed "cert-authority $KEY_A"
    seed "restrict $KEY_A"
    seed "$KEY_A x\r\n"
    seed 'ssh-dss AAAAB3NzaC1kc3MAAACBAP== x'
    seed "ssh-ed25519-cert-v01@openssh.com ${KEY_A#ssh-ed25519 }"
    seed "ecdsa-sha2-nistp256 ${KEY_A#ssh-ed25519 }" # inner type differs
    seed 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 short'
    seed 'ssh-ed25519 not!base64'
    seed 'ssh-ed25519'
    seed 'unknown-type AAAA'
    seed "$KEY_A \xe2\x80\xae comment"
    # authorized_keys files to take over (GITOSIS.md 3.1-3.3)
    seed "# my own key\n$KEY_B me@desk\n### autogenerated by gitosis, DO NOT EDIT\ncommand=\"gitosis-serve jdoe\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty $KEY_A jdoe\ncommand=\"/usr/bin/gitosis-serve x\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty $KEY_B\n"
    seed "command=\"ferry-node serve alice\",restrict $KEY_A\ncommand=\"/usr/bin/ferry-node serve bob@host\",restrict $KEY_B\nfrom=\"10.0.0.1\" $KEY_A\n"
    seed "no newline at end $KEY_A"
    seed '\n\n\r\n'
    echo "seeds: keys: $n"
fi

# --------------------------------------------------------------------------
if want archive_list; then
    start archive_list
    if command -v python3 >/dev/null 2>&1; then
        # AX-* shapes as raw tar streams (the target wraps them in zstd).
        python3 - "$dir" <<'PY'
import io, sys, tarfile

out = sys.argv[1]
count = 0

def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, **kw):
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.size, t.linkname, t.mtime = kind, mode, len(data), link, 1767225600
    for k, v in kw.items():
        setattr(t, k, v)
    return t, data

def archive(entries, fmt=tarfile.GNU_FORMAT, pax=None):
    global count
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax or {}) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if data else None)
    raw = buf.getvalue().rstrip(b"\0")  # keep seeds small; the end marker is re-added below
    raw += b"\0" * (-len(raw) % 512) + b"\0" * 1024
    count += 1
    with open(f"{out}/seed-{count:03d}", "wb") as f:
        f.write(raw)

D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
archive([entry("d", D, mode=0o755), entry("d/a.txt", data=b"hello world"), entry("d/l", L, link="a.txt"),
         entry("d/h", H, link="d/a.txt"), entry("x", data=b"\7" * 700), entry("e/", D)])
archive([entry("./", D), entry("./a", data=b"a"), entry("b/c/d", data=b"deep")])
archive([entry("n" * 150, data=b"long name")])                               # GNU long name
archive([entry("p" * 120 + "/q", data=b"x")], fmt=tarfile.PAX_FORMAT,
        pax={"mtime": "1.5", "SCHILY.xattr.user.k": "v"})
archive([entry("s", L, link="t" * 200)], fmt=tarfile.PAX_FORMAT)              # long link target
archive([entry("ok.txt", data=b"ok"), entry("../../etc/cron.d/x", data=b"* * * * * root id")])  # AX-01
for name in ["/etc/passwd", "//x", "/./x", "a/../../b", "a/./b", "a//b", ".", ".."]:           # AX-02
    archive([entry(name, data=b"x")])
archive([entry("link", L, link="/etc/shadow")])                               # AX-03
archive([entry("up", L, link="../../../../data/clientb")])
archive([entry("a", D), entry("a/up", L, link="../..")])
archive([entry("d", L, link="/tmp/outside"), entry("d/pwn.txt", data=b"x")])  # AX-04
archive([entry("symlink", L, link=".."), entry("symlink/exploit/foo/bar", data=b"x")])
archive([entry("l", L, link="f"), entry("l", data=b"x")])
archive([entry("x", L, link="y/.."), entry("y", L, link="..")])
archive([entry("hl", H, link="/etc/passwd")])                                 # AX-07
archive([entry("hl", H, link="../../../etc/passwd")])
archive([entry("hl", H, link="later"), entry("later", data=b"x")])
archive([entry("null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)])  # AX-09
archive([entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)])
archive([entry("fifo", tarfile.FIFOTYPE)])
for mode in [0o4755, 0o2755, 0o1777, 0o777, 0o666]:                           # AX-10
    archive([entry(f"m{mode:o}", data=b"#!/bin/sh\n", mode=mode)])
archive([entry("cap", data=b"x")], fmt=tarfile.PAX_FORMAT,                     # AX-12
        pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
             "SCHILY.xattr.system.posix_acl_access": "x", "SCHILY.xattr.user.x": "y"})
archive([entry("dup", data=b"1"), entry("dup", data=b"2")])                   # AX-13
archive([entry("dup", data=b"1"), entry("dup", D)])
archive([entry("Case", data=b"1"), entry("case", data=b"2")])                 # AX-14
archive([entry("caf\u00e9", data=b"1"), entry("cafe\u0301", data=b"2")])
archive([entry("bidi\u202etxt.exe", data=b"1"), entry("ctl\x1b[31m", data=b"2")])
archive([entry("/".join(["d"] * 80), data=b"deep")])                          # AX-15
archive([entry("x" * 300, data=b"long component")], fmt=tarfile.PAX_FORMAT)
archive([entry("sparse", tarfile.GNUTYPE_SPARSE, data=b"x")])
archive([entry("cont", tarfile.CONTTYPE, data=b"x")])
archive([entry("t", b"Z", data=b"unknown type")])
print(f"seeds: archive_list: {count} (tar)")
PY
        # A real zstd-compressed archive (the magic selects the as-is path).
        if command -v zstd >/dev/null 2>&1; then
            zstd -q -c <"$dir/seed-001" >"$dir/seed-zst-001"
        fi
    else
        echo "seeds: archive_list: python3 missing, no tar seeds"
    fi
    # Not archives at all.
    n=900
    seed ''
    seed 'not an archive'
    seed '\x28\xb5\x2f\xfd'
    seed '\x28\xb5\x2f\xfd\x00\x38\x01\x00\x00'
fi

# --------------------------------------------------------------------------
if want tree_manifest; then
    start tree_manifest
    # Valid manifests (ferry-tree's grammar, cmds/tree/src/manifest/mod.rs).
    E3=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    seed_raw <<EOF
ferry-tree 1
end 0 0
EOF
    seed_raw <<EOF
ferry-tree 1
d path=etc mode=0755 uid=0 gid=0 user=root group=root mtime=1733300000.000000000
f path=etc/motd mode=0644 uid=0 gid=0 user=root group=root mtime=1733300000.123456789 size=1 sha256=$SHA link=1
f path=etc/motd%20copy mode=0644 uid=0 gid=0 user=root group=root mtime=1733300000.123456789 size=1 sha256=$SHA link=1
l path=etc/x mode=0777 uid=0 gid=0 mtime=-1.500000000 target=../motd
p path=fifo mode=0640 uid=1000 gid=1000 mtime=0.000000000
s path=sock mode=0755 uid=0 gid=0 mtime=0.000000000
c path=tty mode=0620 uid=0 gid=5 user=root group=tty mtime=0.000000000 rdev=4:1
b path=vda mode=0660 uid=0 gid=6 mtime=0.000000000 rdev=254:0
f path=zero mode=4755 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3
end 9 2
EOF
    seed_raw <<EOF
ferry-tree 1
xattrs 1
d path=a mode=0755 uid=0 gid=0 mtime=0.000000000 xattr=user.dir:on%20a%20directory
f path=a%20b mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 xattr=security.selinux:x%00 xattr=user.a%3Ab:%FF
f path=a/%0A%1B[2J%E2%80%AE mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3
end 3 0
EOF
    # One sample of each refusal class.
    seed_raw <<EOF
ferry-tree 2
end 0 0
EOF
    seed 'ferry-tree 1\nxattrs 1\nxattrs 1\nend 0 0\n'
    seed 'ferry-tree 1\r\nend 0 0\n'
    seed "ferry-tree 1\nf path=a mode=0644 gid=0 uid=0 mtime=0.000000000 size=0 sha256=$E3\nend 1 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 colour=red\nend 1 0\n"
    seed "ferry-tree 1\nf path=a mode=644 uid=0 gid=0 mtime=0 size=01 sha256=${E3^^}\nend 1 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=5 sha256=$E3\nend 2 5\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=5 sha256=$E3\n"
    seed "ferry-tree 1\nend 0 0\ngarbage"
    for p in /etc/passwd .. a/../b . ./a a//b a/ a%%00b a%%2Fb a%%2fb; do
        seed "ferry-tree 1\nd path=a mode=0755 uid=0 gid=0 mtime=0.000000000\nf path=$p mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 2 0\n"
    done
    seed "ferry-tree 1\nf path=$(printf 'n%.0s' $(seq 256)) mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 1 0\n"
    seed "ferry-tree 1\nl path=a mode=0777 uid=0 gid=0 mtime=0.000000000 target=/etc\nf path=a/passwd mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 2 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nf path=a/b mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 2 0\n"
    seed "ferry-tree 1\nf path=b mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 2 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3\nend 2 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 link=1\nl path=b mode=0777 uid=0 gid=0 mtime=0.000000000 target=x link=1\nend 2 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 link=1\nf path=b mode=0644 uid=0 gid=0 mtime=0.000000000 size=1 sha256=$SHA link=1\nend 2 1\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 link=2\nend 1 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256=$E3 link=1\nend 1 0\n"
    seed "ferry-tree 1\nf path=a mode=0644 uid=0 gid=0 mtime=0.000000000 size=18446744073709551615 sha256=$E3\nf path=b mode=0644 uid=0 gid=0 mtime=0.000000000 size=1 sha256=$SHA\nend 2 0\n"
    echo "seeds: tree_manifest: $n"
fi
