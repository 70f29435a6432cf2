//! Self-tests of the harness (`ferry_tests`): each daemon guard starts,
//! works with its real client, and leaves no process behind when dropped.
//! Timeouts are generous and nothing asserts on timing: the CI machine is a
//! slow, shared 2-core box.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::*;

/// Asserts no live process mentions `dir` on its command line, by
/// [`processes_matching`] and, where procps is installed, `pgrep -f`.
fn assert_no_strays(dir: &Path) {
    let needle = dir.to_str().expect("utf-8 path");
    let mut left = Vec::new();
    // Killed processes may take a moment to be torn down by the kernel.
    wait_until(Duration::from_secs(20), "stray processes to go", || {
        left = processes_matching(needle);
        left.is_empty()
    });
    if Path::new("/usr/bin/pgrep").exists() {
        let out = Command::new("pgrep").args(["-a", "-f", needle]).output().expect("run pgrep");
        let listed = String::from_utf8_lossy(&out.stdout);
        // pgrep may list processes that died since; re-check each pid.
        let alive: Vec<&str> = listed
            .lines()
            .filter(|l| {
                let pid = l.split_whitespace().next().unwrap_or("");
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
            })
            .collect();
        assert!(alive.is_empty(), "pgrep -f {needle} found: {alive:?}");
    }
}

fn write_authorized_keys(path: &Path, keys: &[&str]) {
    fs::write(path, keys.iter().map(|k| format!("{k}\n")).collect::<String>()).unwrap();
}

#[test]
fn sshd_key_auth_stop_restart_keeps_host_key() {
    if !require_all(&["sshd", "ssh", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("harness_sshd");
    let good = td.join("good_key");
    let bad = td.join("bad_key");
    let good_pub = ssh_keygen(&good, "good@test");
    let bad_pub = ssh_keygen(&bad, "bad@test");
    assert!(good_pub.starts_with("ssh-ed25519 AAAA") && good_pub.ends_with(" good@test"));
    assert_ne!(good_pub, bad_pub);
    let ak = td.join("authorized_keys");
    write_authorized_keys(&ak, &[&good_pub]);

    let sshd_dir = td.join("sshd");
    let mut sshd = Sshd::start(&sshd_dir, SshdOptions::new(&ak));
    let kh = td.join("known_hosts");
    sshd.write_known_hosts(&kh);
    assert_eq!(sshd.known_hosts_line(), format!("[{}]:{} {}", sshd.addr(), sshd.port(), sshd.host_key_pub()));
    assert!(sshd.host_key_pub().starts_with("ssh-ed25519 AAAA"));
    assert_eq!(sshd.host_key_pub().split(' ').count(), 2, "no comment");
    assert_eq!(sshd.user(), current_user());

    let out = run_checked(ssh_cmd(&good, &kh, &sshd).arg("echo ok"));
    assert_eq!(out.trim(), "ok");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    let wrong = ssh_cmd(&bad, &kh, &sshd).arg("echo ok").stdin(Stdio::null()).output().unwrap();
    assert!(!wrong.status.success(), "a key not in authorized_keys must fail");
    assert!(!String::from_utf8_lossy(&wrong.stdout).contains("ok"));

    // A known_hosts entry with another host key is refused (strict checking).
    let other_kh = td.join("other_known_hosts");
    let other_host = ssh_keygen(&td.join("other_host_key"), "other");
    let other_host: Vec<&str> = other_host.split(' ').take(2).collect();
    fs::write(&other_kh, format!("[{}]:{} {}\n", sshd.addr(), sshd.port(), other_host.join(" "))).unwrap();
    let mismatch = ssh_cmd(&good, &other_kh, &sshd).arg("echo ok").stdin(Stdio::null()).output().unwrap();
    assert!(!mismatch.status.success(), "a wrong pinned host key must fail");

    // An open session is cut when the "host goes offline".
    let mut session = ssh_cmd(&good, &kh, &sshd)
        .arg("sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the sleep session to start", || {
        sshd.log().matches("Accepted publickey").count() >= 2
    });
    let (addr, port, host_key) = (sshd.addr(), sshd.port(), sshd.host_key_pub());
    sshd.stop();
    assert!(!sshd.is_running());
    wait_until(Duration::from_secs(60), "the ssh client to notice", || session.try_wait().unwrap().is_some());
    let offline = ssh_cmd(&good, &kh, &sshd).arg("echo ok").stdin(Stdio::null()).output().unwrap();
    assert!(!offline.status.success(), "a stopped sshd must refuse");
    assert_no_strays(&sshd_dir);

    sshd.restart();
    assert!(sshd.is_running());
    assert_eq!((sshd.addr(), sshd.port(), sshd.host_key_pub()), (addr, port, host_key));
    // The old known_hosts still matches: same address, port and host key.
    let out = run_checked(ssh_cmd(&good, &kh, &sshd).arg("echo back"));
    assert_eq!(out.trim(), "back");

    drop(sshd);
    assert_no_strays(&sshd_dir);
}

#[test]
fn sshd_sftp_get_and_git_push_over_ssh() {
    if !require_all(&["sshd", "ssh-keygen", "sftp", "git"]) {
        return;
    }
    let td = TestDir::new("harness_sftp");
    let key = td.join("id");
    let ak = td.join("authorized_keys");
    write_authorized_keys(&ak, &[&ssh_keygen(&key, "sftp")]);
    let mut opts = SshdOptions::new(&ak);
    opts.extra.push("LogLevel=DEBUG1".to_string());
    let sshd = Sshd::start(&td.join("sshd"), opts);
    let kh = td.join("known_hosts");
    sshd.write_known_hosts(&kh);

    let remote = td.join("export/data.bin");
    fs::create_dir_all(remote.parent().unwrap()).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&remote, &payload).unwrap();
    let local = td.join("download.bin");
    let batch = td.join("batch");
    fs::write(&batch, format!("get {} {}\n", remote.display(), local.display())).unwrap();
    run_checked(sftp_cmd(&key, &kh, &sshd).arg("-b").arg(&batch).arg(sftp_dest(&sshd)));
    assert_eq!(sha256_file(&local), sha256_file(&remote));
    assert_eq!(sha256_file(&local), sha256_bytes(&payload));
    assert!(sshd.log().contains("subsystem 'sftp'"), "{}", sshd.log());

    // git over ssh with the same pinned key and host key.
    let work = td.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "over ssh"]);
    let bare = td.join("remote.git");
    git(&td.path, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let url = sshd.url(bare.to_str().unwrap());
    assert!(url.starts_with("ssh://") && url.ends_with("/remote.git"), "{url}");
    run_checked(git_cmd(&work).env("GIT_SSH_COMMAND", git_ssh_command(&key, &kh)).args(["push", "-q", &url, "master"]));
    assert_eq!(git(&bare, &["rev-parse", "master"]), git(&work, &["rev-parse", "HEAD"]));
}

#[test]
fn postgres_create_insert_select() {
    if !require("postgres") {
        return;
    }
    let td = TestDir::new("harness_pg");
    let pg_dir = td.join("pg");
    let pg = Postgres::start(&pg_dir);
    assert_eq!(pg.os_user(), "postgres");
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port())).exists());
    pg.create_db("ferry app");
    pg.psql(
        "ferry app",
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    );
    assert_eq!(pg.psql("ferry app", "SELECT id, name FROM t ORDER BY id"), "1|one\n2|two");
    // Over TCP on its loopback address too, as a client on another host would.
    let out = run_checked(
        Command::new("/usr/bin/psql")
            .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM t"])
            .arg(pg.url("ferry app").replace(' ', "%20")),
    );
    assert_eq!(out.trim(), "2");
    assert!(pg.bin_dir().join("pg_dump").exists());
    drop(pg);
    assert_no_strays(&pg_dir);
}

#[test]
fn mariadb_create_insert_select() {
    if !require("mariadb") {
        return;
    }
    let td = TestDir::new("harness_mariadb");
    let my_dir = td.join("mariadb");
    let db = MariaDb::start(&my_dir);
    assert!(db.socket().exists());
    db.create_db("ferry_app");
    db.sql(
        Some("ferry_app"),
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));
         INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    );
    assert_eq!(db.sql(Some("ferry_app"), "SELECT id, name FROM t ORDER BY id"), "1\tone\n2\ttwo");
    // Over TCP on its loopback address.
    let out = run_checked(
        Command::new("mariadb")
            .args(["--no-defaults", "-u", "root", "--batch", "--skip-column-names"])
            .arg(format!("--host={}", db.host()))
            .arg(format!("--port={}", db.port()))
            .args(["-e", "SELECT count(*) FROM ferry_app.t"]),
    );
    assert_eq!(out.trim(), "2");
    drop(db);
    assert_no_strays(&my_dir);
}

/// Sends one message over a raw SMTP dialog, checking each reply code.
fn smtp_send(host: &str, port: u16, from: &str, to: &[&str], data: &str) {
    let stream = TcpStream::connect((host, port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    let mut cmd = |line: String, code: &str| {
        w.write_all(line.as_bytes()).unwrap();
        expect(code);
    };
    cmd("EHLO client.test\r\n".into(), "250");
    cmd(format!("MAIL FROM:<{from}>\r\n"), "250");
    for rcpt in to {
        cmd(format!("RCPT TO:<{rcpt}>\r\n"), "250");
    }
    cmd("DATA\r\n".into(), "354");
    let stuffed: String = data
        .strip_suffix("\r\n")
        .unwrap_or(data)
        .split("\r\n")
        .map(|l| if l.starts_with('.') { format!(".{l}\r\n") } else { format!("{l}\r\n") })
        .collect();
    cmd(format!("{stuffed}.\r\n"), "250");
    cmd("QUIT\r\n".into(), "221");
}

#[test]
fn smtp_receives_and_parses() {
    if !require("aiosmtpd") {
        return;
    }
    let td = TestDir::new("harness_smtp");
    let smtp_dir = td.join("smtp");
    let mut smtp = Smtp::start(&smtp_dir);
    assert!(smtp.messages().is_empty());
    let data = "From: Ferry <ferry@node.test>\r\n\
                To: admin@example.test\r\n\
                Subject: =?UTF-8?B?QmFja3VwIGZhaWxlZDo=?=\r\n =?UTF-8?Q?_caf=C3=A9?= on host-a\r\n\
                X-Folded: first\r\n\tsecond\r\n\
                MIME-Version: 1.0\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\
                Content-Transfer-Encoding: quoted-printable\r\n\
                \r\n\
                Request RQ1 ended in error: caf=C3=A9 is =\r\nunreachable.\r\n\
                .leading dot survives\r\n";
    smtp_send(&smtp.host(), smtp.port(), "ferry@node.test", &["admin@example.test", "ops@example.test"], data);
    let mails = smtp.wait_for(1, Duration::from_secs(60));
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.envelope_from, "ferry@node.test");
    assert_eq!(m.envelope_to, ["admin@example.test", "ops@example.test"]);
    assert_eq!(m.subject, "Backup failed: café on host-a");
    assert_eq!(m.header("x-folded"), Some("first\tsecond"));
    assert_eq!(m.header("From"), Some("Ferry <ferry@node.test>"));
    assert_eq!(m.body, "Request RQ1 ended in error: café is unreachable.\n.leading dot survives\n");
    assert!(m.raw.starts_with(b"From: Ferry"));
    assert_eq!(m.headers[0].0, "From");

    // A second message through Python's smtplib (another real client).
    let script = format!(
        "import smtplib\nfrom email.message import EmailMessage\n\
         m = EmailMessage()\nm['From'] = 'a@x.test'\nm['To'] = 'b@y.test'\n\
         m['Subject'] = 'Résumé of backups'\nm.set_content('line one\\nline two')\n\
         with smtplib.SMTP('{}', {}) as s:\n    s.send_message(m)\n",
        smtp.host(),
        smtp.port()
    );
    run_checked(Command::new("/usr/bin/python3").args(["-c", &script]));
    let mails = smtp.wait_for(2, Duration::from_secs(60));
    assert_eq!(mails[1].subject, "Résumé of backups");
    assert_eq!(mails[1].envelope_to, ["b@y.test"]);
    assert_eq!(mails[1].body.trim_end(), "line one\nline two");

    smtp.stop();
    assert_eq!(smtp.messages().len(), 2, "messages stay readable after stop");
    assert!(TcpStream::connect((smtp.host().as_str(), smtp.port())).is_err());
    drop(smtp);
    assert_no_strays(&smtp_dir);
}

#[test]
fn mail_parser_decodes_base64_and_encoded_words() {
    let raw = b"Subject: =?ISO-8859-1?Q?Caf=E9?= =?utf-8?b?IOKckw==?= done\n\
                Content-Transfer-Encoding: base64\n\
                \n\
                aGVsbG8gd29ybGQK\n"
        .to_vec();
    let m = Mail::parse("a@b", vec!["c@d".into()], raw);
    assert_eq!(m.subject, "Café ✓ done");
    assert_eq!(m.body, "hello world\n");
    assert_eq!(decode_rfc2047("plain =? not encoded"), "plain =? not encoded");
    assert_eq!(decode_rfc2047("=?utf-8?q?a_b?= c"), "a b c");
}

#[test]
fn cgit_serves_two_repos_seen_by_chromium() {
    if !require_all(&["cgit", "git", "chromium"]) {
        return;
    }
    let td = TestDir::new("harness_cgit");
    let mirrors = td.join("mirrors");
    let work = td.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    fs::write(work.join("README"), "hello\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    for name in ["alpha-repo", "beta-repo"] {
        let dest = mirrors.join("host-a.test").join(format!("{name}.git"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        git(&td.path, &["clone", "-q", "--bare", work.to_str().unwrap(), dest.to_str().unwrap()]);
    }
    let cgitrc = format!(
        "css=/cgit-css/cgit.css\nlogo=/cgit-css/cgit.png\nroot-title=Ferry backups\n\
         virtual-root=/cgit/\nmax-repo-count=0\nenable-http-clone=0\n\
         enable-git-config=1\nremove-suffix=1\nsection-from-path=1\nscan-path={}\n",
        mirrors.display()
    );
    let web_dir = td.join("web");
    let web = CgitWeb::start(&web_dir, &cgitrc);
    assert!(web.url().starts_with("http://127.0.0.") && web.url().ends_with("/cgit/"));

    let (status, index) = web.get("/cgit/");
    assert_eq!(status, 200, "{index}\n{}", web.logs());
    for want in ["Ferry backups", "host-a.test", "alpha-repo", "beta-repo"] {
        assert!(index.contains(want), "index lacks {want}:\n{index}\n{}", web.logs());
    }
    let (status, log) = web.get("host-a.test/alpha-repo/log/");
    assert_eq!(status, 200);
    assert!(log.contains("first"), "{log}");
    let css = http_get(&format!("{}/cgit-css/cgit.css", web.base_url()));
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(http_get(&format!("{}/cgit", web.base_url())).status, 301);

    let dom = chromium_dump_dom(&web.url());
    for want in ["alpha-repo", "beta-repo", "Ferry backups"] {
        assert!(dom.contains(want), "chromium DOM lacks {want}:\n{dom}");
    }
    let png = td.join("index.png");
    chromium_screenshot(&web.url(), &png);
    let bytes = fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);

    drop(web);
    assert_no_strays(&web_dir);
}

#[test]
fn git_env_for_each_ref_and_git_daemon() {
    if !require("git") {
        return;
    }
    let td = TestDir::new("harness_git");
    let work = td.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    assert_eq!(git(&work, &["symbolic-ref", "HEAD"]), "refs/heads/master");
    assert_eq!(git(&work, &["config", "user.email"]), "ferry-test@example.invalid");
    fs::write(work.join("f"), "1\n").unwrap();
    git(&work, &["add", "f"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "v1"]);
    assert!(!git_ok(&work, &["rev-parse", "--verify", "no-such-ref"]));

    let base = td.join("srv");
    fs::create_dir_all(&base).unwrap();
    let bare = base.join("proj.git");
    git(&td.path, &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    let refs = for_each_ref(&bare);
    let head = git(&work, &["rev-parse", "HEAD"]);
    assert_eq!(refs, format!("{head} refs/heads/master\n{head} refs/tags/v1"));

    let daemon_dir = td.join("git-daemon");
    let daemon = GitDaemon::start(&daemon_dir, &base);
    let mirror = td.join("mirror.git");
    git(&td.path, &["clone", "-q", "--mirror", &daemon.url("proj.git"), mirror.to_str().unwrap()]);
    assert_eq!(for_each_ref(&mirror), refs);
    drop(daemon);
    assert_no_strays(&daemon_dir);
}

#[test]
fn daemon_guard_kills_escaped_children_and_reports_early_exit() {
    if !require_all(&["sh", "setsid", "sleep"]) {
        return;
    }
    let td = TestDir::new("harness_daemon");
    let marker = td.join("marker");
    fs::write(&marker, "").unwrap();
    let script = td.join("svc.sh");
    // A child in the group, and one that escapes it with setsid (its
    // command line names the test dir, so the stray check sees it).
    fs::write(
        &script,
        format!("#!/bin/sh\nsleep 600 &\nsetsid sh -c 'sleep 601; echo {}' &\necho ready\nwait\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::spawn("svc", Command::new(&script), &td.join("svc.log"), Signal::TERM, Duration::from_secs(5));
    d.wait_for_log("ready", READY_TIMEOUT);
    assert!(d.is_running());
    let marker_str = marker.to_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the escaped child", || !processes_matching(&marker_str).is_empty());
    drop(d);
    assert_no_strays(&td.path);

    // A daemon that exits before it is ready: the panic carries the log.
    let failing = std::panic::catch_unwind(|| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom-from-daemon >&2; exit 3"]);
        let mut d = Daemon::spawn("failing", cmd, &td.join("failing.log"), Signal::TERM, Duration::from_secs(1));
        d.wait_for_log("never", READY_TIMEOUT);
    });
    let msg = failing.expect_err("must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("exited") && msg.contains("boom-from-daemon"), "{msg}");
}

#[test]
fn loopback_ports_dirs_and_tree_hash() {
    let a = next_loopback();
    let b = next_loopback();
    assert_ne!(a, b);
    for ip in [a, b] {
        let [o1, o2, o3, x] = ip.octets();
        assert_eq!((o1, o2, o3), (127, 0, 0));
        assert!((2..=250).contains(&x), "{ip}");
        let port = free_port(ip);
        TcpListener::bind((ip, port)).expect("free_port gives a bindable port");
    }

    let td = TestDir::new("harness/misc dir");
    let path = td.path.clone();
    assert!(path.is_dir());
    assert!(path.starts_with(test_root()));
    assert!(!path.file_name().unwrap().to_str().unwrap().contains(' '));
    assert_eq!(td.join("x"), path.join("x"));
    assert!(td.home().is_dir());

    let root = td.mkdir("tree");
    fs::write(root.join("a"), "one").unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    symlink("../a", root.join("sub/link")).unwrap();
    let before = hash_tree(&root);
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(before[Path::new("a")].contains(&sha256_bytes(b"one")));
    assert_eq!(before, hash_tree(&root));
    fs::write(root.join("a"), "two").unwrap();
    assert_ne!(before, hash_tree(&root));
    fs::write(root.join("a"), "one").unwrap();
    assert_eq!(before, hash_tree(&root));
    fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(before, hash_tree(&root));

    wait_until(Duration::from_secs(5), "trivially true", || true);
    let timed_out = std::panic::catch_unwind(|| wait_until(Duration::from_millis(100), "the impossible", || false));
    assert!(timed_out.is_err());

    let missing = std::panic::catch_unwind(|| ferry_bin("ferry-no-such-binary"));
    let msg = missing.expect_err("must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cargo build --workspace --bins"), "{msg}");

    if in_ci() {
        assert!(std::panic::catch_unwind(|| require("ferry-no-such-tool")).is_err());
    } else {
        assert!(!require("ferry-no-such-tool"));
    }

    drop(td);
    if std::env::var("FERRY_KEEP_TEST_DIRS").as_deref() != Ok("1") {
        assert!(!path.exists(), "TestDir is removed on drop");
    }
}
