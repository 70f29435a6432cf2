//! What a module needs to know about the client it runs on.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How backup nodes reach this client's git repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitExportScheme {
    /// `ssh://user@address:port/path`, through the node's restricted pull key.
    Ssh,
    /// `git://address:port/path`, only when the node enrolled it explicitly.
    Git,
}

/// The client's export endpoint as enrolled on the nodes: every URL a module
/// emits is built from these fields, so it matches the enrollment.
#[derive(Debug, Clone)]
pub struct ExportEndpoint {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub export_dir: PathBuf,
    pub git_scheme: GitExportScheme,
    pub git_port: u16,
    /// Repositories must lie under one of these to be exported.
    pub git_roots: Vec<PathBuf>,
    /// With `git://`, the `--base-path` of the client's git daemon.
    pub git_daemon_base: Option<PathBuf>,
}

/// Everything a module invocation may use.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub client_name: &'a str,
    /// The client request id (`20261122T010203Z-ab12cd34`), also exported to
    /// scripts and hooks as `FERRY_REQUEST_ID`.
    pub request_id: &'a str,
    pub endpoint: &'a ExportEndpoint,
    pub script_dir: Option<&'a Path>,
    pub git: &'a Path,
    /// Wall-clock limit for script modules.
    pub timeout: Duration,
}
