//! Content sharing across the clients of one gitosis group (issue 10
//! point 3), over real sshd: `[ferry share team]` with host-a and host-b in
//! `[group team]`, host-c outside. The same content backed up by host-a and
//! then host-b is downloaded once and is one store inode; host-c downloads
//! it again into its own store. A purge of host-a's snapshots keeps what
//! host-b still links and drops what nobody links; host-b moved out of the
//! group keeps its old snapshot in the group store (restore and verify
//! find it there) while its new content goes to its own store; host-c
//! joining fetches only what the group lacks; a client in two share
//! groups is refused at the push; `verify` is clean throughout.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ferry_tests::TestDir;
use ferry_tests::fleet::{Client, Node, ok, text};
use ferry_tree::manifest::Sha256;
use ferry_tree::scan::{ScanOptions, scan as tree_scan};

use crate::hostile::kit::{Ep, Queue, assert_done, rq, scan, tools};

fn stamp(k: i64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    ferry_request::Stamp::from_unix(secs - 600 + k).to_string()
}

/// Scan `root` as the client does, write the manifest into `c`'s export
/// dir, and return the `tree` request line for source `www`.
fn manifest_request(c: &Client, root: &Path, name: &str, st: &str) -> String {
    let bytes = tree_scan(&ScanOptions::new(root)).unwrap().manifest.to_bytes();
    let p = c.base.join("export").join(name);
    fs::write(&p, &bytes).unwrap();
    let e = Ep::of(c);
    format!(
        "tree {st} {} {} sha256={} size={} source=www\n",
        e.sftp_url(p.to_str().unwrap()),
        e.sftp_url(root.to_str().unwrap()),
        Sha256::of(&bytes).to_hex(),
        bytes.len()
    )
}

/// One backup of `root` by `c`: request `id`, scanned and done. Returns
/// the pull's record ("… N contents fetched (B bytes) …") from the journal.
fn backup(node: &Node, c: &Client, q: &Queue, root: &Path, id: &str, k: i64) -> String {
    q.send(&[rq(id, manifest_request(c, root, &format!("{id}.ftree"), &stamp(k)))]);
    scan(node, &c.name);
    assert_done(node, &c.name, id);
    node.events()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["client"] == c.name.as_str() && e["request"].as_str().is_some_and(|r| r.contains(id)))
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .find(|d| d.contains("contents fetched"))
        .unwrap_or_else(|| panic!("no pull record of {id}: {}", node.events()))
}

/// Contents in the store at `dir`.
fn contents(dir: &Path) -> usize {
    fs::read_dir(dir.join("sha256"))
        .map(|rd| rd.flatten().map(|s| fs::read_dir(s.path()).unwrap().count()).sum())
        .unwrap_or(0)
}

/// Published snapshots of `c`'s source www, oldest first.
fn snapshots(node: &Node, c: &str) -> Vec<PathBuf> {
    let dir = node.data(c).join("trees/www");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.retain(|p| p.file_name().unwrap().to_str().is_some_and(|n| !n.starts_with('.') && !n.contains('.')));
    v.sort();
    v
}

fn inode(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

fn store_of(dir: &Path, content: &str) -> PathBuf {
    let h = Sha256::of(content.as_bytes()).to_hex();
    dir.join("sha256").join(&h[..2]).join(h)
}

fn verify_clean(node: &Node, when: &str) {
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{when}: {v}");
}

fn shared(i: usize) -> String {
    format!("shared {i}\n").repeat(i * 50 + 1)
}

/// `rescue --undo` of a view when the test ends early.
struct Undo<'a>(&'a Node, PathBuf);

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["rescue", "--undo"]).arg(&self.1).output();
    }
}

#[test]
fn a_share_group_fetches_a_content_once_and_keeps_what_a_member_links() {
    if !tools() {
        return;
    }
    let td = TestDir::new("tree_share");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[retention]\nkeep_last = 1\nkeep_daily = 1\n");
    let (mut a, mut b, mut c) = std::thread::scope(|s| {
        let a = s.spawn(|| Client::new(&td, "host-a", &[&node]));
        let b = s.spawn(|| Client::new(&td, "host-b", &[&node]));
        let c = s.spawn(|| Client::new(&td, "host-c", &[&node]));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let roots = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    for x in [&mut a, &mut b, &mut c] {
        x.gitosis_section.push_str(&roots);
    }
    // host-b's quota is below what its snapshot holds: content already in
    // the group store costs its pull nothing.
    b.gitosis_section.push_str("quota = 100K\n");
    c.gitosis_section.push_str("\n[group team]\nmembers = host-a host-b\n\n[ferry share team]\n");
    node.enroll(&[&a, &b, &c]);
    let (qa, qb, qc) =
        (Queue::clone(&node, "host-a", &td), Queue::clone(&node, "host-b", &td), Queue::clone(&node, "host-c", &td));
    let root = |x: &Client| {
        let r = x.base.join("tree");
        fs::create_dir_all(&r).unwrap();
        for i in 0..30 {
            fs::write(r.join(format!("f{i}")), shared(i)).unwrap();
        }
        r
    };
    let (ra, rb, rc) = (root(&a), root(&b), root(&c));
    fs::write(ra.join("a-only"), "only host-a has this\n").unwrap();
    let group = node.srv().join("data/.share/team/store");
    let total: usize = (0..30).map(|i| shared(i).len()).sum::<usize>() + "only host-a has this\n".len();

    // host-a first: everything fetched, into the group's store.
    let rec = backup(&node, &a, &qa, &ra, "a1", 1);
    assert!(rec.contains(&format!("31 contents fetched ({total} bytes)")), "{rec}");
    assert_eq!(contents(&group), 31);
    assert!(!node.data("host-a").join("store").exists(), "a member has no store of its own");

    // host-b, same content: nothing downloaded, one inode for both, and
    // its quota (100K, below the tree's bytes) is not in the way.
    assert!(total > 100 * 1024);
    let rec = backup(&node, &b, &qb, &rb, "b1", 2);
    assert!(rec.contains("0 contents fetched (0 bytes)"), "{rec}");
    assert_eq!(contents(&group), 31);
    let (sa, sb) = (snapshots(&node, "host-a"), snapshots(&node, "host-b"));
    assert_eq!(inode(&sa[0].join("f7")), inode(&sb[0].join("f7")));
    assert_eq!(inode(&sb[0].join("f7")), inode(&store_of(&group, &shared(7))));

    // host-c, outside the group: downloads it again, into its own store.
    let rec = backup(&node, &c, &qc, &rc, "c1", 3);
    assert!(rec.contains("30 contents fetched"), "{rec}");
    let own_c = node.data("host-c").join("store");
    assert_eq!(contents(&own_c), 30);
    let sc = snapshots(&node, "host-c");
    assert_ne!(inode(&sc[0].join("f7")), inode(&sa[0].join("f7")));
    assert_eq!(inode(&sc[0].join("f7")), inode(&store_of(&own_c, &shared(7))));
    verify_clean(&node, "after the first backups");
    let l = node.ferry_node_json(&["list", "host-b"]);
    assert_eq!(l[0]["tree_store"]["dir"], ".share/team/store", "{l}");
    assert_eq!(l[0]["tree_store"]["contents"], 31, "{l}");

    // host-a changes f0 and drops a-only; purge removes its first snapshot:
    // a-only goes (nobody links it), the old f0 stays (host-b links it).
    fs::write(ra.join("f0"), "host-a's new f0\n").unwrap();
    fs::remove_file(ra.join("a-only")).unwrap();
    let rec = backup(&node, &a, &qa, &ra, "a2", 4);
    assert!(rec.contains("1 contents fetched"), "{rec}");
    let d = ok(node.cmd().args(["diff", "host-a", "www"]));
    assert!(d.contains("a-only") && d.contains("f0"), "{d}");
    let r = node.ferry_node_json(&["purge"]);
    assert_eq!(r["artifacts_removed"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(snapshots(&node, "host-a").len(), 1);
    assert!(!store_of(&group, "only host-a has this\n").exists(), "unlinked: gone");
    assert!(store_of(&group, &shared(0)).exists(), "host-b still links it");
    assert_eq!(contents(&group), 31);
    verify_clean(&node, "after host-a's purge");

    // host-b leaves the group: its new content goes to its own store, its
    // old snapshot keeps linking into the group's.
    let out = node.admin_push("host-b leaves team", |dir| {
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        let conf = conf.replace("members = host-a host-b", "members = host-a").replace("quota = 100K\n", "");
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    let rec = backup(&node, &b, &qb, &rb, "b2", 5);
    assert!(rec.contains("30 contents fetched"), "{rec}");
    let own_b = node.data("host-b").join("store");
    assert_eq!(contents(&own_b), 30);
    let sb = snapshots(&node, "host-b");
    assert_eq!(sb.len(), 2);
    assert_eq!(inode(&sb[0].join("f0")), inode(&store_of(&group, &shared(0))), "the old snapshot: group store");
    assert_eq!(inode(&sb[1].join("f0")), inode(&store_of(&own_b, &shared(0))), "the new one: its own");
    verify_clean(&node, "after host-b moved out");
    let l = node.ferry_node_json(&["list", "host-b"]);
    assert_eq!(l[0]["tree_store"]["dir"], "host-b/store", "{l}");
    // The old snapshot restores from the store it links into.
    let to = td.join("restored-b1");
    let at = sb[0].file_name().unwrap().to_str().unwrap().to_owned();
    ok(node.cmd().args(["restore", "host-b", "www", "--at", &at, "--to"]).arg(&to));
    assert_eq!(fs::read_to_string(to.join("f0")).unwrap(), shared(0));

    // ... and a rescue of it works in place (root: a real overlay mount);
    // writes in the view never reach the group store.
    if ferry_tests::is_root() && ferry_tests::require_all(&["mount", "umount"]) {
        let view = td.join("view-b1");
        let _undo = Undo(&node, view.clone());
        ok(node.cmd().args(["rescue", "host-b", "www", "--at", &at]).arg(&view));
        assert_eq!(fs::read_to_string(view.join("f0")).unwrap(), shared(0));
        fs::write(view.join("f7"), "written in the rescue view\n").unwrap();
        fs::write(view.join("new"), "new in the view\n").unwrap();
        ok(node.cmd().args(["rescue", "--undo"]).arg(&view));
        assert_eq!(fs::read_to_string(store_of(&group, &shared(7))).unwrap(), shared(7));
        assert_eq!(fs::read_to_string(sb[0].join("f7")).unwrap(), shared(7));
        verify_clean(&node, "after a rescue of a group-store snapshot");
    }

    // Purge removes host-b's old snapshot: the group store's old f0 was
    // linked by it alone and goes; host-a's contents stay.
    let r = node.ferry_node_json(&["purge"]);
    assert_eq!(r["artifacts_removed"].as_array().map(Vec::len), Some(1), "{r}");
    assert!(!store_of(&group, &shared(0)).exists(), "nobody links the old f0 in the group store");
    assert!(store_of(&group, "host-a's new f0\n").exists() && store_of(&group, &shared(7)).exists());
    assert_eq!(contents(&group), 30);
    verify_clean(&node, "after host-b's purge");

    // A client in two share groups: the push is refused, with the reason.
    let out = node.admin_push("host-c in two share groups", |dir| {
        let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        conf = conf.replace("members = host-a\n", "members = host-a host-c\n");
        conf.push_str("\n[group ops]\nmembers = host-c\n\n[ferry share ops]\n");
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("client 'host-c' is a member of two share groups, 'ops' and 'team'"), "{}", text(&out));

    // host-c joins the group: only what the group store lacks is fetched;
    // its old snapshot stays in its own store until purged, then that
    // store's contents go (nothing links them).
    let out = node.admin_push("host-c joins team", |dir| {
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), conf.replace("members = host-a\n", "members = host-a host-c\n")).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    let rec = backup(&node, &c, &qc, &rc, "c2", 6);
    assert!(rec.contains("1 contents fetched"), "only the old f0 is new to the group store: {rec}");
    assert_eq!(contents(&group), 31);
    verify_clean(&node, "after host-c joined");
    let r = node.ferry_node_json(&["purge"]);
    assert_eq!(r["artifacts_removed"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(contents(&own_c), 0, "host-c's own store: nothing links it any more");
    assert_eq!(contents(&group), 31);
    verify_clean(&node, "after host-c's purge");
}
