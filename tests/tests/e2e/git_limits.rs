//! The git mirror's limits and failure reports (issue 16, points 3, 3b, 6
//! and 7), through the real channels: the client's sshd and `ferry gate`,
//! the node's hardened git, its pool, journal and mail.
//!
//! * a repository advertising more branches and tags than `max_refs` is
//!   refused before the fetch writes anything, and an over-long ref name
//!   is a limit, not a generic failure — over ssh by the guard inside the
//!   fetch's connection (checked alone with real git in protocols v0 and
//!   v2), over `git://` by a listing first;
//! * a shallow client repository ends the request in `E_FETCH_INCOMPLETE`
//!   (git itself exits 0 and only warns), mails the administrators and
//!   leaves the mirror as it was;
//! * a repository git's fsck refuses gets `E_FETCH_FSCK` naming the fsck
//!   message id, and failure details start with what git and the remote
//!   said, not with the node's command line;
//! * a refused push says write access was denied.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_tests::fleet::{Client, Node, ok, run, ssh_command, text};
use ferry_tests::{Smtp, TestDir, for_each_ref, git, git_cmd, hash_tree, require, require_all};

use crate::hostile::kit::{self, Forge, assert_done, assert_failed, events, git_stdin, no_staging_left, scan};

/// A bare repository under the client's exported root with one commit on
/// master (a file `f`).
fn one_commit(dir: PathBuf) -> Forge {
    let r = Forge::init(dir);
    let c = r.commit_file("first\n", &[]);
    r.set("refs/heads/master", &c);
    r
}

// ---------------------------------------------------------------------------
// Requests and their outcome on the node.

/// Ask for a backup of `repo` and deliver the request; returns its id on
/// the node (the one pending request there).
fn submit(node: &Node, a: &Client, repo: &Path) -> String {
    ok(a.cmd().args(["request", "git", repo.to_str().unwrap()]));
    ok(a.cmd().args(["send", "--wait"]));
    let pending = node.pool_ids(&a.name, "RQ");
    assert_eq!(pending.len(), 1, "one pending request: {pending:?}");
    pending[0].clone()
}

/// Every entry below `root` with its inode, size, mtime and ctime: equal
/// snapshots mean nothing was written there, not even and then undone.
fn stat_tree(root: &Path) -> BTreeMap<PathBuf, (u64, u64, i64, i64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).unwrap();
        out.insert(d.clone(), (md.ino(), md.size(), md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec()));
        if md.is_dir() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------

/// Point 3: the ref limit and ref-name limits are checked on the remote's
/// listing, before the fetch writes a ref, a reflog or a pack.
#[test]
fn ref_floods_and_over_long_ref_names_are_refused_before_the_fetch() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("git_limits_refs");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[limits]\nmax_refs = 20\n");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let mirror = |name: &str| node.data("host-a").join(format!("git/{name}.git"));

    // Mirrored while it was small; an unchanged repository mirrors again.
    let flood = one_commit(a.git_root.join("flood.git"));
    let id = submit(&node, &a, &flood.dir);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);
    assert_eq!(for_each_ref(&mirror("flood")), for_each_ref(&flood.dir));
    let id = submit(&node, &a, &flood.dir);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);

    // Then 25 more branches, each on a commit of its own (26 > 20).
    let head = flood.g(&["rev-parse", "refs/heads/master"]);
    let mut tx = String::new();
    for i in 0..25 {
        let c = flood.commit_file(&format!("branch {i}\n"), &[&head]);
        tx.push_str(&format!("create refs/heads/b{i:02} {c}\n"));
    }
    git_stdin(&flood.dir, &[&flood.gd(), "update-ref", "--stdin"], tx.as_bytes());
    let before = stat_tree(&mirror("flood"));
    let refs_before = for_each_ref(&mirror("flood"));
    let id = submit(&node, &a, &flood.dir);
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_LIMIT");
    assert!(detail.contains("more than 20 branches and tags") && detail.contains("nothing was fetched"), "{detail}");
    assert_eq!(for_each_ref(&mirror("flood")), refs_before, "the mirror's refs are unchanged");
    let after = stat_tree(&mirror("flood"));
    let changed: Vec<_> = after.iter().filter(|(p, s)| before.get(*p) != Some(s)).map(|(p, _)| p).collect();
    let gone: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "the refused fetch wrote below the mirror (even if it was undone): changed or new {changed:?}, gone {gone:?}"
    );

    // A ref name with a component longer than a file name can be (git's
    // own limit on the node: "File name too long"); the client keeps it
    // in packed-refs, where it fits.
    let long = one_commit(a.git_root.join("long-component.git"));
    let master = long.g(&["rev-parse", "refs/heads/master"]);
    let name = format!("refs/heads/{}", "l".repeat(251));
    fs::write(long.dir.join("packed-refs"), format!("{master} {name}\n")).unwrap();
    assert!(long.g(&["for-each-ref", "--format=%(refname)"]).contains(&name), "the client holds the ref");
    // A ref name longer than Ferry's limit, in short components.
    let deep = one_commit(a.git_root.join("long-name.git"));
    let master = deep.g(&["rev-parse", "refs/heads/master"]);
    deep.set(&format!("refs/heads/{}x", "d123456/".repeat(130)), &master);
    for (repo, what) in [(&long, "path component of 251 bytes"), (&deep, "bytes long, more than the limit of 1024")] {
        let id = submit(&node, &a, &repo.dir);
        scan(&node, "host-a");
        let detail = assert_failed(&node, "host-a", &id, "E_FETCH_LIMIT");
        assert!(detail.contains(what) && detail.contains("nothing was fetched"), "{detail}");
        let n = repo.dir.file_name().unwrap().to_string_lossy().trim_end_matches(".git").to_owned();
        assert!(!mirror(&n).exists(), "{n}: nothing stored");
    }
    no_staging_left(&node.data("host-a").join("git"));
}

/// Point 3b: a shallow client repository — from the start, or after it
/// was mirrored — fails with its own code, an alert mail, and the mirror
/// as it was; once the client's repository is complete again it mirrors.
#[test]
fn a_shallow_client_repository_fails_mails_and_leaves_the_mirror_alone() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("git_limits_shallow");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(
        &td,
        "backup1",
        &format!(
            "scan_on_push = false\n[mail]\nto = [\"Backup Admins <admins@example.test>\"]\nfrom = \"Ferry <ferry-backup1@example.test>\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nhost_label = \"backup1\"\nmin_interval = \"0s\"\n",
            smtp.url()
        ),
    );
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let mirror = node.data("host-a").join("git/proj.git");

    // The history lives in a work repository; the exported bare one is a
    // full clone first.
    let work = a.base.join("work");
    git(&a.base, &["init", "--quiet", work.to_str().unwrap()]);
    let commit = |n: usize| {
        fs::write(work.join("f"), format!("{n}\n")).unwrap();
        git(&work, &["add", "f"]);
        git(&work, &["commit", "--quiet", "-m", &format!("c{n}")]);
    };
    for n in 0..3 {
        commit(n);
    }
    let proj = a.git_root.join("proj.git");
    let src = format!("file://{}", work.display());
    git(&a.base, &["clone", "--quiet", "--bare", &src, proj.to_str().unwrap()]);
    let id = submit(&node, &a, &proj);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);
    assert_eq!(for_each_ref(&mirror), for_each_ref(&proj));

    // The client's repository becomes a shallow clone with newer commits.
    for n in 3..5 {
        commit(n);
    }
    fs::remove_dir_all(&proj).unwrap();
    git(&a.base, &["clone", "--quiet", "--bare", "--depth", "1", &src, proj.to_str().unwrap()]);
    assert!(proj.join("shallow").exists());
    let refs_before = for_each_ref(&mirror);
    let objects_before = hash_tree(mirror.join("objects"));
    let id = submit(&node, &a, &proj);
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_INCOMPLETE");
    assert!(detail.contains("refs/heads/master") && detail.contains("shallow"), "{detail}");
    assert_eq!(for_each_ref(&mirror), refs_before, "the mirror's refs are unchanged");
    assert_eq!(hash_tree(mirror.join("objects")), objects_before, "nothing of the fetch is kept");
    assert!(!mirror.join("shallow").exists(), "the mirror never becomes shallow");
    assert!(
        !events(&node).iter().any(|e| e["request"] == id.as_str() && e["event"] == "request_done"),
        "not reported as done"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1, "{:?}", mails.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert_eq!(mails[0].subject, "[ferry backup1] REQUEST_FAILED: host-a");
    let body = mails[0].body.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(body.contains(&format!("Request {id} from client host-a ended in E_FETCH_INCOMPLETE")), "{body}");
    assert!(body.contains("git fetch --unshallow"), "the mail says what to do: {body}");

    // Shallow from the start: no mirror at all.
    let fresh = a.git_root.join("fresh.git");
    git(&a.base, &["clone", "--quiet", "--bare", "--depth", "1", &src, fresh.to_str().unwrap()]);
    let id = submit(&node, &a, &fresh);
    scan(&node, "host-a");
    assert_failed(&node, "host-a", &id, "E_FETCH_INCOMPLETE");
    assert!(!node.data("host-a").join("git/fresh.git").exists(), "nothing stored");
    no_staging_left(&node.data("host-a").join("git"));

    // What the describe sentence advises: complete the repository, request
    // again.
    ok(git_cmd(&proj).arg(format!("--git-dir={}", proj.display())).args(["fetch", "--quiet", "--unshallow", &src]));
    let id = submit(&node, &a, &proj);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);
    assert_eq!(for_each_ref(&mirror), for_each_ref(&proj));
}

/// Points 6 and 7: fsck refusals name their message id; failure details
/// lead with git's and the remote's words; a refused push says write.
#[test]
fn fsck_refusals_name_the_check_details_lead_with_the_error_and_pushes_say_write() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("git_limits_fsck");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);

    // A commit with an impossible time zone, written as it is.
    let bad = Forge::init(a.git_root.join("badtz.git"));
    let tree = git_stdin(&bad.dir, &[&bad.gd(), "mktree"], b"");
    let body = format!(
        "tree {tree}\nauthor A <a@example.test> 1700000000 +99999\ncommitter A <a@example.test> 1700000000 +0000\n\nbad zone\n"
    );
    let c = git_stdin(
        &bad.dir,
        &[&bad.gd(), "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
        body.as_bytes(),
    );
    bad.set("refs/heads/master", &c);
    let id = submit(&node, &a, &bad.dir);
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_FSCK");
    assert!(detail.starts_with("git's object checks refused the repository (fsck badTimezone)"), "{detail}");
    assert!(detail.contains(&format!("error: object {c}: badTimezone")), "git's own line is kept: {detail}");
    assert!(!detail.contains("protocol.allow") && !detail.contains("--git-dir"), "no command line: {detail}");
    assert!(!node.data("host-a").join("git/badtz.git").exists(), "nothing stored");

    // A repository gone by the time the node pulls: the gate's answer
    // comes first.
    let gone = one_commit(a.git_root.join("gone.git"));
    let id = submit(&node, &a, &gone.dir);
    fs::remove_dir_all(&gone.dir).unwrap();
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_NOT_FOUND");
    let at = detail.find("no such repository").unwrap_or_else(|| panic!("the remote's error is kept: {detail}"));
    assert!(at < 100, "the remote's error leads the detail: {detail}");
    assert!(!detail.contains("protocol.allow") && !detail.contains("core.sshCommand"), "no command line: {detail}");

    // Point 7: the client's key may push its own queue only; a refused push
    // says write access was denied, a refused fetch still says read.
    let key = a.base.join("state/ssh/id_ed25519");
    let kh = td.join("kh");
    node.sshd.write_known_hosts(&kh);
    let scratch = td.join("scratch");
    git(&td.path, &["init", "--quiet", scratch.to_str().unwrap()]);
    ferry_tests::fleet::commit_and_push_local(&scratch);
    for repo in ["gitosis-admin.git", "queue/host-b.git", "nosuch.git"] {
        let out = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", ssh_command(&key, &kh)).args([
            "push",
            &node.url(repo),
            "HEAD:master",
        ]));
        assert!(!out.status.success(), "push to {repo} accepted");
        let t = text(&out);
        assert!(t.contains("Repository write access denied") && !t.contains("read access"), "push {repo}: {t}");
        let out =
            run(git_cmd(&scratch).env("GIT_SSH_COMMAND", ssh_command(&key, &kh)).args(["ls-remote", &node.url(repo)]));
        assert!(text(&out).contains("Repository read access denied"), "fetch {repo}: {}", text(&out));
    }
}

/// The guard (the node's `core.sshCommand`) with real git in both protocol
/// versions: it reads the advertisement inside the fetch's own connection,
/// records it, and stops a flood before git asks for objects. The "ssh"
/// here runs `git-upload-pack` locally with git's environment (so
/// `GIT_PROTOCOL` selects the version, as sshd passes it with `AcceptEnv`).
#[test]
fn the_ssh_guard_checks_v0_and_v2_advertisements_inside_the_fetch() {
    if !require_all(&["git"]) {
        return;
    }
    let td = TestDir::new("git_limits_guard");
    let fake_ssh = td.join("fake-ssh");
    fs::write(&fake_ssh, "#!/bin/sh\nfor a; do last=$a; done\nexec sh -c \"$last\"\n").unwrap();
    fs::set_permissions(&fake_ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let src = one_commit(td.join("src.git"));
    let head = src.g(&["rev-parse", "refs/heads/master"]);
    let tx: String = (0..4).map(|i| format!("create refs/heads/b{i} {head}\ncreate refs/tags/t{i} {head}\n")).collect();
    git_stdin(&src.dir, &[&src.gd(), "update-ref", "--stdin"], tx.as_bytes());
    // 9 branches and tags (and HEAD, which does not count).
    for version in ["0", "2"] {
        for (max, ok_expected) in [(9, true), (8, false)] {
            let dst = Forge::init(td.join(format!("dst-v{version}-{max}.git")));
            let record = td.join(format!("record-v{version}-{max}"));
            let guard = format!(
                "'{}' git-ssh-guard --max-refs {max} --record '{}' -- '{}'",
                ferry_tests::ferry_bin("ferry-node").display(),
                record.display(),
                fake_ssh.display()
            );
            let out = run(git_cmd(&dst.dir)
                .arg(format!("--git-dir={}", dst.dir.display()))
                .args(["-c", &format!("protocol.version={version}"), "-c", "ssh.variant=ssh"])
                .args(["-c", &format!("core.sshCommand={guard}"), "-c", "fetch.unpackLimit=1"])
                .args(["fetch", "--no-tags", &format!("ssh://node{}", src.dir.display())])
                .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]));
            let rec = fs::read_to_string(&record).unwrap_or_default();
            let what = format!("protocol v{version}, max {max}: {}\nrecord: {rec}", text(&out));
            if ok_expected {
                assert!(out.status.success(), "{what}");
                assert_eq!(for_each_ref(&dst.dir), for_each_ref(&src.dir), "{what}");
                assert_eq!(rec.lines().filter(|l| l.starts_with("ref ")).count(), 9, "{what}");
                assert!(rec.contains(&format!("ref {head} refs/tags/t3\n")) && rec.ends_with("end\n"), "{what}");
            } else {
                assert!(!out.status.success(), "{what}");
                assert!(rec.contains("refused E_FETCH_LIMIT the repository advertises more than 8"), "{what}");
                assert!(text(&out).contains("more than 8 branches and tags"), "git shows why: {what}");
                assert_eq!(for_each_ref(&dst.dir), "", "{what}");
                let packs = fs::read_dir(dst.dir.join("objects/pack")).unwrap().count();
                assert_eq!(packs, 0, "nothing was fetched: {what}");
            }
        }
    }
}

/// The same limits and checks for a client enrolled with `git-scheme =
/// git` (a git daemon, no ssh, so no guard): the refs are listed with `git
/// ls-remote` before the fetch.
#[test]
fn git_daemon_clients_are_listed_first_with_the_same_limits() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("git_limits_daemon");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[limits]\nmax_refs = 20\n");
    let mut a = Client::new(&td, "host-a", &[&node]);
    // A git daemon on the client's own address, serving its git root
    // (repositories by their full path, as git-roots are enrolled).
    let port = ferry_tests::free_port(a.sshd.addr());
    let toml = fs::read_to_string(&a.config)
        .unwrap()
        .replace("[export]\n", &format!("[export]\ngit_scheme = \"git\"\ngit_port = {port}\n"));
    fs::write(&a.config, toml).unwrap();
    a.gitosis_section.push_str(&format!("git-scheme = git\ngit-port = {port}\n"));
    node.enroll(&[&a]);
    let daemon_dir = td.join("git-daemon");
    fs::create_dir_all(&daemon_dir).unwrap();
    let mut cmd = git_cmd(&daemon_dir);
    cmd.args(["daemon", "--reuseaddr", "--export-all", "--informative-errors", "--verbose"])
        .arg(format!("--listen={}", a.sshd.addr()))
        .arg(format!("--port={port}"))
        .arg(&a.git_root);
    let mut daemon = ferry_tests::Daemon::spawn(
        "git daemon",
        cmd,
        &daemon_dir.join("git-daemon.log"),
        ferry_tests::Signal::KILL,
        Duration::ZERO,
    );
    daemon.wait_for_log("Ready to rumble", ferry_tests::READY_TIMEOUT);
    let mirror = |name: &str| node.data("host-a").join(format!("git/{name}.git"));
    // Connections the daemon served (each logs its upload-pack request).
    let served =
        || fs::read_to_string(daemon_dir.join("git-daemon.log")).unwrap().matches("Request upload-pack").count();

    // Mirrored (a listing, then the fetch), then asked again unchanged:
    // the listing alone, and nothing below the mirror is touched.
    let repo = one_commit(a.git_root.join("proj.git"));
    let id = submit(&node, &a, &repo.dir);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);
    assert_eq!(for_each_ref(&mirror("proj")), for_each_ref(&repo.dir));
    assert_eq!(served(), 2, "a listing and a fetch");
    assert!(
        events(&node).iter().any(|e| e["request"] == id.as_str() && e["detail"].as_str().unwrap().contains("git://")),
        "pulled over git://"
    );
    let before = stat_tree(&mirror("proj"));
    let id = submit(&node, &a, &repo.dir);
    scan(&node, "host-a");
    assert_done(&node, "host-a", &id);
    let after = stat_tree(&mirror("proj"));
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(s) && !p.ends_with("ferry-fetched"))
        .map(|(p, _)| p)
        .collect();
    assert!(changed.is_empty(), "an unchanged repository costs no fetch: {changed:?}");
    assert_eq!(served(), 3, "the unchanged repository was listed, not fetched");

    // 25 more branches: refused before the fetch, nothing written.
    let head = repo.g(&["rev-parse", "refs/heads/master"]);
    let tx: String = (0..25).map(|i| format!("create refs/heads/b{i:02} {head}\n")).collect();
    git_stdin(&repo.dir, &[&repo.gd(), "update-ref", "--stdin"], tx.as_bytes());
    let before = stat_tree(&mirror("proj"));
    let id = submit(&node, &a, &repo.dir);
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_LIMIT");
    assert!(detail.contains("more than 20 branches and tags") && detail.contains("nothing was fetched"), "{detail}");
    assert_eq!(stat_tree(&mirror("proj")), before, "nothing written below the mirror");
    assert_eq!(served(), 4, "listed and refused: no fetch connection at all");

    // A shallow repository: E_FETCH_INCOMPLETE, no mirror.
    let work = a.base.join("work");
    git(&a.base, &["init", "--quiet", work.to_str().unwrap()]);
    for n in 0..3 {
        fs::write(work.join("f"), format!("{n}\n")).unwrap();
        git(&work, &["add", "f"]);
        git(&work, &["commit", "--quiet", "-m", &format!("c{n}")]);
    }
    let shallow = a.git_root.join("shallow.git");
    let src = format!("file://{}", work.display());
    git(&a.base, &["clone", "--quiet", "--bare", "--depth", "1", &src, shallow.to_str().unwrap()]);
    let id = submit(&node, &a, &shallow);
    scan(&node, "host-a");
    let detail = assert_failed(&node, "host-a", &id, "E_FETCH_INCOMPLETE");
    assert!(detail.contains("shallow"), "{detail}");
    assert!(!mirror("shallow").exists());
    no_staging_left(&node.data("host-a").join("git"));
}
