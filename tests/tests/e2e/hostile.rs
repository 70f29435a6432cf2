//! The hostile-input suite (SECURITY.md section B): what a compromised
//! client can send the node, case by case, through the real channels — its
//! queue repository (local transport through the real hooks, exactly what
//! `git push` over ssh reaches), the node's sshd with its own key, and its
//! own sshd/gate/git/sftp server that the node pulls from.
//!
//! Every case asserts three things:
//!
//! 1. the documented outcome: the request ends in `E` with its reason code
//!    in `E<id>.why` and in the events journal, or the push is refused with
//!    the code in the pusher's output and the journal, or — where the safe
//!    outcome is "contained" — the data is stored inert;
//! 2. nothing outside the allowed place changed: a canary directory in the
//!    node's home, client B's repositories, exports, data, pool and queue,
//!    the node's keys, authorized_keys and live enrollment are hashed
//!    before and after, and no execution canary (`/tmp/ferry-canary-<pid>-…`)
//!    ever appears;
//! 3. the node stays alive: a valid request still ends in `F` afterwards.
//!
//! Cases are grouped per fleet (starting a node and clients costs seconds
//! on the test machine): each group pushes its cases in as few pushes as
//! the refusal rules allow and scans once, then checks case by case.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, ssh_command, text};
use ferry_tests::{Smtp, TestDir, for_each_ref, git, git_cmd, hash_tree, require, require_all, sha256_bytes, ssh_cmd};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

// ---------------------------------------------------------------------------
// Canaries: what must never change, what must never appear.

type Snapshot = BTreeMap<PathBuf, BTreeMap<PathBuf, String>>;

/// The execution canary of `case`: a payload that ran would create it.
fn canary(case: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/ferry-canary-{}-{case}", std::process::id()))
}

fn assert_no_canary() {
    let prefix = format!("ferry-canary-{}-", std::process::id());
    let found: Vec<String> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(found.is_empty(), "an execution payload ran: {found:?} exist in /tmp");
}

/// Everything a hostile case of client A must leave alone.
struct Guard {
    roots: Vec<PathBuf>,
    before: Snapshot,
}

impl Guard {
    fn new(node: &Node, victims: &[&Client]) -> Guard {
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
        let before = snapshot(&roots);
        Guard { roots, before }
    }

    fn check(&self, what: &str) {
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

struct Queue {
    dir: PathBuf,
    client: String,
    node_repo: PathBuf,
}

impl Queue {
    fn clone(node: &Node, client: &str, td: &TestDir) -> Queue {
        let node_repo = node.srv().join(format!("repositories/queue/{client}.git"));
        let dir = td.join(format!("queue-clone-{client}"));
        ok(git_cmd(&td.path).args(["clone", "--quiet", node_repo.to_str().unwrap(), dir.to_str().unwrap()]));
        Queue { dir, client: client.into(), node_repo }
    }

    /// Replace the work tree by exactly `files` and commit.
    fn commit(&self, files: &[(String, Vec<u8>)], msg: &str) {
        // Build on the node's tip (the real client may have pushed too).
        ok(git_cmd(&self.dir).args(["fetch", "--quiet", "origin"]));
        self.reset();
        self.add_commit(files, msg);
    }

    /// One more commit on top of the local branch, holding exactly `files`.
    fn add_commit(&self, files: &[(String, Vec<u8>)], msg: &str) {
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

    fn tip(&self) -> Option<String> {
        let out = run(git_cmd(&self.dir).args(["rev-parse", "-q", "--verify", "refs/remotes/origin/master"]));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Push HEAD to master with `FERRY_USER=pusher` (what `serve` sets
    /// after authenticating a key) and extra args; a refused push is
    /// undone locally so the next commit builds on the node's tip.
    fn push_as(&self, pusher: Option<&str>, refspec: &str, extra: &[&str]) -> Output {
        let mut cmd = git_cmd(&self.dir);
        if let Some(p) = pusher {
            cmd.env("FERRY_USER", p);
        }
        let out = run(cmd.arg("push").args(extra).args(["origin", refspec]));
        if out.status.success() {
            ok(git_cmd(&self.dir).args(["fetch", "--quiet", "origin"]));
        } else {
            self.reset();
        }
        out
    }

    fn push(&self) -> Output {
        self.push_as(Some(&self.client.clone()), "HEAD:master", &[])
    }

    fn reset(&self) {
        match self.tip() {
            Some(t) => ok(git_cmd(&self.dir).args(["reset", "--quiet", "--hard", &t])),
            None => {
                let _ = run(git_cmd(&self.dir).args(["update-ref", "-d", "HEAD"]));
                String::new()
            }
        };
    }

    /// Commit `files` and push them; the push must be accepted.
    fn send(&self, files: &[(String, Vec<u8>)]) {
        self.commit(files, "requests");
        let out = self.push();
        assert!(out.status.success(), "push of {} file(s) refused: {}", files.len(), text(&out));
    }

    fn node_tip(&self) -> String {
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

fn rq(id: &str, data: impl AsRef<[u8]>) -> (String, Vec<u8>) {
    (format!("RQ{id}"), data.as_ref().to_vec())
}

// ---------------------------------------------------------------------------
// Node-side checks.

fn scan(node: &Node, client: &str) {
    let out = run(node.cmd().args(["scan", "--client", client]));
    assert!(matches!(out.status.code(), Some(0 | 3)), "scan crashed or failed: {}", text(&out));
}

fn events(node: &Node) -> Vec<serde_json::Value> {
    node.events()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l:?}")))
        .collect()
}

fn why(node: &Node, client: &str, id: &str) -> Option<serde_json::Value> {
    let b = fs::read(node.pool(client).join(format!("E{id}.why"))).ok()?;
    Some(serde_json::from_slice(&b).unwrap_or_else(|e| panic!("E{id}.why is not JSON: {e}")))
}

/// The request ended in E with `code` in its `.why` and in exactly one
/// `request_failed` event of the authenticated client.
fn assert_failed(node: &Node, client: &str, id: &str, code: &str) {
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
}

fn assert_done(node: &Node, client: &str, id: &str) {
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
fn assert_push_refused(node: &Node, out: &Output, code: &str, what: &str) {
    assert!(!out.status.success(), "{what}: the push was accepted: {}", text(out));
    let t = text(out);
    assert!(t.contains(code), "{what}: expected {code} in the push output: {t}");
    let last = events(node).into_iter().rev().find(|e| e["event"] == "push_refused");
    assert!(last.as_ref().is_some_and(|e| e["reason"] == code), "{what}: last push_refused event: {last:?}");
}

/// One valid request still goes all the way (liveness after hostile input).
fn assert_alive(node: &Node, q: &Queue, id: &str) {
    q.send(&[rq(id, format!("dummy {id}\n"))]);
    scan(node, &q.client);
    assert_done(node, &q.client, id);
}

/// Printable ASCII only, one line (what a terminal can `cat` safely).
fn assert_printable(what: &str, s: &[u8]) {
    if let Some(i) = s.iter().position(|&b| !(0x20..0x7f).contains(&b) && b != b'\n') {
        panic!(
            "{what}: byte {:#04x} at {i} is not printable ASCII: {:?}",
            s[i],
            String::from_utf8_lossy(&s[i.saturating_sub(60)..(i + 60).min(s.len())])
        );
    }
}

fn assert_journal_clean(node: &Node) {
    let raw = fs::read(node.srv().join("state/events.jsonl")).unwrap_or_default();
    assert_printable("events.jsonl", &raw);
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() <= 4096, "journal line of {} bytes", line.len());
        let v: serde_json::Value = serde_json::from_slice(line).expect("journal line is JSON");
        assert!(v.is_object() && v["event"].is_string() && v["ts"].is_string(), "{v}");
    }
    for dir in fs::read_dir(node.srv().join("pool")).unwrap().flatten() {
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

// ---------------------------------------------------------------------------
// Client A's endpoint, to write URLs the enrollment would accept.

struct Ep {
    user: String,
    addr: String,
    port: u16,
    git_root: String,
    export: String,
}

impl Ep {
    fn of(c: &Client) -> Ep {
        Ep {
            user: c.sshd.user(),
            addr: c.sshd.addr().to_string(),
            port: c.sshd.port(),
            git_root: c.git_root.display().to_string(),
            export: c.base.join("export").display().to_string(),
        }
    }

    fn git(&self, path: &str) -> String {
        format!("git ssh://{}@{}:{}{path}\n", self.user, self.addr, self.port)
    }

    fn repo(&self, name: &str) -> String {
        self.git(&format!("{}/{name}", self.git_root))
    }

    fn sftp_url(&self, path: &str) -> String {
        format!("sftp://{}@{}:{}{path}", self.user, self.addr, self.port)
    }

    fn sftp(&self, stamp: &str, path: &str, sha: &str, size: u64, source: &str) -> String {
        format!("sftp {stamp} {} sha256={sha} size={size} source={source}\n", self.sftp_url(path))
    }
}

/// The node's clock as a request stamp.
fn now_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    ferry_request::Stamp::from_unix(secs - 60).to_string()
}

/// Pseudo-random bytes (incompressible, deterministic).
fn noise(n: usize, seed: u64) -> Vec<u8> {
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

/// Stop the node's multiplexed ssh masters, so a changed forced command on
/// a client (read at authentication) applies to the next pull.
fn close_masters(node: &Node) {
    for e in fs::read_dir(node.srv().join("state/ssh")).into_iter().flatten().flatten() {
        let _ = run(Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}", e.path().display()))
            .args(["-O", "exit", "x"]));
        let _ = fs::remove_file(e.path());
    }
}

/// Make client `c`'s sshd run `script` instead of `ferry gate` for the
/// node's pull key (a compromised client controls its own server).
fn hostile_gate(node: &Node, c: &Client, script: &str) -> String {
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

fn restore_gate(node: &Node, c: &Client, old: String) {
    fs::write(c.base.join("authorized_keys"), old).unwrap();
    close_masters(node);
}

fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child =
        git_cmd(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository built object by object (C13: hostile fixtures are
/// generated, never taken from real exploit repositories).
struct Forge {
    dir: PathBuf,
}

impl Forge {
    fn init(dir: PathBuf) -> Forge {
        git(dir.parent().unwrap(), &["init", "--quiet", "--bare", dir.to_str().unwrap()]);
        Forge { dir }
    }

    fn g(&self, args: &[&str]) -> String {
        let gd = format!("--git-dir={}", self.dir.display());
        let mut a = vec![gd.as_str()];
        a.extend_from_slice(args);
        git(&self.dir, &a)
    }

    fn blob(&self, data: &[u8]) -> String {
        let gd = format!("--git-dir={}", self.dir.display());
        git_stdin(&self.dir, &[&gd, "hash-object", "-w", "--stdin"], data)
    }

    /// `entries`: (mode, name, oid); mktree sorts them.
    fn tree(&self, entries: &[(&str, &str, &str)]) -> String {
        let gd = format!("--git-dir={}", self.dir.display());
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
        git_stdin(&self.dir, &[&gd, "mktree", "-z", "--missing"], &input)
    }

    fn commit(&self, tree: &str, parents: &[&str], msg: &str) -> String {
        let mut args = vec!["commit-tree", tree, "-m", msg];
        for p in parents {
            args.push("-p");
            args.push(p);
        }
        self.g(&args)
    }

    fn set(&self, r: &str, oid: &str) {
        self.g(&["update-ref", r, oid]);
    }

    /// One commit on master with `files` (name → content) at the root.
    fn simple(dir: PathBuf, files: &[(&str, &[u8])]) -> Forge {
        let f = Forge::init(dir);
        let entries: Vec<(String, String)> = files.iter().map(|(n, d)| (n.to_string(), f.blob(d))).collect();
        let e: Vec<(&str, &str, &str)> = entries.iter().map(|(n, o)| ("100644", n.as_str(), o.as_str())).collect();
        let t = f.tree(&e);
        let c = f.commit(&t, &[], "content");
        f.set("refs/heads/master", &c);
        f
    }
}

// ---------------------------------------------------------------------------
// RP, GU (parse and enrollment level), AC-10, NL, RE-05: request files.

#[test]
fn hostile_requests_are_rejected_with_their_reason_and_change_nothing() {
    if !tools() {
        return;
    }
    let td = TestDir::new("hostile_requests");
    let smtp = require("python3").then(|| Smtp::start(&td.join("smtp")));
    let mail = smtp
        .as_ref()
        .map(|s| {
            format!(
                "[mail]\nto = [\"admin@node.example\"]\nfrom = \"ferry@node.example\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nhost_label = \"backup1\"\n",
                s.url()
            )
        })
        .unwrap_or_default();
    let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{mail}"));
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);
    // B has data on the node that A must never reach.
    let (b_bare, b_work) = b.repo("secret");
    ferry_tests::fleet::commit_and_push(&b_work, "secret.txt", "B's secret\n");
    let b_mirror = node.data("host-b").join("git/secret.git");
    eventually("B's mirror", || {
        scan(&node, "host-b");
        b_mirror.join("HEAD").exists() && for_each_ref(&b_mirror) == for_each_ref(&b_bare)
    });
    let (_a_bare, _) = a.repo("ok");
    let q = Queue::clone(&node, "host-a", &td);
    assert_alive(&node, &q, "alive-0");
    let guard = Guard::new(&node, &[&b]);

    let e = Ep::of(&a);
    let be = Ep::of(&b);
    let stamp = now_stamp();
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let art = format!("{}/site/x.tar.zst", e.export);
    let good_sftp = |st: &str| e.sftp(st, &art, sha, 0, "site");
    let ext = canary("ext");
    let (u, h, p, r) = (&e.user, &e.addr, e.port, &e.git_root);

    // (id, file content, expected reason); ids are unique over the test.
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // RP-01 NUL
        ("rp01-nul", format!("git ssh://{u}@{h}:{p}{r}/ok.git\0/../../etc.git\n").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp01-nul-dummy", b"dummy a\0b\n".to_vec(), "E_REQ_CTRL_CHAR"),
        // RP-02 CR: only a terminating CRLF is accepted (rp02-crlf ends in F)
        ("rp02-cr-end", b"dummy crend\r".to_vec(), "E_REQ_CTRL_CHAR"),
        ("rp02-cr-mid", format!("git ssh://{u}@{h}:{p}{r}/o\rk.git\n").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp02-crcrlf", b"dummy x\r\r\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("rp02-lfcr", b"dummy x\n\r".to_vec(), "E_REQ_CTRL_CHAR"),
        // RP-03 overlong line (file under the 64 KiB push limit)
        ("rp03-long-line", format!("dummy {}\n", "a".repeat(5000)).into_bytes(), "E_REQ_TOO_LONG"),
        ("rp03-long-url", e.repo(&"a".repeat(4100)).into_bytes(), "E_REQ_TOO_LONG"),
        ("rp03-no-lf", b"dummy nolf".to_vec(), "E_REQ_SYNTAX"),
        ("rp03-empty", Vec::new(), "E_REQ_SYNTAX"),
        ("rp03-only-lf", b"\n".to_vec(), "E_REQ_SYNTAX"),
        // RP-04 many lines in one file
        ("rp04-two-lines", b"dummy a\ndummy b\n".to_vec(), "E_REQ_TOO_MANY"),
        ("rp04-many-lines", "dummy x\n".repeat(4000).into_bytes(), "E_REQ_TOO_MANY"),
        ("rp04-same-twice", format!("{}{}", e.repo("ok.git"), e.repo("ok.git")).into_bytes(), "E_REQ_TOO_MANY"),
        // RP-05 grammar deviations
        ("rp05-upper-verb", e.repo("ok.git").replacen("git", "GIT", 1).into_bytes(), "E_REQ_MODULE"),
        ("rp05-upper-dummy", b"Dummy x\n".to_vec(), "E_REQ_MODULE"),
        ("rp05-two-spaces", e.repo("ok.git").replacen(' ', "  ", 1).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-tab", e.repo("ok.git").replacen(' ', "\t", 1).into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp05-leading-space", format!(" {}", e.repo("ok.git")).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-trailing-space", b"dummy x \n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-no-url", b"git\n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-extra-field", e.repo("ok.git").replace('\n', " extra\n").into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-extra-kv", e.repo("ok.git").replace('\n', " depth=1\n").into_bytes(), "E_REQ_FIELD"),
        ("rp05-sftp-2-fields", format!("sftp {stamp} {}\n", e.sftp_url(&art)).into_bytes(), "E_REQ_FIELD"),
        ("rp05-sftp-1-field", format!("sftp {}\n", e.sftp_url(&art)).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-comment", b"# dummy x\n".to_vec(), "E_REQ_MODULE"),
        ("rp05-trailing-comment", b"dummy x # comment\n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-unknown-verb", b"rsync x\n".to_vec(), "E_REQ_MODULE"),
        (
            "rp05-keys-order",
            good_sftp(&stamp).replace(" size=0 source=site", " source=site size=0").into_bytes(),
            "E_REQ_FIELD",
        ),
        (
            "rp05-key-repeated",
            good_sftp(&stamp).replace(" source=site", " size=0 source=site").into_bytes(),
            "E_REQ_FIELD",
        ),
        ("rp05-key-upper", good_sftp(&stamp).replace("sha256=", "SHA256=").into_bytes(), "E_REQ_FIELD"),
        // RP-06 BOM and invalid UTF-8
        ("rp06-bom", b"\xEF\xBB\xBFdummy x\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-invalid-utf8", b"dummy \xFF\xFE\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-overlong-utf8", b"dummy \xC0\xAF\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-utf16", "dummy x\n".encode_utf16().flat_map(u16::to_le_bytes).collect(), "E_REQ_CTRL_CHAR"),
        // RP-07 non-ASCII and confusable hosts
        ("rp07-cyrillic", format!("git ssh://{u}@cl\u{456}ent.example{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        ("rp07-fullwidth", format!("git ssh://{u}@\u{ff43}lient.example{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        ("rp07-zwsp", format!("git ssh://{u}@{h}\u{200b}:{p}{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        (
            "rp07-punycode",
            format!("git ssh://{u}@xn--clent-5ua.example{r}/ok.git\n").into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        ("rp07-upper-host", format!("git ssh://{u}@Client.Example{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-numeric-host", format!("git ssh://{u}@2130706433:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-octal-host", format!("git ssh://{u}@0177.0.0.1:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-ipv6", format!("git ssh://{u}@[::1]{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-trailing-dot", format!("git ssh://{u}@{h}.:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        // RP-08 bidi in names
        (
            "rp08-bidi-file",
            e.sftp(&stamp, &format!("{}/app-\u{202e}exe.tar.zst", e.export), sha, 0, "site").into_bytes(),
            "E_REQ_CHARSET",
        ),
        ("rp08-bidi-source", e.sftp(&stamp, &art, sha, 0, "s\u{2066}ite").into_bytes(), "E_REQ_CHARSET"),
        ("rp08-lrm", "dummy ok\u{200e}\n".as_bytes().to_vec(), "E_REQ_CHARSET"),
        // RP-09 traversal in storage names
        ("rp09-dotdot", e.repo("../../../srv/backup/data/host-b/secret.git").into_bytes(), "E_REQ_PATH"),
        ("rp09-dotdot-end", e.repo("..").into_bytes(), "E_REQ_PATH"),
        ("rp09-dot", e.repo(".").into_bytes(), "E_REQ_PATH"),
        ("rp09-dotgit", e.repo(".git").into_bytes(), "E_REQ_NAME"),
        ("rp09-hidden", e.repo(".ssh").into_bytes(), "E_REQ_NAME"),
        ("rp09-trailing-slash", e.repo("ok.git/").into_bytes(), "E_REQ_PATH"),
        ("rp09-double-slash", e.repo("/ok.git").into_bytes(), "E_REQ_PATH"),
        ("rp09-pct", e.repo("%2e%2e%2f%2e%2e%2fx.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-pct-mixed", e.repo("..%2fhost-b/x.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-backslash", e.repo("a\\..\\..\\b.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-300-bytes", e.repo(&format!("{}.git", "n".repeat(296))).into_bytes(), "E_REQ_NAME"),
        ("rp09-33-segments", e.git(&"/a".repeat(33)).into_bytes(), "E_REQ_PATH"),
        ("rp09-nested-repo", e.repo("x.git/y.git").into_bytes(), "E_REQ_NAME"),
        ("rp09-too-deep", e.repo("a/b/c/d/e/f/g/h/i/j.git").into_bytes(), "E_REQ_NAME"),
        ("rp09-root-itself", e.git(r).into_bytes(), "E_REQ_PATH"),
        ("rp09-sibling-prefix", e.git(&format!("{r}x/ok.git")).into_bytes(), "E_REQ_PATH"),
        ("rp09-tilde", e.git("/~root/.ssh").into_bytes(), "E_REQ_NAME"),
        ("rp09-source-dotdot", e.sftp(&stamp, &art, sha, 0, "..").into_bytes(), "E_REQ_NAME"),
        ("rp09-source-slash", e.sftp(&stamp, &art, sha, 0, "a/../../b").into_bytes(), "E_REQ_NAME"),
        ("rp09-dummy-word", b"dummy ../x\n".to_vec(), "E_REQ_NAME"),
        // RP-10 timestamps
        ("rp10-overflow", good_sftp("99999999999999999999").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-negative", good_sftp("-1").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-zero", good_sftp("0").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-plus", good_sftp(&format!("+{stamp}")).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-unix", good_sftp("1767225600").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-float", good_sftp("1767225600.5").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-hex", good_sftp("0x6955B900").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-leading-zero", good_sftp(&format!("0{stamp}")).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-feb30", good_sftp("20260230T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-leap-second", good_sftp("20261231T235960Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-lowercase", good_sftp(&stamp.to_lowercase()).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-year-10000", good_sftp("100000101T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-far-future", good_sftp("99991231T235959Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-1970", good_sftp("19700101T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-next-year", good_sftp(&next_year(&stamp)).into_bytes(), "E_REQ_TIMESTAMP"),
        // RP-11 digest and size fields
        ("rp11-63-hex", e.sftp(&stamp, &art, &sha[..63], 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-65-hex", e.sftp(&stamp, &art, &format!("{sha}0"), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-upper", e.sftp(&stamp, &art, &sha.to_uppercase(), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-prefix", e.sftp(&stamp, &art, &format!("sha256:{}", &sha[7..]), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-non-hex", e.sftp(&stamp, &art, &format!("g{}", &sha[1..]), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-size-neg", good_sftp(&stamp).replace("size=0", "size=-1").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-zeros", good_sftp(&stamp).replace("size=0", "size=007").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-huge", good_sftp(&stamp).replace("size=0", "size=99999999999999999999").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-2e63", good_sftp(&stamp).replace("size=0", "size=9223372036854775808").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-exp", good_sftp(&stamp).replace("size=0", "size=1e3").into_bytes(), "E_REQ_SIZE"),
        // GU-01/02 remote helpers, GU-03 local paths and scp-like
        ("gu01-ext", format!("git ext::sh%20-c%20touch%20{}\n", ext.display()).into_bytes(), "E_URL_SCHEME"),
        ("gu01-ext-spaced", format!("git ext::sh -c touch% {}\n", ext.display()).into_bytes(), "E_REQ_SYNTAX"),
        ("gu02-fd", b"git fd::17\n".to_vec(), "E_URL_SCHEME"),
        ("gu02-helper", format!("git testgit::ssh://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu02-persistent-https", format!("git persistent-https://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-file", format!("git file://{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-local-path", format!("git {}/secret.git\n", be.git_root).into_bytes(), "E_URL_SCHEME"),
        ("gu03-relative", b"git ../host-b/secret.git\n".to_vec(), "E_URL_SCHEME"),
        ("gu03-scp", format!("git {u}@{h}:{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-http", format!("git http://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-git-plus-ssh", format!("git git+ssh://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-upper-scheme", format!("git SSH://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-not-enrolled-https", format!("git https://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-not-enrolled-git", format!("git git://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-sftp-scheme-in-git", format!("git sftp://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        (
            "gu03-git-scheme-in-sftp",
            e.sftp(&stamp, &art, sha, 0, "site").replace("sftp://", "ssh://").into_bytes(),
            "E_URL_SCHEME",
        ),
        // GU-04/05 option injection
        (
            "gu04-upload-pack",
            format!("git --upload-pack=touch%20{}\n", canary("up").display()).into_bytes(),
            "E_URL_DASH",
        ),
        ("gu04-u", b"git -u/bin/sh\n".to_vec(), "E_URL_DASH"),
        ("gu04-config", b"git --config=core.sshCommand=id\n".to_vec(), "E_URL_DASH"),
        ("gu04-dash-segment", e.repo("--upload-pack=x").into_bytes(), "E_URL_DASH"),
        (
            "gu05-proxy-host",
            format!("git ssh://-oProxyCommand=touch%20{}/x\n", canary("px").display()).into_bytes(),
            "E_URL_DASH",
        ),
        ("gu05-proxy-user", format!("git ssh://-oProxyCommand=id@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_DASH"),
        (
            "gu05-proxy-sftp-user",
            format!("sftp {stamp} sftp://-oProxyCommand=id@{h}{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_DASH",
        ),
        (
            "gu05-proxy-sftp-host",
            format!("sftp {stamp} sftp://{u}@-oProxyCommand=id{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_DASH",
        ),
        // GU-07 confused deputy: another enrolled client's host
        (
            "gu07-b-git",
            format!("git ssh://{}@{}:{}{}/secret.git\n", be.user, be.addr, be.port, be.git_root).into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        (
            "gu07-b-sftp",
            be.sftp(&stamp, &format!("{}/x.tar.zst", be.export), sha, 0, "site").into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        ("gu07-loopback", format!("git ssh://{u}@127.0.0.1:{p}{r}/ok.git\n").into_bytes(), "E_REQ_HOST_NOT_OWNED"),
        ("gu07-localhost", format!("git ssh://{u}@localhost:{p}{r}/ok.git\n").into_bytes(), "E_REQ_HOST_NOT_OWNED"),
        (
            "gu07-node-itself",
            format!("git ssh://{u}@{}:{}/queue/host-b.git\n", node.sshd.addr(), node.sshd.port()).into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        // GU-11 ports, users, userinfo
        ("gu11-b-port", format!("git ssh://{u}@{h}:{}{r}/ok.git\n", be.port).into_bytes(), "E_URL_PORT"),
        (
            "gu11-port-22",
            format!("git ssh://{u}@{h}:22{r}/ok.git\n").into_bytes(),
            if p == 22 { "E_FETCH_NOT_FOUND" } else { "E_URL_PORT" },
        ),
        ("gu11-port-0", format!("git ssh://{u}@{h}:0{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-65536", format!("git ssh://{u}@{h}:65536{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-sign", format!("git ssh://{u}@{h}:+{p}{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-zero-pad", format!("git ssh://{u}@{h}:0{p}{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-empty", format!("git ssh://{u}@{h}:{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        (
            "gu11-sftp-port",
            e.sftp(&stamp, &art, sha, 0, "site").replace(&format!(":{p}/"), &format!(":{}/", be.port)).into_bytes(),
            "E_URL_PORT",
        ),
        ("gu11-wrong-user", format!("git ssh://nobody@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USER"),
        ("gu11-no-user", format!("git ssh://{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USER"),
        (
            "gu11-sftp-no-user",
            format!("sftp {stamp} sftp://{h}:{p}{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_USER",
        ),
        (
            "gu11-sftp-wrong-user",
            e.sftp(&stamp, &art, sha, 0, "site").replace(&format!("//{u}@"), "//adminbackup@").into_bytes(),
            "E_URL_USER",
        ),
        ("gu13-https-userinfo", format!("git https://user:token@{h}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        ("gu13-https-user", format!("git https://user@{h}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        ("gu13-ssh-password", format!("git ssh://{u}:secret@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        // GU-15 control characters and escapes in URLs
        ("gu15-pct-newline", e.repo("%0ahost=evil.example/r.git").into_bytes(), "E_URL_CHARSET"),
        ("gu15-pct-cr", e.repo("%0d/r.git").into_bytes(), "E_URL_CHARSET"),
        ("gu15-esc", e.repo("\x1b[2Jr.git").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("gu15-query", e.repo("ok.git?x=1").into_bytes(), "E_URL_CHARSET"),
        ("gu15-fragment", e.repo("ok.git#frag").into_bytes(), "E_URL_CHARSET"),
        // path outside the enrolled git roots / export dir
        ("gu-outside-roots", e.git("/etc").into_bytes(), "E_REQ_PATH"),
        ("gu-other-root", e.git(&format!("{}/secret.git", be.git_root)).into_bytes(), "E_REQ_PATH"),
        (
            "gu-node-data",
            e.git(&format!("{}/git/secret.git", node.data("host-b").display())).into_bytes(),
            "E_REQ_PATH",
        ),
        // AC-10 identity claimed in content
        ("ac10-client-field", b"dummy x client=host-b\n".to_vec(), "E_REQ_FIELD"),
        ("ac10-sftp-client-field", good_sftp(&stamp).replace("\n", " client=host-b\n").into_bytes(), "E_REQ_FIELD"),
        // NL-01/02/03/08/09/11 hostile text aimed at logs, terminals and mail
        (
            "nl02-forged-line",
            b"dummy x\n2026-01-01T00:00:00Z INFO client=host-b backup ok\n".to_vec(),
            "E_REQ_TOO_MANY",
        ),
        (
            "nl02-forged-json",
            b"dummy x\n{\"ts\":\"2026\",\"level\":\"info\",\"client\":\"host-b\",\"event\":\"request_done\"}\n"
                .to_vec(),
            "E_REQ_TOO_MANY",
        ),
        ("nl01-crlf-bcc", b"dummy x\r\nBcc: attacker@evil.example\r\n".to_vec(), "E_REQ_TOO_MANY"),
        ("nl01-bcc-in-word", b"dummy x\rBcc:attacker@evil.example\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-osc52", b"dummy \x1b]52;c;ZXZpbA==\x07\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-csi", b"dummy \x1b[2J\x1b[1;1H\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-osc8", b"dummy \x1b]8;;http://evil.example\x07x\x1b]8;;\x07\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-c1-csi", b"dummy \xC2\x9B2J\n".to_vec(), "E_REQ_CHARSET"),
        ("nl03-del", b"dummy x\x7f\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl08-bidi", "dummy ok\u{202e}deliaf\n".as_bytes().to_vec(), "E_REQ_CHARSET"),
        ("nl09-encoded-word", b"dummy =?utf-8?b?DQpCY2M6IHhAZXZpbA==?=\n".to_vec(), "E_REQ_NAME"),
        ("nl09-long", format!("dummy {}\n", "S".repeat(2000)).into_bytes(), "E_REQ_NAME"),
        ("nl11-html", b"dummy <img/src=x/onerror=alert(1)>\n".to_vec(), "E_REQ_NAME"),
    ];
    // RE-05 log flood: many invalid requests, each one event of bounded size.
    let flood: Vec<String> = (0..60).map(|i| format!("re05-flood-{i:02}")).collect();
    for id in &flood {
        cases.push((id, format!("dummy  {}\x1b[2J\n", "x".repeat(3000)).into_bytes(), "E_REQ_CTRL_CHAR"));
    }
    assert!(cases.len() < 256, "one push holds at most 256 request files");
    let mut files: Vec<(String, Vec<u8>)> = cases.iter().map(|(id, d, _)| rq(id, d)).collect();
    files.push(rq("rp02-crlf", b"dummy crlf\r\n"));
    let before = events(&node).len();
    q.send(&files);
    let t = Instant::now();
    scan(&node, "host-a");
    eprintln!("scan of {} hostile requests: {:?}", files.len(), t.elapsed());

    for (id, _, code) in &cases {
        assert_failed(&node, "host-a", id, code);
    }
    assert_done(&node, "host-a", "rp02-crlf");
    let done = events(&node).into_iter().find(|e| e["request"] == "rp02-crlf" && e["event"] == "request_done");
    assert_eq!(done.unwrap()["detail"], "dummy crlf", "CR stripped from the stored value");
    // RE-05: one event per rejected request, no more.
    let new_events = events(&node).len() - before;
    assert!(new_events <= files.len() + 3, "{new_events} events for {} requests", files.len());
    guard.check("hostile requests");

    // RP-12: the same id again with other content is a conflict; the first
    // stays as it was processed and nothing new runs.
    q.send(&[rq("rp12-same-id", "dummy first\n")]);
    scan(&node, "host-a");
    assert_done(&node, "host-a", "rp12-same-id");
    q.send(&[rq("rp12-same-id", "dummy second\n")]);
    scan(&node, "host-a");
    let conflicts: Vec<_> = events(&node)
        .into_iter()
        .filter(|e| e["event"] == "request_conflict" && e["request"] == "rp12-same-id")
        .collect();
    assert_eq!(conflicts.len(), 1, "one conflict event: {conflicts:?}");
    assert_eq!(conflicts[0]["reason"], "E_REQ_CONFLICT");
    assert_eq!(fs::read_to_string(node.pool("host-a").join("Frp12-same-id")).unwrap(), "dummy first\n");
    let runs =
        events(&node).into_iter().filter(|e| e["event"] == "request_done" && e["request"] == "rp12-same-id").count();
    assert_eq!(runs, 1, "the conflicting copy never ran");
    // The identical re-push of a finished id is a silent no-op.
    q.send(&[rq("rp12-same-id", "dummy first\n")]);
    scan(&node, "host-a");
    assert_eq!(
        events(&node)
            .into_iter()
            .filter(|e| e["event"] == "request_conflict" && e["request"] == "rp12-same-id")
            .count(),
        1
    );

    // NL: every sink stays one line of printable ASCII.
    assert_journal_clean(&node);
    for args in [
        vec!["events", "--last", "1000"],
        vec!["list"],
        vec!["--json", "list"],
        vec!["find", "--client", "host-a"],
        vec!["events", "--client", "host-a"],
    ] {
        let out = run(node.cmd().args(&args));
        assert!(out.status.success(), "ferry-node {args:?}: {}", text(&out));
        assert_printable(&format!("ferry-node {args:?}"), &out.stdout);
        assert_printable(&format!("ferry-node {args:?} (stderr)"), &out.stderr);
    }
    if let Some(smtp) = &smtp {
        let mails = smtp.wait_for(1, Duration::from_secs(30));
        // RE-05: a flood of rejections is a digest, not a mail per request.
        assert!(mails.len() <= 3, "{} mails for one scan", mails.len());
        for m in &mails {
            // SMTP lines end in CRLF; nothing else may be a control byte.
            let raw = String::from_utf8_lossy(&m.raw).replace("\r\n", "\n");
            assert_printable("raw mail", raw.as_bytes());
            let names: Vec<String> = m.headers.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
            assert!(!names.iter().any(|n| n == "bcc" || n == "cc"), "injected header: {names:?}");
            assert_eq!(names.iter().filter(|n| *n == "to").count(), 1, "{names:?}");
            assert_eq!(m.envelope_to, vec!["admin@node.example".to_owned()], "recipients from the config only");
            assert_eq!(m.header("To"), Some("admin@node.example"));
            assert!(m.subject.is_ascii() && m.subject.len() < 200, "{:?}", m.subject);
            for bad in ["evil", "Bcc", "attacker", "onerror", "deliaf", "\u{202e}", "=?utf-8?b?DQ"] {
                assert!(!m.subject.contains(bad), "client text in the subject: {:?}", m.subject);
            }
            assert!(!m.body.contains("\nBcc:"), "a forged header line in the body");
            assert!(m.body.contains("E_REQ_"), "the mail names the reasons: {}", m.body);
        }
        assert!(!mails.is_empty(), "request failures are mailed to the administrators");
    }
    assert_alive(&node, &q, "alive-1");
    guard.check("after the conflict cases");
}

/// The same time one year later (outside the node's accepted window).
fn next_year(stamp: &str) -> String {
    let y: u32 = stamp[..4].parse().unwrap();
    format!("{}{}", y + 1, &stamp[4..])
}

// ---------------------------------------------------------------------------
// AC (channel, pushes, enrollment) and RE (per-push and backlog limits).

#[test]
fn hostile_pushes_ssh_commands_and_enrollments_are_refused() {
    if !tools() {
        return;
    }
    let td = TestDir::new("hostile_access");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[limits]\npending_per_client = 5\n");
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);
    ok(b.cmd().args(["request", "dummy", "b-own"]));
    ok(b.cmd().args(["send", "--wait"]));
    scan(&node, "host-b");
    assert_eq!(node.pool_ids("host-b", "F").len(), 1);

    // RE-01/RE-02 backlog (pending_per_client = 5) with the real client:
    // the push is refused with E_REQ_PENDING and the client keeps its
    // requests, delivering them once the node caught up.
    for i in 0..4 {
        ok(a.cmd().args(["request", "dummy", &format!("p{i}")]));
    }
    ok(a.cmd().args(["send", "--wait"]));
    assert_eq!(node.pool_ids("host-a", "RQ").len(), 4, "four requests wait on the node");
    for i in 4..6 {
        ok(a.cmd().args(["request", "dummy", &format!("p{i}")]));
    }
    let out = a.ferry(&["send", "--wait", "--force"]);
    assert!(text(&out).contains("E_REQ_PENDING"), "the client is told why: {}", text(&out));
    assert_eq!(node.pool_ids("host-a", "RQ").len(), 4, "nothing beyond the backlog limit was accepted");
    assert_eq!(a.pool_ids("backup1", "P").len(), 2, "the client keeps its two refused requests");
    let refused = events(&node).into_iter().filter(|e| e["reason"] == "E_REQ_PENDING").count();
    assert_eq!(refused, 1, "one event for the refused push");
    scan(&node, "host-a");
    ok(a.cmd().args(["send", "--wait", "--force"]));
    scan(&node, "host-a");
    assert_eq!(node.pool_ids("host-a", "F").len(), 6, "all six requests finished once the backlog drained");
    assert!(a.pool_ids("backup1", "P").is_empty());

    let q = Queue::clone(&node, "host-a", &td);
    assert_alive(&node, &q, "alive-0");
    let guard = Guard::new(&node, &[&b]);
    let kh = td.join("known_hosts");
    node.sshd.write_known_hosts(&kh);
    let a_key = a.base.join("state/ssh/id_ed25519");
    let a_ssh = ssh_command(&a_key, &kh);
    let pool_a = |node: &Node| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(node.pool("host-a"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // AC-01: A's key against B's queue (push and fetch).
    let scratch = td.join("scratch");
    git(&td.path, &["init", "--quiet", scratch.to_str().unwrap()]);
    fs::write(scratch.join("RQac01-into-b"), "dummy from-a\n").unwrap();
    git(&scratch, &["add", "-A"]);
    git(&scratch, &["commit", "--quiet", "-m", "x"]);
    for (what, args) in [
        ("push B's queue", vec!["push".to_owned(), node.url("queue/host-b.git"), "HEAD:master".to_owned()]),
        ("fetch B's queue", vec!["fetch".to_owned(), node.url("queue/host-b.git")]),
        ("push gitosis-admin", vec!["push".to_owned(), node.url("gitosis-admin.git"), "HEAD:master".to_owned()]),
    ] {
        let out = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", &a_ssh).args(&args));
        assert!(!out.status.success(), "ac01 {what}: accepted");
        let want = if what.starts_with("push") { "write" } else { "read" };
        assert!(text(&out).contains(&format!("Repository {want} access denied")), "ac01 {what}: {}", text(&out));
    }

    // AC-02/AC-04: path tricks and other commands in SSH_ORIGINAL_COMMAND.
    const DANGEROUS: &str = "Arguments to command look dangerous";
    const DENIED: &str = "Repository read access denied";
    const PUSH_DENIED: &str = "Repository write access denied";
    const UNKNOWN: &str = "Unknown command denied";
    let c = canary("ac02");
    let c = c.display();
    let huge = format!("git-receive-pack '{}'", "a/".repeat(60_000));
    let commands: Vec<(String, &str)> = vec![
        ("git-receive-pack 'queue/host-a.git/../host-b.git'".into(), DANGEROUS),
        ("git-receive-pack 'queue/../queue/host-b.git'".into(), DANGEROUS),
        ("git-receive-pack '/queue/host-b.git'".into(), PUSH_DENIED),
        ("git-receive-pack '//queue/host-b.git'".into(), PUSH_DENIED),
        ("git-receive-pack 'queue//host-b.git'".into(), DANGEROUS),
        ("git-receive-pack 'queue/host-b.git/'".into(), DANGEROUS),
        ("git-receive-pack 'queue/HOST-B.git'".into(), PUSH_DENIED),
        ("git-receive-pack 'queue/host-b'".into(), PUSH_DENIED),
        ("git-receive-pack '~backupq/queue/host-b.git'".into(), DANGEROUS),
        ("git-receive-pack \"queue/host-b.git\"".into(), DANGEROUS),
        ("git-receive-pack queue/host-b.git".into(), DANGEROUS),
        ("git-receive-pack 'queue/host-a.git' 'queue/host-b.git'".into(), DANGEROUS),
        (format!("git-receive-pack 'queue/host-a.git'\ntouch {c}"), "Command may not contain newline"),
        (format!("git-receive-pack 'queue/host-a.git';touch {c}"), DANGEROUS),
        (format!("git-receive-pack '$(touch {c})'"), DANGEROUS),
        (format!("git-receive-pack 'queue/host-a.git' && touch {c}"), DANGEROUS),
        ("git receive-pack 'queue/host-b.git'".into(), PUSH_DENIED),
        ("git-upload-pack 'queue/host-b.git'".into(), DENIED),
        ("git-upload-archive 'queue/host-b.git'".into(), DENIED),
        ("git-upload-pack '--help'".into(), DANGEROUS),
        ("git-upload-pack '-c core.sshCommand=id'".into(), DANGEROUS),
        ("git-receive-pack 'queue/\x1b[2Jhost-b.git'".into(), UNKNOWN),
        ("git-receive-pack 'gitosis-admin.git'".into(), PUSH_DENIED),
        (format!("git-shell -c 'touch {c}'"), UNKNOWN),
        ("sh".into(), UNKNOWN),
        ("cat /etc/passwd".into(), UNKNOWN),
        ("scp -t /tmp".into(), UNKNOWN),
        ("git-receive-pack".into(), UNKNOWN),
        (huge, UNKNOWN),
    ];
    for (cmd, want) in &commands {
        let out = run(ssh_cmd(&a_key, &kh, &node.sshd).arg(cmd));
        let t = text(&out);
        assert!(!out.status.success(), "ac02 {:?}: accepted: {t}", &cmd[..cmd.len().min(80)]);
        assert!(t.contains(want), "ac02 {:?}: expected {want:?}, got: {t}", &cmd[..cmd.len().min(80)]);
    }
    let denials = events(&node).into_iter().filter(|e| e["event"] == "access_denied").count();
    assert!(denials >= commands.len(), "each denial is logged ({denials})");

    // AC-05: side channels with a client key: stdio forwarding, a pty, an
    // environment that claims another identity.
    for (what, args) in [
        ("stdio forward", vec!["-W", "127.0.0.1:22"]),
        ("stdio forward to the node's sshd", vec!["-W", "localhost:22"]),
        ("pty", vec!["-tt", "sh"]),
    ] {
        let out = ferry_tests::run_with_timeout(ssh_cmd(&a_key, &kh, &node.sshd).args(&args), Duration::from_secs(30));
        assert!(!out.status.success(), "ac05 {what}: worked: {}", text(&out));
    }
    let sneaky = format!("{a_ssh} -o SetEnv=FERRY_USER=host-b -o SetEnv=GIT_DIR=/tmp -o SetEnv=GITOSIS_USER=host-b");
    q.commit(&[rq("ac05-setenv", "dummy setenv\n")], "setenv");
    let out = run(git_cmd(&q.dir).env("GIT_SSH_COMMAND", &sneaky).args([
        "push",
        &node.url("queue/host-a.git"),
        "HEAD:master",
    ]));
    assert!(out.status.success(), "ac05 setenv: the push itself is fine: {}", text(&out));
    scan(&node, "host-a");
    assert_done(&node, "host-a", "ac05-setenv");
    let ev = events(&node).into_iter().find(|e| e["request"] == "ac05-setenv" && e["event"] == "request_done").unwrap();
    assert_eq!(ev["client"], "host-a", "identity from the key, not the environment");

    // AC-12: refs, deletion, history rewrite, push options.
    let tip = q.node_tip();
    let files_before = pool_a(&node);
    q.commit(&[rq("ac12-side", "dummy side\n")], "side");
    for (what, refspec, extra, code) in [
        ("side branch", "HEAD:refs/heads/side", vec![], "E_ACL_DENIED"),
        ("tag", "HEAD:refs/tags/v1", vec![], "E_ACL_DENIED"),
        ("option-like ref", "HEAD:refs/heads/--exec=id", vec![], "E_ACL_DENIED"),
        ("notes ref", "HEAD:refs/notes/commits", vec![], "E_ACL_DENIED"),
        ("delete master", ":master", vec![], "E_ACL_DENIED"),
        ("master and another ref", "HEAD:master", vec!["HEAD:refs/heads/other"], "E_ACL_DENIED"),
    ] {
        q.commit(&[rq("ac12-side", "dummy side\n")], what);
        let mut extra_args: Vec<&str> = vec![];
        let mut spec = refspec.to_owned();
        if !extra.is_empty() {
            extra_args.extend(["origin", refspec]);
            spec = extra[0].to_owned();
        }
        let out = if extra_args.is_empty() {
            q.push_as(Some("host-a"), &spec, &[])
        } else {
            let out = run(git_cmd(&q.dir)
                .env("FERRY_USER", "host-a")
                .args(["push", "--atomic"])
                .args(&extra_args)
                .arg(&spec));
            q.reset();
            out
        };
        assert_push_refused(&node, &out, code, &format!("ac12 {what}"));
        assert_eq!(q.node_tip(), tip, "ac12 {what}: the queue did not move");
    }
    // Non-fast-forward: a rewritten history on top of nothing.
    let orphan = td.join("orphan");
    git(&td.path, &["init", "--quiet", orphan.to_str().unwrap()]);
    fs::write(orphan.join("RQac12-rewrite"), "dummy rewrite\n").unwrap();
    git(&orphan, &["add", "-A"]);
    git(&orphan, &["commit", "--quiet", "-m", "rewrite"]);
    let out = run(git_cmd(&orphan).env("FERRY_USER", "host-a").args([
        "push",
        "--force",
        q.node_repo.to_str().unwrap(),
        "HEAD:master",
    ]));
    assert_push_refused(&node, &out, "E_ACL_DENIED", "ac12 non-fast-forward");
    assert_eq!(q.node_tip(), tip, "history rewrite refused");
    // Push options are not advertised.
    q.commit(&[rq("ac12-push-option", "dummy po\n")], "push option");
    let out = q.push_as(Some("host-a"), "HEAD:master", &["-o", "client=host-b"]);
    assert!(!out.status.success(), "push options accepted: {}", text(&out));
    assert_eq!(q.node_tip(), tip);

    // AC-01 over the local transport: another client's identity, none, a
    // look-alike.
    for pusher in [Some("host-b"), None, Some("host-a "), Some("HOST-A"), Some("host-a\nhost-b"), Some("")] {
        q.commit(&[rq("ac01-pusher", "dummy pusher\n")], "pusher");
        let out = q.push_as(pusher, "HEAD:master", &[]);
        assert_push_refused(&node, &out, "E_ACL_DENIED", &format!("ac01 FERRY_USER={pusher:?}"));
    }
    assert_eq!(q.node_tip(), tip);

    // Request files that are not plain RQ<id> blobs at the top level.
    let bad_names: Vec<(&str, String)> = vec![
        ("subdirectory", "host-b/RQac10-subdir".into()),
        ("readme", "README".into()),
        ("empty id", "RQ".into()),
        ("dot in id", "RQa.b".into()),
        ("dash first", "RQ-x".into()),
        ("long id", format!("RQ{}", "i".repeat(129))),
        ("space", "RQa b".into()),
        ("lower-case prefix", "rqabc".into()),
    ];
    for (what, name) in &bad_names {
        q.commit(&[(name.clone(), b"dummy x\n".to_vec())], what);
        let out = q.push();
        assert_push_refused(&node, &out, "E_REQ_NAME", &format!("name: {what}"));
    }
    {
        use std::os::unix::ffi::OsStrExt;
        q.commit(&[], "non-UTF-8 name");
        fs::write(q.dir.join(std::ffi::OsStr::from_bytes(b"RQ\xff\x1b[2J")), "dummy x\n").unwrap();
        ok(git_cmd(&q.dir).args(["add", "-A"]));
        ok(git_cmd(&q.dir).args(["commit", "--quiet", "-m", "non-utf8"]));
        assert_push_refused(&node, &q.push(), "E_REQ_NAME", "name: non-UTF-8 with ESC");
    }
    // Types: symlink, executable, submodule.
    q.commit(&[], "symlink");
    symlink("/etc/passwd", q.dir.join("RQac12-symlink")).unwrap();
    ok(git_cmd(&q.dir).args(["add", "-A"]));
    ok(git_cmd(&q.dir).args(["commit", "--quiet", "-m", "symlink"]));
    assert_push_refused(&node, &q.push(), "E_REQ_FILETYPE", "symlink");
    q.commit(&[rq("ac12-exec", "dummy exec\n")], "exec");
    fs::set_permissions(q.dir.join("RQac12-exec"), fs::Permissions::from_mode(0o755)).unwrap();
    ok(git_cmd(&q.dir).args(["add", "-A"]));
    ok(git_cmd(&q.dir).args(["commit", "--quiet", "-m", "exec"]));
    assert_push_refused(&node, &q.push(), "E_REQ_FILETYPE", "executable");
    q.commit(&[], "gitlink");
    let head = git(&q.dir, &["rev-parse", "HEAD"]);
    ok(git_cmd(&q.dir).args(["update-index", "--add", "--cacheinfo", &format!("160000,{head},RQac12-gitlink")]));
    ok(git_cmd(&q.dir).args(["commit", "--quiet", "-m", "gitlink"]));
    assert_push_refused(&node, &q.push(), "E_REQ_FILETYPE", "gitlink");

    // RP-03/RE: oversized request files are refused at the push.
    q.commit(&[rq("re-70k", vec![b'a'; 70 * 1024])], "70k");
    assert_push_refused(&node, &q.push(), "E_REQ_TOO_LONG", "70 KiB request");
    q.commit(&[rq("re-10m", vec![b'a'; 10 << 20])], "10m");
    assert_push_refused(&node, &q.push(), "E_REQ_TOO_LONG", "10 MiB request (tiny on the wire)");

    // RP-04/RE-01: 300 requests in one push: one refusal, one event.
    let before = events(&node).iter().filter(|e| e["event"] == "push_refused").count();
    let many: Vec<_> = (0..300).map(|i| rq(&format!("re-many-{i:03}"), format!("dummy m{i}\n"))).collect();
    q.commit(&many, "300");
    let out = q.push();
    assert_push_refused(&node, &out, "E_REQ_TOO_MANY", "300 requests in one push");
    let after = events(&node).iter().filter(|e| e["event"] == "push_refused").count();
    assert_eq!(after, before + 1, "one summary event, not one per request");
    // ... and spread over 300 commits of one push.
    q.commit(&[], "start");
    for (i, f) in many.iter().enumerate() {
        q.add_commit(std::slice::from_ref(f), &format!("c{i}"));
    }
    assert_push_refused(&node, &q.push(), "E_REQ_TOO_MANY", "300 commits in one push");

    assert_eq!(q.node_tip(), tip, "no refused push moved the queue");
    assert_eq!(pool_a(&node), files_before, "no refused push reached the pool");
    scan(&node, "host-a");
    assert!(node.pool_ids("host-a", "E").is_empty(), "nothing of the refused pushes was processed");

    // AC-10: identity claimed in commit metadata is never consulted.
    q.commit(&[rq("ac10-author", "dummy author\n")], "client=host-b\n\nFerry-Request: host-b");
    ok(git_cmd(&q.dir).args([
        "commit",
        "--quiet",
        "--amend",
        "--allow-empty",
        "--author",
        "root <root@host-b>",
        "-m",
        "client=host-b",
    ]));
    let out = q.push();
    assert!(out.status.success(), "{}", text(&out));
    scan(&node, "host-a");
    assert_done(&node, "host-a", "ac10-author");
    let ev = events(&node).into_iter().find(|e| e["request"] == "ac10-author" && e["event"] == "request_done").unwrap();
    assert_eq!(ev["client"], "host-a");
    guard.check("pushes and commands");

    // AC-07/AC-08: enrollment pushes with hostile keys or grants are refused
    // and the live enrollment stays.
    let k2 = ferry_tests::ssh_keygen(&td.join("k2/id"), "evil");
    let k3 = ferry_tests::ssh_keygen(&td.join("k3/id"), "evil3");
    let mut k2f = k2.split(' ');
    let (k2t, k2b) = (k2f.next().unwrap().to_owned(), k2f.next().unwrap().to_owned());
    let rsa_outer = format!("ssh-rsa {k2b} mismatch");
    let admin_cases: Vec<(&str, String, String, &str)> = vec![
        ("options prefix", "evil.pub".into(), format!("command=\"touch {c}\" {k2}"), "E_ENROL_KEY"),
        ("environment option", "evil.pub".into(), format!("environment=\"LD_PRELOAD=/tmp/x.so\" {k2}"), "E_ENROL_KEY"),
        ("restrict option", "evil.pub".into(), format!("restrict {k2}"), "E_ENROL_KEY"),
        ("cert-authority", "evil.pub".into(), format!("cert-authority {k2}"), "E_ENROL_KEY"),
        ("newline injection", "evil.pub".into(), format!("{k2t} {k2b} a\ncommand=\"/bin/sh\" {k3}"), "E_ENROL_KEY"),
        ("CR inside", "evil.pub".into(), format!("{k2t} {}\r{} x", &k2b[..20], &k2b[20..]), "E_ENROL_KEY"),
        ("type mismatch", "evil.pub".into(), rsa_outer, "E_ENROL_KEY"),
        ("truncated blob", "evil.pub".into(), format!("{k2t} {} x", &k2b[..k2b.len() - 8]), "E_ENROL_KEY"),
        ("A's key again", "evil.pub".into(), a.public_key.clone(), "E_ENROL_DUP_KEY"),
        ("B enrols A's key", "host-b.pub".into(), a.public_key.clone(), "E_ENROL_DUP_KEY"),
        ("A's key twice in one file", "evil.pub".into(), format!("{k2}\n{k2}"), "E_ENROL_KEY"),
    ];
    for (what, file, content, code) in &admin_cases {
        let out =
            node.admin_push(what, |dir| fs::write(dir.join("keydir").join(file), format!("{content}\n")).unwrap());
        assert!(!out.status.success(), "ac07 {what}: enrollment accepted");
        assert!(text(&out).contains(code), "ac07 {what}: expected {code}: {}", text(&out));
    }
    for (what, section) in [
        ("grant on B's queue", "[group evil]\nmembers = host-a\nwritable = queue/host-b\n"),
        ("client writes gitosis-admin", "[group evil]\nmembers = host-a\nwritable = gitosis-admin\n"),
        ("client pushes through a map", "[group evil]\nmembers = host-a\nmap writable sneaky = queue/host-b\n"),
    ] {
        let out = node.admin_push(what, |dir| {
            let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
            conf.push_str(&format!("\n{section}"));
            fs::write(dir.join("gitosis.conf"), conf).unwrap();
        });
        assert!(!out.status.success(), "ac07 {what}: enrollment accepted");
        assert!(text(&out).contains("E_ENROL_CONF"), "ac07 {what}: {}", text(&out));
    }
    guard.check("enrollment pushes");
    assert_journal_clean(&node);
    assert_alive(&node, &q, "alive-1");
}

// ---------------------------------------------------------------------------
// MR (what the client's repositories contain) and GU/RE at fetch time (what
// the client's server answers).

/// `git <args>` on a bare repository.
fn gd(dir: &Path, args: &[&str]) -> String {
    let d = format!("--git-dir={}", dir.display());
    let mut a = vec![d.as_str()];
    a.extend_from_slice(args);
    git(dir, &a)
}

fn no_staging_left(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staging left in {}: {left:?}", dir.display());
}

#[test]
fn hostile_repositories_are_stored_inert_or_refused() {
    if !tools() {
        return;
    }
    let td = TestDir::new("hostile_repos");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[limits]\nmax_refs = 100\n");
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    let mut lim = Client::new(&td, "host-q", &[&node]);
    lim.gitosis_section.push_str("quota = 1M\nmax-objects = 10\njob-timeout = 8s\n");
    node.enroll(&[&a, &b, &lim]);
    let (b_bare, b_work) = b.repo("secret");
    ferry_tests::fleet::commit_and_push(&b_work, "secret.txt", "B's secret\n");
    let b_mirror = node.data("host-b").join("git/secret.git");
    eventually("B's mirror", || {
        scan(&node, "host-b");
        b_mirror.join("HEAD").exists() && for_each_ref(&b_mirror) == for_each_ref(&b_bare)
    });
    let q = Queue::clone(&node, "host-a", &td);
    let ql = Queue::clone(&node, "host-q", &td);
    assert_alive(&node, &q, "alive-0");
    let guard = Guard::new(&node, &[&b]);
    let e = Ep::of(&a);
    let root = a.git_root.clone();
    let mirror = |name: &str| node.data("host-a").join(format!("git/{name}.git"));
    let gitmodules = |body: &str| format!("[submodule \"x\"]\n\tpath = x\n{body}");

    // Hostile repositories, built object by object in A's exported root.
    let sub = |name: &str, modules: String, extra: &[(&str, &str, &str)]| -> Forge {
        let f = Forge::init(root.join(format!("{name}.git")));
        let gm = f.blob(modules.as_bytes());
        let readme = f.blob(b"readme\n");
        let mut entries = vec![("100644", ".gitmodules", gm.as_str()), ("100644", "README", readme.as_str())];
        let fake = "1234567890123456789012345678901234567890";
        entries.push(("160000", "x", fake));
        entries.extend_from_slice(extra);
        let t = f.tree(&entries);
        let c = f.commit(&t, &[], "hostile");
        f.set("refs/heads/master", &c);
        f
    };
    let ext = canary("mr01-ext");
    sub("mr01-ext", gitmodules(&format!("\turl = ext::sh -c touch% {}\n", ext.display())), &[]);
    sub(
        "mr01-proxy",
        gitmodules(&format!("\turl = ssh://-oProxyCommand=touch%20{}/x\n", canary("mr01-px").display())),
        &[],
    );
    sub("mr01-file", gitmodules("\turl = file:///root/.ssh\n"), &[]);
    sub("mr01-other-client", gitmodules(&format!("\turl = {}/secret.git\n", b.git_root.display())), &[]);
    sub("mr01-dash-url", gitmodules("\turl = -u./payload\n"), &[]);
    sub(
        "mr01-update",
        gitmodules(&format!(
            "\turl = https://example.invalid/x\n\tupdate = !sh -c 'touch {}'\n",
            canary("mr01-up").display()
        )),
        &[],
    );
    sub("mr01-name", "[submodule \"../../modules/evil\"]\n\tpath = x\n\turl = https://example.invalid/x\n".into(), &[]);
    sub("mr01-dash-path", "[submodule \"x\"]\n\tpath = -x\n\turl = https://example.invalid/x\n".into(), &[]);
    // MR-02: hooks and attributes in the tree, `.git` look-alikes, the
    // CVE-2025-48384 trailing-CR path.
    {
        let f = Forge::init(root.join("mr02-hooks.git"));
        let hook = f.blob(format!("#!/bin/sh\ntouch {}\n", canary("mr02-hook").display()).as_bytes());
        let attrs = f.blob(b"* filter=evil diff=evil merge=evil\n");
        let cfg = f.blob(format!("[core]\n\tfsmonitor = touch {}\n", canary("mr02-cfg").display()).as_bytes());
        let hooks = f.tree(&[
            ("100755", "post-checkout", &hook),
            ("100755", "post-update", &hook),
            ("100755", "reference-transaction", &hook),
        ]);
        let t = f.tree(&[
            ("040000", "hooks", &hooks),
            ("100644", ".gitattributes", &attrs),
            ("100644", "config", &cfg),
            ("100644", ".lfsconfig", &cfg),
        ]);
        let c = f.commit(&t, &[], "hooks");
        f.set("refs/heads/master", &c);
    }
    for (name, dotgit) in [
        ("mr02-dotgit", ".git"),
        ("mr02-dotgit-case", ".GIT"),
        ("mr02-dotgit-ntfs", "git~1"),
        ("mr02-dotgit-hfs", ".g\u{200c}it"),
    ] {
        let f = Forge::init(root.join(format!("{name}.git")));
        let hook = f.blob(format!("#!/bin/sh\ntouch {}\n", canary(name).display()).as_bytes());
        let hooks = f.tree(&[("100755", "post-checkout", &hook)]);
        let inner = f.tree(&[("040000", "hooks", &hooks)]);
        let t = f.tree(&[("040000", dotgit, &inner)]);
        let c = f.commit(&t, &[], "dotgit");
        f.set("refs/heads/master", &c);
    }
    {
        let f = Forge::init(root.join("mr02-gitmodules-symlink.git"));
        let target = f.blob(b"/etc/passwd");
        let t = f.tree(&[("120000", ".gitmodules", &target)]);
        let c = f.commit(&t, &[], "symlinked .gitmodules");
        f.set("refs/heads/master", &c);
    }
    {
        let f = Forge::init(root.join("mr02-cr-path.git"));
        let gm = f.blob(b"[submodule \"x\"]\n\tpath = \"x\r\"\n\turl = https://example.invalid/x\n");
        let link = f.blob(b".git/modules/x/hooks");
        let t = f.tree(&[
            ("100644", ".gitmodules", &gm),
            ("120000", "x", &link),
            ("160000", "x\r", "1234567890123456789012345678901234567890"),
        ]);
        let c = f.commit(&t, &[], "cr path");
        f.set("refs/heads/master", &c);
    }
    // MR-05: git bomb, 10 levels of 10 entries (10^10 paths, 12 objects).
    {
        let f = Forge::init(root.join("mr05-bomb.git"));
        let blob = f.blob(b"boom\n");
        let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let mut t = f.tree(&names.iter().map(|n| ("100644", n.as_str(), blob.as_str())).collect::<Vec<_>>());
        for _ in 0..9 {
            let dirs: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
            let prev = t.clone();
            t = f.tree(&dirs.iter().map(|n| ("040000", n.as_str(), prev.as_str())).collect::<Vec<_>>());
        }
        let c = f.commit(&t, &[], "bomb");
        f.set("refs/heads/master", &c);
    }
    // Two client paths mapping to one storage name; things that are no
    // repository.
    Forge::simple(root.join("coll"), &[("a", b"first\n")]);
    Forge::simple(root.join("coll.git"), &[("a", b"second\n")]);
    // RE (inodes): a million branches cost the client nothing but are a
    // file and a reflog each on the node; 150 over a limit of 100 here.
    {
        let f = Forge::simple(root.join("re-refs.git"), &[("a", b"a\n")]);
        let head = f.g(&["rev-parse", "refs/heads/master"]);
        let tx: String = (0..150).map(|i| format!("create refs/heads/b{i:04} {head}\n")).collect();
        let gdir = format!("--git-dir={}", f.dir.display());
        git_stdin(&f.dir, &[&gdir, "update-ref", "--stdin"], tx.as_bytes());
    }
    fs::create_dir_all(root.join("plain.git")).unwrap();
    fs::write(root.join("plain.git/HEAD"), "ref: refs/heads/master\n").unwrap();
    symlink("/etc", root.join("etc-link.git")).unwrap();
    symlink(&b_bare, root.join("b-link.git")).unwrap();

    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("mr01-ext", "mr01-ext.git", None),
        ("mr01-proxy", "mr01-proxy.git", None),
        ("mr01-file", "mr01-file.git", None),
        ("mr01-other-client", "mr01-other-client.git", None),
        ("mr01-dash-url", "mr01-dash-url.git", Some("E_FETCH_FSCK")),
        ("mr01-update", "mr01-update.git", Some("E_FETCH_FSCK")),
        ("mr01-name", "mr01-name.git", Some("E_FETCH_FSCK")),
        ("mr01-dash-path", "mr01-dash-path.git", Some("E_FETCH_FSCK")),
        ("mr02-hooks", "mr02-hooks.git", None),
        ("mr02-dotgit", "mr02-dotgit.git", Some("E_FETCH_FSCK")),
        ("mr02-dotgit-case", "mr02-dotgit-case.git", Some("E_FETCH_FSCK")),
        ("mr02-dotgit-ntfs", "mr02-dotgit-ntfs.git", Some("E_FETCH_FSCK")),
        ("mr02-dotgit-hfs", "mr02-dotgit-hfs.git", Some("E_FETCH_FSCK")),
        ("mr02-gitmodules-symlink", "mr02-gitmodules-symlink.git", Some("E_FETCH_FSCK")),
        ("mr02-cr-path", "mr02-cr-path.git", None),
        ("mr05-bomb", "mr05-bomb.git", None),
        ("mr-coll-1", "coll", None),
        ("mr-coll-2", "coll.git", Some("E_REQ_CONFLICT")),
        ("mr-missing", "missing.git", Some("E_FETCH_NOT_FOUND")),
        ("re-refs-flood", "re-refs.git", Some("E_FETCH_LIMIT")),
        ("mr-not-a-repo", "plain.git", Some("E_FETCH_NOT_FOUND")),
        ("mr-link-out", "etc-link.git", Some("E_FETCH_NOT_FOUND")),
    ];
    q.send(&cases.iter().map(|(id, path, _)| rq(id, e.repo(path))).collect::<Vec<_>>());
    let t = Instant::now();
    scan(&node, "host-a");
    eprintln!("scan of {} hostile repositories: {:?}", cases.len(), t.elapsed());
    for (id, path, want) in &cases {
        let name = path.trim_end_matches(".git");
        match want {
            None => {
                assert_done(&node, "host-a", id);
                let m = mirror(name);
                assert!(m.join("HEAD").is_file(), "{id}: stored");
                assert_eq!(for_each_ref(&m), for_each_ref(&root.join(path)), "{id}: stored as it is");
                // Nothing of the client's tree became node configuration.
                let hooks: Vec<_> = fs::read_dir(m.join("hooks")).into_iter().flatten().flatten().collect();
                assert!(hooks.is_empty(), "{id}: hooks in the mirror: {hooks:?}");
                assert!(!m.join("modules").exists(), "{id}: submodules were cloned");
            }
            Some(code) => {
                assert_failed(&node, "host-a", id, code);
                if *code != "E_REQ_CONFLICT" {
                    assert!(!mirror(name).exists(), "{id}: nothing stored");
                }
            }
        }
    }
    // The gitlink is a plain commit id; no submodule was fetched.
    let tree = gd(&mirror("mr01-ext"), &["ls-tree", "HEAD"]);
    assert!(tree.contains("160000 commit 1234567890123456789012345678901234567890\tx"), "{tree}");
    // The colliding second repository did not touch the first mirror.
    assert_eq!(for_each_ref(&mirror("coll")), for_each_ref(&root.join("coll")));
    assert!(fs::read_to_string(mirror("coll").join("ferry-origin")).unwrap().trim().ends_with("/coll"));
    assert!(!mirror("b-link").exists());
    no_staging_left(&node.data("host-a").join("git"));
    // Walkers stay bounded on the bomb.
    let t = Instant::now();
    let out = run(node.cmd().args(["list", "host-a"]));
    assert!(out.status.success() && t.elapsed() < Duration::from_secs(20), "list: {}", text(&out));
    guard.check("hostile repositories");

    // MR-09: the client rewrites and deletes its history (ransomware); the
    // node keeps every commit it stored, under refs/backup/<run>/.
    let fp = Forge::init(root.join("mr09-history.git"));
    let c1 = {
        let b1 = fp.blob(b"v1\n");
        let t = fp.tree(&[("100644", "data", &b1)]);
        fp.commit(&t, &[], "one")
    };
    let c2 = {
        let b2 = fp.blob(b"v2\n");
        let t = fp.tree(&[("100644", "data", &b2)]);
        fp.commit(&t, &[&c1], "two")
    };
    let feature = {
        let bf = fp.blob(b"feature\n");
        let t = fp.tree(&[("100644", "data", &bf)]);
        fp.commit(&t, &[&c1], "feature")
    };
    fp.set("refs/heads/master", &c2);
    fp.set("refs/heads/feature", &feature);
    fp.set("refs/tags/v1", &c1);
    // NL-08/NL-03 in ref names: bidi override and a C1 CSI are legal in refs.
    fp.set("refs/heads/ok\u{202e}deliaf", &c1);
    fp.set("refs/heads/x\u{9b}2J", &c1);
    q.send(&[rq("mr09-first", e.repo("mr09-history.git"))]);
    scan(&node, "host-a");
    assert_done(&node, "host-a", "mr09-first");
    let m = mirror("mr09-history");
    assert_eq!(for_each_ref(&m), for_each_ref(&fp.dir));
    let empty = {
        let t = fp.tree(&[]);
        fp.commit(&t, &[], "wiped")
    };
    fp.set("refs/heads/master", &empty);
    fp.set("refs/tags/v1", &empty);
    for r in ["refs/heads/feature", "refs/heads/ok\u{202e}deliaf", "refs/heads/x\u{9b}2J"] {
        fp.g(&["update-ref", "-d", r]);
    }
    fp.g(&["reflog", "expire", "--expire=now", "--all"]);
    fp.g(&["gc", "--quiet", "--prune=now"]);
    q.send(&[rq("mr09-rewritten", e.repo("mr09-history.git"))]);
    scan(&node, "host-a");
    assert_done(&node, "host-a", "mr09-rewritten");
    assert_eq!(gd(&m, &["rev-parse", "refs/heads/master"]), empty, "the mirror follows the client");
    let backup = gd(&m, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/backup/"]);
    for (oid, suffix) in [(&c2, "/heads/master"), (&feature, "/heads/feature"), (&c1, "/tags/v1")] {
        assert!(backup.lines().any(|l| l.starts_with(oid.as_str()) && l.ends_with(suffix)), "{suffix} kept: {backup}");
    }
    assert_eq!(backup.lines().count(), 5, "every rewritten or deleted ref is kept: {backup}");
    for c in [&c1, &c2, &feature] {
        gd(&m, &["cat-file", "-e", c]);
    }
    let rewritten: Vec<_> = events(&node)
        .into_iter()
        .filter(|e| e["event"] == "history_rewritten" && e["request"] == "mr09-rewritten")
        .collect();
    assert_eq!(rewritten.len(), 1, "one history_rewritten alert: {rewritten:?}");
    let detail = rewritten[0]["detail"].as_str().unwrap();
    assert!(detail.contains("refs/backup/"), "{detail}");
    assert_journal_clean(&node);
    let out = run(node.cmd().args(["list"]));
    assert_printable("ferry-node list", &out.stdout);

    // GU-16: the client's server writes terminal escapes and forged log
    // lines; RE: it answers garbage. The node fails the job, escapes.
    let old = hostile_gate(
        &node,
        &a,
        "printf '\\033]52;c;ZXZpbA==\\007\\033[2J\\033[1;1H' >&2\nprintf 'x\\n2026-01-01T00:00:00Z INFO client=host-b backup ok\\r\\n' >&2\nprintf '\\302\\233\\342\\200\\256deliaf\\n' >&2\nexit 1",
    );
    q.send(&[rq("gu16-escapes", e.repo("mr05-bomb.git"))]);
    scan(&node, "host-a");
    assert_failed(&node, "host-a", "gu16-escapes", "E_FETCH_FAILED");
    fs::write(a.base.join("hostile-gate.sh"), "#!/bin/sh\nprintf '\\033[2J0000garbage'\nhead -c 200000 /dev/urandom\n")
        .unwrap();
    q.send(&[rq("gu-garbage", e.repo("mr05-bomb.git"))]);
    scan(&node, "host-a");
    assert_failed(&node, "host-a", "gu-garbage", "E_FETCH_FAILED");
    restore_gate(&node, &a, old);
    assert_journal_clean(&node);
    let ev = events(&node).into_iter().find(|e| e["request"] == "gu16-escapes").unwrap();
    assert!(ev["detail"].as_str().unwrap().contains("52;c;"), "the remote's text is kept, escaped: {ev}");

    // RE-02/MR-06 on the limited client: quota (1M) and max-objects (10),
    // checked while the pack arrives; partial data deleted.
    let ql_ep = Ep::of(&lim);
    let lroot = lim.git_root.clone();
    let lmirror = |name: &str| node.data("host-q").join(format!("git/{name}.git"));
    Forge::simple(lroot.join("big.git"), &[("big.bin", &noise(2 << 20, 1))]);
    Forge::simple(lroot.join("small.git"), &[("a", b"small\n")]);
    let many: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("f{i}"), format!("file {i}\n").into_bytes())).collect();
    Forge::simple(lroot.join("many.git"), &many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect::<Vec<_>>());
    ql.send(&[
        rq("re02-quota-first", ql_ep.repo("big.git")),
        rq("re02-small", ql_ep.repo("small.git")),
        rq("mr06-max-objects", ql_ep.repo("many.git")),
    ]);
    scan(&node, "host-q");
    assert_failed(&node, "host-q", "re02-quota-first", "E_QUOTA");
    assert!(!lmirror("big").exists(), "nothing of the over-quota fetch is kept");
    assert_done(&node, "host-q", "re02-small");
    assert_failed(&node, "host-q", "mr06-max-objects", "E_FETCH_LIMIT");
    assert!(!lmirror("many").exists());
    // The small mirror grows by a blob over the quota: refused, unchanged.
    let small = Forge { dir: lroot.join("small.git") };
    let big = small.blob(&noise(2 << 20, 2));
    let t = small.tree(&[("100644", "big.bin", &big)]);
    let head = small.g(&["rev-parse", "refs/heads/master"]);
    let c = small.commit(&t, &[&head], "grow");
    small.set("refs/heads/master", &c);
    let before = hash_tree(lmirror("small").join("objects"));
    let refs_before = for_each_ref(&lmirror("small"));
    ql.send(&[rq("re02-quota-grow", ql_ep.repo("small.git"))]);
    scan(&node, "host-q");
    assert_failed(&node, "host-q", "re02-quota-grow", "E_QUOTA");
    assert_eq!(for_each_ref(&lmirror("small")), refs_before, "the mirror is unchanged");
    assert_eq!(hash_tree(lmirror("small").join("objects")), before, "the partial pack was deleted");
    no_staging_left(&node.data("host-q").join("git"));
    // RE-02 for files: a declared size over what is left of the quota.
    let big_file = lim.base.join("export/big.bin");
    fs::File::create(&big_file).unwrap().set_len(2 << 20).unwrap();
    let zeros = "0".repeat(64);
    ql.send(&[rq(
        "re02-sftp-quota",
        ql_ep.sftp(&now_stamp(), &big_file.display().to_string(), &zeros, 2 << 20, "big"),
    )]);
    scan(&node, "host-q");
    assert_failed(&node, "host-q", "re02-sftp-quota", "E_QUOTA");
    assert!(!node.data("host-q").join("big").exists());
    // RE-05: a server flooding stderr (sideband) is capped in the journal.
    let old = hostile_gate(&node, &lim, "head -c 5000000 /dev/zero | tr '\\0' '\\033' >&2; exit 1");
    ql.send(&[rq("re05-stderr-flood", ql_ep.repo("small.git"))]);
    scan(&node, "host-q");
    assert_failed(&node, "host-q", "re05-stderr-flood", "E_FETCH_FAILED");
    assert_journal_clean(&node);
    restore_gate(&node, &lim, old);
    // RE-03: a server that never answers is cut off by the job timeout.
    let old = hostile_gate(&node, &lim, "exec sleep 30");
    Forge::simple(lroot.join("stall.git"), &[("a", b"x\n")]);
    ql.send(&[rq("re03-stall", ql_ep.repo("stall.git"))]);
    let t = Instant::now();
    scan(&node, "host-q");
    let took = t.elapsed();
    assert_failed(&node, "host-q", "re03-stall", "E_FETCH_TIMEOUT");
    assert!(took < Duration::from_secs(20), "the stall was cut off after {took:?}");
    assert!(!lmirror("stall").exists());
    restore_gate(&node, &lim, old);

    // MR-06/GU-16: a git server that advertises a ref, prints terminal
    // escapes on the progress band and sends a pack claiming 2^32-1
    // objects; on A (no object limit) and on the limited client.
    let oid = "1111111111111111111111111111111111111111";
    let pkt = |d: &[u8]| [format!("{:04x}", d.len() + 4).into_bytes(), d.to_vec()].concat();
    let adv = [
        pkt(format!("{oid} HEAD\0multi_ack side-band-64k ofs-delta agent=git/evil\n").as_bytes()),
        pkt(format!("{oid} refs/heads/master\n").as_bytes()),
        b"0000".to_vec(),
    ]
    .concat();
    let pack = [b"\x01PACK\0\0\0\x02\xff\xff\xff\xff".to_vec(), noise(4000, 9)].concat();
    let resp = [
        pkt(b"NAK\n"),
        pkt(b"\x02\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b[1;1Hremote: INFO client=host-b backup ok\r\n"),
        pkt(&pack),
        b"0000".to_vec(),
    ]
    .concat();
    for (c, queue, ep, id) in [(&a, &q, &e, "mr06-pack-claims-4g"), (&lim, &ql, &ql_ep, "mr06-pack-claims-4g-limited")]
    {
        fs::write(c.base.join("adv.bin"), &adv).unwrap();
        fs::write(c.base.join("resp.bin"), &resp).unwrap();
        let script = format!(
            "cat {adv}\nsed -n '/done/q' >/dev/null\ncat {resp}",
            adv = c.base.join("adv.bin").display(),
            resp = c.base.join("resp.bin").display()
        );
        let old = hostile_gate(&node, c, &script);
        queue.send(&[rq(id, ep.repo("evil-pack.git"))]);
        let t = Instant::now();
        scan(&node, &c.name);
        assert!(t.elapsed() < Duration::from_secs(20), "{id}: {:?}", t.elapsed());
        restore_gate(&node, c, old);
        eprintln!("{id}: {:?}", why(&node, &c.name, id));
        // index-pack refuses the object count before writing a byte, on
        // both clients (the object limit never needs to bite).
        assert_failed(&node, &c.name, id, "E_FETCH_FAILED");
        let w = why(&node, &c.name, id).unwrap();
        assert!(w["detail"].as_str().unwrap().contains("x1B]52;c;"), "{id}: the progress band is kept, escaped: {w}");
        assert!(!node.data(&c.name).join("git/evil-pack.git").exists(), "{id}: nothing stored");
        no_staging_left(&node.data(&c.name).join("git"));
    }
    assert_journal_clean(&node);

    // GU-20: the ssh the node pulls with: pinned key, own identity, no
    // agent, no forwarding, no proxy, no local command.
    let pull_ssh = ok(node.cmd().args(["pull-ssh", "host-a"]));
    for opt in [
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "PermitLocalCommand=no",
        "ProxyCommand=none",
        "-F /dev/null",
    ] {
        assert!(pull_ssh.contains(opt), "gu20: {opt} missing from {pull_ssh}");
    }
    assert!(pull_ssh.contains("keys/host-a/"), "gu20: a per-client pull key: {pull_ssh}");
    guard.check("fetch-time cases");

    // Still alive: A's ordinary repository mirrors after all of this.
    let (bare, work) = a.repo("ordinary");
    ferry_tests::fleet::commit_and_push(&work, "f", "1\n");
    eventually("A's ordinary mirror", || {
        scan(&node, "host-a");
        mirror("ordinary").join("HEAD").exists() && for_each_ref(&mirror("ordinary")) == for_each_ref(&bare)
    });
    assert_alive(&node, &q, "alive-1");
    assert_no_canary();
}

// ---------------------------------------------------------------------------
// SF (what the client's sftp server serves) and AX (what its archives hold,
// met when an administrator restores them).

/// A tar stream written header by header (C13), hostile shapes included.
#[derive(Default)]
struct Tar(Vec<u8>);

const REG: u8 = b'0';
const HARD: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const BLK: u8 = b'4';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    if v >= 8u64.pow(w as u32) {
        // GNU base-256 for numbers that do not fit.
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        return;
    }
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(s.as_bytes());
    field[w] = 0;
}

fn header(name: &[u8], kind: u8, size: u64, mode: u32, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[148..156].fill(b' ');
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    octal(&mut h[329..337], if kind == CHR { 1 } else { 0 });
    octal(&mut h[337..345], if kind == CHR { 3 } else { 0 });
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl Tar {
    fn record(&mut self, name: &[u8], kind: u8, mode: u32, link: &[u8], data: &[u8]) -> &mut Tar {
        if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            self.record(b"././@LongLink", b'L', 0o644, b"", &long);
        }
        self.0.extend_from_slice(&header(name, kind, data.len() as u64, mode, link));
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.record(name.as_bytes(), REG, 0o644, b"", data)
    }

    fn mode(&mut self, name: &str, mode: u32, kind: u8) -> &mut Tar {
        self.record(name.as_bytes(), kind, mode, b"", b"")
    }

    fn dir(&mut self, name: &str) -> &mut Tar {
        self.record(name.as_bytes(), DIR, 0o755, b"", b"")
    }

    fn link(&mut self, name: &str, kind: u8, target: &str) -> &mut Tar {
        self.record(name.as_bytes(), kind, 0o777, target.as_bytes(), b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}").as_bytes());
            data.extend_from_slice(&body);
        }
        self.record(b"PaxHeaders/x", b'x', 0o644, b"", &data)
    }

    fn end(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// One zstd frame of raw blocks (no compression needed to be valid).
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x50];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(128 << 10).collect() };
    for (i, c) in chunks.iter().enumerate() {
        let last = u32::from(i + 1 == chunks.len());
        let h = last | ((c.len() as u32) << 3);
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

/// A zstd frame whose tar declares a 7 GiB file and whose RLE blocks
/// expand 4 bytes to 128 KiB each: `blocks` × 128 KiB of zeros from
/// `blocks` × 4 bytes (AX-18).
fn zstd_bomb(blocks: usize) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x50];
    let h = header(b"zeros.img", REG, 7 << 30, 0o644, b"");
    out.extend_from_slice(&((512u32) << 3).to_le_bytes()[..3]);
    out.extend_from_slice(&h);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let bh = last | (1 << 1) | ((128u32 << 10) << 3);
        out.extend_from_slice(&bh.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

fn restore(node: &Node, source: &str, to: &Path, extra: &[&str]) -> Output {
    run(node.cmd().args(["restore", "host-a", source, "--to", to.to_str().unwrap()]).args(extra))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn hostile_downloads_and_archives_are_refused_or_contained() {
    if !tools() {
        return;
    }
    let td = TestDir::new("hostile_files");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let mut a = Client::new(&td, "host-a", &[&node]);
    a.gitosis_section.push_str("max-artifact = 8M\njob-timeout = 8s\n");
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);
    let q = Queue::clone(&node, "host-a", &td);
    assert_alive(&node, &q, "alive-0");
    let guard = Guard::new(&node, &[&b]);
    let outside = node.base.join("outside-canary");
    let e = Ep::of(&a);
    let ex = a.base.join("export");
    let x = e.export.clone();
    let stamp = now_stamp();
    let put = |rel: &str, data: &[u8]| -> (String, String, u64) {
        let p = ex.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        (format!("{x}/{rel}"), sha256_bytes(data), data.len() as u64)
    };

    // SF: paths, types, sizes and digests of what the client serves.
    let good = noise(100, 7);
    let (good_path, good_sha, _) = put("files/good.bin", &good);
    symlink("/etc/passwd", ex.join("files/link")).unwrap();
    ok(Command::new("mkfifo").arg(ex.join("files/fifo")));
    fs::create_dir_all(ex.join("files/adir")).unwrap();
    let sparse = ex.join("files/sparse.bin");
    fs::File::create(&sparse).unwrap().set_len(9 << 20).unwrap();
    let (c1_path, c1_sha, c1_len) = put("files/c1.bin", b"first version\n");
    let (c2_path, c2_sha, c2_len) = put("files/c2.bin", b"other version!\n");
    let zeros = "0".repeat(64);
    let empty_sha = sha256_bytes(b"");
    let sf: Vec<(&str, String, &str)> = vec![
        ("sf-ok", e.sftp(&stamp, &good_path, &good_sha, 100, "good"), "F"),
        ("sf03-dotdot", e.sftp(&stamp, &format!("{x}/../../../etc/passwd"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-inner-dotdot", e.sftp(&stamp, &format!("{x}/files/../../x"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-outside", e.sftp(&stamp, "/etc/passwd", &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-sibling", e.sftp(&stamp, &format!("{x}x/files/good.bin"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-export-itself", e.sftp(&stamp, &x, &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-double-slash", e.sftp(&stamp, &format!("{x}//files/good.bin"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-tilde", e.sftp(&stamp, "/~root/.ssh/id_rsa", &good_sha, 100, "s"), "E_REQ_NAME"),
        (
            "sf03-b-export",
            e.sftp(&stamp, &format!("{}/x.tar.zst", b.base.join("export").display()), &good_sha, 100, "s"),
            "E_REQ_PATH",
        ),
        ("sf04-symlink", e.sftp(&stamp, &format!("{x}/files/link"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf04-fifo", e.sftp(&stamp, &format!("{x}/files/fifo"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf04-dir", e.sftp(&stamp, &format!("{x}/files/adir"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf-missing", e.sftp(&stamp, &format!("{x}/files/nope.tar.zst"), &good_sha, 100, "s"), "E_FETCH_NOT_FOUND"),
        ("sf01-declared-smaller", e.sftp(&stamp, &good_path, &good_sha, 10, "s"), "E_FETCH_LIMIT"),
        ("sf01-declared-larger", e.sftp(&stamp, &good_path, &good_sha, 200, "s"), "E_FETCH_SIZE_MISMATCH"),
        ("sf01-declared-empty", e.sftp(&stamp, &good_path, &empty_sha, 0, "s"), "E_FETCH_LIMIT"),
        ("sf06-digest", e.sftp(&stamp, &good_path, &zeros, 100, "s"), "E_FETCH_DIGEST_MISMATCH"),
        ("sf-max-artifact", e.sftp(&stamp, &sparse.display().to_string(), &zeros, 9 << 20, "s"), "E_FETCH_LIMIT"),
        ("sf-max-artifact-lying", e.sftp(&stamp, &sparse.display().to_string(), &zeros, 100, "s"), "E_FETCH_LIMIT"),
        ("sf-reserved-source", e.sftp(&stamp, &good_path, &good_sha, 100, "git"), "E_REQ_NAME_RESERVED"),
        ("sf-future", e.sftp(&next_year(&stamp), &good_path, &good_sha, 100, "s"), "E_REQ_TIMESTAMP"),
        ("sf12-conf-a", e.sftp(&stamp, &c1_path, &c1_sha, c1_len, "conf"), "F"),
        ("sf12-conf-b", e.sftp(&stamp, &c2_path, &c2_sha, c2_len, "conf"), "E_REQ_CONFLICT"),
        ("sf12-conf-c", e.sftp(&stamp, &c1_path, &c1_sha, c1_len, "conf"), "F"),
    ];

    // AX: hostile archives the client prepared as its fs artifacts.
    let out_abs = outside.display().to_string();
    let mut ax: Vec<(&str, Vec<u8>, &str, Vec<&str>)> = Vec::new();
    let mut t = Tar::default();
    t.dir("d/").file("d/a.txt", b"hello\n").link("d/l", SYM, "a.txt").link("d/h", HARD, "d/a.txt");
    t.record(b"d/run.sh", REG, 0o755, b"", b"#!/bin/sh\n");
    ax.push(("ax-ok", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.file("ok.txt", b"ok\n").file("../../pwn.txt", b"pwn\n");
    ax.push(("ax01-dotdot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("a/../../pwn.txt", b"pwn\n");
    ax.push(("ax01-inner-dotdot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let abs = canary("ax02").display().to_string();
    let mut t = Tar::default();
    t.file(&abs, b"pwn\n");
    ax.push(("ax02-absolute", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("//x", b"pwn\n");
    ax.push(("ax02-double-slash", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("/./x", b"pwn\n");
    ax.push(("ax02-slash-dot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.link("link", SYM, "/etc/passwd");
    ax.push(("ax03-symlink-absolute", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("up", SYM, "../../../../data/host-b");
    ax.push(("ax03-symlink-up", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("x", SYM, ".").link("y", SYM, "x/..");
    ax.push(("ax03-symlink-chain", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("d", SYM, &out_abs).file("d/pwn.txt", b"pwn\n");
    let through = zstd_frame(&t.end());
    ax.push(("ax04-write-through", through.clone(), "E_ARCHIVE_LINK", vec![]));
    ax.push(("ax04-write-through-allowed", through, "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.dir("sub/").link("s", SYM, "sub").file("s/pwn.txt", b"pwn\n");
    ax.push(("ax04-through-in-tree-link", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("symlink", SYM, "..").file("symlink/exploit/foo/bar", b"pwn\n");
    ax.push(("ax04-rustsec-2021-0080", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.file("t", b"t\n").link("l", SYM, "t").file("l", b"replaced\n");
    ax.push(("ax04-link-then-file", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, "/etc/passwd");
    ax.push(("ax07-hardlink-absolute", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, "../../../../../../etc/passwd");
    ax.push(("ax07-hardlink-up", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, &format!("{out_abs}/secret.txt"));
    ax.push(("ax07-hardlink-outside", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.link("hl", HARD, "later.txt").file("later.txt", b"x\n");
    ax.push(("ax07-hardlink-forward", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    for (id, kind) in [("ax09-chardev", CHR), ("ax09-blockdev", BLK), ("ax09-fifo", FIFO), ("ax09-unknown-type", b'Z')]
    {
        let mut t = Tar::default();
        t.mode("node", 0o666, kind);
        ax.push((id, zstd_frame(&t.end()), "E_ARCHIVE_TYPE", vec![]));
    }
    let mut t = Tar::default();
    t.record(b"suid", REG, 0o4755, b"", b"#!/bin/sh\n")
        .record(b"sgid", REG, 0o2755, b"", b"x")
        .record(b"sticky/", DIR, 0o1777, b"", b"")
        .record(b"world", REG, 0o777, b"", b"x");
    ax.push(("ax10-setuid", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.pax(&[("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\xff\xff\xff\xff"), ("SCHILY.xattr.user.x", b"y")])
        .record(b"cap", REG, 0o755, b"", b"x");
    ax.push(("ax12-xattrs", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.file("a", b"1").file("a", b"2");
    ax.push(("ax13-dup-file", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.file("a", b"1").dir("a/");
    ax.push(("ax13-file-then-dir", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.dir("d/").link("d", SYM, "x");
    ax.push(("ax13-dir-then-symlink", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.file(&"c".repeat(300), b"x");
    ax.push(("ax15-long-component", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file(&format!("{}f", "a/".repeat(100)), b"x");
    ax.push(("ax15-deep", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file(&format!("{}f", "abcdefghi/".repeat(110)), b"x");
    ax.push(("ax15-long-path", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.pax(&[("path", b"../../pwn.txt")]).file("innocent.txt", b"pwn\n");
    ax.push(("ax16-pax-path", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.pax(&[("comment", &vec![b'x'; 200 << 10])]).file("f", b"x");
    ax.push(("ax16-pax-huge", zstd_frame(&t.end()), "E_ARCHIVE_LIMIT", vec![]));
    ax.push(("ax18-bomb", zstd_bomb(8000), "E_ARCHIVE_LIMIT", vec![]));
    let mut w = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8];
    w.extend_from_slice(&(1u32 | (1 << 1) | ((128u32 << 10) << 3)).to_le_bytes()[..3]);
    w.push(0);
    ax.push(("ax18-window", w, "E_ARCHIVE_FORMAT", vec![]));
    let inner = zstd_frame(&Tar::default().file("inner.txt", b"nested\n").end());
    let mut t = Tar::default();
    t.file("nested.tar.zst", &inner);
    ax.push(("ax18-nested", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    for i in 0..200 {
        t.file(&format!("good/{i:03}.txt"), b"good\n");
    }
    t.link("good/zz-link", SYM, "../..").file("../late.txt", b"pwn\n");
    ax.push(("ax23-partial", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    ax.push(("sf12-gzip", vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3], "E_ARCHIVE_FORMAT", vec![]));
    ax.push((
        "sf12-script",
        format!("#!/bin/sh\ntouch {}\n", canary("sf12").display()).into_bytes(),
        "E_ARCHIVE_FORMAT",
        vec![],
    ));
    let mut g = zstd_frame(&Tar::default().file("a", b"a").end());
    g.extend_from_slice(b"trailing garbage");
    ax.push(("sf12-trailing-garbage", g, "E_ARCHIVE_FORMAT", vec![]));
    let mut g = zstd_frame(&Tar::default().file("a", b"a").end());
    g.extend_from_slice(&zstd_frame(&Tar::default().file("b", b"b").end()));
    ax.push(("sf12-two-frames", g, "E_ARCHIVE_FORMAT", vec![]));
    let mut tt = Tar::default().file("a", b"a").end();
    tt.extend_from_slice(&Tar::default().file("smuggled", b"b").end());
    ax.push(("sf12-tar-after-end", zstd_frame(&tt), "E_ARCHIVE_FORMAT", vec![]));
    // MR-03: repository configuration inside an archive never runs.
    let mut t = Tar::default();
    t.dir("proj/.git/hooks/")
        .file(
            "proj/.git/config",
            format!(
                "[core]\n\tfsmonitor = touch {c}\n\tsshCommand = touch {c}\n\tpager = touch {c}\n[protocol \"ext\"]\n\tallow = always\n[remote \"origin\"]\n\turl = ext::sh -c touch% {c}\n",
                c = canary("mr03").display()
            )
            .as_bytes(),
        )
        .file("proj/.git/HEAD", b"ref: refs/heads/master\n")
        .record(b"proj/.git/hooks/post-checkout", REG, 0o755, b"", format!("#!/bin/sh\ntouch {}\n", canary("mr03h").display()).as_bytes())
        .file("proj/README", b"readme\n");
    ax.push(("mr03-git-config", zstd_frame(&t.end()), "OK", vec![]));
    assert!(ax.iter().all(|(_, d, _, _)| d.len() < 8 << 20));

    let mut files: Vec<(String, Vec<u8>)> = sf.iter().map(|(id, line, _)| rq(id, line)).collect();
    for (id, data, _, _) in &ax {
        let (path, sha, len) = put(&format!("ax/{id}.tar.zst"), data);
        files.push(rq(id, e.sftp(&stamp, &path, &sha, len, id)));
    }
    q.send(&files);
    let t0 = Instant::now();
    scan(&node, "host-a");
    eprintln!("scan of {} downloads: {:?}", files.len(), t0.elapsed());
    for (id, _, want) in &sf {
        if *want == "F" {
            assert_done(&node, "host-a", id);
        } else {
            assert_failed(&node, "host-a", id, want);
        }
    }
    for (id, _, _, _) in &ax {
        assert_done(&node, "host-a", id);
    }
    // Nothing of a failed download stays; the conflict left the first
    // artifact as it was, the identical duplicate stored nothing new.
    let conf: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "conf"])))
            .unwrap();
    assert_eq!(conf.as_array().unwrap().len(), 1, "{conf}");
    assert_eq!(conf[0]["sha256"], c1_sha.as_str());
    assert_eq!(fs::read(node.srv().join("data").join(conf[0]["path"].as_str().unwrap())).unwrap(), b"first version\n");
    assert!(!node.data("host-a").join("s").exists(), "no failed download left anything");
    let mut stack = vec![node.data("host-a")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with(".tmp"), "temporary file left: {}", e.path().display());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    guard.check("downloads");

    // SF: a hostile sftp server (garbage, a huge frame, a stall).
    let old = hostile_gate(&node, &a, "head -c 300000 /dev/zero");
    let (p, s, l) = put("files/g1.bin", b"garbage case\n");
    q.send(&[rq("sf-garbage-zeros", e.sftp(&stamp, &p, &s, l, "g1"))]);
    scan(&node, "host-a");
    fs::write(a.base.join("hostile-gate.sh"), "#!/bin/sh\nprintf '\\377\\377\\377\\377\\033[2J'\nexec cat /dev/zero\n")
        .unwrap();
    let (p, s, l) = put("files/g2.bin", b"huge frame case\n");
    q.send(&[rq("sf-huge-frame", e.sftp(&stamp, &p, &s, l, "g2"))]);
    let t0 = Instant::now();
    scan(&node, "host-a");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    fs::write(
        a.base.join("hostile-gate.sh"),
        "#!/bin/sh\nprintf '\\033]52;c;ZXZpbA==\\007\\033[2J\\r\\nINFO client=host-b ok\\302\\233\\342\\200\\256x\\n' >&2\nexit 1\n",
    )
    .unwrap();
    close_masters(&node);
    let (p, s, l) = put("files/g4.bin", b"stderr case\n");
    q.send(&[rq("nl03-sftp-stderr", e.sftp(&stamp, &p, &s, l, "g4"))]);
    scan(&node, "host-a");
    fs::write(a.base.join("hostile-gate.sh"), "#!/bin/sh\nexec sleep 30\n").unwrap();
    close_masters(&node);
    let (p, s, l) = put("files/g3.bin", b"stall case\n");
    q.send(&[rq("sf02-stall", e.sftp(&stamp, &p, &s, l, "g3"))]);
    let t0 = Instant::now();
    scan(&node, "host-a");
    let took = t0.elapsed();
    restore_gate(&node, &a, old);
    for id in ["sf-garbage-zeros", "sf-huge-frame", "nl03-sftp-stderr", "sf02-stall"] {
        eprintln!("{id}: {:?}", why(&node, "host-a", id));
    }
    // A zero-length packet is refused by the same frame guard as a huge one.
    assert_failed(&node, "host-a", "sf-garbage-zeros", "E_FETCH_LIMIT");
    assert_failed(&node, "host-a", "sf-huge-frame", "E_FETCH_LIMIT");
    assert_failed(&node, "host-a", "nl03-sftp-stderr", "E_FETCH_FAILED");
    assert_failed(&node, "host-a", "sf02-stall", "E_FETCH_TIMEOUT");
    assert!(took < Duration::from_secs(20), "the stall was cut off after {took:?}");
    for src in ["g1", "g2", "g3", "g4"] {
        assert!(!node.data("host-a").join(src).exists(), "{src}: nothing stored");
    }
    guard.check("hostile sftp server");

    // SF-10: the node's pull key on the client is a read-only window on
    // the export directory and the exported repositories, nothing else.
    let akh = td.join("a_known_hosts");
    a.sshd.write_known_hosts(&akh);
    let pull = node.srv().join("keys/host-a/id_ed25519");
    let c = canary("sf10");
    for cmd in [
        format!("touch {}", c.display()),
        "id".to_owned(),
        format!("git-receive-pack '{}/x.git'", a.git_root.display()),
        format!("git-upload-pack '{}/secret.git'", b.git_root.display()),
        "git-upload-pack '/etc'".to_owned(),
        format!("git-upload-pack '{}/../../x.git'", a.git_root.display()),
        "git-upload-pack '--help'".to_owned(),
        "scp -t /tmp".to_owned(),
        format!("internal-sftp; touch {}", c.display()),
    ] {
        let out = run(ssh_cmd(&pull, &akh, &a.sshd).arg(&cmd));
        assert!(!out.status.success(), "sf10 {cmd:?}: allowed: {}", text(&out));
        assert!(text(&out).contains("ferry gate"), "sf10 {cmd:?}: {}", text(&out));
    }
    let export_before = hash_tree(&ex);
    for (what, batch) in [
        ("put", format!("put /etc/hostname {x}/files/planted\n")),
        ("rm", format!("rm {x}/files/good.bin\n")),
        ("rename", format!("rename {x}/files/good.bin {x}/files/moved\n")),
        ("mkdir", format!("mkdir {x}/newdir\n")),
        ("ls", format!("ls {x}/files\n")),
        ("symlink", format!("symlink /etc/passwd {x}/files/planted\n")),
    ] {
        let bf = td.join("sftp-batch");
        fs::write(&bf, batch).unwrap();
        let out =
            run(ferry_tests::sftp_cmd(&pull, &akh, &a.sshd).arg("-b").arg(&bf).arg(ferry_tests::sftp_dest(&a.sshd)));
        assert!(!out.status.success(), "sf10 sftp {what}: allowed: {}", text(&out));
    }
    assert_eq!(hash_tree(&ex), export_before, "sf10: the export directory is unchanged");

    // AX: restore each archive; refusals leave nothing, anywhere.
    let restores = td.mkdir("restores");
    let sentinel = td.mkdir("restores-sentinel");
    fs::write(sentinel.join("keep"), "keep\n").unwrap();
    let sentinel_before = hash_tree(&sentinel);
    let mut restored_ok = Vec::new();
    for (id, _, want, extra) in &ax {
        let to = restores.join(id);
        let before = listing(&restores);
        let out = restore(&node, id, &to, extra);
        let t = text(&out);
        assert_printable(&format!("restore {id}"), t.as_bytes());
        if *want == "OK" {
            assert!(out.status.success(), "{id}: restore failed: {t}");
            restored_ok.push(id.to_string());
        } else {
            assert!(!out.status.success(), "{id}: restore of a hostile archive succeeded: {t}");
            assert!(t.contains(want), "{id}: expected {want}: {t}");
            assert!(!to.exists(), "{id}: a partial tree was published");
            assert_eq!(listing(&restores), before, "{id}: something was left beside the destination");
        }
        assert_eq!(hash_tree(&sentinel), sentinel_before, "{id}: the sentinel changed");
        guard.check(id);
    }
    assert!(restored_ok.len() == 5, "{restored_ok:?}");
    // What the accepted archives produced is inert.
    let ok_tree = restores.join("ax-ok");
    assert_eq!(fs::read(ok_tree.join("d/a.txt")).unwrap(), b"hello\n");
    assert_eq!(fs::read_link(ok_tree.join("d/l")).unwrap(), Path::new("a.txt"));
    let modes = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode();
    for f in ["suid", "sgid", "sticky", "world"] {
        let m = modes(&restores.join("ax10-setuid").join(f));
        assert_eq!(m & 0o7000, 0, "{f}: mode {m:o} keeps setuid/setgid/sticky");
    }
    let cap = restores.join("ax12-xattrs/cap");
    let mut names = vec![0u8; 1024];
    let n = rustix::fs::llistxattr(&cap, &mut names).unwrap_or(0);
    assert_eq!(n, 0, "extended attributes were applied: {:?}", String::from_utf8_lossy(&names[..n]));
    assert_eq!(fs::read(restores.join("ax18-nested/nested.tar.zst")).unwrap(), inner, "nested archives stay opaque");
    assert!(!restores.join("ax18-nested/inner.txt").exists());
    // MR-03: the node runs nothing inside restored or stored trees.
    for args in [vec!["verify"], vec!["list"], vec!["find", "--client", "host-a"], vec!["check"]] {
        let _ = run(node.cmd().args(&args));
    }
    assert!(restores.join("mr03-git-config/proj/.git/config").exists());
    guard.check("after the restores");
    assert_journal_clean(&node);
    assert_alive(&node, &q, "alive-1");
}
