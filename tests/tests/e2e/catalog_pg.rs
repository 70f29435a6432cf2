//! The shared catalog (issue 14, point 2): two nodes with the same
//! `[catalog] url` write into one PostgreSQL database; either node's
//! `find`, `list` and published JSON show both nodes' artifacts, each with
//! the node that stores it, while restore and verify act only on the
//! node's own rows (the other node's files are not here).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{Postgres, TestDir, require, require_all};

pub(crate) fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"]) && require("postgres")
}

/// A database `catalog` owned by role `ferry` (password over TCP, as a
/// stock server has it), and the `[catalog]` section naming it, with the
/// password in a file of mode 0600.
pub(crate) fn shared_catalog(td: &TestDir, pg: &Postgres) -> String {
    pg.psql("postgres", "CREATE ROLE ferry LOGIN PASSWORD 'catalog-secret'; CREATE DATABASE catalog OWNER ferry;");
    let pass = td.join("catalog.pass");
    fs::write(&pass, "catalog-secret\n").unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[catalog]\nurl = \"postgres://ferry@{}:{}/catalog\"\npassword_file = \"{}\"\n",
        pg.host(),
        pg.port(),
        pass.display()
    )
}

/// A client with one pipe source `numbers` (`cat stream`).
pub(crate) fn pipe_client(td: &TestDir, node: &Node, name: &str, stream: &Path) -> Client {
    Client::new_with(
        td,
        name,
        &[node],
        &format!("[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"cat\", \"{}\"]\n", stream.display()),
    )
}

/// The configuration of node `name`, its base directory `td/<base>`, with
/// the catalog `section`, loaded as the node loads it.
fn node_config(td: &TestDir, name: &str, base: &str, section: &str) -> ferry_node::config::NodeConfig {
    let config = td.join(format!("{name}-{base}.toml"));
    fs::write(&config, format!("name = \"{name}\"\nbase_dir = \"{}\"\n{section}", td.join(base).display())).unwrap();
    ferry_node::config::NodeConfig::load(&config).unwrap()
}

/// A catalog row of `host-a`'s pipe source `numbers`, stored at
/// `host-a/numbers/<tag>/numbers`.
fn numbers_row(tag: &str, received: String, size: u64, sha256: String) -> ferry_node::catalog::Artifact {
    ferry_node::catalog::Artifact {
        id: 0,
        client: "host-a".into(),
        source: "numbers".into(),
        module: "pipe".into(),
        received,
        stamp: format!("s{tag}"),
        path: format!("host-a/numbers/{tag}/numbers"),
        size,
        sha256,
        duration_ms: 1,
        request: format!("r{tag}"),
        node: String::new(),
    }
}

/// (client, node) of every row `find --json` shows.
fn rows(node: &Node) -> Vec<(String, String)> {
    let v = node.ferry_node_json(&["find"]);
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["client"].as_str().unwrap().to_owned(), a["node"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

#[test]
fn two_nodes_share_one_catalog() {
    if !tools() {
        return;
    }
    let td = TestDir::new("catalog_pg");
    let pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    let catalog = shared_catalog(&td, &pg);
    let n1 = Node::start_with(&td, "backup1", &catalog);
    let n2 = Node::start_with(&td, "backup2", &catalog);
    let (s1, s2) = (td.join("stream-a"), td.join("stream-b"));
    let stream_a: String = (1..=50_000).map(|i| format!("a {i}\n")).collect();
    fs::write(&s1, &stream_a).unwrap();
    fs::write(&s2, "b\n".repeat(1000)).unwrap();
    let a = pipe_client(&td, &n1, "host-a", &s1);
    let b = pipe_client(&td, &n2, "host-b", &s2);
    n1.enroll(&[&a]);
    n2.enroll(&[&b]);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    ok(b.cmd().args(["backup", "numbers", "--send"]));
    let both = vec![("host-a".to_owned(), "backup1".to_owned()), ("host-b".to_owned(), "backup2".to_owned())];
    eventually("both nodes to record their backup", || rows(&n1) == both);
    assert!(n1.pool_ids("host-a", "E").is_empty() && n2.pool_ids("host-b", "E").is_empty(), "{}", n1.events());
    // Either node shows the fleet.
    assert_eq!(rows(&n2), both);
    let on2 = n2.ferry_node_json(&["find", "--client", "host-a"]);
    assert_eq!(on2.as_array().unwrap().len(), 1, "{on2}");
    assert_eq!(on2[0]["node"], "backup1");
    let human = ok(n2.cmd().args(["find"]));
    assert!(
        human.lines().any(|l| l.starts_with("host-a numbers ") && l.ends_with(" node:backup1"))
            && human.lines().any(|l| l.starts_with("host-b numbers ") && l.ends_with(" node:backup2")),
        "{human}"
    );
    let list = n2.ferry_node_json(&["list"]);
    let listed = |c: &str| {
        list.as_array().unwrap().iter().find(|x| x["client"] == c).unwrap_or_else(|| panic!("no {c} in {list}"))
            ["artifacts"][0]["node"]
            .clone()
    };
    assert_eq!((listed("host-a"), listed("host-b")), ("backup1".into(), "backup2".into()), "{list}");
    let human = ok(n1.cmd().args(["list"]));
    assert!(human.contains("on node backup2"), "{human}");

    // The published document names each artifact's node.
    let publish = td.mkdir("publish");
    ok(n1.cmd().args(["publish", publish.to_str().unwrap()]));
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(publish.join("catalog.json")).unwrap()).unwrap();
    let nodes_in_doc: Vec<&str> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["sources"].as_array().unwrap())
        .flat_map(|s| s["artifacts"].as_array().unwrap())
        .map(|a| a["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes_in_doc, ["backup1", "backup2"], "{doc}");

    // Restore on the owning node is byte-identical; the other node has no
    // such artifact of its own and says so instead of reaching for a file
    // it lacks.
    let out = run(n1.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout == stream_a.as_bytes(), "restored byte for byte");
    let out = run(n2.cmd().args(["restore", "host-a", "numbers", "--stdout"]));
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    // verify on each node checks its own rows only: nothing is missing.
    for n in [&n1, &n2] {
        let v = n.ferry_node_json(&["verify"]);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{}: {v}", n.name);
    }

    // One schema, migrated once: the version table lists each step once,
    // and the rows are in PostgreSQL, not in a SQLite file.
    let versions = pg.psql("catalog", "SELECT string_agg(version::text, ',' ORDER BY version) FROM catalog_migrations");
    assert_eq!(versions, "1,2,3");
    assert_eq!(
        pg.psql("catalog", "SELECT node, client FROM artifacts ORDER BY node"),
        "backup1|host-a\nbackup2|host-b"
    );
    assert!(!n1.srv().join("state/catalog.sqlite").exists());
}

/// Files under `dir` (recursively) whose content mentions `needle`.
fn files_mentioning(dir: &Path, needle: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if fs::read_to_string(&p).is_ok_and(|t| t.contains(needle)) {
                n += 1;
            }
        }
    }
    n
}

/// Queued rows (`*.json`) in the node's catalog queue.
fn queued(node: &Node) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(node.srv().join("state/catalog-queue"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn postgres_down_rows_are_queued_and_written_once_when_it_is_back() {
    if !tools() {
        return;
    }
    let td = TestDir::new("catalog_pg_down");
    let mut pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    let catalog = shared_catalog(&td, &pg);
    let node = Node::start_with(&td, "backup1", &catalog);
    let stream = td.join("stream");
    let a = pipe_client(&td, &node, "host-a", &stream);
    node.enroll(&[&a]);
    let mut sent = Vec::new();
    let backup = |n: usize, sent: &mut Vec<String>| {
        let content: String = (0..20_000).map(|i| format!("{n} {i}\n")).collect();
        fs::write(&stream, &content).unwrap();
        ok(a.cmd().args(["backup", "numbers", "--send"]));
        sent.push(content);
        eventually("the node to finish the request", || node.pool_ids("host-a", "F").len() == n);
        // One artifact per second of receive time.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    };
    backup(1, &mut sent);
    assert_eq!(node.ferry_node_json(&["find"]).as_array().unwrap().len(), 1);

    // The database goes away: the node keeps pulling and storing, and
    // queues the rows.
    pg.stop();
    backup(2, &mut sent);
    backup(3, &mut sent);
    assert!(node.pool_ids("host-a", "E").is_empty(), "no request failed: {}", node.events());
    assert_eq!(queued(&node).len(), 2, "two rows queued");
    let out = run(node.cmd().args(["find"]));
    assert!(!out.status.success() && text(&out).contains("unreachable"), "{}", text(&out));
    let outbox = node.srv().join("state/outbox");
    assert_eq!(files_mentioning(&outbox, "CATALOG_UNREACHABLE"), 1, "one alert for the outage");
    // The stored artifacts are there, readable, under the node's data.
    let stored: Vec<_> = fs::read_dir(node.data("host-a").join("numbers")).unwrap().flatten().collect();
    assert_eq!(stored.len(), 3, "{stored:?}");

    // A queued row whose write succeeded but whose file was not yet
    // removed (a crash in between) must not be doubled: keep a copy of one.
    let kept = td.join("kept-row.json");
    fs::copy(&queued(&node)[0], &kept).unwrap();

    pg.restart();
    ok(node.cmd().args(["scan"]));
    assert!(queued(&node).is_empty(), "queue written: {:?}", queued(&node));
    fs::copy(&kept, node.srv().join("state/catalog-queue/replayed.json")).unwrap();
    ok(node.cmd().args(["scan"]));
    assert!(queued(&node).is_empty());

    let rows = node.ferry_node_json(&["find", "--client", "host-a"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "every row exactly once: {rows:?}");
    assert_eq!(pg.psql("catalog", "SELECT count(*), count(DISTINCT path) FROM artifacts"), "3|3");
    assert_eq!(files_mentioning(&outbox, "CATALOG_UNREACHABLE"), 1);
    assert_eq!(files_mentioning(&outbox, "CATALOG_REACHABLE"), 1, "the end of the outage is told once");
    // Each row names a complete artifact: restore of the newest, and of
    // each by time, gives back what was sent.
    for (a, want) in rows.iter().zip(&sent) {
        let at = a["received"].as_str().unwrap();
        let out = run(node.cmd().args(["restore", "host-a", "numbers", "--at", at, "--stdout"]));
        assert!(out.status.success(), "{}", text(&out));
        assert!(out.stdout == want.as_bytes(), "artifact {at} restored byte for byte");
    }
}

/// PostgreSQL restarted under load: a node writing rows as fast as it can
/// loses its connection mid-stream, queues the rest, and the next open
/// writes them; every row is in the database exactly once (a row the
/// server committed just before the connection went is not doubled when
/// its queued copy is written).
#[test]
fn postgres_restarted_under_load_loses_and_doubles_no_row() {
    use ferry_node::catalog::{self, Query};
    if !require("postgres") {
        return;
    }
    let td = TestDir::new("catalog_pg_load");
    let mut pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    let section = shared_catalog(&td, &pg);
    let cfg = node_config(&td, "backup1", "srv", &section);
    const ROWS: usize = 400;
    let row = |i: usize| {
        let received = format!("20261206T{:02}{:02}{:02}Z", i / 3600, i / 60 % 60, i % 60);
        numbers_row(&i.to_string(), received, i as u64, format!("{i:064x}"))
    };
    let written = std::sync::atomic::AtomicUsize::new(0);
    let queued_rows = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let cat = catalog::open(&cfg).unwrap();
            let mut queued = 0;
            for i in 0..ROWS {
                if cat.insert(&row(i)).unwrap() == 0 {
                    queued += 1;
                }
                written.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            queued
        });
        eventually("some rows to be written", || written.load(std::sync::atomic::Ordering::SeqCst) > ROWS / 4);
        pg.restart();
        writer.join().unwrap()
    });
    assert!(
        queued_rows > 0 && queued_rows < ROWS,
        "some rows went in before the restart, the rest queued: {queued_rows}"
    );
    // The next open writes the queue.
    let cat = catalog::open(&cfg).unwrap();
    let found = cat.find(&Query { all_nodes: true, ..Query::default() }).unwrap();
    assert_eq!(found.len(), ROWS);
    assert_eq!(pg.psql("catalog", "SELECT count(*), count(DISTINCT path) FROM artifacts"), format!("{ROWS}|{ROWS}"));
    assert!(
        fs::read_dir(td.join("srv/state/catalog-queue"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".json"))
    );
}

/// A certificate authority: (its certificate, a way to sign with it).
fn authority(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// A server certificate for `host` signed by `ca`: (certificate PEM, key PEM).
fn server_cert(host: &str, ca: &(rcgen::Certificate, rcgen::KeyPair)) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// TLS to the shared catalog (`[catalog] ca_file`). The server turns away
/// clients that do not speak TLS; a node holding the authority's
/// certificate writes and finds its rows over TLS (PostgreSQL's own view of
/// the connection says so); a node given another authority, or reaching a
/// server whose certificate names another host, sends the database nothing:
/// its rows are queued and the reason names the certificate.
#[test]
fn the_catalog_over_tls_checks_the_servers_certificate() {
    use ferry_node::catalog::{self, Query};
    if !require("postgres") {
        return;
    }
    let td = TestDir::new("catalog_pg_tls");
    let mut pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    let section = shared_catalog(&td, &pg);
    let (ours, other) = (authority("ferry test CA"), authority("someone else's CA"));
    let (cert, key) = server_cert(&pg.host(), &ours);
    pg.use_tls(&cert, &key);
    let (ours_pem, other_pem) = (td.join("ca.pem"), td.join("other-ca.pem"));
    fs::write(&ours_pem, ours.0.pem()).unwrap();
    fs::write(&other_pem, other.0.pem()).unwrap();
    let cfg = |name: &str, extra: &str| node_config(&td, name, &format!("srv-{name}"), &format!("{section}{extra}"));
    let row = |node: &str| numbers_row(node, "20261206T200000Z".into(), 1, format!("{:064x}", node.len()));
    let all = Query { all_nodes: true, ..Query::default() };

    // Without TLS: refused by the server, and not an outage to queue for
    // (the administrator's to fix).
    let plain = cfg("plain", "");
    let e = format!("{:#}", catalog::open(&plain).err().expect("a plain connection is refused"));
    assert!(e.contains("no encryption"), "{e}");

    // With the authority: rows written and read over TLS.
    let good = cfg("good", &format!("ca_file = \"{}\"\n", ours_pem.display()));
    let cat = catalog::open(&good).unwrap();
    assert_eq!(cat.insert(&row("good")).unwrap(), 1);
    assert_eq!(cat.find(&all).unwrap().len(), 1);
    let ssl =
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'ferry' AND s.ssl";
    assert_eq!(pg.psql("postgres", ssl), "1", "the node's connection is TLS");
    drop(cat);

    // Another authority: nothing sent, the row queued, the reason given.
    let wrong = cfg("wrong", &format!("ca_file = \"{}\"\n", other_pem.display()));
    let cat = catalog::open(&wrong).unwrap();
    assert_eq!(cat.insert(&row("wrong")).unwrap(), 0, "queued, not written");
    let e = format!("{:#}", cat.find(&all).unwrap_err());
    assert!(e.contains("certificate") && e.contains("unreachable"), "{e}");
    drop(cat);

    // Our authority, but the server's certificate names another host.
    let (cert, key) = server_cert("127.0.0.254", &ours);
    pg.use_tls(&cert, &key);
    let cat = catalog::open(&good).unwrap();
    assert_eq!(cat.insert(&row("good-again")).unwrap(), 0, "queued, not written");
    let e = format!("{:#}", cat.find(&all).unwrap_err());
    assert!(e.contains("certificate") && e.contains("unreachable"), "{e}");
    drop(cat);
    assert_eq!(pg.psql("catalog", "SELECT path FROM artifacts"), "host-a/numbers/good/numbers", "only the TLS row");

    // The right certificate again: the queued row goes in on the next open.
    let (cert, key) = server_cert(&pg.host(), &ours);
    pg.use_tls(&cert, &key);
    let cat = catalog::open(&good).unwrap();
    assert_eq!(cat.find(&all).unwrap().len(), 2, "the queued row written once the server is trusted again");
}

/// PostgreSQL agrees with SQLite on a row for a path it already has: the
/// same row again is that row; another size or digest is refused and
/// changes nothing; a queued row that conflicts is set aside
/// (`.json.conflict`, for a look by hand) and the rest of the queue is
/// written, instead of every later open failing on it.
#[test]
fn a_conflicting_row_is_refused_and_a_conflicting_queued_row_set_aside() {
    use ferry_node::catalog::{self, Query, RowConflict};
    if !require("postgres") {
        return;
    }
    let td = TestDir::new("catalog_pg_conflict");
    let pg = Postgres::start_with_host_auth(&td.join("pg"), "scram-sha-256");
    let section = shared_catalog(&td, &pg);
    let cfg = node_config(&td, "backup1", "srv", &section);
    let row = |i: u32, digest: &str| numbers_row(&i.to_string(), format!("20261206T2000{i:02}Z"), 3, digest.repeat(32));
    let cat = catalog::open(&cfg).unwrap();
    let a = row(1, "ab");
    let id = cat.insert(&a).unwrap();
    assert!(id > 0);
    assert_eq!(cat.insert(&a).unwrap(), id, "the same row again is that row");
    let e = cat.insert(&row(1, "cd")).unwrap_err();
    assert!(e.downcast_ref::<RowConflict>().is_some(), "{e:#}");
    assert!(format!("{e:#}").contains("already records host-a/numbers/1/numbers"), "{e:#}");
    drop(cat);

    // Queued while the database was away: a conflicting row and a new one.
    let queue = ferry_node::catalog::shared::Queue::of(&cfg);
    queue.push(&row(1, "cd")).unwrap();
    queue.push(&row(2, "ef")).unwrap();
    let cat = catalog::open(&cfg).unwrap();
    let found = cat.find(&Query { all_nodes: true, ..Query::default() }).unwrap();
    let got: Vec<(&str, &str)> = found.iter().map(|r| (r.path.as_str(), &r.sha256[..2])).collect();
    assert_eq!(got, [("host-a/numbers/1/numbers", "ab"), ("host-a/numbers/2/numbers", "ef")]);
    let left: Vec<String> = fs::read_dir(td.join("srv/state/catalog-queue"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".json"))
        .collect();
    assert!(left.len() == 1 && left[0].ends_with(".json.conflict"), "{left:?}");
}
