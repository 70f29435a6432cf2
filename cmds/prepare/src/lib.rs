//! Client modules: turn one client request (`<module> <arg>`) into the node
//! requests that tell a backup node what to pull.
//!
//! The client never sends data. A module prepares whatever the node should
//! fetch — nothing for a git repository (the node mirrors it), an archive or
//! dump in the export directory for everything else — and returns the
//! request lines, already parsed into [`ferry_request::Request`] values so a
//! module can never emit a line the node's strict parser would reject.
//!
//! Built-in modules: `git`, `dummy`, plus external *script modules*: an
//! executable named after the module in the configured script directory,
//! called with the seed's interface (`$1` module, `$2` argument) and printing
//! one request line per output line (the seed's `add_queue` contract; see
//! [`script`]).
//!
//! *Data modules* work on configured sources ([`SourceSpec`]) and leave an
//! artifact in the export directory for the node to pull over sftp
//! ([`prepare_source`]): `fs` (a tree as `tar.zst`, [`fs`]), `postgresdb`
//! and `mysql` (dumps, [`db`]), `pipe` (a command's stdout, [`pipe`]), each
//! with optional `pre`/`post` commands ([`hooks`]). [`export`] owns the
//! export directory: names, the synced write discipline, retention.

pub mod changes;
pub mod context;
pub mod db;
pub mod export;
pub mod fs;
pub mod git;
pub mod hooks;
pub mod pipe;
pub mod script;
pub mod source;
pub mod tree;
pub mod tree_report;

pub use context::{Context, ExportEndpoint, GitExportScheme};
pub use export::{ArtifactInfo, HashingWriter, apply_retention, check_export_dir, list_artifacts};
pub use source::{
    DATA_MODULES, DEFAULT_KEEP, DEFAULT_TIMEOUT, Prepared, SourceKind, SourceSpec, check_source, prepare_source,
};

pub use ferry_archive::Unreadable;
use ferry_request::Request;

/// Why a module could not prepare a request. The message is shown to the
/// administrator (status, mail), so it says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("unknown module {0:?}: not built in and no executable of that name in the script directory")]
    UnknownModule(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{module}: {message}")]
    Failed { module: String, message: String },
    #[error("{module} printed an invalid request line {line}: {rejection}")]
    BadLine { module: String, line: usize, rejection: ferry_request::Rejection },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A source or the export directory is configured so that it can never
    /// work; nothing was run.
    #[error("{0}")]
    Config(String),
    /// A source's `pre` or `post` command failed.
    #[error("source {source_name}: {phase} command failed: {message}")]
    Hook { source_name: String, phase: &'static str, message: String },
    /// The client's account may not read part of an fs source: the fix is
    /// on the client (read access, or `unreadable = "skip"`), so it has a
    /// code of its own rather than a storage failure's.
    #[error(
        "E_SOURCE_UNREADABLE: source {source_name}: {path} cannot be read by account {account} ({error}); \
         give that account read access (group or ACL) or set unreadable = \"skip\" for the source"
    )]
    Unreadable { source_name: String, path: String, account: String, error: std::io::Error },
    /// The database refused the dump's account, or sudo refused to become
    /// the source's `os_user`: the fix is a role, a grant or a sudoers rule
    /// on the client, named in `fix` (README: Databases without sudo).
    /// The fix comes before `detail` (the tool's own words), so a reason
    /// cut to fit a log line or a mail still carries it.
    #[error("E_SOURCE_DB_ACCESS: source {source_name}: {problem}; {fix} (README: Databases without sudo){detail}")]
    DbAccess { source_name: String, problem: String, fix: String, detail: String },
    /// The run failed, and then its `post` command failed too: both matter.
    #[error("{first}; then {then}")]
    Then { first: Box<PrepareError>, then: Box<PrepareError> },
}

impl PrepareError {
    /// A short reason code for status output and mails.
    pub fn code(&self) -> &'static str {
        match self {
            PrepareError::UnknownModule(_) => "E_REQ_MODULE",
            PrepareError::Invalid(_) => "E_REQ_PATH",
            PrepareError::Failed { .. } => "E_PREPARE",
            PrepareError::BadLine { .. } => "E_REQ_SYNTAX",
            PrepareError::Io { .. } => "E_STORE",
            PrepareError::Config(_) => "E_CONFIG",
            PrepareError::Hook { .. } => "E_HOOK",
            PrepareError::Unreadable { .. } => ferry_request::Reason::SourceUnreadable.code(),
            PrepareError::DbAccess { .. } => ferry_request::Reason::SourceDbAccess.code(),
            PrepareError::Then { first, .. } => first.code(),
        }
    }
}

/// Names of the modules built into this crate.
pub const BUILTIN: &[&str] = &["git", "dummy"];

/// Run module `module` on `arg` and return the node requests it emits.
pub fn prepare(module: &str, arg: &str, ctx: &Context<'_>) -> Result<Vec<Request>, PrepareError> {
    match module {
        "git" => git::prepare(arg, ctx).map(|r| vec![r]),
        "dummy" => {
            let word =
                arg.parse().map_err(|e: ferry_request::Rejection| PrepareError::Invalid(format!("dummy: {e}")))?;
            Ok(vec![Request::Dummy(ferry_request::DummyRequest { word })])
        }
        m if DATA_MODULES.contains(&m) => Err(PrepareError::Invalid(format!(
            "module {m} works on configured sources: add a [[source]] with module = \"{m}\" and request it by its name"
        ))),
        other => script::prepare(other, arg, ctx),
    }
}

/// True when `module` can be handled here (built in, or a script exists).
pub fn is_known(module: &str, ctx: &Context<'_>) -> bool {
    BUILTIN.contains(&module) || script::find(module, ctx).is_some()
}
