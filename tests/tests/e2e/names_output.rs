//! Names and output (issue 16, points 4, 5, 11 and 12), end to end.
//!
//! - Names that differ only in letter case, and names the node keeps for
//!   its own directories, are refused: clients at enrollment (including a
//!   rename that changes only the case of a client the node already
//!   stores), sources and mirror paths in requests.
//! - File names with C0/C1 controls, DEL and bidi controls are backed up and
//!   restored byte for byte, and every listing, log line and mail shows
//!   them escaped; a client-controlled name is escaped exactly once in
//!   every sink (human output, JSON after decoding, the journal, logs,
//!   mails).
//! - A reader that closes the pipe early ends output quietly with the
//!   command's own exit code; `ferry-node events` prints human lines, JSON
//!   lines only with `--json`.
//! - No ANSI colour reaches the terminal of a client pushing to the node.

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, ssh_command, text};
use ferry_tests::{Smtp, TestDir, git, git_cmd, require, ssh_keygen};

use crate::hostile::kit::{self, Queue, assert_printable, rq};

/// The client-controlled name of the issue: it would turn a terminal red.
const NAME: &str = "a\x1b[31mb";
/// That name escaped once, in Ferry's one escaped form.
const ONCE: &str = r"a\x1B[31mb";
/// Escaped twice (the backslash of the first escape escaped again).
const TWICE: &str = r"a\\x1B[31mb";

/// `NAME` shown escaped exactly once in `s`.
fn assert_once(what: &str, s: &str) {
    assert!(!s.contains(NAME), "{what}: the raw name reached the output: {s:?}");
    assert!(!s.contains(TWICE), "{what}: the name is escaped twice: {s}");
    assert!(s.contains(ONCE), "{what}: the name escaped once ({ONCE}) is missing: {s}");
}

fn scan(node: &Node, client: &str) -> Output {
    let out = run(node.cmd().args(["-v", "scan", "--client", client]));
    assert!(matches!(out.status.code(), Some(0 | 3)), "scan failed: {}", text(&out));
    out
}

/// The reason code in `E<id>.why` of a request that ended in error.
fn why(node: &Node, client: &str, id: &str) -> serde_json::Value {
    let p = node.pool(client).join(format!("E{id}.why"));
    let b = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; events: {}", p.display(), node.events()));
    assert_printable(&p.display().to_string(), &b);
    serde_json::from_slice(&b).unwrap()
}

/// Point 4: names that differ only in letter case, and the node's own
/// directory names, are refused — at enrollment and in requests — and
/// nothing changes.
#[test]
fn names_differing_only_in_case_and_reserved_names_are_refused() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("names_case");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"trac\"\nmodule = \"pipe\"\ncommand = [\"echo\", \"tickets\"]\n",
    );
    node.enroll(&[&a]);

    // Enrollment: a second client differing only in case, a rename that
    // changes only the case of a client the node stores, a reserved name.
    let enrolled = || fs::read_to_string(node.srv().join("state/enrolled-clients")).unwrap();
    let keys = || fs::read_to_string(node.srv().join(".ssh/authorized_keys")).unwrap();
    let (clients_before, keys_before) = (enrolled(), keys());
    let twin_key = ssh_keygen(&td.join("twin/id_ed25519"), "twin");
    let section =
        |name: &str| a.gitosis_section.replacen("[ferry client host-a]", &format!("[ferry client {name}]"), 1);
    let refused = |what: &str, out: &Output, needle: &str| {
        assert!(!out.status.success(), "{what}: the push was accepted: {}", text(out));
        let t = text(out);
        assert!(t.contains("E_ENROL_CONF") && t.contains(needle), "{what}: {t}");
        assert_printable(what, &out.stderr);
        git(&node.admin_clone, &["clean", "-fdq"]);
        assert_eq!(enrolled(), clients_before, "{what}: the enrollment changed");
        assert_eq!(keys(), keys_before, "{what}: authorized_keys changed");
    };
    let out = node.admin_push("Host-A beside host-a", |dir| {
        fs::write(dir.join("keydir/Host-A.pub"), format!("{twin_key}\n")).unwrap();
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), format!("{conf}\n{}", section("Host-A"))).unwrap();
    });
    refused("two clients differing in case", &out, "clients 'host-a' and 'Host-A' differ only in letter case");
    let out = node.admin_push("rename host-a to Host-A", |dir| {
        fs::rename(dir.join("keydir/host-a.pub"), dir.join("keydir/Host-A.pub")).unwrap();
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), conf.replace("[ferry client host-a]", "[ferry client Host-A]")).unwrap();
    });
    refused("a rename changing only the case", &out, "differs only in letter case from storage this node already has");
    assert!(text(&out).contains("queue/host-a.git"), "names the storage: {}", text(&out));
    let out = node.admin_push("a client named Node", |dir| {
        fs::write(dir.join("keydir/Node.pub"), format!("{twin_key}\n")).unwrap();
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), format!("{conf}\n{}", section("Node"))).unwrap();
    });
    refused("a reserved client name", &out, "the client name 'Node' is reserved");

    // Sources: `trac` is stored; `Trac` would share its directory.
    ok(a.cmd().args(["backup", "trac", "--send"]));
    scan(&node, "host-a");
    assert_eq!(node.pool_ids("host-a", "F").len(), 1, "{}", node.events());
    let found = node.ferry_node_json(&["find", "--client", "host-a"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let art = &found[0];
    let data_before = ferry_tests::hash_tree(node.data("host-a"));
    let cfg = fs::read_to_string(&a.config).unwrap();
    fs::write(&a.config, cfg.replace("name = \"trac\"", "name = \"Trac\"")).unwrap();
    let out = ok(a.cmd().args(["backup", "Trac", "--send"]));
    // The node names a client request's first request file `<id>-1`.
    let id = format!("{}-1", out.lines().next().unwrap().trim());
    scan(&node, "host-a");
    let w = why(&node, "host-a", &id);
    assert_eq!(w["reason"], "E_REQ_NAME_CASE", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("source trac"), "{w}");

    // Reserved source names, in any case, refused by the grammar on the
    // node (a compromised client writes its own request files).
    let file = Path::new(art["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_owned();
    let export = a.base.join("export");
    let line = |source: &str| {
        format!(
            "sftp {} sftp://{}@{}:{}{}/trac/{file} sha256={} size={} source={source}\n",
            art["stamp"].as_str().unwrap(),
            a.sshd.user(),
            a.sshd.addr(),
            a.sshd.port(),
            export.display(),
            art["sha256"].as_str().unwrap(),
            art["size"]
        )
    };
    let q = Queue::clone(&node, "host-a", &td);
    q.send(&[rq("reserved-git", line("git")), rq("reserved-upper", line("GIT")), rq("case-upper", line("TRAC"))]);
    scan(&node, "host-a");
    for (id, code) in [
        ("reserved-git", "E_REQ_NAME_RESERVED"),
        ("reserved-upper", "E_REQ_NAME_RESERVED"),
        ("case-upper", "E_REQ_NAME_CASE"),
    ] {
        assert_eq!(why(&node, "host-a", id)["reason"], code, "{id}");
    }
    assert_eq!(ferry_tests::hash_tree(node.data("host-a")), data_before, "nothing was stored");
    assert_eq!(node.ferry_node_json(&["find", "--client", "host-a"]), found, "the catalog is unchanged");

    // Mirrors: `App.git` beside a stored `app.git`.
    let (_, work) = a.repo("app");
    commit_and_push(&work, "README", "app\n");
    eventually("the app mirror", || {
        scan(&node, "host-a");
        node.data("host-a").join("git/app.git/HEAD").exists()
    });
    let e_before = node.pool_ids("host-a", "E");
    let (_, work) = a.repo("App");
    commit_and_push(&work, "README", "App\n");
    eventually("the App request to end", || {
        scan(&node, "host-a");
        node.pool_ids("host-a", "E").len() > e_before.len()
    });
    let new: Vec<String> = node.pool_ids("host-a", "E").into_iter().filter(|id| !e_before.contains(id)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let w = why(&node, "host-a", &new[0]);
    assert_eq!(w["reason"], "E_REQ_NAME_CASE", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("git/app.git"), "{w}");
    let git_dir: Vec<String> = fs::read_dir(node.data("host-a").join("git"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(git_dir, ["app.git"], "no second mirror");
}

/// A tree whose file names hold C0 and C1 controls, DEL, bidi controls
/// and bytes that are not UTF-8.
fn hostile_tree(root: &Path) -> Vec<Vec<u8>> {
    let names: Vec<Vec<u8>> = vec![
        NAME.into(),
        "ok\u{202E}deliaf.txt".into(),
        "c1-\u{9B}2J".into(),
        "del\x7f".into(),
        "nl\nINFO forged".into(),
        "cr\rname".into(),
        "tab\tname".into(),
        "\u{200E}lrm-\u{200F}rlm".into(),
        "\u{2066}isolate\u{2069}".into(),
        "alm\u{061C}".into(),
        "embed\u{202A}x\u{202C}".into(),
        b"not-utf8-\xff\xfe".to_vec(),
    ];
    for n in &names {
        fs::write(root.join(std::ffi::OsStr::from_bytes(n)), n).unwrap();
    }
    let dir = root.join("dir\u{202E}");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("in\x1bside"), "inside\n").unwrap();
    symlink("ok\u{202E}deliaf.txt", root.join("link\x1b[2J")).unwrap();
    names
}

/// Points 5 and 12: hostile names are restored byte for byte, and every
/// sink — listings, JSON, the journal, logs, mails — shows a client name
/// escaped, exactly once.
#[test]
fn hostile_names_are_restored_exactly_and_shown_escaped_once() {
    if !kit::tools() || !require("python3") {
        return;
    }
    let td = TestDir::new("names_sinks");
    let smtp = Smtp::start(&td.join("smtp"));
    let mail = |label: &str| {
        format!(
            "[mail]\nto = [\"admin@node.example\"]\nfrom = \"ferry@node.example\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nhost_label = \"{label}\"\n",
            smtp.url()
        )
    };
    let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{}", mail("backup1")));
    let tree = td.mkdir("tree");
    hostile_tree(&tree);
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "{}\n[[source]]\nname = \"tree\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"locked\"\nmodule = \"pipe\"\ncommand = [\"echo\", \"x\"]\n{}\n",
            mail("host-a"),
            tree.display(),
            r#"pre = ["/bin/sh", "-c", "printf 'cannot lock %s\\n' \"$1\" >&2; exit 3", "sh", "a\u001b[31mb"]"#
        ),
    );
    node.enroll(&[&a]);
    let mut shown: Vec<(String, Vec<u8>)> = Vec::new();
    let keep = |shown: &mut Vec<(String, Vec<u8>)>, what: &str, out: &Output| {
        shown.push((format!("{what} (stdout)"), out.stdout.clone()));
        shown.push((format!("{what} (stderr)"), out.stderr.clone()));
    };

    // Backed up and restored byte for byte.
    let out = run(a.cmd().args(["-vv", "backup", "tree", "--send"]));
    assert!(out.status.success(), "{}", text(&out));
    keep(&mut shown, "ferry -vv backup tree --send", &out);
    keep(&mut shown, "ferry-node -v scan", &scan(&node, "host-a"));
    assert_eq!(node.pool_ids("host-a", "F").len(), 1, "{}", node.events());
    let to = td.join("restored");
    let out = run(node.cmd().args(["-vv", "restore", "host-a", "tree", "--to", to.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out));
    keep(&mut shown, "ferry-node -vv restore", &out);
    let cmp = Compare { mode: true, owner: true, mtime: true, ..Default::default() };
    let (m1, m2) = (manifest(&tree).unwrap(), manifest(&to).unwrap());
    assert!(m1.len() >= 15, "{} entries", m1.len());
    let d = diff(&m1, &m2, &cmp);
    assert!(d.is_empty(), "restored tree differs: {d:#?}");
    for e in &m1 {
        assert!(ferry_archive::manifest::find(&m2, &e.path).is_some(), "{:?} restored under its exact name", e.path);
    }

    // Streaming an artifact to a reader that went away is an incomplete
    // restore, never a quiet success.
    let mut cmd = node.cmd();
    cmd.args(["restore", "host-a", "tree", "--stdout"]);
    let cut = closed_stdout(cmd);
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut));
    assert!(String::from_utf8_lossy(&cut.stderr).contains("the restore is incomplete"), "{}", text(&cut));

    // A client module fails, quoting the name (a pre command's stderr).
    let out = run(a.cmd().args(["backup", "locked", "--send"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    keep(&mut shown, "ferry backup locked --send", &out);
    assert_once("ferry send: the failed request", &String::from_utf8_lossy(&out.stdout));
    assert_once("ferry send: its log line", &String::from_utf8_lossy(&out.stderr));
    let out = run(a.cmd().args(["status"]));
    keep(&mut shown, "ferry status", &out);
    assert_once("ferry status", &String::from_utf8_lossy(&out.stdout));
    let out = run(a.cmd().args(["--json", "status"]));
    keep(&mut shown, "ferry --json status", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = v[0]["failed_recent"][0][1].as_str().unwrap_or_else(|| panic!("{v}"));
    assert_once("ferry --json status (decoded)", reason);

    // A request file quoting the name is rejected by the node's grammar.
    let q = Queue::clone(&node, "host-a", &td);
    q.send(&[rq("hostile-name", format!("dummy {NAME}\n"))]);
    let out = scan(&node, "host-a");
    keep(&mut shown, "ferry-node -v scan (hostile request)", &out);
    assert_once("ferry-node scan log", &String::from_utf8_lossy(&out.stderr));
    let w = why(&node, "host-a", "hostile-name");
    assert_eq!(w["reason"], "E_REQ_CTRL_CHAR");
    assert_once("E<id>.why (decoded)", w["detail"].as_str().unwrap());

    // A mirrored repository with bidi and C1 refs, which the client deletes.
    let (bare, work) = a.repo("app");
    commit_and_push(&work, "README", "app\n");
    let refs = ["refs/heads/ok\u{202E}deliaf", "refs/heads/x\u{9B}2J"];
    for r in refs {
        ok(git_cmd(&work).args(["push", "--quiet", "origin", &format!("HEAD:{r}")]));
    }
    let mirror = node.data("host-a").join("git/app.git");
    eventually("the mirror with its refs", || {
        scan(&node, "host-a");
        mirror.join("HEAD").exists() && ferry_tests::for_each_ref(&mirror) == ferry_tests::for_each_ref(&bare)
    });
    for r in refs {
        ok(git_cmd(&work).args(["push", "--quiet", "origin", &format!(":{r}")]));
    }
    commit_and_push(&work, "README", "app 2\n");
    eventually("history_rewritten", || {
        scan(&node, "host-a");
        node.events().contains("history_rewritten")
    });

    // The journal, human and JSON, and the file itself.
    let out = run(node.cmd().args(["events", "--last", "1000"]));
    keep(&mut shown, "ferry-node events", &out);
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = human.lines().find(|l| l.contains("hostile-name")).unwrap_or_else(|| panic!("{human}"));
    assert_once("ferry-node events", line);
    let rewritten = human.lines().find(|l| l.contains("history_rewritten")).unwrap();
    assert!(rewritten.contains(r"refs/heads/ok\u{202E}deliaf"), "{rewritten}");
    assert!(rewritten.contains(r"refs/heads/x\u{009B}2J"), "{rewritten}");
    assert!(!rewritten.contains(r"\\u"), "a ref name escaped twice: {rewritten}");
    let out = run(node.cmd().args(["--json", "events", "--last", "1000"]));
    keep(&mut shown, "ferry-node --json events", &out);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failed = events.iter().find(|e| e["request"] == "hostile-name").unwrap();
    assert_once("ferry-node --json events (decoded)", failed["detail"].as_str().unwrap());
    let journal = fs::read(node.srv().join("state/events.jsonl")).unwrap();
    shown.push(("events.jsonl".into(), journal.clone()));
    let rewritten: serde_json::Value = String::from_utf8_lossy(&journal)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "history_rewritten")
        .unwrap();
    assert!(rewritten["detail"].as_str().unwrap().contains(r"refs/heads/ok\u{202E}deliaf"), "{rewritten}");

    // Listings.
    for args in [
        vec!["list"],
        vec!["--json", "list"],
        vec!["find", "--client", "host-a"],
        vec!["--json", "find"],
        vec!["check"],
        vec!["--json", "verify"],
    ] {
        let out = run(node.cmd().args(&args));
        assert!(matches!(out.status.code(), Some(0 | 3)), "ferry-node {args:?}: {}", text(&out));
        keep(&mut shown, &format!("ferry-node {args:?}"), &out);
    }

    // Mails: the node's (the rejected request) and the client's (the failed module).
    let mails = smtp.wait_for(2, Duration::from_secs(60));
    let mut quoted = 0;
    for m in &mails {
        shown.push((format!("mail {:?}", m.subject), m.raw.iter().copied().filter(|b| *b != b'\r').collect()));
        if m.body.contains("hostile-name") || m.body.contains("cannot lock") {
            assert_once(&format!("mail {:?}", m.subject), &m.body);
            quoted += 1;
        }
    }
    assert_eq!(quoted, 2, "both mails quote the name: {:?}", mails.iter().map(|m| &m.body).collect::<Vec<_>>());

    for (what, bytes) in &shown {
        assert_printable(what, bytes);
    }
}

/// Runs `cmd` with standard output a pipe whose reader is already gone,
/// as `| head -1` leaves it once head has its line: every write fails with
/// EPIPE.
fn closed_stdout(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cmd.stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    child.wait_with_output().unwrap()
}

/// Point 11: a closed pipe ends output quietly; `events` is human unless
/// `--json`. Point 12: a node-side hook's warning reaches the pushing
/// client without colour codes.
#[test]
fn broken_pipes_end_quietly_and_hooks_never_colour_the_client_terminal() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("names_pipes");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    ok(a.cmd().args(["request", "dummy", "hello", "--send"]));
    eventually("the dummy request", || node.pool_ids("host-a", "F").len() == 1);

    // events: human lines by default, JSON lines with --json.
    let human = ok(node.cmd().args(["events"]));
    assert!(!human.is_empty());
    for l in human.lines() {
        assert!(!l.starts_with('{'), "a JSON line without --json: {l}");
    }
    assert!(human.lines().any(|l| l.contains(" host-a request_done request ")), "{human}");
    let json = ok(node.cmd().args(["--json", "events"]));
    assert_eq!(json.lines().count(), human.lines().count());
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["event"].is_string(), "{l}");
    }

    // A reader that goes away: no panic (exit 101), no message, the same
    // exit code as with a reader.
    let node_cmds: Vec<Vec<&str>> = vec![
        vec!["events"],
        vec!["--json", "events"],
        vec!["list"],
        vec!["--json", "list"],
        vec!["find"],
        vec!["--json", "find"],
        vec!["check"],
        vec!["--json", "check"],
        vec!["--json", "verify"],
        vec!["pull-key", "host-a"],
    ];
    for args in &node_cmds {
        let full = run(node.cmd().args(args));
        let mut cmd = node.cmd();
        cmd.args(args);
        let cut = closed_stdout(cmd);
        assert_eq!(cut.status.code(), full.status.code(), "ferry-node {args:?}: {}", text(&cut));
        assert!(cut.stderr.is_empty(), "ferry-node {args:?} said: {}", String::from_utf8_lossy(&cut.stderr));
    }
    for args in [vec!["status"], vec!["--json", "status"]] {
        let full = a.ferry(&args);
        let mut cmd = a.cmd();
        cmd.args(&args);
        let cut = closed_stdout(cmd);
        assert_eq!(cut.status.code(), full.status.code(), "ferry {args:?}: {}", text(&cut));
        assert!(cut.stderr.is_empty(), "ferry {args:?} said: {}", String::from_utf8_lossy(&cut.stderr));
    }

    // The client pushes something the queue refuses over ssh with its own
    // key; the hook logs a warning, relayed to the client's terminal.
    let clone = td.join("a-queue");
    let kh = td.join("known_hosts");
    node.sshd.write_known_hosts(&kh);
    let ssh = ssh_command(&a.base.join("state/ssh/id_ed25519"), &kh);
    ok(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args([
        "clone",
        "--quiet",
        &node.url("queue/host-a.git"),
        clone.to_str().unwrap(),
    ]));
    fs::write(clone.join("not-a-request"), "x\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "--quiet", "-m", "junk"]);
    let out = run(git_cmd(&clone).env("GIT_SSH_COMMAND", &ssh).args(["push", "origin", "HEAD:master"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARN") && err.contains("push refused: E_REQ_NAME"), "the hook's warning: {err}");
    assert!(!out.stderr.contains(&0x1b), "colour codes reached the client's terminal: {err:?}");
    assert_printable("git push stderr", &out.stderr);
}
