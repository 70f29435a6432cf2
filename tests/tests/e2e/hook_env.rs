//! Issue 9, point 2: the client's post-update hook starts its background
//! `ferry send` through the runner, with the runner's cleared environment
//! (plus `HOME`, `USER`, `LOGNAME`, `TZ`). Before, the send inherited the
//! pusher's whole environment: a dynamic-linker preload, Ferry's own test
//! switches and git's variables all reached it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ferry_tests::fleet::{Client, Node, eventually, run, text};
use ferry_tests::{TestDir, for_each_ref, git, git_cmd, require_all};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

#[test]
fn the_hooks_send_does_not_see_the_pushers_environment() {
    if !tools() {
        return;
    }
    let td = TestDir::new("hook_env");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");

    // What a hostile pusher sets: a preload (the loader names a library it
    // cannot load in the stderr of every process that sees the variable),
    // a crash switch that would kill the send right after its push, and an
    // ssh command that would leave a canary.
    let canary = td.join("git-ssh-command-ran");
    let script = td.join("hostile-ssh");
    fs::write(&script, format!("#!/bin/sh\ntouch {}\nexec ssh \"$@\"\n", canary.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let preload = "/nonexistent/ferry-hostile-preload.so";

    fs::write(work.join("README"), "hello\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "--quiet", "-m", "hostile push"]);
    let out = run(git_cmd(&work)
        .env("LD_PRELOAD", preload)
        .env("FERRY_CRASH_AT", "send:after-push")
        .env("GIT_SSH_COMMAND", &script)
        .args(["push", "--quiet", "origin", "HEAD:master"]));
    assert!(out.status.success(), "push failed: {}", text(&out));
    // The variable did reach the pusher's side: the hook itself saw it.
    assert!(text(&out).contains(preload), "the preload is not visible in the push: {}", text(&out));

    let mirror = node.data("host-a").join("git/project.git");
    eventually("the node mirror to hold the pushed refs", || {
        mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare)
    });
    let log = a.base.join("state/log/send.log");
    let sent = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(!sent.contains(preload), "LD_PRELOAD reached the background send:\n{sent}");

    // The send was not killed at `send:after-push`: it recorded the node's
    // acknowledgement, and the request ended in F.
    eventually("the client pool to drain to F", || {
        a.pool_ids("backup1", "C").is_empty()
            && a.pool_ids("backup1", "P").is_empty()
            && !a.pool_ids("backup1", "F").is_empty()
    });
    assert!(!canary.exists(), "the pusher's GIT_SSH_COMMAND ran");
    assert!(node.pool_ids("host-a", "E").is_empty(), "node errors: {}", node.events());
}
