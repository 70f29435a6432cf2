//! Backups and restores that tell the truth (issue 16, points 8-10): an
//! unreadable file is a client-side reason naming the path and the account
//! (or, when asked, a warning listing what was left out); symlinks come back
//! as they were, whatever they point to; `restore --at` gives a repository's
//! refs as they were at that time, and says so when the time is before the
//! first backup, for every kind of source.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{Smtp, TestDir, ferry_bin, for_each_ref, git, git_cmd, is_root, list_tree, require};

use crate::hostile::kit;

/// The paths below `root`, relative, sorted.
fn names(root: &Path) -> Vec<String> {
    list_tree(root).iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `--at` for a node time.
fn at(t: i64) -> String {
    ferry_request::Stamp::from_unix(t).to_string()
}

/// The account `ferry` runs as in these tests. The product runs the client
/// as an unprivileged account (`ferry`); tests run as root, and root reads
/// every file, so the client is handed to `nobody`: its state and export
/// directories change owner and `ferry` runs through `setpriv`. Not as
/// root, the tests' own account is already unprivileged.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = ok(Command::new("id").args([flag, user]));
    out.trim().parse().unwrap()
}

fn unprivileged() -> Option<Account> {
    if !is_root() {
        let name = ferry_tests::current_user();
        return Some(Account { uid: id_of("-u", &name), gid: id_of("-g", &name), name });
    }
    if !require("setpriv") {
        return None;
    }
    Some(Account { name: "nobody".into(), uid: id_of("-u", "nobody"), gid: id_of("-g", "nobody") })
}

impl Account {
    /// Gives `c`'s state and export directories to this account.
    fn take(&self, c: &Client) {
        fs::create_dir_all(c.base.join("export")).unwrap();
        if is_root() {
            for d in ["state", "export"] {
                ok(Command::new("chown").arg("-R").arg(format!("{}:{}", self.uid, self.gid)).arg(c.base.join(d)));
            }
        }
    }

    /// `ferry --config <c> <args>` as this account.
    fn ferry(&self, c: &Client, args: &[&str]) -> Output {
        let mut cmd = if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .args(["--clear-groups", "--"])
                .arg(ferry_bin("ferry"));
            cmd
        } else {
            Command::new(ferry_bin("ferry"))
        };
        // The account's own HOME, as cron gives it (root's is unreadable).
        run(cmd.env("HOME", c.base.join("state")).arg("--config").arg(&c.config).args(args))
    }

    /// `name (uid N)`, as Ferry names the account.
    fn shown(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn wait_done(node: &Node, client: &str, n: usize) {
    eventually("the node to finish the requests", || {
        node.pool_ids(client, "F").len() + node.pool_ids(client, "E").len() >= n
    });
    assert!(node.pool_ids(client, "E").is_empty(), "requests failed: {}", node.events());
}

#[test]
fn an_unreadable_file_is_a_client_side_reason_and_skip_leaves_it_out() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let Some(account) = unprivileged() else { return };
    let td = TestDir::new("faithful_unreadable");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    fs::write(tree.join("ok.txt"), "readable\n").unwrap();
    fs::create_dir(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/also.txt"), "also readable\n").unwrap();
    fs::write(tree.join("sub/secret"), "secret\n").unwrap();
    fs::set_permissions(tree.join("sub/secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::create_dir(tree.join("locked")).unwrap();
    fs::write(tree.join("locked/inside"), "inside\n").unwrap();
    fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{t}\"\n\n\
             [[source]]\nname = \"site-skip\"\nmodule = \"fs\"\npath = \"{t}\"\nunreadable = \"skip\"\n\n\
             [mail]\nto = [\"admins@example.test\"]\nfrom = \"ferry@host-a.example.test\"\nsmtp = \"{}\"\n\
             digest_delay = \"0s\"\nhost_label = \"host-a\"\n",
            smtp.url(),
            t = tree.display()
        ),
    );
    node.enroll(&[&a]);
    account.take(&a);

    // Default: the request fails on the client, with its own reason, the
    // absolute path of what could not be read, and the account.
    let out = account.ferry(&a, &["backup", "site", "--send"]);
    assert_eq!(out.status.code(), Some(1), "the module failed: {}", text(&out));
    let t = text(&out);
    let locked = tree.join("locked").display().to_string();
    for want in ["E_SOURCE_UNREADABLE", &format!("{locked} cannot be read by account {}", account.shown())] {
        assert!(t.contains(want), "{want:?} in: {t}");
    }
    assert!(!t.contains("E_STORE"), "not a storage failure: {t}");
    let status = json(&account.ferry(&a, &["--json", "status"]));
    let why = status[0]["failed_recent"][0][1].as_str().unwrap();
    assert!(why.contains("E_SOURCE_UNREADABLE") && why.contains(&locked) && why.contains(&account.shown()), "{why}");
    let found = node.ferry_node_json(&["find", "--client", "host-a", "--source", "site"]);
    assert_eq!(found.as_array().unwrap().len(), 0, "nothing reached the node: {found}");
    let artifacts = names(&a.base.join("export/site"));
    assert!(!artifacts.iter().any(|n| n.ends_with(".tar.zst")), "no artifact left: {artifacts:?}");

    // skip: the archive is made without them, and they are reported.
    let out = account.ferry(&a, &["backup", "site-skip", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let secret = tree.join("sub/secret").display().to_string();
    let warning = format!(
        "source site-skip: 2 unreadable entries left out of the archive (account {} may not read them): {locked}, {secret}",
        account.shown()
    );
    assert!(t.contains(&warning), "{warning:?} in: {t}");
    let status = json(&account.ferry(&a, &["--json", "status"]));
    let warned = &status[0]["warned_recent"][0];
    assert_eq!(warned[1].as_str().unwrap(), warning, "{status}");
    let human = text(&account.ferry(&a, &["status"]));
    assert!(human.contains(&format!("W {}: {warning}", warned[0].as_str().unwrap())), "{human}");
    let mails = smtp.wait_for(2, std::time::Duration::from_secs(30));
    let mail = mails.iter().find(|m| m.body.contains("backed up incompletely")).expect("a mail about the warning");
    // The warning is quoted as untrusted text, wrapped in `| ` lines.
    let quoted: String =
        mail.body.lines().filter_map(|l| l.trim_start().strip_prefix("| ").map(|q| q.to_owned())).collect();
    assert_eq!(quoted, warning, "{}", mail.body);

    wait_done(&node, "host-a", 1);
    let to = td.join("restored");
    ok(node.cmd().args(["restore", "host-a", "site-skip", "--to", to.to_str().unwrap()]));
    assert_eq!(names(&to), ["ok.txt", "sub", "sub/also.txt"], "what could be read, and only that");
    assert_eq!(fs::read(to.join("sub/also.txt")).unwrap(), b"also readable\n");
    fs::set_permissions(tree.join("sub/secret"), fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn symlinks_come_back_as_they_were() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("faithful_symlinks");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    fs::create_dir(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/file"), "file\n").unwrap();
    let links = [
        ("dangling", "../nonexistent"),
        ("sub/dangling-deep", "../../../nonexistent/x"),
        ("up", "../.."),
        ("abs", "/etc/hostname"),
        ("abs-missing", "/nonexistent"),
        ("in-tree", "sub/file"),
    ];
    for (l, target) in links {
        symlink(target, tree.join(l)).unwrap();
    }
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n", tree.display()),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "site", "--send"]));
    wait_done(&node, "host-a", 1);

    let to = td.join("restored");
    ok(node.cmd().args(["restore", "host-a", "site", "--to", to.to_str().unwrap()]));
    let cmp = Compare { mode: true, owner: true, mtime: true, ..Default::default() };
    let d = diff(&manifest(&tree).unwrap(), &manifest(&to).unwrap(), &cmp);
    assert!(d.is_empty(), "restored tree differs: {d:#?}");
    for (l, target) in links {
        assert_eq!(fs::read_link(to.join(l)).unwrap(), Path::new(target), "{l}");
    }
    // The strict mode is still there, and refuses; the old flag is harmless.
    let strict = td.join("strict");
    let out =
        run(node.cmd().args(["restore", "host-a", "site", "--symlinks", "in-tree", "--to", strict.to_str().unwrap()]));
    assert!(!out.status.success() && text(&out).contains("E_ARCHIVE_LINK"), "{}", text(&out));
    assert!(!strict.exists());
    let old = td.join("old-flag");
    ok(node.cmd().args(["restore", "host-a", "site", "--allow-absolute-symlinks", "--to", old.to_str().unwrap()]));
    assert_eq!(fs::read_link(old.join("dangling")).unwrap(), Path::new("../nonexistent"));
}

#[test]
fn git_restore_at_gives_the_refs_of_that_time() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("faithful_git_at");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    let mirror = node.data("host-a").join("git/project.git");
    let before_first = now();

    // Phase 1: a branch and an annotated tag.
    commit_and_push(&work, "README", "one\n");
    git(&work, &["tag", "-a", "v1", "-m", "release 1"]);
    ok(git_cmd(&work).args(["push", "--quiet", "origin", "v1"]));
    eventually("the mirror to hold phase 1", || {
        mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare)
    });
    let s1 = for_each_ref(&bare);
    let t1 = now();
    eventually("the clock to pass phase 1", || now() > t1);

    // Phase 2: history rewritten (force-push of unrelated history), the tag
    // deleted, a new branch.
    git(&work, &["checkout", "--quiet", "--orphan", "rewritten"]);
    git(&work, &["rm", "--quiet", "-r", "--cached", "."]);
    fs::write(work.join("OTHER"), "rewritten\n").unwrap();
    git(&work, &["add", "OTHER"]);
    git(&work, &["commit", "--quiet", "-m", "rewritten"]);
    let out = run(git_cmd(&work).args(["push", "--quiet", "--force", "origin", "rewritten:master", ":refs/tags/v1"]));
    assert!(out.status.success(), "{}", text(&out));
    ok(git_cmd(&work).args(["push", "--quiet", "origin", "rewritten:feature"]));
    eventually("the mirror to hold phase 2", || for_each_ref(&mirror) == for_each_ref(&bare));
    let s2 = for_each_ref(&bare);
    assert_ne!(s1, s2);
    let t2 = now();

    // --at each time gives the refs of that time; without --at, the newest.
    for (when, want, name) in [(t1, &s1, "at-t1"), (t2, &s2, "at-t2")] {
        let to = td.join(name);
        let out =
            run(node.cmd().args(["restore", "host-a", "project", "--at", &at(when), "--to", to.to_str().unwrap()]));
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(&for_each_ref(&to), want, "{name}: the refs as they were");
        ok(git_cmd(&to).args(["fsck", "--strict", "--no-dangling"]));
    }
    // The restore at t1 holds the old history, and not the rewritten one.
    let at_t1 = td.join("at-t1");
    assert_eq!(git(&at_t1, &["show", "master:README"]), "one");
    assert!(!run(git_cmd(&at_t1).args(["cat-file", "-e", "feature"])).status.success());
    let now_restore = td.join("current");
    ok(node.cmd().args(["restore", "host-a", "project", "--to", now_restore.to_str().unwrap()]));
    assert_eq!(for_each_ref(&now_restore), s2);

    // list says that history is kept, and since when.
    let l = node.ferry_node_json(&["list", "host-a"]);
    let h = &l[0]["git"][0]["history"];
    assert_eq!(h["kept_refs"], 2, "the old master and the deleted tag: {h}");
    assert!(h["rewrites"].as_u64().unwrap() >= 1, "{h}");
    let first = h["first_backup"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_second();
    assert!((before_first..=t1).contains(&first), "{h}");
    let human = ok(node.cmd().args(["list", "host-a"]));
    assert!(human.contains("history kept since") && human.contains("rewrite"), "{human}");

    // Before the first backup: said so, with the first backup's time.
    let to = td.join("too-early");
    let out = run(node.cmd().args([
        "restore",
        "host-a",
        "project",
        "--at",
        &at(before_first - 1),
        "--to",
        to.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("no backup of git repository \"project\"") && t.contains("its first backup was at"), "{t}");
    assert!(t.contains(h["first_backup"].as_str().unwrap()), "{t}");
    assert!(!to.exists());
}

#[test]
fn at_before_the_first_backup_names_the_source_whatever_its_kind() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("faithful_too_early");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    fs::write(tree.join("f"), "f\n").unwrap();
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"10\"]\n",
            tree.display()
        ),
    );
    node.enroll(&[&a]);
    let before = now();
    eventually("the clock to pass the start", || now() > before);
    ok(a.cmd().args(["backup", "site", "--send"]));
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 2);
    let found = node.ferry_node_json(&["find", "--client", "host-a"]);
    let received = |s: &str| {
        let r = found.as_array().unwrap().iter().find(|a| a["source"] == s).unwrap()["received"].as_str().unwrap();
        r[..16].parse::<ferry_request::Stamp>().unwrap().to_unix()
    };
    for (source, kind, args) in [("site", "fs source", vec!["--to", "x"]), ("numbers", "pipe source", vec!["--stdout"])]
    {
        let first = jiff::Timestamp::from_second(received(source)).unwrap().to_string();
        let out =
            run(node.cmd().current_dir(&td.path).args(["restore", "host-a", source, "--at", &at(before)]).args(&args));
        assert_eq!(out.status.code(), Some(2), "{source}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(&format!("no backup of {kind} \"{source}\" at or before")), "{source}: {t}");
        assert!(t.contains(&format!("the oldest one kept was received at {first}")), "{source}: {t}");
        assert!(out.stdout.is_empty(), "{source}: nothing restored");
        // At the time it was received, it is there.
        let out = run(node
            .cmd()
            .current_dir(&td.path)
            .args(["restore", "host-a", source, "--at", &at(received(source))])
            .args(&args));
        assert!(out.status.success(), "{source}: {}", text(&out));
    }
    assert_eq!(names(&td.join("x")), ["f"]);
    // A name that is neither says what is stored, of every kind.
    let out = run(node.cmd().args(["restore", "host-a", "nothing", "--to", td.join("n").to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("no source or repository \"nothing\"") && t.contains("numbers (pipe)") && t.contains("site (fs)"),
        "{t}"
    );
}
