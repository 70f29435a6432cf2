//! Private OpenSSH servers on loopback, and ssh/sftp client commands that
//! read no system or user configuration.
//!
//! `sshd` runs with `-f /dev/null` and every setting on the command line, so
//! nothing under `/etc/ssh` or `~/.ssh` is read or changed. As root it needs
//! the privilege-separation directory `/run/sshd` (created if missing), and
//! `StrictModes=no` because key files under `/tmp` fail sshd's path checks.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{current_user, free_port, is_root, next_loopback};
use crate::process::{Daemon, READY_TIMEOUT, Signal, run_checked};

/// Creates an ed25519 key pair without passphrase at `path` (private) and
/// `path.pub`, replacing any existing files, and returns the public key line
/// (`ssh-ed25519 AAAA… comment`).
pub fn ssh_keygen(path: &Path, comment: &str) -> String {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    let public = pub_path(path);
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(&public);
    run_checked(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(path));
    fs::read_to_string(&public).unwrap_or_else(|e| panic!("read {}: {e}", public.display())).trim().to_string()
}

fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Settings for [`Sshd::start`].
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Loopback address to listen on (the "host" this sshd stands for).
    pub addr: Ipv4Addr,
    /// Absolute path of the authorized_keys file, used for every user; the
    /// caller writes it (before or after start: sshd reads it per login).
    pub authorized_keys: PathBuf,
    /// Extra sshd options, each one `Key=Value` as for `-o` (a leading `-o `
    /// is tolerated). They override the harness's default for the same key.
    pub extra: Vec<String>,
}

impl SshdOptions {
    /// Options with a fresh [`next_loopback`] address and no extras.
    pub fn new(authorized_keys: impl Into<PathBuf>) -> SshdOptions {
        SshdOptions { addr: next_loopback(), authorized_keys: authorized_keys.into(), extra: Vec::new() }
    }
}

/// A private OpenSSH server (`/usr/sbin/sshd -D -e -f /dev/null …`) on
/// `addr:port`, with its own ed25519 host key in its directory and stderr
/// (LogLevel VERBOSE) in `<dir>/sshd.log`. Logins are allowed for the
/// current user (root: `prohibit-password`) with keys from
/// `authorized_keys`; the sftp subsystem is `internal-sftp`. Sessions get
/// `SHLVL=1` (`SetEnv`), so a login shell that is bash does not source the
/// user's `~/.bashrc`; `MaxStartups=100` keeps parallel tests from being
/// dropped. Both are overridable through [`SshdOptions::extra`].
///
/// Stopped (whole tree, including open sessions) on drop.
pub struct Sshd {
    dir: PathBuf,
    opts: SshdOptions,
    port: u16,
    host_key_pub: String,
    daemon: Option<Daemon>,
}

impl Sshd {
    /// Starts sshd with `dir` as its own directory (created if needed; the
    /// host key is made there on first start) and waits until it logs
    /// "Server listening".
    pub fn start(dir: &Path, opts: SshdOptions) -> Sshd {
        assert!(
            opts.authorized_keys.is_absolute(),
            "SshdOptions.authorized_keys must be absolute, got {}",
            opts.authorized_keys.display()
        );
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        if is_root() {
            // Privilege-separation directory; the package normally makes it.
            let _ = fs::create_dir_all("/run/sshd");
        }
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            ssh_keygen(&host_key, "ferry-tests-host");
        }
        let line = fs::read_to_string(pub_path(&host_key)).expect("read host public key");
        let host_key_pub = line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let port = free_port(opts.addr);
        let mut sshd = Sshd { dir: dir.to_path_buf(), opts, port, host_key_pub, daemon: None };
        sshd.spawn();
        sshd
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f", "/dev/null"]);
        let extra: Vec<String> = self
            .opts
            .extra
            .iter()
            .map(|o| o.trim().trim_start_matches("-o").trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let key_of = |o: &str| o.split(['=', ' ']).next().unwrap_or("").to_ascii_lowercase();
        let overridden: Vec<String> = extra.iter().map(|o| key_of(o)).collect();
        // sshd keeps the first value it sees for most keys, so extras go first.
        for o in &extra {
            cmd.arg("-o").arg(o);
        }
        let defaults = [
            format!("ListenAddress={}:{}", self.opts.addr, self.port),
            format!("HostKey={}", self.dir.join("ssh_host_ed25519_key").display()),
            format!("AuthorizedKeysFile={}", self.opts.authorized_keys.display()),
            "PidFile=none".to_string(),
            "StrictModes=no".to_string(),
            "UsePAM=no".to_string(),
            "PasswordAuthentication=no".to_string(),
            "KbdInteractiveAuthentication=no".to_string(),
            "PermitRootLogin=prohibit-password".to_string(),
            "Subsystem=sftp internal-sftp".to_string(),
            "LogLevel=VERBOSE".to_string(),
            // Parallel tests open many connections at once; the default
            // 10:30:100 drops some of them at random.
            "MaxStartups=100".to_string(),
            // Debian's bash sources ~/.bashrc for commands run by sshd unless
            // SHLVL is set; the test user's bashrc (pyenv, nvm, …) would make
            // every ssh command slow and environment-dependent.
            "SetEnv=SHLVL=1".to_string(),
        ];
        for o in defaults {
            if !overridden.contains(&key_of(&o)) {
                cmd.arg("-o").arg(o);
            }
        }
        let mut daemon = Daemon::spawn(
            &format!("sshd {}:{}", self.opts.addr, self.port),
            cmd,
            &self.log_path(),
            Signal::KILL,
            Duration::ZERO,
        );
        daemon.wait_for_log("Server listening", READY_TIMEOUT);
        self.daemon = Some(daemon);
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.opts.addr
    }

    /// The TCP port it listens on (kept across [`Sshd::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its own directory (host key, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user clients log in as: the user running the tests (e.g. `root`).
    pub fn user(&self) -> String {
        current_user()
    }

    /// The host public key without comment: `ssh-ed25519 AAAA…`.
    pub fn host_key_pub(&self) -> String {
        self.host_key_pub.clone()
    }

    /// A known_hosts line for this server: `[addr]:port ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.opts.addr, self.port, self.host_key_pub)
    }

    /// Writes a known_hosts file holding just [`Sshd::known_hosts_line`].
    pub fn write_known_hosts(&self, path: &Path) {
        fs::write(path, format!("{}\n", self.known_hosts_line()))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Path of the sshd log (`<dir>/sshd.log`, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// Everything sshd logged so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ssh://<user>@<addr>:<port>/<path>` (a leading `/` in `path` is
    /// kept once), e.g. for `git push` with [`git_ssh_command`].
    pub fn url(&self, path: &str) -> String {
        format!("ssh://{}@{}:{}/{}", self.user(), self.opts.addr, self.port, path.trim_start_matches('/'))
    }

    /// True while the server runs.
    pub fn is_running(&self) -> bool {
        self.daemon.as_ref().is_some_and(Daemon::is_running)
    }

    /// Stops the server and kills its open sessions, as if the host went
    /// offline. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// Stops (if running) and starts again on the same address, port and
    /// host key. Panics if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// `ssh -F /dev/null -i <key> -o IdentitiesOnly=yes -o BatchMode=yes
/// -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<known_hosts>
/// -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=30 -p <port>
/// <user>@<addr>`; append the remote command with `.arg(…)`.
pub fn ssh_cmd(key: &Path, known_hosts: &Path, sshd: &Sshd) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(client_opts(known_hosts))
        .arg("-p")
        .arg(sshd.port().to_string())
        .arg(format!("{}@{}", sshd.user(), sshd.addr()));
    cmd
}

/// Like [`ssh_cmd`] for `sftp` (`-P <port>`); add `-b <batchfile>` and
/// arguments as needed, the destination `<user>@<addr>` comes last, so use
/// [`sftp_dest`] for it: `sftp_cmd(..).args(["-b", "batch"]).arg(sftp_dest(&sshd))`.
pub fn sftp_cmd(key: &Path, known_hosts: &Path, sshd: &Sshd) -> Command {
    let mut cmd = Command::new("sftp");
    cmd.args(["-F", "/dev/null", "-i"]).arg(key).args(client_opts(known_hosts)).arg("-P").arg(sshd.port().to_string());
    cmd
}

/// A `GIT_SSH_COMMAND` value with the same hermetic options as [`ssh_cmd`]
/// (no port or destination: git adds them from the URL, see [`Sshd::url`]).
/// Paths are single-quoted, because git runs it through a shell.
pub fn git_ssh_command(key: &Path, known_hosts: &Path) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut parts = vec![
        "ssh".to_string(),
        "-F".to_string(),
        "/dev/null".to_string(),
        "-i".to_string(),
        quote(&key.display().to_string()),
    ];
    parts.extend(client_opts(known_hosts).iter().map(|o| quote(o)));
    parts.join(" ")
}

/// `<user>@<addr>` of an [`Sshd`], for [`sftp_cmd`] or git URLs.
pub fn sftp_dest(sshd: &Sshd) -> String {
    format!("{}@{}", sshd.user(), sshd.addr())
}

fn client_opts(known_hosts: &Path) -> Vec<String> {
    [
        "IdentitiesOnly=yes".to_string(),
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "ConnectTimeout=30".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}
