//! Data modules end to end: the client prepares an artifact, the node pulls
//! it over sftp with the pinned host key, verifies and stores it, and
//! `restore` gives it back — compared with the original.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use ferry_archive::manifest::{Compare, diff, manifest};
use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{MariaDb, Postgres, TestDir, list_tree, require, require_all};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

/// A tree with everything that tends to go wrong.
pub(crate) fn odd_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("plain.txt"), "hello\n").unwrap();
    fs::write(root.join("with space.txt"), "space\n").unwrap();
    fs::write(root.join("ünïcödé-日本.txt"), "utf-8\n").unwrap();
    fs::write(root.join("new\nline"), "newline in the name\n").unwrap();
    fs::write(root.join("sub/deeper/big.bin"), (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>())
        .unwrap();
    fs::write(root.join("exec.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("private"), "secret\n").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("plain.txt", root.join("link-rel")).unwrap();
    symlink("sub/deeper", root.join("link-dir")).unwrap();
    fs::hard_link(root.join("plain.txt"), root.join("hard-link")).unwrap();
}

fn wait_done(node: &Node, client: &str, n: usize) {
    eventually("the node to finish the requests", || {
        node.pool_ids(client, "F").len() + node.pool_ids(client, "E").len() >= n
    });
    assert!(node.pool_ids(client, "E").is_empty(), "requests failed: {}", node.events());
}

#[test]
fn directory_tree_and_pipe_round_trip() {
    if !tools() {
        return;
    }
    let td = TestDir::new("data_fs");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    odd_tree(&tree);
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"200000\"]\n",
            tree.display()
        ),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "site", "--send"]));
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    wait_done(&node, "host-a", 2);

    // Catalog: find by client and source.
    let found: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "site"])))
            .unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["module"], "fs");
    let stored = node.srv().join("data").join(found[0]["path"].as_str().unwrap());
    assert!(stored.starts_with(node.data("host-a").join("site")), "{}", stored.display());
    let sidecar = fs::read_to_string(format!("{}.sha256", stored.display())).unwrap();
    assert!(sidecar.starts_with(found[0]["sha256"].as_str().unwrap()));

    let to = td.join("restored-site");
    ok(node.cmd().args(["restore", "host-a", "site", "--to", to.to_str().unwrap()]));
    let cmp = Compare { mode: true, owner: true, mtime: true, ..Default::default() };
    let d = diff(&manifest(&tree).unwrap(), &manifest(&to).unwrap(), &cmp);
    assert!(d.is_empty(), "restored tree differs: {d:#?}");

    let out = run(node.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    assert!(out.status.success(), "{}", text(&out));
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(out.stdout == expected.as_bytes(), "pipe stream restored byte for byte");

    // verify finds nothing wrong, then finds a flipped byte.
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    // The catalog is an index of the store: lost, `verify` names every
    // stored artifact it lacks, and `verify --rebuild` records again those
    // whose bytes match their own sidecar, and only those.
    let before = ok(node.cmd().args(["--json", "find", "--client", "host-a"]));
    let catalog = node.srv().join("state/catalog.sqlite");
    fs::rename(&catalog, td.join("catalog.lost")).unwrap();
    let _ = fs::remove_file(node.srv().join("state/catalog.sqlite-wal"));
    let _ = fs::remove_file(node.srv().join("state/catalog.sqlite-shm"));
    let forged = node.data("host-a").join("site/20260101T000000Z");
    fs::create_dir_all(&forged).unwrap();
    fs::write(forged.join("site.tar.zst"), b"not what the sidecar says").unwrap();
    fs::write(forged.join("site.tar.zst.sha256"), format!("{}  site.tar.zst\n", "0".repeat(64))).unwrap();
    let out = run(node.cmd().args(["--json", "verify", "--rebuild"]));
    assert_eq!(out.status.code(), Some(3), "the forged artifact stays a problem: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recorded"].as_array().unwrap().len(), 2, "both real artifacts recorded again: {v}");
    let probs = v["problems"].as_array().unwrap();
    assert_eq!(probs.len(), 1, "{v}");
    assert!(probs[0]["path"].as_str().unwrap().contains("20260101T000000Z"), "{v}");
    assert!(probs[0]["problem"].as_str().unwrap().contains("sidecar does not name its content"), "{v}");
    let after = ok(node.cmd().args(["--json", "find", "--client", "host-a"]));
    let pick = |s: &str| -> Vec<(String, String, String, u64)> {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        let mut out: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let f = |k: &str| a[k].as_str().unwrap().to_owned();
                (f("path"), f("sha256"), f("module"), a["size"].as_u64().unwrap())
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(pick(&before), pick(&after), "the rebuilt catalog names the same artifacts");
    fs::remove_dir_all(&forged).unwrap();
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&stored, bytes).unwrap();
    let out = run(node.cmd().args(["--json", "verify"]));
    assert_eq!(out.status.code(), Some(3), "verify reports problems with exit 3: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["source"], "site");
    assert!(v["problems"][0]["problem"].as_str().unwrap().contains("sha256"), "{v}");
    // ... and restore refuses the corrupted artifact.
    let out = run(node.cmd().args(["restore", "host-a", "site", "--to", td.join("again").to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(text(&out).contains("integrity"), "{}", text(&out));
    assert!(!td.join("again").exists());
}

#[test]
fn postgresql_database_round_trip() {
    if !tools() || !require("postgres") {
        return;
    }
    let td = TestDir::new("data_pg");
    let pg = Postgres::start(&td.join("pg"));
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, note text, blob bytea);
         INSERT INTO items VALUES (1, 'Käse ☺', 3.50, NULL, '\\x00ff10'), (2, 'bread', 1.20, 'it''s fresh', NULL);
         INSERT INTO items SELECT g, 'item ' || g, g * 0.01, repeat('x', g % 50), decode(md5(g::text), 'hex') FROM generate_series(3, 2000) g;",
    );
    let node = Node::start(&td, "backup1");
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
    let out = crate::hostile_dumps::pg_restore_as(&node, &pg, Some("postgres"), "shop", "shop_restored");
    assert!(out.status.success(), "{}", text(&out));
    let q = "SELECT id, name, price, coalesce(note, '<null>'), encode(blob, 'hex') FROM items ORDER BY id";
    assert_eq!(pg.psql("shop_restored", q), pg.psql("shop", q));
    assert_eq!(pg.psql("shop_restored", "SELECT count(*) FROM items"), "2000");
    // The dump file itself can be given back too.
    ok(node.cmd().args(["restore", "host-a", "shop", "--to", td.join("dump").to_str().unwrap()]));
    assert_eq!(fs::read_dir(td.join("dump")).unwrap().count(), 1);
}

#[test]
fn mariadb_database_round_trip() {
    if !tools() || !require("mariadb") {
        return;
    }
    let td = TestDir::new("data_my");
    let db = MariaDb::start(&td.join("mariadb"));
    db.create_db("shop");
    db.sql(
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, note TEXT, data BLOB);
         INSERT INTO items VALUES (1, 'Käse ☺', NULL, X'00FF10'), (2, 'bread', 'it''s fresh', NULL);",
    );
    let node = Node::start(&td, "backup1");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"shop\"\nmodule = \"mysql\"\ndatabase = \"shop\"\nsocket = \"{}\"\n",
            db.socket().display()
        ),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "shop", "--send"]));
    wait_done(&node, "host-a", 1);
    ok(node.cmd().args([
        "restore",
        "host-a",
        "shop",
        "--into-db",
        "shop_restored",
        "--db-host",
        db.socket().to_str().unwrap(),
    ]));
    let q = "SELECT id, name, IFNULL(note, '<null>'), HEX(data) FROM items ORDER BY id";
    assert_eq!(db.sql(Some("shop_restored"), q), db.sql(Some("shop"), q));
}

#[test]
fn truncated_or_swapped_artifact_is_never_recorded() {
    if !tools() {
        return;
    }
    let td = TestDir::new("data_trunc");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let tree = td.mkdir("site");
    odd_tree(&tree);
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!("[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n", tree.display()),
    );
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "site", "--send"]));
    // The artifact changes on the client after its request was pushed.
    let export = a.base.join("export/site");
    let artifact = fs::read_dir(&export)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .unwrap();
    let len = fs::metadata(&artifact).unwrap().len();
    fs::OpenOptions::new().write(true).open(&artifact).unwrap().set_len(len / 2).unwrap();
    let _ = run(node.cmd().args(["scan"]));
    let e = node.pool_ids("host-a", "E");
    assert_eq!(e.len(), 1, "the request failed");
    let first_failed = e[0].clone();
    let why = fs::read_to_string(node.pool("host-a").join(format!("E{first_failed}.why"))).unwrap();
    assert!(why.contains("E_FETCH_SIZE_MISMATCH"), "{why}");
    // Nothing recorded, nothing stored, no temporary file.
    let found = ok(node.cmd().args(["--json", "find", "--client", "host-a"]));
    assert_eq!(found.trim(), "[]");
    let leftovers: Vec<_> = list_tree(node.data("host-a")).into_iter().filter(|p| p.is_file()).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Same size, different content (swapped during transfer): digest mismatch.
    ok(a.cmd().args(["backup", "site", "--send"]));
    let newest = fs::read_dir(&export)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .max()
        .unwrap();
    let mut b = fs::read(&newest).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(&newest, b).unwrap();
    let _ = run(node.cmd().args(["scan"]));
    let e = node.pool_ids("host-a", "E");
    assert_eq!(e.len(), 2);
    // Ids made within one second do not sort in request order: the second
    // failure is whichever is not the first.
    let second = e.iter().find(|id| **id != first_failed).expect("a second failed request");
    let why = fs::read_to_string(node.pool("host-a").join(format!("E{second}.why"))).unwrap();
    assert!(why.contains("E_FETCH_DIGEST_MISMATCH"), "{why}");
    assert!(list_tree(node.data("host-a")).into_iter().all(|p| !p.is_file()));
    assert!(node.events().contains("E_FETCH_DIGEST_MISMATCH"));
}
