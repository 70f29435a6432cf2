//! The spine: git repositories backed up end to end through queue repos,
//! with gitosis enrollment.

use std::fs;

use ferry_tests::{TestDir, for_each_ref, git, git_cmd, require_all};

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, ssh_command, text};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

#[test]
fn push_to_client_repo_ends_in_node_mirror_and_restores() {
    if !tools() {
        return;
    }
    let td = TestDir::new("spine_push");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);

    let (bare, work) = a.repo("project");
    commit_and_push(&work, "README", "hello\n");
    git(&work, &["tag", "v1"]);
    ok(git_cmd(&work).args(["push", "--quiet", "origin", "v1"]));
    let mirror = node.data("host-a").join("git/project.git");
    eventually("the node mirror to hold host-a's refs", || {
        mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare)
    });

    // A second push is fetched incrementally into the same mirror.
    let pack_count = |d: &std::path::Path| fs::read_dir(d.join("objects/pack")).map(|r| r.count()).unwrap_or(0);
    let before = pack_count(&mirror);
    commit_and_push(&work, "README", "hello again\n");
    eventually("the second commit to reach the mirror", || for_each_ref(&mirror) == for_each_ref(&bare));
    assert!(pack_count(&mirror) > before, "an incremental fetch adds a pack, the mirror is not re-created");

    // Every request ended in F on both sides; none in E.
    eventually("client pool drained", || {
        a.pool_ids("backup1", "C").is_empty() && a.pool_ids("backup1", "P").is_empty()
    });
    assert!(a.pool_ids("backup1", "F").len() >= 3);
    assert!(node.pool_ids("host-a", "E").is_empty(), "node errors: {}", node.events());

    // list shows it, as text and JSON.
    let listed = ok(node.cmd().args(["--json", "list", "host-a"]));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v[0]["git"][0]["name"], "git/project.git");
    assert_eq!(v[0]["git"][0]["heads"], 1);
    assert_eq!(v[0]["git"][0]["tags"], 1);

    // restore gives back the same refs and objects, fsck clean.
    let to = td.join("restored.git");
    ok(node.cmd().args(["restore", "host-a", "project", "--to", to.to_str().unwrap()]));
    assert_eq!(for_each_ref(&to), for_each_ref(&bare));
    ok(git_cmd(&to).args(["fsck", "--strict", "--no-dangling"]));
    let orig_objects = git(&bare, &["rev-list", "--objects", "--all"]);
    let rest_objects = git(&to, &["rev-list", "--objects", "--all"]);
    assert_eq!(orig_objects, rest_objects);
}

#[test]
fn keys_only_reach_their_own_queue() {
    if !tools() {
        return;
    }
    let td = TestDir::new("spine_acl");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);
    let b_key = b.base.join("state/ssh/id_ed25519");
    let kh = td.join("kh");
    node.sshd.write_known_hosts(&kh);
    let b_ssh = ssh_command(&b_key, &kh);

    // B cannot push A's queue, nor gitosis-admin, and is told why.
    let scratch = td.join("scratch");
    git(&td.path, &["init", "--quiet", scratch.to_str().unwrap()]);
    ferry_tests::fleet::commit_and_push_local(&scratch);
    for (repo, msg) in [
        ("queue/host-a.git", "Repository write access denied"),
        ("gitosis-admin.git", "Repository write access denied"),
    ] {
        let out = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", &b_ssh).args(["push", &node.url(repo), "HEAD:master"]));
        assert!(!out.status.success(), "B pushed {repo}");
        assert!(text(&out).contains(msg), "{repo}: {}", text(&out));
    }
    // B can push its own queue (fast-forward only, master only).
    let own = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", &b_ssh).args([
        "push",
        &node.url("queue/host-b.git"),
        "HEAD:refs/heads/other",
    ]));
    assert!(!own.status.success() && text(&own).contains("only refs/heads/master"), "{}", text(&own));
    // An unknown key gets nothing.
    let stranger = td.join("stranger");
    ferry_tests::ssh_keygen(&stranger, "stranger");
    let out = run(git_cmd(&scratch)
        .env("GIT_SSH_COMMAND", ssh_command(&stranger, &kh))
        .args(["ls-remote", &node.url("queue/host-a.git")]));
    assert!(!out.status.success());
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // A shell is never given.
    let mut sh = ferry_tests::ssh_cmd(&b_key, &kh, &node.sshd);
    let out = run(sh.arg("id"));
    assert!(!out.status.success());
    assert!(text(&out).contains("Unknown command denied"), "{}", text(&out));
}

/// A repository that belongs to another account than the client's export
/// account (the usual case: the git service owns it, `ferry` serves it) is
/// mirrored: the gate declares exactly that repository safe to git, which
/// otherwise refuses it as "dubious ownership". Found by the by-hand setup
/// (issue 15), where every real repository failed with E_FETCH_FAILED.
#[test]
fn a_repository_owned_by_another_account_is_mirrored() {
    if !tools() || !ferry_tests::is_root() {
        return;
    }
    let td = TestDir::new("spine_owner");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    // nobody owns the repository now; the gate runs as root, which git
    // treats like any other account that does not own it.
    ok(std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(&bare));
    fs::write(work.join("README"), "owned by nobody\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    // The test's own push into the repository needs the same declaration.
    ok(git_cmd(&work).args(["-c", "safe.directory=*", "push", "--quiet", "origin", "HEAD:master"]));

    let mirror = node.data("host-a").join("git/project.git");
    eventually("the node mirror to hold the pushed commit", || {
        git_cmd(&mirror)
            .args(["rev-parse", "--verify", "-q", "refs/heads/master"])
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == head)
            || !node.pool_ids("host-a", "E").is_empty()
    });
    assert!(node.pool_ids("host-a", "E").is_empty(), "node errors: {}", node.events());
    assert_eq!(git(&mirror, &["rev-parse", "refs/heads/master"]), head);
}
