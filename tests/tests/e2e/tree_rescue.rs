//! Snapshot trees on the node (issue 10): `rescue` with a real overlay
//! mount (root), `diff`, `restore` of a tree, `verify` and `purge`.
//!
//! Snapshots are built through the library
//! (`ferry_node::trees::build_test_snapshot`: scan, store, build, catalog
//! row), the same steps the pull job takes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_node::config::NodeConfig;
use ferry_tests::fleet::{ok, text};
use ferry_tests::{TestDir, ferry_bin, is_root, require_all};
use sha2::Digest;

struct TreeNode {
    config: PathBuf,
    cfg: NodeConfig,
}

impl TreeNode {
    fn new(td: &TestDir, extra: &str) -> TreeNode {
        let base = td.mkdir("node");
        let config = base.join("node.toml");
        fs::write(
            &config,
            format!(
                "name = \"backup1\"\nbase_dir = \"{}\"\nprogram = \"{}\"\n{extra}\n",
                base.join("srv").display(),
                ferry_bin("ferry-node").display()
            ),
        )
        .unwrap();
        let cfg = NodeConfig::load(&config).unwrap();
        TreeNode { config, cfg }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(ferry_bin("ferry-node"));
        c.arg("--config").arg(&self.config);
        c
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = ok(self.cmd().arg("--json").args(args));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn snapshot(&self, received: &str, fixture: &Path) {
        ferry_node::trees::build_test_snapshot(&self.cfg, "host-a", "www", received, fixture).unwrap();
    }
}

/// Undoes a rescue when a test ends, passed or not, so a failed assertion
/// leaves no mount behind (the next `--undo` of a clean DIR just fails).
struct UndoOnDrop<'a>(&'a TreeNode, PathBuf);

impl Drop for UndoOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["rescue", "--undo"]).arg(&self.1).output();
    }
}

fn set_mtime(p: &Path, sec: i64) {
    let t = rustix::fs::Timespec { tv_sec: sec, tv_nsec: 123_456_789 };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with owners, modes (setuid too), hard links, a symlink, an empty
/// directory, a FIFO and odd names.
fn fixture(root: &Path) {
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(root.join("var/empty")).unwrap();
    fs::create_dir_all(root.join("home/alice")).unwrap();
    fs::write(root.join("etc/hostname"), "host-a\n").unwrap();
    fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "secret key\n").unwrap();
    fs::set_permissions(root.join("etc/ssh/ssh_host_ed25519_key"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("home/alice/notes.txt"), "alice's notes\n".repeat(100)).unwrap();
    fs::hard_link(root.join("home/alice/notes.txt"), root.join("home/alice/notes-link")).unwrap();
    fs::write(root.join("home/alice/big.bin"), vec![7u8; 300_000]).unwrap();
    fs::write(root.join("home/alice/same-as-hostname"), "host-a\n").unwrap();
    fs::write(root.join("su"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
    let odd = root.join(std::ffi::OsStr::from_bytes(b"odd name \n\xff\x01 %"));
    fs::write(&odd, "odd\n").unwrap();
    std::os::unix::fs::symlink("../etc/hostname", root.join("home/hostname-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("var/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let chown = |p: &Path, u: u32, g: u32| {
        rustix::fs::chownat(
            rustix::fs::CWD,
            p,
            Some(rustix::fs::Uid::from_raw(u)),
            Some(rustix::fs::Gid::from_raw(g)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    chown(&root.join("home/alice"), 1234, 5678);
    chown(&root.join("home/alice/notes.txt"), 1234, 5678);
    chown(&root.join("home/alice/big.bin"), 1234, 100);
    chown(&root.join("home/hostname-link"), 1234, 5678);
    fs::set_permissions(root.join("home/alice"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("var/empty"), fs::Permissions::from_mode(0o711)).unwrap();
    for (i, p) in
        ["etc/hostname", "home/alice/notes.txt", "su", "home/hostname-link", "var/empty", "etc"].iter().enumerate()
    {
        set_mtime(&root.join(p), 1_700_000_000 + i as i64 * 1000);
    }
}

/// Every name under `root` with what a write through to the backup would
/// change: type, mode, owner, link count, size, inode, mtime, ctime and
/// the content's SHA-256 (or a symlink's target).
fn listing(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.is_symlink() {
                format!("-> {:?}", fs::read_link(&p).unwrap())
            } else {
                hex::encode(sha2::Sha256::digest(fs::read(&p).unwrap()))
            };
            let line = format!(
                "{:o} {}:{} n{} s{} i{} m{}.{} c{}.{} {what}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.size(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            );
            out.insert(p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec(), line);
        }
    }
    out
}

fn mounted_under(p: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(p)).map(str::to_owned).collect()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn manifest_of(node: &TreeNode, received: &str) -> ferry_tree::manifest::Manifest {
    let layout = ferry_node::trees::TreeLayout::new(node.cfg.data_dir());
    ferry_tree::snapshot::read_manifest(
        &layout.snapshot_dir("host-a", "www", received),
        &ferry_tree::manifest::Limits::default(),
    )
    .unwrap()
}

#[test]
fn rescue_view_is_usable_and_never_writes_the_backup() {
    if !is_root() {
        eprintln!("SKIPPED: rescue mounts overlays and needs root (the test command runs as root)");
        return;
    }
    if !require_all(&["mount", "umount"]) {
        return;
    }
    let td = TestDir::new("tree_rescue");
    let node = TreeNode::new(&td, "");
    let src = td.mkdir("src");
    fixture(&src);
    node.snapshot("20261201T000000Z", &src);
    fs::write(src.join("etc/hostname"), "host-a renamed\n").unwrap();
    node.snapshot("20261202T000000Z", &src);
    let data = node.cfg.data_dir().join("host-a");
    let before = listing(&data);

    // Refusals: a non-empty DIR, a DIR inside the data directory.
    let busy = td.mkdir("busy");
    fs::write(busy.join("x"), "x").unwrap();
    let out = node.cmd().args(["rescue", "host-a", "www"]).arg(&busy).output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("not an empty directory"), "{}", text(&out));
    let inside = node.cfg.data_dir().join("view");
    let out = node.cmd().args(["rescue", "host-a", "www"]).arg(&inside).output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("inside the node's data directory"), "{}", text(&out));

    // The newest snapshot, in place.
    let view = td.join("view");
    let _undo = UndoOnDrop(&node, view.clone());
    let r = node.json(&["rescue", "host-a", "www", view.to_str().unwrap()]);
    assert_eq!(r["kind"], "metacopy", "{r}");
    assert_eq!(r["received"], "20261202T000000Z", "{r}");
    assert_eq!(r["meta_built"], true, "{r}");
    let view = view.canonicalize().unwrap();
    assert!(mounted_under(&view).iter().any(|m| Path::new(m) == view), "{:?}", mounted_under(&view));

    // Owners, modes, mtimes and contents of the view are the manifest's.
    let m = manifest_of(&node, "20261202T000000Z");
    for e in &m.entries {
        let p = view.join(std::ffi::OsStr::from_bytes(&e.path));
        let shown = String::from_utf8_lossy(&e.path);
        if matches!(e.kind, ferry_tree::manifest::Kind::Fifo) {
            assert!(fs::symlink_metadata(&p).is_err(), "{shown}: specials are not shown");
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{shown}: {err}"));
        assert_eq!((md.uid(), md.gid()), (e.uid, e.gid), "{shown}");
        if !md.is_symlink() {
            assert_eq!(md.mode() & 0o7777, e.mode, "{shown}");
        }
        assert_eq!((md.mtime(), md.mtime_nsec() as u32), (e.mtime.sec, e.mtime.nsec), "{shown}");
        if let ferry_tree::manifest::Kind::File { size, sha256 } = &e.kind {
            let bytes = fs::read(&p).unwrap();
            assert_eq!(bytes.len() as u64, *size, "{shown}");
            assert_eq!(sha2::Sha256::digest(&bytes).as_slice(), sha256.0.as_slice(), "{shown}");
        }
    }
    assert_eq!(fs::read_to_string(view.join("etc/hostname")).unwrap(), "host-a renamed\n");
    assert_eq!(fs::read_link(view.join("home/hostname-link")).unwrap(), Path::new("../etc/hostname"));

    // The rescue side writes, chmods, chowns, deletes and renames.
    let mut f = fs::OpenOptions::new().append(true).open(view.join("home/alice/notes.txt")).unwrap();
    std::io::Write::write_all(&mut f, b"written on the rescue side\n").unwrap();
    drop(f);
    fs::write(view.join("home/alice/big.bin"), "overwritten").unwrap();
    fs::set_permissions(view.join("etc/hostname"), fs::Permissions::from_mode(0o666)).unwrap();
    rustix::fs::chown(view.join("su"), Some(rustix::fs::Uid::from_raw(4321)), None).unwrap();
    fs::remove_file(view.join("home/alice/same-as-hostname")).unwrap();
    fs::rename(view.join("etc/ssh"), view.join("etc/ssh.old")).unwrap();
    fs::rename(view.join("home/alice/notes-link"), view.join("notes-moved")).unwrap();
    fs::remove_dir(view.join("var/empty")).unwrap();
    fs::write(view.join("new-file"), "new").unwrap();
    assert!(fs::read_to_string(view.join("home/alice/notes.txt")).unwrap().ends_with("written on the rescue side\n"));
    assert!(fs::read_to_string(view.join("home/alice/notes.txt")).unwrap().starts_with("alice's notes\n"));
    assert_eq!(fs::metadata(view.join("etc/hostname")).unwrap().mode() & 0o7777, 0o666);
    assert_eq!(fs::read_to_string(view.join("etc/ssh.old/ssh_host_ed25519_key")).unwrap(), "secret key\n");
    // Writing through the lower layers directly is refused by the kernel.
    let private = view.with_file_name(".view.ferry-rescue");
    let lower = fs::read_dir(private.join("data/home/alice")).unwrap().next().unwrap().unwrap().path();
    let err = fs::OpenOptions::new().append(true).open(&lower).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::ROFS.raw_os_error()), "{err}");

    // The backup did not change: store and snapshots byte for byte,
    // inode for inode, link counts, times.
    assert_eq!(listing(&data), before);
    let v = node.cmd().arg("verify").output().unwrap();
    assert_eq!(code(&v), 0, "{}", text(&v));

    // Undo leaves nothing mounted and nothing beside DIR.
    let u = node.json(&["rescue", "--undo", view.to_str().unwrap()]);
    assert_eq!(u["unmounted"].as_array().unwrap().len(), 3, "{u}");
    assert!(mounted_under(&td.path).is_empty(), "{:?}", mounted_under(&td.path));
    assert!(!private.exists());
    assert_eq!(fs::read_dir(&view).unwrap().count(), 0);
    let out = node.cmd().args(["rescue", "--undo"]).arg(&view).output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));

    // An older snapshot with --at; its metadata layer is built once, then
    // reused (a rescue is then a mount).
    for built in [true, false] {
        let r = node.json(&["rescue", "host-a", "www", "--at", "2026-12-01", view.to_str().unwrap()]);
        assert_eq!((&r["received"], &r["meta_built"]), (&"20261201T000000Z".into(), &built.into()), "{r}");
        assert_eq!(fs::read_to_string(view.join("etc/hostname")).unwrap(), "host-a\n");
        node.json(&["rescue", "--undo", view.to_str().unwrap()]);
    }

    // The NFS view: exportable options and the exports line.
    let out = ok(node.cmd().args(["rescue", "host-a", "www", "--nfs", "rescue-host.example"]).arg(&view));
    let line = format!("{} rescue-host.example(rw,sync,no_subtree_check,no_root_squash,fsid=", view.display());
    assert!(out.contains(&line), "{out}");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mine = info.lines().find(|l| l.split(' ').nth(4) == view.to_str()).unwrap();
    assert!(mine.contains("nfs_export=on") && mine.contains("index=on"), "{mine}");
    assert_eq!(fs::read_to_string(view.join("etc/hostname")).unwrap(), "host-a renamed\n");
    fs::write(view.join("etc/hostname"), "changed over nfs").unwrap();
    ok(node.cmd().args(["rescue", "--undo"]).arg(&view));
    assert!(mounted_under(&td.path).is_empty(), "{:?}", mounted_under(&td.path));
    assert_eq!(listing(&data), before);
}

#[test]
fn diff_and_restore_of_snapshot_trees() {
    let td = TestDir::new("tree_diff_restore");
    let node = TreeNode::new(&td, "");
    let src = td.mkdir("src");
    fs::create_dir_all(src.join("d/empty")).unwrap();
    fs::write(src.join("d/a"), "one").unwrap();
    fs::write(src.join("d/gone"), "bye").unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"odd\x1b[31m\n")), "odd").unwrap();
    fs::hard_link(src.join("d/a"), src.join("d/a-link")).unwrap();
    std::os::unix::fs::symlink("a", src.join("d/s")).unwrap();
    node.snapshot("20261201T000000Z", &src);
    fs::write(src.join("d/a"), "two").unwrap();
    fs::remove_file(src.join("d/gone")).unwrap();
    fs::write(src.join("d/new"), "new").unwrap();
    fs::set_permissions(src.join("d/s").with_file_name("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    node.snapshot("20261202T000000Z", &src);

    let d = node.json(&["diff", "host-a", "www"]);
    assert_eq!((&d["from"], &d["to"]), (&"20261201T000000Z".into(), &"20261202T000000Z".into()), "{d}");
    assert_eq!((&d["added"], &d["removed"]), (&1.into(), &1.into()), "{d}");
    let changed: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "changed")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["d/a", "d/a-link", "d/empty"], "{d}");
    let human = ok(node.cmd().args(["diff", "host-a", "www", "20261201T000000Z", "20261202T000000Z"]));
    assert!(human.contains("+ file d/new") && human.contains("- file d/gone"), "{human}");
    assert!(!human.contains('\x1b'), "client names are escaped: {human:?}");
    let same = node.json(&["diff", "host-a", "www", "2026-12-02", "20261202T000000Z"]);
    assert_eq!(same["changes"].as_array().unwrap().len(), 0, "{same}");

    // Restore of a tree, compared by manifest (every attribute).
    let to = td.join("restored");
    let out = ok(node.cmd().args(["restore", "host-a", "www", "--at", "2026-12-01", "--to"]).arg(&to));
    assert!(out.is_empty() || out.contains("restored"), "{out}");
    let back = ferry_tree::scan::scan(&ferry_tree::scan::ScanOptions::new(&to)).unwrap().manifest;
    let want = manifest_of(&node, "20261201T000000Z");
    let diff = ferry_tree::diff::diff(&want, &back, &ferry_tree::diff::DiffOptions { mtime: true, xattrs: false });
    assert!(diff.is_empty(), "{}", diff.to_text());
    // verify: clean, then a stored content that rotted is reported once
    // (however many snapshots link it), and so is a manifest that no
    // longer matches its catalog digest.
    let v = node.json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["checked"].as_u64().unwrap() >= 2, "{v}");
    let layout = ferry_node::trees::TreeLayout::new(node.cfg.data_dir());
    let store = ferry_tree::store::Store::open(layout.store_dir("host-a")).unwrap();
    let odd = ferry_tree::manifest::Sha256::of(b"odd");
    let stored = store.path(&odd);
    fs::set_permissions(&stored, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&stored, "rot").unwrap();
    fs::set_permissions(&stored, fs::Permissions::from_mode(0o444)).unwrap();
    let m = layout.manifest_path("host-a", "www", "20261201T000000Z");
    let mut bytes = zstd::decode_all(fs::File::open(&m).unwrap()).unwrap();
    bytes.extend_from_slice(b"\n");
    fs::write(&m, zstd::encode_all(bytes.as_slice(), 3).unwrap()).unwrap();
    let out = node.cmd().args(["--json", "verify"]).output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap().to_owned(), p["problem"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, format!("host-a/store/sha256/{odd}"), "{problems:?}");
    assert!(problems[0].1.contains("contents hash to"), "{problems:?}");
    assert_eq!(problems[1].0, "host-a/trees/www/20261201T000000Z", "{problems:?}");
    assert!(problems[1].1.contains("the catalog says"), "{problems:?}");
}

#[test]
fn purge_removes_snapshots_then_unlinked_contents_and_list_counts_the_store() {
    let td = TestDir::new("tree_purge");
    let node = TreeNode::new(&td, "[retention]\nkeep_last = 1\nkeep_daily = 1\n");
    let src = td.mkdir("src");
    fs::write(src.join("shared"), "in every snapshot").unwrap();
    let days = ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z"];
    for (i, day) in days.iter().enumerate() {
        fs::write(src.join("changing"), format!("version {i}")).unwrap();
        node.snapshot(day, &src);
    }
    let layout = ferry_node::trees::TreeLayout::new(node.cfg.data_dir());
    let store = ferry_tree::store::Store::open(layout.store_dir("host-a")).unwrap();
    let v = |i: usize| ferry_tree::manifest::Sha256::of(format!("version {i}").as_bytes());
    let l = node.json(&["list", "host-a"]);
    assert_eq!(l[0]["tree_store"]["contents"], 4, "{l}");
    assert_eq!(l[0]["artifacts"].as_array().unwrap().len(), 3, "{l}");

    // A rescued snapshot stays while mounted (root only: a real mount).
    let view = td.join("view");
    let _undo = UndoOnDrop(&node, view.clone());
    if is_root() {
        ok(node.cmd().args(["rescue", "host-a", "www", "--at", "2026-12-01"]).arg(&view));
    }
    let r = node.json(&["purge"]);
    let removed: Vec<&str> = r["artifacts_removed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    if is_root() {
        assert_eq!(removed, ["host-a/trees/www/20261202T000000Z"], "{r}");
        assert!(r["skipped"].to_string().contains("rescued at"), "{r}");
        assert_eq!(fs::read_to_string(view.join("changing")).unwrap(), "version 0");
        ok(node.cmd().args(["rescue", "--undo"]).arg(&view));
        let r = node.json(&["purge"]);
        assert_eq!(r["artifacts_removed"][0], "host-a/trees/www/20261201T000000Z", "{r}");
    } else {
        assert_eq!(removed.len(), 2, "{r}");
    }
    assert_eq!(layout.snapshots("host-a", "www").unwrap(), ["20261203T000000Z"]);
    assert!(!store.has(&v(0)) && !store.has(&v(1)), "unlinked contents are gone");
    assert!(store.has(&v(2)) && store.has(&ferry_tree::manifest::Sha256::of(b"in every snapshot")));
    assert!(fs::read_dir(layout.source_dir("host-a", "www")).unwrap().all(|e| {
        let n = e.unwrap().file_name();
        n == "20261203T000000Z" || n == "20261203T000000Z.ftree.zst"
    }));
    let l = node.json(&["list", "host-a"]);
    assert_eq!(l[0]["tree_store"]["contents"], 2, "{l}");
    assert_eq!(l[0]["artifacts"].as_array().unwrap().len(), 1, "{l}");
    let v = node.json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

/// The layers under `<state>/rescue-meta/host-a/site` (finished ones only).
fn layers(node: &ferry_tests::fleet::Node) -> Vec<String> {
    let dir = node.srv().join("state/rescue-meta/host-a/site");
    let mut v: Vec<String> = fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The pull prepares the newest snapshot's metadata layer (`[tree]
/// prepare_rescue`, on by default), so the first rescue only mounts; the
/// next pull drops the previous layer unless a rescue has it mounted.
/// Real client, sshd and overlay.
#[test]
fn the_pull_prepares_the_rescue_layer_and_drops_the_previous_one_unless_mounted() {
    if !is_root() {
        eprintln!("SKIPPED: rescue mounts overlays and needs root (the test command runs as root)");
        return;
    }
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "mount", "umount"]) {
        return;
    }
    use ferry_tests::fleet::{Client, Node, eventually};
    let td = TestDir::new("tree_prepare");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    fixture(&tree);
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\nmode = \"tree\"\npath = \"{}\"\n", tree.display()),
    );
    a.gitosis_section.push_str(&format!("tree-roots = {}\n", tree.display()));
    node.enroll(&[&a]);
    // The layer is prepared after the request is finished, by the scan,
    // which holds the client's pool lock until it is done: wait for both.
    let backup = |n: usize| {
        ok(a.cmd().args(["backup", "site", "--send"]));
        eventually("the node to finish the tree request", || node.pool_ids("host-a", "F").len() >= n);
        assert!(node.pool_ids("host-a", "E").is_empty(), "requests failed: {}", node.events());
        let lock = fs::File::open(node.pool("host-a").join(".lock")).unwrap();
        eventually("the scan to be over", || match lock.try_lock() {
            Ok(()) => lock.unlock().is_ok(),
            Err(_) => false,
        });
    };
    let snapshots = || -> Vec<String> {
        let v = node.ferry_node_json(&["find", "--client", "host-a", "--source", "site"]);
        v.as_array().unwrap().iter().map(|a| a["received"].as_str().unwrap().to_owned()).collect()
    };

    backup(1);
    let first = snapshots();
    let l1 = layers(&node);
    assert_eq!(l1.len(), 1, "the pull left one prepared layer: {l1:?}");
    assert!(l1[0].starts_with(&first[0]), "the layer is the new snapshot's: {l1:?} {first:?}");

    // The first rescue of the snapshot uses the prepared layer: no build.
    let view = td.join("view");
    let guard = UndoFleet(&node, view.clone());
    let r: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "rescue", "host-a", "site"]).arg(&view))).unwrap();
    assert_eq!(r["meta_built"], false, "the first rescue only mounts: {r}");
    assert_eq!(fs::read_to_string(view.join("etc/hostname")).unwrap(), "host-a\n");
    assert_eq!(fs::metadata(view.join("home/alice/notes.txt")).unwrap().uid(), 1234, "owners from the layer");

    // A second pull while the first layer is mounted: both stay.
    fs::write(tree.join("etc/hostname"), "host-a again\n").unwrap();
    backup(2);
    let second = snapshots();
    let l2 = layers(&node);
    assert_eq!(l2.len(), 2, "the mounted layer is kept beside the new one: {l2:?}");
    assert!(l2.iter().any(|l| l.starts_with(&second[1])), "{l2:?} {second:?}");
    assert_eq!(fs::read_to_string(view.join("etc/hostname")).unwrap(), "host-a\n", "the mounted view still works");
    // The second layer links the unchanged files of the first (not the
    // changed one): a view of it shows the new content and the manifest's
    // owners and modes.
    let lroot = node.srv().join("state/rescue-meta/host-a/site");
    let ino = |l: &str, p: &str| fs::symlink_metadata(lroot.join(l).join(p)).unwrap().ino();
    assert_eq!(ino(&l2[0], "home/alice/big.bin"), ino(&l2[1], "home/alice/big.bin"), "unchanged: linked");
    assert_eq!(ino(&l2[0], "su"), ino(&l2[1], "su"), "unchanged: linked");
    assert_ne!(ino(&l2[0], "etc/hostname"), ino(&l2[1], "etc/hostname"), "changed: a new file");
    let view2 = td.join("view2");
    let guard2 = UndoFleet(&node, view2.clone());
    let r: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "rescue", "host-a", "site"]).arg(&view2))).unwrap();
    assert_eq!(r["meta_built"], false, "{r}");
    assert_eq!(fs::read_to_string(view2.join("etc/hostname")).unwrap(), "host-a again\n");
    let notes = fs::metadata(view2.join("home/alice/notes.txt")).unwrap();
    assert_eq!((notes.uid(), notes.gid()), (1234, 5678), "owners through a linked layer file");
    assert_eq!(fs::read_to_string(view2.join("home/alice/big.bin")).unwrap().len(), 300_000);
    let su = fs::metadata(view2.join("su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "modes through a linked layer file");
    ok(node.cmd().args(["rescue", "--undo"]).arg(&view2));
    drop(guard2);
    ok(node.cmd().args(["rescue", "--undo"]).arg(&view));
    drop(guard);

    // Once unmounted, the next pull drops every layer but the newest.
    fs::write(tree.join("etc/hostname"), "host-a once more\n").unwrap();
    backup(3);
    let third = snapshots();
    let l3 = layers(&node);
    assert_eq!(l3.len(), 1, "{l3:?}");
    assert!(l3[0].starts_with(&third[2]), "{l3:?} {third:?}");
}

/// [`UndoOnDrop`] for a fleet node.
struct UndoFleet<'a>(&'a ferry_tests::fleet::Node, PathBuf);

impl Drop for UndoFleet<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["rescue", "--undo"]).arg(&self.1).output();
    }
}
