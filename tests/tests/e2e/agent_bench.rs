//! Figures for issue 11 (not a timed test: `#[ignore]`, run by
//! `bench/agent.sh`): with the default `quiet` and `max_delay`, files
//! written at random moments into a watched tree, the time from "closed on
//! the client" to "present with that content in the node's newest
//! snapshot" (p50, p90, p99, max) over real sshd on loopback; the agent's
//! CPU while idle; its memory watching many directories.
//!
//! Env: AGENT_BENCH_FILES (tree size, default 20000), AGENT_BENCH_WRITES
//! (default 20), AGENT_BENCH_MAX_GAP (seconds between writes, uniform from
//! 0, default 20), AGENT_BENCH_DIRS (directories for the memory figure,
//! default 100000).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::TestDir;
use ferry_tests::fleet::{Client, Node, eventually};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(a: &Client, log: &Path) -> Agent {
    Agent(a.cmd().args(["-v", "agent"]).stderr(fs::File::create(log).unwrap()).stdout(Stdio::null()).spawn().unwrap())
}

fn status(a: &Client) -> serde_json::Value {
    let out = a.ferry(&["--json", "status", "--agent"]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The newest published snapshot directory of `source`.
fn newest(node: &Node, source: &str) -> Option<PathBuf> {
    let dir = node.data("host-a").join("trees").join(source);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names.pop().map(|n| dir.join(n))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "a benchmark: bench/agent.sh"]
fn agent_rpo_idle_cpu_and_memory() {
    let files = env_or("AGENT_BENCH_FILES", 20_000);
    let writes = env_or("AGENT_BENCH_WRITES", 20);
    let max_gap = env_or("AGENT_BENCH_MAX_GAP", 20);
    let dirs = env_or("AGENT_BENCH_DIRS", 100_000);
    let td = TestDir::new("agent_bench");
    let node = Node::start(&td, "backup1");
    let tree = td.mkdir("site");
    for i in 0..files {
        let d = tree.join(format!("d{:03}", i % 200));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let mut a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"site\"\nmodule = \"fs\"\nmode = \"tree\"\nwatch = true\npath = \"{}\"\n",
            tree.display()
        ),
    );
    a.gitosis_section.push_str(&format!("tree-roots = {}\n", tree.display()));
    node.enroll(&[&a]);
    ferry_tests::fleet::ok(a.cmd().args(["backup", "site", "--send"]));
    eventually("the first snapshot", || newest(&node, "site").is_some());

    let agent = start(&a, &td.join("agent.log"));
    eventually("the agent watching", || status(&a)["sources"][0]["watched_dirs"].as_u64() > Some(200));

    // Idle: ten seconds with nothing changing.
    let pid = agent.0.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_ticks(pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    let idle_rss = rss_kib(pid);

    // RPO: writes at random moments, each waited for in the newest snapshot
    // while the next ones go on (a watcher thread per write would be the
    // same; polling the node's tree every 50 ms is enough resolution).
    let mut pending: Vec<(PathBuf, String, Instant)> = Vec::new();
    let mut rpo = Vec::new();
    let mut next_write = Instant::now();
    let mut written = 0;
    while written < writes || !pending.is_empty() {
        if written < writes && Instant::now() >= next_write {
            let rel = PathBuf::from(format!("d{:03}/rpo-{written}", rand_u64() % 200));
            let content = format!("write {written} {}\n", rand_u64());
            fs::write(tree.join(&rel), &content).unwrap();
            pending.push((rel, content, Instant::now()));
            written += 1;
            next_write = Instant::now() + Duration::from_millis(rand_u64() % (max_gap * 1000 + 1));
        }
        if let Some(snap) = newest(&node, "site") {
            pending.retain(|(rel, content, at)| {
                if fs::read_to_string(snap.join(rel)).is_ok_and(|c| c == *content) {
                    rpo.push(at.elapsed().as_secs_f64());
                    false
                } else {
                    assert!(at.elapsed() < Duration::from_secs(300), "{} never arrived", rel.display());
                    true
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rpo.sort_by(f64::total_cmp);
    let backups = status(&a)["sources"][0]["backups"].as_u64().unwrap_or(0);
    drop(agent);

    // Memory with many watched directories: a client without nodes.
    let many = td.mkdir("many");
    for i in 0..dirs {
        fs::create_dir_all(many.join(format!("{:03}/{i}", i % 1000))).unwrap();
    }
    let b = Client::new_with(
        &td,
        "host-b",
        &[],
        &format!(
            "[[source]]\nname = \"many\"\nmodule = \"fs\"\nmode = \"tree\"\nwatch = true\npath = \"{}\"\n",
            many.display()
        ),
    );
    let agent_b = start(&b, &td.join("agent-b.log"));
    eventually("every directory watched", || status(&b)["sources"][0]["watched_dirs"].as_u64() > Some(dirs));
    let many_rss = rss_kib(agent_b.0.id());
    drop(agent_b);

    println!(
        "agent bench: ferry and ferry-node from {} (bench/agent.sh: release), quiet 10s, max_delay 60s",
        ferry_tests::ferry_bin("ferry").parent().map(|d| d.display().to_string()).unwrap_or_default()
    );
    println!("  tree: {files} files; writes: {writes}, gaps uniform 0-{max_gap} s; backups by the agent: {backups}");
    println!(
        "  RPO closed -> in the node's newest snapshot: p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s (target p50 < 15 s, p99 < 60 s)",
        pct(&rpo, 0.5),
        pct(&rpo, 0.9),
        pct(&rpo, 0.99),
        rpo[rpo.len() - 1]
    );
    println!("  idle agent: {idle_cpu:.2}% of one CPU over 10 s, RSS {idle_rss} KiB");
    println!("  {dirs} watched directories: RSS {} KiB (target < 64 MiB)", many_rss);
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
