//! Operations: "never lose a request". A node that is offline, failing
//! requests and pulls, silent clients, full disks on either side, several
//! nodes with one down, concurrent runs and stale locks, and a bounded run
//! of the SIGKILL torture (`bench/torture.sh` runs the long one).
//!
//! Mail is checked against a real SMTP server (`ferry_tests::Smtp`); full
//! disks are small tmpfs mounts (root only: skipped otherwise, a failure
//! under `CI=true`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{Mail, Smtp, TestDir, for_each_ref, git, git_cmd, in_ci, is_root, list_tree, require};

use crate::hostile::kit::{self, Queue, rq};

/// The `[mail]` section for a host: From/To fixed here, mails at once.
fn mail_toml(smtp: &Smtp, label: &str, extra: &str) -> String {
    format!(
        "[mail]\nto = [\"Backup Admins <admins@example.test>\"]\nfrom = \"Ferry {label} <ferry-{label}@example.test>\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nhost_label = \"{label}\"\n{extra}\n",
        smtp.url()
    )
}

/// Headers of an alert mail: only the ones the notifier sets, From/To from
/// the configuration, and none of the client-controlled `forbidden` text.
fn assert_clean_headers(m: &Mail, label: &str, forbidden: &[&str]) {
    const ALLOWED: &[&str] = &[
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
        "Auto-Submitted",
    ];
    for (k, v) in &m.headers {
        assert!(ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(k)), "unexpected header {k}: {v}");
        for f in forbidden {
            assert!(!v.contains(f), "client text {f:?} reached header {k}: {v}");
        }
    }
    assert!(m.header("From").unwrap().contains(&format!("<ferry-{label}@example.test>")), "{:?}", m.headers);
    assert!(m.header("To").unwrap().contains("<admins@example.test>"), "{:?}", m.headers);
    assert_eq!(m.envelope_from, format!("ferry-{label}@example.test"));
    assert_eq!(m.envelope_to, vec!["admins@example.test".to_owned()]);
    assert!(m.subject.starts_with(&format!("[ferry {label}] ")), "{}", m.subject);
    let head = String::from_utf8_lossy(&m.raw);
    let head = head.split("\r\n\r\n").next().unwrap_or_default();
    assert!(!head.to_ascii_lowercase().contains("\nbcc:"), "{head}");
}

/// A mail body with its line wrapping undone (words joined by one space).
fn flat(body: &str) -> String {
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(|m| m.subject.clone()).collect()
}

/// `ferry --json status` (exit 0, or 3 while a node fails), per node.
fn status(a: &Client) -> BTreeMap<String, serde_json::Value> {
    let out = a.ferry(&["--json", "status"]);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v.as_array().unwrap().iter().map(|n| (n["node"].as_str().unwrap().to_owned(), n.clone())).collect()
}

/// `ferry --json send --wait` and its per-node reports.
fn send(a: &Client) -> (Output, Vec<serde_json::Value>) {
    let out = a.ferry(&["--json", "send", "--wait"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, v.as_array().cloned().unwrap_or_default())
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Client ids finished for `node`, as the node names them (`<id>-1`: one
/// request file per client request in these tests).
fn as_node_ids(ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| format!("{id}-1")).collect()
}

fn client_drained(a: &Client, node: &str) -> bool {
    a.pool_ids(node, "C").is_empty() && a.pool_ids(node, "P").is_empty()
}

/// Every request the client finished for `node` is finished on the node,
/// once, and nothing else is there.
fn node_matches_client(node: &Node, a: &Client) -> bool {
    let want = as_node_ids(&a.pool_ids(&node.name, "F"));
    node.pool_ids(&a.name, "F") == want
        && node.pool_ids(&a.name, "RQ").is_empty()
        && node.pool_ids(&a.name, "P").is_empty()
        && node.pool_ids(&a.name, "E").is_empty()
}

#[test]
fn node_offline_requests_wait_admins_hear_once_and_recovery_delivers_each_once() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("ops_offline");
    let smtp = Smtp::start(&td.join("smtp"));
    let mut node = Node::start(&td, "backup1");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[send]\nalert_after = \"2s\"\nbackoff_min = \"1s\"\nbackoff_max = \"2s\"\n\n{}",
            mail_toml(&smtp, "host-a", "")
        ),
    );
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project-x7q");
    commit_and_push(&work, "README", "first\n");
    let mirror = node.data("host-a").join("git/project-x7q.git");
    eventually("the first mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));
    eventually("the first request finished on both sides", || {
        client_drained(&a, "backup1") && node_matches_client(&node, &a)
    });
    let delivered_before = a.pool_ids("backup1", "F").len();

    // The node goes offline.
    let t0 = jiff::Timestamp::now();
    node.sshd.stop();
    let words = ["offlinealpha", "offlinebeta", "offlinegamma"];
    for w in words {
        ok(a.cmd().args(["request", "dummy", w]));
    }
    // A push to the client repository queues a git request (its hook's
    // background send fails like ours).
    commit_and_push(&work, "README", "while the node is down\n");
    let queued = words.len() + 1;

    // Sends until the outage is older than alert_after: every one fails or
    // is deferred by the backoff; nothing is lost, and exactly one mail
    // goes out.
    let (mut failed, mut deferred) = (0, 0);
    eventually("three failed attempts, a deferred one and the outage mail", || {
        let (out, reports) = send(&a);
        assert_eq!(out.status.code(), Some(3), "undelivered work is exit 3: {}", text(&out));
        let r = &reports[0];
        assert_eq!(r["pending"], queued, "{r}");
        assert!(r["delivered"].as_array().unwrap().is_empty(), "{r}");
        if r["push_error"].is_string() {
            failed += 1;
        }
        if r["deferred_until"].is_string() {
            deferred += 1;
        }
        failed >= 3 && deferred >= 1 && !smtp.messages().is_empty()
    });
    assert!(failed >= 2, "retried while the node was down: {failed} failed, {deferred} deferred");
    assert!(deferred >= 1, "the backoff deferred some attempts: {failed} failed, {deferred} deferred");
    assert_eq!(a.pool_ids("backup1", "C").len() + a.pool_ids("backup1", "P").len(), queued);
    assert!(!a.pool_ids("backup1", "P").is_empty(), "modules ran and their requests wait in P");
    assert_eq!(a.pool_ids("backup1", "F").len(), delivered_before);

    // Status: failing since T, N pending.
    let st = &status(&a)["backup1"];
    let since = ts(st["failing_since"].as_str().unwrap_or_else(|| panic!("not failing: {st}")));
    assert!(since >= t0 && since <= t0 + jiff::SignedDuration::from_secs(20), "failing since {since}, stopped at {t0}");
    assert_eq!(st["pending"], queued, "{st}");
    assert!(st["failures"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["oldest_pending"].is_string() && st["next_attempt"].is_string(), "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("Connection refused"), "{st}");
    let human = a.ferry(&["status"]);
    assert_eq!(human.status.code(), Some(3));
    assert!(text(&human).contains(&format!("FAILING since {since}")), "{}", text(&human));
    assert!(text(&human).contains(&format!("pending: {queued}")), "{}", text(&human));

    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(subjects(&mails), ["[ferry host-a] NODE_UNREACHABLE: backup1"], "exactly one mail");
    let m = &mails[0];
    let forbidden = ["offline", "project-x7q", "Connection refused", "\r", "127.0.0."];
    assert_clean_headers(m, "host-a", &forbidden);
    assert!(flat(&m.body).contains("node backup1"), "{}", m.body);
    assert!(flat(&m.body).contains(&format!("Failing since: {since}")), "{}", m.body);
    assert!(flat(&m.body).contains(&format!("Requests waiting for this node: {queued}")), "{}", m.body);
    // The error text from ssh is quoted, never bare.
    assert!(flat(&m.body).contains("Untrusted text (escaped, as received):"), "{}", m.body);
    for line in m.body.lines().filter(|l| l.contains("Connection refused")) {
        assert!(line.trim_start().starts_with('|'), "unquoted client/remote text: {line:?}");
    }

    // Further failing sends add no mail (a send mails before it exits).
    let mut more = 0;
    eventually("two more failed attempts", || {
        let (out, reports) = send(&a);
        assert_eq!(out.status.code(), Some(3));
        more += usize::from(reports[0]["push_error"].is_string());
        more >= 2
    });
    assert_eq!(subjects(&smtp.messages()), ["[ferry host-a] NODE_UNREACHABLE: backup1"], "no duplicate mail");

    // The node comes back (same address, port and host key): plain sends
    // (no --force) deliver everything once the backoff allows.
    node.sshd.restart();
    eventually("everything delivered after the restart", || {
        let _ = send(&a);
        client_drained(&a, "backup1")
    });
    assert_eq!(a.pool_ids("backup1", "F").len(), delivered_before + queued);
    assert!(a.pool_ids("backup1", "E").is_empty());
    eventually("the node to finish every request", || node_matches_client(&node, &a));
    assert_eq!(node.pool_ids("host-a", "F"), as_node_ids(&a.pool_ids("backup1", "F")), "each request once");
    eventually("the mirror to hold the push made while the node was down", || {
        for_each_ref(&mirror) == for_each_ref(&bare)
    });
    let st = &status(&a)["backup1"];
    assert!(st["failing_since"].is_null() && st["last_success"].is_string(), "{st}");
    assert_eq!(st["pending"], 0);
    assert_eq!(a.ferry(&["status"]).status.code(), Some(0));

    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert_eq!(
        subjects(&mails),
        ["[ferry host-a] NODE_UNREACHABLE: backup1", "[ferry host-a] NODE_RECOVERED: backup1"],
        "one outage mail, one recovery mail"
    );
    assert_clean_headers(&mails[1], "host-a", &forbidden);
    assert!(flat(&mails[1].body).contains(&format!("failing since {since}")), "{}", mails[1].body);
    // Nothing more on later sends.
    ok(a.cmd().args(["request", "dummy", "afterwards"]));
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    // A send mails what is due before it exits.
    assert_eq!(smtp.messages().len(), 2, "{:?}", subjects(&smtp.messages()));
}

fn why(node: &Node, client: &str, id: &str) -> serde_json::Value {
    kit::why(node, client, id).unwrap_or_else(|| panic!("{id} did not end in E"))
}

fn scan(node: &Node) -> Output {
    run(node.cmd().arg("scan"))
}

#[test]
fn node_mails_failed_requests_pull_failures_recovery_silence_and_bursts() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("ops_node_mail");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(
        &td,
        "backup1",
        &format!(
            "scan_on_push = false\n[limits]\nrequests_per_push = 400\n[check]\nsilent_after = \"1s\"\n{}",
            mail_toml(&smtp, "backup1", "min_interval = \"0s\"")
        ),
    );
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let q = Queue::clone(&node, "host-a", &td);
    let mut expected = 0;

    // 1. A request that ends in E on the node: one REQUEST_FAILED mail naming
    //    the client and the reason; the hostile text only quoted.
    let bad_id = "20260101T000000Z-badbad01-1";
    q.send(&[rq(bad_id, "dummy evil\r\nBcc: attacker@evil.example\nSubject: pwned\n")]);
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "failed requests are exit 3: {}", text(&out));
    assert_eq!(node.pool_ids("host-a", "E"), [bad_id]);
    let code = why(&node, "host-a", bad_id)["reason"].as_str().unwrap().to_owned();
    assert!(code.starts_with("E_REQ_"), "{code}");
    expected += 1;
    let mails = smtp.wait_for(expected, Duration::from_secs(10));
    assert_eq!(subjects(&mails), ["[ferry backup1] REQUEST_FAILED: host-a"]);
    let forbidden = ["evil", "attacker", "pwned", "\r"];
    assert_clean_headers(&mails[0], "backup1", &forbidden);
    let body = &mails[0].body;
    assert!(flat(body).contains(&format!("Request {bad_id} from client host-a ended in {code}")), "{body}");
    for line in body.lines().filter(|l| l.contains("attacker") || l.contains("pwned")) {
        assert!(line.trim_start().starts_with('|'), "unquoted client text: {line:?}");
    }

    // 2. Three pulls failing in a row (the repository vanished on the
    //    client after its requests were delivered): PULL_FAILING once.
    let (bare, work) = a.repo("vanish");
    commit_and_push(&work, "f", "1\n");
    for _ in 0..2 {
        ok(a.cmd().args(["request", "git", bare.to_str().unwrap()]));
    }
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    eventually("three git requests delivered", || {
        client_drained(&a, "backup1") && node.pool_ids("host-a", "RQ").len() == 3
    });
    let hidden = td.join("hidden.git");
    fs::rename(&bare, &hidden).unwrap();
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let failed = node.pool_ids("host-a", "E");
    assert_eq!(failed.len(), 4, "{failed:?}");
    for id in failed.iter().filter(|id| *id != bad_id) {
        assert_eq!(why(&node, "host-a", id)["reason"], "E_FETCH_NOT_FOUND", "{id}");
    }
    expected += 1;
    let mails = smtp.wait_for(expected, Duration::from_secs(10));
    let m = mails.last().unwrap();
    assert_eq!(m.subject, "[ferry backup1] 2 alerts: REQUEST_FAILED (1), PULL_FAILING (1)", "one digest");
    assert_clean_headers(m, "backup1", &forbidden);
    assert!(flat(&m.body).contains("ended in E_FETCH_NOT_FOUND"), "{}", m.body);
    assert!(flat(&m.body).contains("Raised 2 more times"), "the three failures are one section: {}", m.body);
    assert!(flat(&m.body).contains("failed to pull from client host-a 3 times in a row"), "{}", m.body);

    // 3. The repository is back: the next pull succeeds, PULL_RECOVERED.
    fs::rename(&hidden, &bare).unwrap();
    ok(a.cmd().args(["request", "git", bare.to_str().unwrap()]));
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    let out = scan(&node);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(for_each_ref(&node.data("host-a").join("git/vanish.git")), for_each_ref(&bare));
    expected += 1;
    let mails = smtp.wait_for(expected, Duration::from_secs(10));
    let m = mails.last().unwrap();
    assert_eq!(m.subject, "[ferry backup1] PULL_RECOVERED: host-a");
    assert!(flat(&m.body).contains("Ends PULL_FAILING"), "{}", m.body);

    // 4. The client goes silent for longer than check.silent_after (1 s):
    //    checks find it active, then silent.
    let mut last = None;
    eventually("check to find host-a silent", || {
        let out = run(node.cmd().arg("check"));
        let silent = text(&out).contains("SILENT");
        last = Some(out);
        silent
    });
    let out = last.unwrap();
    assert_eq!(out.status.code(), Some(3), "a silent client is exit 3: {}", text(&out));
    assert!(text(&out).contains("host-a") && text(&out).contains("SILENT"), "{}", text(&out));
    expected += 1;
    let mails = smtp.wait_for(expected, Duration::from_secs(10));
    let m = mails.last().unwrap();
    assert_eq!(m.subject, "[ferry backup1] CLIENT_SILENT: host-a");
    assert!(flat(&m.body).contains("Client host-a sent no request"), "{}", m.body);
    let out = run(node.cmd().args(["--json", "check"]));
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["client"], "host-a");
    assert_eq!(v[0]["silent"], true);
    // A check mails what is due before it exits.
    assert_eq!(smtp.messages().len(), expected, "an open silence is mailed once");
    // ... and back: a request, a scan, a check within the second.
    eventually("the client to count as back", || {
        ok(a.cmd().args(["request", "dummy", "hello", "--send"]));
        assert!(scan(&node).status.success());
        run(node.cmd().arg("check")).status.success()
    });
    expected += 1;
    let mails = smtp.wait_for(expected, Duration::from_secs(10));
    assert_eq!(mails.last().unwrap().subject, "[ferry backup1] CLIENT_BACK: host-a");

    // 5. 300 failing requests in one push: a handful of mails, not 300.
    let files: Vec<_> = (0..300)
        .map(|i| {
            rq(&format!("20260101T000001Z-burst{i:03}-1"), format!("dummy burst{i}\r\nBcc: attacker@evil.example\n"))
        })
        .collect();
    q.send(&files);
    let before = smtp.messages().len();
    let t = Instant::now();
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    eprintln!("300 failing requests scanned in {:?}", t.elapsed());
    assert_eq!(node.pool_ids("host-a", "E").len(), 4 + 300);
    // The scan mailed what was due; a check flushes anything left.
    let _ = run(node.cmd().arg("check"));
    let mails = smtp.messages();
    let new = &mails[before..];
    assert!(!new.is_empty() && new.len() <= 2, "300 failures became {} mails: {:?}", new.len(), subjects(new));
    let m = &new[0];
    assert_eq!(m.subject, "[ferry backup1] REQUEST_FAILED: host-a");
    assert_clean_headers(m, "backup1", &forbidden);
    assert!(flat(&m.body).contains("Raised 299 more times"), "{}", m.body);
}

/// A small tmpfs mounted for one test (a full disk on demand); unmounted
/// on drop. Declare it after the `TestDir` so it goes first.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounting needs root: skipped (false) otherwise, a failure under CI.
    fn available() -> bool {
        if is_root() && require("mount") && require("umount") {
            return true;
        }
        assert!(!in_ci(), "full-disk tests need root to mount a tmpfs; CI is set, so this is a failure, not a skip");
        eprintln!("SKIPPED: full-disk tests need root (mount -t tmpfs)");
        false
    }

    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        ok(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(dir));
        Tmpfs { dir: dir.to_owned() }
    }

    fn resize(&self, size: &str) {
        ok(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.dir));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !run(Command::new("umount").arg(&self.dir)).status.success() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
        }
    }
}

/// `n` bytes of /dev/urandom (incompressible: git and zstd cannot shrink them).
fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::with_capacity(n);
    fs::File::open("/dev/urandom").unwrap().take(n as u64).read_to_end(&mut v).unwrap();
    v
}

/// Names of temporary or half-written entries below `root`.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    list_tree(root)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".tmp-") || n.starts_with(".incoming-") || n == ".incomplete" || n.starts_with("tmp_pack_")
        })
        .collect()
}

fn catalog(node: &Node, client: &str) -> Vec<serde_json::Value> {
    node.ferry_node_json(&["find", "--client", client]).as_array().unwrap().clone()
}

fn pack_files(mirror: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(mirror.join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn full_disk_on_the_node_fails_cleanly_and_completes_once_space_returns() {
    if !kit::tools() || !Tmpfs::available() {
        return;
    }
    let td = TestDir::new("ops_node_full");
    let data = td.join("nodedata");
    let _mnt = Tmpfs::mount(&data, "128m");
    let node = Node::start_with(&td, "backup1", &format!("data_dir = \"{}\"\nscan_on_push = false", data.display()));
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"stream\"\nmodule = \"pipe\"\ncommand = [\"head\", \"-c\", \"40000000\", \"/dev/urandom\"]\n",
    );
    node.enroll(&[&a]);
    // A mirror that exists before the disk fills.
    let (bare, work) = a.repo("big");
    commit_and_push(&work, "small", "small\n");
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    assert!(scan(&node).status.success());
    let mirror = data.join("host-a/git/big.git");
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare));
    let refs_before = for_each_ref(&mirror);
    let packs_before = pack_files(&mirror);

    // Fill the disk: 16 MiB left.
    let filler = data.join("filler");
    fs::write(&filler, vec![0u8; 112 << 20]).unwrap();

    // An sftp pull larger than the space left.
    ok(a.cmd().args(["backup", "stream", "--send"]));
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = node.pool_ids("host-a", "E");
    assert_eq!(e.len(), 1, "{}", node.events());
    let w = why(&node, "host-a", &e[0]);
    assert_eq!(w["reason"], "E_DISK_FULL", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("No space left on device"), "{w}");
    let stored: Vec<PathBuf> = list_tree(data.join("host-a/stream")).into_iter().filter(|p| p.is_file()).collect();
    assert!(stored.is_empty(), "nothing half-written is kept: {stored:?}");
    assert!(leftovers(&data).is_empty(), "{:?}", leftovers(&data));
    assert!(catalog(&node, "host-a").is_empty(), "nothing recorded");

    // A git fetch that fills the disk: E_DISK_FULL, the mirror unchanged.
    fs::write(work.join("random.bin"), random_bytes(24 << 20)).unwrap();
    git(&work, &["add", "random.bin"]);
    git(&work, &["commit", "--quiet", "-m", "24 MiB of noise"]);
    ok(git_cmd(&work).args(["push", "--quiet", "origin", "HEAD:master"]));
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    eventually("the git request delivered", || client_drained(&a, "backup1"));
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = node.pool_ids("host-a", "E");
    assert_eq!(e.len(), 2, "{}", node.events());
    let w = why(&node, "host-a", &e[1]);
    assert_eq!(w["reason"], "E_DISK_FULL", "{w}");
    assert_eq!(for_each_ref(&mirror), refs_before, "the mirror's refs are unchanged");
    assert_eq!(pack_files(&mirror), packs_before, "no pack of the failed fetch is left");
    ok(git_cmd(&mirror).args(["fsck", "--strict", "--no-dangling"]));
    assert!(leftovers(&data).is_empty(), "{:?}", leftovers(&data));

    // A first mirror that does not fit: nothing of it stays.
    let (fresh_bare, fresh_work) = a.repo("fresh");
    fs::write(fresh_work.join("random.bin"), random_bytes(24 << 20)).unwrap();
    git(&fresh_work, &["add", "random.bin"]);
    git(&fresh_work, &["commit", "--quiet", "-m", "24 MiB of noise"]);
    ok(git_cmd(&fresh_work).args(["push", "--quiet", "origin", "HEAD:master"]));
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    eventually("the git request delivered", || client_drained(&a, "backup1"));
    let out = scan(&node);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = node.pool_ids("host-a", "E");
    assert_eq!(e.len(), 3, "{}", node.events());
    assert_eq!(why(&node, "host-a", &e[2])["reason"], "E_DISK_FULL");
    let fresh_mirror = data.join("host-a/git/fresh.git");
    assert!(!fresh_mirror.exists(), "no half mirror");
    assert!(leftovers(&data).is_empty(), "{:?}", leftovers(&data));

    // Space returns: all three complete.
    fs::remove_file(&filler).unwrap();
    ok(a.cmd().args(["backup", "stream", "--send"]));
    ok(a.cmd().args(["request", "git", bare.to_str().unwrap(), "--send"]));
    ok(a.cmd().args(["request", "git", fresh_bare.to_str().unwrap(), "--send"]));
    let out = scan(&node);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(node.pool_ids("host-a", "E").len(), 3);
    assert_eq!(for_each_ref(&fresh_mirror), for_each_ref(&fresh_bare));
    let found = catalog(&node, "host-a");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["size"], 40_000_000);
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare));
    ok(git_cmd(&mirror).args(["fsck", "--strict", "--no-dangling"]));
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert!(leftovers(&data).is_empty(), "{:?}", leftovers(&data));
}

#[test]
fn full_disk_on_the_client_fails_cleanly_and_completes_once_space_returns() {
    if !kit::tools() || !Tmpfs::available() {
        return;
    }
    let td = TestDir::new("ops_client_full");
    let node = Node::start(&td, "backup1");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"stream\"\nmodule = \"pipe\"\ncommand = [\"head\", \"-c\", \"40000000\", \"/dev/urandom\"]\n",
    );
    let export = a.base.join("export");
    let mnt = Tmpfs::mount(&export, "16m");
    node.enroll(&[&a]);

    let out = a.ferry(&["backup", "stream", "--send"]);
    assert_eq!(out.status.code(), Some(1), "a failed module is exit 1: {}", text(&out));
    let e = a.pool_ids("backup1", "E");
    assert_eq!(e.len(), 1, "{}", text(&out));
    let reason = fs::read_to_string(a.base.join(format!("state/pools/backup1/E{}.why", e[0]))).unwrap();
    assert!(reason.contains("No space left on device"), "the reason says the disk is full: {reason}");
    assert!(text(&out).contains("No space left on device"), "{}", text(&out));
    let st = &status(&a)["backup1"];
    assert_eq!(st["failed"], 1);
    assert!(st["failed_recent"][0][1].as_str().unwrap().contains("No space left on device"), "{st}");
    let files: Vec<PathBuf> = list_tree(&export).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.iter().all(|p| p.file_name().unwrap() == ".lock"), "temp files cleaned: {files:?}");
    assert!(node.pool_ids("host-a", "F").is_empty() && node.pool_ids("host-a", "RQ").is_empty());

    // Space returns: the next request completes.
    mnt.resize("64m");
    let out = a.ferry(&["backup", "stream", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(a.pool_ids("backup1", "F").len(), 1);
    eventually("the node stored the stream", || node.pool_ids("host-a", "F").len() == 1);
    let found = catalog(&node, "host-a");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["size"], 40_000_000);
    let artifacts: Vec<PathBuf> = list_tree(export.join("stream")).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(artifacts.len(), 2, "one artifact and the lock: {artifacts:?}");
    assert!(leftovers(&export).is_empty());
}

/// Make every configured node a default node (the fleet makes only the
/// first one default).
fn all_nodes_default(a: &Client) {
    let toml = fs::read_to_string(&a.config).unwrap().replace("default = false", "default = true");
    fs::write(&a.config, toml).unwrap();
}

#[test]
fn two_nodes_one_down_the_other_gets_everything_and_the_late_one_gets_it_once() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("ops_two_nodes");
    let node1 = Node::start(&td, "backup1");
    let mut node2 = Node::start(&td, "backup2");
    let tree = td.mkdir("site");
    fs::write(tree.join("index.html"), "<h1>hello</h1>\n").unwrap();
    fs::write(tree.join("data.bin"), random_bytes(200_000)).unwrap();
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node1, &node2],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n", tree.display()),
    );
    all_nodes_default(&a);
    node1.enroll(&[&a]);
    node2.enroll(&[&a]);
    let (bare, work) = a.repo("project");

    node2.sshd.stop();
    ok(a.cmd().args(["request", "dummy", "both"]));
    commit_and_push(&work, "README", "hello\n");
    ok(a.cmd().args(["backup", "site"]));
    let (out, reports) = send(&a);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(reports.len(), 2);
    eventually("backup1 delivered", || client_drained(&a, "backup1"));
    assert_eq!(a.pool_ids("backup1", "F").len(), 3);

    // backup1 has everything, promptly and completely.
    eventually("backup1 finished every request", || node_matches_client(&node1, &a));
    let m1 = node1.data("host-a").join("git/project.git");
    assert_eq!(for_each_ref(&m1), for_each_ref(&bare));
    let c1 = catalog(&node1, "host-a");
    assert_eq!(c1.len(), 1, "{c1:?}");
    // backup2's pool holds all three, and status says so.
    assert_eq!(a.pool_ids("backup2", "C").len() + a.pool_ids("backup2", "P").len(), 3);
    assert!(a.pool_ids("backup2", "F").is_empty());
    let st = status(&a);
    assert!(st["backup1"]["failing_since"].is_null() && st["backup1"]["pending"] == 0, "{:?}", st["backup1"]);
    assert!(st["backup2"]["failing_since"].is_string(), "{:?}", st["backup2"]);
    assert_eq!(st["backup2"]["pending"], 3, "{:?}", st["backup2"]);
    let human = text(&a.ferry(&["status"]));
    assert!(human.contains("node backup2") && human.contains("FAILING since"), "{human}");
    assert!(human.contains("pending: 3"), "{human}");
    let artifacts = || -> Vec<PathBuf> {
        list_tree(a.base.join("export/site"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
            .collect()
    };
    assert_eq!(artifacts().len(), 1, "{:?}", artifacts());

    // backup2 returns: everything once, from the same artifact.
    node2.sshd.restart();
    let out = a.ferry(&["--json", "send", "--wait", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(client_drained(&a, "backup2"));
    assert_eq!(a.pool_ids("backup2", "F"), a.pool_ids("backup1", "F"), "the same requests went to both nodes");
    eventually("backup2 finished every request", || node_matches_client(&node2, &a));
    let m2 = node2.data("host-a").join("git/project.git");
    assert_eq!(for_each_ref(&m2), for_each_ref(&bare));
    let c2 = catalog(&node2, "host-a");
    assert_eq!(c2.len(), 1, "{c2:?}");
    assert_eq!(c2[0]["sha256"], c1[0]["sha256"], "one artifact served both nodes");
    assert_eq!(artifacts().len(), 1, "the fs artifact was produced once: {:?}", artifacts());
    for n in [&node1, &node2] {
        let done = n.request_done_counts();
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(done.values().all(|&c| c == 1), "{done:?}");
    }
    let st = status(&a);
    assert!(st["backup2"]["failing_since"].is_null() && st["backup2"]["pending"] == 0, "{:?}", st["backup2"]);
}

/// `Ferry-Request:` trailers per id in the node's queue repo: how often the
/// client committed each request.
fn committed_counts(node: &Node, client: &str) -> BTreeMap<String, usize> {
    let q = node.srv().join(format!("repositories/queue/{client}.git"));
    let log = git(&q, &["log", "--format=%B", "master"]);
    let mut out = BTreeMap::new();
    for l in log.lines() {
        if let Some(id) = l.strip_prefix("Ferry-Request: ") {
            *out.entry(id.to_owned()).or_default() += 1;
        }
    }
    out
}

fn spawn(mut cmd: Command) -> std::process::Child {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_sends_and_scans_handle_each_request_once_and_dead_holders_never_block() {
    if !kit::tools() || !require("flock") {
        return;
    }
    let td = TestDir::new("ops_locks");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);

    let mut total = 0;
    for round in 0..6 {
        for i in 0..15 {
            ok(a.cmd().args(["request", "dummy", &format!("r{round}w{i}")]));
            total += 1;
        }
        // Two sends and two scans at once, several times over.
        for _ in 0..3 {
            let mut children = Vec::new();
            for _ in 0..2 {
                let mut s = a.cmd();
                s.arg("send");
                children.push(spawn(s));
                let mut s = node.cmd();
                s.arg("scan");
                children.push(spawn(s));
            }
            for mut c in children {
                c.wait().unwrap();
            }
        }
    }
    let (out, _) = send(&a);
    assert!(out.status.success(), "{}", text(&out));
    assert!(scan(&node).status.success());
    assert_eq!(a.pool_ids("backup1", "F").len(), total);
    assert!(node_matches_client(&node, &a));
    let done = node.request_done_counts();
    assert_eq!(done.len(), total);
    let twice: Vec<_> = done.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "handled more than once on the node: {twice:?}");
    let committed = committed_counts(&node, "host-a");
    assert_eq!(committed.len(), total);
    let twice: Vec<_> = committed.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "committed more than once by the client: {twice:?}");

    // A lock whose holder was SIGKILLed blocks nothing.
    let held = |lock: &Path| !run(Command::new("flock").args(["-n"]).arg(lock).arg("true")).status.success();
    let client_lock = a.base.join("state/pools/backup1/.lock");
    let mut holder = hold_lock(&client_lock);
    eventually("flock holds the client's pool lock", || held(&client_lock));
    let id = ok(a.cmd().args(["request", "dummy", "stale"])).trim().to_owned();
    let (out, reports) = {
        let out = a.ferry(&["--json", "send"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out, v)
    };
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(reports[0]["busy"], true, "the live holder is respected: {reports}");
    assert_eq!(a.pool_ids("backup1", "C"), std::slice::from_ref(&id));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = a.ferry(&["--json", "send"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["delivered"], serde_json::json!([id]), "{v}");

    let node_lock = node.pool("host-a").join(".lock");
    let mut holder = hold_lock(&node_lock);
    eventually("flock holds the node's pool lock", || held(&node_lock));
    let v: serde_json::Value = serde_json::from_str(&ok(node.cmd().args(["--json", "scan"]))).unwrap();
    assert_eq!(v["busy"], serde_json::json!(["host-a"]), "{v}");
    assert_eq!(node.pool_ids("host-a", "RQ"), [format!("{id}-1")]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(node.cmd().args(["--json", "scan"]))).unwrap();
    assert_eq!(v["finished"], 1, "{v}");
    assert!(node_matches_client(&node, &a));

    // Nor do git's own lock files that a killed send left in the queue
    // clone (git and libgit2 never remove another process's lock).
    let q = a.base.join("state/queues/backup1.git");
    let git_locks =
        [q.join("config.lock"), q.join("refs/heads/master.lock"), q.join("refs/remotes/origin/master.lock")];
    for l in &git_locks {
        fs::write(l, "").unwrap();
    }
    let id = ok(a.cmd().args(["request", "dummy", "gitlock"])).trim().to_owned();
    let out = a.ferry(&["--json", "send"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["delivered"], serde_json::json!([id]), "{v}");
    assert!(git_locks.iter().all(|l| !l.exists()));
    assert!(scan(&node).status.success());
    assert!(node_matches_client(&node, &a));

    // purge, verify and gc take the node's maintenance lock: one waits
    // while another holds it, and goes on once the holder is killed.
    let maintain_lock = node.base.join("srv/state/maintain.lock");
    let mut holder = hold_lock(&maintain_lock);
    eventually("flock holds the maintenance lock", || held(&maintain_lock));
    let mut verify = node
        .cmd()
        .args(["--json", "verify"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("verify to wait for the maintenance lock", || waits_for_lock(verify.id(), &maintain_lock));
    assert!(verify.try_wait().unwrap().is_none(), "verify did not wait for the maintenance lock");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = verify.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
}

/// Whether process `pid` is blocked on a lock of the file `lock`: a `->`
/// line of /proc/locks (`1: -> FLOCK ADVISORY WRITE <pid> <dev>:<inode> 0
/// EOF`) naming its pid and the file's inode.
fn waits_for_lock(pid: u32, lock: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = format!(":{}", fs::metadata(lock).unwrap().ino());
    let pid = pid.to_string();
    fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"->") && f.get(5) == Some(&pid.as_str()) && f.get(6).is_some_and(|d| d.ends_with(&ino))
    })
}

/// A process holding `lock` (flock) until killed: a shell takes the lock on
/// its own descriptor and becomes `sleep`, so killing the child releases
/// the lock and leaves no orphan behind.
fn hold_lock(lock: &Path) -> std::process::Child {
    spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "exec 9>\"$1\" && flock 9 && exec sleep 1000", "sh"]).arg(lock);
        c
    })
}

/// The SIGKILL torture of `bench/torture.sh`, bounded for CI: the same
/// code (`ferry_tests::torture`), a few trials per target. A failure prints
/// the seed; `bench/torture.sh N --seed S` repeats the run.
#[test]
fn torture_bounded() {
    if !kit::tools() {
        return;
    }
    let opts = ferry_tests::torture::Options { trials: 24, check_every: 8, ..Default::default() };
    let report = ferry_tests::torture::run_torture(&opts);
    eprintln!("{report}");
    assert!(report.ok(), "invariants violated (repeat with bench/torture.sh 24 --seed {}):\n{report}", report.seed);
    assert_eq!(report.trials, 24);
    assert!(report.kills.values().sum::<usize>() > 0, "nothing was killed:\n{report}");
    assert!(report.client_finished > 24 && report.node_finished >= report.client_finished, "{report}");
}

/// A scan killed between publishing a download and recording it in the
/// catalog: the next scan records that file (no second copy, nothing on
/// disk the catalog lacks). And what killed jobs leave — a `.tmp-*`
/// download, an empty run directory, a staging mirror, git's temporary
/// packs and a ref lock in a mirror — is swept before the interrupted
/// requests run again (a stale ref lock would fail every later fetch).
#[test]
fn scan_killed_mid_job_leaves_nothing_behind_and_records_each_download_once() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("ops_sweep");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"stream\"\nmodule = \"pipe\"\ncommand = [\"head\", \"-c\", \"1000000\", \"/dev/urandom\"]\n",
    );
    node.enroll(&[&a]);
    let (bare, work) = a.repo("proj");
    commit_and_push(&work, "f", "1\n");
    eventually("the git request delivered", || client_drained(&a, "backup1"));
    assert!(scan(&node).status.success());
    ok(a.cmd().args(["backup", "stream", "--send"]));
    let out = run(node.cmd().env("FERRY_CRASH_AT", "sftp:after-publish").arg("scan"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "scan was not killed: {}", text(&out));
    assert_eq!(node.pool_ids("host-a", "P").len(), 1, "the sftp request waits in P");
    let stream = node.data("host-a").join("stream");
    let published: Vec<PathBuf> = list_tree(&stream).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(published.len(), 1, "{published:?}");
    assert!(catalog(&node, "host-a").is_empty());

    // What other killed jobs leave behind.
    let mirror = node.data("host-a").join("git/proj.git");
    let planted = [
        stream.join("20200101T000000Z/.tmp-20200101T000000Z.pipe-4242"),
        stream.join("20200101T000001Z"),
        node.data("host-a").join("git/.incoming-old.git-4242/HEAD"),
        mirror.join("objects/pack/tmp_pack_AbCdEf"),
        mirror.join("objects/pack/tmp_idx_AbCdEf"),
        mirror.join("refs/heads/master.lock"),
        mirror.join("packed-refs.lock"),
    ];
    for p in &planted {
        if p.extension().is_none() && !p.to_string_lossy().contains("tmp_") && !p.ends_with("HEAD") {
            fs::create_dir_all(p).unwrap();
        } else {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "left by a killed job").unwrap();
        }
    }
    commit_and_push(&work, "f", "2\n");
    eventually("the new git request delivered", || client_drained(&a, "backup1"));

    let out = scan(&node);
    assert!(out.status.success(), "{}", text(&out));
    assert!(node_matches_client(&node, &a), "{}", node.events());
    for p in &planted {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(!node.data("host-a").join("git/.incoming-old.git-4242").exists());
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare), "the fetch after the sweep worked");
    let found = catalog(&node, "host-a");
    assert_eq!(found.len(), 1, "{found:?}");
    let files: Vec<PathBuf> =
        list_tree(&stream).into_iter().filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".sha256")).collect();
    assert_eq!(files, published, "the published download was recorded, not fetched again");
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert!(leftovers(&node.srv()).is_empty(), "{:?}", leftovers(&node.srv()));
    assert!(node.events().contains("leftovers_removed"));
}
