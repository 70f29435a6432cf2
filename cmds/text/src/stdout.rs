//! Standard output of Ferry's commands: the terminal and pipe sink.
//!
//! Both binaries print everything meant for a person or a script through
//! here, so two rules hold for every command:
//!
//! - **Shown once, safely.** A line is message text whose client parts were
//!   escaped when it was built; [`line`] passes it through
//!   [`crate::sanitize`], which leaves it as it is and escapes only what is
//!   not printable ASCII. JSON goes through [`crate::ascii_json`], which
//!   does not change what it decodes to. So no control or bidi character
//!   reaches a terminal, and nothing is escaped twice.
//! - **A reader that goes away is not an error.** `ferry-node events |
//!   head -1` closes the pipe early and the next write fails with `EPIPE`
//!   (Rust ignores `SIGPIPE`, so `println!` would panic and exit 101).
//!   Here the rest of the output is dropped without a message and the
//!   command ends with its own exit code (README, "Exit codes").

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output's reader has gone away.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether the reader of standard output has gone away.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Writes `text` and a newline; a broken pipe marks output closed and is
/// not an error, any other write error (a full disk behind `>`) is.
fn write(text: &str) -> std::io::Result<()> {
    if closed() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        r => r,
    }
}

/// Prints one line of message text, made safe by [`crate::sanitize`].
pub fn line(text: &str) -> std::io::Result<()> {
    write(&crate::sanitize(text, usize::MAX))
}

/// Prints serialised JSON (one document, pretty or on one line) as pure
/// ASCII ([`crate::ascii_json`]).
pub fn json(serialised: &str) -> std::io::Result<()> {
    write(&crate::ascii_json(serialised))
}

/// Prints a line of message text to standard error, made safe; a closed
/// standard error is ignored (there is nobody left to tell).
pub fn err_line(text: &str) {
    let _ = writeln!(std::io::stderr(), "{}", crate::sanitize(text, usize::MAX));
}
