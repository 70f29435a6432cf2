//! Errors, one variant per thing a caller does differently: fix the config,
//! fix the caller's alert, look at the disk, or just log and retry later.

use std::io;
use std::path::PathBuf;

/// Why the notifier could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The `[mail]` section is wrong; `field` names the offending key.
    #[error("[mail] {field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// The alert itself is malformed (a caller bug: keys are built from
    /// validated tokens). Nothing was written.
    #[error("alert not raised: {0}")]
    InvalidAlert(String),
    /// Reading or writing the outbox failed.
    #[error("notify outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another flush held the outbox lock for too long.
    #[error(transparent)]
    Lock(#[from] ferry_durable::LockError),
    /// The transport did not accept the mail. Nothing was lost: the alerts
    /// stay in the outbox and the next flush tries again.
    #[error("mail not delivered, {pending} alert(s) kept for the next flush: {reason}")]
    Transport { reason: String, pending: usize },
}

impl NotifyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> NotifyError {
        NotifyError::Io { path: path.into(), source }
    }
}
