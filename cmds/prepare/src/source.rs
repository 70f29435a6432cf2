//! Configured data sources (`[[source]]` with module `fs`, `postgresdb`,
//! `mysql` or `pipe`): run the source's hooks and module, leave one
//! artifact in the export directory, and return the `sftp` request that
//! tells a node to pull it.
//!
//! One run of [`prepare_source`]:
//!
//! 1. [`check_source`]: every configured value the node or the tools will
//!    see is checked *before* anything runs, so a misconfiguration costs a
//!    clear message, not a two-hour dump followed by a rejected request;
//! 2. `<export_dir>/<source>/` is created (0750) and its lock taken, so two
//!    runs of one source (for two nodes, from two `send`s) never dump at
//!    the same time nor race on retention; temporary files of a crashed run
//!    are removed;
//! 3. `pre` runs (see [`crate::hooks`]);
//! 4. the module streams its output into `.tmp-<stamp>-<pid>-<n>`, hashed
//!    and counted on the way; the file is synced and renamed to
//!    `<stamp>.<ext>` (see [`crate::export`]);
//! 5. `post` runs, after success or failure;
//! 6. on success, retention keeps at most `keep` artifacts, never deleting
//!    one the caller's guard still needs;
//! 7. the request: `sftp <stamp> sftp://<user>@<address>:<port><path>
//!    sha256=<hex> size=<n> source=<name>`.
//!
//! Artifacts per module: `fs` → `tar.zst`; `postgresdb` → `pgdump`
//! (`pg_dump --format=custom`) or `pgdumpall.sql.zst` (whole cluster,
//! `pg_dumpall`); `mysql` → `mysqldump.sql.zst`; `pipe` → `pipe` (raw bytes). See [`crate::db`] for
//! why plain SQL is stored compressed.
//!
//! Timeouts: `timeout` bounds `pre` plus the dump together; `post` gets a
//! fresh `timeout` of its own, so cleanup still runs after a dump that hit
//! its deadline. ([`crate::Context::timeout`], the client's limit for
//! script modules, is not used here.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_durable::Lock;
use ferry_request::{Host, Name, RemotePath, Request, SftpRequest, SftpUrl, Stamp, User};
use tracing::{info, warn};

use crate::export::{self, Artifact, ArtifactInfo, LONGEST_EXT};
use crate::hooks::{self, Phase};
use crate::{Context, ExportEndpoint, PrepareError, db, fs, pipe};
use ferry_archive::CreateOptions;

/// Artifacts kept per source when the configuration says nothing.
pub const DEFAULT_KEEP: usize = 3;
/// Time limit of one source run when the configuration says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// The modules handled here (they need a configured source).
pub const DATA_MODULES: &[&str] = &["fs", "postgresdb", "mysql", "pipe"];

/// One configured source, module-specific options resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Validated name token; becomes the storage name on the node and the
    /// directory `<export_dir>/<name>`.
    pub name: String,
    pub kind: SourceKind,
    /// Command (argv, no shell) run before the dump; see [`crate::hooks`].
    pub pre: Option<Vec<String>>,
    /// Command (argv, no shell) run after every attempt.
    pub post: Option<Vec<String>>,
    /// Artifacts kept in the export directory for this source (at least 1;
    /// default [`DEFAULT_KEEP`]).
    pub keep: usize,
    /// Limit for `pre` + dump (and, separately, for `post`).
    pub timeout: Duration,
}

impl SourceSpec {
    /// A source with the defaults: no hooks, [`DEFAULT_KEEP`],
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(name: impl Into<String>, kind: SourceKind) -> SourceSpec {
        SourceSpec { name: name.into(), kind, pre: None, post: None, keep: DEFAULT_KEEP, timeout: DEFAULT_TIMEOUT }
    }
}

/// What a source backs up and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory tree, as `tar.zst`. `unreadable`: what an entry the
    /// client's account may not read does (fail the run, or leave it out
    /// with a warning).
    Fs {
        root: PathBuf,
        include: Vec<PathBuf>,
        exclude: Vec<String>,
        xattrs: bool,
        one_file_system: bool,
        unreadable: ferry_archive::Unreadable,
        /// `mode = "tree"`: the tree is described by a manifest
        /// (`<stamp>.ftree`, [`crate::tree`]) instead of archived, with the
        /// hash cache at this path (under the client's `state_dir`).
        /// `None`: `mode = "tar"`, one `tar.zst`.
        tree_cache: Option<PathBuf>,
    },
    /// `pg_dump -Fc` of one database, or `pg_dumpall` when `database` is
    /// `None`. `socket` is the socket directory (or the socket file).
    Postgres {
        database: Option<String>,
        os_user: Option<String>,
        host: Option<String>,
        port: Option<u16>,
        socket: Option<PathBuf>,
    },
    /// `mysqldump` (or `mariadb-dump`) of one database, or
    /// `--all-databases` when `database` is `None`.
    Mysql {
        database: Option<String>,
        os_user: Option<String>,
        host: Option<String>,
        port: Option<u16>,
        socket: Option<PathBuf>,
    },
    /// A command's stdout, stored raw.
    Pipe {
        /// argv, no shell.
        command: Vec<String>,
    },
}

impl SourceKind {
    /// The module name (`FERRY_MODULE`, the `module` key in the client
    /// configuration).
    pub fn module(&self) -> &'static str {
        match self {
            SourceKind::Fs { .. } => "fs",
            SourceKind::Postgres { .. } => "postgresdb",
            SourceKind::Mysql { .. } => "mysql",
            SourceKind::Pipe { .. } => "pipe",
        }
    }

    /// The artifact's extension.
    pub fn extension(&self) -> &'static str {
        match self {
            SourceKind::Fs { tree_cache: Some(_), .. } => crate::tree::EXTENSION,
            SourceKind::Fs { .. } => "tar.zst",
            SourceKind::Postgres { database: Some(_), .. } => "pgdump",
            // Distinct extensions, so the node knows which tool restores them.
            SourceKind::Postgres { database: None, .. } => "pgdumpall.sql.zst",
            SourceKind::Mysql { .. } => "mysqldump.sql.zst",
            SourceKind::Pipe { .. } => "pipe",
        }
    }
}

fn config(spec_name: &str, msg: impl std::fmt::Display) -> PrepareError {
    PrepareError::Config(format!("source {}: {msg}", ferry_text::escape(spec_name, 120)))
}

/// An OS account name as `useradd` accepts them; never an option.
fn valid_os_user(u: &str) -> bool {
    let b = u.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-' || (c == b'$' && i == b.len() - 1)
        })
}

/// A value handed to a dump tool as one argument: not empty, no control
/// characters, not something the tool would read as an option.
fn check_value(spec: &str, what: &str, v: &str) -> Result<(), PrepareError> {
    if v.is_empty() {
        return Err(config(spec, format!("{what} is empty")));
    }
    if v.starts_with('-') {
        return Err(config(spec, format!("{what} {:?} starts with '-'", ferry_text::escape(v, 100))));
    }
    if v.chars().any(char::is_control) {
        return Err(config(spec, format!("{what} contains control characters")));
    }
    Ok(())
}

fn check_db(
    spec: &str,
    database: Option<&str>,
    os_user: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    socket: Option<&Path>,
) -> Result<(), PrepareError> {
    if let Some(db) = database {
        check_value(spec, "database", db)?;
    }
    if let Some(u) = os_user
        && !valid_os_user(u)
    {
        return Err(config(spec, format!("os_user {:?} is not a valid account name", ferry_text::escape(u, 64))));
    }
    if let Some(h) = host {
        check_value(spec, "host", h)?;
        if h.contains(char::is_whitespace) {
            return Err(config(spec, "host contains spaces"));
        }
    }
    if port == Some(0) {
        return Err(config(spec, "port 0 is not a port"));
    }
    if let Some(s) = socket {
        if !s.is_absolute() {
            return Err(config(spec, format!("socket {} must be an absolute path", s.display())));
        }
        if host.is_some() {
            return Err(config(spec, "set either host (TCP) or socket, not both"));
        }
    }
    Ok(())
}

fn check_argv(spec: &str, what: &str, argv: &[String]) -> Result<(), PrepareError> {
    match argv.first() {
        None => Err(config(spec, format!("{what} is empty; give the program and its arguments as a list"))),
        Some(p) if p.is_empty() => Err(config(spec, format!("{what}: the program name is empty"))),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => Err(config(spec, format!("{what} contains a NUL byte"))),
        Some(_) => Ok(()),
    }
}

/// The upload-side sanity check of one source: everything the node's
/// request parser and the dump tools will see, checked without running
/// anything. Also what [`prepare_source`] does first. Messages say what to
/// change.
pub fn check_source(spec: &SourceSpec, endpoint: &ExportEndpoint) -> Result<(), PrepareError> {
    let n = spec.name.as_str();
    Name::parse(n).map_err(|e| {
        config(n, format!("the name becomes a storage name on the node; use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 bytes ({e})"))
    })?;
    if ferry_request::is_reserved_source(n) {
        return Err(config(
            n,
            format!(
                "the name is one a node keeps for its own directories ({}, in any letter case); rename the source",
                ferry_request::RESERVED_SOURCE_NAMES.join(", ")
            ),
        ));
    }
    let export = export::check_export_dir(&endpoint.export_dir)?;
    let longest = format!("{export}/{n}/{}.{LONGEST_EXT}", Stamp::from_unix(0));
    RemotePath::parse(&longest).map_err(|e| {
        config(n, format!("artifact paths like {longest} would be refused by the nodes ({e}); shorten export.dir or the source name"))
    })?;
    User::parse(&endpoint.user).map_err(|e| config(n, format!("export.user cannot be named in a request: {e}")))?;
    Host::parse(&endpoint.address)
        .map_err(|e| config(n, format!("export.address cannot be named in a request: {e}")))?;
    if endpoint.port == 0 {
        return Err(config(n, "export.port 0 is not a port"));
    }
    if spec.keep == 0 {
        return Err(config(n, "keep must be at least 1 (the artifact just made is always kept)"));
    }
    if spec.timeout.is_zero() {
        return Err(config(n, "timeout must be longer than zero"));
    }
    if let Some(pre) = &spec.pre {
        check_argv(n, "pre", pre)?;
    }
    if let Some(post) = &spec.post {
        check_argv(n, "post", post)?;
    }
    match &spec.kind {
        SourceKind::Fs { root, include, exclude, xattrs, one_file_system, tree_cache, .. } => {
            fs::create_options(root, include, exclude, *xattrs, *one_file_system, &endpoint.export_dir)
                .map_err(|m| config(n, m))?;
            if tree_cache.is_some() {
                crate::tree::check_root(n, root)?;
            }
        }
        SourceKind::Postgres { database, os_user, host, port, socket }
        | SourceKind::Mysql { database, os_user, host, port, socket } => {
            check_db(n, database.as_deref(), os_user.as_deref(), host.as_deref(), *port, socket.as_deref())?;
        }
        SourceKind::Pipe { command } => check_argv(n, "command", command)?,
    }
    Ok(())
}

/// The environment every command of a source run gets (hooks and pipe
/// commands), on top of the runner's cleared one.
fn base_env(spec: &SourceSpec, ctx: &Context<'_>, export_dir: &Path) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![
        ("FERRY_SOURCE".into(), spec.name.clone().into()),
        ("FERRY_MODULE".into(), spec.kind.module().into()),
        ("FERRY_REQUEST_ID".into(), ctx.request_id.into()),
        ("FERRY_CLIENT".into(), ctx.client_name.into()),
        ("FERRY_EXPORT_DIR".into(), export_dir.as_os_str().to_owned()),
    ];
    env.extend(home_env());
    env
}

/// `HOME` of the client account, so `~/.pgpass`, `~/.my.cnf` and the
/// administrator's scripts find their files.
fn home_env() -> Option<(String, OsString)> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| ("HOME".to_owned(), h))
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> PrepareError {
    move |source| PrepareError::Io { context, source }
}

/// Produce the artifact for `spec` in the export directory and return the
/// sftp request for it (exactly one), with the run's warnings. `keep_guard(path)` must return true
/// for an artifact whose request is not yet acknowledged by every node:
/// retention never deletes those. The paths it is asked about are spelled
/// exactly as in the requests (`url.path`: the export directory in the
/// canonical form [`crate::check_export_dir`] returns), so comparing with
/// the paths of queued requests is a plain equality.
///
/// Errors: [`PrepareError::Config`] for a source that can never work as
/// configured (nothing was run), [`PrepareError::Hook`] for a failing
/// `pre`/`post`, [`PrepareError::Failed`] for a failing dump (with the
/// tool's stderr), [`PrepareError::Io`] for the export directory. A failed
/// run leaves no file behind.
pub fn prepare_source(
    spec: &SourceSpec,
    ctx: &Context<'_>,
    keep_guard: &dyn Fn(&Path) -> bool,
) -> Result<Prepared, PrepareError> {
    check_source(spec, ctx.endpoint)?;
    let ep = ctx.endpoint;
    let export_remote = export::check_export_dir(&ep.export_dir)?;
    let export_dir = PathBuf::from(export_remote.as_str());
    let dir = export::source_dir(&export_dir, &spec.name);
    export::ensure_dir(&export_dir).map_err(io_err(format!("creating export directory {}", export_dir.display())))?;
    export::ensure_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;

    let lock_path = dir.join(export::LOCK_NAME);
    let _lock = Lock::acquire_timeout(&lock_path, spec.timeout).map_err(|e| PrepareError::Failed {
        module: spec.kind.module().into(),
        message: format!("source {}: another run of this source did not finish in time: {e}", spec.name),
    })?;
    export::remove_stale_tmp(&dir).map_err(io_err(format!("cleaning {}", dir.display())))?;

    let deadline = Instant::now() + spec.timeout;
    let env = base_env(spec, ctx, &export_dir);
    let attempt = (|| {
        if let Some(pre) = &spec.pre {
            hooks::run(&spec.name, Phase::Pre, pre, &env, remaining(deadline))?;
        }
        produce(spec, &dir, &export_dir, &env, deadline)
    })();

    let post = spec.post.as_ref().map(|argv| {
        let mut env = env.clone();
        match &attempt {
            Ok((a, warnings, _)) => {
                if !warnings.is_empty() {
                    env.push(("FERRY_WARNINGS".into(), warnings.join("\n").into()));
                }
                env.push(("FERRY_STATUS".into(), "ok".into()));
                env.push(("FERRY_ARTIFACT".into(), a.path.as_os_str().to_owned()));
                env.push(("FERRY_SHA256".into(), a.sha256.as_str().into()));
                env.push(("FERRY_SIZE".into(), a.size.to_string().into()));
                env.push(("FERRY_STAMP".into(), a.stamp.as_str().into()));
            }
            Err(e) => {
                env.push(("FERRY_STATUS".into(), "failed".into()));
                env.push(("FERRY_ERROR".into(), ferry_text::sanitize(&e.to_string(), 2000).into()));
            }
        }
        hooks::run(&spec.name, Phase::Post, argv, &env, spec.timeout)
    });

    let (info, warnings, tree_stats) = match (attempt, post) {
        (Ok(a), None | Some(Ok(()))) => a,
        (Ok((a, _, _)), Some(Err(e))) => {
            // No request will name it: do not leave it to fill the disk.
            warn!(source = %spec.name, file = %a.path.display(), "post command failed; deleting the artifact");
            if let Err(err) = std::fs::remove_file(&a.path) {
                warn!(file = %a.path.display(), error = %err, "cannot delete the artifact of a failed run");
            }
            let _ = export::fsync_dir(&dir);
            return Err(e);
        }
        (Err(e), None | Some(Ok(()))) => return Err(e),
        (Err(e), Some(Err(p))) => return Err(PrepareError::Then { first: Box::new(e), then: Box::new(p) }),
    };
    info!(source = %spec.name, file = %info.path.display(), size = info.size, sha256 = %info.sha256, "artifact ready");

    if let Err(e) = export::apply_retention(&dir, spec.keep, &info.path, keep_guard) {
        warn!(source = %spec.name, error = %e, "retention failed; old artifacts stay until the next run");
    }

    let file = info.path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let text = format!("{export_remote}/{}/{file}", spec.name);
    let path = RemotePath::parse(&text).map_err(|e| config(&spec.name, format!("artifact path {text}: {e}")))?;
    let user: User = ep.user.parse().map_err(|e| config(&spec.name, format!("export.user: {e}")))?;
    let host: Host = ep.address.parse().map_err(|e| config(&spec.name, format!("export.address: {e}")))?;
    let url =
        SftpUrl::new(user, host, Some(ep.port), path).map_err(|e| config(&spec.name, format!("export.port: {e}")))?;
    let source: Name = spec.name.parse().map_err(|e| config(&spec.name, e))?;
    let requests = match (&spec.kind, &tree_stats) {
        (SourceKind::Fs { root, .. }, Some(stats)) => {
            info!(
                source = %spec.name, entries = stats.entries, files_hashed = stats.files_hashed,
                bytes_hashed = stats.bytes_hashed, "tree scanned"
            );
            vec![Request::Tree(crate::tree::request(&url, root, &info, &source)?)]
        }
        _ => vec![Request::Sftp(SftpRequest { stamp: info.stamp, url, sha256: info.sha256, size: info.size, source })],
    };
    Ok(Prepared { requests, warnings, tree: tree_stats })
}

/// What a successful source run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The node requests: exactly one `sftp` request.
    pub requests: Vec<Request>,
    /// What the administrator must hear about a run that still succeeded —
    /// an fs source that left unreadable entries out — as escaped,
    /// printable one-line texts (log, `ferry status`, mail).
    pub warnings: Vec<String>,
    /// A tree source's scan counters (entries, files and bytes hashed:
    /// an unchanged repeat hashes 0 files), for the request's record.
    pub tree: Option<ferry_tree::scan::ScanStats>,
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Steps 4: the module's output as a committed artifact, and the warnings
/// of a run that succeeded incompletely.
fn produce(
    spec: &SourceSpec,
    dir: &Path,
    export_dir: &Path,
    env: &[(String, OsString)],
    deadline: Instant,
) -> Result<(ArtifactInfo, Vec<String>, Option<ferry_tree::scan::ScanStats>), PrepareError> {
    let name = spec.name.as_str();
    let timed_out = || PrepareError::Failed {
        module: spec.kind.module().into(),
        message: format!("source {name}: the timeout ({:?}) expired before the dump started", spec.timeout),
    };
    if remaining(deadline).is_zero() {
        return Err(timed_out());
    }
    // Resolved before the temporary file exists, so a missing tool leaves
    // nothing behind and says so plainly.
    let fs_opts = match &spec.kind {
        SourceKind::Fs { root, include, exclude, xattrs, one_file_system, unreadable, .. } => Some(CreateOptions {
            unreadable: *unreadable,
            ..fs::create_options(root, include, exclude, *xattrs, *one_file_system, export_dir)
                .map_err(|m| config(name, m))?
        }),
        _ => None,
    };
    if let (SourceKind::Fs { tree_cache: Some(cache), unreadable, .. }, Some(opts)) = (&spec.kind, &fs_opts) {
        let skip = *unreadable == ferry_archive::Unreadable::Skip;
        let run = crate::tree::write_manifest(name, opts, skip, cache, dir, Some(deadline))?;
        let warnings = run
            .stats
            .skipped
            .iter()
            .map(|s| format!("source {name}: left out {} ({})", ferry_text::escape_bytes(&s.path, 400), s.error))
            .collect();
        return Ok((run.info, warnings, Some(run.stats)));
    }
    let mysql_tool = match &spec.kind {
        SourceKind::Mysql { .. } => Some(db::find_mysql_dump().ok_or_else(|| PrepareError::Failed {
            module: "mysql".into(),
            message: format!("source {name}: neither mariadb-dump nor mysqldump is installed"),
        })?),
        _ => None,
    };
    let stamp = export::choose_stamp(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    let ext = spec.kind.extension();
    let mut art = Artifact::create(dir, stamp, ext, Some(deadline))
        .map_err(io_err(format!("creating a temporary artifact in {}", dir.display())))?;
    info!(source = name, module = spec.kind.module(), stamp = %art.stamp(), "preparing artifact");
    // Dump tools get only HOME; FERRY_* is for the administrator's commands.
    let dump_env: Vec<(String, OsString)> = home_env().into_iter().collect();
    let mut warnings = Vec::new();
    match &spec.kind {
        SourceKind::Fs { .. } => {
            warnings.extend(fs::archive(name, fs_opts.as_ref().expect("fs options"), art.writer())?)
        }
        SourceKind::Postgres { database, os_user, host, port, socket } => {
            let cmd =
                db::postgres_command(database.as_deref(), host.as_deref(), *port, socket.as_deref(), os_user.is_some());
            db::run_dump("postgresdb", name, &cmd, os_user.as_deref(), &dump_env, remaining(deadline), art.writer())?
        }
        SourceKind::Mysql { database, os_user, host, port, socket } => {
            let tool = mysql_tool.expect("mysql tool");
            let cmd = db::mysql_command(tool, database.as_deref(), host.as_deref(), *port, socket.as_deref());
            db::run_dump("mysql", name, &cmd, os_user.as_deref(), &dump_env, remaining(deadline), art.writer())?
        }
        SourceKind::Pipe { command } => pipe::stream(name, command, env, remaining(deadline), art.writer())?,
    }
    let info = art.commit().map_err(io_err(format!("storing the artifact in {}", dir.display())))?;
    Ok((info, warnings, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GitExportScheme;

    fn endpoint(export: &str) -> ExportEndpoint {
        ExportEndpoint {
            address: "client.example".into(),
            port: 22,
            user: "ferry".into(),
            export_dir: export.into(),
            git_scheme: GitExportScheme::Ssh,
            git_port: 9418,
            git_roots: vec![],
            git_daemon_base: None,
        }
    }

    fn pipe(name: &str) -> SourceSpec {
        SourceSpec::new(name, SourceKind::Pipe { command: vec!["/bin/true".into()] })
    }

    #[test]
    fn names_and_paths_are_checked_up_front() {
        let ep = endpoint("/var/lib/ferry/export");
        check_source(&pipe("trac"), &ep).unwrap();
        for bad in ["", ".hidden", "-x", "a b", "a/b", "é"] {
            let e = check_source(&pipe(bad), &ep).unwrap_err();
            assert_eq!(e.code(), "E_CONFIG", "{bad}");
            assert!(e.to_string().contains("use letters"), "{e}");
        }
        let e = check_source(&pipe("trac"), &endpoint("relative/export")).unwrap_err();
        assert!(e.to_string().contains("set export.dir"), "{e}");
        let long = format!("/{}", vec!["d".repeat(99); 10].join("/"));
        let e = check_source(&pipe("trac"), &endpoint(&long)).unwrap_err();
        assert!(e.to_string().contains("shorten"), "{e}");
        let mut ep2 = endpoint("/x");
        ep2.user = "Bad User".into();
        assert!(check_source(&pipe("t"), &ep2).unwrap_err().to_string().contains("export.user"));
        // Issue 16, point 4: the nodes' own directory names, in any case.
        for reserved in ["git", "Git", "STORE", "tmp", "trees", "incomplete"] {
            let e = check_source(&pipe(reserved), &ep).unwrap_err();
            assert!(e.to_string().contains("keeps for its own directories"), "{reserved}: {e}");
        }
        check_source(&pipe("gitlab"), &ep).unwrap();
    }

    #[test]
    fn module_options_are_checked() {
        let ep = endpoint("/var/lib/ferry/export");
        let pg = |database: Option<&str>, os_user: Option<&str>, host: Option<&str>, socket: Option<&str>| {
            SourceSpec::new(
                "db",
                SourceKind::Postgres {
                    database: database.map(Into::into),
                    os_user: os_user.map(Into::into),
                    host: host.map(Into::into),
                    port: None,
                    socket: socket.map(Into::into),
                },
            )
        };
        check_source(&pg(Some("app"), Some("postgres"), None, Some("/run/postgresql")), &ep).unwrap();
        check_source(&pg(None, None, Some("db.example"), None), &ep).unwrap();
        for (spec, why) in [
            (pg(Some("-oops"), None, None, None), "starts with '-'"),
            (pg(Some(""), None, None, None), "empty"),
            (pg(None, Some("-u"), None, None), "os_user"),
            (pg(None, Some("Post Gres"), None, None), "os_user"),
            (pg(None, None, Some("h"), Some("/s")), "not both"),
            (pg(None, None, None, Some("run/pg")), "absolute"),
        ] {
            let e = check_source(&spec, &ep).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        let mut s = pipe("p");
        s.kind = SourceKind::Pipe { command: vec![] };
        assert!(check_source(&s, &ep).unwrap_err().to_string().contains("command is empty"));
        let mut s = pipe("p");
        s.pre = Some(vec![]);
        assert!(check_source(&s, &ep).unwrap_err().to_string().contains("pre is empty"));
        let mut s = pipe("p");
        s.keep = 0;
        assert!(check_source(&s, &ep).unwrap_err().to_string().contains("keep"));
        let s = SourceSpec::new(
            "f",
            SourceKind::Fs {
                root: "/srv".into(),
                include: vec!["/etc".into()],
                exclude: vec![],
                xattrs: false,
                one_file_system: false,
                unreadable: ferry_archive::Unreadable::Fail,
                tree_cache: None,
            },
        );
        assert!(check_source(&s, &ep).unwrap_err().to_string().contains("not under root"));
    }

    #[test]
    fn extensions() {
        assert_eq!(pipe("p").kind.extension(), "pipe");
        let pg = SourceKind::Postgres { database: None, os_user: None, host: None, port: None, socket: None };
        assert_eq!(pg.extension(), "pgdumpall.sql.zst");
        assert_eq!(pg.module(), "postgresdb");
        assert!(DATA_MODULES.contains(&pg.module()));
    }
}
