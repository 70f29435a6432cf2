//! Exit codes of `ferry-node` (documented in the README).

/// Done.
pub const OK: u8 = 0;
/// Something failed; see the message.
pub const FAILURE: u8 = 1;
/// Bad usage or configuration; nothing was changed.
pub const USAGE: u8 = 2;
/// The command ran, but some requests ended in error or a check found
/// problems (scan with failed requests, verify mismatches, stale backups).
pub const PROBLEMS: u8 = 3;

/// An error that is the caller's fault (exit [`USAGE`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
