//! Benchmarks of the spine (run by `bench/spine.sh`, release build). Prints
//! figures; asserts nothing about time.
//!
//! * `latency [N]` — from `git push` into a client repository to the node's
//!   mirror holding the new commit, N rounds (default 20) on loopback;
//! * `scan [CLIENTS] [PER_CLIENT]` — `ferry-node scan` throughput and peak
//!   memory with CLIENTS enrolled clients holding PER_CLIENT pending `dummy`
//!   requests each (default 1000 × 10);
//! * `fetch [COMMITS] [ROUNDS]` — the node's incremental fetch of one new
//!   commit into a COMMITS-commit mirror (default 50,000), against
//!   `git fetch` run by hand with the same ssh options, interleaved; and,
//!   by hand, what checking the ref advertisement costs: a `git ls-remote`
//!   first (a second round trip) or the fetch through the node's
//!   `ferry-node git-ssh-guard` relay (what the node does over ssh).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Client, Node, commit_and_push, ok, run, text};
use ferry_tests::{TestDir, for_each_ref, git, git_cmd};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(rounds: usize) {
    let td = TestDir::new("bench_latency");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (_bare, work) = a.repo("project");
    let mirror = node.data("host-a").join("git/project.git");
    let head_of = |m: &Path| -> Option<String> {
        let out = run(git_cmd(m.parent().unwrap().parent().unwrap().parent().unwrap())
            .arg(format!("--git-dir={}", m.display()))
            .args(["rev-parse", "--verify", "-q", "refs/heads/master"]));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // Warm-up round (first mirror, ssh masters).
    let c = commit_and_push(&work, "f", "warm-up\n");
    wait_for(|| head_of(&mirror).as_deref() == Some(c.as_str()));
    let mut times = Vec::new();
    for i in 0..rounds {
        fs::write(work.join("f"), format!("round {i}\n")).unwrap();
        git(&work, &["commit", "--quiet", "-am", &format!("round {i}")]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        let t = Instant::now();
        ok(git_cmd(&work).args(["push", "--quiet", "origin", "HEAD:master"]));
        wait_for(|| head_of(&mirror).as_deref() == Some(commit.as_str()));
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "latency push->mirror over {rounds} rounds: median {:.3} s, p90 {:.3} s, min {:.3} s, max {:.3} s (target: median < 2 s)",
        median(times.clone()),
        pct(times.clone(), 0.9),
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
}

fn wait_for(mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(120), "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn scan(clients: usize, per_client: usize) {
    let td = TestDir::new("bench_scan");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false\n[limits]\npending_per_client = 100000");
    let keys = td.mkdir("keys");
    println!("enrolling {clients} clients through one gitosis-admin push ...");
    let t = Instant::now();
    let out = node.admin_push("enroll many", |dir| {
        let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        for i in 0..clients {
            let name = format!("c{i:05}");
            let key = ferry_tests::ssh_keygen(&keys.join(&name), &name);
            fs::write(dir.join(format!("keydir/{name}.pub")), format!("{key}\n")).unwrap();
            conf.push_str(&format!(
                "\n[ferry client {name}]\naddress = 127.0.0.1\nuser = ferry\nhostkey = {}\nexport = /var/lib/ferry/export\n",
                node.sshd.host_key_pub()
            ));
        }
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    println!(
        "  enrollment of {clients} clients took {:.1} s (keys generated, queue repos created)",
        t.elapsed().as_secs_f64()
    );
    // Pending requests, exactly as the queue hook leaves them in the pools.
    for i in 0..clients {
        let pool = node.pool(&format!("c{i:05}"));
        for j in 0..per_client {
            fs::write(pool.join(format!("RQ20261122T0000{:02}Z-{i:08x}-{j}", j % 60)), format!("dummy w{j}\n"))
                .unwrap();
        }
    }
    Command::new("sync").status().unwrap();
    let total = clients * per_client;
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(ferry_tests::ferry_bin("ferry-node")).arg("--config").arg(&node.config).arg("scan");
    let t = Instant::now();
    let out = run(&mut cmd);
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rss_kb: u64 = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let finished: usize = (0..clients).map(|i| node.pool_ids(&format!("c{i:05}"), "F").len()).sum();
    assert_eq!(finished, total, "every request finished");
    println!(
        "scan: {total} requests of {clients} clients in {secs:.2} s = {:.0} requests/s, peak RSS {:.1} MB (targets: >= 5000/s, < 50 MB)",
        total as f64 / secs,
        rss_kb as f64 / 1024.0
    );
}

fn fetch(commits: usize, rounds: usize) {
    let td = TestDir::new("bench_fetch");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let bare = a.git_root.join("big.git");
    git(&a.base, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
    println!("building a {commits}-commit repository with git fast-import ...");
    let mut stream = String::new();
    for i in 0..commits {
        let data = format!("line {i}\n");
        let msg = format!("commit {i}");
        stream.push_str(&format!(
            "commit refs/heads/master\ncommitter Bench <b@example.invalid> {} +0000\ndata {}\n{msg}\nM 644 inline f{}\ndata {}\n{data}\n",
            1_700_000_000 + i,
            msg.len(),
            i % 100,
            data.len()
        ));
    }
    let mut child = git_cmd(&bare)
        .arg(format!("--git-dir={}", bare.display()))
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stream.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    ok(git_cmd(&bare).arg(format!("--git-dir={}", bare.display())).args(["gc", "--quiet"]));
    let work = a.base.join("work-big");
    git(&a.base, &["clone", "--quiet", bare.to_str().unwrap(), work.to_str().unwrap()]);

    // Initial mirror through Ferry.
    ok(a.cmd().args(["request", "git", bare.to_str().unwrap()]));
    ok(a.cmd().args(["send", "--wait"]));
    ok(node.cmd().args(["scan"]));
    let mirror = node.data("host-a").join("git/big.git");
    assert_eq!(for_each_ref(&mirror), for_each_ref(&bare));
    // The hand-run reference: a copy of the mirror fetched with plain
    // `git fetch` over the node's own ssh command (same key, pinned host
    // key, same connection reuse).
    let by_hand = td.join("by-hand.git");
    ok(Command::new("cp").arg("-a").arg(&mirror).arg(&by_hand));
    // The same, through the relay the node puts around ssh to check the
    // ref advertisement (`ferry-node git-ssh-guard`), into its own copy.
    let guarded = td.join("guarded.git");
    ok(Command::new("cp").arg("-a").arg(&mirror).arg(&guarded));
    let enrolled = ok(node.cmd().args(["pull-ssh", "host-a"])).trim().to_owned();
    let guard_ssh = format!(
        "'{}' git-ssh-guard --max-refs 10000 --record '{}' -- {enrolled}",
        ferry_tests::ferry_bin("ferry-node").display(),
        td.join("guard-record").display()
    );
    let url = format!("ssh://{}@{}:{}{}", a.sshd.user(), a.sshd.addr(), a.sshd.port(), bare.display());

    let (mut ferry_t, mut hand_t, mut module_t, mut ls_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut module_ls_t, mut guard_t) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        commit_and_push_quiet(&work, i);
        // Ferry: one request in the pool, one scan (process start, parse,
        // validate, fetch, ref transaction).
        ok(a.cmd().args(["request", "git", bare.to_str().unwrap()]));
        ok(a.cmd().args(["send", "--wait"]));
        let t = Instant::now();
        let out = run(node
            .cmd()
            .env("FERRY_LOG", "debug")
            .env("FERRY_LOG_UPTIME", "1")
            .env("NO_COLOR", "1")
            .args(["scan", "--client", "host-a"]));
        ferry_t.push(t.elapsed().as_secs_f64());
        assert!(out.status.success(), "{}", text(&out));
        // The git module's own fetch, as logged by ferry-pull.
        let err = String::from_utf8_lossy(&out.stderr);
        if let Some(p) = std::env::var_os("FERRY_BENCH_SCAN_LOG") {
            // Every round's log, each after a line with its wall time.
            let mut log = fs::OpenOptions::new().create(true).append(true).truncate(false).open(p).unwrap();
            if i == 0 {
                log.set_len(0).unwrap();
            }
            writeln!(log, "== round {i}: ferry-node scan {:.1} ms", ferry_t.last().unwrap() * 1000.0).unwrap();
            log.write_all(err.as_bytes()).unwrap();
        }
        let logged = |key: &str| -> Option<f64> {
            err.lines().find_map(|l| l.split(key).nth(1)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        if let Some(us) = logged(" fetch_us=") {
            module_t.push(us / 1e6);
        }
        if let Some(us) = logged(" ls_remote_us=") {
            module_ls_t.push(us / 1e6);
        }
        let t = Instant::now();
        ok(git_cmd(&by_hand).env("GIT_SSH_COMMAND", &enrolled).arg(format!("--git-dir={}", by_hand.display())).args([
            "fetch",
            "--quiet",
            &url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ]));
        hand_t.push(t.elapsed().as_secs_f64());
        assert_eq!(for_each_ref(&mirror), for_each_ref(&bare));
        // What one more round trip over the same connection costs: the
        // listing the node makes before each fetch, run by hand.
        let t = Instant::now();
        ok(git_cmd(&by_hand).env("GIT_SSH_COMMAND", &enrolled).args([
            "ls-remote",
            "--refs",
            "--heads",
            "--tags",
            &url,
        ]));
        ls_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        // ssh.variant as the node sets it: git would otherwise probe an
        // ssh command it does not know with `-G` first, one more run.
        ok(git_cmd(&guarded)
            .env("GIT_SSH_COMMAND", &guard_ssh)
            .arg(format!("--git-dir={}", guarded.display()))
            .args(["-c", "ssh.variant=ssh"])
            .args(["fetch", "--quiet", &url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]));
        guard_t.push(t.elapsed().as_secs_f64());
    }
    let extra: Vec<f64> = guard_t.iter().zip(&hand_t).map(|(g, h)| g - h).collect();
    println!(
        "  checking the ref advertisement, by hand: git ls-remote first (a second round trip) median {:.0} ms; \
         git fetch through ferry-node git-ssh-guard median {:.0} ms, {:+.0} ms per fetch (median of the rounds' differences)",
        median(ls_t) * 1000.0,
        median(guard_t) * 1000.0,
        median(extra) * 1000.0
    );
    let (f, h) = (median(ferry_t), median(hand_t));
    if !module_ls_t.is_empty() {
        println!(
            "  the git module's listing before the fetch (hardened git ls-remote): median {:.0} ms",
            median(module_ls_t) * 1000.0
        );
    }
    if !module_t.is_empty() {
        let m = median(module_t);
        println!(
            "  the git module's fetch alone (hardened git fetch into the mirror): median {:.0} ms, ratio {:.2} to git fetch by hand",
            m * 1000.0,
            m / h
        );
    }
    println!(
        "incremental fetch of 1 commit into a {commits}-commit mirror, {rounds} interleaved rounds: ferry-node scan median {:.0} ms, git fetch by hand median {:.0} ms, ratio {:.2} (target <= 1.1)",
        f * 1000.0,
        h * 1000.0,
        f / h
    );
}

fn commit_and_push_quiet(work: &Path, i: usize) {
    fs::write(work.join("bench"), format!("{i}\n")).unwrap();
    git(work, &["add", "bench"]);
    git(work, &["commit", "--quiet", "-m", &format!("bench {i}")]);
    ok(git_cmd(work).args(["push", "--quiet", "origin", "HEAD:master"]));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.get(1).map(String::as_str) {
        Some("latency") => latency(n(2, 20)),
        Some("scan") => scan(n(2, 1000), n(3, 10)),
        Some("fetch") => fetch(n(2, 50_000), n(3, 10)),
        _ => {
            eprintln!("usage: ferry-bench-spine latency [N] | scan [CLIENTS] [PER_CLIENT] | fetch [COMMITS] [ROUNDS]");
            std::process::exit(2);
        }
    }
}
