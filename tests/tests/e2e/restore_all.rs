//! Whole-host recovery and datasets (issue 13, points 3 and 4):
//! `ferry-node restore CLIENT --all DIR` gives back every source and mirror
//! of a host, as of a moment, with a summary that names what had no usable
//! backup; `restore --dataset NAME DIR` does the same for sources across
//! hosts named in gitosis.conf.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{TestDir, for_each_ref, git_cmd, require_all};

pub(crate) fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "cp"])
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub(crate) fn at(t: i64) -> String {
    ferry_request::Stamp::from_unix(t).to_string()
}

/// Wait until the catalog holds `n` artifacts of each of `sources`.
fn wait_stored(node: &Node, client: &str, sources: &[&str], n: usize) {
    eventually("the node to store the backups", || {
        let found = node.ferry_node_json(&["find", "--client", client]);
        let count = |s: &str| found.as_array().unwrap().iter().filter(|a| a["source"] == s).count();
        sources.iter().all(|s| count(s) >= n)
    });
    assert!(node.pool_ids(client, "E").is_empty(), "requests failed: {}", node.events());
}

/// A client with an fs source `site` (tree `tree`), a pipe source
/// `numbers` (`cat stream`), plus `extra` sections.
fn client(td: &TestDir, node: &Node, name: &str, tree: &Path, stream: &Path) -> Client {
    Client::new_with(
        td,
        name,
        &[node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"cat\", \"{}\"]\n",
            tree.display(),
            stream.display()
        ),
    )
}

/// Trees equal in content, kinds and modes.
pub(crate) fn same_tree(a: &Path, b: &Path) {
    let cmp = Compare { mode: true, ..Default::default() };
    let d = diff(&manifest(a).unwrap(), &manifest(b).unwrap(), &cmp);
    assert!(d.is_empty(), "{} differs from {}: {d:?}", b.display(), a.display());
}

/// The one file in `dir`.
pub(crate) fn only_file(dir: &Path) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn member<'a>(v: &'a serde_json::Value, client: &str, source: &str) -> &'a serde_json::Value {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["client"] == client && m["source"] == source)
        .unwrap_or_else(|| panic!("no {client}:{source} in {v}"))
}

/// Two backups of an fs source, a pipe source and a git repository, with a
/// copy of each as it was at the first.
pub(crate) struct Fixture {
    pub(crate) td: TestDir,
    pub(crate) node: Node,
    pub(crate) a: Client,
    pub(crate) tree: PathBuf,
    /// The tree, the stream and the refs at the first backup.
    pub(crate) v1: (PathBuf, Vec<u8>, String),
    pub(crate) v2: (PathBuf, Vec<u8>, String),
    /// A time between the two backups.
    pub(crate) t1: i64,
}

pub(crate) fn two_backups(name: &str, sources: &str) -> Fixture {
    let td = TestDir::new(name);
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    let stream = td.join("stream");
    let mut a = client(&td, &node, "host-a", &tree, &stream);
    a.gitosis_section.push_str(&format!("sources = {sources}\n"));
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    let mirror = node.data("host-a").join("git/project.git");
    let phase = |n: u8| {
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("index.html"), format!("page {n}\n")).unwrap();
        fs::write(tree.join(format!("sub/only-{n}")), vec![n; 5000]).unwrap();
        if n == 2 {
            fs::remove_file(tree.join("sub/only-1")).unwrap();
        }
        fs::write(&stream, format!("stream {n}\n").repeat(100)).unwrap();
        commit_and_push(&work, "README", &format!("version {n}\n"));
        eventually("the mirror to follow", || {
            mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare)
        });
        ok(a.cmd().args(["backup", "site", "--send"]));
        ok(a.cmd().args(["backup", "numbers", "--send"]));
        wait_stored(&node, "host-a", &["site", "numbers"], n as usize);
        let copy = td.join(format!("site-v{n}"));
        ok(std::process::Command::new("cp").arg("-a").arg(&tree).arg(&copy));
        (copy, fs::read(&stream).unwrap(), for_each_ref(&bare))
    };
    let v1 = phase(1);
    let t1 = now();
    eventually("the clock to pass the first backup", || now() > t1);
    let v2 = phase(2);
    Fixture { td, node, a, tree, v1, v2, t1 }
}

#[test]
fn restore_all_gives_back_every_source_of_a_host() {
    if !tools() {
        return;
    }
    let f = two_backups("restore_all", "site:1d numbers:1d project:push ghost:1d");
    let (td, node) = (&f.td, &f.node);

    // Newest of everything; the declared source never sent is missing: exit 3.
    let dir = td.join("recovered");
    let out = run(node.cmd().args(["restore", "host-a", "--all", dir.to_str().unwrap()]));
    let human = text(&out);
    assert_eq!(out.status.code(), Some(3), "{human}");
    println!("{human}");
    assert!(human.contains("3 restored, 1 missing, 0 failed"), "{human}");
    assert!(
        human.lines().any(|l| l.starts_with("ghost") && l.contains("missing") && l.contains("no backup as of now")),
        "{human}"
    );
    same_tree(&f.v2.0, &dir.join("site"));
    assert_eq!(fs::read(only_file(&dir.join("numbers"))).unwrap(), f.v2.1);
    assert_eq!(for_each_ref(&dir.join("git/project.git")), f.v2.2);
    ok(git_cmd(&dir.join("git/project.git")).args(["fsck", "--strict", "--no-dangling"]));
    assert_ne!(f.v1.2, f.v2.2);

    // As of a moment between the two backups: the older ones, in JSON.
    let old = td.join("as-of-t1");
    let out = run(node.cmd().args(["--json", "restore", "host-a", "--all", old.to_str().unwrap(), "--at", &at(f.t1)]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(
        (v["restored"].as_u64(), v["missing"].as_u64(), v["failed"].as_u64()),
        (Some(3), Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(member(&v, "host-a", "site")["kind"], "fs");
    assert_eq!(member(&v, "host-a", "numbers")["status"], "restored");
    assert!(
        member(&v, "host-a", "site")["received"].as_str().unwrap()
            <= jiff::Timestamp::from_second(f.t1).unwrap().to_string().as_str(),
        "{v}"
    );
    let ghost = member(&v, "host-a", "ghost");
    assert_eq!(ghost["status"], "missing");
    assert!(ghost["detail"].as_str().unwrap().starts_with("no backup as of "), "{v}");
    same_tree(&f.v1.0, &old.join("site"));
    assert_eq!(fs::read(only_file(&old.join("numbers"))).unwrap(), f.v1.1);
    assert_eq!(for_each_ref(&old.join("git/project.git")), f.v1.2);

    // A non-empty target is refused, and nothing in it changes.
    let before = manifest(&dir).unwrap();
    let out = run(node.cmd().args(["restore", "host-a", "--all", dir.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not empty") && text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(manifest(&dir).unwrap(), before);
    // With --force, an empty or absent place per source is still required.
    fs::remove_dir_all(dir.join("numbers")).unwrap();
    let out = run(node.cmd().args(["--json", "restore", "host-a", "--all", "--force", dir.to_str().unwrap()]));
    let v = json_of(&out);
    assert_eq!(member(&v, "host-a", "numbers")["status"], "restored", "{v}");
    assert_eq!(member(&v, "host-a", "site")["status"], "failed", "{v}");
    assert!(member(&v, "host-a", "site")["detail"].as_str().unwrap().contains("not empty"), "{v}");
    same_tree(&f.v2.0, &dir.join("site"));

    // A target below a symbolic link is refused; nothing is created.
    let real = td.mkdir("real");
    std::os::unix::fs::symlink(&real, td.join("link")).unwrap();
    let out = run(node.cmd().args(["restore", "host-a", "--all", td.join("link/x").to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("below a symbolic link"), "{}", text(&out));
    assert!(fs::read_dir(&real).unwrap().next().is_none());

    // A corrupted newest copy: the older one is restored and the row says
    // so; with every copy corrupted, the source fails and the others are
    // still restored. Exit 3 either way.
    let found = node.ferry_node_json(&["find", "--client", "host-a", "--source", "numbers"]);
    let paths: Vec<PathBuf> =
        found.as_array().unwrap().iter().map(|a| node.srv().join("data").join(a["path"].as_str().unwrap())).collect();
    assert_eq!(paths.len(), 2, "{found}");
    // Same size, other bytes: only the digest can tell.
    fs::write(&paths[1], vec![b'x'; f.v2.1.len()]).unwrap();
    let dir = td.join("after-damage");
    let out = run(node.cmd().args(["--json", "restore", "host-a", "--all", dir.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v = json_of(&out);
    let row = member(&v, "host-a", "numbers");
    assert_eq!(row["status"], "failed", "{v}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("older copy restored")
            && detail.contains("integrity check failed")
            && detail.contains("sha256"),
        "{v}"
    );
    assert_eq!(fs::read(only_file(&dir.join("numbers"))).unwrap(), f.v1.1);
    fs::write(&paths[0], b"tampered too\n").unwrap();
    let dir = td.join("after-more-damage");
    let out = run(node.cmd().args(["restore", "host-a", "--all", dir.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    println!("{t}");
    assert!(
        t.lines().any(|l| l.starts_with("numbers") && l.contains("failed") && l.contains("integrity check failed: ")),
        "{t}"
    );
    assert!(t.contains("2 restored, 1 missing, 1 failed"), "{t}");
    assert!(!dir.join("numbers").exists());
    same_tree(&f.v2.0, &dir.join("site"));
    let _ = (&f.a, &f.tree);
}

/// Append `text` to the admin clone's gitosis.conf.
fn append_conf(dir: &Path, text: &str) {
    let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
    conf.push_str(text);
    fs::write(dir.join("gitosis.conf"), conf).unwrap();
}

#[test]
fn a_dataset_across_two_clients_is_restored_as_of_one_moment() {
    if !tools() {
        return;
    }
    let td = TestDir::new("restore_dataset");
    let node = Node::start(&td, "backup1");
    let (site, stream_a) = (td.mkdir("web1-site"), td.join("web1-stream"));
    let (other, stream_b) = (td.mkdir("db1-site"), td.join("db1-stream"));
    let web1 = client(&td, &node, "web1", &site, &stream_a);
    let mut db1 = client(&td, &node, "db1", &other, &stream_b);
    db1.gitosis_section.push_str("sources = numbers:1d orders:1d\n");
    node.enroll(&[&web1, &db1]);

    // A bad dataset section refuses the push with a reason; the live
    // enrollment stays as it was.
    let live = node.srv().join("state/enrolled/gitosis.conf");
    let before = fs::read(&live).unwrap();
    let out = node
        .admin_push("bad dataset", |d| append_conf(d, "\n[ferry dataset shop]\nsources = web1:site nobody:db db1\n"));
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("[ferry dataset shop]") && t.contains("'nobody' is not enrolled"), "{t}");
    assert!(t.contains("'db1' is not CLIENT:SOURCE"), "{t}");
    assert_eq!(fs::read(&live).unwrap(), before);
    let out = run(node.cmd().args(["restore", "--dataset", "shop", td.join("x").to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no dataset \"shop\""), "{}", text(&out));

    let out = node
        .admin_push("shop", |d| append_conf(d, "\n[ferry dataset shop]\nsources = web1:site db1:numbers db1:orders\n"));
    assert!(out.status.success(), "{}", text(&out));

    let backup = |n: u8| {
        fs::write(site.join("index.html"), format!("shop page {n}\n")).unwrap();
        fs::write(&stream_b, format!("order {n}\n")).unwrap();
        ok(web1.cmd().args(["backup", "site", "--send"]));
        ok(db1.cmd().args(["backup", "numbers", "--send"]));
        wait_stored(&node, "web1", &["site"], n as usize);
        wait_stored(&node, "db1", &["numbers"], n as usize);
        let copy = td.join(format!("web1-site-v{n}"));
        ok(std::process::Command::new("cp").arg("-a").arg(&site).arg(&copy));
        copy
    };
    let v1 = backup(1);
    let t1 = now();
    eventually("the clock to pass the first backup", || now() > t1);
    let v2 = backup(2);

    // list --datasets names the members and what is stored of each.
    let l = node.ferry_node_json(&["list", "--datasets"]);
    assert_eq!(l[0]["name"], "shop", "{l}");
    assert_eq!(l[0]["members"][0]["stored"], "source", "{l}");
    assert_eq!(l[0]["members"][2]["stored"], "nothing stored", "{l}");
    let human = ok(node.cmd().args(["list", "--datasets"]));
    assert!(human.contains("dataset shop") && human.contains("db1:orders  nothing stored"), "{human}");

    // find --dataset: the artifacts of its members only.
    let found = node.ferry_node_json(&["find", "--dataset", "shop"]);
    let pairs: Vec<String> =
        found.as_array().unwrap().iter().map(|a| format!("{}:{}", a["client"], a["source"]).replace('"', "")).collect();
    assert_eq!(pairs, ["db1:numbers", "db1:numbers", "web1:site", "web1:site"], "{found}");

    // check names the dataset of a missing member.
    let out = run(node.cmd().args(["check"]));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.lines().any(|l| l.contains("orders") && l.contains("MISSING") && l.ends_with("(dataset shop)")), "{t}");
    assert!(!t.lines().any(|l| l.contains("numbers") && l.contains("dataset")), "{t}");

    // As of the moment between the two backups: both hosts' first backups.
    let dir = td.join("shop");
    let out = run(node.cmd().args(["restore", "--dataset", "shop", "--at", &at(t1), dir.to_str().unwrap()]));
    let human = text(&out);
    println!("{human}");
    assert_eq!(out.status.code(), Some(3), "{human}");
    assert!(human.contains("2 restored, 1 missing, 0 failed"), "{human}");
    assert!(human.lines().any(|l| l.starts_with("db1:orders") && l.contains("missing")), "{human}");
    same_tree(&v1, &dir.join("web1/site"));
    assert_eq!(fs::read(only_file(&dir.join("db1/numbers"))).unwrap(), b"order 1\n");
    // Newest: the second ones, in JSON.
    let dir = td.join("shop-now");
    let out = run(node.cmd().args(["--json", "restore", "--dataset", "shop", dir.to_str().unwrap()]));
    let v = json_of(&out);
    assert_eq!(member(&v, "db1", "numbers")["status"], "restored", "{v}");
    same_tree(&v2, &dir.join("web1/site"));
    assert_eq!(fs::read(only_file(&dir.join("db1/numbers"))).unwrap(), b"order 2\n");
}
