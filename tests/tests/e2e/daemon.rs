//! `ferry-node daemon`: schedules run in-process (as child jobs), status and
//! metrics over HTTP, SIGHUP reload, SIGUSR1 run-now, SIGTERM stop, and
//! overlap with scans started by hand.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_tests::fleet::{Client, Node, eventually, ok, run, text};
use ferry_tests::{
    Daemon, HttpResponse, READY_TIMEOUT, Signal, TestDir, ferry_bin, free_port, http_get, next_loopback, require_all,
};

fn tools() -> bool {
    require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen"])
}

/// A `[daemon]` section on a free loopback port.
fn section(addr: Ipv4Addr, port: u16, scan_every: &str, check_every: &str) -> String {
    format!(
        "\n[daemon]\nlisten = \"{addr}:{port}\"\nscan_every = \"{scan_every}\"\ncheck_every = \"{check_every}\"\n\
         purge_every = \"1h\"\nverify_every = \"off\"\ngc_every = \"0\"\nstop_grace = \"30s\"\n"
    )
}

/// A node whose daemon scans every second (the queue hook starts none),
/// with client `host-a` enrolled.
fn scanning_fleet(td: &TestDir) -> (Node, Client, Ipv4Addr, u16, Daemon) {
    let addr = next_loopback();
    let port = free_port(addr);
    let node = Node::start_with(td, "backup1", &format!("scan_on_push = false\n{}", section(addr, port, "1s", "1h")));
    let a = Client::new(td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let d = start(&node, td, addr, port);
    (node, a, addr, port, d)
}

fn start(node: &Node, td: &TestDir, addr: Ipv4Addr, port: u16) -> Daemon {
    let mut cmd = node.cmd();
    cmd.args(["-v", "daemon"]);
    let mut d = Daemon::spawn("ferry-node daemon", cmd, &td.join("daemon.log"), Signal::TERM, Duration::from_secs(60));
    d.wait_for_tcp(addr, port, READY_TIMEOUT);
    d
}

fn get(addr: Ipv4Addr, port: u16, path: &str) -> HttpResponse {
    http_get(&format!("http://{addr}:{port}{path}"))
}

fn status(addr: Ipv4Addr, port: u16) -> serde_json::Value {
    let r = get(addr, port, "/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", r.text()))
}

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics(addr: Ipv4Addr, port: u16) -> String {
    let r = get(addr, port, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert!(t.ends_with("# EOF\n"), "{t}");
    t
}

fn signal(d: &Daemon, sig: Signal) {
    let pid = rustix::process::Pid::from_raw(d.pid().expect("daemon running") as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn runs(st: &serde_json::Value, job: &str) -> u64 {
    st["jobs"][job]["runs"].as_u64().unwrap_or_else(|| panic!("no runs for {job}: {st}"))
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn daemon_scans_serves_status_and_metrics_and_stops_on_sigterm() {
    if !tools() {
        return;
    }
    let td = TestDir::new("daemon_serve");
    let (node, a, addr, port, mut d) = scanning_fleet(&td);

    // A request pushed without any scan by hand reaches F: the daemon scans.
    ok(a.cmd().args(["request", "dummy", "hello"]));
    ok(a.cmd().arg("send"));
    eventually("the daemon's scan to finish the request", || {
        node.pool_ids("host-a", "F").len() == 1 && node.pool_ids("host-a", "RQ").is_empty()
    });
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());

    let h = get(addr, port, "/healthz");
    assert_eq!((h.status, h.text().trim()), (200, "ok"));

    // Client facts are refreshed after the scans that follow (a snapshot
    // taken before the request arrived also shows nothing pending).
    eventually("the finished request in /status", || status(addr, port)["clients"][0]["finished"] == 1);
    eventually("the client's facts in /metrics", || {
        let m = metrics(addr, port);
        sample(&m, "ferry_job_runs_total{job=\"scan\"}").is_some_and(|n| n > 0.0)
            && sample(&m, "ferry_client_pending_requests{client=\"host-a\"}") == Some(0.0)
    });
    let m = metrics(addr, port);
    assert_eq!(sample(&m, "ferry_job_failures_total{job=\"scan\"}"), Some(0.0), "{m}");
    assert_eq!(sample(&m, "ferry_job_runs_total{job=\"check\"}"), Some(0.0), "{m}");
    assert!(sample(&m, "ferry_job_last_success_timestamp_seconds{job=\"scan\"}").is_some_and(|t| t > 1e9), "{m}");
    for name in ["ferry_client_stored_bytes", "ferry_client_artifacts", "ferry_client_failed_requests"] {
        assert_eq!(sample(&m, &format!("{name}{{client=\"host-a\"}}")), Some(0.0), "{name}: {m}");
    }

    let st = status(addr, port);
    assert_eq!(st["node"], "backup1", "{st}");
    assert!(st["started"].is_string(), "{st}");
    let scan = &st["jobs"]["scan"];
    assert!(runs(&st, "scan") >= 1 && scan["failures"] == 0, "{st}");
    assert_eq!(scan["last_exit"], 0, "{st}");
    assert!(scan["last_start"].is_string() && scan["last_end"].is_string(), "{st}");
    assert!(scan["last_duration_ms"].is_u64(), "{st}");
    assert_eq!(scan["every"], "1s", "{st}");
    assert_eq!(st["jobs"]["check"]["every_seconds"], 3600, "{st}");
    assert_eq!(runs(&st, "check"), 0, "check first runs one interval after startup: {st}");
    assert!(st["jobs"]["verify"]["every"].is_null() && st["jobs"]["gc"]["every"].is_null(), "{st}");
    let c = &st["clients"][0];
    assert_eq!(c["client"], "host-a", "{st}");
    assert_eq!(c["enrolled"], true, "{st}");
    assert_eq!(c["pending"], 0, "{st}");
    assert_eq!(c["finished"], 1, "{st}");
    assert!(c["last_request"].is_string(), "{st}");

    assert_eq!(get(addr, port, "/nope").status, 404);
    let mut s = TcpStream::connect((addr, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"POST /status HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.") && raw.split_whitespace().nth(1) == Some("405"), "{raw}");

    // SIGTERM: exit 0, the port is closed.
    let code = d.stop().expect("exit status");
    assert!(code.success(), "{code}: {}", d.output());
    assert!(TcpStream::connect((addr, port)).is_err(), "the port is still open");
    assert!(node.events().contains("\"daemon_stopped\""), "{}", node.events());
}

#[test]
fn daemon_reloads_on_sighup_keeps_its_config_when_broken_and_runs_now_on_sigusr1() {
    if !tools() {
        return;
    }
    let td = TestDir::new("daemon_signals");
    let (addr, port) = {
        let a = next_loopback();
        (a, free_port(a))
    };
    let node = Node::start_with(&td, "backup1", &section(addr, port, "1h", "1h"));
    let mut d = start(&node, &td, addr, port);
    eventually("the startup scan", || runs(&status(addr, port), "scan") == 1);

    // SIGHUP picks up a new interval.
    let good = fs::read_to_string(&node.config).unwrap();
    let changed = good.replace("check_every = \"1h\"", "check_every = \"2h\"");
    assert_ne!(changed, good);
    fs::write(&node.config, &changed).unwrap();
    signal(&d, Signal::HUP);
    eventually("the new interval in /status", || {
        let st = status(addr, port);
        st["jobs"]["check"]["every_seconds"] == 7200 && st["reloads"] == 1
    });

    // A broken configuration is refused; the daemon keeps running on the
    // previous one and still answers.
    fs::write(&node.config, format!("{changed}\nscan_evry = = \"1s\"\n")).unwrap();
    signal(&d, Signal::HUP);
    eventually("the refused reload in /status", || status(addr, port)["reload_failures"] == 1);
    let st = status(addr, port);
    assert!(st["last_reload_error"].as_str().is_some_and(|e| !e.is_empty()), "{st}");
    assert_eq!(st["jobs"]["check"]["every_seconds"], 7200, "{st}");
    assert_eq!(st["reloads"], 1, "{st}");
    assert!(d.is_running());
    assert_eq!(get(addr, port, "/healthz").status, 200);
    assert_eq!(sample(&metrics(addr, port), "ferry_daemon_reload_failures_total"), Some(1.0));
    // The jobs read the file themselves: put the good one back.
    fs::write(&node.config, &changed).unwrap();

    // SIGUSR1: scan and check run now.
    assert_eq!(runs(&status(addr, port), "check"), 0);
    signal(&d, Signal::USR1);
    eventually("check and scan to run on SIGUSR1", || {
        let st = status(addr, port);
        runs(&st, "check") == 1 && runs(&st, "scan") == 2
    });
    let st = status(addr, port);
    assert_eq!(st["jobs"]["check"]["last_exit"], 0, "{st}");
    assert_eq!(st["jobs"]["check"]["failures"], 0, "{st}");
    assert_eq!(sample(&metrics(addr, port), "ferry_job_runs_total{job=\"check\"}"), Some(1.0));

    let code = d.stop().expect("exit status");
    assert!(code.success(), "{code}: {}", d.output());
}

#[test]
fn daemon_and_hand_started_scans_overlap_and_every_request_ends_in_f_once() {
    if !tools() {
        return;
    }
    let td = TestDir::new("daemon_overlap");
    let (node, a, addr, port, mut d) = scanning_fleet(&td);

    let stop = AtomicBool::new(false);
    let mut total = 0;
    let hand_scans = std::thread::scope(|s| {
        let scanner = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = run(Command::new(ferry_bin("ferry-node")).arg("--config").arg(&node.config).arg("scan"));
                assert!(out.status.success(), "hand scan: {}", text(&out));
                n += 1;
            }
            n
        });
        // Stops the hand scans however this closure ends (the scope waits
        // for them before a panic here propagates).
        let _stop = StopOnDrop(&stop);
        for round in 0..4 {
            for i in 0..6 {
                ok(a.cmd().args(["request", "dummy", &format!("r{round}w{i}")]));
                total += 1;
            }
            ok(a.cmd().arg("send"));
        }
        eventually("every request to end in F on the node", || node.pool_ids("host-a", "F").len() >= total);
        drop(_stop);
        scanner.join().unwrap()
    });
    assert!(hand_scans > 0);

    assert_eq!(node.pool_ids("host-a", "F").len(), total);
    assert!(node.pool_ids("host-a", "E").is_empty(), "{}", node.events());
    assert!(node.pool_ids("host-a", "RQ").is_empty() && node.pool_ids("host-a", "P").is_empty());
    let done = node.request_done_counts();
    assert_eq!(done.len(), total, "{done:?}");
    let twice: Vec<_> = done.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert!(!node.events().contains("\"scan_failed\""), "{}", node.events());
    let st = status(addr, port);
    assert!(runs(&st, "scan") >= 1 && st["jobs"]["scan"]["failures"] == 0, "{st}");

    let code = d.stop().expect("exit status");
    assert!(code.success(), "{code}: {}", d.output());
}
