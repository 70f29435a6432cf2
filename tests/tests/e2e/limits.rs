//! Bounds a client cannot choose (issue 16, 3c): the node's default size
//! limits, the minimum transfer rate, scanning clients side by side so one
//! stalled client does not hold up the others, and what a cut connection
//! says.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{TestDir, require_all};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "/usr/bin/python3"])
}

/// The scripted sftp server of the ferry-pull tests (modes in its doc).
fn hostile_sftp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cmds/pull/tests/hostile_sftp.py")
}

/// Stop the node's multiplexed ssh masters, so a changed forced command on
/// a client (read at authentication) applies to the next pull.
fn close_masters(node: &Node) {
    for e in fs::read_dir(node.srv().join("state/ssh")).into_iter().flatten().flatten() {
        let _ = run(Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}", e.path().display()))
            .args(["-O", "exit", "x"]));
        let _ = fs::remove_file(e.path());
    }
}

/// Make client `c`'s sshd run `script` instead of `ferry gate` for the
/// node's pull key (a compromised client controls its own server).
fn hostile_gate(node: &Node, c: &Client, script: &str) {
    let ak = c.base.join("authorized_keys");
    let old = fs::read_to_string(&ak).unwrap();
    let path = c.base.join("hostile-gate.sh");
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let start = old.find("command=\"").expect("a forced command") + 9;
    let end = start + old[start..].find('"').unwrap();
    fs::write(&ak, format!("{}{}{}", &old[..start], path.display(), &old[end..])).unwrap();
    close_masters(node);
}

/// Rewrite node.toml: the harness's lines plus `extra`.
fn node_config(node: &Node, base: &str, extra: &str) {
    fs::write(&node.config, format!("{base}\n{extra}\n")).unwrap();
}

/// An sftp request line for `c`'s export directory, as a client would
/// queue it (the node's clock as stamp).
fn sftp_line(c: &Client, file: &str, size: u64, source: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let stamp = ferry_request::Stamp::from_unix(secs - 60);
    format!(
        "sftp {stamp} sftp://{}@{}:{}{}/{file} sha256={} size={size} source={source}\n",
        c.sshd.user(),
        c.sshd.addr(),
        c.sshd.port(),
        c.base.join("export").display(),
        "ab".repeat(32)
    )
}

/// Put a request straight into the node's pool, as the queue hook leaves it.
fn queue(node: &Node, client: &str, id: &str, line: &str) {
    fs::write(node.pool(client).join(format!("RQ{id}")), line).unwrap();
}

fn why(node: &Node, client: &str, id: &str) -> serde_json::Value {
    let p = node.pool(client).join(format!("E{id}.why"));
    let b = fs::read(&p).unwrap_or_else(|e| {
        panic!("{}: {e}; the request is in {:?}; journal: {}", p.display(), states(node, client, id), node.events())
    });
    serde_json::from_slice(&b).unwrap()
}

fn states(node: &Node, client: &str, id: &str) -> Vec<&'static str> {
    ["RQ", "P", "F", "E"].into_iter().filter(|s| node.pool(client).join(format!("{s}{id}")).exists()).collect()
}

fn scan(node: &Node) {
    let out = run(node.cmd().args(["scan"]));
    assert!(matches!(out.status.code(), Some(0 | 3)), "scan failed: {}", text(&out));
}

/// Nothing of a refused or failed download is stored.
fn stored_files(node: &Node, client: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![node.data(client)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn what_a_client_declares_is_bounded_by_node_defaults_and_min_rate() {
    if !tools() {
        return;
    }
    let td = TestDir::new("limits_defaults");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let base = fs::read_to_string(&node.config).unwrap();
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);

    // Nothing set in node.toml: a declared size over the default largest
    // artifact (64 GiB) is refused before any connection (the file does not
    // even exist: trying would end E_FETCH_NOT_FOUND).
    queue(&node, "host-a", "20261204T000001Z-00000001-1", &sftp_line(&a, "huge.bin", (64 << 30) + 1, "big"));
    scan(&node);
    let w = why(&node, "host-a", "20261204T000001Z-00000001-1");
    assert_eq!(w["reason"], "E_FETCH_LIMIT", "{w}");
    // With the artifact limit lifted, the default quota (1 TiB) still holds.
    node_config(&node, &base, "[limits]\nmax_artifact = \"unlimited\"");
    queue(&node, "host-a", "20261204T000002Z-00000002-1", &sftp_line(&a, "huge.bin", (1 << 40) + 1, "big"));
    scan(&node);
    let w = why(&node, "host-a", "20261204T000002Z-00000002-1");
    assert_eq!(w["reason"], "E_QUOTA", "{w}");
    // An administrator can lift both: then the node does try (and finds no
    // such file).
    node_config(&node, &base, "[limits]\nmax_artifact = \"unlimited\"\nquota = \"unlimited\"");
    queue(&node, "host-a", "20261204T000003Z-00000003-1", &sftp_line(&a, "huge.bin", (1 << 40) + 1, "big"));
    scan(&node);
    let w = why(&node, "host-a", "20261204T000003Z-00000003-1");
    assert_eq!(w["reason"], "E_FETCH_NOT_FOUND", "{w}");

    // A server that drips one byte per read beats the idle timeout but not
    // min_rate: the request ends E_FETCH_TIMEOUT after one rate window
    // (1 s here; the job's deadline is the default 2 h).
    node_config(&node, &base, "[limits]\nmin_rate = \"64K/s\"\nrate_window = \"1s\"");
    let mode = a.base.join("hostile_mode");
    fs::write(&mode, "drip 300000\n").unwrap();
    hostile_gate(&node, &a, &format!("exec /usr/bin/python3 {} {}", hostile_sftp().display(), mode.display()));
    queue(&node, "host-a", "20261204T000004Z-00000004-1", &sftp_line(&a, "drip.bin", 300_000, "drip"));
    scan(&node);
    let w = why(&node, "host-a", "20261204T000004Z-00000004-1");
    assert_eq!(w["reason"], "E_FETCH_TIMEOUT", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("less than the minimum rate of 65536 bytes/s"), "{w}");
    assert!(stored_files(&node, "host-a").is_empty(), "{:?}", stored_files(&node, "host-a"));
}

/// Kills the background scan if the test fails before waiting for it.
struct Background(Option<Child>);

impl Background {
    fn finish(mut self) -> std::process::Output {
        self.0.take().expect("running").wait_with_output().expect("wait for the scan")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_stalled_client_does_not_hold_up_the_others() {
    if !tools() {
        return;
    }
    let td = TestDir::new("limits_parallel");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let source = "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"20000\"]\n";
    // host-a sorts first: a scan that takes clients one at a time would
    // wait for it before it even looks at host-b.
    let a = Client::new_with(&td, "host-a", &[&node], source);
    let b = Client::new_with(&td, "host-b", &[&node], source);
    node.enroll(&[&a, &b]);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    ok(b.cmd().args(["backup", "numbers", "--send"]));
    let a_ids = node.pool_ids("host-a", "RQ");
    let b_ids = node.pool_ids("host-b", "RQ");
    assert_eq!((a_ids.len(), b_ids.len()), (1, 1), "one request each");
    // host-a's server accepts the connection and then says nothing.
    let pid_file = a.base.join("stall.pid");
    hostile_gate(&node, &a, &format!("echo $$ > {}\nexec sleep 600", pid_file.display()));

    let scan = Background(Some(
        node.cmd().args(["scan"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the scan"),
    ));
    eventually("host-b's request to finish", || node.pool_ids("host-b", "F") == b_ids);
    // host-a's pull started at the same time; its ssh may reach the stalled
    // server only now (the server writes its pid once it runs).
    eventually("host-a's server to be reached", || fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty()));
    // ... while host-a's is still being handled.
    assert_eq!(
        states(&node, "host-a", &a_ids[0]),
        ["P"],
        "host-a's pull is still running; journal: {} / why: {:?}",
        node.events(),
        fs::read_to_string(node.pool("host-a").join(format!("E{}.why", a_ids[0]))).ok()
    );

    // Cut host-a's connection: its request ends with a reason that says so.
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    ok(Command::new("kill").args(["-9", &pid]));
    let out = scan.finish();
    assert!(matches!(out.status.code(), Some(0 | 3)), "scan: {}", text(&out));
    let w = why(&node, "host-a", &a_ids[0]);
    assert_eq!(w["reason"], "E_FETCH_FAILED", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("the connection was closed"), "{w}");
    assert!(!w["detail"].as_str().unwrap().contains("Background task"), "{w}");
    assert!(stored_files(&node, "host-a").is_empty());
    assert_eq!(node.pool_ids("host-b", "E"), Vec::<String>::new());
}
