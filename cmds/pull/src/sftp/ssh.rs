//! The ssh side of an sftp pull: the one hardened argv, the ControlMaster
//! socket, and what ssh's own words mean.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ferry_request::Reason;
use ferry_text::escape;

use ferry_run::ssh::SshOptions;

use super::{CIPHERS, CLOSE_WAIT, KEX, SftpEndpoint};
use crate::PullError;
/// The `ControlPath` of this endpoint's sftp master, or `None` when
/// `control_dir` is too deep for a unix socket (then no multiplexing).
pub fn control_path(ep: &SftpEndpoint) -> Option<PathBuf> {
    let key = format!(
        "sftp\0{}\0{}\0{}\0{}\0{}\0{}",
        ep.host,
        ep.port,
        ep.user,
        ep.host_key_alias,
        ep.known_hosts.display(),
        ep.identity.display()
    );
    let p = ep.control_dir.join(format!("sftp-{}", ferry_durable::short_hash(key.as_bytes())));
    ferry_run::ssh::control_socket(p)
}

/// The complete ssh argv (without the program) Ferry uses for an sftp pull:
/// the node's fixed option set (SECURITY C5, GU-20), then `-s -- host sftp`.
/// Public so that an audit test can assert it.
pub fn ssh_args(ep: &SftpEndpoint, multiplex: bool) -> Result<Vec<OsString>, PullError> {
    check_endpoint(ep)?;
    let mut o = SshOptions::new(&ep.known_hosts, ep.host_key_alias.as_str(), &ep.identity)
        .connect_timeout(ep.connect_timeout)
        .multiplex(control_path(ep).filter(|_| multiplex))
        .port(ep.port)
        .user(ep.user.as_str())
        .args();
    o.extend(["-s", "--", ep.host.as_str(), "sftp"].map(OsString::from));
    Ok(o)
}

/// Ask this endpoint's sftp master (if one runs) to exit now instead of
/// after `ControlPersist`. Returns whether a master was running.
pub fn close_master(ep: &SftpEndpoint) -> Result<bool, PullError> {
    check_endpoint(ep)?;
    let Some(p) = control_path(ep) else { return Ok(false) };
    if std::fs::symlink_metadata(&p).is_err() {
        return Ok(false);
    }
    let out = ferry_run::Cmd::new(&ep.ssh)
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("ControlPath={}", p.display()))
        .args(["-O", "exit", "--"])
        .arg(&ep.host)
        .timeout(CLOSE_WAIT)
        .run()
        .map_err(|e| PullError::new(Reason::FetchFailed, format!("ssh -O exit: {e}")))?;
    Ok(out.success())
}

/// Characters ssh would reinterpret in an `-o` value: whitespace and quotes
/// split or quote, `%` and a leading `~` expand, `#` starts a comment.
pub(super) fn plain_path(what: &str, p: &Path) -> Result<(), PullError> {
    let s = p.to_str().unwrap_or("");
    let ok = p.is_absolute()
        && !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b'@' | b'='));
    if ok {
        Ok(())
    } else {
        Err(PullError::new(
            Reason::Internal,
            format!(
                "{what} {} must be an absolute path of [A-Za-z0-9/._+,@=-] only",
                escape(&p.to_string_lossy(), 200)
            ),
        ))
    }
}

pub(super) fn check_endpoint(ep: &SftpEndpoint) -> Result<(), PullError> {
    plain_path("the ssh binary", &ep.ssh)?;
    plain_path("the known_hosts file", &ep.known_hosts)?;
    plain_path("the pull key", &ep.identity)?;
    plain_path("the ssh control dir", &ep.control_dir)?;
    let host_ok = !ep.host.is_empty()
        && !ep.host.starts_with('-')
        && ep.host.len() <= 253
        && ep.host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !host_ok {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("enrolled host {} is not a plain host name or address", escape(&ep.host, 100)),
        ));
    }
    if !ferry_text::is_safe_token(&ep.user) {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("enrolled user {} is not a plain name", escape(&ep.user, 100)),
        ));
    }
    if !ferry_text::is_safe_token(&ep.host_key_alias) {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("host key alias {} is not a plain name", escape(&ep.host_key_alias, 100)),
        ));
    }
    if ep.port == 0 {
        return Err(PullError::new(Reason::EnrolConf, "enrolled port 0".into()));
    }
    Ok(())
}

/// A bigger pipe from ssh to us: ssh can hand over more of the channel's
/// data per wake-up instead of growing (and zeroing) its own buffers, and
/// we read more per system call. Best effort: the default (64 KiB) works.
pub(super) fn grow_pipe(fd: &impl std::os::fd::AsFd, size: usize) {
    if size > 0 {
        let _ = rustix::pipe::fcntl_setpipe_size(fd, size);
    }
}

/// Options the openssh crate's builder cannot pass, for [`Transport::OpensshMux`].
pub(super) fn write_mux_config(ep: &SftpEndpoint) -> Result<PathBuf, PullError> {
    let text = format!(
        "Host *\n  HostKeyAlias {}\n  GlobalKnownHostsFile /dev/null\n  UpdateHostKeys no\n  IdentityAgent none\n  \
         ForwardAgent no\n  ForwardX11 no\n  ClearAllForwardings yes\n  PermitLocalCommand no\n  ProxyCommand none\n  \
         ServerAliveCountMax 4\n  Ciphers {CIPHERS}\n  KexAlgorithms {KEX}\n",
        ep.host_key_alias
    );
    let name = format!(
        "sftp-{}.conf",
        ferry_durable::short_hash(format!("{}\0{}\0{}", ep.host, ep.port, ep.host_key_alias).as_bytes())
    );
    std::fs::create_dir_all(&ep.control_dir).map_err(|e| PullError::io("create the ssh control dir", e))?;
    ferry_durable::write_synced_mode(&ep.control_dir, &name, text.as_bytes(), 0o600)
        .map_err(|e| PullError::io("write the sftp ssh_config", e))?;
    Ok(ep.control_dir.join(name))
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What ssh's stderr says went wrong.
pub(super) fn classify_ssh(text: &str) -> Reason {
    if text.contains("Host key verification failed")
        || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("host key is known for")
    {
        Reason::FetchHostKey
    } else if text.contains("Permission denied") || text.contains("Too many authentication failures") {
        Reason::FetchAuth
    } else if text.contains("timed out") || text.contains("Timeout, server") {
        Reason::FetchTimeout
    } else {
        Reason::FetchFailed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    pub(crate) fn endpoint(dir: &Path) -> SftpEndpoint {
        SftpEndpoint {
            ssh: "/usr/bin/ssh".into(),
            host: "127.0.0.2".into(),
            port: 2222,
            user: "ferry".into(),
            known_hosts: dir.join("known_hosts"),
            host_key_alias: "ferry-client-a".into(),
            identity: dir.join("pull_key"),
            control_dir: dir.join("ctl"),
            connect_timeout: Duration::from_secs(7),
        }
    }

    #[test]
    fn argv_is_the_hardened_option_set() {
        let ep = endpoint(Path::new("/var/lib/ferry"));
        let args: Vec<String> = ssh_args(&ep, true).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let line = args.join(" ");
        for want in [
            "-F /dev/null",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
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
            "-o ControlMaster=auto",
            "-o ControlPersist=60",
            "-o ConnectTimeout=7",
            "-o ServerAliveInterval=15",
            "-o Ciphers=aes128-gcm@openssh.com,",
            "-p 2222 -l ferry -s -- 127.0.0.2 sftp",
        ] {
            assert!(line.contains(want), "{want:?} missing from {line}");
        }
        assert!(line.ends_with("-- 127.0.0.2 sftp"));
        assert!(!line.contains("accept-new"));
    }

    #[test]
    fn deep_control_dir_disables_multiplexing() {
        let mut ep = endpoint(Path::new("/var/lib/ferry"));
        ep.control_dir = PathBuf::from(format!("/{}", "d".repeat(90)));
        assert!(control_path(&ep).is_none());
        let line: Vec<String> = ssh_args(&ep, true).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let line = line.join(" ");
        assert!(line.contains("-o ControlMaster=no -o ControlPath=none"), "{line}");
        let ep = endpoint(Path::new("/var/lib/ferry"));
        let p = control_path(&ep).unwrap();
        assert!(p.as_os_str().len() <= ferry_run::ssh::CONTROL_PATH_MAX);
        assert!(p.to_str().unwrap().starts_with("/var/lib/ferry/ctl/sftp-"), "{p:?}");
    }

    #[test]
    fn endpoint_values_that_ssh_would_reinterpret_are_refused() {
        let d = Path::new("/var/lib/ferry");
        for bad in [
            SftpEndpoint { host: "-oProxyCommand=x".into(), ..endpoint(d) },
            SftpEndpoint { host: "a b".into(), ..endpoint(d) },
            SftpEndpoint { user: "-l".into(), ..endpoint(d) },
            SftpEndpoint { host_key_alias: "a b".into(), ..endpoint(d) },
            SftpEndpoint { known_hosts: "/a b/kh".into(), ..endpoint(d) },
            SftpEndpoint { identity: "/k%d".into(), ..endpoint(d) },
            SftpEndpoint { identity: "~/.ssh/id".into(), ..endpoint(d) },
            SftpEndpoint { control_dir: "rel/ctl".into(), ..endpoint(d) },
        ] {
            assert!(ssh_args(&bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classify_ssh_messages() {
        assert_eq!(classify_ssh("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@"), Reason::FetchHostKey);
        assert_eq!(classify_ssh("Host key verification failed."), Reason::FetchHostKey);
        assert_eq!(classify_ssh("root@127.0.0.2: Permission denied (publickey)."), Reason::FetchAuth);
        assert_eq!(classify_ssh("ssh: connect to host 10.1.1.1 port 22: Connection timed out"), Reason::FetchTimeout);
        assert_eq!(classify_ssh("ssh: connect to host 127.0.0.2 port 1: Connection refused"), Reason::FetchFailed);
    }
}
