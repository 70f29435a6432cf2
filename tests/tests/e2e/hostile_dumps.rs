//! Hostile database dumps restored by the node (issue: a dump restored on
//! the node ran the client's commands there). A compromised client ships a
//! dump of each kind the node can replay — a `pg_dumpall` SQL file, a
//! `pg_dump` custom archive, a `mysqldump` SQL file — full of psql/mysql
//! client commands and SQL that reaches the operating system through a
//! privileged connection. `ferry-node restore --into-db` must run nothing on
//! the node and change nothing outside the new database: no file appears
//! (the canary directory is world-writable, so a command run as any account
//! would leave one), other databases, roles/accounts and server settings are
//! exactly as before, while the dump's ordinary tables are restored.

use std::fs;
use std::path::Path;

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{MariaDb, Postgres, TestDir, require};

use crate::hostile::kit;

fn tools() -> bool {
    kit::tools() && require("sha256sum")
}

/// Script module `evil` of a compromised client: `$2` is
/// `<source>:<file>`; it ships `<file>` as `<source>`'s artifact, its
/// suffix kept — what a compromised client can always do.
pub(crate) const EVIL: &str = r#"#!/bin/sh
set -e
source=${2%%:*}; file=${2#*:}
name=$(basename "$file"); ext=${name#*.}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$FERRY_EXPORT_DIR/$source"
dest="$FERRY_EXPORT_DIR/$source/$stamp.$ext"
cp "$file" "$dest"
sha=$(sha256sum "$dest" | cut -d' ' -f1)
size=$(stat -c %s "$dest")
echo "sftp $stamp sftp://$FERRY_EXPORT_USER@$FERRY_EXPORT_ADDRESS:$FERRY_EXPORT_PORT$dest sha256=$sha size=$size source=$source"
"#;

/// host-a with the script module `evil`, enrolled.
fn hostile_client(td: &TestDir, node: &Node) -> Client {
    let c = kit::script_client(td, node, "host-a", &[("evil", EVIL)], "");
    node.enroll(&[&c]);
    c
}

/// Ship `file` as source `source` and wait until the node stored it.
pub(crate) fn ship(node: &Node, c: &Client, source: &str, file: &Path) {
    ok(c.cmd().args(["request", "evil", &format!("{source}:{}", file.display())]));
    ok(c.cmd().args(["send", "--wait"]));
    eventually("the node to store the hostile dump", || {
        let found = ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", source]));
        found.trim() != "[]"
    });
}

pub(crate) fn zstd_file(path: &Path, sql: &str) {
    fs::write(path, zstd::encode_all(sql.as_bytes(), 3).unwrap()).unwrap();
}

/// Everything about a PostgreSQL server a restore must not change.
fn pg_state(pg: &Postgres) -> String {
    let auto = fs::read_to_string(pg.dir().join("data/postgresql.auto.conf")).unwrap_or_default();
    [
        pg.psql("postgres", "SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb, ',' ORDER BY rolname) FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' AND rolname NOT LIKE 'ferry\\_restore\\_%'"),
        pg.psql("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname NOT LIKE 'restored%'"),
        pg.psql("postgres", "SELECT coalesce(rolpassword, '<none>') FROM pg_authid WHERE rolname = 'postgres'"),
        pg.psql("postgres", "SELECT count(*) FROM pg_auth_members WHERE roleid NOT IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'ferry\\_restore\\_%')"),
        pg.psql("victim", "SELECT string_agg(a::text, ',' ORDER BY a) FROM v"),
        pg.psql("postgres", "SELECT count(*) FROM pg_largeobject_metadata"),
        auto,
    ]
    .join("\n")
}

fn pg_restore(node: &Node, pg: &Postgres, source: &str, db: &str) -> std::process::Output {
    pg_restore_as(node, pg, Some(pg.os_user()), source, db)
}

/// `restore --into-db`, the administrative step as OS account `admin`
/// (peer/trust over the socket; `None`: the node's own account).
pub(crate) fn pg_restore_as(
    node: &Node,
    pg: &Postgres,
    admin: Option<&str>,
    source: &str,
    db: &str,
) -> std::process::Output {
    let mut cmd = node.cmd();
    cmd.args(["restore", "host-a", source, "--into-db", db]);
    if let Some(u) = admin {
        cmd.args(["--db-user", u]);
    }
    run(cmd.args([
        "--db-host",
        pg.socket_dir().to_str().unwrap(),
        "--db-port",
        &pg.port().to_string(),
        "--restore-host",
        &pg.host(),
    ]))
}

/// The one-time role owns the new database, is no superuser and can no
/// longer log in.
fn assert_role_locked(pg: &Postgres, db: &str) {
    let role = format!("ferry_restore_{db}");
    assert_eq!(
        pg.psql("postgres", &format!("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolpassword IS NULL FROM pg_authid WHERE rolname = '{role}'")),
        "f|f|f|f|t"
    );
    assert_eq!(
        pg.psql("postgres", &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'")),
        role
    );
}

#[test]
fn a_hostile_cluster_dump_replays_sql_only_as_a_role_that_owns_only_its_database() {
    if !tools() || !require("postgres") {
        return;
    }
    let td = TestDir::new("hostile_pgdumpall");
    let c = kit::canary_dir(&td);
    let pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    pg.create_db("victim");
    pg.psql("victim", "CREATE TABLE v (a int); INSERT INTO v VALUES (42), (43);");
    let node = Node::start(&td, "backup1");
    let a = hostile_client(&td, &node);
    let c = c.display();
    let dump = format!(
        r#"\restrict attackerkey
SET client_encoding = 'UTF8';
CREATE ROLE evil;
ALTER ROLE evil WITH SUPERUSER LOGIN PASSWORD 'evil';
ALTER ROLE postgres WITH PASSWORD 'owned';
CREATE DATABASE evil_db;
\unrestrict attackerkey
\! touch {c}/psql-bang
\o {c}/psql-o
SELECT 1;
\o
\copy (SELECT 1) TO '{c}/psql-copy'
\set x `touch {c}/psql-backtick`
\w {c}/psql-w
SELECT 2 \g {c}/psql-g
SELECT 3 \g |touch {c}/psql-g-pipe
\lo_import /etc/hostname
\connect victim
DROP TABLE v;
\c postgres
CREATE TABLE t_from_dump (a int, b text);
COPY t_from_dump (a, b) FROM stdin;
1	one
2	two
\.
COPY (SELECT 1) TO PROGRAM 'touch {c}/copy-to-program';
COPY t_from_dump (b) FROM PROGRAM 'touch {c}/copy-from-program; echo x';
COPY (SELECT 1) TO '{c}/copy-to-file';
CREATE TABLE leak AS SELECT pg_read_file('/etc/hostname') AS f;
SELECT lo_import('/etc/hostname');
ALTER SYSTEM SET log_min_messages = 'debug5';
GRANT pg_execute_server_program TO CURRENT_USER;
GRANT pg_write_server_files TO CURRENT_USER;
CREATE FUNCTION sys(cstring) RETURNS int AS '/lib/x86_64-linux-gnu/libc.so.6', 'system' LANGUAGE c STRICT;
SELECT sys('touch {c}/c-function');
DROP DATABASE victim;
\unrestrict attackerkey
"#
    );
    let file = td.join("cluster.pgdumpall.sql.zst");
    zstd_file(&file, &dump);
    ship(&node, &a, "cluster", &file);

    let before = pg_state(&pg);
    let out = pg_restore(&node, &pg, "cluster", "restored");
    let t = text(&out);
    assert!(out.status.success(), "the SQL part is restored: {t}");
    assert!(t.contains("meta-commands") && t.contains("not run"), "the refused commands are reported: {t}");
    kit::assert_canary_dir_empty(td.path.join("canaries").as_path());
    assert_eq!(pg_state(&pg), before, "nothing outside the new database changed");
    assert_eq!(pg.psql("restored", "SELECT string_agg(a || b, ',' ORDER BY a) FROM t_from_dump"), "1one,2two");
    assert_eq!(pg.psql("restored", "SELECT count(*) FROM pg_class WHERE relname = 'leak'"), "0");
    assert_role_locked(&pg, "restored");
}

#[test]
fn a_custom_format_dump_whose_objects_reach_the_os_is_refused_by_the_server() {
    if !tools() || !require("postgres") {
        return;
    }
    let td = TestDir::new("hostile_pgdump");
    let c = kit::canary_dir(&td);
    let pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    pg.create_db("victim");
    pg.psql("victim", "CREATE TABLE v (a int); INSERT INTO v VALUES (42);");
    pg.create_db("shop");
    // A real pg_dump of a database whose materialized view, refreshed at
    // restore time, runs a program through COPY — harmless where it was
    // made, armed anywhere else.
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items VALUES (1, 'bread'), (2, 'cheese');
             CREATE FUNCTION armed() RETURNS int LANGUAGE plpgsql AS $f$
             BEGIN
               IF current_database() <> 'shop' THEN
                 EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {}/mview-program''';
               END IF;
               RETURN 1;
             END $f$;
             CREATE MATERIALIZED VIEW mv AS SELECT armed() AS x;",
            c.display()
        ),
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
    eventually("the dump to be stored", || {
        ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "shop"])).trim() != "[]"
    });

    // The administrative step as the README sets it up: a role named after
    // the node's OS account, CREATEDB and CREATEROLE, no superuser.
    pg.psql("postgres", "CREATE ROLE root LOGIN CREATEDB CREATEROLE");
    let before = pg_state(&pg);
    let out = pg_restore_as(&node, &pg, None, "shop", "restored");
    let t = text(&out);
    assert!(!out.status.success(), "the armed view makes the restore fail: {t}");
    assert!(t.contains("pg_restore failed"), "{t}");
    assert!(t.contains("pg_execute_server_program") || t.contains("permission denied"), "{t}");
    kit::assert_canary_dir_empty(&c);
    assert_eq!(pg_state(&pg), before, "nothing outside the new database changed");
    assert_role_locked(&pg, "restored");

    // An honest dump of the same kind restores completely.
    pg.psql("shop", "DROP MATERIALIZED VIEW mv; DROP FUNCTION armed();");
    ok(a.cmd().args(["backup", "shop", "--send"]));
    eventually("the second dump to be stored", || {
        let v: serde_json::Value =
            serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "shop"])))
                .unwrap();
        v.as_array().unwrap().len() == 2
    });
    let out = pg_restore_as(&node, &pg, None, "shop", "restored2");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pg.psql("restored2", "SELECT string_agg(name, ',' ORDER BY id) FROM items"), "bread,cheese");
    assert_role_locked(&pg, "restored2");
}

/// Everything about a MariaDB server a restore must not change.
fn my_state(db: &MariaDb) -> String {
    [
        db.sql(None, "SELECT GROUP_CONCAT(CONCAT(user, '@', host) ORDER BY user, host) FROM mysql.global_priv"),
        db.sql(None, "SELECT GROUP_CONCAT(schema_name ORDER BY schema_name) FROM information_schema.schemata WHERE schema_name NOT LIKE 'restored%'"),
        db.sql(Some("victim"), "SELECT GROUP_CONCAT(a ORDER BY a) FROM v"),
        db.sql(None, "SELECT CONCAT(@@global.general_log, @@global.general_log_file, @@global.local_infile)"),
        db.sql(None, "SELECT COUNT(*) FROM information_schema.plugins"),
        db.sql(None, "SELECT COUNT(*) FROM mysql.func"),
    ]
    .join("\n")
}

#[test]
fn hostile_mariadb_dumps_run_no_client_command_and_reach_nothing_beyond_their_database() {
    if !tools() || !require("mariadb") {
        return;
    }
    let td = TestDir::new("hostile_mysqldump");
    let c = kit::canary_dir(&td);
    let db = MariaDb::start(&td.join("mariadb"));
    db.create_db("victim");
    db.sql(Some("victim"), "CREATE TABLE v (a INT); INSERT INTO v VALUES (42);");
    let node = Node::start(&td, "backup1");
    let a = hostile_client(&td, &node);
    let head = "CREATE TABLE t (a TEXT);\nINSERT INTO t VALUES ('before');\n";
    let cd = c.display();
    // Each case is its own dump: mysql stops at the first refused line.
    let cases: Vec<(&str, String)> = vec![
        ("my01", format!("\\! touch {cd}/bang\n")),
        ("my02", format!("system touch {cd}/system\n")),
        ("my03", format!("tee {cd}/tee\nSELECT 1;\n")),
        ("my04", format!("\\T {cd}/tee-short\nSELECT 1;\n")),
        ("my05", "source /etc/hostname\n".into()),
        ("my06", "\\. /etc/hostname\n".into()),
        ("my07", "connect victim\nDROP TABLE v;\n".into()),
        ("my08", "\\e\n".into()),
        ("my09", format!("SELECT 1 INTO OUTFILE '{cd}/outfile';\n")),
        ("my10", "LOAD DATA INFILE '/etc/hostname' INTO TABLE t;\n".into()),
        ("my11", "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t;\n".into()),
        ("my12", "USE victim;\nDROP TABLE v;\n".into()),
        ("my13", "DROP TABLE victim.v;\n".into()),
        ("my14", "CREATE USER evil@'%' IDENTIFIED BY 'evil';\n".into()),
        ("my15", "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER;\n".into()),
        ("my16", "INSTALL SONAME 'ha_blackhole';\n".into()),
        ("my17", format!("SET GLOBAL general_log_file = '{cd}/general.log';\nSET GLOBAL general_log = 1;\n")),
        ("my18", "CREATE DEFINER=root@localhost PROCEDURE p() SQL SECURITY DEFINER DROP TABLE victim.v;\n".into()),
        ("my19", "CREATE FUNCTION sys RETURNS INTEGER SONAME 'libc.so.6';\n".into()),
        ("my20", "DROP DATABASE victim;\n".into()),
    ];
    for (source, body) in &cases {
        let file = td.join(format!("{source}.mysqldump.sql.zst"));
        zstd_file(&file, &format!("{head}{body}"));
        ship(&node, &a, source, &file);
    }
    // The administrative step as the README sets it up: an account for the
    // node's OS account by unix_socket, CREATE USER and rights on restored%.
    db.sql(
        None,
        "CREATE USER nobody@localhost IDENTIFIED VIA unix_socket;
         GRANT CREATE USER ON *.* TO nobody@localhost;
         GRANT ALL PRIVILEGES ON `restored%`.* TO nobody@localhost WITH GRANT OPTION;",
    );
    let before = my_state(&db);
    for (i, (source, _)) in cases.iter().enumerate() {
        let target = format!("restored{i}");
        let out = run(node.cmd().args([
            "restore",
            "host-a",
            source,
            "--into-db",
            &target,
            "--db-user",
            "nobody",
            "--db-host",
            db.socket().to_str().unwrap(),
        ]));
        assert!(!out.status.success(), "{source}: the hostile line makes the restore fail: {}", text(&out));
        kit::assert_canary_dir_empty(&c);
        assert_eq!(my_state(&db), before, "{source}: nothing outside {target} changed");
        assert_eq!(
            db.sql(Some(&target), "SELECT GROUP_CONCAT(a) FROM t"),
            "before",
            "{source}: only the dump's own statements ran, in its own database"
        );
    }
    // The one-time accounts are gone.
    assert_eq!(db.sql(None, "SELECT COUNT(*) FROM mysql.global_priv WHERE user LIKE 'ferry\\_restore\\_%'"), "0");

    // An honest dump of the same kind restores.
    let file = td.join("good.mysqldump.sql.zst");
    zstd_file(
        &file,
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20));\nINSERT INTO items VALUES (1,'bread'),(2,'cheese');\nDELIMITER ;;\nCREATE TRIGGER tr BEFORE INSERT ON items FOR EACH ROW SET NEW.name = NEW.name;;\nDELIMITER ;\n",
    );
    ship(&node, &a, "good", &file);
    ok(node.cmd().args([
        "restore",
        "host-a",
        "good",
        "--into-db",
        "restored_good",
        "--db-user",
        "nobody",
        "--db-host",
        db.socket().to_str().unwrap(),
    ]));
    assert_eq!(db.sql(Some("restored_good"), "SELECT GROUP_CONCAT(name ORDER BY id) FROM items"), "bread,cheese");
    assert_eq!(my_state(&db), before);
}
