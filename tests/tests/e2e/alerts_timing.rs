//! When and how administrators hear about problems, and how they close
//! them: "node unreachable" mailed `alert_after` after the first failure
//! even while the backoff holds every push back, a recovery mail with the
//! outage's real length and failed attempts, subjects that name the client
//! or node (never the machine), the `git gc` report as a mail kind of its
//! own, the node daemon's view of scans it did not start, and failed
//! requests acknowledged on both sides.
//!
//! Time is injected (`FERRY_NOW` for the client), never slept through;
//! mail goes to a real SMTP server (`ferry_tests::Smtp`), which has stored a
//! message before the sender's SMTP session ends, so a mail is either there
//! when the command returns or it was not sent.

use std::fs;
use std::net::Ipv4Addr;
use std::process::Output;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, run, text};
use ferry_tests::{
    Daemon, HttpResponse, Mail, READY_TIMEOUT, Signal, Smtp, TestDir, for_each_ref, free_port, http_get, next_loopback,
    require,
};
use jiff::{SignedDuration, Timestamp};

use crate::hostile::kit::{self, Queue, rq};

/// `[mail]` to the test's SMTP server, mailed at once; `extra` adds keys
/// (e.g. `host_label`).
fn mail_toml(smtp: &Smtp, label: &str, extra: &str) -> String {
    format!(
        "[mail]\nto = [\"Backup Admins <admins@example.test>\"]\nfrom = \"Ferry {label} <ferry-{label}@example.test>\"\nsmtp = \"{}\"\ndigest_delay = \"0s\"\n{extra}\n",
        smtp.url()
    )
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(|m| m.subject.clone()).collect()
}

/// A mail body with its line wrapping undone (words joined by one space).
fn flat(body: &str) -> String {
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start of the injected timeline: three days ago, on a whole minute
/// (in the past, so the notifier never re-dates an alert raised "now").
fn t0() -> Timestamp {
    let t = Timestamp::now() - SignedDuration::from_hours(72);
    Timestamp::from_second(t.as_second() / 60 * 60).unwrap()
}

/// `t0` plus `min` minutes.
fn at(t0: Timestamp, min: i64) -> Timestamp {
    t0 + SignedDuration::from_mins(min)
}

/// How mails write a time.
fn mail_ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `ferry --json send` at the injected time `now`; the one node's report.
fn send_at(a: &Client, now: Timestamp) -> (Output, serde_json::Value) {
    let out = run(a.cmd().env("FERRY_NOW", now.to_string()).args(["--json", "send", "--wait"]));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    (out, v[0].clone())
}

/// `ferry --json status` for `node` (exit 0, or 3 while a node fails).
fn client_status(a: &Client, node: &str) -> serde_json::Value {
    let out = a.ferry(&["--json", "status"]);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v.as_array().unwrap().iter().find(|n| n["node"] == node).cloned().unwrap_or_else(|| panic!("no {node}: {v}"))
}

#[test]
fn unreachable_is_mailed_alert_after_the_first_failure_even_while_the_backoff_holds_pushes_back() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("alerts_unreachable_deferred");
    let smtp = Smtp::start(&td.join("smtp"));
    let mut node = Node::start(&td, "backup1");
    // The first retry comes only two hours after the first failure, one
    // hour after alert_after.
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[send]\nalert_after = \"1h\"\nbackoff_min = \"2h\"\nbackoff_max = \"8h\"\n\n{}",
            mail_toml(&smtp, "host-a", "host_label = \"host-a\"")
        ),
    );
    node.enroll(&[&a]);
    node.sshd.stop();
    ok(a.cmd().args(["request", "dummy", "waiting"]));
    let t0 = t0();

    let (out, r) = send_at(&a, t0);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(r["push_error"].is_string(), "{r}");
    let st = client_status(&a, "backup1");
    assert_eq!(st["failing_since"], t0.to_string(), "{st}");
    assert_eq!(st["failures"], 1, "{st}");
    assert_eq!(st["next_attempt"], at(t0, 120).to_string(), "{st}");

    // Within alert_after: held back by the backoff, no mail.
    let (out, r) = send_at(&a, at(t0, 59));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(r["deferred_until"], at(t0, 120).to_string(), "{r}");
    assert!(smtp.messages().is_empty(), "{:?}", subjects(&smtp.messages()));

    // alert_after has passed; the backoff still holds the push back (no
    // attempt), and the mail goes out now, not at the next attempt.
    let (out, r) = send_at(&a, at(t0, 61));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(r["push_error"].is_null() && r["deferred_until"].is_string(), "no push was attempted: {r}");
    let mails = smtp.messages();
    assert_eq!(subjects(&mails), ["[ferry host-a] NODE_UNREACHABLE: backup1"]);
    let body = flat(&mails[0].body);
    assert!(body.contains(&format!("Failing since: {t0} (1h01m ago)")), "{body}");
    assert!(body.contains(&format!("Failed attempts: 1, the last at {}", mail_ts(t0))), "{body}");
    assert!(body.contains("Requests waiting for this node: 1"), "{body}");
    assert!(body.contains(&format!("Next attempt: {}", at(t0, 120))), "{body}");
    assert!(body.contains(&format!("[node:backup1] raised {}", mail_ts(t0))), "dated at the first failure: {body}");
    assert_eq!(client_status(&a, "backup1")["failures"], 1, "still no second attempt");

    // Later runs within the outage add no mail.
    for min in [75, 119] {
        let (out, _) = send_at(&a, at(t0, min));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    assert_eq!(smtp.messages().len(), 1, "{:?}", subjects(&smtp.messages()));
}

#[test]
fn recovery_mail_has_the_failed_attempts_and_the_outage_length_from_the_record() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("alerts_recovery_numbers");
    let smtp = Smtp::start(&td.join("smtp"));
    let mut node = Node::start(&td, "backup1");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[send]\nalert_after = \"1h\"\nbackoff_min = \"30m\"\nbackoff_max = \"30m\"\n\n{}",
            mail_toml(&smtp, "host-a", "host_label = \"host-a\"")
        ),
    );
    node.enroll(&[&a]);
    node.sshd.stop();
    ok(a.cmd().args(["request", "dummy", "late"]));
    let t0 = t0();

    // Four failed attempts, 30 minutes apart; the third is alert_after old.
    for (n, min) in [0, 30, 60, 90].into_iter().enumerate() {
        let (out, r) = send_at(&a, at(t0, min));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(r["push_error"].is_string(), "attempt {}: {r}", n + 1);
        assert_eq!(client_status(&a, "backup1")["failures"], n + 1);
    }
    assert_eq!(subjects(&smtp.messages()), ["[ferry host-a] NODE_UNREACHABLE: backup1"]);
    assert!(flat(&smtp.messages()[0].body).contains("Failed attempts: 3"), "{}", smtp.messages()[0].body);

    // Back at t0 + 2h05m: delivered, and the recovery says what the record
    // holds: four failed attempts, unreachable for 2h05m.
    node.sshd.restart();
    let (out, r) = send_at(&a, at(t0, 125));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(r["delivered"].as_array().unwrap().len(), 1, "{r}");
    let mails = smtp.messages();
    assert_eq!(
        subjects(&mails),
        ["[ferry host-a] NODE_UNREACHABLE: backup1", "[ferry host-a] NODE_RECOVERED: backup1"]
    );
    let body = flat(&mails[1].body);
    assert!(
        body.contains(&format!("Unreachable for 2h05m (failing since {t0}, delivered again at {}).", at(t0, 125))),
        "{body}"
    );
    assert!(body.contains(&format!("4 failed delivery attempts, the last at {}.", mail_ts(at(t0, 90)))), "{body}");
    assert!(body.contains(&format!("Ends NODE_UNREACHABLE raised {}", mail_ts(t0))), "{body}");
    assert!(body.contains("it lasted 2h05m."), "{body}");
    let st = client_status(&a, "backup1");
    assert!(st["failing_since"].is_null() && st["failures"] == 0, "{st}");
    assert_eq!(st["last_success"], at(t0, 125).to_string(), "{st}");
}

/// The machine's host name, as gethostname(2) gives it.
fn machine_hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// A client script module that always fails, with a reason on stderr.
const FAILING: &str = "#!/bin/sh\necho \"pg_dump: connection to the database refused ($2)\" >&2\nexit 1\n";

#[test]
fn subjects_name_the_client_and_the_node_never_the_machine() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let host = machine_hostname();
    assert!(host != "host-a" && host != "backup1", "the test needs names other than the host name {host:?}");
    let td = TestDir::new("alerts_subject_names");
    let smtp = Smtp::start(&td.join("smtp"));
    // Neither side sets host_label.
    let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{}", mail_toml(&smtp, "backup1", "")));
    let a = kit::script_client(&td, &node, "host-a", &[("failing", FAILING)], &mail_toml(&smtp, "host-a", ""));
    node.enroll(&[&a]);

    // The client: a module fails, REQUEST_FAILED under the client's name.
    ok(a.cmd().args(["request", "failing", "shop"]));
    let out = a.ferry(&["send", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mails = smtp.messages();
    assert_eq!(subjects(&mails), ["[ferry host-a] REQUEST_FAILED: host-a"], "not [ferry {host}]");
    assert!(mails[0].body.starts_with("Ferry on host-a: 1 alert,"), "{}", mails[0].body);

    // The node: a request it refuses, REQUEST_FAILED under the node's name.
    let q = Queue::clone(&node, "host-a", &td);
    q.send(&[rq("20260101T000000Z-refused01-1", "dummy two  spaces\n")]);
    let out = run(node.cmd().arg("scan"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let mails = smtp.messages();
    assert_eq!(
        subjects(&mails),
        ["[ferry host-a] REQUEST_FAILED: host-a", "[ferry backup1] REQUEST_FAILED: host-a"],
        "not [ferry {host}]"
    );
    assert!(mails[1].body.starts_with("Ferry on backup1: 1 alert,"), "{}", mails[1].body);
    for m in &mails {
        assert!(!m.subject.contains(&host), "{}", m.subject);
    }
}

#[test]
fn gc_report_is_a_mail_of_its_own_kind_and_not_a_warning() {
    if !kit::tools() || !require("smtp") {
        return;
    }
    let td = TestDir::new("alerts_gc_report");
    let smtp = Smtp::start(&td.join("smtp"));
    let node = Node::start_with(&td, "backup1", &mail_toml(&smtp, "backup1", "host_label = \"backup1\""));
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    commit_and_push(&work, "README", "hello\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("the mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));
    eventually("the request finished", || node.pool_ids("host-a", "F").len() == 1);
    assert!(smtp.messages().is_empty(), "{:?}", subjects(&smtp.messages()));

    // A real gc at the default log level: the report is no warning.
    let out = run(node.cmd().arg("gc"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARN") && !stderr.contains("alert"), "the report is logged as a warning: {stderr}");
    let mails = smtp.messages();
    assert_eq!(subjects(&mails), ["[ferry backup1] GC_REPORT: backup1"]);
    let body = flat(&mails[0].body);
    assert!(body.starts_with("Ferry on backup1: 1 report,"), "{body}");
    assert!(body.contains("== GC_REPORT (1): git gc report =="), "{body}");
    assert!(body.contains("git gc on node backup1: 1 mirrors, 0 failed, in "), "{body}");
    assert!(body.contains("host-a/git/project.git"), "{body}");
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare), "gc kept every ref");
    let gc_events: Vec<String> =
        node.events().lines().filter(|l| l.contains("\"event\":\"gc\"")).map(String::from).collect();
    assert_eq!(gc_events.len(), 1, "{gc_events:?}");
    assert!(gc_events[0].contains("\"level\":\"info\""), "{}", gc_events[0]);
}

/// A `[daemon]` section on a free loopback port with every job off:
/// whatever scans on this node, it is not the daemon.
fn idle_daemon(addr: Ipv4Addr, port: u16) -> String {
    format!(
        "\n[daemon]\nlisten = \"{addr}:{port}\"\nscan_every = \"off\"\ncheck_every = \"off\"\npurge_every = \"off\"\n\
         verify_every = \"off\"\ngc_every = \"off\"\n"
    )
}

fn start_daemon(node: &Node, td: &TestDir, addr: Ipv4Addr, port: u16) -> Daemon {
    let mut cmd = node.cmd();
    cmd.args(["-v", "daemon"]);
    let mut d = Daemon::spawn(
        "ferry-node daemon",
        cmd,
        &td.join("daemon.log"),
        Signal::TERM,
        std::time::Duration::from_secs(60),
    );
    d.wait_for_tcp(addr, port, READY_TIMEOUT);
    d
}

fn get(addr: Ipv4Addr, port: u16, path: &str) -> HttpResponse {
    let r = http_get(&format!("http://{addr}:{port}{path}"));
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r
}

fn daemon_status(addr: Ipv4Addr, port: u16) -> serde_json::Value {
    let r = get(addr, port, "/status");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", r.text()))
}

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(addr: Ipv4Addr, port: u16, name_and_labels: &str) -> Option<f64> {
    let m = get(addr, port, "/metrics").text();
    m.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn daemon_status_and_metrics_show_the_scans_pushes_start() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("alerts_daemon_push_scans");
    let addr = next_loopback();
    let port = free_port(addr);
    // The queue hook scans after each push (scan_on_push, the default);
    // the daemon runs no job at all.
    let node = Node::start_with(&td, "backup1", &idle_daemon(addr, port));
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let _d = start_daemon(&node, &td, addr, port);
    let before = daemon_status(addr, port)["scans"]["runs"]
        .as_u64()
        .unwrap_or_else(|| panic!("/status says nothing of scans: {}", daemon_status(addr, port)));

    ok(a.cmd().args(["request", "dummy", "pushed", "--send"]));
    eventually("the push's scan to finish the request", || node.pool_ids("host-a", "F").len() == 1);
    eventually("/status to show the scan the push started", || {
        let st = daemon_status(addr, port);
        st["scans"]["runs"].as_u64() > Some(before) && st["clients"][0]["finished"] == 1
    });
    let st = daemon_status(addr, port);
    let scans = &st["scans"];
    assert_eq!(scans["last_result"], "ok", "{st}");
    assert_eq!(scans["last_client"], "host-a", "the hook scans one client: {st}");
    assert!(scans["requests_finished"].as_u64() >= Some(1), "{st}");
    assert!(scans["last_end"].is_string() && scans["last_duration_ms"].is_u64(), "{st}");
    assert_eq!(st["jobs"]["scan"]["runs"], 0, "the daemon started no scan: {st}");
    assert_eq!(st["clients"][0]["pending"], 0, "{st}");

    eventually("/metrics to show it", || sample(addr, port, "ferry_scans_total").is_some_and(|n| n > before as f64));
    assert!(sample(addr, port, "ferry_scan_requests_finished_total").is_some_and(|n| n >= 1.0));
    assert!(sample(addr, port, "ferry_scan_last_end_timestamp_seconds").is_some_and(|t| t > 1e9));
    assert!(sample(addr, port, "ferry_scan_last_duration_seconds").is_some());
    assert_eq!(sample(addr, port, "ferry_scan_errors_total"), Some(0.0));
    assert_eq!(sample(addr, port, "ferry_job_runs_total{job=\"scan\"}"), Some(0.0));
    assert_eq!(sample(addr, port, "ferry_client_pending_requests{client=\"host-a\"}"), Some(0.0));
}

#[test]
fn client_failed_requests_are_listed_then_acknowledged_and_kept_with_their_reason() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("alerts_client_ack");
    let node = Node::start(&td, "backup1");
    let a = kit::script_client(&td, &node, "host-a", &[("failing", FAILING)], "");
    node.enroll(&[&a]);
    ok(a.cmd().args(["request", "failing", "db1"]));
    ok(a.cmd().args(["request", "failing", "db2"]));
    let out = a.ferry(&["send", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = a.pool_ids("backup1", "E");
    assert_eq!(failed.len(), 2, "{}", text(&out));
    let (id1, id2) = (failed[0].clone(), failed[1].clone());
    let pool = a.base.join("state/pools/backup1");
    let why1 = fs::read(pool.join(format!("E{id1}.why"))).unwrap();

    // Status lists each with its reason and says how to acknowledge.
    let human = a.ferry_ok(&["status"]);
    assert!(human.contains("failed: 2, acknowledged: 0"), "{human}");
    // Ids made within one second do not sort in request order: pair each
    // id with its database through its recorded reason.
    for id in [&id1, &id2] {
        let why = fs::read_to_string(pool.join(format!("E{id}.why"))).unwrap();
        let db = if why.contains("(db1)") { "db1" } else { "db2" };
        let line =
            human.lines().find(|l| l.contains(id.as_str())).unwrap_or_else(|| panic!("{id} not listed: {human}"));
        assert!(line.contains(&format!("connection to the database refused ({db})")), "{line}");
    }
    let reasons: Vec<String> =
        [&id1, &id2].iter().map(|id| fs::read_to_string(pool.join(format!("E{id}.why"))).unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("(db1)")) && reasons.iter().any(|r| r.contains("(db2)")), "{reasons:?}");
    assert!(human.contains("ferry ack --node backup1 ID... (or: ferry ack --node backup1 --all)"), "{human}");
    let st = client_status(&a, "backup1");
    assert_eq!(st["failed"], 2, "{st}");
    let listed: Vec<&str> =
        st["failed_requests"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [id2.as_str(), id1.as_str()], "newest first: {st}");

    // Ids that are no failed request change nothing.
    let before = ferry_tests::hash_tree(&pool);
    for bad in
        [&["ack", "20260101T000000Z-00000000"][..], &["ack", "../E1"], &["ack"], &["ack", "--node", "nope", "--all"]]
    {
        let out = a.ferry(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    let out = a.ferry(&["ack", &id1, "20260101T000000Z-00000000"]);
    assert_eq!(out.status.code(), Some(2), "one unknown id: nothing moves: {}", text(&out));
    assert_eq!(ferry_tests::hash_tree(&pool), before, "nothing changed");

    // One acknowledged: kept, with its reason, and no longer reported.
    let out = a.ferry_ok(&["ack", &id1]);
    assert_eq!(out.trim(), format!("acknowledged {id1} (node backup1)"));
    assert_eq!(a.pool_ids("backup1", "E"), [id2.as_str()]);
    assert_eq!(a.pool_ids("backup1", "A"), [id1.as_str()]);
    assert_eq!(fs::read(pool.join(format!("A{id1}.why"))).unwrap(), why1, "the reason is kept");
    assert!(!pool.join(format!("E{id1}.why")).exists());
    let human = a.ferry_ok(&["status"]);
    assert!(human.contains("failed: 1, acknowledged: 1") && !human.contains(&id1), "{human}");
    assert_eq!(a.ferry_ok(&["ack", &id1]).trim(), format!("already acknowledged {id1} (node backup1)"));

    // The rest at once.
    assert_eq!(a.ferry_ok(&["ack", "--all"]).trim(), format!("acknowledged {id2} (node backup1)"));
    let human = a.ferry_ok(&["status"]);
    assert!(human.contains("failed: 0, acknowledged: 2"), "{human}");
    assert!(!human.contains("ferry ack"), "nothing left to acknowledge: {human}");
    let st = client_status(&a, "backup1");
    assert!(st["failed"] == 0 && st["acknowledged"] == 2 && st["failed_requests"] == serde_json::json!([]), "{st}");
    assert_eq!(a.pool_ids("backup1", "A"), [id1, id2]);
}

#[test]
fn node_failed_requests_are_acknowledged_out_of_list_status_and_metrics() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("alerts_node_ack");
    let addr = next_loopback();
    let port = free_port(addr);
    let node = Node::start_with(&td, "backup1", &format!("scan_on_push = false\n{}", idle_daemon(addr, port)));
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let q = Queue::clone(&node, "host-a", &td);
    let id = "20260101T000000Z-refused01-1";
    q.send(&[rq(id, "dummy two  spaces\n")]);
    let out = run(node.cmd().arg("scan"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(node.pool_ids("host-a", "E"), [id]);
    let why = fs::read(node.pool("host-a").join(format!("E{id}.why"))).unwrap();

    let l = node.ferry_node_json(&["list", "host-a"]);
    assert_eq!((l[0]["failed"].as_u64(), l[0]["acknowledged"].as_u64()), (Some(1), Some(0)), "{l}");
    assert_eq!(l[0]["failed_requests"][0]["id"], id, "{l}");
    assert!(l[0]["failed_requests"][0]["reason"].as_str().unwrap().starts_with("E_REQ_"), "{l}");
    let human = ok(node.cmd().args(["list", "host-a"]));
    assert!(human.contains(&format!("E {id} E_REQ_")), "{human}");
    assert!(human.contains("ferry-node ack host-a ID... (or: ferry-node ack host-a --all)"), "{human}");

    let _d = start_daemon(&node, &td, addr, port);
    eventually("/status to count the failed request", || daemon_status(addr, port)["clients"][0]["failed"] == 1);
    assert_eq!(sample(addr, port, "ferry_client_failed_requests{client=\"host-a\"}"), Some(1.0));

    // Unknown clients and ids change nothing.
    let before = ferry_tests::hash_tree(node.pool("host-a"));
    for bad in [
        &["ack", "host-a", "20260101T000000Z-nothere-1"][..],
        &["ack", "host-b", id],
        &["ack", "../host-a", "--all"],
        &["ack", "host-a"],
    ] {
        let out = run(node.cmd().args(bad));
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    assert_eq!(ferry_tests::hash_tree(node.pool("host-a")), before, "nothing changed");

    let out = ok(node.cmd().args(["ack", "host-a", id]));
    assert_eq!(out.trim(), format!("acknowledged {id} (host-a)"));
    assert!(node.pool_ids("host-a", "E").is_empty());
    assert_eq!(node.pool_ids("host-a", "A"), [id]);
    assert_eq!(fs::read(node.pool("host-a").join(format!("A{id}.why"))).unwrap(), why, "the reason is kept");
    assert!(node.events().lines().any(|l| l.contains("\"event\":\"request_acknowledged\"") && l.contains(id)));
    eventually("/status to drop it", || {
        let c = &daemon_status(addr, port)["clients"][0];
        c["failed"] == 0 && c["acknowledged"] == 1
    });
    assert_eq!(sample(addr, port, "ferry_client_failed_requests{client=\"host-a\"}"), Some(0.0));
    assert_eq!(sample(addr, port, "ferry_client_acknowledged_requests{client=\"host-a\"}"), Some(1.0));
    let l = node.ferry_node_json(&["list", "host-a"]);
    assert_eq!((l[0]["failed"].as_u64(), l[0]["acknowledged"].as_u64()), (Some(0), Some(1)), "{l}");
    assert!(!ok(node.cmd().args(["list", "host-a"])).contains("ferry-node ack"));

    // The acknowledged id is still known: pushed again, it is not received
    // (and run) a second time.
    q.send(&[rq(id, "dummy two  spaces\n")]);
    let out = run(node.cmd().arg("scan"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(node.pool_ids("host-a", "RQ").is_empty() && node.pool_ids("host-a", "E").is_empty());
    assert_eq!(node.pool_ids("host-a", "A"), [id]);
}
