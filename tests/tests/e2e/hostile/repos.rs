//! What the client's repositories hold (MR) and what its git server
//! answers (GU and RE at fetch time): repositories forged object by object
//! in host-a's exported git root, and a client sshd that runs a hostile
//! script instead of `ferry gate`. A hostile repository is refused with its
//! reason and nothing of it is kept, or stored as it is and inert: no
//! hooks, no submodules, no configuration of the node taken from it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Node, ok, run, text};
use ferry_tests::{for_each_ref, hash_tree};

use super::kit::{
    BHolds, Ep, Fleet, Forge, Plan, assert_done, assert_failed, assert_journal_clean, assert_printable, canary, events,
    gd, git_stdin, hostile_gate, mirrored_repo, no_staging_left, noise, now_stamp, restore_gate, rq, scan, why,
};

/// Node `backup1` with `max_refs = 100`, B with a mirrored secret, and
/// with `limited` also host-q with a quota of 1M, at most 10 objects per
/// fetch and jobs of 8 s.
fn fleet(test: &str, limited: bool) -> Option<Fleet> {
    Fleet::start(
        test,
        Plan {
            node: "[limits]\nmax_refs = 100\n",
            b: BHolds::Mirror,
            limited: limited.then_some("quota = 1M\nmax-objects = 10\njob-timeout = 8s\n"),
            ..Plan::default()
        },
    )
}

/// host-a's mirror of its repository `name` on the node.
fn mirror(node: &Node, name: &str) -> PathBuf {
    node.data("host-a").join(format!("git/{name}.git"))
}

/// Checks 2 and 3, and that a real fetch still works: A's ordinary
/// repository mirrors after all of this.
fn finish(f: &Fleet, what: &str) {
    mirrored_repo(&f.node, &f.a, "ordinary", "f", "1\n");
    f.finish(what);
}

/// (id, path under host-a's git root, expected reason or None: stored
/// as it is).
type RepoCase<'a> = (&'a str, &'a str, Option<&'a str>);

/// Request each repository in one push, scan once, check each case.
fn fetched(f: &Fleet, cases: &[RepoCase]) {
    let (node, q) = (&f.node, &f.q);
    let e = Ep::of(&f.a);
    let root = f.a.git_root.clone();
    let mirror = |name: &str| mirror(node, name);
    q.send(&cases.iter().map(|(id, path, _)| rq(id, e.repo(path))).collect::<Vec<_>>());

    let t = Instant::now();
    scan(node, "host-a");
    eprintln!("scan of {} hostile repositories: {:?}", cases.len(), t.elapsed());
    for (id, path, want) in cases {
        let name = path.trim_end_matches(".git");
        match want {
            None => {
                assert_done(node, "host-a", id);
                let m = mirror(name);
                assert!(m.join("HEAD").is_file(), "{id}: stored");
                assert_eq!(for_each_ref(&m), for_each_ref(&root.join(path)), "{id}: stored as it is");
                // Nothing of the client's tree became node configuration.
                let hooks: Vec<_> = fs::read_dir(m.join("hooks")).into_iter().flatten().flatten().collect();
                assert!(hooks.is_empty(), "{id}: hooks in the mirror: {hooks:?}");
                assert!(!m.join("modules").exists(), "{id}: submodules were cloned");
            }
            Some(code) => {
                assert_failed(node, "host-a", id, code);
                if *code != "E_REQ_CONFLICT" {
                    assert!(!mirror(name).exists(), "{id}: nothing stored");
                }
            }
        }
    }
    no_staging_left(&node.data("host-a").join("git"));
    f.guard.check("hostile repositories");
}

fn gitmodules(body: &str) -> String {
    format!("[submodule \"x\"]\n\tpath = x\n{body}")
}

/// A repository whose `.gitmodules` is `modules`, with a gitlink `x` and
/// the `extra` tree entries.
fn sub(root: &Path, name: &str, modules: String, extra: &[(&str, &str, &str)]) -> Forge {
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
}

/// MR-01: submodules whose URL, update command, name or path would run
/// something or reach another client.
#[test]
fn mr01_submodules() {
    let Some(f) = fleet("mr01_submodules", false) else {
        return;
    };
    let (root, b) = (&f.a.git_root, &f.b);
    let sub = |name: &str, modules: String, extra: &[(&str, &str, &str)]| sub(root, name, modules, extra);

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
    fetched(
        &f,
        &[
            ("mr01-ext", "mr01-ext.git", None),
            ("mr01-proxy", "mr01-proxy.git", None),
            ("mr01-file", "mr01-file.git", None),
            ("mr01-other-client", "mr01-other-client.git", None),
            ("mr01-dash-url", "mr01-dash-url.git", Some("E_FETCH_FSCK")),
            ("mr01-update", "mr01-update.git", Some("E_FETCH_FSCK")),
            ("mr01-name", "mr01-name.git", Some("E_FETCH_FSCK")),
            ("mr01-dash-path", "mr01-dash-path.git", Some("E_FETCH_FSCK")),
        ],
    );
    // The gitlink is a plain commit id; no submodule was fetched.
    let tree = gd(&mirror(&f.node, "mr01-ext"), &["ls-tree", "HEAD"]);
    assert!(tree.contains("160000 commit 1234567890123456789012345678901234567890\tx"), "{tree}");
    finish(&f, "mr01");
}

/// MR-02: hooks and attributes in the tree, `.git` look-alikes, the
/// CVE-2025-48384 trailing-CR path.
#[test]
fn mr02_hooks_attributes_and_dotgit_lookalikes() {
    let Some(f) = fleet("mr02_hooks_dotgit", false) else {
        return;
    };
    let root = &f.a.git_root;

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
    fetched(
        &f,
        &[
            ("mr02-hooks", "mr02-hooks.git", None),
            ("mr02-dotgit", "mr02-dotgit.git", Some("E_FETCH_FSCK")),
            ("mr02-dotgit-case", "mr02-dotgit-case.git", Some("E_FETCH_FSCK")),
            ("mr02-dotgit-ntfs", "mr02-dotgit-ntfs.git", Some("E_FETCH_FSCK")),
            ("mr02-dotgit-hfs", "mr02-dotgit-hfs.git", Some("E_FETCH_FSCK")),
            ("mr02-gitmodules-symlink", "mr02-gitmodules-symlink.git", Some("E_FETCH_FSCK")),
            ("mr02-cr-path", "mr02-cr-path.git", None),
        ],
    );
    finish(&f, "mr02");
}

/// MR-05: a git bomb, 10 levels of 10 entries (10^10 paths, 12 objects),
/// is stored, and walkers stay bounded on it.
#[test]
fn mr05_git_bomb() {
    let Some(f) = fleet("mr05_bomb", false) else {
        return;
    };
    let (node, root) = (&f.node, &f.a.git_root);

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
    fetched(&f, &[("mr05-bomb", "mr05-bomb.git", None)]);
    // Walkers stay bounded on the bomb.

    let t = Instant::now();
    let out = run(node.cmd().args(["list", "host-a"]));
    assert!(out.status.success() && t.elapsed() < Duration::from_secs(20), "list: {}", text(&out));
    finish(&f, "mr05");
}

/// Two client paths mapping to one storage name; things that are no
/// repository (missing, a plain directory, a link out of the root, a link
/// to B's repository).
#[test]
fn mr_storage_name_collisions_and_non_repositories() {
    let Some(f) = fleet("mr_collisions", false) else {
        return;
    };
    let (node, root) = (&f.node, &f.a.git_root);
    let b_bare = f.b_bare.as_ref().unwrap();
    let mirror = |name: &str| mirror(node, name);

    Forge::simple(root.join("coll"), &[("a", b"first\n")]);
    Forge::simple(root.join("coll.git"), &[("a", b"second\n")]);
    fs::create_dir_all(root.join("plain.git")).unwrap();
    fs::write(root.join("plain.git/HEAD"), "ref: refs/heads/master\n").unwrap();
    symlink("/etc", root.join("etc-link.git")).unwrap();
    symlink(b_bare, root.join("b-link.git")).unwrap();
    fetched(
        &f,
        &[
            ("mr-coll-1", "coll", None),
            ("mr-coll-2", "coll.git", Some("E_REQ_CONFLICT")),
            ("mr-missing", "missing.git", Some("E_FETCH_NOT_FOUND")),
            ("mr-not-a-repo", "plain.git", Some("E_FETCH_NOT_FOUND")),
            ("mr-link-out", "etc-link.git", Some("E_FETCH_NOT_FOUND")),
        ],
    );

    // The colliding second repository did not touch the first mirror.
    assert_eq!(for_each_ref(&mirror("coll")), for_each_ref(&root.join("coll")));
    assert!(fs::read_to_string(mirror("coll").join("ferry-origin")).unwrap().trim().ends_with("/coll"));
    assert!(!mirror("b-link").exists());
    no_staging_left(&node.data("host-a").join("git"));
    finish(&f, "mr collisions");
}

/// RE (inodes): a million branches cost the client nothing but are a
/// file and a reflog each on the node; 150 over a limit of 100 here.
#[test]
fn re_ref_flood() {
    let Some(f) = fleet("re_ref_flood", false) else {
        return;
    };
    let root = &f.a.git_root;

    {
        let f = Forge::simple(root.join("re-refs.git"), &[("a", b"a\n")]);
        let head = f.g(&["rev-parse", "refs/heads/master"]);
        let tx: String = (0..150).map(|i| format!("create refs/heads/b{i:04} {head}\n")).collect();
        let gdir = format!("--git-dir={}", f.dir.display());
        git_stdin(&f.dir, &[&gdir, "update-ref", "--stdin"], tx.as_bytes());
    }
    fetched(&f, &[("re-refs-flood", "re-refs.git", Some("E_FETCH_LIMIT"))]);
    finish(&f, "re ref flood");
}

/// MR-09: the client rewrites and deletes its history (ransomware); the
/// node keeps every commit it stored, under refs/backup/<run>/.
#[test]
fn mr09_rewritten_history_is_kept() {
    let Some(f) = fleet("mr09_history", false) else {
        return;
    };
    let (node, q, root) = (&f.node, &f.q, &f.a.git_root);
    let e = Ep::of(&f.a);
    let mirror = |name: &str| mirror(node, name);

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
    scan(node, "host-a");
    assert_done(node, "host-a", "mr09-first");
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
    scan(node, "host-a");
    assert_done(node, "host-a", "mr09-rewritten");
    assert_eq!(gd(&m, &["rev-parse", "refs/heads/master"]), empty, "the mirror follows the client");
    let backup = gd(&m, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/backup/"]);
    for (oid, suffix) in [(&c2, "/heads/master"), (&feature, "/heads/feature"), (&c1, "/tags/v1")] {
        assert!(backup.lines().any(|l| l.starts_with(oid.as_str()) && l.ends_with(suffix)), "{suffix} kept: {backup}");
    }
    assert_eq!(backup.lines().count(), 5, "every rewritten or deleted ref is kept: {backup}");
    for c in [&c1, &c2, &feature] {
        gd(&m, &["cat-file", "-e", c]);
    }
    let rewritten: Vec<_> = events(node)
        .into_iter()
        .filter(|e| e["event"] == "history_rewritten" && e["request"] == "mr09-rewritten")
        .collect();
    assert_eq!(rewritten.len(), 1, "one history_rewritten alert: {rewritten:?}");
    let detail = rewritten[0]["detail"].as_str().unwrap();
    assert!(detail.contains("refs/backup/"), "{detail}");
    assert_journal_clean(node);
    let out = run(node.cmd().args(["list"]));
    assert_printable("ferry-node list", &out.stdout);

    finish(&f, "mr09");
}

/// GU-16: the client's server writes terminal escapes and forged log
/// lines; RE: it answers garbage. The node fails the job, escapes.
#[test]
fn gu16_remote_escapes_and_garbage() {
    let Some(f) = fleet("gu16_remote_text", false) else {
        return;
    };
    let (node, q, a) = (&f.node, &f.q, &f.a);
    let e = Ep::of(a);

    let old = hostile_gate(
        node,
        a,
        "printf '\\033]52;c;ZXZpbA==\\007\\033[2J\\033[1;1H' >&2\nprintf 'x\\n2026-01-01T00:00:00Z INFO client=host-b backup ok\\r\\n' >&2\nprintf '\\302\\233\\342\\200\\256deliaf\\n' >&2\nexit 1",
    );
    q.send(&[rq("gu16-escapes", e.repo("mr05-bomb.git"))]);
    scan(node, "host-a");
    assert_failed(node, "host-a", "gu16-escapes", "E_FETCH_FAILED");
    fs::write(a.base.join("hostile-gate.sh"), "#!/bin/sh\nprintf '\\033[2J0000garbage'\nhead -c 200000 /dev/urandom\n")
        .unwrap();
    q.send(&[rq("gu-garbage", e.repo("mr05-bomb.git"))]);
    scan(node, "host-a");
    assert_failed(node, "host-a", "gu-garbage", "E_FETCH_FAILED");
    restore_gate(node, a, old);
    assert_journal_clean(node);
    let ev = events(node).into_iter().find(|e| e["request"] == "gu16-escapes").unwrap();
    assert!(ev["detail"].as_str().unwrap().contains("52;c;"), "the remote's text is kept, escaped: {ev}");

    finish(&f, "gu16");
}

/// The limited client's endpoint, git root and mirror of `name`.
fn limited(f: &Fleet) -> (Ep, PathBuf, impl Fn(&str) -> PathBuf + '_) {
    let (lim, _) = f.limited();
    (Ep::of(lim), lim.git_root.clone(), |name: &str| f.node.data("host-q").join(format!("git/{name}.git")))
}

/// [`finish`], and the limited client's valid request still ends in F.
fn finish_limited(f: &Fleet, what: &str) {
    super::kit::assert_alive(&f.node, f.limited().1, "alive-q");
    finish(f, what);
}

/// RE-02 on the limited client: the quota (1M) is checked while the pack
/// arrives, for a first fetch, a growing mirror and a file; partial data
/// is deleted.
#[test]
fn re02_quota_while_the_data_arrives() {
    let Some(f) = fleet("re02_quota", true) else {
        return;
    };
    let node = &f.node;
    let (lim, ql) = f.limited();
    let (ql_ep, lroot, lmirror) = limited(&f);

    Forge::simple(lroot.join("big.git"), &[("big.bin", &noise(2 << 20, 1))]);
    Forge::simple(lroot.join("small.git"), &[("a", b"small\n")]);
    ql.send(&[rq("re02-quota-first", ql_ep.repo("big.git")), rq("re02-small", ql_ep.repo("small.git"))]);
    scan(node, "host-q");
    assert_failed(node, "host-q", "re02-quota-first", "E_QUOTA");
    assert!(!lmirror("big").exists(), "nothing of the over-quota fetch is kept");
    assert_done(node, "host-q", "re02-small");

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
    scan(node, "host-q");
    assert_failed(node, "host-q", "re02-quota-grow", "E_QUOTA");
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
    scan(node, "host-q");
    assert_failed(node, "host-q", "re02-sftp-quota", "E_QUOTA");
    assert!(!node.data("host-q").join("big").exists());
    finish_limited(&f, "re02");
}

/// MR-06 on the limited client: at most 10 objects per fetch, checked
/// while the pack arrives; partial data deleted.
#[test]
fn mr06_max_objects_while_the_pack_arrives() {
    let Some(f) = fleet("mr06_max_objects", true) else {
        return;
    };
    let node = &f.node;
    let (_, ql) = f.limited();
    let (ql_ep, lroot, lmirror) = limited(&f);

    let many: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("f{i}"), format!("file {i}\n").into_bytes())).collect();
    Forge::simple(lroot.join("many.git"), &many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect::<Vec<_>>());
    ql.send(&[rq("mr06-max-objects", ql_ep.repo("many.git"))]);
    scan(node, "host-q");

    assert_failed(node, "host-q", "mr06-max-objects", "E_FETCH_LIMIT");
    assert!(!lmirror("many").exists());
    no_staging_left(&node.data("host-q").join("git"));
    finish_limited(&f, "mr06 max-objects");
}

/// RE-05: a server flooding stderr (sideband) is capped in the journal.
#[test]
fn re05_remote_stderr_flood() {
    let Some(f) = fleet("re05_stderr_flood", true) else {
        return;
    };
    let node = &f.node;
    let (lim, ql) = f.limited();
    let (ql_ep, _, _) = limited(&f);

    let old = hostile_gate(node, lim, "head -c 5000000 /dev/zero | tr '\\0' '\\033' >&2; exit 1");
    ql.send(&[rq("re05-stderr-flood", ql_ep.repo("small.git"))]);
    scan(node, "host-q");
    assert_failed(node, "host-q", "re05-stderr-flood", "E_FETCH_FAILED");
    assert_journal_clean(node);
    restore_gate(node, lim, old);
    finish_limited(&f, "re05 stderr");
}

/// RE-03: a server that never answers is cut off by the job timeout.
#[test]
fn re03_a_stalled_git_server_times_out() {
    let Some(f) = fleet("re03_stall", true) else {
        return;
    };
    let node = &f.node;
    let (lim, ql) = f.limited();
    let (ql_ep, lroot, lmirror) = limited(&f);

    let old = hostile_gate(node, lim, "exec sleep 30");
    Forge::simple(lroot.join("stall.git"), &[("a", b"x\n")]);
    ql.send(&[rq("re03-stall", ql_ep.repo("stall.git"))]);
    let t = Instant::now();
    scan(node, "host-q");
    let took = t.elapsed();
    assert_failed(node, "host-q", "re03-stall", "E_FETCH_TIMEOUT");
    assert!(took < Duration::from_secs(20), "the stall was cut off after {took:?}");
    assert!(!lmirror("stall").exists());
    restore_gate(node, lim, old);
    finish_limited(&f, "re03");
}

/// MR-06/GU-16: a git server that advertises a ref, prints terminal
/// escapes on the progress band and sends a pack claiming 2^32-1
/// objects; on A (no object limit) and on the limited client.
#[test]
fn mr06_gu16_a_pack_claiming_4g_objects() {
    let Some(f) = fleet("mr06_pack_claims", true) else {
        return;
    };
    let (node, q, a) = (&f.node, &f.q, &f.a);
    let (lim, ql) = f.limited();
    let e = Ep::of(a);
    let (ql_ep, _, _) = limited(&f);

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
        let old = hostile_gate(node, c, &script);
        queue.send(&[rq(id, ep.repo("evil-pack.git"))]);
        let t = Instant::now();
        scan(node, &c.name);
        assert!(t.elapsed() < Duration::from_secs(20), "{id}: {:?}", t.elapsed());
        restore_gate(node, c, old);
        eprintln!("{id}: {:?}", why(node, &c.name, id));
        // index-pack refuses the object count before writing a byte, on
        // both clients (the object limit never needs to bite).
        assert_failed(node, &c.name, id, "E_FETCH_FAILED");
        let w = why(node, &c.name, id).unwrap();
        assert!(w["detail"].as_str().unwrap().contains("x1B]52;c;"), "{id}: the progress band is kept, escaped: {w}");
        assert!(!node.data(&c.name).join("git/evil-pack.git").exists(), "{id}: nothing stored");
        no_staging_left(&node.data(&c.name).join("git"));
    }
    assert_journal_clean(node);
    finish_limited(&f, "mr06/gu16 pack");
}

/// GU-20: the ssh the node pulls with: pinned key, own identity, no
/// agent, no forwarding, no proxy, no local command.
#[test]
fn gu20_the_ssh_the_node_pulls_with() {
    let Some(f) = fleet("gu20_pull_ssh", false) else {
        return;
    };
    let node = &f.node;

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
    finish(&f, "gu20");
}
