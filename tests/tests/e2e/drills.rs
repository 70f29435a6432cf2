//! Restore drills (issue 12): the node restores the newest backup of each
//! source into a scratch area — a PostgreSQL dump into a throw-away
//! database on a real PostgreSQL, a MariaDB dump likewise, an fs archive
//! with the strict extractor, a git mirror cloned and fsck'ed — records
//! pass/fail in the catalog, mails a failure once, and publishes the last
//! good drill. A hostile dump drilled unattended reaches nothing on the
//! node (its client command is refused, the canary stays empty) and fails
//! the drill; throw-away databases and roles are gone afterwards.

use std::fs;

use ferry_tests::fleet::{commit_and_push, eventually, ok, run, text};
use ferry_tests::{MariaDb, Postgres, Smtp, TestDir, for_each_ref, require};

use crate::hostile::kit;
use crate::hostile_dumps::{EVIL, ship, zstd_file};

fn drill_outcomes(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["source"].as_str().unwrap().to_owned(), o["result"].as_str().unwrap().to_owned()))
        .collect();
    o.sort();
    o
}

#[test]
fn each_module_is_drilled_for_real_and_a_hostile_dump_fails_its_drill_without_reaching_the_node() {
    if !kit::tools() || !require("postgres") || !require("mariadb") || !require("smtp") {
        return;
    }
    let td = TestDir::new("drills");
    let canary = kit::canary_dir(&td);
    let smtp = Smtp::start(&td.join("smtp"));
    let pg = Postgres::start(&td.join("pg"));
    pg.create_db("shop");
    pg.psql("shop", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;");
    let my = MariaDb::start(&td.join("mariadb"));
    my.create_db("shop");
    my.sql(
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT); INSERT INTO items VALUES (1, 'a'), (2, 'b');",
    );
    let node = ferry_tests::fleet::Node::start_with(
        &td,
        "backup1",
        &format!(
            "[mail]\nto = [\"admins@example.test\"]\nfrom = \"ferry@example.test\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\n\n\
             [drill]\npostgres_host = \"{}\"\npostgres_port = {}\npostgres_user = \"{}\"\nrestore_host = \"{}\"\nmariadb_host = \"{}\"\n",
            smtp.url(),
            pg.socket_dir().display(),
            pg.port(),
            pg.os_user(),
            pg.host(),
            my.socket().display()
        ),
    );
    let site = td.mkdir("site");
    fs::create_dir_all(site.join("sub")).unwrap();
    fs::write(site.join("index.html"), "<h1>hello</h1>\n").unwrap();
    fs::write(site.join("sub/data.bin"), vec![7u8; 100_000]).unwrap();
    let a = kit::script_client(
        &td,
        &node,
        "host-a",
        &[("evil", EVIL)],
        &format!(
            "[[source]]\nname = \"shop\"\nmodule = \"postgresdb\"\ndatabase = \"shop\"\nos_user = \"postgres\"\nhost = \"{}\"\nport = {}\n\n\
             [[source]]\nname = \"myshop\"\nmodule = \"mysql\"\ndatabase = \"shop\"\nsocket = \"{}\"\n\n\
             [[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n",
            pg.socket_dir().display(),
            pg.port(),
            my.socket().display(),
            site.display()
        ),
    );
    node.enroll(&[&a]);
    for s in ["shop", "myshop", "site"] {
        ok(a.cmd().args(["backup", s, "--send"]));
    }
    let (bare, work) = a.repo("project");
    commit_and_push(&work, "README", "hello\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("the mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));
    eventually("three backups stored", || node.pool_ids("host-a", "F").len() >= 4);

    // Everything restores.
    let v = node.ferry_node_json(&["drill"]);
    assert_eq!(
        drill_outcomes(&v),
        [
            ("myshop".into(), "passed".into()),
            ("project".into(), "passed".into()),
            ("shop".into(), "passed".into()),
            ("site".into(), "passed".into())
        ],
        "{v}"
    );
    assert!(smtp.messages().iter().all(|m| !m.subject.contains("DRILL")), "no drill mail while all pass");
    // The throw-away databases and roles are gone.
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'ferry\\_drill%'"), "0");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ferry\\_restore\\_%'"), "0");
    assert_eq!(
        my.sql(None, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'ferry\\_drill%'"),
        "0"
    );
    assert_eq!(my.sql(None, "SELECT COUNT(*) FROM mysql.user WHERE user LIKE 'ferry\\_restore\\_%'"), "0");

    // A compromised client ships a dump whose client command would run on
    // whatever replays it.
    let hostile = td.join("evil.mysqldump.sql.zst");
    zstd_file(&hostile, &format!("CREATE TABLE t (a TEXT);\n\\! touch {}/drill-bang\n", canary.display()));
    ship(&node, &a, "evil", &hostile);
    let out = run(node.cmd().args(["--json", "drill", "host-a"]));
    assert_eq!(out.status.code(), Some(3), "a failed drill is exit 3: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let evil = v.as_array().unwrap().iter().find(|o| o["source"] == "evil").unwrap().clone();
    assert_eq!(evil["result"], "failed", "{v}");
    kit::assert_canary_dir_empty(&canary);
    assert_eq!(
        my.sql(None, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'ferry\\_drill%'"),
        "0"
    );
    let failed: Vec<_> = smtp.messages().into_iter().filter(|m| m.subject.contains("DRILL_FAILED")).collect();
    assert_eq!(failed.len(), 1, "{:?}", failed.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert!(
        failed[0].body.split_whitespace().collect::<Vec<_>>().join(" ").contains("The restore drill of host-a/evil")
    );
    // Again: still failing, not mailed again.
    let out = run(node.cmd().args(["drill", "host-a", "evil"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(smtp.messages().iter().filter(|m| m.subject.contains("DRILL_FAILED")).count(), 1);

    // The published catalog and the page show the last good drill.
    ok(node.cmd().arg("publish"));
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(node.web_dir().join("catalog/catalog.json")).unwrap()).unwrap();
    let src = |name: &str| {
        doc["clients"][0]["sources"].as_array().unwrap().iter().find(|s| s["source"] == name).unwrap().clone()
    };
    assert!(src("shop")["last_good_drill"].is_string(), "{doc}");
    assert_eq!(src("shop")["last_drill"]["ok"], true, "{doc}");
    assert!(src("evil")["last_good_drill"].is_null(), "{doc}");
    assert_eq!(src("evil")["last_drill"]["ok"], false, "{doc}");
    let page = fs::read_to_string(node.web_dir().join("catalog/index.html")).unwrap();
    assert!(page.contains("Last restore drill") && page.contains("FAILED"), "{page}");
}
