//! Crash safety of the two pools: `send`, the queue hook's extraction and
//! `scan` are killed (SIGKILL, via the `FERRY_CRASH_AT` crash points)
//! between each pair of state changes; the next normal run must finish
//! every request exactly once.

use ferry_tests::{TestDir, for_each_ref, git_cmd, pool_states, require_all};

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

fn killed(out: &std::process::Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

#[test]
fn send_killed_at_every_state_change_delivers_each_request_once() {
    if !tools() {
        return;
    }
    let td = TestDir::new("crash_send");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    commit_and_push(&work, "f", "1\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("first mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));

    let points =
        ["send:after-c-to-p", "send:after-commit", "send:after-push", "send:after-ack-ref", "send:after-p-to-f"];
    for (i, p) in points.iter().enumerate() {
        ok(a.cmd().args(["request", "dummy", &format!("w{i}")]));
        ok(a.cmd().args(["request", "git", bare.to_str().unwrap()]));
        let out = run(a.cmd().env("FERRY_CRASH_AT", p).args(["send", "--wait"]));
        assert!(killed(&out), "{p}: send was not killed: {}", text(&out));
        let out = run(a.cmd().args(["send", "--wait", "--force"]));
        assert!(out.status.success(), "{p}: recovery send failed: {}", text(&out));
    }
    let client_states = pool_states(a.base.join("state/pools/backup1"), &["i", "C", "P", "F", "E"]);
    for (id, st) in &client_states {
        assert_eq!(st, &vec!["F".to_owned()], "client request {id} ended in {st:?}");
    }
    assert_eq!(client_states.len(), 1 + 2 * points.len());
    // On the node: each pushed request arrives once and ends in F once.
    eventually("node processed everything", || {
        let s = pool_states(node.pool("host-a"), &["RQ", "P", "F", "E"]);
        s.len() == client_states.len() && s.values().all(|v| v == &vec!["F".to_owned()])
    });
    let node_ids: Vec<String> = pool_states(node.pool("host-a"), &["RQ", "P", "F", "E"]).into_keys().collect();
    let client_ids: Vec<String> = client_states.keys().map(|id| format!("{id}-1")).collect();
    assert_eq!(node_ids, client_ids, "every request reached the node exactly once");
}

#[test]
fn scan_and_extraction_killed_at_every_state_change_finish_each_request_once() {
    if !tools() {
        return;
    }
    let td = TestDir::new("crash_scan");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    commit_and_push(&work, "f", "1\n");
    let mirror = node.data("host-a").join("git/project.git");

    // Scan crashes.
    let points = ["scan:after-rq-to-p", "scan:after-job", "scan:after-f"];
    for (i, p) in points.iter().enumerate() {
        ok(a.cmd().args(["request", "dummy", &format!("s{i}")]));
        commit_and_push(&work, "f", &format!("{i}\n"));
        eventually("client delivered", || {
            a.pool_ids("backup1", "C").is_empty() && a.pool_ids("backup1", "P").is_empty()
        });
        let out = run(node.cmd().env("FERRY_CRASH_AT", p).args(["scan"]));
        assert!(killed(&out), "{p}: scan was not killed: {}", text(&out));
        ok(node.cmd().args(["scan"]));
    }
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare));

    // A request that fails, killed between writing its reason and the rename.
    let queue = node.srv().join("repositories/queue/host-a.git");
    let scratch = td.join("scratch");
    ok(git_cmd(&td.path).args(["clone", "--quiet", queue.to_str().unwrap(), scratch.to_str().unwrap()]));
    std::fs::write(scratch.join("RQ20261122T000000Z-badbad01-1"), "git  two-spaces\n").unwrap();
    ok(git_cmd(&scratch).args(["add", "-A"]));
    ok(git_cmd(&scratch).args(["commit", "--quiet", "-m", "bad"]));
    ok(git_cmd(&scratch).env("FERRY_USER", "host-a").args(["push", "--quiet", "origin", "HEAD:master"]));
    let out = run(node.cmd().env("FERRY_CRASH_AT", "scan:after-why").args(["scan"]));
    assert!(killed(&out), "scan was not killed at after-why: {}", text(&out));
    let _ = run(node.cmd().args(["scan"]));
    let s = pool_states(node.pool("host-a"), &["RQ", "P", "F", "E"]);
    assert_eq!(s["20261122T000000Z-badbad01-1"], vec!["E".to_owned()]);

    // Extraction crashes: pushes that reach the queue repo directly (local
    // transport, the real hooks) with the hook killed at each step; the
    // next scan's catch-up extraction must pick everything up once.
    for (i, p) in ["extract:after-incomplete", "extract:mid-rename", "extract:before-marker"].iter().enumerate() {
        for j in 0..2 {
            std::fs::write(scratch.join(format!("RQ20261122T00000{i}Z-cafe000{j}-1")), format!("dummy x{i}{j}\n"))
                .unwrap();
        }
        ok(git_cmd(&scratch).args(["add", "-A"]));
        ok(git_cmd(&scratch).args(["commit", "--quiet", "-m", p]));
        let out = run(git_cmd(&scratch).env("FERRY_USER", "host-a").env("FERRY_CRASH_AT", p).args([
            "push",
            "origin",
            "HEAD:master",
        ]));
        assert!(out.status.success(), "{p}: the push itself succeeds: {}", text(&out));
        ok(node.cmd().args(["scan"]));
    }
    let s = pool_states(node.pool("host-a"), &["RQ", "P", "F", "E"]);
    for (id, st) in &s {
        assert_eq!(st.len(), 1, "{id} is in {st:?}");
        assert!(st[0] == "F" || id.contains("badbad"), "{id} ended in {st:?}");
    }
    for i in 0..3 {
        for j in 0..2 {
            assert!(s.contains_key(&format!("20261122T00000{i}Z-cafe000{j}-1")), "request {i}{j} was lost");
        }
    }
    assert!(!node.pool("host-a").join(".incomplete").exists(), "no .incomplete left after recovery");
    let leftovers: Vec<_> = std::fs::read_dir(node.pool("host-a"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    ok(git_cmd(&mirror).args(["fsck", "--strict", "--no-dangling"]));
}
