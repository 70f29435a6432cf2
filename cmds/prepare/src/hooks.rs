//! Per-source `pre` and `post` commands (tabacco's `pre_backup_command` /
//! `post_backup_command`, seed 004).
//!
//! Unlike tabacco, the commands are **argv lists run without a shell**:
//! `pre = ["/usr/bin/systemctl", "stop", "app"]`. An administrator who wants
//! shell syntax writes it explicitly (`["/bin/sh", "-c", "…"]`), so nothing
//! is ever word-split or expanded by accident.
//!
//! Contract (documented for administrators):
//!
//! * cleared environment (`PATH=/usr/local/bin:/usr/bin:/bin`, `LANG=C`,
//!   `HOME` of the client account) plus `FERRY_SOURCE`, `FERRY_MODULE`,
//!   `FERRY_REQUEST_ID`, `FERRY_CLIENT`, `FERRY_EXPORT_DIR`; working
//!   directory `/`; stdin is `/dev/null`; the source's timeout applies.
//!   The environment is cleared so a command behaves the same whether
//!   `ferry send` runs from cron, from a git hook (which would leak
//!   `GIT_DIR`) or from an administrator's terminal.
//! * `pre` runs before the dump; a non-zero exit fails the request, with
//!   the command's stderr (escaped, capped) in the reason, and no dump is
//!   made.
//! * `post` runs after every attempt — after success, after a failed dump
//!   and after a failed `pre` (so a `pre` that half-stopped a service is
//!   undone) — with `FERRY_STATUS=ok` or `failed` (and `FERRY_WARNINGS`,
//!   one per line, when an fs source left unreadable entries out); on success also
//!   `FERRY_ARTIFACT` (absolute path), `FERRY_SHA256`, `FERRY_SIZE`; on
//!   failure `FERRY_ERROR` (the reason, escaped). A failing `post` fails the
//!   request too: the artifact is deleted and no request is sent, because
//!   a post command is usually what makes the source consistent again
//!   (restarting a service), and an administrator must hear about it.

use std::ffi::OsString;
use std::time::Duration;

use ferry_run::{Cmd, RunError};
use tracing::{debug, info};

use crate::PrepareError;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

/// Most stdout kept from a hook (it is only logged).
const HOOK_STDOUT_CAP: usize = 16 * 1024;

/// Runs one hook command. `env` is added to the cleared environment.
pub fn run(
    source_name: &str,
    phase: Phase,
    argv: &[String],
    env: &[(String, OsString)],
    timeout: Duration,
) -> Result<(), PrepareError> {
    let fail =
        |message: String| PrepareError::Hook { source_name: source_name.to_owned(), phase: phase.as_str(), message };
    let (program, args) = argv.split_first().ok_or_else(|| fail("the command is empty".into()))?;
    let mut cmd = Cmd::new(program).args(args).cwd("/").timeout(timeout).stdout_cap(HOOK_STDOUT_CAP);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let shown = cmd.display();
    info!(source = source_name, phase = phase.as_str(), command = %shown, "running hook");
    let out = cmd.run().map_err(|e| {
        fail(match e {
            RunError::Spawn { source, .. } => format!("cannot start {shown}: {source}"),
            other => other.to_string(),
        })
    })?;
    if !out.stdout.is_empty() {
        debug!(source = source_name, phase = phase.as_str(), stdout = %ferry_text::escape_bytes(&out.stdout, 2000), "hook output");
    }
    if !out.success() {
        return Err(fail(format!(
            "{shown} exited with {}: {}",
            ferry_run::describe_status(&out.status),
            out.stderr_excerpt()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn failing_hook_reports_escaped_stderr() {
        let e = run(
            "src",
            Phase::Pre,
            &argv(&["/bin/sh", "-c", "printf 'db is \\033[31mlocked\\n' >&2; exit 7"]),
            &[],
            Duration::from_secs(10),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("pre command failed"), "{msg}");
        assert!(msg.contains("exit 7"), "{msg}");
        assert!(msg.contains("db is \\x1B[31mlocked"), "{msg}");
        assert_eq!(e.code(), "E_HOOK");
    }

    #[test]
    fn hook_gets_only_its_environment() {
        let dir = std::env::temp_dir().join(format!("ferry-prepare-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("env");
        run(
            "src",
            Phase::Post,
            &argv(&["/bin/sh", "-c", "env > \"$1\"; pwd >> \"$1\"", "sh", out.to_str().unwrap()]),
            &[("FERRY_SOURCE".into(), "src".into())],
            Duration::from_secs(10),
        )
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("FERRY_SOURCE=src"), "{text}");
        assert!(!text.contains("CARGO"), "{text}");
        assert!(text.lines().last() == Some("/"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_program_and_timeout_are_hook_errors() {
        let e = run("s", Phase::Pre, &argv(&["/nonexistent/x"]), &[], Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
        let e = run("s", Phase::Post, &argv(&["/bin/sleep", "5"]), &[], Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        let e = run("s", Phase::Post, &[], &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
