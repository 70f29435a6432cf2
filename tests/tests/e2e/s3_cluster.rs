//! Two Ferry nodes storing into one 3-server Garage cluster (replication
//! factor 3, quorum 2 of 3) while one Garage server is killed in the middle
//! of their multipart uploads (issue 14's fault test): the backups still
//! succeed with the other two servers, nothing temporary is left in the
//! bucket, restores are byte-identical and `verify` passes on both nodes;
//! the killed server, restarted, serves reads again as one of the quorum.

use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{GarageCluster, S3Access, TestDir, sha256_bytes, wait_until};

// sshd, git, curl and garage: the one check of every S3 test.
use crate::s3_encrypt::tools;

/// 24 MiB: five 5 MiB parts, so the upload is multipart.
const SIZE: usize = 24 << 20;

/// A credentials file the node accepts (mode 0600, the test's account).
fn credentials(td: &TestDir, name: &str, g: &GarageCluster) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = td.join(name);
    fs::write(&p, format!("access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n", g.key_id, g.secret)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A node whose store is the cluster through server `via`'s endpoint, under
/// prefix `name`; requests are stored only when the test runs `scan`.
fn node(td: &TestDir, name: &str, g: &GarageCluster, via: usize) -> Node {
    let creds = credentials(td, &format!("{name}-s3.toml"), g);
    Node::start_with(
        td,
        name,
        &format!(
            "scan_on_push = false\n[store]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"{}\"\nprefix = \"{name}\"\ncredentials = \"{}\"\npart_size_mib = 5\n",
            g.endpoint(via),
            g.bucket,
            creds.display()
        ),
    )
}

/// Deterministic bytes no compressor shrinks (xorshift64*).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `ferry-node scan` held at the S3 hold point once its upload has handed
/// its first part to the server (the 8th MiB read, with 5 MiB parts).
fn held_scan(node: &Node, release: &Path) -> Child {
    node.cmd()
        .env("FERRY_HOLD_AT", "s3:mid-upload@8")
        .env("FERRY_HOLD_FILE", release)
        .arg("scan")
        .stdout(fs::File::create(release.with_extension("out")).unwrap())
        .stderr(fs::File::create(release.with_extension("err")).unwrap())
        .spawn()
        .expect("ferry-node scan")
}

fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("{what} did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one multipart upload under `prefix`, once the server holds at least
/// one of its parts.
fn upload_with_a_part(s3: &S3Access, prefix: &str) -> (String, String) {
    let mut found = None;
    wait_until(Duration::from_secs(120), "a multipart upload with a stored part", || {
        let ups = s3.multipart_uploads(prefix);
        found = ups.into_iter().find(|(k, id)| s3.parts(k, id) >= 1);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn one_garage_server_killed_mid_upload_and_both_nodes_store_and_restore() {
    if !tools() {
        return;
    }
    let td = TestDir::new("s3_cluster");
    let mut g = GarageCluster::start(&td.join("garage"), "ferry");
    // Each node talks to its own server; server 2 is the one that dies.
    let n1 = node(&td, "backup1", &g, 0);
    let n2 = node(&td, "backup2", &g, 1);
    let bytes = noise(SIZE);
    let src = td.join("big.bin");
    fs::write(&src, &bytes).unwrap();
    let a = Client::new_with(
        &td,
        "host-a",
        &[&n1, &n2],
        &format!(
            "[[source]]\nname = \"big\"\nmodule = \"pipe\"\nnodes = [\"backup1\", \"backup2\"]\ncommand = [\"cat\", \"{}\"]\n",
            src.display()
        ),
    );
    n1.enroll(&[&a]);
    n2.enroll(&[&a]);
    ok(a.cmd().args(["backup", "big"]));
    ok(a.cmd().args(["send", "--wait"]));
    eventually("the request in both nodes' pools", || [&n1, &n2].iter().all(|n| n.pool_ids("host-a", "RQ").len() == 1));

    // Both nodes stop in the middle of their multipart uploads, each with
    // a part already on the servers.
    let (r1, r2) = (td.join("release1"), td.join("release2"));
    let mut s1 = held_scan(&n1, &r1);
    let mut s2 = held_scan(&n2, &r2);
    for (s, r) in [(&mut s1, &r1), (&mut s2, &r2)] {
        let held = r.with_extension("held");
        wait_until(Duration::from_secs(180), "a scan to reach the hold point", || {
            if let Some(st) = s.try_wait().unwrap() {
                let err = fs::read_to_string(r.with_extension("err")).unwrap_or_default();
                panic!("scan ended ({st}) before the hold point: {err}");
            }
            held.exists()
        });
    }
    let (key1, _) = upload_with_a_part(&g.s3(0), "backup1/.tmp/");
    let (key2, _) = upload_with_a_part(&g.s3(1), "backup2/.tmp/");
    assert!(key1.starts_with("backup1/.tmp/backup1/") && key2.starts_with("backup2/.tmp/backup2/"), "{key1} {key2}");

    g.kill(2);
    assert!(!g.is_up(2));
    fs::write(&r1, "").unwrap();
    fs::write(&r2, "").unwrap();
    for (s, r, n) in [(&mut s1, &r1, &n1), (&mut s2, &r2, &n2)] {
        let status = wait_exit(s, "the held scan");
        let err = fs::read_to_string(r.with_extension("err")).unwrap_or_default();
        assert!(status.success(), "scan on {} failed ({status}): {err}", n.name);
        assert!(n.pool_ids("host-a", "E").is_empty(), "request failed on {}: {}", n.name, n.events());
        assert_eq!(n.pool_ids("host-a", "F").len(), 1, "stored on {}: {}", n.name, n.events());
    }

    // In the bucket: each node's artifact and sidecar, nothing temporary,
    // no multipart upload left open (asked of a surviving server).
    let s3 = g.s3(0);
    for n in [&n1, &n2] {
        let found: serde_json::Value =
            serde_json::from_str(&ok(n.cmd().args(["--json", "find", "--client", "host-a"]))).unwrap();
        let path = found[0]["path"].as_str().expect("one artifact").to_owned();
        assert_eq!(found[0]["size"].as_u64(), Some(SIZE as u64), "{found}");
        let keys = s3.keys(&format!("{}/", n.name));
        let want = vec![format!("{}/{path}", n.name), format!("{}/{path}.sha256", n.name)];
        assert_eq!(keys, want, "only the artifact and its sidecar under {}", n.name);
    }
    assert_eq!(s3.keys("").len(), 4, "{:?}", s3.keys(""));
    assert!(s3.multipart_uploads("").is_empty(), "{:?}", s3.multipart_uploads(""));

    // Restored byte for byte, and verified (re-hashed from the bucket), by
    // both nodes with one server still down.
    for n in [&n1, &n2] {
        let out = run(n.cmd().args(["restore", "host-a", "big", "--stdout"]));
        assert!(out.status.success(), "{}", text(&out));
        assert!(out.stdout == bytes, "{} restored {} bytes, not the source's {SIZE}", n.name, out.stdout.len());
        let v = n.ferry_node_json(&["verify"]);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{}: {v}", n.name);
    }

    // The killed server comes back and rejoins. With server 0 then down,
    // every quorum needs it: reads through its own endpoint and node 2's
    // verify (through server 1) still succeed.
    g.restart(2);
    assert!(g.is_up(2));
    g.kill(0);
    let s3 = g.s3(2);
    let want = sha256_bytes(&bytes);
    for n in ["backup1", "backup2"] {
        let key = s3.keys(&format!("{n}/")).into_iter().find(|k| !k.ends_with(".sha256")).unwrap();
        assert_eq!(sha256_bytes(&s3.get(&key)), want, "{key} read through the restarted server");
    }
    let v = n2.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    // And it takes writes again: a second backup on node 2 is stored.
    ok(a.cmd().args(["backup", "big"]));
    ok(a.cmd().args(["send", "--wait"]));
    eventually("the second request in node 2's pool", || n2.pool_ids("host-a", "RQ").len() == 1);
    let out = run(n2.cmd().arg("scan"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(n2.pool_ids("host-a", "F").len(), 2, "{}", n2.events());
}
