//! The record a mirror keeps of its runs: each rewrite saves the old refs
//! under a `refs/backup/<run>/` of its own — even when two runs get the
//! same run id (two jobs of one repository within one second) — and every
//! ref update is logged with the run that made it.

use std::path::Path;
use std::time::Duration;

use ferry_pull::git::{FetchLimits, GitEnv, MirrorJob, mirror, reflog_message};
use ferry_request::GitUrl;
use ferry_tests::{GitDaemon, TestDir, git, require};

fn rewrite(work: &Path, file: &str) -> String {
    git(work, &["checkout", "--quiet", "--orphan", file]);
    git(work, &["rm", "--quiet", "-r", "--cached", "--ignore-unmatch", "."]);
    std::fs::write(work.join(file), file).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "--quiet", "-m", file]);
    git(work, &["push", "--quiet", "--force", "origin", "HEAD:master"]);
    git(work, &["rev-parse", "HEAD"])
}

#[test]
fn two_rewrites_under_one_run_id_keep_both_old_values() {
    if !require("git") {
        return;
    }
    let td = TestDir::new("pull_git_runs");
    let srv = td.mkdir("srv");
    git(&srv, &["init", "--quiet", "--bare", "repo.git"]);
    let work = td.join("work");
    git(&td.path, &["clone", "--quiet", srv.join("repo.git").to_str().unwrap(), work.to_str().unwrap()]);
    let a = rewrite(&work, "a");
    let daemon = GitDaemon::start(&td.join("daemon"), &srv);
    let url = GitUrl::parse(&daemon.url("repo.git")).unwrap();
    let env = GitEnv {
        git: "git".into(),
        empty_dir: td.mkdir("empty"),
        data_root: td.mkdir("data"),
        timeout: Duration::from_secs(120),
        fsck_ignore: Vec::new(),
        ssh_guard: None,
    };
    let dir = td.join("data/repo.git");
    let run = "20261122T010203Z";
    let job = || MirrorJob {
        url: &url,
        mirror: &dir,
        run_id: run,
        ssh_command: None,
        env: &env,
        limits: FetchLimits::default(),
    };
    let first = mirror(&job()).unwrap();
    assert!(first.created && first.saved_under.is_none(), "{first:?}");

    let b = rewrite(&work, "b");
    let second = mirror(&job()).unwrap();
    assert_eq!(second.saved_under.as_deref(), Some("refs/backup/20261122T010203Z"), "{second:?}");
    let c = rewrite(&work, "c");
    let third = mirror(&job()).unwrap();
    assert_eq!(third.saved_under.as_deref(), Some("refs/backup/20261122T010203Z-2"), "{third:?}");

    let gd = |args: &[&str]| git(&td.path, &[&[format!("--git-dir={}", dir.display()).as_str()], args].concat());
    let backups = gd(&["for-each-ref", "--format=%(objectname) %(refname)", "refs/backup/"]);
    let mut backups: Vec<&str> = backups.lines().collect();
    backups.sort_unstable();
    let mut want = [format!("{a} refs/backup/{run}/heads/master"), format!("{b} refs/backup/{run}-2/heads/master")];
    want.sort_unstable();
    assert_eq!(backups, want, "both old values kept");
    assert_eq!(gd(&["rev-parse", "refs/heads/master"]), c);
    // Every update of master is logged, oldest last, naming its run.
    let log = gd(&["reflog", "show", "--format=%H %gs", "refs/heads/master"]);
    let want = [
        format!("{c} {}", reflog_message(&format!("{run}-2"))),
        format!("{b} {}", reflog_message(run)),
        format!("{a} {}", reflog_message(run)),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), want);
}
