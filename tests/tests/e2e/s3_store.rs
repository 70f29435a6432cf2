//! The S3 artifact store (issue 14) against a real Garage: a client's
//! archive and pipe backups land in the bucket under the node's prefix and
//! nowhere on the node's disk; `find`, `list`, `restore` and `verify` read
//! them back through the store; wrong or exposed credentials are clear
//! errors that never show the secret; an interrupted upload is cleaned up
//! and never taken for a backup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{Garage, Postgres, Smtp, TestDir, require};

// sshd, git, curl and garage: the one check of every S3 test.
use crate::s3_encrypt::tools;

/// A credentials file the node accepts (mode 0600, the test's account).
fn credentials(td: &TestDir, name: &str, key_id: &str, secret: &str) -> PathBuf {
    let p = td.join(name);
    fs::write(&p, format!("access_key_id = \"{key_id}\"\nsecret_access_key = \"{secret}\"\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn store_toml(g: &Garage, creds: &Path) -> String {
    format!(
        "[store]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"{}\"\nprefix = \"backup1\"\ncredentials = \"{}\"\npart_size_mib = 5\n",
        g.endpoint(),
        g.bucket,
        creds.display()
    )
}

/// Regular files under the node's data directory outside git mirrors.
fn files_outside_git(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                if p.file_name().is_some_and(|n| n != "git") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn wait_done(node: &Node, client: &str, n: usize) {
    eventually("the node to finish the requests", || {
        node.pool_ids(client, "F").len() + node.pool_ids(client, "E").len() >= n
    });
}

#[test]
fn archive_and_pipe_round_trip_through_garage() {
    if !tools() {
        return;
    }
    let td = TestDir::new("s3_round_trip");
    let g = Garage::start(&td.join("garage"), "ferry");
    let creds = credentials(&td, "s3.toml", &g.key_id, &g.secret);
    let node = Node::start_with(&td, "backup1", &format!("{}\n[limits]\nquota = \"40M\"\n", store_toml(&g, &creds)));
    let tree = td.mkdir("site");
    crate::data::odd_tree(&tree);
    // ~24 MB: more than four 5 MiB parts, so the upload is multipart.
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"3000000\"]\n",
            tree.display()
        ),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "site", "--send"]));
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 2);
    assert!(node.pool_ids("host-a", "E").is_empty(), "requests failed: {}", node.events());

    // In the bucket, under the prefix, each with its sidecar; no temporary.
    let found: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a"]))).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let keys = g.keys("");
    for a in found {
        let path = a["path"].as_str().unwrap();
        assert!(keys.contains(&format!("backup1/{path}")), "{path} not in {keys:?}");
        assert!(keys.contains(&format!("backup1/{path}.sha256")), "{path}.sha256 not in {keys:?}");
    }
    assert_eq!(keys.len(), 4, "only the two artifacts and their sidecars: {keys:?}");
    let numbers = found.iter().find(|a| a["source"] == "numbers").unwrap();
    assert!(numbers["size"].as_u64().unwrap() > 20 << 20, "{numbers}");
    // Nothing of the artifacts on the node's disk.
    let left = files_outside_git(&node.srv().join("data"));
    assert!(left.is_empty(), "files left under data/: {left:?}");

    let list = ok(node.cmd().args(["list", "host-a"]));
    assert!(list.contains("site") && list.contains("numbers"), "{list}");

    let to = td.join("restored-site");
    // One HEAD of the archive for the whole restore: its check and the
    // extraction read the version that HEAD saw (before: three, and the
    // extraction could read another version than the one checked).
    let site_path = found.iter().find(|a| a["source"] == "site").unwrap()["path"].as_str().unwrap().to_owned();
    let heads = |log: &str| log.lines().filter(|l| l.ends_with(&format!(" HEAD /ferry/backup1/{site_path}"))).count();
    let before = heads(&g.log());
    ok(node.cmd().args(["restore", "host-a", "site", "--to", to.to_str().unwrap()]));
    assert_eq!(heads(&g.log()) - before, 1, "HEAD requests of {site_path} for one restore");
    let cmp = Compare { mode: true, owner: true, mtime: true, ..Default::default() };
    let d = diff(&manifest(&tree).unwrap(), &manifest(&to).unwrap(), &cmp);
    assert!(d.is_empty(), "restored tree differs: {d:#?}");
    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    assert!(out.status.success(), "{}", text(&out));
    let expected: String = (1..=3_000_000).map(|i| format!("{i}\n")).collect();
    assert!(out.stdout == expected.as_bytes(), "pipe stream restored byte for byte");

    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    // The quota counts what the bucket holds: a second 24 MB stream does
    // not fit in the 40M quota beside the first.
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 3);
    assert_eq!(node.pool_ids("host-a", "E").len(), 1, "{}", node.events());
    // The journal line follows the request's rename to E.
    eventually("the quota refusal in the journal", || node.events().contains("E_QUOTA"));
    assert_eq!(g.keys("backup1/").len(), 4, "{:?}", g.keys(""));

    // An object changed behind the node's back: verify re-hashes the
    // stream and names it; restore refuses it.
    let site = found.iter().find(|a| a["source"] == "site").unwrap()["path"].as_str().unwrap().to_owned();
    g.put(&format!("backup1/{site}"), b"not the archive");
    let out = run(node.cmd().args(["--json", "verify"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["source"], "site", "{v}");
    let out = run(node.cmd().args(["restore", "host-a", "site", "--to", td.join("again").to_str().unwrap()]));
    assert!(!out.status.success() && text(&out).contains("integrity"), "{}", text(&out));
    // The same for a stream to standard output, changed to other bytes of
    // its size: it is copied once into the node's state directory and
    // checked there, so not one byte reaches standard output, and the copy
    // is gone afterwards (as after the good restore above).
    let numbers_path = numbers["path"].as_str().unwrap();
    g.put(&format!("backup1/{numbers_path}"), &vec![b'x'; expected.len()]);
    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    assert!(text(&out).contains("integrity") && text(&out).contains("sha256"), "{}", text(&out));
    let scratch: Vec<_> = fs::read_dir(node.srv().join("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".restore-"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn a_postgresql_dump_in_garage_restores_into_a_database() {
    if !tools() || !require("postgres") {
        return;
    }
    let td = TestDir::new("s3_pg");
    let g = Garage::start(&td.join("garage"), "ferry");
    let pg = Postgres::start(&td.join("pg"));
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, blob bytea);
         INSERT INTO items SELECT g, 'item ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;",
    );
    let creds = credentials(&td, "s3.toml", &g.key_id, &g.secret);
    let node = Node::start_with(&td, "backup1", &store_toml(&g, &creds));
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"shop\"\nmodule = \"postgresdb\"\ndatabase = \"shop\"\nos_user = \"postgres\"\nhost = \"{}\"\nport = {}\n",
            pg.socket_dir().display(),
            pg.port()
        ),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "shop", "--send"]));
    wait_done(&node, "host-a", 1);
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());
    let found: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a"]))).unwrap();
    let path = found[0]["path"].as_str().unwrap();
    assert!(g.keys("backup1/host-a/shop/").contains(&format!("backup1/{path}")), "{:?}", g.keys(""));
    assert!(files_outside_git(&node.srv().join("data")).is_empty());
    // `--into-db` streams the object from the bucket into pg_restore.
    let out = crate::hostile_dumps::pg_restore_as(&node, &pg, Some("postgres"), "shop", "shop_restored");
    assert!(out.status.success(), "{}", text(&out));
    let q = "SELECT id, name, encode(blob, 'hex') FROM items ORDER BY id";
    assert_eq!(pg.psql("shop_restored", q), pg.psql("shop", q));
}

#[test]
fn an_interrupted_upload_is_cleaned_and_never_listed() {
    if !tools() {
        return;
    }
    let td = TestDir::new("s3_interrupted");
    let g = Garage::start(&td.join("garage"), "ferry");
    let creds = credentials(&td, "s3.toml", &g.key_id, &g.secret);
    let node = Node::start_with(
        &td,
        "backup1",
        &format!("scan_on_push = false\n{}\n[retention]\nkeep_last = 1\nkeep_daily = 1\n", store_toml(&g, &creds)),
    );
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"100000\"]\n",
    );
    node.enroll(&[&a]);
    a.deliver("numbers", "backup1");
    // Killed (SIGKILL) with the whole upload under its temporary key.
    let out = run(node.cmd().env("FERRY_CRASH_AT", "s3:after-upload").args(["scan"]));
    assert!(!out.status.success(), "scan was not killed: {}", text(&out));
    let tmp: Vec<String> = g.keys("backup1/.tmp/");
    assert_eq!(tmp.len(), 1, "the killed upload's temporary: {:?}", g.keys(""));
    // And an orphan planted by a process that no longer exists.
    g.put("backup1/.tmp/backup1/4999999-00000000deadbeef", b"half an upload");
    // A key that names no artifact is ignored, never listed.
    g.put("backup1/host-a/odd", b"x");

    // Before the restart, nothing of it is a backup.
    let found = ok(node.cmd().args(["--json", "find", "--client", "host-a"]));
    assert_eq!(found.trim(), "[]", "{found}");
    // The restart (the next process to open the store) removes both
    // temporaries; the request runs again and stores the artifact.
    ok(node.cmd().args(["scan"]));
    assert!(g.keys("backup1/.tmp/").is_empty(), "{:?}", g.keys(""));
    // The killed job's local download went with it.
    let left = files_outside_git(&node.srv().join("data"));
    assert!(left.is_empty(), "files left under data/: {left:?}");
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    let found: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a"]))).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert!(out.stdout == expected.as_bytes(), "{}", text(&out));

    // purge removes through the store: a newer backup, then the older
    // artifact and its sidecar leave the bucket.
    let first = found[0]["path"].as_str().unwrap().to_owned();
    a.deliver("numbers", "backup1");
    ok(node.cmd().args(["scan"]));
    assert_eq!(g.keys("backup1/host-a/").len(), 5, "two artifacts, two sidecars, the odd key: {:?}", g.keys(""));
    ok(node.cmd().args(["purge"]));
    let keys = g.keys("backup1/host-a/");
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(&first)), "{first} purged: {keys:?}");
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn wrong_or_exposed_credentials_are_clear_errors_without_the_secret() {
    if !tools() {
        return;
    }
    let td = TestDir::new("s3_credentials");
    let g = Garage::start(&td.join("garage"), "ferry");
    let smtp = Smtp::start(&td.join("smtp"));
    let creds = credentials(&td, "s3.toml", &g.key_id, &g.secret);
    let mail = format!(
        "[mail]\nto = [\"admins@example.test\"]\nfrom = \"ferry@example.test\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nmin_interval = \"0s\"\n",
        smtp.url()
    );
    let node = Node::start_with(&td, "backup1", &format!("{mail}\n{}", store_toml(&g, &creds)));
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"1000\"]\n",
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 1);
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());
    let stored = g.keys("backup1/");

    // The secret changes under the node (rotated, mistyped).
    let wrong_secret = "f".repeat(64);
    credentials(&td, "s3.toml", &g.key_id, &wrong_secret);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 2);
    assert_eq!(node.pool_ids("host-a", "E").len(), 1, "the second request fails: {}", node.events());
    let at = format!("S3 bucket ferry at {}", g.endpoint());
    eventually("the error, naming bucket and endpoint, in the journal", || node.events().contains(&at));
    let events = node.events();
    assert!(!events.contains(&wrong_secret) && !events.contains(&g.secret), "{events}");
    let out = run(node.cmd().args(["verify"]));
    assert!(!out.status.success());
    assert!(text(&out).contains(&at), "{}", text(&out));
    assert!(!text(&out).contains(&wrong_secret), "{}", text(&out));
    // A drill cannot read the artifact: the failure is mailed, naming the
    // bucket, never the secret.
    let _ = run(node.cmd().args(["drill"]));
    eventually("a mail about the failed drill", || !smtp.messages().is_empty());
    let raws: Vec<String> = smtp.messages().iter().map(|m| String::from_utf8_lossy(&m.raw).into_owned()).collect();
    assert!(raws.iter().any(|r| r.contains("S3 bucket ferry")), "{raws:?}");
    for raw in &raws {
        assert!(!raw.contains(&wrong_secret) && !raw.contains(&g.secret), "{raw}");
    }
    assert_eq!(g.keys("backup1/"), stored, "nothing stored by the failed request");

    // A credentials file others can read is refused before any request.
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(node.cmd().args(["verify"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("readable by group or others"), "{}", text(&out));
}

/// Storing streams: the node's peak memory while it pulls and uploads a
/// 256 MiB artifact, and restores it, stays far below it (the encrypted
/// case is s3_encrypt's).
#[test]
fn storing_a_large_artifact_keeps_memory_bounded() {
    crate::s3_encrypt::large_artifact_memory("s3_memory", false);
}
