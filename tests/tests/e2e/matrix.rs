//! The permission matrix over real sshd: client A, client B, the admin and
//! an unknown key against every repository and command. Every cell is
//! asserted: what is allowed works, everything else is refused with its
//! reason.

use std::fs;
use std::path::Path;

use ferry_tests::fleet::{Client, Node, run, ssh_command, text};
use ferry_tests::{TestDir, git, git_cmd, hash_tree, require_all, ssh_cmd, ssh_keygen};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    /// Refused by `serve`, with this message.
    Denied(&'static str),
    /// Refused by the queue hook (pre-receive), with this reason code.
    Hook(&'static str),
    /// Refused by sshd (unknown key).
    NoAuth,
}

fn check(cell: &str, out: &std::process::Output, want: Expect) {
    let t = text(out);
    match want {
        Expect::Ok => assert!(out.status.success(), "{cell}: expected success, got: {t}"),
        Expect::Denied(msg) => {
            assert!(!out.status.success(), "{cell}: expected refusal, it worked: {t}");
            assert!(t.contains(msg), "{cell}: expected {msg:?}, got: {t}");
        }
        Expect::Hook(code) => {
            assert!(!out.status.success(), "{cell}: expected refusal, it worked: {t}");
            assert!(t.contains(code), "{cell}: expected {code}, got: {t}");
        }
        Expect::NoAuth => {
            assert!(!out.status.success(), "{cell}: expected no authentication, it worked: {t}");
            assert!(t.contains("Permission denied (publickey)"), "{cell}: {t}");
        }
    }
}

/// A local repository with one commit holding a valid request file, to push.
fn request_commit(dir: &Path, name: &str) {
    git(dir.parent().unwrap(), &["init", "--quiet", dir.to_str().unwrap()]);
    fs::write(dir.join(format!("RQ20261122T000000Z-{name}-1")), "dummy matrix\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "request"]);
}

#[test]
fn every_key_against_every_repository_and_command() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("acl_matrix");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    let b = Client::new(&td, "host-b", &[&node]);
    node.enroll(&[&a, &b]);
    let kh = td.join("known_hosts");
    node.sshd.write_known_hosts(&kh);
    let stranger = td.join("stranger");
    ssh_keygen(&stranger, "stranger");
    let keys: [(&str, &Path); 4] = [
        ("A", &a.base.join("state/ssh/id_ed25519")),
        ("B", &b.base.join("state/ssh/id_ed25519")),
        ("admin", &node.admin_key),
        ("unknown", &stranger),
    ];
    // Hash what must never change through a refused cell.
    let outside = node.srv().join("keys");
    let keys_before = hash_tree(&outside);

    const READ_DENIED: Expect = Expect::Denied("Repository read access denied");
    let repos = ["queue/host-a.git", "queue/host-b.git", "gitosis-admin.git", "nonexistent.git"];
    for (who, key) in keys {
        let ssh = ssh_command(key, &kh);
        for repo in repos {
            let own_queue = matches!((who, repo), ("A", "queue/host-a.git") | ("B", "queue/host-b.git"));
            let admin_repo = who == "admin" && repo == "gitosis-admin.git";
            let read = if who == "unknown" {
                Expect::NoAuth
            } else if own_queue || admin_repo {
                Expect::Ok
            } else {
                READ_DENIED
            };
            // fetch (git-upload-pack)
            let out = run(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args(["ls-remote", &node.url(repo)]));
            check(&format!("{who} fetch {repo}"), &out, read);
            // archive (git-upload-archive), only meaningful where a commit exists
            if repo != "nonexistent.git" && (read != Expect::Ok || admin_repo) {
                let out = run(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args([
                    "archive",
                    &format!("--remote={}", node.url(repo)),
                    "master",
                ]));
                check(&format!("{who} archive {repo}"), &out, read);
            }
            // push (git-receive-pack)
            let work = td.join(format!("push-{who}-{}", repo.replace('/', "_")));
            let pushed_name = format!("{:08x}", ferry_durable_hash(&format!("{who}{repo}")));
            // A refused push says write, whatever the key may read.
            let write = if read == READ_DENIED { Expect::Denied("Repository write access denied") } else { read };
            if admin_repo {
                // A valid admin change: clone, add a comment, push.
                let out = run(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args([
                    "clone",
                    "--quiet",
                    &node.url(repo),
                    work.to_str().unwrap(),
                ]));
                check("admin clone", &out, Expect::Ok);
                let mut c = fs::read_to_string(work.join("gitosis.conf")).unwrap();
                c.push_str("# matrix\n");
                fs::write(work.join("gitosis.conf"), c).unwrap();
                git(&work, &["commit", "--quiet", "-am", "matrix"]);
            } else {
                request_commit(&work, &pushed_name);
            }
            let out = run(git_cmd(&work).env("GIT_SSH_COMMAND", &ssh).args(["push", &node.url(repo), "HEAD:master"]));
            check(&format!("{who} push {repo}"), &out, write);
            // A pushed branch other than master is refused by the queue hook.
            if own_queue {
                let out = run(git_cmd(&work).env("GIT_SSH_COMMAND", &ssh).args([
                    "push",
                    &node.url(repo),
                    "HEAD:refs/heads/side",
                ]));
                check(&format!("{who} push side branch {repo}"), &out, Expect::Hook("E_ACL_DENIED"));
                let out = run(git_cmd(&work).env("GIT_SSH_COMMAND", &ssh).args(["push", &node.url(repo), ":master"]));
                check(&format!("{who} delete master {repo}"), &out, Expect::Hook("E_ACL_DENIED"));
            }
        }
        // Anything that is not git's server side: a shell, scp, sftp.
        let nonauth = if who == "unknown" { Expect::NoAuth } else { Expect::Denied("Unknown command denied") };
        for cmd in [
            "id",
            "sh -c id",
            "cat /etc/passwd",
            "scp -t /tmp",
            "git-upload-pack '../queue/host-b.git'",
            "git-receive-pack 'queue/host-a.git' 'queue/host-b.git'",
        ] {
            let out = run(ssh_cmd(key, &kh, &node.sshd).arg(cmd));
            let want = match (who, cmd) {
                ("unknown", _) => Expect::NoAuth,
                (_, c) if c.starts_with("git-") => Expect::Denied("Arguments to command look dangerous"),
                _ => nonauth,
            };
            check(&format!("{who} ssh {cmd:?}"), &out, want);
        }
        // The restore verb (issue 13): a client reads only data/<itself>,
        // and nothing is stored yet, so every cell is a refusal; the
        // granted reads are in client_restore.rs.
        for (cmd, refusal) in [
            ("ferry-restore list site", "Repository read access denied"),
            ("ferry-restore get host-a/site/20261122T000000Z/site.tar.zst 0", "Repository read access denied"),
            ("ferry-restore get host-b/site/20261122T000000Z/site.tar.zst 0", "Repository read access denied"),
            ("ferry-restore git 'project'", "Repository read access denied"),
            ("ferry-restore list ../host-b", "Arguments to command look dangerous"),
            ("ferry-restore get host-a/../host-b/x 0", "Arguments to command look dangerous"),
            ("ferry-restore git '../../queue/host-b'", "Arguments to command look dangerous"),
            ("ferry-restore put site", "Unknown command denied"),
        ] {
            let out = run(ssh_cmd(key, &kh, &node.sshd).arg(cmd));
            let want = if who == "unknown" { Expect::NoAuth } else { Expect::Denied(refusal) };
            check(&format!("{who} ssh {cmd:?}"), &out, want);
        }
        let out = run(ferry_tests::sftp_cmd(key, &kh, &node.sshd)
            .arg("-b")
            .arg("/dev/null")
            .arg(ferry_tests::sftp_dest(&node.sshd)));
        assert!(!out.status.success(), "{who}: sftp must not work on the node: {}", text(&out));
        // Port forwarding through a client key is refused (restrict).
        if who != "unknown" {
            // Remote forwards are requested at login, so a refusal is seen
            // at once (a local -L is only tried when a connection arrives).
            let out = ferry_tests::run_with_timeout(
                ssh_cmd(key, &kh, &node.sshd).args([
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-N",
                    "-R",
                    "127.0.0.1:0:127.0.0.1:22",
                ]),
                std::time::Duration::from_secs(30),
            );
            assert!(!out.status.success(), "{who}: a remote forward must fail: {}", text(&out));
        }
    }
    // A's request file reached A's pool only; B's pool has B's only.
    let pool_a: Vec<String> = fs::read_dir(node.pool("host-a"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pool_b: Vec<String> = fs::read_dir(node.pool("host-b"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let a_name = format!("{:08x}", ferry_durable_hash("Aqueue/host-a.git"));
    let b_name = format!("{:08x}", ferry_durable_hash("Bqueue/host-b.git"));
    assert!(pool_a.iter().any(|n| n.contains(&a_name)) && !pool_a.iter().any(|n| n.contains(&b_name)), "{pool_a:?}");
    assert!(pool_b.iter().any(|n| n.contains(&b_name)) && !pool_b.iter().any(|n| n.contains(&a_name)), "{pool_b:?}");
    assert_eq!(hash_tree(&outside), keys_before, "the node's keys are untouched");
}

/// A tiny stable hash for unique request names per cell.
fn ferry_durable_hash(s: &str) -> u32 {
    s.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619))
}

/// The node's pull key on a client (SECURITY C10, SF-10): a read-only window
/// on the export directory and `git-upload-pack` of exported repositories,
/// nothing else.
#[test]
fn the_nodes_pull_key_on_a_client_only_reads_what_is_exported() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("gate_matrix");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, _work) = a.repo("project");
    let secret = a.base.join("secret.git");
    git(&a.base, &["init", "--quiet", "--bare", secret.to_str().unwrap()]);
    fs::write(a.base.join("export/artifact.txt"), "exported\n").unwrap();
    let key = node.srv().join("keys/host-a/id_ed25519");
    let kh = td.join("kh");
    a.sshd.write_known_hosts(&kh);
    let ssh = ssh_command(&key, &kh);
    let url = |p: &Path| format!("ssh://{}@{}:{}{}", a.sshd.user(), a.sshd.addr(), a.sshd.port(), p.display());
    let before = hash_tree(a.base.join("srv"));

    // Allowed: upload-pack of an exported repository, sftp reads.
    check(
        "pull key: ls-remote exported",
        &run(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args(["ls-remote", &url(&bare)])),
        Expect::Ok,
    );
    let batch = td.join("batch");
    fs::write(&batch, format!("get {}/export/artifact.txt {}\n", a.base.display(), td.join("got.txt").display()))
        .unwrap();
    let out = run(ferry_tests::sftp_cmd(&key, &kh, &a.sshd).arg("-b").arg(&batch).arg(ferry_tests::sftp_dest(&a.sshd)));
    check("pull key: sftp get", &out, Expect::Ok);
    assert_eq!(fs::read_to_string(td.join("got.txt")).unwrap(), "exported\n");

    // Refused: repositories outside the git roots, pushes, shells, writes.
    let out = run(git_cmd(&td.path).env("GIT_SSH_COMMAND", &ssh).args(["ls-remote", &url(&secret)]));
    assert!(!out.status.success() && text(&out).contains("not exported"), "{}", text(&out));
    let scratch = td.join("scratch");
    request_commit(&scratch, "gate");
    let out = run(git_cmd(&scratch).env("GIT_SSH_COMMAND", &ssh).args(["push", &url(&bare), "HEAD:master"]));
    assert!(!out.status.success() && text(&out).contains("only git-upload-pack"), "{}", text(&out));
    for cmd in ["id", "sh -c id", "scp -t /tmp", "git-upload-pack '/etc'", "git-upload-pack '../x'"] {
        let out = run(ssh_cmd(&key, &kh, &a.sshd).arg(cmd));
        assert!(!out.status.success(), "pull key ran {cmd:?}: {}", text(&out));
        assert!(text(&out).contains("ferry gate"), "{cmd}: {}", text(&out));
    }
    for op in ["put /etc/hostname up.txt", "rm export/artifact.txt", "mkdir newdir", "ls /"] {
        fs::write(&batch, format!("{op}\n")).unwrap();
        let out =
            run(ferry_tests::sftp_cmd(&key, &kh, &a.sshd).arg("-b").arg(&batch).arg(ferry_tests::sftp_dest(&a.sshd)));
        assert!(!out.status.success(), "pull key could `{op}`: {}", text(&out));
    }
    assert!(a.base.join("export/artifact.txt").exists());
    assert_eq!(hash_tree(a.base.join("srv")), before, "nothing on the client changed");
}
