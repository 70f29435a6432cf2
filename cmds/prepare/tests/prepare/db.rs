//! Database dumps against the harness's real PostgreSQL and MariaDB: dump,
//! restore into a fresh database, compare the contents.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use ferry_prepare::{SourceKind, SourceSpec};
use ferry_tests::{MariaDb, Postgres, is_root, require, require_all};

use crate::util::{Env, artifact, dir_names, unzstd};

const PG_SETUP: &str = r#"
CREATE TABLE people (id int PRIMARY KEY, name text, note text, born date);
INSERT INTO people VALUES
  (1, 'Zoë Ñandú', '日本語のテキスト', '1990-01-02'),
  (2, NULL, E'two\nlines, ''quotes'', tab\there, back\\slash', NULL),
  (3, '🚀 émoji', NULL, '2000-02-29'),
  (4, '', 'empty name, not NULL', '1970-01-01');
CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
-- ~1 MiB of pseudo-random bytes per row, so compression cannot hide a bug.
INSERT INTO blobs SELECT g, decode(string_agg(md5(g::text || '-' || i::text), '' ORDER BY i), 'hex')
  FROM generate_series(1, 2) g, generate_series(1, 65536) i GROUP BY g;
INSERT INTO blobs VALUES (3, NULL), (4, '\x00ff5c27000a'::bytea), (5, ''::bytea);
CREATE SEQUENCE counter START 42;
CREATE VIEW adults AS SELECT id, name FROM people WHERE born < '2000-01-01';
"#;

/// Everything the comparison looks at, NULLs spelled out by JSON.
const PG_CHECK: &str = r#"
SELECT row_to_json(p)::text FROM people p ORDER BY id;
SELECT id, data IS NULL, length(data), md5(data) FROM blobs ORDER BY id;
SELECT last_value FROM counter;
SELECT count(*) FROM adults;
"#;

fn pg_source(name: &str, pg: &Postgres, database: Option<&str>, tcp: bool) -> SourceSpec {
    // As root the dump runs as the server's OS user (runuser), which is the
    // superuser role `postgres` by peer/trust; otherwise the server runs as
    // us and the role is named in the connection string.
    let (database, os_user) = match (database, is_root()) {
        (Some(db), true) => (Some(db.to_owned()), Some(pg.os_user().to_owned())),
        (Some(db), false) => (Some(format!("dbname={db} user=postgres")), None),
        (None, _) => (None, Some(pg.os_user().to_owned())),
    };
    let (host, socket) = if tcp { (Some(pg.host()), None) } else { (None, Some(pg.socket_dir())) };
    SourceSpec::new(name, SourceKind::Postgres { database, os_user, host, port: Some(pg.port()), socket })
}

/// `pg_restore -d <db>` of `file`, fed on stdin (the artifact is 0640 in a
/// 0750 directory the `postgres` account cannot read).
fn pg_restore(pg: &Postgres, db: &str, file: &Path) {
    let prog = pg.bin_dir().join("pg_restore");
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    };
    cmd.arg("-h").arg(pg.socket_dir()).args(["-p", &pg.port().to_string(), "-U", "postgres", "-d", db]);
    cmd.args(["--no-owner", "--exit-on-error"]).current_dir("/");
    cmd.stdin(File::open(file).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "pg_restore failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn postgres_database_dump_restores_identically() {
    if !require_all(&["postgres", "pg_dump", "pg_restore"]) {
        return;
    }
    let env = Env::new("pg_dump");
    let pg = Postgres::start(&env.td.join("pg"));
    pg.create_db("app");
    pg.psql("app", PG_SETUP);
    let before = pg.psql("app", PG_CHECK);
    assert!(before.contains("Zoë"), "{before}");

    let spec = pg_source("appdb", &pg, Some("app"), false);
    let r = env.prepare(&spec).unwrap();
    assert!(r.url.path.as_str().ends_with(".pgdump"));
    let file = artifact(&r);
    assert_eq!(&std::fs::read(&file).unwrap()[..5], b"PGDMP", "custom format");

    pg.create_db("restored");
    pg_restore(&pg, "restored", &file);
    assert_eq!(pg.psql("restored", PG_CHECK), before);
}

#[test]
fn postgres_whole_cluster_dump_over_tcp() {
    if !require_all(&["postgres", "pg_dumpall"]) {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: pg_dumpall test needs root (to run as the postgres account)");
        return;
    }
    let env = Env::new("pg_dumpall");
    let pg = Postgres::start(&env.td.join("pg"));
    pg.create_db("app");
    pg.psql("app", PG_SETUP);
    let spec = pg_source("cluster", &pg, None, true);
    let r = env.prepare(&spec).unwrap();
    assert!(r.url.path.as_str().ends_with(".sql.zst"));
    let sql = String::from_utf8(unzstd(&artifact(&r))).unwrap();
    assert!(sql.contains("PostgreSQL database cluster dump"), "{}", &sql[..sql.len().min(500)]);
    assert!(sql.contains("CREATE DATABASE app"), "database app missing");
    assert!(sql.contains("Zoë Ñandú"), "table data missing");
}

#[test]
fn postgres_failure_carries_pg_dumps_stderr() {
    if !require_all(&["postgres", "pg_dump"]) {
        return;
    }
    let env = Env::new("pg_fail");
    let pg = Postgres::start(&env.td.join("pg"));
    let spec = pg_source("nodb", &pg, Some("no_such_db"), false);
    let e = env.prepare(&spec).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "E_PREPARE", "{msg}");
    assert!(msg.contains("pg_dump"), "{msg}");
    assert!(msg.contains("no_such_db") && msg.contains("does not exist"), "{msg}");
    assert!(dir_names(&env.source_dir("nodb")).is_empty());
}

const MY_SETUP: &str = r#"
SET NAMES utf8mb4;
CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(100), note TEXT, born DATE)
  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO people VALUES
  (1, 'Zoë Ñandú', '日本語のテキスト', '1990-01-02'),
  (2, NULL, 'two\nlines, ''quotes'', tab\there, back\\slash', NULL),
  (3, '🚀 émoji', NULL, '2000-02-29'),
  (4, '', 'empty name, not NULL', '1970-01-01');
CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB;
INSERT INTO blobs VALUES (1, REPEAT(UNHEX(SHA2('seed', 256)), 32768)), (2, NULL), (3, UNHEX('00FF5C27000A0D1A')), (4, '');
CREATE TRIGGER people_bi BEFORE INSERT ON people FOR EACH ROW SET NEW.note = COALESCE(NEW.note, 'default');
CREATE PROCEDURE answer() SELECT 42;
"#;

const MY_CHECK: &str = r#"
SET NAMES utf8mb4;
SELECT id, name, name IS NULL, note, note IS NULL, born FROM people ORDER BY id;
SELECT id, data IS NULL, LENGTH(data), SHA2(data, 256) FROM blobs ORDER BY id;
SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();
SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();
"#;

#[test]
fn mysql_dump_restores_identically_over_socket_and_tcp() {
    if !require("mariadb") || (ferry_prepare::db::find_mysql_dump().is_none() && !require("mariadb-dump")) {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: the harness's MariaDB grants password-less access to root only");
        return;
    }
    let env = Env::new("mysql_dump");
    let my = MariaDb::start(&env.td.join("my"));
    my.create_db("shop");
    my.sql(Some("shop"), MY_SETUP);
    let before = my.sql(Some("shop"), MY_CHECK);
    assert!(before.contains("Zoë") && before.contains("answer"), "{before}");

    let over_socket = SourceSpec::new(
        "shop",
        SourceKind::Mysql {
            database: Some("shop".into()),
            os_user: None,
            host: None,
            port: None,
            socket: Some(my.socket()),
        },
    );
    let over_tcp = SourceSpec::new(
        "shop-tcp",
        SourceKind::Mysql {
            database: Some("shop".into()),
            os_user: None,
            host: Some(my.host()),
            port: Some(my.port()),
            socket: None,
        },
    );
    for (n, spec) in [over_socket, over_tcp].iter().enumerate() {
        let r = env.prepare(spec).unwrap();
        assert!(r.url.path.as_str().ends_with(".sql.zst"));
        let sql = String::from_utf8(unzstd(&artifact(&r))).unwrap();
        assert!(sql.contains("CREATE TABLE `people`"), "{}", &sql[..sql.len().min(500)]);
        let db = format!("restored{n}");
        my.create_db(&db);
        my.sql(Some(&db), &sql);
        assert_eq!(my.sql(Some(&db), MY_CHECK), before, "restore of {}", spec.name);
    }
}

#[test]
fn mysql_failure_carries_the_tools_stderr() {
    if !require("mariadb") || (ferry_prepare::db::find_mysql_dump().is_none() && !require("mariadb-dump")) {
        return;
    }
    let env = Env::new("mysql_fail");
    let my = MariaDb::start(&env.td.join("my"));
    let spec = SourceSpec::new(
        "nodb",
        SourceKind::Mysql {
            database: Some("no_such_db".into()),
            os_user: None,
            host: None,
            port: None,
            socket: Some(my.socket()),
        },
    );
    let e = env.prepare(&spec).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "E_PREPARE", "{msg}");
    assert!(msg.contains("no_such_db"), "{msg}");
    assert!(dir_names(&env.source_dir("nodb")).is_empty());
}
