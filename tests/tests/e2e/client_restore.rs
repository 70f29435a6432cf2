//! Restore on the client (issue 13 point 2): `ferry restore SOURCE TARGET`
//! reads this host's own backups back from the node through the forced
//! command's read-only `ferry-restore` verb, checks digests on the client
//! and resumes interrupted downloads.

use std::fs;
use std::path::Path;

use ferry_tests::fleet::{Client, ok, run, text};
use ferry_tests::{for_each_ref, ssh_cmd};

use crate::restore_all::{Fixture, at, only_file, same_tree, tools, two_backups};

/// The newest catalog row of `source` of host-a.
fn newest(f: &Fixture, source: &str) -> serde_json::Value {
    let found = f.node.ferry_node_json(&["find", "--client", "host-a"]);
    found.as_array().unwrap().iter().rfind(|a| a["source"] == source).cloned().unwrap()
}

/// The file name of a catalog row's artifact.
fn art_file(row: &serde_json::Value) -> String {
    row["path"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

fn restore(c: &Client, args: &[&str]) -> std::process::Output {
    run(c.cmd().arg("restore").args(args))
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn a_client_restores_its_own_backups_read_only() {
    if !tools() {
        return;
    }
    let f = two_backups("client_restore", "site:1d numbers:1d project:push");
    let (td, node, a) = (&f.td, &f.node, &f.a);

    // fs source: the newest, then as of a time between the two backups.
    let site = td.join("r-site");
    let out = restore(a, &["site", p(&site)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sha256") && text(&out).contains("checked"), "{}", text(&out));
    same_tree(&f.v2.0, &site);
    let old = td.join("r-site-old");
    let out = restore(a, &["site", "--at", &at(f.t1), p(&old)]);
    assert!(out.status.success(), "{}", text(&out));
    same_tree(&f.v1.0, &old);
    assert!(!td.join("r-site.partial").exists() && !td.join("r-site.partial.from").exists());

    // pipe source: the stream itself, byte for byte.
    let nums = td.join("r-numbers");
    let out = run(a.cmd().args(["--json", "restore", "numbers", p(&nums)]));
    assert!(out.status.success(), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["sha256"], newest(&f, "numbers")["sha256"]);
    assert_eq!(fs::read(only_file(&nums)).unwrap(), f.v2.1);
    let nums_old = td.join("r-numbers-old");
    assert!(restore(a, &["numbers", "--at", &at(f.t1), p(&nums_old)]).status.success());
    assert_eq!(fs::read(only_file(&nums_old)).unwrap(), f.v1.1);

    // git repository: a bare clone with every ref the mirror kept.
    let repo = td.join("r-project.git");
    let out = restore(a, &["project", p(&repo)]);
    assert!(out.status.success(), "{}", text(&out));
    let mirror = node.data("host-a").join("git/project.git");
    assert_eq!(for_each_ref(&repo), for_each_ref(&mirror));
    assert_eq!(for_each_ref(&repo), f.v2.2);
    let remotes = run(ferry_tests::git_cmd(&repo).arg("--git-dir").arg(&repo).arg("remote"));
    assert_eq!(String::from_utf8_lossy(&remotes.stdout).trim(), "", "no remote points at the node");
    // A git source named otherwise than its repository (`code` for
    // project.git): the node keeps the mirror under the repository's path,
    // and `ferry restore code` finds it there (by-hand setup, issue 15).
    let conf = fs::read_to_string(&a.config).unwrap();
    let with_code = format!(
        "{conf}\n[[source]]\nname = \"code\"\nmodule = \"git\"\npath = \"{}\"\n",
        a.git_root.join("project.git").display()
    );
    fs::write(&a.config, with_code).unwrap();
    // ... also when another account owns the mirror than the one serving
    // it (the two-account layout: the scan account owns data/, `git`
    // serves): git would refuse it as "dubious ownership".
    let chown = |owner: &str| ok(std::process::Command::new("chown").args(["-R", owner]).arg(&mirror));
    if ferry_tests::is_root() {
        chown("65534:65534");
    }
    let code = td.join("r-code.git");
    let out = restore(a, &["code", p(&code)]);
    if ferry_tests::is_root() {
        chown("0:0");
    }
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(for_each_ref(&code), f.v2.2);
    fs::write(&a.config, conf).unwrap();

    // Bad targets: non-empty without --force, under a symlink; nothing written.
    let out = restore(a, &["site", p(&site)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    let out = restore(a, &["site", "--force", p(&site)]);
    assert_eq!(out.status.code(), Some(2), "never merged into a tree: {}", text(&out));
    same_tree(&f.v2.0, &site);
    // --force: a stream's file goes into a non-empty directory.
    let out = restore(a, &["numbers", "--force", p(&site)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(site.join(art_file(&newest(&f, "numbers")))).unwrap(), f.v2.1);
    fs::remove_file(site.join(art_file(&newest(&f, "numbers")))).unwrap();
    same_tree(&f.v2.0, &site);
    let real = td.mkdir("real");
    std::os::unix::fs::symlink(&real, td.join("link")).unwrap();
    let out = restore(a, &["site", p(&td.join("link/site"))]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    assert!(fs::read_dir(&real).unwrap().next().is_none());

    // Resume: a download cut off after `half` bytes (an ssh that stops
    // relaying the stream), then the same command again fetches the rest.
    let art = newest(&f, "site");
    let (path, sha) = (art["path"].as_str().unwrap(), art["sha256"].as_str().unwrap());
    let stored = node.srv().join("data").join(path);
    let bytes = fs::read(&stored).unwrap();
    let half = bytes.len() / 2;
    let which = |prog: &str| ok(std::process::Command::new("sh").args(["-c", &format!("command -v {prog}")]));
    let cut = td.join("cut-ssh");
    fs::write(
        &cut,
        format!(
            "#!/bin/sh\nfor last; do :; done\ncase \"$last\" in\n  'ferry-restore get '*) {ssh} \"$@\" | {head} -c {half}; exit 255;;\nesac\nexec {ssh} \"$@\"\n",
            ssh = which("ssh").trim(),
            head = which("head").trim()
        ),
    )
    .unwrap();
    fs::set_permissions(&cut, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = fs::read_to_string(&a.config).unwrap();
    fs::write(&a.config, format!("ssh = \"{}\"\n{conf}", cut.display())).unwrap();
    let resumed = td.join("r-resumed");
    let out = restore(a, &["site", p(&resumed)]);
    assert!(!out.status.success() && text(&out).contains("run the same command again to resume"), "{}", text(&out));
    assert_eq!(fs::read(td.join("r-resumed.partial")).unwrap(), &bytes[..half]);
    assert!(!resumed.exists());
    fs::write(&a.config, &conf).unwrap();
    let out = restore(a, &["site", p(&resumed)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("resumed at byte {half}")), "{}", text(&out));
    same_tree(&f.v2.0, &resumed);
    // A partial whose bytes are not the artifact's is caught by the digest,
    // dropped, and the next run starts over.
    let bad = td.join("r-bad");
    fs::write(td.join("r-bad.partial"), vec![0u8; half]).unwrap();
    fs::write(td.join("r-bad.partial.from"), format!("{path} {sha}\n")).unwrap();
    let out = restore(a, &["site", p(&bad)]);
    assert!(!out.status.success() && text(&out).contains("does not match"), "{}", text(&out));
    assert!(!bad.exists() && !td.join("r-bad.partial").exists());
    assert!(restore(a, &["site", p(&bad)]).status.success());
    same_tree(&f.v2.0, &bad);

    // pre_restore/post_restore from client.toml around putting it in place
    // (stop the application, restore, start it).
    let log = td.join("hooks.log");
    let conf = fs::read_to_string(&a.config).unwrap();
    let with_hooks = |pre: &str| {
        conf.replacen(
            "name = \"numbers\"\n",
            &format!(
                "name = \"numbers\"\npre_restore = [\"/bin/sh\", \"-c\", \"{pre}\"]\npost_restore = [\"/bin/sh\", \"-c\", \"echo start $FERRY_SOURCE $FERRY_STATUS >> {}\"]\n",
                log.display()
            ),
            1,
        )
    };
    let pre_ok = format!("test ! -e \\\"$FERRY_RESTORE_TARGET\\\" && echo stop $FERRY_SOURCE >> {}", log.display());
    fs::write(&a.config, with_hooks(&pre_ok)).unwrap();
    let hooked = td.join("r-hooked");
    let out = restore(a, &["numbers", p(&hooked)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read_to_string(&log).unwrap(), "stop numbers\nstart numbers ok\n");
    assert_eq!(fs::read(only_file(&hooked)).unwrap(), f.v2.1);
    // A failing pre_restore: nothing placed, post_restore still runs.
    fs::remove_file(&log).unwrap();
    fs::write(&a.config, with_hooks("echo app will not stop >&2; exit 3")).unwrap();
    let refused = td.join("r-hook-refused");
    let out = restore(a, &["numbers", p(&refused)]);
    assert!(!out.status.success() && text(&out).contains("app will not stop"), "{}", text(&out));
    assert!(!refused.exists());
    assert_eq!(fs::read_to_string(&log).unwrap(), "start numbers failed\n");
    fs::write(&a.config, &conf).unwrap();

    // Another client's key: refused and logged, nothing served.
    let b = Client::new(td, "host-b", &[node]);
    node.enroll(&[&b]);
    let kh = td.join("kh");
    node.sshd.write_known_hosts(&kh);
    let b_key = b.base.join("state/ssh/id_ed25519");
    let denied_before = node.events().matches("E_ACL_DENIED").count();
    let cells = [
        (format!("ferry-restore get {path} 0"), "Repository read access denied"),
        ("ferry-restore list site".to_owned(), "Repository read access denied"),
        ("ferry-restore git 'project'".to_owned(), "Repository read access denied"),
        ("ferry-restore list ../host-a".to_owned(), "Arguments to command look dangerous"),
        (format!("ferry-restore get ../{path} 0"), "Arguments to command look dangerous"),
        ("ferry-restore get /etc/passwd 0".to_owned(), "Arguments to command look dangerous"),
        ("ferry-restore git '../host-a/git/project'".to_owned(), "Arguments to command look dangerous"),
        ("ferry-restore put site".to_owned(), "Unknown command denied"),
    ];
    for (cmd, want) in &cells {
        let out = run(ssh_cmd(&b_key, &kh, &node.sshd).arg(cmd));
        assert!(!out.status.success() && text(&out).contains(want), "B {cmd}: {}", text(&out));
        assert!(out.stdout.is_empty(), "B {cmd} got bytes");
    }
    let events = node.events();
    assert_eq!(events.matches("E_ACL_DENIED").count(), denied_before + cells.len(), "{events}");
    assert!(events.contains("user host-b") && events.contains("ferry-restore get"), "{events}");
    let out = restore(&b, &["site", p(&td.join("b-site"))]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!td.join("b-site").exists());

    // Hostile: a corrupted stored artifact is refused on the client.
    let art = newest(&f, "numbers");
    let stored = node.srv().join("data").join(art["path"].as_str().unwrap());
    let mut perm = fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&stored, perm).unwrap();
    let mut bytes = fs::read(&stored).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&stored, &bytes).unwrap();
    let target = td.join("r-corrupt");
    let out = restore(a, &["numbers", p(&target)]);
    assert!(!out.status.success() && text(&out).contains("does not match"), "{}", text(&out));
    assert!(!target.exists() && !td.join("r-corrupt.partial").exists());
}

/// Whole-host recovery from the client (issue 13 point 3): every source
/// and mirror of the host, with a summary naming what had no backup.
#[test]
fn a_client_recovers_every_source_from_a_named_node() {
    if !tools() {
        return;
    }
    let f = two_backups("client_restore_all", "site:1d numbers:1d project:push ghost:1d");
    let (td, a) = (&f.td, &f.a);
    let dir = td.join("recovered");
    let out = run(a.cmd().args(["restore", "--all", "--node", "backup1", p(&dir)]));
    let human = text(&out);
    assert_eq!(out.status.code(), Some(3), "a declared source had no backup: {human}");
    for (name, result) in [("site", "restored"), ("numbers", "restored"), ("project", "restored"), ("ghost", "missing")]
    {
        let line =
            human.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {human}"));
        assert!(line.contains(result), "{name}: {line}");
    }
    assert!(human.contains("3 restored, 1 missing, 0 failed, from node backup1"), "{human}");
    same_tree(&f.v2.0, &dir.join("site"));
    assert_eq!(fs::read(only_file(&dir.join("numbers"))).unwrap(), f.v2.1);
    assert_eq!(for_each_ref(&dir.join("git/project.git")), f.v2.2);

    // As of a time between the two backups, as JSON.
    let old = td.join("recovered-old");
    let out = run(a.cmd().args(["--json", "restore", "--all", "--at", &at(f.t1), p(&old)]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status =
        |n: &str| v["members"].as_array().unwrap().iter().find(|m| m["source"] == n).unwrap()["status"].clone();
    assert_eq!(status("site"), "restored");
    assert_eq!(status("numbers"), "restored");
    assert_eq!(status("ghost"), "missing");
    same_tree(&f.v1.0, &old.join("site"));
    assert_eq!(fs::read(only_file(&old.join("numbers"))).unwrap(), f.v1.1);

    // A non-empty DIR is refused before anything is written.
    let out = run(a.cmd().args(["restore", "--all", p(&dir)]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
