//! Real child processes as RAII guards, and killing whole process trees.
//!
//! Every daemon the harness starts is a [`Daemon`]: it runs in its own process
//! group with stdout and stderr appended to a log file, readiness is polled
//! with a bound (a timeout panics with the log's tail), and `Drop` stops the
//! whole tree and reaps it.
//!
//! "The whole tree" matters: several daemons escape their process group
//! (PostgreSQL's children and sshd's per-connection children call `setsid`),
//! so the guard freezes (`SIGSTOP`) and then kills every process that is in
//! the group *or* descends from the leader, and waits until each is gone.
//!
//! A small `sh` watchdog joins each daemon's process group and kills the
//! group if the test process dies without running destructors (Ctrl-C,
//! `abort`, a CI timeout), because daemons in their own group do not get the
//! terminal's `SIGINT`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, kill_process};

/// A POSIX signal, as used by [`Daemon::spawn`] to ask a daemon to stop
/// (re-exported from `rustix`).
pub use rustix::process::Signal;

/// Default bound for a daemon to become ready. Generous on purpose: the CI
/// machine is a slow, shared 2-core box and tests run in parallel.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines of a log a panic message quotes.
const TAIL_LINES: usize = 40;

/// One line of `/proc/<pid>/stat`, the fields the harness needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    pid: i32,
    state: char,
    ppid: i32,
    pgid: i32,
    /// Start time in clock ticks since boot: with the pid, identifies a
    /// process even after its pid has been reused.
    start: u64,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything,
    // so split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        // Field 22 of the full line; `fields` starts at field 3.
        start: fields.get(19)?.parse().ok()?,
    })
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter_map(read_stat).collect()
}

/// True while `p` (same pid and start time) exists and is not a zombie.
fn still_running(p: &ProcStat) -> bool {
    read_stat(p.pid).is_some_and(|now| now.start == p.start && now.state != 'Z')
}

/// True while `pid` exists and is not a zombie.
fn pid_running(pid: i32) -> bool {
    read_stat(pid).is_some_and(|p| p.state != 'Z')
}

/// The process group `root` leads (if `root` is given) plus the processes in
/// `seeds`, plus every descendant of any of them.
fn collect_tree(root: Option<i32>, seeds: &BTreeMap<i32, ProcStat>) -> BTreeMap<i32, ProcStat> {
    let me = std::process::id() as i32;
    let procs = all_processes();
    let mut tree: BTreeMap<i32, ProcStat> = procs
        .iter()
        .filter(|p| {
            root.is_some_and(|r| p.pid == r || p.pgid == r) || seeds.get(&p.pid).is_some_and(|s| s.start == p.start)
        })
        .map(|p| (p.pid, *p))
        .collect();
    loop {
        let mut added = false;
        for p in &procs {
            if !tree.contains_key(&p.pid) && tree.contains_key(&p.ppid) {
                tree.insert(p.pid, *p);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    tree.retain(|pid, _| *pid != me && *pid > 1);
    tree
}

fn signal(p: &ProcStat, sig: Signal) {
    if let Some(pid) = Pid::from_raw(p.pid) {
        let _ = kill_process(pid, sig);
    }
}

/// Freezes, then kills, the tree under `root` (which must be an unreaped
/// child of this process, so its pid cannot have been reused) together with
/// the members of `known` that still run; waits up to 10 s until all are
/// gone or zombies.
fn kill_tree(root: Option<i32>, known: &BTreeMap<i32, ProcStat>) {
    let mut victims: BTreeMap<i32, ProcStat> =
        known.values().filter(|p| still_running(p)).map(|p| (p.pid, *p)).collect();
    for p in victims.values() {
        signal(p, Signal::STOP);
    }
    // Stopped processes cannot fork, so a few rounds reach a fixed point:
    // the group, the known processes, and everything below any of them.
    for _ in 0..20 {
        let mut added = false;
        for (pid, p) in collect_tree(root, &victims) {
            if p.state != 'Z' && !victims.contains_key(&pid) {
                signal(&p, Signal::STOP);
                victims.insert(pid, p);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    for p in victims.values() {
        if still_running(p) {
            signal(p, Signal::KILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while victims.values().any(still_running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads `path` from byte `offset` on, lossily as UTF-8 ("" if missing).
fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Starts a watchdog in process group `pgid` that kills that group once the
/// test process is gone.
fn spawn_watchdog(pgid: u32) -> Option<Child> {
    let me = std::process::id();
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 -{pgid} 2>/dev/null"))
        .process_group(pgid as i32)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// A long-running real process owned by a test: the building block of
/// [`crate::Sshd`], [`crate::Postgres`], [`crate::Smtp`], … and usable
/// directly for Ferry's own daemons (`ferry-node daemon`).
///
/// The process runs in a new process group with stdin from `/dev/null` and
/// stdout + stderr appended to a log file. `Drop` (or [`Daemon::stop`]) sends
/// the stop signal to the leader, gives it a grace period, then freezes and
/// kills everything left in its group or below it, and reaps the leader.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    watchdog: Option<Child>,
    log: PathBuf,
    log_start: u64,
    stop_signal: Signal,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `cmd` as daemon `name`, appending its output to `log`.
    /// `stop_signal` is sent to the leader on stop (e.g. `Signal::TERM`;
    /// `Signal::KILL` skips the grace period); after `grace` the whole tree is
    /// killed. Panics if the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stop_signal: Signal, grace: Duration) -> Daemon {
        if let Some(parent) = log.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: cannot open log {}: {e}", log.display()));
        let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
        let err = out.try_clone().unwrap_or_else(|e| panic!("{name}: cannot dup log fd: {e}"));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        let watchdog = spawn_watchdog(child.id());
        Daemon {
            name: name.to_string(),
            child: Some(child),
            watchdog,
            log: log.to_path_buf(),
            log_start,
            stop_signal,
            grace,
            status: None,
        }
    }

    /// The daemon's name as given to [`Daemon::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader's pid, or `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything this run of the daemon wrote so far (the log file from the
    /// offset at which this spawn started appending).
    pub fn output(&self) -> String {
        read_from(&self.log, self.log_start)
    }

    /// True while the leader process runs (not exited, not stopped by us).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| pid_running(c.id() as i32))
    }

    /// Polls every 50 ms until `ready(output so far)` returns true. Panics
    /// with the log's tail if the daemon exits first or `timeout` passes;
    /// `what` names the awaited condition in that message.
    pub fn wait_ready(&mut self, timeout: Duration, what: &str, mut ready: impl FnMut(&str) -> bool) {
        let start = Instant::now();
        loop {
            let out = self.output();
            if ready(&out) {
                return;
            }
            if !self.is_running() {
                // Give the check one last chance (the log may have been
                // completed just before exit), then report.
                let status = self.stop();
                let out = self.output();
                if ready(&out) {
                    return;
                }
                panic!(
                    "{} exited ({}) before it was ready (waiting for {what}); log {}:\n{}",
                    self.name,
                    status.map_or("status unknown".to_string(), |s| s.to_string()),
                    self.log.display(),
                    tail(&out, TAIL_LINES)
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} not ready after {timeout:?} (waiting for {what}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&out, TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (see [`Daemon::wait_ready`]) until this run's output contains
    /// `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_ready(timeout, &format!("{needle:?} in its log"), |out| out.contains(needle));
    }

    /// Waits (see [`Daemon::wait_ready`]) until a TCP connection to
    /// `addr:port` succeeds.
    pub fn wait_for_tcp(&mut self, addr: Ipv4Addr, port: u16, timeout: Duration) {
        let sa = SocketAddrV4::new(addr, port);
        self.wait_ready(timeout, &format!("a TCP listener on {sa}"), |_| {
            TcpStream::connect_timeout(&sa.into(), Duration::from_secs(2)).is_ok()
        });
    }

    /// Stops the daemon (stop signal, grace period, then the whole tree is
    /// killed) and reaps it; returns its exit status. Idempotent; never
    /// panics (it runs in `Drop`, possibly while unwinding).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.status;
        };
        let root = child.id() as i32;
        // Until `child.wait()` below, `root` is our unreaped child, so its pid
        // and process group id cannot be reused by an unrelated process.
        let snapshot = collect_tree(Some(root), &BTreeMap::new());
        if self.stop_signal != Signal::KILL && pid_running(root) {
            if let Some(pid) = Pid::from_raw(root) {
                let _ = kill_process(pid, self.stop_signal);
            }
            let deadline = Instant::now() + self.grace;
            while pid_running(root) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_tree(Some(root), &snapshot);
        self.status = child.wait().ok();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion like `Command::output`, but in its own process
/// group and bounded by `timeout`: on timeout the whole tree is killed and
/// the call panics with the command and its stderr tail. stdin is
/// `/dev/null`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let tmp = tempfile::tempdir().expect("tempdir for command output");
    let out_path = tmp.path().join("stdout");
    let err_path = tmp.path().join("stderr");
    let out = File::create(&out_path).expect("create stdout file");
    let err = File::create(&err_path).expect("create stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > timeout {
            kill_tree(Some(child.id() as i32), &BTreeMap::new());
            let _ = child.wait();
            let stderr = fs::read(&err_path).unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr tail:\n{}",
                tail(&String::from_utf8_lossy(&stderr), TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Helpers a program left behind in its group (e.g. a browser's crash
    // handler) are not wanted once it is done. Filtering on the group id (not
    // the reaped leader's pid) is safe: a pid is not reused while a process
    // group of that id still has members.
    let pgid = child.id() as i32;
    let leftovers: BTreeMap<i32, ProcStat> =
        all_processes().into_iter().filter(|p| p.pgid == pgid && p.state != 'Z').map(|p| (p.pid, p)).collect();
    kill_tree(None, &leftovers);
    Output { status, stdout: fs::read(&out_path).unwrap_or_default(), stderr: fs::read(&err_path).unwrap_or_default() }
}

/// Runs `cmd` (stdin `/dev/null`), panics with the command line, exit status
/// and stderr unless it succeeds, and returns its stdout (lossy UTF-8).
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES),
            tail(&String::from_utf8_lossy(&out.stdout), TAIL_LINES)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Live (non-zombie) processes other than this one whose command line
/// contains `needle`, as `(pid, command line)`: the stray-process check
/// (`pgrep -f` without needing procps).
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id() as i32;
    all_processes()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z')
        .filter_map(|p| {
            let raw = fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(needle).then(|| (p.pid as u32, line.trim_end().to_string()))
        })
        .collect()
}
