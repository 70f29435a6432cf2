//! Bad input gets a clear error and changes nothing.

use std::fs;

use ferry_tests::{TestDir, git_cmd, hash_tree, require_all};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

#[test]
fn client_refuses_unknown_module_node_and_config_without_changing_anything() {
    if !tools() {
        return;
    }
    let td = TestDir::new("bad_client");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    let before = hash_tree(a.base.join("state"));

    let out = a.ferry(&["request", "nosuch", "/srv/x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown module \"nosuch\""), "{}", text(&out));

    let out = a.ferry(&["request", "dummy", "hello", "nosuchnode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown node \"nosuchnode\""), "{}", text(&out));

    let out = a.ferry(&["request", "dummy", "bad word"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = a.ferry(&["request", "git", "/nonexistent/repo.git"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = a.ferry(&["send", "--node", "nosuchnode"]);
    assert_eq!(out.status.code(), Some(2));

    let out = run(std::process::Command::new(ferry_tests::ferry_bin("ferry")).args([
        "--config",
        "/nonexistent/client.toml",
        "status",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read the client configuration /nonexistent/client.toml"), "{}", text(&out));

    let bad = td.join("bad.toml");
    fs::write(&bad, "name = \"x\"\nstate_dir = \"/tmp/x\"\nbogus = 1\n[export]\naddress=\"h\"\nuser=\"u\"\n").unwrap();
    let out = run(std::process::Command::new(ferry_tests::ferry_bin("ferry")).arg("--config").arg(&bad).arg("status"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bogus"), "the unknown key is named: {}", text(&out));

    let out = run(std::process::Command::new(ferry_tests::ferry_bin("ferry-node")).args([
        "--config",
        "/nonexistent/node.toml",
        "scan",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read the node configuration"), "{}", text(&out));

    assert_eq!(hash_tree(a.base.join("state")), before, "nothing changed in the client's state");
}

#[test]
fn script_module_printing_a_malformed_line_fails_its_request_with_the_reason() {
    if !tools() {
        return;
    }
    let td = TestDir::new("bad_script");
    let node = Node::start(&td, "backup1");
    let scripts = td.mkdir("scripts");
    let a = Client::new_with(&td, "host-a", &[&node], &format!("script_dir = \"{}\"", scripts.display()));
    node.enroll(&[&a]);
    fs::write(scripts.join("broken"), "#!/bin/sh\necho 'dummy  two-spaces'\n").unwrap();
    fs::write(scripts.join("good"), "#!/bin/sh\necho \"dummy from-$1\"\n").unwrap();
    for f in ["broken", "good"] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(scripts.join(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(a.cmd().args(["request", "broken", "x"]));
    ok(a.cmd().args(["request", "good", "x"]));
    let out = a.ferry(&["send", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "a failed module makes send exit 1: {}", text(&out));
    assert!(text(&out).contains("E_REQ_SYNTAX"), "{}", text(&out));
    assert_eq!(a.pool_ids("backup1", "E").len(), 1);
    assert_eq!(a.pool_ids("backup1", "F").len(), 1, "the good request still went through");
    let status = a.ferry_ok(&["status"]);
    assert!(status.contains("E_REQ_SYNTAX") || status.contains("two-spaces"), "{status}");
}

#[test]
fn broken_gitosis_conf_is_refused_and_the_previous_enrollment_stays() {
    if !tools() {
        return;
    }
    let td = TestDir::new("bad_gitosis");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let live = fs::read_to_string(node.srv().join("state/enrolled/gitosis.conf")).unwrap();
    let ak = fs::read_to_string(node.srv().join(".ssh/authorized_keys")).unwrap();

    let out = node.admin_push("syntax error", |dir| {
        let mut c = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        c.push_str("\nthis line is not an option\n");
        fs::write(dir.join("gitosis.conf"), c).unwrap();
    });
    assert!(!out.status.success(), "the push must be refused");
    let t = text(&out);
    assert!(t.contains("previous enrollment stays in force"), "{t}");
    assert!(t.contains("line"), "the pusher is told where: {t}");

    let out = node.admin_push("lock out", |dir| {
        let c = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), c.replace("members = admin@workstation", "members = nobody")).unwrap();
    });
    assert!(!out.status.success(), "a push removing every admin is refused: {}", text(&out));

    let out = node.admin_push("bad key", |dir| {
        fs::write(dir.join("keydir/evil.pub"), "command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOj evil\n")
            .unwrap();
    });
    assert!(!out.status.success());
    assert!(text(&out).contains("E_ENROL_KEY"), "{}", text(&out));

    assert_eq!(fs::read_to_string(node.srv().join("state/enrolled/gitosis.conf")).unwrap(), live);
    assert_eq!(fs::read_to_string(node.srv().join(".ssh/authorized_keys")).unwrap(), ak);
    // The enrolled client still works.
    ok(a.cmd().args(["request", "dummy", "still-works"]));
    ok(a.cmd().args(["send", "--wait"]));
    eventually("the request is processed", || !node.pool_ids("host-a", "F").is_empty());
    let _ = git_cmd;
}
