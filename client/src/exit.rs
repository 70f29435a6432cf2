//! Exit codes, one table for scripts and cron (documented in the README).

/// Everything asked for was done.
pub const OK: u8 = 0;
/// Something failed (a module, an I/O error); see the message.
pub const FAILURE: u8 = 1;
/// Bad usage or configuration: unknown module, node or source, invalid or
/// missing config. Nothing was changed.
pub const USAGE: u8 = 2;
/// Work is queued but not delivered (a node is unreachable or backing off);
/// it will be retried by the next `send`.
pub const UNDELIVERED: u8 = 3;

/// An error that is the caller's fault (exit [`USAGE`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand to return a [`UsageError`].
pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(msg.into()).into())
}
