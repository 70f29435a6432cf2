//! The ways of starting a program other than running it to completion:
//! replacing this process, starting it detached, and (feature `tokio`)
//! starting it with async pipes. Each begins from the same [`Cmd::base`]
//! as [`Cmd::run`], so the environment rules are the same everywhere: a
//! cleared environment with `PATH`, `LANG`, `LC_ALL` and only the variables
//! the caller set or passed through by name.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::{Cmd, RunError};

impl Cmd {
    /// Replace this process with the command (the forced commands `ferry
    /// gate` and `ferry-node serve` become git or sftp-server this way, so
    /// sshd's pipes reach them directly). Standard input, output and error
    /// are this process's. Returns only when exec failed, with why.
    pub fn exec(self) -> RunError {
        let cmd = self.display();
        let source = self.base().exec();
        RunError::Spawn { cmd, source }
    }

    /// Start the command in its own process group and do not wait for it
    /// (a hook's background job: the pusher must not wait, and a signal to
    /// the pusher's terminal group must not reach it). Standard input is
    /// `/dev/null`; standard output and error are appended to `log`, or go
    /// to `/dev/null` without one. The returned child may be dropped: it is
    /// not killed then.
    pub fn spawn_detached(self, log: Option<&Path>) -> Result<Child, RunError> {
        let cmd = self.display();
        let io = |source| RunError::Spawn { cmd: cmd.clone(), source };
        let mut c = self.base();
        c.process_group(0).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
                c.stdout(f.try_clone().map_err(io)?).stderr(f);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        c.spawn().map_err(io)
    }

    /// Start the command for async use: piped standard input, output and
    /// error, its own process group, killed when the returned child is
    /// dropped (the sftp puller talks the sftp protocol over ssh's pipes).
    /// Deadlines and capping are the caller's then.
    #[cfg(feature = "tokio")]
    pub fn spawn_async(self) -> Result<tokio::process::Child, RunError> {
        let cmd = self.display();
        let mut c = self.build();
        c.stdin(Stdio::piped());
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(true);
        c.spawn().map_err(|source| RunError::Spawn { cmd, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SAFE_PATH;

    /// Set in the re-run of this test binary that execs (see below).
    const EXEC_CHILD: &str = "FERRY_RUN_TEST_EXEC_CHILD";

    /// exec can only be watched from outside: the test binary runs itself
    /// again with only this test selected and a hostile environment, and
    /// that run execs `env`, whose output is what exec gave the program.
    #[test]
    fn exec_replaces_the_process_with_the_cleared_environment() {
        if std::env::var_os(EXEC_CHILD).is_some() {
            let e = Cmd::new("/usr/bin/env").env("FERRY_SET", "set").pass_env(&["FERRY_PASSED", "FERRY_UNSET"]).exec();
            panic!("exec failed: {e}");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "launch::tests::exec_replaces_the_process_with_the_cleared_environment"])
            .args(["--nocapture", "--quiet", "--test-threads=1"])
            .env(EXEC_CHILD, "1")
            .env("FERRY_PASSED", "passed")
            .env("GIT_SSH_COMMAND", "/tmp/hostile")
            .env("FERRY_HOSTILE", "hostile")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let env: Vec<&str> = stdout.lines().filter(|l| l.contains('=')).collect();
        for want in ["FERRY_SET=set", "FERRY_PASSED=passed", "LANG=C", "LC_ALL=C", &format!("PATH={SAFE_PATH}")] {
            assert!(env.contains(&want), "{want} missing: {env:?}");
        }
        for gone in ["GIT_SSH_COMMAND=", "FERRY_HOSTILE=", "HOME=", EXEC_CHILD, "FERRY_UNSET"] {
            assert!(!env.iter().any(|l| l.starts_with(gone)), "{gone} reached the program: {env:?}");
        }
        // No "test ... ok" line: the test process became `env`.
        assert!(!stdout.contains("test result"), "{stdout}");
    }

    #[test]
    fn exec_of_a_missing_program_returns_the_error() {
        let e = Cmd::new("/nonexistent/ferry-x").exec();
        assert!(matches!(&e, RunError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{e}");
    }

    #[test]
    fn detached_child_has_its_own_group_null_stdin_and_the_cleared_environment() {
        let dir = std::env::temp_dir().join(format!("ferry-run-detached-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("child.log");
        std::fs::write(&log, "before\n").unwrap();
        let script =
            "env; echo pid=$$ pgrp=$(cut -d' ' -f5 /proc/$$/stat) stdin=$(readlink /proc/$$/fd/0); echo oops >&2";
        let mut child =
            Cmd::new("/bin/sh").args(["-c", script]).env("FERRY_SET", "set").spawn_detached(Some(&log)).unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.starts_with("before\n"), "the log is appended to: {text}");
        assert!(text.contains(&format!("pid={pid} pgrp={pid} stdin=/dev/null")), "{text}");
        assert!(text.contains("FERRY_SET=set") && text.contains("LANG=C"), "{text}");
        assert!(!text.contains("HOME="), "{text}");
        assert!(text.contains("oops"), "stderr goes to the log too: {text}");
    }

    #[test]
    fn detached_without_a_log_writes_nowhere() {
        let script = "echo x; test \"$(readlink /proc/$$/fd/1)\" = /dev/null";
        let mut child = Cmd::new("/bin/sh").args(["-c", script]).spawn_detached(None).unwrap();
        assert!(child.wait().unwrap().success(), "stdout is /dev/null");
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn async_spawn_has_piped_stdio_and_the_cleared_environment() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut child = Cmd::new("/bin/sh")
                .args(["-c", "read line; echo got=$line; env; echo err >&2"])
                .env("FERRY_SET", "set")
                .spawn_async()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"hello\n").await.unwrap();
            drop(stdin);
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
            assert!(child.wait().await.unwrap().success());
            assert!(out.starts_with("got=hello\n"), "{out}");
            assert!(out.contains("FERRY_SET=set") && !out.contains("HOME="), "{out}");
            assert_eq!(err, "err\n");
        });
    }
}
