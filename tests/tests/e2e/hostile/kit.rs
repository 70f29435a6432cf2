//! What every hostile case needs: the canaries and the [`Guard`] that say
//! nothing outside the allowed place changed, the compromised client's
//! [`Queue`], the node-side checks (outcome and reason code, journal and
//! sinks, liveness), the client's endpoint [`Ep`] to write URLs with,
//! repositories forged object by object ([`Forge`]), a client whose sshd
//! runs a hostile script instead of `ferry gate`, and [`Fleet`]: the node
//! and clients one case class runs against.
//!
//! Other modules whose tests play a compromised client use these too
//! (`hostile_dumps`, `git_limits`, `names_output`, …).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{Smtp, TestDir, for_each_ref, git, git_cmd, hash_tree, list_tree, require, require_all};

/// The programs every hostile case runs (skipped locally without them, a
/// failure under CI).
pub(crate) fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

// ---------------------------------------------------------------------------
// Canaries: what must never change, what must never appear.

type Snapshot = BTreeMap<PathBuf, BTreeMap<PathBuf, String>>;

/// The execution canary of `case`: a payload that ran would create it.
pub(crate) fn canary(case: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/ferry-canary-{}-{case}", std::process::id()))
}

/// No execution canary of this test process exists.
pub(crate) fn assert_no_canary() {
    let prefix = format!("ferry-canary-{}-", std::process::id());
    let found: Vec<String> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(found.is_empty(), "an execution payload ran: {found:?} exist in /tmp");
}

/// A world-writable directory where hostile commands try to leave a file
/// (so a command run as any account would leave one); it must stay empty
/// ([`assert_canary_dir_empty`]). The test directory and its parent become
/// traversable for every account.
pub(crate) fn canary_dir(td: &TestDir) -> PathBuf {
    let c = td.mkdir("canaries");
    fs::set_permissions(&c, fs::Permissions::from_mode(0o777)).unwrap();
    for p in [td.path.as_path(), td.path.parent().unwrap()] {
        let m = fs::metadata(p).unwrap().permissions().mode();
        fs::set_permissions(p, fs::Permissions::from_mode(m | 0o011)).unwrap();
    }
    c
}

pub(crate) fn assert_canary_dir_empty(dir: &Path) {
    let left = list_tree(dir);
    assert!(left.is_empty(), "a hostile payload ran something on the node: {left:?}");
}

/// Everything a hostile case of client A must leave alone.
pub(crate) struct Guard {
    roots: Vec<PathBuf>,
    before: Snapshot,
    /// Shared: no test adds accounts while `/etc/passwd` is watched.
    _accounts: std::fs::File,
}

impl Guard {
    /// Snapshots a canary directory in the node's home, the node's keys,
    /// authorized_keys and live enrollment, the gitosis-admin refs,
    /// `/etc/passwd`, and each victim's repositories, exports, keys, data,
    /// pool and queue.
    pub(crate) fn new(node: &Node, victims: &[&Client]) -> Guard {
        let outside = node.base.join("outside-canary");
        if !outside.exists() {
            fs::create_dir_all(outside.join("sub")).unwrap();
            fs::write(outside.join("secret.txt"), "node secret\n").unwrap();
            fs::write(outside.join("sub/authorized_keys"), "ssh-ed25519 AAAA canary\n").unwrap();
        }
        let srv = node.srv();
        let mut roots = vec![
            outside,
            srv.join("keys"),
            srv.join(".ssh"),
            srv.join("state/enrolled"),
            srv.join("state/known_hosts"),
            srv.join("state/empty"),
            srv.join("repositories/gitosis-admin.git/refs"),
            PathBuf::from("/etc/passwd"),
        ];
        if let Ok(target) = fs::read_link(srv.join("state/enrolled")) {
            roots.push(srv.join("state").join(target));
        }
        for v in victims {
            roots.push(v.git_root.clone());
            roots.push(v.base.join("export"));
            roots.push(v.base.join("state/ssh"));
            roots.push(v.base.join("authorized_keys"));
            roots.push(node.data(&v.name));
            roots.push(node.pool(&v.name));
            roots.push(srv.join(format!("repositories/queue/{}.git/refs", v.name)));
            roots.push(srv.join(format!("repositories/queue/{}.git/objects", v.name)));
        }
        let _accounts = ferry_tests::accounts_lock(false);
        let before = snapshot(&roots);
        Guard { roots, before, _accounts }
    }

    /// Panics naming what changed since [`Guard::new`], or the execution
    /// canary that appeared.
    pub(crate) fn check(&self, what: &str) {
        let after = snapshot(&self.roots);
        for (root, b) in &self.before {
            let a = &after[root];
            if a != b {
                let changed: Vec<_> = b
                    .iter()
                    .filter(|(k, v)| a.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .chain(a.keys().filter(|k| !b.contains_key(*k)).cloned())
                    .collect();
                panic!("{what}: {} changed: {changed:?}", root.display());
            }
        }
        assert_no_canary();
    }
}

fn snapshot(roots: &[PathBuf]) -> Snapshot {
    roots
        .iter()
        .map(|r| {
            let h = match fs::symlink_metadata(r) {
                Ok(m) if m.is_dir() => hash_tree(r),
                Ok(m) if m.is_symlink() => BTreeMap::from([(PathBuf::new(), format!("-> {:?}", fs::read_link(r)))]),
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    let d = format!("{:o} {} {}", m.mode(), m.len(), ferry_tests::sha256_file(r));
                    BTreeMap::from([(PathBuf::new(), d)])
                }
                Err(_) => BTreeMap::new(),
            };
            (r.clone(), h)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The compromised client's queue: a clone it pushes arbitrary trees from.

/// A clone of a client's queue repository on the node, pushed over the
/// local transport with `FERRY_USER` set as `serve` sets it after
/// authenticating the client's key: the node's real hooks run, as for a
/// `git push` over ssh by a client that writes its own request files.
pub(crate) struct Queue {
    pub(crate) dir: PathBuf,
    pub(crate) client: String,
    pub(crate) node_repo: PathBuf,
}

impl Queue {
    pub(crate) fn clone(node: &Node, client: &str, td: &TestDir) -> Queue {
        let node_repo = node.srv().join(format!("repositories/queue/{client}.git"));
        let dir = td.join(format!("queue-clone-{client}"));
        ok(git_cmd(&td.path).args(["clone", "--quiet", node_repo.to_str().unwrap(), dir.to_str().unwrap()]));
        Queue { dir, client: client.into(), node_repo }
    }

    /// Replace the work tree by exactly `files` and commit.
    pub(crate) fn commit(&self, files: &[(String, Vec<u8>)], msg: &str) {
        // Build on the node's tip (the real client may have pushed too):
        // fetch unless the node's ref file says we have it.
        let node_tip = fs::read_to_string(self.node_repo.join("refs/heads/master")).ok();
        if node_tip.as_deref().map(str::trim) != self.tip().as_deref() || node_tip.is_none() {
            ok(git_cmd(&self.dir).args(["fetch", "--quiet", "origin"]));
        }
        self.reset();
        self.add_commit(files, msg);
    }

    /// One more commit on top of the local branch, holding exactly `files`.
    pub(crate) fn add_commit(&self, files: &[(String, Vec<u8>)], msg: &str) {
        let _ = run(git_cmd(&self.dir).args(["rm", "-r", "-q", "-f", "--cached", "--ignore-unmatch", "."]));
        for e in fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_name() != ".git" {
                let p = e.path();
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
        for (name, data) in files {
            let p = self.dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
        }
        ok(git_cmd(&self.dir).args(["add", "-A"]));
        ok(git_cmd(&self.dir).args(["commit", "--quiet", "--allow-empty", "-m", msg]));
    }

    /// Commit the work tree as it is (after planting a symlink, a mode or
    /// a name [`Queue::commit`] cannot write).
    pub(crate) fn commit_as_is(&self, msg: &str) {
        ok(git_cmd(&self.dir).args(["add", "-A"]));
        ok(git_cmd(&self.dir).args(["commit", "--quiet", "-m", msg]));
    }

    fn tip(&self) -> Option<String> {
        let out = run(git_cmd(&self.dir).args(["rev-parse", "-q", "--verify", "refs/remotes/origin/master"]));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Push HEAD to master with `FERRY_USER=pusher` (what `serve` sets
    /// after authenticating a key) and extra args; a refused push is
    /// undone locally so the next commit builds on the node's tip.
    pub(crate) fn push_as(&self, pusher: Option<&str>, refspec: &str, extra: &[&str]) -> Output {
        let mut cmd = git_cmd(&self.dir);
        if let Some(p) = pusher {
            cmd.env("FERRY_USER", p);
        }
        let out = run(cmd.arg("push").args(extra).args(["origin", refspec]));
        if out.status.success() && refspec == "HEAD:master" && extra.is_empty() {
            ok(git_cmd(&self.dir).args(["update-ref", "refs/remotes/origin/master", "HEAD"]));
        } else if out.status.success() {
            ok(git_cmd(&self.dir).args(["fetch", "--quiet", "origin"]));
        } else {
            self.reset();
        }
        out
    }

    /// Push HEAD to master as the client itself.
    pub(crate) fn push(&self) -> Output {
        self.push_as(Some(&self.client.clone()), "HEAD:master", &[])
    }

    /// Back to the node's tip (or to no commit at all).
    pub(crate) fn reset(&self) {
        match self.tip() {
            Some(t) => ok(git_cmd(&self.dir).args(["reset", "--quiet", "--hard", &t])),
            None => {
                let _ = run(git_cmd(&self.dir).args(["update-ref", "-d", "HEAD"]));
                String::new()
            }
        };
    }

    /// Commit exactly `files` and push them; returns the push's output.
    pub(crate) fn try_send(&self, files: &[(String, Vec<u8>)]) -> Output {
        self.commit(files, "requests");
        self.push()
    }

    /// Commit `files` and push them; the push must be accepted.
    pub(crate) fn send(&self, files: &[(String, Vec<u8>)]) {
        let out = self.try_send(files);
        assert!(out.status.success(), "push of {} file(s) refused: {}", files.len(), text(&out));
    }

    /// The node's queue tip.
    pub(crate) fn node_tip(&self) -> String {
        let out = run(git_cmd(&self.dir).args([
            &format!("--git-dir={}", self.node_repo.display()),
            "rev-parse",
            "-q",
            "--verify",
            "refs/heads/master",
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The request file `RQ<id>` holding `data`.
pub(crate) fn rq(id: &str, data: impl AsRef<[u8]>) -> (String, Vec<u8>) {
    (format!("RQ{id}"), data.as_ref().to_vec())
}

// ---------------------------------------------------------------------------
// Node-side checks.

/// `ferry-node scan --client <client>`: exit 0, or 3 when requests failed.
pub(crate) fn scan(node: &Node, client: &str) -> Output {
    let out = run(node.cmd().args(["scan", "--client", client]));
    assert!(matches!(out.status.code(), Some(0 | 3)), "scan crashed or failed: {}", text(&out));
    out
}

/// The events journal, line by line (each must be JSON).
pub(crate) fn events(node: &Node) -> Vec<serde_json::Value> {
    node.events()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l:?}")))
        .collect()
}

/// `E<id>.why` of a request that ended in E, if it did.
pub(crate) fn why(node: &Node, client: &str, id: &str) -> Option<serde_json::Value> {
    let b = fs::read(node.pool(client).join(format!("E{id}.why"))).ok()?;
    Some(serde_json::from_slice(&b).unwrap_or_else(|e| panic!("E{id}.why is not JSON: {e}")))
}

/// The request ended in E with `code` in its `.why` and in exactly one
/// `request_failed` event of the authenticated client; returns the detail.
pub(crate) fn assert_failed(node: &Node, client: &str, id: &str, code: &str) -> String {
    let w = why(node, client, id).unwrap_or_else(|| {
        panic!(
            "{id}: expected E with {code}, but it is in {:?}; journal tail: {}",
            state_of(node, client, id),
            tail(&node.events())
        )
    });
    assert_eq!(w["reason"], code, "{id}: wrong reason: {w}");
    assert!(node.pool(client).join(format!("E{id}")).exists(), "{id}: no E file");
    let evs: Vec<_> =
        events(node).into_iter().filter(|e| e["request"] == id && e["event"] == "request_failed").collect();
    assert_eq!(evs.len(), 1, "{id}: one request_failed event expected: {evs:?}");
    assert_eq!(evs[0]["reason"], code, "{id}: {:?}", evs[0]);
    assert_eq!(evs[0]["client"], client, "{id}: event names the authenticated client");
    w["detail"].as_str().unwrap_or_default().to_owned()
}

/// The request ended in F.
pub(crate) fn assert_done(node: &Node, client: &str, id: &str) {
    assert!(
        node.pool(client).join(format!("F{id}")).exists(),
        "{id}: expected F, it is in {:?}: {:?}",
        state_of(node, client, id),
        why(node, client, id)
    );
}

fn state_of(node: &Node, client: &str, id: &str) -> Vec<String> {
    ["RQ", "P", "F", "E"]
        .iter()
        .filter(|s| node.pool(client).join(format!("{s}{id}")).exists())
        .map(|s| s.to_string())
        .collect()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// A push refused by the queue hook with `code`, logged as one event.
pub(crate) fn assert_push_refused(node: &Node, out: &Output, code: &str, what: &str) {
    assert!(!out.status.success(), "{what}: the push was accepted: {}", text(out));
    let t = text(out);
    assert!(t.contains(code), "{what}: expected {code} in the push output: {t}");
    let last = events(node).into_iter().rev().find(|e| e["event"] == "push_refused");
    assert!(last.as_ref().is_some_and(|e| e["reason"] == code), "{what}: last push_refused event: {last:?}");
}

/// One valid request still goes all the way (liveness after hostile input).
pub(crate) fn assert_alive(node: &Node, q: &Queue, id: &str) {
    q.send(&[rq(id, format!("dummy {id}\n"))]);
    scan(node, &q.client);
    assert_done(node, &q.client, id);
}

/// Shown safely: printable ASCII and line ends only, so no C0/C1 control,
/// DEL, bidi control or other non-ASCII character reaches a terminal.
pub(crate) fn assert_printable(what: &str, s: &[u8]) {
    if let Some(i) = s.iter().position(|&b| !(0x20..0x7f).contains(&b) && b != b'\n') {
        panic!(
            "{what}: byte {:#04x} at {i} is not printable ASCII: {:?}",
            s[i],
            String::from_utf8_lossy(&s[i.saturating_sub(60)..(i + 60).min(s.len())])
        );
    }
}

/// The journal and every `.why` are printable JSON lines of bounded size.
pub(crate) fn assert_journal_clean(node: &Node) {
    let raw = fs::read(node.srv().join("state/events.jsonl")).unwrap_or_default();
    assert_printable("events.jsonl", &raw);
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() <= 4096, "journal line of {} bytes", line.len());
        let v: serde_json::Value = serde_json::from_slice(line).expect("journal line is JSON");
        assert!(v.is_object() && v["event"].is_string() && v["ts"].is_string(), "{v}");
    }
    // Client pools only: `pool/.wake` is the scan path unit's marker.
    for dir in fs::read_dir(node.srv().join("pool")).unwrap().flatten().filter(|d| d.path().is_dir()) {
        for f in fs::read_dir(dir.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with(".why") {
                let b = fs::read(f.path()).unwrap();
                assert_printable(&f.path().display().to_string(), &b);
                assert_eq!(b.iter().filter(|c| **c == b'\n').count(), 1, "{}: one line", f.path().display());
                let _: serde_json::Value = serde_json::from_slice(&b).expect(".why is JSON");
            }
        }
    }
}

/// No staging directory (a name starting with `.`) is left in `dir`.
pub(crate) fn no_staging_left(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staging left in {}: {left:?}", dir.display());
}

// ---------------------------------------------------------------------------
// Client A's endpoint, to write URLs the enrollment would accept.

pub(crate) struct Ep {
    pub(crate) user: String,
    pub(crate) addr: String,
    pub(crate) port: u16,
    pub(crate) git_root: String,
    pub(crate) export: String,
}

impl Ep {
    pub(crate) fn of(c: &Client) -> Ep {
        Ep {
            user: c.sshd.user(),
            addr: c.sshd.addr().to_string(),
            port: c.sshd.port(),
            git_root: c.git_root.display().to_string(),
            export: c.base.join("export").display().to_string(),
        }
    }

    /// A `git` request line for `path` on this endpoint.
    pub(crate) fn git(&self, path: &str) -> String {
        format!("git ssh://{}@{}:{}{path}\n", self.user, self.addr, self.port)
    }

    /// A `git` request line for repository `name` under the git root.
    pub(crate) fn repo(&self, name: &str) -> String {
        self.git(&format!("{}/{name}", self.git_root))
    }

    pub(crate) fn sftp_url(&self, path: &str) -> String {
        format!("sftp://{}@{}:{}{path}", self.user, self.addr, self.port)
    }

    /// An `sftp` request line.
    pub(crate) fn sftp(&self, stamp: &str, path: &str, sha: &str, size: u64, source: &str) -> String {
        format!("sftp {stamp} {} sha256={sha} size={size} source={source}\n", self.sftp_url(path))
    }
}

/// The node's clock as a request stamp.
pub(crate) fn now_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    ferry_request::Stamp::from_unix(secs - 60).to_string()
}

/// The same time one year later (outside the node's accepted window).
pub(crate) fn next_year(stamp: &str) -> String {
    let y: u32 = stamp[..4].parse().unwrap();
    format!("{}{}", y + 1, &stamp[4..])
}

/// Pseudo-random bytes (incompressible, deterministic).
pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A compromised client's own server and modules.

/// Stop the node's multiplexed ssh masters, so a changed forced command on
/// a client (read at authentication) applies to the next pull.
pub(crate) fn close_masters(node: &Node) {
    for e in fs::read_dir(node.srv().join("state/ssh")).into_iter().flatten().flatten() {
        let _ = run(Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}", e.path().display()))
            .args(["-O", "exit", "x"]));
        let _ = fs::remove_file(e.path());
    }
}

/// Make client `c`'s sshd run `script` instead of `ferry gate` for the
/// node's pull key (a compromised client controls its own server); returns
/// the authorized_keys to give back to [`restore_gate`]. The script is
/// `<client>/hostile-gate.sh`: rewrite it to change the server's answer.
pub(crate) fn hostile_gate(node: &Node, c: &Client, script: &str) -> String {
    let ak = c.base.join("authorized_keys");
    let old = fs::read_to_string(&ak).unwrap();
    let path = c.base.join("hostile-gate.sh");
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let start = old.find("command=\"").expect("a forced command") + 9;
    let end = start + old[start..].find('"').unwrap();
    let new = format!("{}{}{}", &old[..start], path.display(), &old[end..]);
    fs::write(&ak, new).unwrap();
    close_masters(node);
    old
}

pub(crate) fn restore_gate(node: &Node, c: &Client, old: String) {
    fs::write(c.base.join("authorized_keys"), old).unwrap();
    close_masters(node);
}

/// Client `name` of `node` (not enrolled yet) whose script modules are
/// `scripts` (module name, shell script): what a compromised client can
/// always run and request. `extra_toml` goes into its configuration.
pub(crate) fn script_client(
    td: &TestDir,
    node: &Node,
    name: &str,
    scripts: &[(&str, &str)],
    extra_toml: &str,
) -> Client {
    let dir = td.mkdir(format!("scripts-{name}"));
    for (module, body) in scripts {
        fs::write(dir.join(module), body).unwrap();
        fs::set_permissions(dir.join(module), fs::Permissions::from_mode(0o755)).unwrap();
    }
    Client::new_with(td, name, &[node], &format!("script_dir = \"{}\"\n{extra_toml}", dir.display()))
}

// ---------------------------------------------------------------------------
// Repositories built object by object.

/// `git <args>` with `input` on stdin; returns stdout, trimmed.
pub(crate) fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child =
        git_cmd(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `git <args>` on a bare repository.
pub(crate) fn gd(dir: &Path, args: &[&str]) -> String {
    let d = format!("--git-dir={}", dir.display());
    let mut a = vec![d.as_str()];
    a.extend_from_slice(args);
    git(dir, &a)
}

/// A bare repository built object by object (C13: hostile fixtures are
/// generated, never taken from real exploit repositories).
pub(crate) struct Forge {
    pub(crate) dir: PathBuf,
}

impl Forge {
    pub(crate) fn init(dir: PathBuf) -> Forge {
        git(dir.parent().unwrap(), &["init", "--quiet", "--bare", dir.to_str().unwrap()]);
        Forge { dir }
    }

    /// `--git-dir=<dir>`.
    pub(crate) fn gd(&self) -> String {
        format!("--git-dir={}", self.dir.display())
    }

    pub(crate) fn g(&self, args: &[&str]) -> String {
        gd(&self.dir, args)
    }

    pub(crate) fn blob(&self, data: &[u8]) -> String {
        git_stdin(&self.dir, &[&self.gd(), "hash-object", "-w", "--stdin"], data)
    }

    /// `entries`: (mode, name, oid); mktree sorts them.
    pub(crate) fn tree(&self, entries: &[(&str, &str, &str)]) -> String {
        let mut input = Vec::new();
        for (mode, name, oid) in entries {
            let kind = match *mode {
                "040000" => "tree",
                "160000" => "commit",
                _ => "blob",
            };
            // -z: names may hold CR or LF (CVE-2025-48384 shapes).
            input.extend_from_slice(format!("{mode} {kind} {oid}\t{name}\0").as_bytes());
        }
        git_stdin(&self.dir, &[&self.gd(), "mktree", "-z", "--missing"], &input)
    }

    pub(crate) fn commit(&self, tree: &str, parents: &[&str], msg: &str) -> String {
        let mut args = vec!["commit-tree", tree, "-m", msg];
        for p in parents {
            args.push("-p");
            args.push(p);
        }
        self.g(&args)
    }

    /// A commit holding one file `f` with `content` (also its message), on
    /// top of `parents`.
    pub(crate) fn commit_file(&self, content: &str, parents: &[&str]) -> String {
        let blob = self.blob(content.as_bytes());
        let tree = self.tree(&[("100644", "f", &blob)]);
        self.commit(&tree, parents, content)
    }

    pub(crate) fn set(&self, r: &str, oid: &str) {
        self.g(&["update-ref", r, oid]);
    }

    /// One commit on master with `files` (name → content) at the root.
    pub(crate) fn simple(dir: PathBuf, files: &[(&str, &[u8])]) -> Forge {
        let f = Forge::init(dir);
        let entries: Vec<(String, String)> = files.iter().map(|(n, d)| (n.to_string(), f.blob(d))).collect();
        let e: Vec<(&str, &str, &str)> = entries.iter().map(|(n, o)| ("100644", n.as_str(), o.as_str())).collect();
        let t = f.tree(&e);
        let c = f.commit(&t, &[], "content");
        f.set("refs/heads/master", &c);
        f
    }
}

/// A repository of `c` (with Ferry's hook) whose one file holds `content`,
/// pushed and mirrored by `node` (scanned here, so `scan_on_push = false`
/// nodes work too); returns the bare repository and the commit.
pub(crate) fn mirrored_repo(node: &Node, c: &Client, repo: &str, file: &str, content: &str) -> (PathBuf, String) {
    let (bare, work) = c.repo(repo);
    let head = ferry_tests::fleet::commit_and_push(&work, file, content);
    let mirror = node.data(&c.name).join(format!("git/{repo}.git"));
    eventually(&format!("the mirror of {}/{repo}", c.name), || {
        let _ = run(node.cmd().args(["scan", "--client", &c.name]));
        mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare)
    });
    (bare, head)
}

// ---------------------------------------------------------------------------
// The fleet a case class runs against.

/// What victim B holds on the node before the cases run (the [`Guard`]
/// watches it).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum BHolds {
    /// Nothing but its enrollment.
    Nothing,
    /// One finished dummy request, sent by the real client.
    Request,
    /// A repository `secret` whose mirror holds `secret.txt`.
    Mirror,
}

/// The result of a scoped thread, its panic passed on as it was.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Give B what `holds` says; returns its mirrored repository, if any.
fn give_b(td: &TestDir, node: &Node, b: &Client, holds: BHolds) -> Option<PathBuf> {
    match holds {
        BHolds::Nothing => None,
        BHolds::Request => {
            ok(b.cmd().args(["request", "dummy", "b-own"]));
            ok(b.cmd().args(["send", "--wait"]));
            scan(node, "host-b");
            assert_eq!(node.pool_ids("host-b", "F").len(), 1);
            None
        }
        BHolds::Mirror => {
            let bare = Forge::simple(b.git_root.join("secret.git"), &[("secret.txt", b"B's secret\n")]).dir;
            let qb = Queue::clone(node, "host-b", td);
            qb.send(&[rq("b-secret", Ep::of(b).repo("secret.git"))]);
            scan(node, "host-b");
            assert_done(node, "host-b", "b-secret");
            let mirror = node.data("host-b").join("git/secret.git");
            assert_eq!(for_each_ref(&mirror), for_each_ref(&bare), "B's mirror");
            Some(bare)
        }
    }
}

/// How to set up a [`Fleet`].
pub(crate) struct Plan<'a> {
    /// `node.toml` lines after `scan_on_push = false`.
    pub(crate) node: &'a str,
    /// Start an SMTP server and mail the administrators through it.
    pub(crate) mail: bool,
    /// Lines appended to host-a's `[ferry client]` section.
    pub(crate) a_section: &'a str,
    /// Enroll host-q as well, with these lines in its section.
    pub(crate) limited: Option<&'a str>,
    /// What host-b holds on the node.
    pub(crate) b: BHolds,
}

impl Default for Plan<'_> {
    fn default() -> Self {
        Plan { node: "", mail: false, a_section: "", limited: None, b: BHolds::Nothing }
    }
}

/// A node `backup1` (scanned by hand), the compromised client host-a with
/// its [`Queue`], the victim host-b, optionally a limited client host-q
/// and an SMTP server; host-a has one request finished (`alive-0`) and
/// the [`Guard`] was taken after that. Fields drop in order: the test
/// directory last.
pub(crate) struct Fleet {
    pub(crate) guard: Guard,
    pub(crate) q: Queue,
    pub(crate) ql: Option<Queue>,
    pub(crate) lim: Option<Client>,
    pub(crate) b_bare: Option<PathBuf>,
    pub(crate) b: Client,
    pub(crate) a: Client,
    pub(crate) node: Node,
    pub(crate) smtp: Option<Smtp>,
    pub(crate) td: TestDir,
}

impl Fleet {
    /// The fleet for test `name`, or None when the tools are missing (the
    /// test is skipped; under CI that panics instead).
    pub(crate) fn start(name: &str, plan: Plan) -> Option<Fleet> {
        Fleet::start_then(name, plan, |_, _| {})
    }

    /// [`Fleet::start`], running `first` (with the node and host-a) once
    /// the clients are enrolled, before host-a's queue is cloned and the
    /// [`Guard`] is taken.
    pub(crate) fn start_then(name: &str, plan: Plan, first: impl FnOnce(&Node, &Client)) -> Option<Fleet> {
        if !tools() || (plan.mail && !require("smtp")) {
            return None;
        }
        let td = TestDir::new(&format!("hostile_{name}"));
        let smtp = plan.mail.then(|| Smtp::start(&td.join("smtp")));
        let mail = smtp
            .as_ref()
            .map(|s| {
                format!(
                    "[mail]\nto = [\"admin@node.example\"]\nfrom = \"ferry@node.example\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nhost_label = \"backup1\"\n",
                    s.url()
                )
            })
            .unwrap_or_default();
        let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{}\n{mail}", plan.node));
        // Steps that do not wait for each other run side by side: most of
        // a fleet's start is waiting for daemons and ssh handshakes.
        let (mut a, b, lim) = std::thread::scope(|s| {
            let a = s.spawn(|| Client::new(&td, "host-a", &[&node]));
            let b = s.spawn(|| Client::new(&td, "host-b", &[&node]));
            let lim = plan.limited.map(|_| s.spawn(|| Client::new(&td, "host-q", &[&node])));
            (joined(a), joined(b), lim.map(joined))
        });
        a.gitosis_section.push_str(plan.a_section);
        let lim = lim.map(|mut c| {
            c.gitosis_section.push_str(plan.limited.unwrap_or_default());
            c
        });
        let mut enrolled = vec![&a, &b];
        enrolled.extend(lim.as_ref());
        node.enroll(&enrolled);
        let (b_bare, (q, ql)) = std::thread::scope(|s| {
            let b_bare = s.spawn(|| give_b(&td, &node, &b, plan.b));
            first(&node, &a);
            let q = Queue::clone(&node, "host-a", &td);
            let ql = lim.as_ref().map(|c| Queue::clone(&node, &c.name, &td));
            assert_alive(&node, &q, "alive-0");
            (joined(b_bare), (q, ql))
        });
        let guard = Guard::new(&node, &[&b]);
        Some(Fleet { guard, q, ql, lim, b_bare, b, a, node, smtp, td })
    }

    /// The limited client host-q and its queue ([`Plan::limited`]).
    pub(crate) fn limited(&self) -> (&Client, &Queue) {
        (self.lim.as_ref().expect("Plan::limited"), self.ql.as_ref().expect("Plan::limited"))
    }

    /// Checks 2 and 3 of every case: nothing outside changed, the journal
    /// is clean, and a valid request still ends in F.
    pub(crate) fn finish(&self, what: &str) {
        self.guard.check(what);
        assert_journal_clean(&self.node);
        assert_alive(&self.node, &self.q, "alive-1");
        self.guard.check(&format!("{what}, after the valid request"));
    }
}

// ---------------------------------------------------------------------------
// Case tables split into one test per class.

/// Whether case `id` belongs to the class of `prefixes`.
pub(crate) fn in_class(id: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| id.starts_with(p))
}

/// The tests and the table agree: every id is unique and in exactly one
/// class of `classes` (test name, id prefixes), and no class is empty or
/// more than one push can hold.
pub(crate) fn assert_classes_cover(ids: &[&str], classes: &[(&str, &[&str])]) {
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
    for id in ids {
        let of: Vec<&str> = classes.iter().filter(|(_, p)| in_class(id, p)).map(|(t, _)| *t).collect();
        assert_eq!(of.len(), 1, "{id} is in {of:?}");
    }
    for (test, prefixes) in classes {
        let n = ids.iter().filter(|id| in_class(id, prefixes)).count();
        assert!(n > 0 && n < 256, "{test}: {n} cases");
    }
}

/// One `#[test]` per class of a case table: `run` (test name, id
/// prefixes) runs the class's cases against its own [`Fleet`] and returns
/// it; `then` checks what the class leaves behind; [`Fleet::finish`]
/// checks that nothing outside changed and the node is alive. Defines
/// `CLASSES` for [`assert_classes_cover`].
macro_rules! case_classes {
    (run $run:path; $($(#[doc = $doc:literal])* $test:ident: [$($prefix:literal),+] $(then $check:path)?;)+) => {
        const CLASSES: &[(&str, &[&str])] = &[$((stringify!($test), &[$($prefix),+])),+];
        $(
            $(#[doc = $doc])*
            #[test]
            fn $test() {
                let Some(f) = $run(stringify!($test), &[$($prefix),+]) else {
                    return;
                };
                $($check(&f);)?
                f.finish(stringify!($test));
            }
        )+
    };
}
pub(crate) use case_classes;
