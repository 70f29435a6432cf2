//! The node pulls from the enrolled port, whatever port the request names
//! or leaves out. A port-less `ssh://user@<enrolled address>/path` used to
//! go to port 22 of that address (and `git://` to 9418): where one address
//! fronts several hosts by port (NAT, a bastion), a client could aim the
//! node's pull key at another host. Here the enrolled sshd / git daemon
//! listen on random ports and nothing listens on 22 or 9418 of the
//! client's address, so a pull reaches the repository only through the
//! enrolled port.

use std::fs;

use ferry_tests::fleet::{Client, Node, eventually, ok};
use ferry_tests::{GitDaemon, TestDir, for_each_ref, git};

use crate::hostile::kit;

/// A client whose script module `portless` asks the node for `$2` as it
/// is (a compromised client writes what it likes).
fn client_with_portless(td: &TestDir, node: &Node) -> Client {
    kit::script_client(td, node, "host-a", &[("portless", "#!/bin/sh\necho \"git $2\"\n")], "")
}

/// A bare repository with one commit, without Ferry's hook (no request of
/// its own).
fn repo(c: &Client, name: &str) -> std::path::PathBuf {
    let bare = c.git_root.join(format!("{name}.git"));
    git(&c.base, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
    let work = c.base.join(format!("work-{name}"));
    git(&c.base, &["clone", "--quiet", bare.to_str().unwrap(), work.to_str().unwrap()]);
    fs::write(work.join("README"), "hello\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    git(&work, &["push", "--quiet", "origin", "HEAD:master"]);
    bare
}

fn pull_portless(node: &Node, c: &Client, url: &str) -> String {
    ok(c.cmd().args(["request", "portless", url]));
    ok(c.cmd().args(["send", "--wait"]));
    let _ = ok(node.cmd().args(["scan", "--client", "host-a"]));
    eventually("the request to end", || {
        !node.pool_ids("host-a", "F").is_empty() || !node.pool_ids("host-a", "E").is_empty()
    });
    node.events()
}

#[test]
fn a_portless_ssh_url_is_pulled_from_the_enrolled_port() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("enrolled_port_ssh");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = client_with_portless(&td, &node);
    node.enroll(&[&a]);
    assert_ne!(a.sshd.port(), 22);
    let bare = repo(&a, "project");
    let url = format!("ssh://{}@{}{}", a.sshd.user(), a.sshd.addr(), bare.display());
    let events = pull_portless(&node, &a, &url);
    assert!(node.pool_ids("host-a", "E").is_empty(), "the pull failed: {events}");
    let mirror = node.data("host-a").join("git/project.git");
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare), "mirrored through the enrolled port");
    let origin = fs::read_to_string(mirror.join("ferry-origin")).unwrap();
    assert_eq!(origin.trim(), format!("ssh://{}@{}:{}{}", a.sshd.user(), a.sshd.addr(), a.sshd.port(), bare.display()));

    // The same repository asked for with its port later is the same origin.
    let with_port = format!("ssh://{}@{}:{}{}", a.sshd.user(), a.sshd.addr(), a.sshd.port(), bare.display());
    ok(a.cmd().args(["request", "portless", &with_port]));
    ok(a.cmd().args(["send", "--wait"]));
    let _ = ok(node.cmd().args(["scan", "--client", "host-a"]));
    eventually("both requests to end", || node.pool_ids("host-a", "F").len() + node.pool_ids("host-a", "E").len() >= 2);
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());
}

#[test]
fn a_portless_git_daemon_url_is_pulled_from_the_enrolled_git_port() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("enrolled_port_git");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let mut a = client_with_portless(&td, &node);
    // git daemon on the client's own address, on a port other than 9418;
    // its base path makes repositories appear under /srv/git.
    let daemon = GitDaemon::start_at(&td.join("git-daemon"), &a.base, a.sshd.addr());
    assert_ne!(daemon.port(), 9418);
    a.gitosis_section = a
        .gitosis_section
        .lines()
        .filter(|l| !l.starts_with("git-roots") && !l.starts_with("git-scheme") && !l.starts_with("git-port"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!("git-roots = /srv/git\ngit-scheme = git\ngit-port = {}\n", daemon.port());
    node.enroll(&[&a]);
    let bare = repo(&a, "project");
    let url = format!("git://{}/srv/git/project.git", a.sshd.addr());
    let events = pull_portless(&node, &a, &url);
    assert!(node.pool_ids("host-a", "E").is_empty(), "the pull failed: {events}");
    let mirror = node.data("host-a").join("git/project.git");
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare), "mirrored through the enrolled git port");
}
