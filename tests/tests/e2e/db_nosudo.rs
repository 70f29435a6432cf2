//! Databases without sudo (README: Databases without sudo): the client's
//! own unprivileged account dumps PostgreSQL through a role with only
//! `pg_read_all_data` (peer authentication on the socket) and MariaDB
//! through a `unix_socket` account with the dump grants — no `os_user`, no
//! sudo, no runuser. Until the role or account exists, the backup fails
//! with `E_SOURCE_DB_ACCESS` naming the SQL that fixes it; an `os_user`
//! that needs sudo names the sudoers line (or that sudo is missing).
//!
//! The client runs as `nobody` through `setpriv` (the tests run as root);
//! the database role is therefore `nobody` too.

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{MariaDb, Postgres, TestDir, ferry_bin, is_root, require, require_all};

/// The client's account: `nobody`, with the client's state and export
/// directories handed to it.
const ACCOUNT: &str = "nobody";

fn tools() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: running the client as another account needs root");
        return false;
    }
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "setpriv"])
}

fn id_of(flag: &str) -> String {
    ok(Command::new("id").args([flag, ACCOUNT])).trim().to_owned()
}

/// Gives `c`'s state and export directories to [`ACCOUNT`].
fn take(c: &Client) {
    fs::create_dir_all(c.base.join("export")).unwrap();
    for d in ["state", "export"] {
        ok(Command::new("chown").arg("-R").arg(format!("{}:{}", id_of("-u"), id_of("-g"))).arg(c.base.join(d)));
    }
}

/// `ferry --config <c> <args>` as [`ACCOUNT`], with no supplementary groups.
fn as_account(c: &Client, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", id_of("-u")))
        .arg(format!("--regid={}", id_of("-g")))
        .args(["--clear-groups", "--"])
        .arg(ferry_bin("ferry"))
        .env("HOME", c.base.join("state"))
        .arg("--config")
        .arg(&c.config)
        .args(args);
    run(&mut cmd)
}

/// Asserts that `out` failed and says every one of `wants`.
fn fails_saying(out: &Output, wants: &[&str]) {
    let t = text(out);
    assert!(!out.status.success(), "the backup should fail: {t}");
    for w in wants {
        assert!(t.contains(w), "{w:?} in: {t}");
    }
}

fn wait_done(node: &Node, client: &str, n: usize) {
    eventually("the node to finish the requests", || {
        node.pool_ids(client, "F").len() + node.pool_ids(client, "E").len() >= n
    });
    assert!(node.pool_ids(client, "E").is_empty(), "requests failed: {}", node.events());
}

#[test]
fn postgresql_role_with_pg_read_all_data_needs_no_sudo() {
    if !tools() || !require("postgres") {
        return;
    }
    let td = TestDir::new("db_nosudo_pg");
    let pg = Postgres::start_with_peer_socket(&td.join("pg"));
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
         INSERT INTO items SELECT g, 'item ' || g, g * 0.01 FROM generate_series(1, 500) g;
         CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 1;
         CREATE SEQUENCE orders_seq START 42;
         REVOKE ALL ON items FROM PUBLIC;",
    );
    let node = Node::start(&td, "backup1");
    let conn = format!("host = \"{}\"\nport = {}\n", pg.socket_dir().display(), pg.port());
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"shop\"\nmodule = \"postgresdb\"\ndatabase = \"shop\"\n{conn}\n\
             [[source]]\nname = \"cluster\"\nmodule = \"postgresdb\"\n{conn}\n\
             [[source]]\nname = \"viasudo\"\nmodule = \"postgresdb\"\ndatabase = \"shop\"\nos_user = \"postgres\"\n{conn}"
        ),
    );
    node.enroll(&[&a]);
    take(&a);

    // No role for the account: peer authentication finds none.
    let out = as_account(&a, &["backup", "shop", "--send"]);
    fails_saying(
        &out,
        &[
            "E_SOURCE_DB_ACCESS",
            "role \"nobody\" does not exist",
            "CREATE ROLE \"nobody\" LOGIN",
            "GRANT pg_read_all_data TO \"nobody\"",
            "README: Databases without sudo",
        ],
    );
    // A role that may log in but not read: the grant is what is missing.
    pg.psql("postgres", "CREATE ROLE nobody LOGIN;");
    let out = as_account(&a, &["backup", "shop", "--send"]);
    fails_saying(&out, &["E_SOURCE_DB_ACCESS", "permission denied", "GRANT pg_read_all_data TO \"nobody\""]);

    // os_user without sudo, or without a sudoers rule: the exact line.
    let out = as_account(&a, &["backup", "viasudo", "--send"]);
    let sudo = ["/usr/local/bin/sudo", "/usr/bin/sudo", "/bin/sudo"].iter().any(|p| Path::new(p).exists());
    let why = if sudo { "the sudoers rule is missing" } else { "sudo is not installed" };
    fails_saying(&out, &["E_SOURCE_DB_ACCESS", why, "nobody ALL=(postgres) NOPASSWD: /", "pg_dump`"]);
    // `ferry init` says so before any backup: sudo is missing, or not.
    let out = as_account(&a, &["--json", "init"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    if sudo {
        assert!(problems.is_empty(), "{report}");
    } else {
        assert_eq!(problems.len(), 1, "{report}");
        let p = problems[0].as_str().unwrap();
        for want in
            ["source viasudo", "sudo is not installed", "nobody ALL=(postgres) NOPASSWD: /", "Databases without sudo"]
        {
            assert!(p.contains(want), "{want:?} in {p}");
        }
    }

    // The least-privilege role: both dumps work, as the account itself.
    pg.psql("postgres", "GRANT pg_read_all_data TO nobody;");
    let out = as_account(&a, &["backup", "shop", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = as_account(&a, &["backup", "cluster", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_done(&node, "host-a", 2);

    let out = crate::hostile_dumps::pg_restore_as(&node, &pg, Some("postgres"), "shop", "shop_restored");
    assert!(out.status.success(), "{}", text(&out));
    for q in [
        "SELECT id, name, price FROM items ORDER BY id",
        "SELECT * FROM cheap ORDER BY id",
        "SELECT last_value FROM orders_seq",
    ] {
        assert_eq!(pg.psql("shop_restored", q), pg.psql("shop", q), "{q}");
    }
    assert_eq!(pg.psql("shop_restored", "SELECT count(*) FROM items"), "500");

    // The cluster dump has every database and the roles, but no password
    // hashes (pg_authid is for superusers only).
    let to = td.join("cluster");
    ok(node.cmd().args(["restore", "host-a", "cluster", "--to", to.to_str().unwrap()]));
    let file = fs::read_dir(&to).unwrap().flatten().map(|e| e.path()).next().expect("the cluster dump");
    let mut sql = String::new();
    zstd::stream::read::Decoder::new(fs::File::open(&file).unwrap()).unwrap().read_to_string(&mut sql).unwrap();
    for want in ["CREATE ROLE nobody", "GRANT pg_read_all_data TO nobody", "CREATE DATABASE shop", "item 500"] {
        assert!(sql.contains(want), "{want:?} missing from the cluster dump");
    }
    assert!(!sql.contains("SCRAM-SHA-256$") && !sql.contains(" PASSWORD '"), "no password hashes");
}

#[test]
fn mariadb_unix_socket_account_needs_no_sudo() {
    if !tools() || !require("mariadb") {
        return;
    }
    let td = TestDir::new("db_nosudo_my");
    let db = MariaDb::start(&td.join("mariadb"));
    db.create_db("shop");
    db.sql(
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, stock INT);
         INSERT INTO items VALUES (1, 'Käse ☺', 3), (2, 'bread', 0);",
    );
    // Views, triggers, routines and events: what SHOW VIEW, TRIGGER and
    // EVENT are for. (Their DEFINER keeps them out of the node's restricted
    // replay, so they are checked in the dump itself.)
    db.create_db("extras");
    db.sql(
        Some("extras"),
        "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, item INT);
         CREATE VIEW recent AS SELECT id, item FROM log WHERE id > 10;
         CREATE TRIGGER logged BEFORE INSERT ON log FOR EACH ROW SET NEW.item = NEW.item + 0;
         CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x;
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM log;",
    );
    let node = Node::start(&td, "backup1");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"shop\"\nmodule = \"mysql\"\ndatabase = \"shop\"\nsocket = \"{s}\"\n\n\
             [[source]]\nname = \"all\"\nmodule = \"mysql\"\nsocket = \"{s}\"\n",
            s = db.socket().display()
        ),
    );
    node.enroll(&[&a]);
    take(&a);

    let out = as_account(&a, &["backup", "shop", "--send"]);
    fails_saying(
        &out,
        &["E_SOURCE_DB_ACCESS", "Access denied", "IDENTIFIED VIA unix_socket", "GRANT SELECT, SHOW VIEW"],
    );

    // The account without EVENT: --events is refused, and the fix says so.
    db.sql(
        None,
        "CREATE USER 'nobody'@'localhost' IDENTIFIED VIA unix_socket;
         GRANT SELECT, SHOW VIEW, TRIGGER ON *.* TO 'nobody'@'localhost';",
    );
    let out = as_account(&a, &["backup", "shop", "--send"]);
    fails_saying(&out, &["E_SOURCE_DB_ACCESS", "Access denied", "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.*"]);
    // The account and grants the README gives, and nothing more.
    db.sql(None, "GRANT EVENT ON *.* TO 'nobody'@'localhost';");
    let out = as_account(&a, &["backup", "shop", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = as_account(&a, &["backup", "all", "--send"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_done(&node, "host-a", 2);
    ok(node.cmd().args([
        "restore",
        "host-a",
        "shop",
        "--into-db",
        "shop_restored",
        "--db-host",
        db.socket().to_str().unwrap(),
    ]));
    let q = "SELECT id, name, stock FROM items ORDER BY id";
    assert_eq!(db.sql(Some("shop_restored"), q), db.sql(Some("shop"), q));

    let to = td.join("all");
    ok(node.cmd().args(["restore", "host-a", "all", "--to", to.to_str().unwrap()]));
    let file = fs::read_dir(&to).unwrap().flatten().map(|e| e.path()).next().expect("the dump");
    let mut sql = String::new();
    zstd::stream::read::Decoder::new(fs::File::open(&file).unwrap()).unwrap().read_to_string(&mut sql).unwrap();
    for want in ["VIEW `recent`", "logged BEFORE INSERT ON", "FUNCTION `twice`", "EVENT `nightly`", "Käse ☺"] {
        assert!(sql.contains(want), "{want:?} missing from the dump");
    }
}
