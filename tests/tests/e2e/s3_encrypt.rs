//! Encryption before upload (issue 14) against a real Garage: what the
//! bucket holds is an age file marked as such, never the plaintext; the
//! restore is byte-identical and `verify` re-hashes the decrypted stream;
//! a wrong or missing key is `E_STORE_KEY` with nothing written at the
//! destination; after `store keygen --rotate` old objects still restore.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::fleet::{Client, Node, ok, run, text};
use ferry_tests::{Garage, TestDir, garage_bin, in_ci, require, require_all};

/// sshd, git, curl and a garage binary (skipped locally, required in CI).
pub fn tools() -> bool {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "curl"]) {
        return false;
    }
    if garage_bin().is_none() {
        assert!(!in_ci(), "garage is missing: deploy/garage.sh builds it");
        eprintln!("skipping: no garage binary (deploy/garage.sh builds it)");
        return false;
    }
    true
}

/// A credentials file the node accepts (mode 0600, the test's account).
pub fn credentials(td: &TestDir, g: &Garage) -> PathBuf {
    let p = td.join("s3.toml");
    fs::write(&p, format!("access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n", g.key_id, g.secret)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `[store]` for Garage `g` under prefix `backup1`, plus `extra` lines.
pub fn store_toml(g: &Garage, creds: &Path, extra: &str) -> String {
    format!(
        "[store]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"{}\"\nprefix = \"backup1\"\n\
         credentials = \"{}\"\npart_size_mib = 5\n{extra}\n",
        g.endpoint(),
        g.bucket,
        creds.display()
    )
}

/// An S3 request by curl, signed with the Garage key (a client
/// independent of the node's): `(status line + headers, body)`.
fn curl(g: &Garage, method: &str, key: &str) -> (String, Vec<u8>) {
    let td = tempfile::tempdir().unwrap();
    let (hdr, body) = (td.path().join("h"), td.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "-X", method, "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4", "aws:amz:garage:s3"])
        .arg("--user")
        .arg(format!("{}:{}", g.key_id, g.secret))
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .arg(format!("{}/{}/{key}", g.endpoint(), g.bucket))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {method} {key}: {}", String::from_utf8_lossy(&out.stderr));
    (fs::read_to_string(&hdr).unwrap_or_default(), fs::read(&body).unwrap_or_default())
}

fn found(node: &Node) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a"]))).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn s3_encrypt_round_trip_wrong_key_and_rotation() {
    if !tools() {
        return;
    }
    let td = TestDir::new("s3_encrypt");
    let g = Garage::start(&td.join("garage"), "ferry");
    let creds = credentials(&td, &g);
    let key = td.join("store.key");
    let node = Node::start_with(
        &td,
        "backup1",
        &format!(
            "scan_on_push = false\n{}",
            store_toml(&g, &creds, &format!("encrypt = true\nkey = \"{}\"", key.display()))
        ),
    );
    // Without the key file the node stores nothing: E_STORE_KEY.
    let out = run(node.cmd().args(["store", "check"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("E_STORE_KEY"), "{}", text(&out));
    let first = ok(node.cmd().args(["store", "keygen"]));
    assert!(first.contains("recipient age1"), "{first}");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = run(node.cmd().args(["store", "keygen"]));
    assert!(!again.status.success() && text(&again).contains("--rotate"), "{}", text(&again));
    let check = ok(node.cmd().args(["store", "check"]));
    assert!(check.contains("reachable: up") && check.contains("encryption: age"), "{check}");

    // ~21 MB (multipart, 5 MiB parts) and a few bytes (one PUT).
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"3000000\"]\n\n\
         [[source]]\nname = \"small\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"1000\"]\n",
    );
    node.enroll(&[&a]);
    a.deliver("numbers", "backup1");
    a.deliver("small", "backup1");
    ok(node.cmd().args(["scan"]));
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());
    let arts = found(&node);
    assert_eq!(arts.len(), 2, "{arts:?}");
    let numbers: String = (1..=3_000_000).map(|i| format!("{i}\n")).collect();
    let small: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    for art in &arts {
        let path = art["path"].as_str().unwrap();
        let plain = if art["source"] == "numbers" { &numbers } else { &small };
        // The catalog keeps the plaintext's size and digest.
        assert_eq!(art["size"].as_u64(), Some(plain.len() as u64), "{art}");
        let (headers, body) = curl(&g, "GET", &format!("backup1/{path}"));
        assert!(headers.to_ascii_lowercase().contains("x-amz-meta-ferry-encryption: age"), "{headers}");
        assert!(body.starts_with(b"age-encryption.org/v1\n"), "an age file: {:?}", &body[..body.len().min(40)]);
        assert!(!body.windows(10).any(|w| w == b"\n999\n1000\n"), "no plaintext");
        assert!(body.len() > plain.len(), "ciphertext carries its tags");
    }

    // Restores: into a directory and to standard output, byte for byte.
    let to = td.join("restored");
    ok(node.cmd().args(["restore", "host-a", "numbers", "--to", to.to_str().unwrap()]));
    let files: Vec<PathBuf> = fs::read_dir(&to).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "only the artifact, no temporary: {files:?}");
    assert!(fs::read(&files[0]).unwrap() == numbers.as_bytes(), "restored byte for byte");
    let out = run(node.cmd().args(["restore", "host-a", "small", "--stdout"]));
    assert!(out.status.success() && out.stdout == small.as_bytes(), "{}", text(&out));
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    // A wrong key (another identity at the same path): E_STORE_KEY, and
    // nothing at the destination.
    let saved = td.join("store.key.offline");
    fs::rename(&key, &saved).unwrap();
    ok(node.cmd().args(["store", "keygen"]));
    let wrong = td.join("wrong");
    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--to", wrong.to_str().unwrap()]));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("E_STORE_KEY") && text(&out).contains("another key"), "{}", text(&out));
    assert!(!wrong.exists(), "nothing written at the destination");
    let out = run(node.cmd().args(["restore", "host-a", "small", "--stdout"]));
    assert!(!out.status.success() && out.stdout.is_empty(), "no garbage on stdout: {}", text(&out));
    assert!(text(&out).contains("E_STORE_KEY"), "{}", text(&out));
    let out = run(node.cmd().args(["--json", "verify"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("E_STORE_KEY"), "{}", text(&out));

    // A missing key: the same, before anything is read.
    fs::remove_file(&key).unwrap();
    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--to", wrong.to_str().unwrap()]));
    assert!(!out.status.success() && text(&out).contains("E_STORE_KEY"), "{}", text(&out));
    assert!(!wrong.exists(), "nothing written at the destination");

    // The offline copy back, then a rotation: new objects go to the new
    // key, old ones still decrypt.
    fs::rename(&saved, &key).unwrap();
    let rotated = ok(node.cmd().args(["store", "keygen", "--rotate"]));
    assert!(rotated.contains("rotated"), "{rotated}");
    a.deliver("small", "backup1");
    ok(node.cmd().args(["scan"]));
    assert_eq!(found(&node).len(), 3);
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "old and new objects decrypt: {v}");
    let again = td.join("restored-again");
    ok(node.cmd().args(["restore", "host-a", "numbers", "--to", again.to_str().unwrap()]));
    assert!(fs::read(fs::read_dir(&again).unwrap().next().unwrap().unwrap().path()).unwrap() == numbers.as_bytes());

    // An object replaced behind the node's back by one of the same size:
    // hashed while written, refused, and no file left at the destination.
    let newest_small = found(&node).into_iter().rfind(|a| a["source"] == "small").unwrap();
    g.put(&format!("backup1/{}", newest_small["path"].as_str().unwrap()), &vec![b'x'; small.len()]);
    let bad = td.join("bad");
    let out = run(node.cmd().args(["restore", "host-a", "small", "--to", bad.to_str().unwrap()]));
    assert!(!out.status.success() && text(&out).contains("integrity check"), "{}", text(&out));
    assert_eq!(fs::read_dir(&bad).map(|d| d.count()).unwrap_or(0), 0, "no file, no temporary");
}

/// Storing encrypted streams: peak memory while the node pulls, encrypts
/// and uploads a 256 MiB artifact (16 MiB parts, four in flight).
#[test]
fn s3_encrypt_large_artifact_memory() {
    large_artifact_memory("s3_encrypt_memory", true);
}

/// The node's peak memory while it pulls and uploads a 256 MiB artifact
/// (16 MiB parts, four in flight), encrypted or not, and while it restores
/// it into a directory: far below the artifact (and < 128 MiB).
pub fn large_artifact_memory(name: &str, encrypt: bool) {
    if !tools() || !require("/usr/bin/time") {
        return;
    }
    let td = TestDir::new(name);
    let g = Garage::start(&td.join("garage"), "ferry");
    let creds = credentials(&td, &g);
    let key = td.join("store.key");
    let toml = store_toml(&g, &creds, &format!("encrypt = {encrypt}\nkey = \"{}\"", key.display()))
        .replace("part_size_mib = 5", "part_size_mib = 16");
    let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{toml}"));
    if encrypt {
        ok(node.cmd().args(["store", "keygen"]));
    }
    let how = if encrypt { "encrypted" } else { "plain" };
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"big\"\nmodule = \"pipe\"\ncommand = [\"head\", \"-c\", \"268435456\", \"/dev/urandom\"]\n",
    );
    node.enroll(&[&a]);
    a.deliver("big", "backup1");
    let rss = td.join("rss");
    let mut scan = Command::new("/usr/bin/time");
    scan.arg("-f").arg("%M %e").arg("-o").arg(&rss).arg(ferry_tests::ferry_bin("ferry-node"));
    scan.arg("--config").arg(&node.config).arg("scan");
    ok(&mut scan);
    let line = fs::read_to_string(&rss).unwrap().trim().lines().last().unwrap().to_owned();
    let kib: u64 = line.split(' ').next().unwrap().parse().unwrap();
    eprintln!(
        "ferry-node scan storing 256 MiB ({how}) into Garage: max RSS {} MiB, {} s",
        kib / 1024,
        line.split(' ').nth(1).unwrap()
    );
    let arts = found(&node);
    assert_eq!(arts[0]["size"].as_u64(), Some(256 << 20), "{arts:?}");
    assert!(kib < 128 * 1024, "max RSS {kib} KiB");
    // And back: restored into a directory, hashed while written.
    let to = td.join("restored");
    let mut restore = Command::new("/usr/bin/time");
    restore.arg("-f").arg("%M %e").arg("-o").arg(&rss).arg(ferry_tests::ferry_bin("ferry-node"));
    restore.arg("--config").arg(&node.config).args(["restore", "host-a", "big", "--to", to.to_str().unwrap()]);
    ok(&mut restore);
    let line = fs::read_to_string(&rss).unwrap().trim().lines().last().unwrap().to_owned();
    eprintln!("ferry-node restore of 256 MiB ({how}) from Garage: max RSS/KiB and seconds: {line}");
    let kib: u64 = line.split(' ').next().unwrap().parse().unwrap();
    // Ranges in flight and fetched ahead are bounded (store/reader.rs).
    assert!(kib < 128 * 1024, "restore max RSS {kib} KiB");
    let file = fs::read_dir(&to).unwrap().next().unwrap().unwrap().path();
    assert_eq!(fs::metadata(file).unwrap().len(), 256 << 20);
}
