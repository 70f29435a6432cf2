//! The SIGKILL torture: `ferry send`, the node's queue hook (`ferry-node
//! hook post-update`) and `ferry-node scan` are killed at random instants,
//! over many trials with a mix of dummy, git and sftp (fs and pipe source)
//! requests; after each trial normal runs recover, and the invariants of
//! "never lose a request" are checked:
//!
//! * every client request ends in `F` (or `E` with a reason) exactly once,
//!   and was committed to the queue exactly once;
//! * on the node every pushed request id is in exactly one of `F`/`E`, the
//!   node has exactly the client's finished requests, and none was
//!   recorded done twice;
//! * every sftp request the node finished is in the catalog once, and
//!   `ferry-node verify` finds every artifact intact (and none unknown);
//! * no temporary file (`.tmp-*`), `.incomplete`, `.incoming-*` staging
//!   mirror, git `tmp_pack_*` or stale git `*.lock` remains in pools, data,
//!   the export directory or the queue repositories;
//! * every mirror and queue repository passes `git fsck --strict`, and the
//!   mirror holds the client repository's refs.
//!
//! Run by `bench/torture.sh` (release build, `ferry-torture N`) and, bounded,
//! by the e2e test `ops::torture_bounded`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::fleet::{Client, Node, run, text};
use crate::{TestDir, for_each_ref, git, git_cmd, list_tree, pool_states};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub trials: usize,
    /// Seed of the random choices (printed, so a run can be repeated).
    pub seed: u64,
    /// Full checks (verify, fsck, mirror refs) every this many trials and
    /// after the last one; the cheap ones run after every trial.
    pub check_every: usize,
    /// Bytes the pipe source produces per backup.
    pub pipe_bytes: usize,
    /// Print one line per trial.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { trials: 30, seed: seed_from_time(), check_every: 10, pipe_bytes: 1_000_000, verbose: false }
    }
}

/// A seed from the clock (when none is given).
pub fn seed_from_time() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// The processes the torture kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Send,
    Hook,
    Scan,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Send, Target::Hook, Target::Scan];

    pub fn name(self) -> &'static str {
        match self {
            Target::Send => "ferry send",
            Target::Hook => "ferry-node hook post-update",
            Target::Scan => "ferry-node scan",
        }
    }
}

/// What happened, and what was wrong.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub trials: usize,
    /// Trials aimed at each target.
    pub aimed: BTreeMap<Target, usize>,
    /// SIGKILLs delivered while the target was running.
    pub kills: BTreeMap<Target, usize>,
    /// Of the kills of `send` and `scan`, those that took the whole process
    /// tree (git, ssh, dump children) at once; the others left the
    /// children running, orphaned.
    pub tree_kills: usize,
    /// Client requests queued, by module.
    pub requests: BTreeMap<&'static str, usize>,
    pub client_finished: usize,
    pub client_failed: usize,
    pub node_finished: usize,
    pub node_failed: BTreeMap<String, usize>,
    /// The reasons of requests that ended in E (id: reason, detail).
    pub failures: BTreeMap<String, String>,
    pub artifacts: usize,
    /// Requests finished on the node without a `request_done` journal line
    /// (a kill between the rename to `F` and the journal write: the journal
    /// is best effort, the pool is the record). Not a violation.
    pub journal_gaps: usize,
    pub full_checks: usize,
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "torture: {} trials in {:.1} s (seed {})", self.trials, self.elapsed.as_secs_f64(), self.seed)?;
        for t in Target::ALL {
            writeln!(
                f,
                "  kills of {:<28} {:>5} of {:>5} trials aimed at it (the rest finished before the random instant)",
                t.name(),
                self.kills.get(&t).copied().unwrap_or(0),
                self.aimed.get(&t).copied().unwrap_or(0)
            )?;
        }
        writeln!(
            f,
            "  of the send/scan kills, {} took the whole process tree, the others left children orphaned",
            self.tree_kills
        )?;
        let total: usize = self.requests.values().sum();
        let by_module: Vec<String> = self.requests.iter().map(|(m, n)| format!("{m} {n}")).collect();
        writeln!(f, "  requests: {total} queued on the client ({})", by_module.join(", "))?;
        writeln!(f, "  client: {} F, {} E", self.client_finished, self.client_failed)?;
        let failed: usize = self.node_failed.values().sum();
        let reasons: Vec<String> = self.node_failed.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(
            f,
            "  node: {} F, {failed} E{}; {} artifacts in the catalog; {} journal gaps",
            self.node_finished,
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
            self.artifacts,
            self.journal_gaps
        )?;
        for (id, why) in self.failures.iter().take(10) {
            writeln!(f, "    E {id}: {why}")?;
        }
        writeln!(f, "  full checks: {}", self.full_checks)?;
        writeln!(f, "  violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(50) {
            writeln!(f, "    - {v}")?;
        }
        Ok(())
    }
}

/// xorshift64*: small, seedable, good enough to pick instants.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// How long a target runs when nobody kills it: the longest of its last
/// runs that ended by themselves. The kill instant is drawn uniformly from
/// zero to that, so kills land in every phase of a run (a short run often
/// finishes first). Kills teach nothing about the length of a run, so only
/// natural ends count (a mean fed by kills would shrink towards zero).
struct Estimate {
    runs: std::collections::VecDeque<Duration>,
    /// Used until a run was seen.
    guess: Duration,
}

impl Estimate {
    fn new(guess: Duration) -> Estimate {
        Estimate { runs: Default::default(), guess }
    }
    fn update(&mut self, d: Duration) {
        if self.runs.len() >= 16 {
            self.runs.pop_front();
        }
        self.runs.push_back(d);
    }
    fn longest(&self) -> Duration {
        self.runs.iter().copied().max().unwrap_or(self.guess)
    }
    fn pick(&self, rng: &mut Rng) -> Duration {
        Duration::from_micros(rng.below(self.longest().as_micros() as u64 + 1))
    }
}

fn quiet(mut cmd: Command) -> Command {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| state != 'Z')
}

fn sigkill(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// `pid` and every process descending from it (by parent pid, from /proc).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(ppid) = stat.rfind(')').and_then(|i| stat[i + 2..].split(' ').nth(1)?.parse().ok()) else {
            continue;
        };
        parent.push((p, ppid));
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// How a run is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Only the process: its children (git, ssh, a dump) run on, orphaned.
    Process,
    /// The process and all its descendants at once, like a power cut.
    Tree,
}

/// Start `cmd`, SIGKILL it after `after` if it still runs; true if killed.
fn run_and_kill(cmd: Command, after: Duration, how: Kill) -> bool {
    let mut child: Child = quiet(cmd).spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        if start.elapsed() >= after {
            match how {
                Kill::Process => {
                    let _ = child.kill();
                }
                Kill::Tree => {
                    // Stop them all first, so none reacts to another's death.
                    let tree = process_tree(child.id());
                    for p in &tree {
                        if let Some(p) = rustix::process::Pid::from_raw(*p as i32) {
                            let _ = rustix::process::kill_process(p, rustix::process::Signal::STOP);
                        }
                    }
                    for p in tree {
                        sigkill(p);
                    }
                }
            }
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Watches `pid_file` (the queue hook writes its pid there before it
/// `exec`s `ferry-node hook post-update`); when a new pid appears, SIGKILLs
/// it `after` later if it still runs. Returns (killed, how long the hook
/// ran if it ended by itself).
fn spawn_hook_killer(
    pid_file: PathBuf,
    after: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(bool, Option<Duration>)> {
    let seen_before = fs::metadata(&pid_file).map(|m| m.len()).unwrap_or(0);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if fs::metadata(&pid_file).map(|m| m.len()).unwrap_or(0) > seen_before {
                let start = Instant::now();
                let text = fs::read_to_string(&pid_file).unwrap_or_default();
                let Some(pid) = text.get(seen_before as usize..).and_then(|t| t.lines().next()?.trim().parse().ok())
                else {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                };
                loop {
                    if !alive(pid) {
                        return (false, Some(start.elapsed()));
                    }
                    if start.elapsed() >= after {
                        sigkill(pid);
                        return (true, None);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (false, None)
    })
}

/// The fleet under torture.
struct Fleet {
    td: TestDir,
    node: Node,
    client: Client,
    bare: PathBuf,
    work: PathBuf,
    tree: PathBuf,
    /// The queue hook's pids, one per line (see [`spawn_hook_killer`]).
    hook_pids: PathBuf,
}

impl Fleet {
    fn start(opts: &Options) -> Fleet {
        let td = TestDir::new("torture");
        let node = Node::start_with(&td, "backup1", "scan_on_push = false");
        let tree = td.mkdir("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a.txt"), "hello\n").unwrap();
        fs::write(tree.join("sub/b.bin"), (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let client = Client::new_with(
            &td,
            "host-a",
            &[&node],
            &format!(
                "[[source]]\nname = \"site\"\nmodule = \"fs\"\npath = \"{}\"\n\n[[source]]\nname = \"stream\"\nmodule = \"pipe\"\ncommand = [\"head\", \"-c\", \"{}\", \"/dev/urandom\"]\n",
                tree.display(),
                opts.pipe_bytes
            ),
        );
        node.enroll(&[&client]);
        // A client repository without Ferry's hook: requests are made
        // explicitly, so no background send runs outside the torture's
        // control.
        let bare = client.git_root.join("proj.git");
        git(&td.path, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
        let work = td.join("work-proj");
        git(&td.path, &["clone", "--quiet", bare.to_str().unwrap(), work.to_str().unwrap()]);
        // The queue hook records its pid, then execs `ferry-node hook
        // post-update` as installed: the killer knows the hook from its
        // first instant instead of finding it by polling /proc.
        let hook_pids = td.join("hook-pids");
        let hook = node.srv().join("repositories/queue/host-a.git/hooks/post-update");
        let script = fs::read_to_string(&hook).unwrap();
        assert!(script.contains("\nexec ") && script.contains("hook post-update"), "{script}");
        fs::write(&hook, script.replace("\nexec ", &format!("\necho $$ >> '{}'\nexec ", hook_pids.display()))).unwrap();
        let mut f = Fleet { td, node, client, bare, work, tree, hook_pids };
        f.commit(0);
        f
    }

    fn commit(&mut self, n: usize) {
        fs::write(self.work.join("f.txt"), format!("change {n}\n")).unwrap();
        git(&self.work, &["add", "f.txt"]);
        git(&self.work, &["commit", "--quiet", "-m", &format!("change {n}")]);
        let out = run(git_cmd(&self.work).args(["push", "--quiet", "origin", "HEAD:master"]));
        assert!(out.status.success(), "push: {}", text(&out));
    }

    fn send_cmd(&self) -> Command {
        let mut c = self.client.cmd();
        c.args(["--json", "send", "--wait", "--force"]);
        c
    }

    fn scan_cmd(&self) -> Command {
        let mut c = self.node.cmd();
        c.args(["--json", "scan"]);
        c
    }

    fn client_pool(&self) -> PathBuf {
        self.client.base.join("state/pools/backup1")
    }

    fn queue_repo(&self) -> PathBuf {
        self.node.srv().join("repositories/queue/host-a.git")
    }
}

/// Git repositories below `root` (directories holding `HEAD` and `objects`).
fn git_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        list_tree(root).into_iter().filter(|p| p.join("HEAD").is_file() && p.join("objects").is_dir()).collect();
    v.sort();
    v
}

struct Torture {
    opts: Options,
    rng: Rng,
    fleet: Fleet,
    report: Report,
    est: BTreeMap<Target, Estimate>,
    git_requests: usize,
}

impl Torture {
    fn violation(&mut self, trial: usize, what: String) {
        if self.opts.verbose {
            eprintln!("trial {trial}: VIOLATION {what}");
        }
        self.report.violations.push(format!("trial {trial}: {what}"));
    }

    /// Queue a random mix of requests; at least one.
    fn queue(&mut self, trial: usize) -> Vec<&'static str> {
        let mut made = Vec::new();
        let dummies = self.rng.below(3);
        for i in 0..dummies {
            let out = self.fleet.client.ferry(&["request", "dummy", &format!("t{trial}d{i}")]);
            assert!(out.status.success(), "{}", text(&out));
            made.push("dummy");
        }
        if self.rng.chance(1, 2) {
            self.fleet.commit(trial + 1);
            let bare = self.fleet.bare.to_str().unwrap().to_owned();
            let out = self.fleet.client.ferry(&["request", "git", &bare]);
            assert!(out.status.success(), "{}", text(&out));
            self.git_requests += 1;
            made.push("git");
        }
        if self.rng.chance(1, 3) {
            fs::write(self.fleet.tree.join("a.txt"), format!("trial {trial}\n")).unwrap();
            let out = self.fleet.client.ferry(&["backup", "site"]);
            assert!(out.status.success(), "{}", text(&out));
            made.push("fs");
        }
        if self.rng.chance(1, 3) || made.is_empty() {
            let out = self.fleet.client.ferry(&["backup", "stream"]);
            assert!(out.status.success(), "{}", text(&out));
            made.push("pipe");
        }
        for m in &made {
            *self.report.requests.entry(m).or_default() += 1;
        }
        made
    }

    /// An unkilled send; returns how many requests it delivered.
    fn send(&mut self) -> usize {
        let t = Instant::now();
        let out = run(&mut self.fleet.send_cmd());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let delivered = v[0]["delivered"].as_array().map_or(0, Vec::len);
        if delivered > 0 && out.status.success() {
            self.est.get_mut(&Target::Send).unwrap().update(t.elapsed());
        }
        delivered
    }

    /// An unkilled scan; returns how many requests it finished.
    fn scan(&mut self) -> usize {
        let t = Instant::now();
        let out = run(&mut self.fleet.scan_cmd());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let n = v["finished"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0);
        if n > 0 {
            self.est.get_mut(&Target::Scan).unwrap().update(t.elapsed());
        }
        n as usize
    }

    fn client_drained(&self) -> bool {
        pool_states(self.fleet.client_pool(), &["C", "P"]).is_empty()
    }

    fn node_drained(&self) -> bool {
        let pool = self.fleet.node.pool("host-a");
        let tip = git(&self.fleet.queue_repo(), &["rev-parse", "--verify", "-q", "master"]);
        let extracted = fs::read_to_string(pool.join(".extracted")).unwrap_or_default();
        pool_states(&pool, &["RQ", "P"]).is_empty() && extracted.trim() == tip.trim()
    }

    /// Normal runs (at least one send and one scan, as cron would start)
    /// until everything is delivered and processed.
    fn recover(&mut self, trial: usize) {
        for _ in 0..20 {
            self.send();
            if self.client_drained() {
                break;
            }
        }
        if !self.client_drained() {
            let out = run(&mut self.fleet.send_cmd());
            self.violation(trial, format!("the client does not recover: {}", text(&out)));
            return;
        }
        for _ in 0..20 {
            self.scan();
            if self.node_drained() {
                return;
            }
        }
        let out = run(&mut self.fleet.scan_cmd());
        self.violation(trial, format!("the node does not recover: {}", text(&out)));
    }

    fn trial(&mut self, trial: usize) {
        let target = Target::ALL[trial % 3];
        *self.report.aimed.entry(target).or_default() += 1;
        let made = self.queue(trial);
        let (killed, after) = match target {
            Target::Send => {
                let after = self.est[&Target::Send].pick(&mut self.rng);
                let how = if self.rng.chance(1, 2) { Kill::Tree } else { Kill::Process };
                let killed = run_and_kill(self.fleet.send_cmd(), after, how);
                if killed && how == Kill::Tree {
                    self.report.tree_kills += 1;
                }
                (killed, after)
            }
            Target::Hook => {
                let after = self.est[&Target::Hook].pick(&mut self.rng);
                let stop = Arc::new(AtomicBool::new(false));
                let killer = spawn_hook_killer(self.fleet.hook_pids.clone(), after, stop.clone());
                self.send();
                stop.store(true, Ordering::Relaxed);
                let (killed, lived) = killer.join().expect("killer thread");
                if let Some(d) = lived {
                    if self.opts.verbose {
                        eprintln!("  the hook ran {} ms after it was seen", d.as_millis());
                    }
                    self.est.get_mut(&Target::Hook).unwrap().update(d);
                }
                (killed, after)
            }
            Target::Scan => {
                for _ in 0..5 {
                    if self.client_drained() {
                        break;
                    }
                    self.send();
                }
                let after = self.est[&Target::Scan].pick(&mut self.rng);
                let how = if self.rng.chance(1, 2) { Kill::Tree } else { Kill::Process };
                let killed = run_and_kill(self.fleet.scan_cmd(), after, how);
                if killed && how == Kill::Tree {
                    self.report.tree_kills += 1;
                }
                (killed, after)
            }
        };
        if killed {
            *self.report.kills.entry(target).or_default() += 1;
        }
        if self.opts.verbose {
            eprintln!(
                "trial {trial}: {made:?}, {} {} after {} ms",
                target.name(),
                if killed { "killed" } else { "finished before" },
                after.as_millis()
            );
        }
        self.recover(trial);
        self.check(trial);
        if (trial + 1).is_multiple_of(self.opts.check_every.max(1)) || trial + 1 == self.opts.trials {
            self.full_check(trial);
        }
    }

    /// Invariants checked after every trial.
    fn check(&mut self, trial: usize) {
        let f = &self.fleet;
        let mut found = Vec::new();
        // Client: each request in exactly one of F/E; E with its reason.
        let client = pool_states(f.client_pool(), &["i", "C", "P", "F", "E"]);
        let mut client_f = BTreeSet::new();
        let mut client_e = 0;
        for (id, st) in &client {
            match st.as_slice() {
                [s] if s == "F" => {
                    client_f.insert(id.clone());
                }
                [s] if s == "E" => {
                    client_e += 1;
                    let why = fs::read_to_string(f.client_pool().join(format!("E{id}.why"))).unwrap_or_default();
                    if why.trim().is_empty() {
                        found.push(format!("client request {id} is in E without a reason"));
                    }
                }
                other => found.push(format!("client request {id} is in {other:?}")),
            }
        }
        // The queue: each client request committed once.
        let log = git(&f.queue_repo(), &["log", "--format=%B", "master"]);
        let mut commits: BTreeMap<String, usize> = BTreeMap::new();
        for l in log.lines() {
            if let Some(id) = l.strip_prefix("Ferry-Request: ") {
                *commits.entry(id.to_owned()).or_default() += 1;
            }
        }
        for (id, n) in &commits {
            if *n != 1 {
                found.push(format!("client request {id} was committed {n} times"));
            }
        }
        for id in &client_f {
            if !commits.contains_key(id) {
                found.push(format!("client request {id} is in F but was never pushed"));
            }
        }
        // The node: each pushed request in exactly one of F/E, exactly the
        // client's finished ones.
        let node_pool = f.node.pool("host-a");
        let node = pool_states(&node_pool, &["RQ", "P", "F", "E"]);
        let mut node_f = 0;
        let mut node_failed: BTreeMap<String, usize> = BTreeMap::new();
        for (id, st) in &node {
            match st.as_slice() {
                [s] if s == "F" => node_f += 1,
                [s] if s == "E" => {
                    let why = fs::read_to_string(node_pool.join(format!("E{id}.why"))).unwrap_or_default();
                    let v: serde_json::Value = serde_json::from_str(&why).unwrap_or(serde_json::Value::Null);
                    match v["reason"].as_str() {
                        Some(r) => {
                            *node_failed.entry(r.to_owned()).or_default() += 1;
                            let detail = v["detail"].as_str().unwrap_or_default();
                            // The end says what went wrong (the start is the command).
                            let n = detail.chars().count();
                            let cut: String = detail.chars().skip(n.saturating_sub(500)).collect();
                            self.report.failures.entry(id.clone()).or_insert_with(|| format!("{r}: {cut}"));
                        }
                        None => found.push(format!("node request {id} is in E without a reason")),
                    }
                }
                other => found.push(format!("node request {id} is in {other:?}")),
            }
        }
        let want: BTreeSet<String> = client_f.iter().map(|id| format!("{id}-1")).collect();
        let have: BTreeSet<String> = node.keys().cloned().collect();
        for id in want.difference(&have) {
            found.push(format!("request {id} was acknowledged to the client but never reached the node pool"));
        }
        for id in have.difference(&want) {
            found.push(format!("node request {id} has no finished client request"));
        }
        // The journal: nothing recorded done twice.
        let mut done: BTreeMap<String, usize> = BTreeMap::new();
        for l in f.node.events().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or(serde_json::Value::Null);
            if v["event"] == "request_done"
                && let Some(id) = v["request"].as_str()
            {
                *done.entry(id.to_owned()).or_default() += 1;
            }
        }
        for (id, n) in &done {
            if *n > 1 {
                found.push(format!("node request {id} was recorded done {n} times"));
            }
        }
        let gaps = node.iter().filter(|(id, st)| st.as_slice() == ["F"] && !done.contains_key(*id)).count();
        // Leftovers.
        let mut roots = vec![f.node.srv(), f.client.base.join("state"), f.client.base.join("export")];
        roots.dedup();
        for root in &roots {
            for p in list_tree(root) {
                // The alert outbox removes its own temporaries after an hour
                // (a young one may be in use by a concurrent writer).
                if p.components().any(|c| c.as_os_str() == "outbox") {
                    continue;
                }
                let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if n.starts_with(".tmp-")
                    || n.starts_with(".incoming-")
                    || n == ".incomplete"
                    || n.starts_with("tmp_pack_")
                    || n.starts_with("tmp_idx_")
                {
                    found.push(format!("leftover {}", p.display()));
                }
            }
        }
        for repo in git_dirs(&f.node.srv()).into_iter().chain(git_dirs(&f.client.base.join("state"))) {
            for p in list_tree(&repo) {
                if p.extension().is_some_and(|e| e == "lock") {
                    found.push(format!("stale git lock {}", p.display()));
                }
            }
        }
        // Empty artifact directories (a download that left nothing).
        for src in fs::read_dir(f.node.data("host-a")).into_iter().flatten().flatten() {
            if src.file_name() == "git" || !src.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for run_dir in fs::read_dir(src.path()).into_iter().flatten().flatten() {
                if fs::read_dir(run_dir.path()).map(|mut d| d.next().is_none()).unwrap_or(false) {
                    found.push(format!("empty artifact directory {}", run_dir.path().display()));
                }
            }
        }
        self.report.client_finished = client_f.len();
        self.report.client_failed = client_e;
        self.report.node_finished = node_f;
        self.report.node_failed = node_failed;
        self.report.journal_gaps = gaps;
        for v in found {
            self.violation(trial, v);
        }
    }

    /// The expensive invariants.
    fn full_check(&mut self, trial: usize) {
        self.report.full_checks += 1;
        let f = &self.fleet;
        let mut found = Vec::new();
        let out = run(f.node.cmd().args(["--json", "verify"]));
        if !out.status.success() {
            found.push(format!("ferry-node verify: {}", text(&out)));
        }
        for repo in git_dirs(&f.node.srv()).into_iter().chain(git_dirs(&f.client.base.join("state"))) {
            let out = run(git_cmd(&repo).arg(format!("--git-dir={}", repo.display())).args([
                "fsck",
                "--strict",
                "--no-dangling",
                "--no-progress",
            ]));
            if !out.status.success() {
                found.push(format!("git fsck {}: {}", repo.display(), text(&out)));
            }
        }
        let mirror = f.node.data("host-a").join("git/proj.git");
        if self.git_requests > 0 && (!mirror.join("HEAD").exists() || for_each_ref(&mirror) != for_each_ref(&f.bare)) {
            found.push("the mirror does not hold the client repository's refs".into());
        }
        // The catalog: every finished sftp request stored once.
        let out = run(f.node.cmd().args(["--json", "find", "--client", "host-a"]));
        let cat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let mut in_catalog: BTreeMap<String, usize> = BTreeMap::new();
        for a in cat.as_array().into_iter().flatten() {
            *in_catalog.entry(a["request"].as_str().unwrap_or("-").to_owned()).or_default() += 1;
        }
        let node_pool = f.node.pool("host-a");
        for (id, st) in pool_states(&node_pool, &["F"]) {
            let _ = st;
            let line = fs::read_to_string(node_pool.join(format!("F{id}"))).unwrap_or_default();
            if line.starts_with("sftp ") && in_catalog.get(&id) != Some(&1) {
                found.push(format!("sftp request {id} is in F but {:?} times in the catalog", in_catalog.get(&id)));
            }
        }
        for (id, n) in &in_catalog {
            if *n > 1 {
                found.push(format!("request {id} is in the catalog {n} times"));
            }
        }
        self.report.artifacts = in_catalog.values().sum();
        for v in found {
            self.violation(trial, v);
        }
    }
}

/// Run the torture; the report says what was killed and what was wrong.
pub fn run_torture(opts: &Options) -> Report {
    let start = Instant::now();
    let fleet = Fleet::start(opts);
    let mut est = BTreeMap::new();
    est.insert(Target::Send, Estimate::new(Duration::from_millis(400)));
    est.insert(Target::Hook, Estimate::new(Duration::from_millis(40)));
    est.insert(Target::Scan, Estimate::new(Duration::from_millis(400)));
    let mut t = Torture {
        opts: opts.clone(),
        rng: Rng::new(opts.seed),
        fleet,
        report: Report { seed: opts.seed, ..Report::default() },
        est,
        git_requests: 0,
    };
    for trial in 0..opts.trials {
        t.trial(trial);
        t.report.trials += 1;
    }
    if opts.verbose {
        eprintln!(
            "longest natural runs: send {:?}, hook {:?}, scan {:?}; test dir {}",
            t.est[&Target::Send].longest(),
            t.est[&Target::Hook].longest(),
            t.est[&Target::Scan].longest(),
            t.fleet.td.path.display()
        );
    }
    t.report.elapsed = start.elapsed();
    t.report
}
