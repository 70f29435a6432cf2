//! git daemon export of the mirrors: `daemon = yes` in gitosis.conf marks a
//! mirror (`git-daemon-export-ok`), a read-only git daemon on loopback
//! serves it over git://, and a mirror not marked is refused.

use std::process::Command;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{GitDaemon, TestDir, for_each_ref};

#[test]
fn mirrors_marked_daemon_yes_clone_over_git_and_others_are_refused() {
    if !crate::hostile::kit::tools() {
        return;
    }
    let td = TestDir::new("git_daemon_export");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    for name in ["project", "secret"] {
        let (bare, work) = a.repo(name);
        commit_and_push(&work, "README", &format!("{name}\n"));
        let mirror = node.data("host-a").join(format!("git/{name}.git"));
        eventually("the mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));
    }
    let out = node.admin_push("export project", |dir| {
        let mut conf = std::fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        conf.push_str("\n[repo host-a/git/project]\ndaemon = yes\n");
        std::fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    let data = node.srv().join("data");
    assert!(data.join("host-a/git/project.git/git-daemon-export-ok").is_file());
    assert!(!data.join("host-a/git/secret.git/git-daemon-export-ok").exists());
    let v = node.ferry_node_json(&["git-export"]);
    assert_eq!(v["exported"], serde_json::json!(["host-a/git/project.git"]), "{v}");

    let daemon = GitDaemon::start_marked_only(&td.join("git-daemon"), &data);
    let url = |name: &str| daemon.url(&format!("host-a/git/{name}.git"));
    let clone = |name: &str| {
        run(Command::new("git")
            .args(["clone", "--quiet", &url(name)])
            .arg(td.join(format!("clone-{name}")))
            .env("GIT_CONFIG_NOSYSTEM", "1"))
    };
    let out = clone("project");
    assert!(out.status.success(), "{}", text(&out));
    let readme = std::fs::read_to_string(td.join("clone-project/README")).unwrap();
    assert_eq!(readme, "project\n");
    let refused = clone("secret");
    assert!(!refused.status.success(), "an unmarked mirror was served");
    assert!(text(&refused).contains("repository not exported"), "{}", text(&refused));
    // Read-only: a push over git:// is refused.
    let push = run(Command::new("git").current_dir(td.join("clone-project")).args([
        "push",
        "--quiet",
        &url("project"),
        "HEAD:refs/heads/evil",
    ]));
    assert!(!push.status.success(), "a push over git:// was accepted");
    assert!(
        !ok(Command::new("git")
            .arg(format!("--git-dir={}", data.join("host-a/git/project.git").display()))
            .args(["for-each-ref"]))
        .contains("evil")
    );

    // Taking `daemon = yes` back removes the marker: refused from then on.
    let out = node.admin_push("stop exporting", |dir| {
        let conf = std::fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        std::fs::write(dir.join("gitosis.conf"), conf.replace("daemon = yes", "daemon = no")).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    assert!(!data.join("host-a/git/project.git/git-daemon-export-ok").exists());
    let _ = std::fs::remove_dir_all(td.join("clone-project"));
    assert!(!clone("project").status.success(), "a mirror no longer exported was served");
}
