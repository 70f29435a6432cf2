//! Real git with a clean, deterministic environment, and a `git daemon`
//! guard.
//!
//! Every git the harness runs gets `GIT_CONFIG_NOSYSTEM=1`, a HOME made once
//! per test process (`<test root>/git-home-<pid>`, holding a fixed
//! `.gitconfig`), fixed author/committer identities, `LC_ALL=C`, and none of
//! the caller's `GIT_*` variables, so the user's or the machine's git
//! configuration cannot change results.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::env::{ensure_test_root, free_port, next_loopback};
use crate::process::{Daemon, READY_TIMEOUT, Signal, run_checked};

const GITCONFIG: &str = "\
# Written by ferry-tests: the git configuration every test git sees.
[init]
\tdefaultBranch = master
[user]
\tname = Ferry Test
\temail = ferry-test@example.invalid
[safe]
\tdirectory = *
[protocol \"file\"]
\tallow = always
[commit]
\tgpgsign = false
[tag]
\tgpgsign = false
[advice]
\tdetachedHead = false
[gc]
\tauto = 0
[maintenance]
\tauto = false
[core]
\tautocrlf = false
";

/// The per-process HOME for git (created on first use; stale ones of dead
/// test processes are removed then).
pub fn git_home() -> PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let root = ensure_test_root();
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("git-home-")
                    && pid.parse::<u32>().is_ok()
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let home = root.join(format!("git-home-{}", std::process::id()));
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("mkdir {}: {e}", home.display()));
        fs::write(home.join(".gitconfig"), GITCONFIG).expect("write .gitconfig");
        home
    })
    .clone()
}

/// A `git` command run in `dir` with the harness's clean environment (see
/// the module docs); add arguments and environment (e.g. `GIT_SSH_COMMAND`)
/// as needed.
pub fn git_cmd(dir: &Path) -> Command {
    let home = git_home();
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_AUTHOR_NAME", "Ferry Test")
        .env("GIT_AUTHOR_EMAIL", "ferry-test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Ferry Test")
        .env("GIT_COMMITTER_EMAIL", "ferry-test@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    cmd
}

/// Runs `git <args>` in `dir` (clean environment); returns stdout without
/// trailing newlines; panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_checked(git_cmd(dir).args(args)).trim_end_matches(['\n', '\r']).to_string()
}

/// Runs `git <args>` in `dir` (clean environment); true if it succeeded.
pub fn git_ok(dir: &Path, args: &[&str]) -> bool {
    git_cmd(dir).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `git --git-dir=<git_dir> for-each-ref --format='%(objectname) %(refname)'
/// refs/heads refs/tags`, lines sorted and joined with `\n`: compare two of
/// these to prove a mirror equals its source.
pub fn for_each_ref(git_dir: &Path) -> String {
    let mut cmd = git_cmd(git_dir);
    cmd.arg(format!("--git-dir={}", git_dir.display())).args([
        "for-each-ref",
        "--format=%(objectname) %(refname)",
        "refs/heads",
        "refs/tags",
    ]);
    let out = run_checked(&mut cmd);
    let mut lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// A read-only `git daemon` on `git://127.0.0.x:port/`, serving every repo
/// under `base_path` (`--export-all`, upload-pack only), log in
/// `<dir>/git-daemon.log`. Killed on drop.
pub struct GitDaemon {
    addr: Ipv4Addr,
    port: u16,
    _daemon: Daemon,
}

impl GitDaemon {
    /// Starts `git daemon --base-path=<base_path> --export-all` with `dir` as
    /// its own directory, on a fresh [`next_loopback`] address; waits for
    /// "Ready to rumble".
    pub fn start(dir: &Path, base_path: &Path) -> GitDaemon {
        GitDaemon::start_at(dir, base_path, next_loopback())
    }

    /// [`GitDaemon::start`] on a given address (e.g. the address of a
    /// client's sshd, so that both stand for one host), on a free port.
    pub fn start_at(dir: &Path, base_path: &Path, addr: Ipv4Addr) -> GitDaemon {
        GitDaemon::spawn(dir, base_path, addr, true)
    }

    /// [`GitDaemon::start`] without `--export-all`, as the node's unit
    /// runs it: only repositories with a `git-daemon-export-ok` file are
    /// served.
    pub fn start_marked_only(dir: &Path, base_path: &Path) -> GitDaemon {
        GitDaemon::spawn(dir, base_path, next_loopback(), false)
    }

    fn spawn(dir: &Path, base_path: &Path, addr: Ipv4Addr, export_all: bool) -> GitDaemon {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let port = free_port(addr);
        let mut cmd = git_cmd(dir);
        cmd.args(["daemon", "--reuseaddr", "--informative-errors"]);
        if export_all {
            cmd.arg("--export-all");
        }
        cmd.arg("--verbose")
            .arg(format!("--listen={addr}"))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base_path.display()))
            .arg(format!("--pid-file={}", dir.join("git-daemon.pid").display()))
            .arg(base_path);
        let mut daemon = Daemon::spawn(
            &format!("git daemon {addr}:{port}"),
            cmd,
            &dir.join("git-daemon.log"),
            Signal::KILL,
            Duration::ZERO,
        );
        daemon.wait_for_log("Ready to rumble", READY_TIMEOUT);
        GitDaemon { addr, port, _daemon: daemon }
    }

    /// `git://127.0.0.x:port/<path>` (path relative to the base path).
    pub fn url(&self, path: &str) -> String {
        format!("git://{}:{}/{}", self.addr, self.port, path.trim_start_matches('/'))
    }

    /// The listen address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}
