//! The node's pull of a snapshot tree (issue 10) over real sshd, with
//! manifests written the way the client's `mode = "tree"` does
//! (`ferry_tree::scan`) into host-a's export dir: a first backup, a repeat
//! with one file changed fetches only that content, an unchanged repeat
//! fetches nothing, a file changed between manifest and fetch is journaled
//! and not stored, and a hostile manifest is refused with its `E_TREE_*`
//! code with nothing changed outside host-a's area.

use std::fs;
use std::path::Path;

use ferry_tests::fleet::Client;
use ferry_tree::manifest::Sha256;
use ferry_tree::scan::{ScanOptions, scan as tree_scan};

use crate::hostile::kit::{Ep, Fleet, Plan, assert_done, assert_failed, rq, scan};

pub(crate) fn stamp(k: i64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    ferry_request::Stamp::from_unix(secs - 600 + k).to_string()
}

/// Scan `root` as the client does, write the manifest into host-a's export
/// dir as `name`, and return the `tree` request line.
pub(crate) fn manifest_request(
    a: &Client,
    root: &Path,
    name: &str,
    st: &str,
    edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> String {
    let m = tree_scan(&ScanOptions::new(root)).unwrap().manifest;
    let bytes = edit(m.to_bytes());
    let p = a.base.join("export").join(name);
    fs::write(&p, &bytes).unwrap();
    let e = Ep::of(a);
    format!(
        "tree {st} {} {} sha256={} size={} source=www\n",
        e.sftp_url(p.to_str().unwrap()),
        e.sftp_url(root.to_str().unwrap()),
        Sha256::of(&bytes).to_hex(),
        bytes.len()
    )
}

/// Contents in host-a's store.
pub(crate) fn store_count(f: &Fleet) -> usize {
    let d = f.node.data("host-a").join("store/sha256");
    fs::read_dir(&d).map(|rd| rd.flatten().map(|s| fs::read_dir(s.path()).unwrap().count()).sum()).unwrap_or(0)
}

pub(crate) fn snapshots(f: &Fleet) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(f.node.data("host-a").join("trees/www"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.') && !n.contains('.'));
    v.sort();
    v
}

/// A change to a manifest's text.
type Edit = fn(Vec<u8>) -> Vec<u8>;

#[test]
fn first_repeat_unchanged_changed_mid_pull_and_hostile() {
    let section = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    let Some(f) = Fleet::start("tree_pull", Plan { a_section: &section, ..Plan::default() }) else {
        return;
    };
    let root = f.a.base.join("tree");
    for i in 0..100 {
        let d = root.join(format!("d{}", i % 7));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("content {i}\n").repeat(i * 40 + 1)).unwrap();
    }
    fs::write(root.join("dup"), "content 0\n").unwrap();

    // First backup: every distinct content fetched, one snapshot.
    f.q.send(&[rq("t1", manifest_request(&f.a, &root, "m1.ftree", &stamp(1), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "t1");
    assert_eq!(store_count(&f), 100, "100 distinct contents (dup shares f0's)");
    let snaps = snapshots(&f);
    assert_eq!(snaps.len(), 1);
    let snap = f.node.data("host-a").join("trees/www").join(&snaps[0]);
    for i in [0, 50, 99] {
        let rel = format!("d{}/f{i}", i % 7);
        assert_eq!(fs::read(snap.join(&rel)).unwrap(), fs::read(root.join(&rel)).unwrap(), "{rel}");
    }

    // One file changed: exactly one new content.
    fs::write(root.join("d1/f50"), "changed\n").unwrap();
    f.q.send(&[rq("t2", manifest_request(&f.a, &root, "m2.ftree", &stamp(2), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "t2");
    assert_eq!(store_count(&f), 101);
    assert_eq!(snapshots(&f).len(), 2);

    // Unchanged repeat: nothing new.
    f.q.send(&[rq("t3", manifest_request(&f.a, &root, "m3.ftree", &stamp(3), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "t3");
    assert_eq!(store_count(&f), 101);

    // Changed between manifest and fetch: journaled, not stored, the
    // snapshot's manifest leaves it out.
    fs::write(root.join("d2/f2"), "new before the scan\n").unwrap();
    let line = manifest_request(&f.a, &root, "m4.ftree", &stamp(4), |b| b);
    fs::write(root.join("d2/f2"), "changed after the scan\n").unwrap();
    f.q.send(&[rq("t4", line)]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "t4");
    assert_eq!(store_count(&f), 101, "the changed content is not stored");
    let snaps = snapshots(&f);
    let last = f.node.data("host-a").join("trees/www").join(snaps.last().unwrap());
    assert!(!last.join("d2/f2").exists());
    assert!(last.join("d2/f9").exists());
    let journal = fs::read_to_string(last.with_extension("changed")).unwrap();
    assert_eq!(journal, "d2/f2\n");
    let stored = String::from_utf8(ferry_tree::snapshot::read_manifest_text(&last, u64::MAX).unwrap()).unwrap();
    assert!(!stored.contains("d2/f2 "), "the stored manifest matches the snapshot");

    // Hostile manifests: refused with their code, nothing stored.
    let before = store_count(&f);
    let n = snapshots(&f).len();
    let cases: [(&str, &str, Edit); 4] = [
        ("h1", "E_TREE_FORMAT", |_| b"ferry-tree 9\nend 0 0\n".to_vec()),
        ("h2", "E_TREE_PATH", |b| {
            String::from_utf8(b).unwrap().replacen("d path=d0 ", "d path=../d0 ", 1).into_bytes()
        }),
        ("h3", "E_TREE_PATH", |b| String::from_utf8(b).unwrap().replacen("d path=d0 ", "d path=/d0 ", 1).into_bytes()),
        ("h4", "E_TREE_DUP", |b| {
            let t = String::from_utf8(b).unwrap();
            let line = t.lines().find(|l| l.starts_with("d path=d0 ")).unwrap().to_owned();
            t.replacen(&format!("{line}\n"), &format!("{line}\n{line}\n"), 1).into_bytes()
        }),
    ];
    for (k, (id, code, edit)) in cases.into_iter().enumerate() {
        f.q.send(&[rq(id, manifest_request(&f.a, &root, &format!("{id}.ftree"), &stamp(10 + k as i64), edit))]);
        scan(&f.node, "host-a");
        assert_failed(&f.node, "host-a", id, code);
    }
    assert_eq!((store_count(&f), snapshots(&f).len()), (before, n));
    // host-b's area untouched by all of it.
    assert!(!f.node.data("host-b").join("trees").exists());
    assert!(!f.node.data("host-b").join("store").exists());
}

/// kill -9 after the first content entered the store: the request stays
/// pending, the store keeps what was put, and the next scan fetches only
/// the rest and publishes the snapshot.
#[test]
fn killed_during_the_content_fetch_resumes_with_the_rest() {
    let section = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    // One content per batch: the crash point after the first commit.
    let plan = Plan { a_section: &section, node: "[tree]\nbatch_contents = 1\n", ..Plan::default() };
    let Some(f) = Fleet::start("tree_resume", plan) else {
        return;
    };
    let root = f.a.base.join("tree");
    fs::create_dir_all(&root).unwrap();
    for i in 0..40 {
        fs::write(root.join(format!("f{i}")), format!("resume {i}\n").repeat(i * 100 + 1)).unwrap();
    }
    f.q.send(&[rq("r1", manifest_request(&f.a, &root, "r1.ftree", &stamp(1), |b| b))]);
    let out = ferry_tests::fleet::run(
        f.node.cmd().env("FERRY_CRASH_AT", "tree:after-put").args(["scan", "--client", "host-a"]),
    );
    assert!(!out.status.success(), "the crash point killed the scan");
    assert_eq!(store_count(&f), 1, "the first content stays in the store");
    assert!(snapshots(&f).is_empty(), "nothing half-published");
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "r1");
    assert_eq!(store_count(&f), 40);
    assert_eq!(snapshots(&f).len(), 1);
    assert!(f.node.events().contains("39 contents fetched"), "only the rest was fetched: {}", f.node.events());
    // A temporary of a killed writer (a pid above any pid_max) is swept by
    // the client's next pull; the store's contents stay.
    let orphan = f.node.data("host-a").join("store/tmp/put-999999999-0");
    fs::write(&orphan, "half a content").unwrap();
    f.q.send(&[rq("r2", manifest_request(&f.a, &root, "r2.ftree", &stamp(2), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "r2");
    assert!(!orphan.exists(), "the killed pull's temporary was removed");
    assert_eq!(store_count(&f), 40);
}

/// node.toml `[tree] max_entries`: a larger manifest is refused with
/// E_TREE_LIMIT before anything is fetched, and no catalog row appears.
#[test]
fn a_manifest_over_the_node_limits_is_refused() {
    let section = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    let plan = Plan { a_section: &section, node: "[tree]\nmax_entries = 5\n", ..Plan::default() };
    let Some(f) = Fleet::start("tree_limits", plan) else {
        return;
    };
    let root = f.a.base.join("tree");
    fs::create_dir_all(&root).unwrap();
    for i in 0..10 {
        fs::write(root.join(format!("f{i}")), format!("limit {i}\n")).unwrap();
    }
    f.q.send(&[rq("l1", manifest_request(&f.a, &root, "l1.ftree", &stamp(1), |b| b))]);
    scan(&f.node, "host-a");
    assert_failed(&f.node, "host-a", "l1", "E_TREE_LIMIT");
    assert_eq!((store_count(&f), snapshots(&f).len()), (0, 0));
    let rows = f.node.ferry_node_json(&["find", "--client", "host-a"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(0), "{rows}");
    f.guard.check("tree limits");
}

/// kill -9 between the publishing rename and the catalog row
/// (`tree:after-build`): the re-run finds the snapshot this request
/// published (its name was recorded before the rename) and writes only the
/// catalog row: one snapshot directory, one row, `verify` clean.
#[test]
fn killed_between_publish_and_catalog_row_publishes_once() {
    let section = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    let Some(f) = Fleet::start("tree_publish_once", Plan { a_section: &section, ..Plan::default() }) else {
        return;
    };
    let root = f.a.base.join("tree");
    fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..12 {
        fs::write(root.join(format!("sub/f{i}")), format!("publish {i}\n").repeat(i * 30 + 1)).unwrap();
    }
    f.q.send(&[rq("p1", manifest_request(&f.a, &root, "p1.ftree", &stamp(1), |b| b))]);
    let out = ferry_tests::fleet::run(
        f.node.cmd().env("FERRY_CRASH_AT", "tree:after-build").args(["scan", "--client", "host-a"]),
    );
    assert!(!out.status.success(), "the crash point killed the scan");
    assert_eq!(snapshots(&f).len(), 1, "published before the kill");
    let rows = f.node.ferry_node_json(&["find", "--client", "host-a"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(0), "no row yet: {rows}");

    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "p1");
    let snaps = snapshots(&f);
    assert_eq!(snaps.len(), 1, "the re-run published no second snapshot: {snaps:?}");
    assert!(f.node.events().contains("already published"), "{}", f.node.events());
    let rows = f.node.ferry_node_json(&["find", "--client", "host-a"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["path"].as_str(), Some(format!("host-a/trees/www/{}", snaps[0]).as_str()), "{rows:?}");
    let partial: Vec<_> = fs::read_dir(f.node.data("host-a").join("trees/www/.partial")).unwrap().flatten().collect();
    assert!(partial.is_empty(), "the work area is clean: {partial:?}");
    let v = f.node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    let snap = f.node.data("host-a").join("trees/www").join(&snaps[0]);
    assert_eq!(fs::read(snap.join("sub/f7")).unwrap(), fs::read(root.join("sub/f7")).unwrap());
}
