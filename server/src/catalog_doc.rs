//! The published catalog's document (`catalog.json`, schema
//! `ferry-catalog/1`, README "Monitoring"): the types the node writes
//! ([`crate::publish`]) and every reader parses back (`check --from`, the
//! history page, the daemon's metrics), so writer and readers share one
//! definition and none depends on another.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cadence::Verdict;

/// The schema name and version; a reader refuses any other.
pub const SCHEMA: &str = "ferry-catalog/1";
/// The file name in the publish directory.
pub const FILE: &str = "catalog.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub schema: String,
    pub node: String,
    pub generated: Timestamp,
    pub clients: Vec<ClientDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientDoc {
    pub client: String,
    pub sources: Vec<SourceDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    pub source: String,
    /// `sftp` (dumps, archives), `git`, `tree`.
    pub module: String,
    /// Declared cadence (`1d`, `push`), `null` when undeclared.
    pub cadence: Option<String>,
    /// `null` for clients that declare no sources (nothing to judge).
    pub verdict: Option<Verdict>,
    pub detail: Option<String>,
    pub last_arrival: Option<Timestamp>,
    /// Newest last, at most [`HISTORY`].
    pub artifacts: Vec<ArtifactDoc>,
    /// The newest restore drill, passed or not.
    #[serde(default)]
    pub last_drill: Option<crate::catalog::Drill>,
    /// When a drill last passed.
    #[serde(default)]
    pub last_good_drill: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDoc {
    pub received: Timestamp,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    /// Always `stored` today (rows exist only for verified artifacts).
    pub state: String,
    /// The node that stores it, in a shared catalog (`[catalog] url`);
    /// absent with a node's own SQLite catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}
