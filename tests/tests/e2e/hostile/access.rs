//! Pushes, ssh commands and enrollments (AC) and the per-push and backlog
//! limits (RE): what a compromised client tries over the node's sshd with
//! its own key and in its queue repository before any request runs.
//!
//! Each test is one table or one class of refusals: a refused push must
//! name its reason in the pusher's output and the journal, move no queue
//! and reach no pool; a refused command or enrollment changes nothing.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::Duration;

use ferry_tests::fleet::{Client, Node, ok, run, ssh_command, text};
use ferry_tests::{git, git_cmd, ssh_cmd};

use super::kit::{BHolds, Fleet, Plan, assert_done, assert_push_refused, canary, events, rq, scan};

/// Node `backup1` with a backlog limit of 5 pending requests per client,
/// B with one finished request of its own.
fn fleet(test: &str) -> Option<Fleet> {
    fleet_then(test, |_, _| {})
}

fn fleet_then(test: &str, first: impl FnOnce(&Node, &Client)) -> Option<Fleet> {
    Fleet::start_then(
        test,
        Plan { node: "[limits]\npending_per_client = 5\n", b: BHolds::Request, ..Plan::default() },
        first,
    )
}

/// host-a's own ssh key and a known_hosts file for the node:
/// (key, known_hosts, `GIT_SSH_COMMAND`).
fn a_key(f: &Fleet) -> (PathBuf, PathBuf, String) {
    let kh = f.td.join("known_hosts");
    f.node.sshd.write_known_hosts(&kh);
    let a_key = f.a.base.join("state/ssh/id_ed25519");
    let a_ssh = ssh_command(&a_key, &kh);
    (a_key, kh, a_ssh)
}

/// The files in host-a's pool on the node, sorted.
fn pool_a(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(node.pool("host-a"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Where host-a's queue and pool stand before refused pushes.
struct Before {
    tip: String,
    files: Vec<String>,
}

impl Before {
    fn take(f: &Fleet) -> Before {
        Before { tip: f.q.node_tip(), files: pool_a(&f.node) }
    }

    /// No refused push moved the queue, reached the pool or was processed.
    fn unchanged(&self, f: &Fleet) {
        assert_eq!(f.q.node_tip(), self.tip, "no refused push moved the queue");
        assert_eq!(pool_a(&f.node), self.files, "no refused push reached the pool");
        scan(&f.node, "host-a");
        assert!(f.node.pool_ids("host-a", "E").is_empty(), "nothing of the refused pushes was processed");
    }
}

/// RE-01/RE-02 backlog (pending_per_client = 5) with the real client:
/// the push is refused with E_REQ_PENDING and the client keeps its
/// requests, delivering them once the node caught up.
#[test]
fn re01_re02_a_backlog_over_the_limit_is_refused_and_delivered_later() {
    let backlog = |node: &Node, a: &Client| {
        for i in 0..4 {
            ok(a.cmd().args(["request", "dummy", &format!("p{i}")]));
        }
        ok(a.cmd().args(["send", "--wait"]));
        assert_eq!(node.pool_ids("host-a", "RQ").len(), 4, "four requests wait on the node");
        for i in 4..6 {
            ok(a.cmd().args(["request", "dummy", &format!("p{i}")]));
        }
        let out = a.ferry(&["send", "--wait", "--force"]);
        assert!(text(&out).contains("E_REQ_PENDING"), "the client is told why: {}", text(&out));
        assert_eq!(node.pool_ids("host-a", "RQ").len(), 4, "nothing beyond the backlog limit was accepted");
        assert_eq!(a.pool_ids("backup1", "P").len(), 2, "the client keeps its two refused requests");
        let refused = events(node).into_iter().filter(|e| e["reason"] == "E_REQ_PENDING").count();
        assert_eq!(refused, 1, "one event for the refused push");
        scan(node, "host-a");
        ok(a.cmd().args(["send", "--wait", "--force"]));
        scan(node, "host-a");
        assert_eq!(node.pool_ids("host-a", "F").len(), 6, "all six requests finished once the backlog drained");
        assert!(a.pool_ids("backup1", "P").is_empty());
    };
    let Some(f) = fleet_then("re01_re02_backlog", backlog) else {
        return;
    };
    f.finish("re01/re02");
}

/// AC-01: A's key against B's queue (push and fetch) and gitosis-admin.
#[test]
fn ac01_a_client_key_on_another_queue_or_the_admin_repository() {
    let Some(f) = fleet("ac01_other_repos") else {
        return;
    };
    let (node, td) = (&f.node, &f.td);
    let (_, _, a_ssh) = a_key(&f);

    let scratch = td.join("scratch");
    git(&td.path, &["init", "--quiet", scratch.to_str().unwrap()]);
    fs::write(scratch.join("RQac01-into-b"), "dummy from-a\n").unwrap();
    git(&scratch, &["add", "-A"]);
    git(&scratch, &["commit", "--quiet", "-m", "x"]);
    for (what, args) in [
        ("push B's queue", vec!["push".to_owned(), node.url("queue/host-b.git"), "HEAD:master".to_owned()]),
        ("fetch B's queue", vec!["fetch".to_owned(), node.url("queue/host-b.git")]),
        ("push gitosis-admin", vec!["push".to_owned(), node.url("gitosis-admin.git"), "HEAD:master".to_owned()]),
    ] {
        let out = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", &a_ssh).args(&args));
        assert!(!out.status.success(), "ac01 {what}: accepted");
        let want = if what.starts_with("push") { "write" } else { "read" };
        assert!(text(&out).contains(&format!("Repository {want} access denied")), "ac01 {what}: {}", text(&out));
    }
    f.finish("ac01 over ssh");
}

/// AC-01 over the local transport: another client's identity, none, a
/// look-alike.
#[test]
fn ac01_a_push_as_another_or_no_identity() {
    let Some(f) = fleet("ac01_pusher") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let before = Before::take(&f);

    for pusher in [Some("host-b"), None, Some("host-a "), Some("HOST-A"), Some("host-a\nhost-b"), Some("")] {
        q.commit(&[rq("ac01-pusher", "dummy pusher\n")], "pusher");
        let out = q.push_as(pusher, "HEAD:master", &[]);
        assert_push_refused(node, &out, "E_ACL_DENIED", &format!("ac01 FERRY_USER={pusher:?}"));
    }
    before.unchanged(&f);
    f.finish("ac01 over the local transport");
}

/// AC-02/AC-04: path tricks and other commands in SSH_ORIGINAL_COMMAND.
#[test]
fn ac02_ac04_path_tricks_and_other_ssh_commands() {
    let Some(f) = fleet("ac02_ac04_commands") else {
        return;
    };
    let node = &f.node;
    let (a_key, kh, _) = a_key(&f);

    const DANGEROUS: &str = "Arguments to command look dangerous";
    const DENIED: &str = "Repository read access denied";
    const PUSH_DENIED: &str = "Repository write access denied";
    const UNKNOWN: &str = "Unknown command denied";
    let c = canary("ac02");
    let c = c.display();
    let huge = format!("git-receive-pack '{}'", "a/".repeat(60_000));
    let commands: Vec<(String, &str)> = vec![
        ("git-receive-pack 'queue/host-a.git/../host-b.git'".into(), DANGEROUS),
        ("git-receive-pack 'queue/../queue/host-b.git'".into(), DANGEROUS),
        ("git-receive-pack '/queue/host-b.git'".into(), PUSH_DENIED),
        ("git-receive-pack '//queue/host-b.git'".into(), PUSH_DENIED),
        ("git-receive-pack 'queue//host-b.git'".into(), DANGEROUS),
        ("git-receive-pack 'queue/host-b.git/'".into(), DANGEROUS),
        ("git-receive-pack 'queue/HOST-B.git'".into(), PUSH_DENIED),
        ("git-receive-pack 'queue/host-b'".into(), PUSH_DENIED),
        ("git-receive-pack '~backupq/queue/host-b.git'".into(), DANGEROUS),
        ("git-receive-pack \"queue/host-b.git\"".into(), DANGEROUS),
        ("git-receive-pack queue/host-b.git".into(), DANGEROUS),
        ("git-receive-pack 'queue/host-a.git' 'queue/host-b.git'".into(), DANGEROUS),
        (format!("git-receive-pack 'queue/host-a.git'\ntouch {c}"), "Command may not contain newline"),
        (format!("git-receive-pack 'queue/host-a.git';touch {c}"), DANGEROUS),
        (format!("git-receive-pack '$(touch {c})'"), DANGEROUS),
        (format!("git-receive-pack 'queue/host-a.git' && touch {c}"), DANGEROUS),
        ("git receive-pack 'queue/host-b.git'".into(), PUSH_DENIED),
        ("git-upload-pack 'queue/host-b.git'".into(), DENIED),
        ("git-upload-archive 'queue/host-b.git'".into(), DENIED),
        ("git-upload-pack '--help'".into(), DANGEROUS),
        ("git-upload-pack '-c core.sshCommand=id'".into(), DANGEROUS),
        ("git-receive-pack 'queue/\x1b[2Jhost-b.git'".into(), UNKNOWN),
        ("git-receive-pack 'gitosis-admin.git'".into(), PUSH_DENIED),
        (format!("git-shell -c 'touch {c}'"), UNKNOWN),
        ("sh".into(), UNKNOWN),
        ("cat /etc/passwd".into(), UNKNOWN),
        ("scp -t /tmp".into(), UNKNOWN),
        ("git-receive-pack".into(), UNKNOWN),
        // The client-side restore verb (issue 13): only data/<itself>.
        ("ferry-restore get host-b/request/20261122T000000Z/x.pipe 0".into(), DENIED),
        ("ferry-restore get host-a/../host-b/x 0".into(), DANGEROUS),
        ("ferry-restore get /etc/passwd 0".into(), DANGEROUS),
        ("ferry-restore list ../host-b".into(), DANGEROUS),
        ("ferry-restore list /etc/passwd".into(), DANGEROUS),
        (format!("ferry-restore list $(touch {c})"), DANGEROUS),
        (format!("ferry-restore list site;touch {c}"), DANGEROUS),
        ("ferry-restore git '../host-b/git/project'".into(), DANGEROUS),
        ("ferry-restore git '/etc/passwd'".into(), DENIED),
        ("ferry-restore put site".into(), UNKNOWN),
        (huge, UNKNOWN),
    ];
    for (cmd, want) in &commands {
        let out = run(ssh_cmd(&a_key, &kh, &node.sshd).arg(cmd));
        let t = text(&out);
        assert!(!out.status.success(), "ac02 {:?}: accepted: {t}", &cmd[..cmd.len().min(80)]);
        assert!(t.contains(want), "ac02 {:?}: expected {want:?}, got: {t}", &cmd[..cmd.len().min(80)]);
    }
    let denials = events(node).into_iter().filter(|e| e["event"] == "access_denied").count();
    assert!(denials >= commands.len(), "each denial is logged ({denials})");

    f.finish("ac02/ac04");
}

/// AC-05: side channels with a client key: stdio forwarding, a pty, an
/// environment that claims another identity.
#[test]
fn ac05_side_channels_of_a_client_key() {
    let Some(f) = fleet("ac05_side_channels") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let (a_key, kh, a_ssh) = a_key(&f);

    for (what, args) in [
        ("stdio forward", vec!["-W", "127.0.0.1:22"]),
        ("stdio forward to the node's sshd", vec!["-W", "localhost:22"]),
        ("pty", vec!["-tt", "sh"]),
    ] {
        let out = ferry_tests::run_with_timeout(ssh_cmd(&a_key, &kh, &node.sshd).args(&args), Duration::from_secs(30));
        assert!(!out.status.success(), "ac05 {what}: worked: {}", text(&out));
    }
    let sneaky = format!("{a_ssh} -o SetEnv=FERRY_USER=host-b -o SetEnv=GIT_DIR=/tmp -o SetEnv=GITOSIS_USER=host-b");
    q.commit(&[rq("ac05-setenv", "dummy setenv\n")], "setenv");
    let out = run(git_cmd(&q.dir).env("GIT_SSH_COMMAND", &sneaky).args([
        "push",
        &node.url("queue/host-a.git"),
        "HEAD:master",
    ]));
    assert!(out.status.success(), "ac05 setenv: the push itself is fine: {}", text(&out));
    scan(node, "host-a");
    assert_done(node, "host-a", "ac05-setenv");
    let ev = events(node).into_iter().find(|e| e["request"] == "ac05-setenv" && e["event"] == "request_done").unwrap();
    assert_eq!(ev["client"], "host-a", "identity from the key, not the environment");

    f.finish("ac05");
}

/// AC-12: refs, deletion, history rewrite, push options.
#[test]
fn ac12_refs_deletion_rewrite_and_push_options() {
    let Some(f) = fleet("ac12_refs") else {
        return;
    };
    let (node, q, td) = (&f.node, &f.q, &f.td);
    let before = Before::take(&f);
    let tip = before.tip.clone();

    q.commit(&[rq("ac12-side", "dummy side\n")], "side");
    for (what, refspec, extra, code) in [
        ("side branch", "HEAD:refs/heads/side", vec![], "E_ACL_DENIED"),
        ("tag", "HEAD:refs/tags/v1", vec![], "E_ACL_DENIED"),
        ("option-like ref", "HEAD:refs/heads/--exec=id", vec![], "E_ACL_DENIED"),
        ("notes ref", "HEAD:refs/notes/commits", vec![], "E_ACL_DENIED"),
        ("delete master", ":master", vec![], "E_ACL_DENIED"),
        ("master and another ref", "HEAD:master", vec!["HEAD:refs/heads/other"], "E_ACL_DENIED"),
    ] {
        q.commit(&[rq("ac12-side", "dummy side\n")], what);
        let mut extra_args: Vec<&str> = vec![];
        let mut spec = refspec.to_owned();
        if !extra.is_empty() {
            extra_args.extend(["origin", refspec]);
            spec = extra[0].to_owned();
        }
        let out = if extra_args.is_empty() {
            q.push_as(Some("host-a"), &spec, &[])
        } else {
            let out = run(git_cmd(&q.dir)
                .env("FERRY_USER", "host-a")
                .args(["push", "--atomic"])
                .args(&extra_args)
                .arg(&spec));
            q.reset();
            out
        };
        assert_push_refused(node, &out, code, &format!("ac12 {what}"));
        assert_eq!(q.node_tip(), tip, "ac12 {what}: the queue did not move");
    }
    // Non-fast-forward: a rewritten history on top of nothing.
    let orphan = td.join("orphan");
    git(&td.path, &["init", "--quiet", orphan.to_str().unwrap()]);
    fs::write(orphan.join("RQac12-rewrite"), "dummy rewrite\n").unwrap();
    git(&orphan, &["add", "-A"]);
    git(&orphan, &["commit", "--quiet", "-m", "rewrite"]);
    let out = run(git_cmd(&orphan).env("FERRY_USER", "host-a").args([
        "push",
        "--force",
        q.node_repo.to_str().unwrap(),
        "HEAD:master",
    ]));
    assert_push_refused(node, &out, "E_ACL_DENIED", "ac12 non-fast-forward");
    assert_eq!(q.node_tip(), tip, "history rewrite refused");
    // Push options are not advertised.
    q.commit(&[rq("ac12-push-option", "dummy po\n")], "push option");
    let out = q.push_as(Some("host-a"), "HEAD:master", &["-o", "client=host-b"]);
    assert!(!out.status.success(), "push options accepted: {}", text(&out));
    assert_eq!(q.node_tip(), tip);

    before.unchanged(&f);
    f.finish("ac12 refs");
}

/// AC-12: request files that are not plain RQ<id> blobs at the top level.
#[test]
fn ac12_request_file_names() {
    let Some(f) = fleet("ac12_names") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let before = Before::take(&f);

    let bad_names: Vec<(&str, String)> = vec![
        ("subdirectory", "host-b/RQac10-subdir".into()),
        ("readme", "README".into()),
        ("empty id", "RQ".into()),
        ("dot in id", "RQa.b".into()),
        ("dash first", "RQ-x".into()),
        ("long id", format!("RQ{}", "i".repeat(129))),
        ("space", "RQa b".into()),
        ("lower-case prefix", "rqabc".into()),
    ];
    for (what, name) in &bad_names {
        q.commit(&[(name.clone(), b"dummy x\n".to_vec())], what);
        let out = q.push();
        assert_push_refused(node, &out, "E_REQ_NAME", &format!("name: {what}"));
    }
    {
        use std::os::unix::ffi::OsStrExt;
        q.commit(&[], "non-UTF-8 name");
        fs::write(q.dir.join(std::ffi::OsStr::from_bytes(b"RQ\xff\x1b[2J")), "dummy x\n").unwrap();
        q.commit_as_is("non-utf8");
        assert_push_refused(node, &q.push(), "E_REQ_NAME", "name: non-UTF-8 with ESC");
    }
    before.unchanged(&f);
    f.finish("ac12 names");
}

/// AC-12: request files that are no regular blobs (symlink, executable,
/// submodule).
#[test]
fn ac12_request_file_types() {
    let Some(f) = fleet("ac12_types") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let before = Before::take(&f);

    q.commit(&[], "symlink");
    symlink("/etc/passwd", q.dir.join("RQac12-symlink")).unwrap();
    q.commit_as_is("symlink");
    assert_push_refused(node, &q.push(), "E_REQ_FILETYPE", "symlink");
    q.commit(&[rq("ac12-exec", "dummy exec\n")], "exec");
    fs::set_permissions(q.dir.join("RQac12-exec"), fs::Permissions::from_mode(0o755)).unwrap();
    q.commit_as_is("exec");
    assert_push_refused(node, &q.push(), "E_REQ_FILETYPE", "executable");
    q.commit(&[], "gitlink");
    let head = git(&q.dir, &["rev-parse", "HEAD"]);
    ok(git_cmd(&q.dir).args(["update-index", "--add", "--cacheinfo", &format!("160000,{head},RQac12-gitlink")]));
    ok(git_cmd(&q.dir).args(["commit", "--quiet", "-m", "gitlink"]));
    assert_push_refused(node, &q.push(), "E_REQ_FILETYPE", "gitlink");

    before.unchanged(&f);
    f.finish("ac12 types");
}

/// RP-03/RE: oversized request files are refused at the push.
#[test]
fn re_oversized_request_files_are_refused_at_the_push() {
    let Some(f) = fleet("re_oversized") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let before = Before::take(&f);

    q.commit(&[rq("re-70k", vec![b'a'; 70 * 1024])], "70k");
    assert_push_refused(node, &q.push(), "E_REQ_TOO_LONG", "70 KiB request");
    q.commit(&[rq("re-10m", vec![b'a'; 10 << 20])], "10m");
    assert_push_refused(node, &q.push(), "E_REQ_TOO_LONG", "10 MiB request (tiny on the wire)");

    before.unchanged(&f);
    f.finish("re oversized");
}

/// RP-04/RE-01: 300 requests in one push, in one commit or in 300: one
/// refusal, one event.
#[test]
fn re01_too_many_requests_in_one_push() {
    let Some(f) = fleet("re01_too_many") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    let before_push = Before::take(&f);

    let before = events(node).iter().filter(|e| e["event"] == "push_refused").count();
    let many: Vec<_> = (0..300).map(|i| rq(&format!("re-many-{i:03}"), format!("dummy m{i}\n"))).collect();
    q.commit(&many, "300");
    let out = q.push();
    assert_push_refused(node, &out, "E_REQ_TOO_MANY", "300 requests in one push");
    let after = events(node).iter().filter(|e| e["event"] == "push_refused").count();
    assert_eq!(after, before + 1, "one summary event, not one per request");
    // ... and spread over 300 commits of one push.
    q.commit(&[], "start");
    for (i, file) in many.iter().enumerate() {
        q.add_commit(std::slice::from_ref(file), &format!("c{i}"));
    }
    assert_push_refused(node, &q.push(), "E_REQ_TOO_MANY", "300 commits in one push");

    before_push.unchanged(&f);
    f.finish("re01 too many");
}

/// AC-10: identity claimed in commit metadata is never consulted.
#[test]
fn ac10_identity_in_commit_metadata_is_ignored() {
    let Some(f) = fleet("ac10_metadata") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);

    q.commit(&[rq("ac10-author", "dummy author\n")], "client=host-b\n\nFerry-Request: host-b");
    ok(git_cmd(&q.dir).args([
        "commit",
        "--quiet",
        "--amend",
        "--allow-empty",
        "--author",
        "root <root@host-b>",
        "-m",
        "client=host-b",
    ]));
    let out = q.push();
    assert!(out.status.success(), "{}", text(&out));
    scan(node, "host-a");
    assert_done(node, "host-a", "ac10-author");
    let ev = events(node).into_iter().find(|e| e["request"] == "ac10-author" && e["event"] == "request_done").unwrap();
    assert_eq!(ev["client"], "host-a");
    f.finish("ac10");
}

/// AC-07/AC-08: enrollment pushes with hostile keys are refused and the
/// live enrollment stays.
#[test]
fn ac07_ac08_hostile_keys_in_enrollment() {
    let Some(f) = fleet("ac07_ac08_keys") else {
        return;
    };
    let (node, a, td) = (&f.node, &f.a, &f.td);
    let c = canary("ac07");
    let c = c.display();

    let k2 = ferry_tests::ssh_keygen(&td.join("k2/id"), "evil");
    let k3 = ferry_tests::ssh_keygen(&td.join("k3/id"), "evil3");
    let mut k2f = k2.split(' ');
    let (k2t, k2b) = (k2f.next().unwrap().to_owned(), k2f.next().unwrap().to_owned());
    let rsa_outer = format!("ssh-rsa {k2b} mismatch");
    let admin_cases: Vec<(&str, String, String, &str)> = vec![
        ("options prefix", "evil.pub".into(), format!("command=\"touch {c}\" {k2}"), "E_ENROL_KEY"),
        ("environment option", "evil.pub".into(), format!("environment=\"LD_PRELOAD=/tmp/x.so\" {k2}"), "E_ENROL_KEY"),
        ("restrict option", "evil.pub".into(), format!("restrict {k2}"), "E_ENROL_KEY"),
        ("cert-authority", "evil.pub".into(), format!("cert-authority {k2}"), "E_ENROL_KEY"),
        ("newline injection", "evil.pub".into(), format!("{k2t} {k2b} a\ncommand=\"/bin/sh\" {k3}"), "E_ENROL_KEY"),
        ("CR inside", "evil.pub".into(), format!("{k2t} {}\r{} x", &k2b[..20], &k2b[20..]), "E_ENROL_KEY"),
        ("type mismatch", "evil.pub".into(), rsa_outer, "E_ENROL_KEY"),
        ("truncated blob", "evil.pub".into(), format!("{k2t} {} x", &k2b[..k2b.len() - 8]), "E_ENROL_KEY"),
        ("A's key again", "evil.pub".into(), a.public_key.clone(), "E_ENROL_DUP_KEY"),
        ("B enrols A's key", "host-b.pub".into(), a.public_key.clone(), "E_ENROL_DUP_KEY"),
        ("A's key twice in one file", "evil.pub".into(), format!("{k2}\n{k2}"), "E_ENROL_KEY"),
    ];
    for (what, file, content, code) in &admin_cases {
        let out =
            node.admin_push(what, |dir| fs::write(dir.join("keydir").join(file), format!("{content}\n")).unwrap());
        assert!(!out.status.success(), "ac07 {what}: enrollment accepted");
        assert!(text(&out).contains(code), "ac07 {what}: expected {code}: {}", text(&out));
    }
    f.finish("enrollment keys");
}

/// Retention rules that would delete every backup of a source, or that
/// name what is not there, are refused at enrollment with the reason, and
/// the live enrollment stays.
#[test]
fn retention_rules_that_keep_nothing_are_refused_at_enrollment() {
    let Some(f) = fleet("retention_refused") else {
        return;
    };
    let node = &f.node;
    for (what, section, reason) in [
        (
            "every keep-* zero",
            "[ferry source host-a db]\nkeep-last = 0\nkeep-daily = 0\nkeep-within = 0d\n",
            "keep nothing",
        ),
        ("negative count", "[ferry source host-a db]\nkeep-daily = -7\n", "'keep-daily': invalid value"),
        ("bad span", "[ferry source host-a db]\nkeep-within = 1fortnight\n", "'keep-within': invalid value"),
        ("source outside the store", "[ferry source host-a ../host-b]\nkeep-last = 1\n", "source '../host-b'"),
        ("client not enrolled", "[ferry source nobody db]\nkeep-last = 1\n", "is not a client enrolled here"),
    ] {
        let out = node.admin_push(what, |dir| {
            let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
            conf.push_str(&format!("\n{section}"));
            fs::write(dir.join("gitosis.conf"), conf).unwrap();
        });
        assert!(!out.status.success(), "{what}: enrollment accepted");
        assert!(text(&out).contains("E_ENROL_CONF") && text(&out).contains(reason), "{what}: {}", text(&out));
    }
    f.finish("retention rules");
}

/// AC-07/AC-08: enrollment pushes that grant a client more than its own
/// queue are refused and the live enrollment stays.
#[test]
fn ac07_ac08_hostile_grants_in_enrollment() {
    let Some(f) = fleet("ac07_ac08_grants") else {
        return;
    };
    let node = &f.node;

    for (what, section) in [
        ("grant on B's queue", "[group evil]\nmembers = host-a\nwritable = queue/host-b\n"),
        ("client writes gitosis-admin", "[group evil]\nmembers = host-a\nwritable = gitosis-admin\n"),
        ("client pushes through a map", "[group evil]\nmembers = host-a\nmap writable sneaky = queue/host-b\n"),
    ] {
        let out = node.admin_push(what, |dir| {
            let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
            conf.push_str(&format!("\n{section}"));
            fs::write(dir.join("gitosis.conf"), conf).unwrap();
        });
        assert!(!out.status.success(), "ac07 {what}: enrollment accepted");
        assert!(text(&out).contains("E_ENROL_CONF"), "ac07 {what}: {}", text(&out));
    }
    f.finish("enrollment grants");
}
