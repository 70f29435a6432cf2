//! Running one job as a child `ferry-node --config <same> --json <job>`
//! through the runner (deadline, process-group kill, dies with the daemon).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Job, NodeConfig};
use crate::exit;

/// How a child run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Option<i32>,
    pub status: String,
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    /// Completed: exit 0, or 3 (done, problems found).
    pub fn completed(&self) -> bool {
        matches!(self.exit, Some(c) if c == i32::from(exit::OK) || c == i32::from(exit::PROBLEMS))
    }
}

/// The program the jobs run: this very executable, unless it was replaced
/// on disk since it started (an upgrade; `/proc/self/exe` then names a
/// deleted file), in which case the configured program.
pub fn job_program(cfg: &NodeConfig) -> PathBuf {
    match std::env::current_exe() {
        Ok(p) if p.is_file() => p,
        _ => cfg.program(),
    }
}

/// Run one job as a child and wait for it.
pub fn run_child(
    program: &Path,
    config_path: &Path,
    job: Job,
    deadline: Option<Duration>,
    kill: Arc<AtomicBool>,
) -> Outcome {
    let start = Instant::now();
    let mut cmd = ferry_run::Cmd::new(program)
        .arg("--config")
        .arg(config_path)
        .arg("--json")
        .arg(job.name())
        .timeout_opt(deadline)
        .stdout_cap(64 * 1024)
        .die_with_parent()
        .watch(Duration::from_millis(200), move || {
            kill.load(Ordering::Relaxed).then(|| "the daemon is stopping".to_owned())
        });
    // The children's environment is cleared like every child's; these are
    // what a cron job would have and what the jobs' logging reads.
    for k in ["HOME", "USER", "LOGNAME", "TZ", "FERRY_LOG"] {
        if let Some(v) = std::env::var_os(k) {
            cmd = cmd.env(k, v);
        }
    }
    match cmd.run() {
        Ok(out) => {
            let code = out.status.code();
            let ok = matches!(code, Some(c) if c == i32::from(exit::OK) || c == i32::from(exit::PROBLEMS));
            let err = out.stderr_excerpt();
            Outcome {
                exit: code,
                status: ferry_run::describe_status(&out.status),
                error: (!ok && !err.is_empty()).then_some(err),
                elapsed: out.elapsed,
            }
        }
        Err(e) => {
            let status = match &e {
                ferry_run::RunError::TimedOut { .. } => "deadline",
                ferry_run::RunError::Stopped { .. } => "stopped",
                ferry_run::RunError::Spawn { .. } => "not started",
                _ => "error",
            };
            Outcome {
                exit: None,
                status: status.into(),
                error: Some(ferry_text::sanitize(&e.to_string(), 600)),
                elapsed: start.elapsed(),
            }
        }
    }
}
