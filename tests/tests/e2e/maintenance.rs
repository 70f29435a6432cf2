//! The scheduled maintenance, end to end with real git and a real SMTP
//! server: `ferry backup-all --send` backs up every configured source,
//! `ferry-node purge` applies retention, `ferry-node gc` packs the mirrors
//! keeping reflogs and unreachable objects, mails a readable report, and
//! the mirrors stay fsck-clean and restorable.

use std::process::Command;
use std::time::Duration;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{Smtp, TestDir, for_each_ref, git, require};

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    ok(Command::new("git").arg(format!("--git-dir={}", dir.display())).args(args))
}

fn artifacts(node: &Node, source: &str) -> Vec<serde_json::Value> {
    let v = node.ferry_node_json(&["find", "--client", "host-a", "--source", source]);
    v.as_array().unwrap().clone()
}

#[test]
fn backup_all_purge_and_gc_run_end_to_end() {
    if !crate::hostile::kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("maintenance");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(
        &td,
        "backup1",
        &format!(
            "[mail]\nto = [\"admins@example.test\"]\nfrom = \"ferry@example.test\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\n\n\
             [retention]\nkeep_last = 1\nkeep_daily = 1\n",
            smtp.url()
        ),
    );
    let bare_path = td.join("host-a/srv/git/project.git");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"20000\"]\n\n\
             [[source]]\nname = \"project\"\nmodule = \"git\"\npath = \"{}\"\n",
            bare_path.display()
        ),
    );
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    assert_eq!(bare, bare_path);
    let mirror = node.data("host-a").join("git/project.git");

    // Three rounds of backup-all, each after new commits.
    for round in 1..=3 {
        for i in 0..5 {
            commit_and_push(&work, &format!("file-{round}-{i}"), &"x".repeat(2000 + i * round));
        }
        let out = a.ferry(&["--json", "backup-all", "--send"]);
        assert!(out.status.success(), "{}", text(&out));
        let queued = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(queued.contains("numbers") && queued.contains("project"), "{queued}");
        eventually("the node to store the round", || {
            artifacts(&node, "numbers").len() == round
                && mirror.join("HEAD").exists()
                && for_each_ref(&mirror) == for_each_ref(&bare)
        });
    }
    // The scan that stored the last round may still hold the client's
    // pool lock (purge leaves a client alone while it is held).
    let lock = node.pool("host-a").join(".lock");
    eventually("the node to finish with host-a", || {
        node.pool_ids("host-a", "RQ").is_empty()
            && node.pool_ids("host-a", "P").is_empty()
            && run(Command::new("flock").args(["-n"]).arg(&lock).arg("true")).status.success()
    });
    assert!(node.pool_ids("host-a", "E").is_empty(), "requests failed: {}", node.events());

    // purge: one artifact of `numbers` is left, the newest, on disk.
    let numbers = artifacts(&node, "numbers");
    let v = node.ferry_node_json(&["purge"]);
    assert_eq!(v["artifacts_removed"].as_array().unwrap().len(), 2, "{v}");
    let left = artifacts(&node, "numbers");
    assert_eq!(left, [numbers[2].clone()], "{v}");
    let data = node.srv().join("data");
    assert!(data.join(left[0]["path"].as_str().unwrap()).is_file());
    for gone in &numbers[..2] {
        assert!(!data.join(gone["path"].as_str().unwrap()).exists(), "{gone}");
    }

    // gc: an unreachable object and the reflogs survive it.
    let blob = td.join("orphan.txt");
    std::fs::write(&blob, "unreachable but kept\n").unwrap();
    let orphan = git_in(&mirror, &["hash-object", "-w", blob.to_str().unwrap()]).trim().to_owned();
    let reflog = |m: &std::path::Path| git_in(m, &["log", "-g", "--format=%H", "--all"]).lines().count();
    let reflog_before = reflog(&mirror);
    assert!(reflog_before > 0, "the mirror keeps reflogs");
    let loose_before = git_in(&mirror, &["count-objects", "-v"]);
    let out = run(node.cmd().args(["--json", "gc"]));
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v.as_array().unwrap()[0];
    assert_eq!(e["mirror"], "host-a/git/project.git", "{v}");
    assert!(e["error"].is_null(), "{v}");
    assert!(e["duration_ms"].is_u64(), "{v}");
    let loose_after = git_in(&mirror, &["count-objects", "-v"]);
    assert!(loose_after.contains("count: 0"), "loose objects packed:\n{loose_before}\n->\n{loose_after}");
    git_in(&mirror, &["cat-file", "-e", &orphan]);
    assert_eq!(reflog(&mirror), reflog_before, "reflogs kept");
    git_in(&mirror, &["fsck", "--full", "--no-dangling"]);

    // The report: what shrank, by how much, how long it took.
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    let m = mails
        .iter()
        .find(|m| m.subject.contains("GC_REPORT"))
        .unwrap_or_else(|| panic!("no gc report: {:?}", mails.iter().map(|m| &m.subject).collect::<Vec<_>>()));
    assert_eq!(m.subject, "[ferry backup1] GC_REPORT: backup1");
    let body = m.body.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(body.contains("git gc on node backup1: 1 mirrors, 0 failed, in "), "{}", m.body);
    assert!(body.contains("Total: ") && (body.contains("shrank by") || body.contains("grew by")), "{}", m.body);
    assert!(
        m.body.lines().any(|l| l.trim() == "host-a/git/project.git"),
        "one line names the mirror, the next says by how much and how long: {}",
        m.body
    );
    assert!(body.contains("Reflogs and unreachable objects are kept"), "{}", m.body);

    // Still restorable: every ref as the client has it.
    let restored = td.join("restored.git");
    ok(node.cmd().args(["restore", "host-a", "project", "--to"]).arg(&restored));
    assert_eq!(for_each_ref(&restored), for_each_ref(&bare));
    git(&td.path, &["--git-dir", restored.to_str().unwrap(), "fsck", "--full", "--no-dangling"]);
}
