//! Node modules: what a backup node does to pull a client's data.
//!
//! * [`git`] mirrors a repository with the git CLI under the hardened
//!   configuration of SECURITY C3;
//! * [`sftp`] downloads one prepared file over the node's own SSH (pinned
//!   host key, per-client key, read-only sftp), verifying size and SHA-256
//!   before it is stored (SECURITY C5, SF-01..06).
//!
//! Every function here takes URLs and paths the caller rebuilt from
//! validated request fields and enrolled facts; nothing in this crate parses
//! client text.

pub mod git;
pub mod sftp;

use ferry_request::Reason;

/// A failed pull, with the reason code that ends the request in `E`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct PullError {
    pub reason: Reason,
    pub message: String,
}

impl PullError {
    pub fn new(reason: Reason, message: String) -> PullError {
        PullError { reason, message }
    }

    /// A local I/O failure; a full disk gets its own code.
    pub fn io(what: &str, e: std::io::Error) -> PullError {
        let reason = if ferry_durable::is_disk_full(&e) { Reason::DiskFull } else { Reason::Store };
        PullError { reason, message: format!("{what}: {e}") }
    }
}
