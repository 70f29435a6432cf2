//! What a compromised client's snapshot-tree manifest and gate can do to
//! the node's tree pull (issue 10, SECURITY.md section B): paths below a
//! symlink or a regular file, hard-link groups that mix types or name
//! members the manifest does not hold, a manifest replaced after the
//! request named its digest, and sizes or digests the gate does not serve.
//!
//! A refused manifest ends the request in `E` with its code, and leaves
//! host-a's whole data area (store, snapshots, `.partial`) and the catalog
//! exactly as they were. A size or digest the gate does not match cannot be
//! told apart from a file that changed after the client's scan (issue 10
//! item 2): the file is left out, journaled, named with `E_TREE_CONTENT`
//! in the result, and its bytes are stored under no digest at all. The
//! guard checks the rest of the node and host-b in both cases, and the
//! refusals reach the administrators' mail (a real SMTP sink) with their
//! codes.

use std::fs;

use ferry_tests::fleet::eventually;
use ferry_tests::hash_tree;
use ferry_tree::manifest::Sha256;

use super::kit::{Fleet, Plan, assert_done, assert_failed, events, rq, scan};
use crate::tree_pull::{manifest_request, snapshots, stamp, store_count};

/// The manifest's text with the trailer recomputed (entries and file
/// bytes), so a case reaches the check it is aimed at.
fn retrailed(text: &str) -> Vec<u8> {
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with("end ")).collect();
    let entries = body.iter().filter(|l| l.contains(" path=")).count();
    let bytes: u64 = body
        .iter()
        .filter(|l| l.starts_with("f "))
        .filter_map(|l| l.split(' ').find_map(|t| t.strip_prefix("size=")).and_then(|s| s.parse::<u64>().ok()))
        .sum();
    format!("{}\nend {entries} {bytes}\n", body.join("\n")).into_bytes()
}

/// The line of `path` in a manifest's text.
fn line_of<'t>(text: &'t str, path: &str) -> &'t str {
    let key = format!(" path={path} ");
    text.lines().find(|l| l.contains(&key)).unwrap_or_else(|| panic!("no {path} in {text}"))
}

/// Edits the manifest's text, then fixes the trailer.
fn edit(b: Vec<u8>, f: impl FnOnce(String) -> String) -> Vec<u8> {
    retrailed(&f(String::from_utf8(b).unwrap()))
}

/// A copy of `plain`'s line under another path, inserted after `after`'s.
fn insert_below(t: String, after: &str, path: &str) -> String {
    let file = line_of(&t, "plain").replacen(" path=plain ", &format!(" path={path} "), 1);
    let anchor = line_of(&t, after).to_owned();
    t.replacen(&format!("{anchor}\n"), &format!("{anchor}\n{file}\n"), 1)
}

/// `field=old` replaced by `field=new` on the line of `path`.
fn set(t: String, path: &str, field: &str, new: &str) -> String {
    let line = line_of(&t, path).to_owned();
    let old = line.split(' ').find(|w| w.starts_with(&format!("{field}="))).unwrap().to_owned();
    t.replacen(&line, &line.replacen(&old, &format!("{field}={new}"), 1), 1)
}

type Edit = Box<dyn FnOnce(Vec<u8>) -> Vec<u8>>;

#[test]
fn tr01_hostile_manifests_are_refused_and_lies_are_never_stored() {
    let section = format!("tree-roots = {}\n", ferry_tests::test_root().display());
    let Some(f) = Fleet::start("hostile_trees", Plan { a_section: &section, mail: true, ..Plan::default() }) else {
        return;
    };
    let root = f.a.base.join("tree");
    fs::create_dir_all(root.join("a-dir")).unwrap();
    fs::write(root.join("a-dir/inner"), "inner\n").unwrap();
    fs::write(root.join("hl1"), "linked\n").unwrap();
    fs::hard_link(root.join("hl1"), root.join("hl2")).unwrap();
    fs::write(root.join("lie-big"), "0123456789").unwrap();
    fs::write(root.join("lie-digest"), "same size A\n").unwrap();
    fs::write(root.join("lie-short"), "short\n").unwrap();
    std::os::unix::fs::symlink("a-dir", root.join("ln")).unwrap();
    fs::write(root.join("plain"), "plain\n").unwrap();

    // A first, honest backup: what the refusals must leave as it is.
    f.q.send(&[rq("ok1", manifest_request(&f.a, &root, "ok1.ftree", &stamp(1), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "ok1");
    let data = f.node.data("host-a");
    let before = hash_tree(&data);
    let rows_before = f.node.ferry_node_json(&["find", "--client", "host-a"]);

    let cases: Vec<(&str, &str, Edit)> = vec![
        ("tr-below-symlink", "E_TREE_PATH", Box::new(|b| edit(b, |t| insert_below(t, "ln", "ln/x")))),
        ("tr-below-file", "E_TREE_PATH", Box::new(|b| edit(b, |t| insert_below(t, "plain", "plain/x")))),
        (
            "tr-link-file-symlink",
            "E_TREE_LINK",
            Box::new(|b| {
                edit(b, |t| {
                    let l = line_of(&t, "ln").to_owned();
                    t.replacen(&l, &format!("{l} link=1"), 1)
                })
            }),
        ),
        (
            "tr-link-file-dir",
            "E_TREE_FORMAT",
            Box::new(|b| {
                edit(b, |t| {
                    let l = line_of(&t, "a-dir").to_owned();
                    t.replacen(&l, &format!("{l} link=1"), 1)
                })
            }),
        ),
        (
            // hl2's group partner is not in the manifest.
            "tr-link-outside",
            "E_TREE_LINK",
            Box::new(|b| {
                edit(b, |t| {
                    let l = line_of(&t, "hl1").to_owned();
                    t.replacen(&format!("{l}\n"), "", 1)
                })
            }),
        ),
        ("tr-link-unknown-group", "E_TREE_LINK", Box::new(|b| edit(b, |t| set(t, "hl2", "link", "7")))),
    ];
    let mut ids = Vec::new();
    for (k, (id, code, e)) in cases.into_iter().enumerate() {
        f.q.send(&[rq(id, manifest_request(&f.a, &root, &format!("{id}.ftree"), &stamp(10 + k as i64), e))]);
        scan(&f.node, "host-a");
        let why = assert_failed(&f.node, "host-a", id, code);
        assert!(!why.is_empty(), "{id}: a reason");
        ids.push(id);
    }

    // The manifest replaced on the client after the request named it: its
    // sha256= (same size), size= (shorter) or the download cap (larger, the
    // cap is size=) no longer holds.
    for (k, (id, code, other)) in [
        ("tr-swapped-same-size", "E_FETCH_DIGEST_MISMATCH", None),
        ("tr-swapped-shorter", "E_FETCH_SIZE_MISMATCH", Some(false)),
        ("tr-swapped-larger", "E_FETCH_LIMIT", Some(true)),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{id}.ftree");
        let line = manifest_request(&f.a, &root, &name, &stamp(30 + k as i64), |b| b);
        let p = f.a.base.join("export").join(&name);
        let honest = fs::read_to_string(&p).unwrap();
        let forged = match other {
            None => honest.replacen("mode=0644", "mode=0600", 1),
            Some(true) => format!("{honest}\n"),
            Some(false) => honest[..honest.len() - 1].to_owned(),
        };
        assert_ne!(forged, honest);
        fs::write(&p, forged).unwrap();
        f.q.send(&[rq(id, line)]);
        scan(&f.node, "host-a");
        assert_failed(&f.node, "host-a", id, code);
        ids.push(id);
    }
    assert_eq!(hash_tree(&data), before, "host-a's data area changed: {ids:?}");
    assert_eq!(f.node.ferry_node_json(&["find", "--client", "host-a"]), rows_before, "catalog rows changed");
    f.guard.check("refused tree manifests");
    // The administrators are told, with each reason code.
    let smtp = f.smtp.as_ref().expect("the plan starts an SMTP sink");
    let codes = ["E_TREE_PATH", "E_TREE_LINK", "E_TREE_FORMAT", "E_FETCH_DIGEST_MISMATCH"];
    let bodies = || smtp.messages().iter().map(|m| m.body.clone()).collect::<String>();
    eventually("the refusals to be mailed with their codes", || codes.iter().all(|c| bodies().contains(c)));
    assert!(bodies().contains("tr-below-symlink"), "the mail names the request: {}", bodies());

    // Sizes and digests the gate does not serve: a larger file than
    // promised, a shorter one, the same size with other bytes.
    let n = snapshots(&f).len();
    let contents = store_count(&f);
    let lies = [
        ("lie-big", "0123".to_owned(), 4),
        ("lie-short", "x".repeat(100), 100),
        ("lie-digest", "same size B\n".to_owned(), 12),
    ];
    let claimed: Vec<Sha256> = lies.iter().map(|(_, c, _)| Sha256::of(c.as_bytes())).collect();
    let forged = claimed.clone();
    f.q.send(&[rq(
        "tr-lies",
        manifest_request(&f.a, &root, "tr-lies.ftree", &stamp(40), move |b| {
            edit(b, |mut t| {
                for ((path, _, size), sha) in lies.iter().zip(&forged) {
                    t = set(t, path, "size", &size.to_string());
                    t = set(t, path, "sha256", &sha.to_hex());
                }
                t
            })
        }),
    )]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "tr-lies");
    let snaps = snapshots(&f);
    assert_eq!(snaps.len(), n + 1);
    let last = data.join("trees/www").join(snaps.last().unwrap());
    for p in ["lie-big", "lie-short", "lie-digest"] {
        assert!(!last.join(p).exists(), "{p} is in the snapshot");
    }
    assert_eq!(fs::read(last.join("plain")).unwrap(), b"plain\n");
    let journal = fs::read_to_string(last.with_extension("changed")).unwrap();
    assert_eq!(journal, "lie-big\nlie-digest\nlie-short\n");
    let stored = String::from_utf8(ferry_tree::snapshot::read_manifest_text(&last, u64::MAX).unwrap()).unwrap();
    assert!(!stored.contains("lie-"), "the stored manifest holds only what the snapshot holds");
    for sha in &claimed {
        let hex = sha.to_hex();
        assert!(!data.join("store/sha256").join(&hex[..2]).join(&hex).exists(), "stored under a lie: {hex}");
    }
    assert_eq!(store_count(&f), contents, "nothing new was stored");
    let done = events(&f.node)
        .into_iter()
        .find(|e| e["request"] == "tr-lies" && e["event"] == "request_done")
        .unwrap_or_else(|| panic!("no request_done: {}", f.node.events()));
    let text = done.to_string();
    assert_eq!(text.matches("E_TREE_CONTENT").count(), 3, "each left-out file with its code: {text}");
    for p in ["lie-big", "lie-short", "lie-digest"] {
        assert!(text.contains(p), "{p} named: {text}");
    }
    f.guard.check("tree content lies");
}
