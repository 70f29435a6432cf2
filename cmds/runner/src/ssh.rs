//! The one hardened option set for every ssh Ferry starts (SECURITY C3, C5,
//! GU-20): the client pushing its queue to a node, a node pulling git over
//! ssh, and a node's sftp puller. What differs between them (files, alias,
//! timeouts, multiplexing, port and user) is a builder parameter; what
//! hardens is the same for all:
//!
//! * no configuration file (`-F /dev/null`), no prompts (`BatchMode`);
//! * a pinned host key: strict checking against Ferry's own known_hosts
//!   under an alias, no global file, never updated by the server;
//! * exactly one key: `IdentitiesOnly`, the given `IdentityFile`, no agent;
//! * nothing forwarded, no local command, no proxy, no tty;
//! * a connection master only at the given socket (else none at all);
//! * a connect timeout and keep-alives, so a dead peer is noticed;
//! * the ciphers and key exchanges below.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Ciphers in order of preference: aes128-gcm is 1.4–1.6× faster than
/// chacha20-poly1305 on CPUs with AES-NI (CRATES.md §3).
pub const CIPHERS: &str = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com";
/// Key exchange: curve25519 first halves the handshake (0.23 s against
/// 0.44 s with sntrup761).
pub const KEX: &str = "curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com";
/// How long an idle connection master stays up for the next connection.
pub const CONTROL_PERSIST_SECS: u64 = 60;
/// `ConnectTimeout` unless the caller sets one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest `ControlPath` ssh can create: a unix socket's name holds 104
/// bytes on the strictest systems (107 on Linux), and ssh first binds the
/// socket under a name 17 bytes longer (`.` and 16 random characters)
/// before renaming it into place.
pub const CONTROL_PATH_MAX: usize = 104 - 17;

/// `socket` if ssh can create a connection master there, else `None` (no
/// multiplexing: every connection makes its own handshake, about 0.1 s
/// each). The first refusal in a process is logged as a warning naming the
/// path, so an administrator whose `state_dir` is too deep learns why
/// connections are not shared and what to change.
pub fn control_socket(socket: PathBuf) -> Option<PathBuf> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let len = socket.as_os_str().len();
    if len <= CONTROL_PATH_MAX {
        return Some(socket);
    }
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "ssh connections are not multiplexed: the control socket {} is {len} bytes, over the {CONTROL_PATH_MAX} \
             a unix socket name allows (a shorter state_dir fixes it)",
            ferry_text::escape_bytes(socket.as_os_str().as_encoded_bytes(), 200)
        );
    }
    None
}

/// The options of one ssh destination; [`SshOptions::args`] gives the argv
/// (without the program and destination), [`SshOptions::command_line`] the
/// shell line for git's `GIT_SSH_COMMAND` / `core.sshCommand`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    known_hosts: PathBuf,
    host_key_alias: String,
    identity: PathBuf,
    control_path: Option<PathBuf>,
    connect_timeout: Duration,
    port: Option<u16>,
    user: Option<String>,
}

impl SshOptions {
    /// Options for a destination whose host key is pinned in `known_hosts`
    /// under `host_key_alias`, authenticated with the key `identity` only.
    pub fn new(
        known_hosts: impl Into<PathBuf>,
        host_key_alias: impl Into<String>,
        identity: impl Into<PathBuf>,
    ) -> Self {
        SshOptions {
            known_hosts: known_hosts.into(),
            host_key_alias: host_key_alias.into(),
            identity: identity.into(),
            control_path: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            port: None,
            user: None,
        }
    }

    /// `ConnectTimeout`, in whole seconds, at least one.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Share one connection through a master at `socket`
    /// (`ControlPersist` [`CONTROL_PERSIST_SECS`]); `None` (the default)
    /// forbids any master, e.g. when the socket path would be too long.
    pub fn multiplex(mut self, socket: Option<PathBuf>) -> Self {
        self.control_path = socket;
        self
    }

    /// Whether connections share a master ([`SshOptions::multiplex`]).
    pub fn is_multiplexed(&self) -> bool {
        self.control_path.is_some()
    }

    /// `-p port` (for callers that give ssh the host alone, not a URL).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `-l user` (for callers that give ssh the host alone, not a URL).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The argv between the ssh program and the destination.
    pub fn args(&self) -> Vec<OsString> {
        let mut o: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
        let mut opt = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            let mut s = OsString::from(format!("{k}="));
            s.push(v.as_ref());
            o.push("-o".into());
            o.push(s);
        };
        opt("BatchMode", &"yes");
        opt("StrictHostKeyChecking", &"yes");
        opt("UpdateHostKeys", &"no");
        opt("UserKnownHostsFile", &self.known_hosts);
        opt("GlobalKnownHostsFile", &"/dev/null");
        opt("HostKeyAlias", &self.host_key_alias);
        opt("IdentitiesOnly", &"yes");
        opt("IdentityFile", &self.identity);
        opt("IdentityAgent", &"none");
        opt("ForwardAgent", &"no");
        opt("ForwardX11", &"no");
        opt("ClearAllForwardings", &"yes");
        opt("PermitLocalCommand", &"no");
        opt("ProxyCommand", &"none");
        opt("RequestTTY", &"no");
        match &self.control_path {
            Some(socket) => {
                opt("ControlMaster", &"auto");
                opt("ControlPath", socket);
                opt("ControlPersist", &CONTROL_PERSIST_SECS.to_string());
            }
            None => {
                opt("ControlMaster", &"no");
                opt("ControlPath", &"none");
            }
        }
        opt("ConnectTimeout", &self.connect_timeout.as_secs().max(1).to_string());
        opt("ServerAliveInterval", &"15");
        opt("ServerAliveCountMax", &"4");
        opt("Ciphers", &CIPHERS);
        opt("KexAlgorithms", &KEX);
        if let Some(p) = self.port {
            o.extend(["-p".into(), p.to_string().into()]);
        }
        if let Some(u) = &self.user {
            o.extend(["-l".into(), u.into()]);
        }
        o
    }

    /// `ssh` and [`SshOptions::args`] as one shell line, each word quoted
    /// where the shell would otherwise split or expand it. `None` when a
    /// path is not UTF-8 (a shell line is text).
    pub fn command_line(&self, ssh: &Path) -> Option<String> {
        let mut line = shell_word(ssh.to_str()?);
        for a in self.args() {
            line.push(' ');
            line.push_str(&shell_word(a.to_str()?));
        }
        Some(line)
    }
}

/// `s` as one shell word: unchanged when it holds only characters the
/// shell takes literally, else single-quoted.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b'@' | b'=' | b':')
        });
    if plain { s.to_owned() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SshOptions {
        SshOptions::new("/var/lib/ferry/known_hosts", "ferry-client-a", "/var/lib/ferry/pull_key")
    }

    fn line(o: &SshOptions) -> String {
        o.args().into_iter().map(|a| a.into_string().unwrap()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_control_socket_ssh_cannot_create_is_not_used() {
        let fits = PathBuf::from(format!("/{}", "s".repeat(CONTROL_PATH_MAX - 1)));
        assert_eq!(control_socket(fits.clone()), Some(fits));
        let deep = PathBuf::from(format!("/{}", "s".repeat(CONTROL_PATH_MAX)));
        assert_eq!(control_socket(deep.clone()), None);
        // Refused every time, not only the first (only the warning is once).
        assert_eq!(control_socket(deep), None);
    }

    #[test]
    fn every_hardening_option_is_set() {
        let l = line(&opts());
        for want in [
            "-F /dev/null",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o UpdateHostKeys=no",
            "-o UserKnownHostsFile=/var/lib/ferry/known_hosts",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o HostKeyAlias=ferry-client-a",
            "-o IdentitiesOnly=yes",
            "-o IdentityFile=/var/lib/ferry/pull_key",
            "-o IdentityAgent=none",
            "-o ForwardAgent=no",
            "-o ForwardX11=no",
            "-o ClearAllForwardings=yes",
            "-o PermitLocalCommand=no",
            "-o ProxyCommand=none",
            "-o RequestTTY=no",
            "-o ControlMaster=no -o ControlPath=none",
            "-o ConnectTimeout=15",
            "-o ServerAliveInterval=15",
            "-o ServerAliveCountMax=4",
            &format!("-o Ciphers={CIPHERS}"),
            &format!("-o KexAlgorithms={KEX}"),
        ] {
            assert!(l.contains(want), "{want:?} missing from {l}");
        }
        assert!(l.starts_with("-F /dev/null "), "{l}");
        assert!(!l.contains("accept-new") && !l.contains(" -p ") && !l.contains(" -l "), "{l}");
    }

    #[test]
    fn caller_values_are_parameters() {
        let o = opts()
            .connect_timeout(Duration::from_secs(20))
            .multiplex(Some("/run/ferry/ctl/abc".into()))
            .port(2222)
            .user("ferry");
        let l = line(&o);
        assert!(l.contains("-o ConnectTimeout=20"), "{l}");
        assert!(l.contains("-o ControlMaster=auto -o ControlPath=/run/ferry/ctl/abc -o ControlPersist=60"), "{l}");
        assert!(!l.contains("ControlMaster=no"), "{l}");
        assert!(l.ends_with("-p 2222 -l ferry"), "{l}");
        // A zero timeout would mean "the system's" to ssh: one second.
        assert!(line(&opts().connect_timeout(Duration::ZERO)).contains("-o ConnectTimeout=1 "));
    }

    #[test]
    fn command_line_is_split_back_into_the_same_words_by_the_shell() {
        let o =
            SshOptions::new("/st ate/known hosts", "ferry-node-n1", "/st'ate/key").multiplex(Some("/ctl/$HOME".into()));
        let cl = o.command_line(Path::new("/usr/bin/ssh")).unwrap();
        assert!(cl.starts_with("/usr/bin/ssh -F /dev/null -o BatchMode=yes "), "{cl}");
        let out = crate::Cmd::new("/bin/sh")
            .arg("-c")
            .arg(format!("set -- {cl}; for a; do printf '%s\\n' \"$a\"; done"))
            .run_checked()
            .unwrap();
        let mut want = vec!["/usr/bin/ssh".to_owned()];
        want.extend(o.args().into_iter().map(|a| a.into_string().unwrap()));
        assert_eq!(out.stdout_str().lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/usr/bin/ssh"), "/usr/bin/ssh");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$x"), "'$x'");
    }
}
