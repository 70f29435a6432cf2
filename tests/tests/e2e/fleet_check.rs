//! Fleet visibility (issue 12): sources declared with a cadence in
//! gitosis.conf are judged on node time (late, small, missing, unexpected), each
//! problem mailed once and its end once; the node publishes its catalog as
//! JSON; another "host" (another loopback address, its own config and
//! state) checks that catalog over HTTP and mails late/missing sources and
//! a catalog that went stale or unreachable.
//!
//! Time is injected with `FERRY_NOW`, never waited for; mail goes to a real
//! SMTP server; the catalog is served by a real HTTP server (Python's
//! `http.server`) on its own loopback address.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{Daemon, READY_TIMEOUT, Signal, Smtp, TestDir, free_port, next_loopback, require};
use jiff::{SignedDuration, Timestamp};

use crate::hostile::kit;

fn mail_toml(smtp: &Smtp, label: &str) -> String {
    format!(
        "[mail]\nto = [\"admins@example.test\"]\nfrom = \"ferry-{label}@example.test\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\nmin_interval = \"0s\"\n",
        smtp.url()
    )
}

/// Bodies of the mails whose subject contains `kind`, words joined by one
/// space (line wrapping undone).
fn bodies(smtp: &Smtp, kind: &str) -> Vec<String> {
    smtp.messages()
        .iter()
        .filter(|m| m.subject.contains(kind))
        .map(|m| m.body.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `ferry-node --json check [args]` at `now`: (exit code, JSON).
fn check_at(cmd: Command, now: Timestamp, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = cmd;
    let out = run(cmd.env("FERRY_NOW", now.to_string()).args(["--json", "check"]).args(args));
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    (out.status.code(), v)
}

fn verdicts(entry: &serde_json::Value) -> Vec<(String, String)> {
    entry["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source"].as_str().unwrap().to_owned(), s["verdict"].as_str().unwrap_or("-").to_owned()))
        .collect()
}

/// A static HTTP server for `dir` on its own loopback address.
fn serve(td: &TestDir, dir: &Path, name: &str) -> (Daemon, String) {
    let addr = next_loopback();
    let port = free_port(addr);
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-m", "http.server", "--bind", &addr.to_string(), "--directory"]).arg(dir).arg(port.to_string());
    let mut d = Daemon::spawn(name, cmd, &td.join(format!("{name}.log")), Signal::KILL, Duration::from_secs(5));
    d.wait_for_tcp(addr, port, READY_TIMEOUT);
    (d, format!("http://{addr}:{port}/catalog.json"))
}

#[test]
fn declared_sources_are_judged_published_and_checked_from_another_host() {
    if !kit::tools() || !require("smtp") || !require("curl") || !require("python3") {
        return;
    }
    let td = TestDir::new("fleet_check");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(&td, "backup1", &mail_toml(&smtp, "backup1"));
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"1000\"]\n\n\
         [[source]]\nname = \"extra\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"10\"]\n",
    );
    // A cadence that does not parse refuses the push, like every
    // enrollment error, and changes nothing.
    let bad = node.admin_push("bad cadence", |dir| {
        let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        conf.push_str(&format!("\n{}sources = numbers:daily\n", a.gitosis_section));
        fs::write(dir.join(format!("keydir/{}.pub", a.name)), format!("{}\n", a.public_key)).unwrap();
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(text(&bad).contains("option 'sources': 'numbers:daily': cadence must be"), "{}", text(&bad));

    a.gitosis_section.push_str("sources = numbers:1d shop:6h\n");
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    ok(a.cmd().args(["backup", "extra", "--send"]));
    eventually("both backups stored", || node.pool_ids("host-a", "F").len() == 2);
    let t = Timestamp::now();

    // An hour later: numbers on time, shop missing (mailed once), extra
    // stored but undeclared (reported, not mailed).
    let (code, v) = check_at(node.cmd(), t + SignedDuration::from_hours(1), &[]);
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(
        verdicts(&v[0]),
        [("numbers".into(), "ok".into()), ("shop".into(), "missing".into()), ("extra".into(), "unexpected".into())],
        "{v}"
    );
    let overdue = bodies(&smtp, "BACKUP_OVERDUE");
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(overdue[0].contains("Node backup1, client host-a: shop is declared but never arrived"), "{overdue:?}");
    let (_, _) = check_at(node.cmd(), t + SignedDuration::from_hours(2), &[]);
    assert_eq!(bodies(&smtp, "BACKUP_OVERDUE").len(), 1, "a problem is mailed once");

    // A day and two hours later, numbers is late (cadence 1d + grace 1h).
    let late_at = t + SignedDuration::from_hours(26);
    let (_, v) = check_at(node.cmd(), late_at, &[]);
    assert_eq!(verdicts(&v[0])[0], ("numbers".into(), "late".into()), "{v}");
    let overdue = bodies(&smtp, "BACKUP_OVERDUE");
    assert_eq!(overdue.len(), 2, "{overdue:?}");
    assert!(overdue[1].contains("numbers is late: last arrival 1d"), "{overdue:?}");

    // A new backup: numbers is on time again, mailed once.
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    eventually("third backup stored", || node.pool_ids("host-a", "F").len() == 3);
    let (_, v) = check_at(node.cmd(), t + SignedDuration::from_hours(1), &[]);
    assert_eq!(verdicts(&v[0])[0], ("numbers".into(), "ok".into()), "{v}");
    let back = bodies(&smtp, "BACKUP_ON_TIME");
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].contains("numbers is on time again"), "{back:?}");

    // The scan published the catalog beside the web view.
    // (It is written after the request is finished: wait for it.)
    let published = node.web_dir().join("catalog/catalog.json");
    let read = || -> serde_json::Value {
        fs::read(&published).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    eventually("the scan published the third backup", || {
        read()["clients"][0]["sources"][0]["artifacts"].as_array().is_some_and(|a| a.len() == 2)
    });
    let doc = read();
    assert_eq!(doc["schema"], "ferry-catalog/1");
    assert_eq!(doc["node"], "backup1");
    let numbers = &doc["clients"][0]["sources"][0];
    assert_eq!(numbers["source"], "numbers", "{doc}");
    assert_eq!(numbers["artifacts"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(numbers["artifacts"][1]["size"], 3893, "seq 1 1000 is 3,893 bytes: {doc}");

    // Another host reads a catalog published as of late_at.
    let pubdir = td.mkdir("published");
    ok(node.cmd().env("FERRY_NOW", late_at.to_string()).args(["publish"]).arg(&pubdir));
    let (mut http, url) = serve(&td, &pubdir, "catalog-http");
    let watcher_smtp = Smtp::start(&td.join("smtp-watcher"));
    let wdir = td.mkdir("watcher");
    let wconf = wdir.join("node.toml");
    fs::write(
        &wconf,
        format!(
            "name = \"watcher\"\nbase_dir = \"{}\"\n{}",
            wdir.join("srv").display(),
            mail_toml(&watcher_smtp, "watcher")
        ),
    )
    .unwrap();
    let watcher = || {
        let mut c = Command::new(ferry_tests::ferry_bin("ferry-node"));
        c.arg("--config").arg(&wconf);
        c
    };
    let (code, v) = check_at(watcher(), late_at + SignedDuration::from_mins(10), &["--from", &url]);
    assert_eq!(code, Some(3), "{v}");
    assert!(v[0]["catalog_problem"].is_null(), "{v}");
    let problems: Vec<String> = v[0]["problems"].as_array().unwrap().iter().map(|p| p[1].to_string()).collect();
    assert_eq!(problems, ["\"numbers\"", "\"shop\""], "{v}");
    // Both problems, in one digest mail or two.
    let overdue = bodies(&watcher_smtp, "BACKUP_OVERDUE").join("\n");
    assert!(overdue.contains("Node backup1, client host-a: numbers is late"), "{overdue}");
    assert!(overdue.contains("Node backup1, client host-a: shop is declared but never arrived"), "{overdue}");
    let mailed = watcher_smtp.messages().len();

    // The node stops publishing: three hours later its catalog is stale.
    let (_, v) = check_at(watcher(), late_at + SignedDuration::from_hours(3), &["--from", &url]);
    assert!(v[0]["catalog_problem"].as_str().unwrap().contains("is stale: generated 3h 0m ago"), "{v}");
    let stale = bodies(&watcher_smtp, "CATALOG_STALE");
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].contains("the node stopped publishing"), "{stale:?}");
    assert_eq!(watcher_smtp.messages().len(), mailed + 1, "the overdue sources are not mailed again");
    // It publishes again: fresh, mailed once.
    let later = late_at + SignedDuration::from_hours(3);
    ok(node.cmd().env("FERRY_NOW", later.to_string()).args(["publish"]).arg(&pubdir));
    let (_, v) = check_at(watcher(), later, &["--from", &url]);
    assert!(v[0]["catalog_problem"].is_null(), "{v}");
    assert_eq!(bodies(&watcher_smtp, "CATALOG_FRESH").len(), 1);
    // The node's web server is gone: unreachable, mailed.
    http.stop();
    let (code, v) = check_at(watcher(), later, &["--from", &url]);
    assert_eq!(code, Some(3), "{v}");
    assert!(v[0]["catalog_problem"].as_str().unwrap().contains("unreachable or unreadable"), "{v}");
    assert_eq!(bodies(&watcher_smtp, "CATALOG_STALE").len(), 2);

    // A hostile or truncated document: a clear problem, no crash.
    let hostile = td.mkdir("hostile");
    let text_doc = fs::read_to_string(pubdir.join("catalog.json")).unwrap();
    fs::write(hostile.join("catalog.json"), text_doc.replace("\"host-a\"", "\"<script>alert(1)</script>\"")).unwrap();
    let (_h, hurl) = serve(&td, &hostile, "hostile-http");
    let (code, v) = check_at(watcher(), later, &["--from", &hurl]);
    assert_eq!(code, Some(3), "{v}");
    assert!(v[0]["catalog_problem"].as_str().unwrap().contains("client name"), "{v}");
    fs::write(hostile.join("catalog.json"), &text_doc[..text_doc.len() / 2]).unwrap();
    let (_, v) = check_at(watcher(), later, &["--from", &hurl]);
    assert!(v[0]["catalog_problem"].as_str().unwrap().contains("not a Ferry catalog document"), "{v}");
}

/// The deployed nginx site serves the published catalog to the
/// administrators only; the monitoring host authenticates from its netrc
/// file (never a password in the URL, which is refused).
/// A source whose newest artifact is far below the median of the ones
/// before it is *small* (default: under 50% of the median of the last 5),
/// mailed once, and on time again once a normal-sized one arrives.
#[test]
fn a_source_far_below_its_usual_size_is_small() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("fleet_small");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(&td, "backup1", &mail_toml(&smtp, "backup1"));
    let dump = td.join("dump.sql");
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!("[[source]]\nname = \"db\"\nmodule = \"pipe\"\ncommand = [\"cat\", \"{}\"]\n", dump.display()),
    );
    a.gitosis_section.push_str("sources = db:1d\n");
    node.enroll(&[&a]);
    let mut stored = 0;
    let mut backup = |bytes: Vec<u8>| {
        fs::write(&dump, bytes).unwrap();
        ok(a.cmd().args(["backup", "db", "--send"]));
        stored += 1;
        eventually("backup stored", || node.pool_ids("host-a", "F").len() == stored);
    };
    backup(vec![b'a'; 20_000]);
    backup(vec![b'b'; 21_000]);
    backup(vec![b'c'; 19_000]);
    let t = Timestamp::now() + SignedDuration::from_mins(10);
    let (code, v) = check_at(node.cmd(), t, &[]);
    assert_eq!((code, verdicts(&v[0])), (Some(0), vec![("db".into(), "ok".into())]), "{v}");

    // A dump that lost most of its tables: 900 bytes against a median of 20,000.
    backup(vec![b'd'; 900]);
    let (code, v) = check_at(node.cmd(), t, &[]);
    assert_eq!((code, verdicts(&v[0])), (Some(3), vec![("db".into(), "small".into())]), "{v}");
    let overdue = bodies(&smtp, "BACKUP_OVERDUE");
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(
        overdue[0].contains("db is small: newest artifact 900 bytes, median of the previous ones 20000 bytes"),
        "{overdue:?}"
    );
    check_at(node.cmd(), t, &[]);
    assert_eq!(bodies(&smtp, "BACKUP_OVERDUE").len(), 1, "mailed once");

    backup(vec![b'e'; 20_500]);
    let (code, v) = check_at(node.cmd(), t, &[]);
    assert_eq!((code, verdicts(&v[0])), (Some(0), vec![("db".into(), "ok".into())]), "{v}");
    let back = bodies(&smtp, "BACKUP_ON_TIME");
    assert_eq!(back.len(), 1, "{back:?}");
}

#[test]
fn the_catalog_is_served_by_the_deployed_nginx_to_admins_only() {
    if !kit::tools() || !require("nginx") || !require("curl") || !require("chromium") {
        return;
    }
    let td = TestDir::new("fleet_check_nginx");
    let node = Node::start(&td, "backup1");
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"numbers\"\nmodule = \"pipe\"\ncommand = [\"seq\", \"1\", \"1000\"]\n",
    );
    a.gitosis_section.push_str("sources = numbers:1d\n");
    node.enroll(&[&a]);
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    eventually("backup stored", || node.pool_ids("host-a", "F").len() == 1);
    let web = node.start_web(&td.join("web"));
    let admin = node.admin_user();
    let pw = node.web_password(admin);
    let url = format!("{}/catalog.json", web.base_url());

    let wdir = td.mkdir("watcher");
    let wconf = wdir.join("node.toml");
    let netrc = wdir.join("netrc");
    let host = web.addr().to_string();
    let conf = |with_netrc: bool| {
        let extra = if with_netrc { format!("\n[check]\nnetrc = \"{}\"\n", netrc.display()) } else { String::new() };
        fs::write(&wconf, format!("name = \"watcher\"\nbase_dir = \"{}\"\n{extra}", wdir.join("srv").display()))
            .unwrap();
    };
    let watcher = || {
        let mut c = Command::new(ferry_tests::ferry_bin("ferry-node"));
        c.arg("--config").arg(&wconf);
        c
    };
    let now = Timestamp::now();

    // Without credentials: refused by nginx, reported, no crash.
    conf(false);
    let (code, v) = check_at(watcher(), now, &["--from", &url]);
    assert_eq!(code, Some(3), "{v}");
    assert!(v[0]["catalog_problem"].as_str().unwrap().contains("401"), "{v}");
    // A password in the URL is refused before anything is fetched.
    let with_pw = url.replacen("://", &format!("://{admin}:{pw}@"), 1);
    let (_, v) = check_at(watcher(), now, &["--from", &with_pw]);
    let p = v[0]["catalog_problem"].as_str().unwrap();
    assert!(p.contains("credentials in the URL"), "{v}");
    // With the admin's password in the netrc file: read and judged.
    fs::write(&netrc, format!("machine {host} login {admin} password {pw}\n")).unwrap();
    conf(true);
    let (code, v) = check_at(watcher(), now, &["--from", &url]);
    assert_eq!(code, Some(0), "{v}");
    assert!(v[0]["catalog_problem"].is_null(), "{v}");
    assert_eq!(v[0]["node"], "backup1", "{v}");

    // The history page, in a real browser: a day and two hours later the
    // source shows as late, its chart with one point per stored artifact.
    ok(a.cmd().args(["backup", "numbers", "--send"]));
    eventually("second backup stored", || node.pool_ids("host-a", "F").len() == 2);
    // The scan publishes after it finished the request: wait for that, so
    // its publication (as of now) does not replace the one as of `later`.
    let published = node.web_dir().join("catalog/catalog.json");
    eventually("the scan published the second backup", || {
        fs::read(&published)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|d| d["clients"][0]["sources"][0]["artifacts"].as_array().is_some_and(|a| a.len() == 2))
    });
    let later = Timestamp::now() + SignedDuration::from_hours(26);
    ok(node.cmd().env("FERRY_NOW", later.to_string()).arg("publish"));
    let page = format!("http://{}:{pw}@{}:{}/history/", admin.replace('@', "%40"), web.addr(), web.port());
    let dom = ferry_tests::chromium_dump_dom(&page);
    assert!(dom.contains("Backups on node backup1"), "{dom}");
    assert!(dom.contains(r#"<tr class="source late" data-client="host-a" data-source="numbers">"#), "{dom}");
    assert_eq!(dom.matches(r#"<circle class="size""#).count(), 2, "{dom}");
    assert!(dom.contains(r#"class="mark verdict""#) && dom.contains(">LATE</text>"), "{dom}");
    // Nobody else sees it.
    let anon = ferry_tests::chromium_load(&format!("{}/history/", web.base_url()));
    assert!(anon.is_err_and(|e| e.contains("ERR_INVALID_AUTH_CREDENTIALS")), "the page needs the admins' password");
}

/// `verify` covers the git mirrors too: a mirror whose object store was
/// damaged on disk is reported with git fsck's words, an intact one is not,
/// and a git source declared `push` is judged by the mirror's last fetch.
#[test]
fn verify_runs_git_fsck_on_mirrors_and_push_sources_count_fetches() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("fleet_check_fsck");
    let node = Node::start(&td, "backup1");
    let mut a = Client::new(&td, "host-a", &[&node]);
    a.gitosis_section.push_str("sources = project:push\n");
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    ferry_tests::fleet::commit_and_push(&work, "README", "hello\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("the mirror", || {
        mirror.join("HEAD").exists() && ferry_tests::for_each_ref(&mirror) == ferry_tests::for_each_ref(&bare)
    });
    let v = node.ferry_node_json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["checked"], 1, "the mirror is checked: {v}");
    // 400 days later the client is silent, but a push source is never late.
    let (_, c) = check_at(node.cmd(), Timestamp::now() + SignedDuration::from_hours(24 * 400), &[]);
    assert_eq!(c[0]["silent"], true, "{c}");
    assert_eq!(verdicts(&c[0]), [("project".into(), "ok".into())], "{c}");

    // Damage one loose object or pack on disk.
    let objects = mirror.join("objects");
    let victim = walk_files(&objects)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "pack") || p.parent().unwrap().file_name().unwrap().len() == 2)
        .expect("an object file");
    let mut perm = fs::metadata(&victim).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    fs::set_permissions(&victim, perm).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    let out = run(node.cmd().args(["--json", "verify"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["path"], "host-a/git/project.git", "{v}");
    assert!(v["problems"][0]["problem"].as_str().unwrap().starts_with("git fsck failed: "), "{v}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
