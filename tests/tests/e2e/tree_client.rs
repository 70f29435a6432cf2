//! A snapshot tree from end to end with the real client (issue 10): an fs
//! source in `mode = "tree"` is scanned by `ferry`, pulled by the node over
//! real sshd, restored by `ferry-node restore` and compared with the
//! original (content, modes, owners, mtimes, links, odd names); a repeat
//! with one file changed hashes one file and `diff` names it; an unchanged
//! repeat hashes nothing, and `verify` finds every snapshot sound.

use std::fs;

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, eventually, ok};
use ferry_tests::{TestDir, require_all};

use crate::data::odd_tree;

/// The `files_hashed` of every tree scan in a `ferry --json backup --send` record.
fn files_hashed(out: &str) -> Vec<u64> {
    fn walk(v: &serde_json::Value, acc: &mut Vec<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(n) = m.get("files_hashed").and_then(|n| n.as_u64()) {
                    acc.push(n);
                }
                m.values().for_each(|x| walk(x, acc));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, acc)),
            _ => {}
        }
    }
    // The request's id, then the send report: two JSON documents.
    let mut acc = Vec::new();
    for v in serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>() {
        walk(&v.unwrap_or_else(|e| panic!("not JSON ({e}): {out}")), &mut acc);
    }
    acc
}

#[test]
fn a_tree_source_backs_up_restores_and_diffs_through_the_real_client() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("tree_client");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    odd_tree(&tree);
    // Names that are not UTF-8 (fetched by the `sftp` program, not the
    // pipelined session), one with every byte sftp's batch parser and its
    // remote glob read specially.
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt");
    let nasty = std::ffi::OsStr::from_bytes(b"\xff odd [a-z]*?\\ 'q' \"d\"\t#!-x");
    fs::write(tree.join(latin1), "latin-1 name\n").unwrap();
    fs::create_dir(tree.join("sub").join(latin1)).unwrap();
    fs::write(tree.join("sub").join(latin1).join(nasty), (0..70_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
        .unwrap();
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\nmode = \"tree\"\npath = \"{}\"\n", tree.display()),
    );
    // ferry init suggests the tree source's root, commented out: allowing
    // it is the administrator's decision, taken here.
    let suggested = format!("\n; tree-roots = {}\n", tree.canonicalize().unwrap().display());
    let alt = format!("\n; tree-roots = {}\n", tree.display());
    assert!(a.gitosis_section.contains(&suggested) || a.gitosis_section.contains(&alt), "{}", a.gitosis_section);
    a.gitosis_section.push_str(&format!("tree-roots = {}\n", tree.display()));
    node.enroll(&[&a]);

    let done = |n: usize| {
        eventually("the node to finish the tree requests", || node.pool_ids("host-a", "F").len() >= n);
        assert!(node.pool_ids("host-a", "E").is_empty(), "requests failed: {}", node.events());
    };
    let first = ok(a.cmd().args(["--json", "backup", "site", "--send"]));
    assert!(files_hashed(&first).iter().any(|&n| n > 0), "the first scan hashes the files: {first}");
    done(1);

    let found: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "site"])))
            .unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["module"], "tree", "{found}");

    let to = td.join("restored");
    ok(node.cmd().args(["restore", "host-a", "site", "--to", to.to_str().unwrap()]));
    let cmp = Compare { mode: true, owner: true, mtime: true, ..Default::default() };
    let d = diff(&manifest(&tree).unwrap(), &manifest(&to).unwrap(), &cmp);
    assert!(d.is_empty(), "restored tree differs: {d:#?}");
    let odd = std::path::Path::new("sub").join(latin1).join(nasty);
    assert_eq!(fs::read(to.join(&odd)).unwrap(), fs::read(tree.join(&odd)).unwrap(), "byte-identical");
    assert_eq!(fs::read(to.join(latin1)).unwrap(), b"latin-1 name\n");
    assert!(!node.events().contains("changed during the pull (journal"), "nothing left out: {}", node.events());

    // One file changed: one file hashed, and diff names it.
    fs::write(tree.join("private"), "another secret\n").unwrap();
    let second = ok(a.cmd().args(["--json", "backup", "site", "--send"]));
    assert_eq!(files_hashed(&second), vec![1], "only the changed file is hashed: {second}");
    done(2);
    let d = ok(node.cmd().args(["--json", "diff", "host-a", "site"]));
    assert!(d.contains("private"), "diff names the changed file: {d}");
    assert!(!d.contains("plain.txt"), "diff names only what changed: {d}");

    // Unchanged repeats. The file changed just before the second scan was
    // "racy" there (changed within the scan's racy window, so hashed but not
    // cached, as git does); the third scan may hash it once more and caches
    // it, since the whole second backup lies between its change and now.
    // The fourth reads nothing.
    let third = ok(a.cmd().args(["--json", "backup", "site", "--send"]));
    assert!(files_hashed(&third).iter().all(|&n| n <= 1), "at most the racy file again: {third}");
    done(3);
    let fourth = ok(a.cmd().args(["--json", "backup", "site", "--send"]));
    assert_eq!(files_hashed(&fourth), vec![0], "an unchanged repeat hashes nothing: {fourth}");
    done(4);
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

/// One client `name` with a tree source `site` of `files` files, enrolled
/// on a node: `ferry -vv backup site --send`, which must succeed and be
/// finished by the node without error. Returns the client's log.
fn push_one_tree(td: &TestDir, name: &str, files: usize) -> String {
    let node = Node::start(td, "backup1");
    let tree = td.mkdir("site");
    for i in 0..files {
        fs::write(tree.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    let mut a = Client::new_with(
        td,
        name,
        &[&node],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\nmode = \"tree\"\npath = \"{}\"\n", tree.display()),
    );
    a.gitosis_section.push_str(&format!("tree-roots = {}\n", tree.display()));
    node.enroll(&[&a]);
    let out = a.cmd().args(["-vv", "backup", "site", "--send"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("node acknowledged the push"), "{log}");
    eventually("the node to finish the tree request", || node.pool_ids(name, "F").len() == 1);
    assert!(node.pool_ids(name, "E").is_empty(), "{}", node.events());
    log
}

/// The push's ssh connection is made while the tree is scanned (a master
/// opened with `ssh -f -N` beside the scan), and the push goes through it.
#[test]
fn the_push_connection_is_opened_beside_the_scan() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("tree_warm");
    let log = push_one_tree(&td, "host-a", 50);
    assert!(log.contains("connection master ready"), "the master authenticated: {log}");
}

/// A `state_dir` too deep for ssh's control socket (a unix socket name
/// holds 87 bytes once ssh's temporary suffix is added): the push goes
/// without a connection master, and the client says why instead of
/// silently making a handshake per connection.
#[test]
fn a_state_dir_too_deep_for_a_control_socket_is_named_and_the_push_still_goes() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("tree_deep_state_dir");
    // The client's directory is named for it: with this name its control
    // socket is over 87 bytes below any test root.
    let log = push_one_tree(&td, "host-whose-name-makes-its-state-dir-too-deep-for-a-socket", 1);
    assert!(log.contains("ssh connections are not multiplexed"), "the reason is logged: {log}");
    assert!(log.contains("a shorter state_dir fixes it"), "{log}");
    assert!(!log.contains("connection master ready"), "no master was started: {log}");
}
