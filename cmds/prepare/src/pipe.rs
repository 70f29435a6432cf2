//! The `pipe` module (tabacco's pipe handler, seed 004): whatever a
//! configured command writes on stdout becomes the artifact
//! `<stamp>.pipe`, byte for byte.
//!
//! The command is an argv list run without a shell (write
//! `["/bin/sh", "-c", "…"]` to get one), with the hooks' cleared environment
//! (see [`crate::hooks`]), working directory `/`, stdin `/dev/null`, the
//! source's timeout, and its stderr captured (capped) for the error message.
//!
//! Memory stays bounded whatever the stream's size: [`ferry_run::Cmd::run_to`]
//! reads the pipe in 256 KiB chunks and each chunk goes straight through the
//! hashing writer into the file — nothing accumulates
//! (`bench/pipe-memory.sh` measures it on 4 GiB). A non-zero exit fails the
//! request even if bytes were written: a truncated dump must never be
//! offered to the node as a good one.

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use ferry_run::{Cmd, RunError};
use tracing::info;

use crate::PrepareError;
use crate::export::HashingWriter;

/// The program to run: a path as given (checked to be an executable file),
/// or a bare name looked up in the runner's PATH. Checked here because the
/// runner starts the command through `setpriv` (so it dies with us), which
/// turns "no such program" into an exit status instead of a clear message.
fn resolve(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = if program.contains('/') {
        PathBuf::from(program)
    } else {
        crate::db::find_program(program)
            .ok_or_else(|| format!("cannot start {program:?}: not found in {}", ferry_run::SAFE_PATH))?
    };
    match std::fs::metadata(&p) {
        Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => Ok(p),
        Ok(_) => Err(format!("cannot start {}: not an executable file", p.display())),
        Err(e) => Err(format!("cannot start {}: {e}", p.display())),
    }
}

/// Runs `argv` and streams its stdout into `out`.
pub(crate) fn stream(
    source_name: &str,
    argv: &[String],
    env: &[(String, OsString)],
    timeout: Duration,
    out: &mut HashingWriter<File>,
) -> Result<(), PrepareError> {
    let fail = |message: String| PrepareError::Failed {
        module: "pipe".into(),
        message: format!("source {source_name}: {message}"),
    };
    let (program, args) = argv.split_first().ok_or_else(|| fail("the command is empty".into()))?;
    let program = resolve(program).map_err(&fail)?;
    let mut c = Cmd::new(&program).args(args).cwd("/").timeout(timeout).die_with_parent();
    for (k, v) in env {
        c = c.env(k, v);
    }
    info!(source = source_name, command = %c.display(), "streaming a pipe command");
    match c.run_to(out) {
        Ok(o) => {
            info!(source = source_name, bytes = o.stdout_bytes, elapsed = ?o.elapsed, "pipe command finished");
            Ok(())
        }
        Err(RunError::Spawn { source, cmd }) => Err(fail(format!("cannot start {cmd}: {source}"))),
        Err(e) => Err(fail(e.to_string())),
    }
}
