//! The `postgresdb` and `mysql` modules: database dumps streamed into the
//! export directory.
//!
//! Formats (the artifact's extension says how to restore it):
//!
//! | source | command | artifact | restore |
//! |---|---|---|---|
//! | postgresdb, one database | `pg_dump --format=custom` | `<stamp>.pgdump` | `pg_restore -d <db> <file>` |
//! | postgresdb, whole cluster | `pg_dumpall` | `<stamp>.pgdumpall.sql.zst` | `zstd -dc <file> \| psql -d postgres` |
//! | mysql, one database | `mysqldump <db>` | `<stamp>.mysqldump.sql.zst` | `zstd -dc <file> \| mysql <db>` |
//! | mysql, all databases | `mysqldump --all-databases` | `<stamp>.mysqldump.sql.zst` | `zstd -dc <file> \| mysql` |
//!
//! Why: pg_dump's custom format is already compressed and lets
//! `pg_restore` pick single tables, so it is stored as is. Plain SQL (from
//! `pg_dumpall` and `mysqldump`, which cannot compress) shrinks five- to
//! tenfold, and the export directory keeps several of them, so it is
//! compressed with zstd on the way to disk — one rule for every plain-SQL
//! dump, readable with the stock `zstd` tool.
//!
//! The dump runs with a cleared environment (plus `HOME`, so `~/.pgpass`
//! and `~/.my.cnf` keep working), working directory `/`, and, when
//! `os_user` is set, as that OS user: `runuser -u <user> --` when we are
//! root, else `sudo -n -u <user> --` (DESIGN.md: the client account may
//! sudo to run `pg_dump`). That is how peer/unix-socket authentication
//! (`postgres` → role `postgres`) is used without any password. MySQL
//! option files are read as usual (no `--no-defaults`), so credentials in
//! `~/.my.cnf` or `/etc/mysql/debian.cnf` work; connection options given in
//! the source override them.
//!
//! mysqldump flags: `--single-transaction` (a consistent InnoDB snapshot
//! without locking), `--routines --events --triggers` (the schema is more
//! than tables), `--hex-blob` (binary columns survive any client character
//! set), `--default-character-set=utf8mb4`. An explicit `host` means TCP
//! (`--protocol=TCP`, otherwise `localhost` silently means the socket); an
//! explicit `socket` means `--protocol=SOCKET`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_run::{Cmd, RunError};

use crate::PrepareError;
use crate::export::HashingWriter;

/// zstd level for plain-SQL dumps (the `zstd` tool's default).
pub const SQL_ZSTD_LEVEL: i32 = 3;

/// A dump command, before the optional change of OS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpCommand {
    /// Program name (`pg_dump`, `pg_dumpall`, `mariadb-dump`, `mysqldump`).
    pub tool: &'static str,
    pub args: Vec<OsString>,
    /// Artifact extension.
    pub ext: &'static str,
    /// Compress the output with zstd on the way to disk.
    pub compress: bool,
}

/// `(socket directory, port)` for libpq from a configured socket: libpq
/// wants the *directory* in `--host`; a path to the socket file itself
/// (`/run/postgresql/.s.PGSQL.5433`) is accepted too and gives the port.
pub fn pg_socket_dir(socket: &Path, port: Option<u16>) -> (PathBuf, Option<u16>) {
    let name = socket.file_name().and_then(OsStr::to_str).unwrap_or_default();
    match (name.strip_prefix(".s.PGSQL."), socket.parent()) {
        (Some(p), Some(dir)) => (dir.to_owned(), port.or_else(|| p.parse().ok())),
        _ => (socket.to_owned(), port),
    }
}

/// The PostgreSQL dump for `database` (`None`: the whole cluster).
pub fn postgres_command(
    database: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    socket: Option<&Path>,
) -> DumpCommand {
    let mut args: Vec<OsString> = Vec::new();
    let (tool, ext, compress) = match database {
        Some(_) => ("pg_dump", "pgdump", false),
        None => ("pg_dumpall", "pgdumpall.sql.zst", true),
    };
    if database.is_some() {
        args.push("--format=custom".into());
    }
    // Never prompt: there is no terminal, a prompt would only hang.
    args.push("--no-password".into());
    let mut port = port;
    if let Some(sock) = socket {
        let (dir, p) = pg_socket_dir(sock, port);
        port = p;
        let mut a = OsString::from("--host=");
        a.push(dir.as_os_str());
        args.push(a);
    } else if let Some(h) = host {
        args.push(format!("--host={h}").into());
    }
    if let Some(p) = port {
        args.push(format!("--port={p}").into());
    }
    if let Some(db) = database {
        args.push(format!("--dbname={db}").into());
    }
    DumpCommand { tool, args, ext, compress }
}

/// The MySQL/MariaDB dump for `database` (`None`: `--all-databases`).
/// `tool` is the dump program found ([`find_mysql_dump`]).
pub fn mysql_command(
    tool: &'static str,
    database: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    socket: Option<&Path>,
) -> DumpCommand {
    let mut args: Vec<OsString> = [
        "--single-transaction",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--default-character-set=utf8mb4",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    if let Some(sock) = socket {
        args.push("--protocol=SOCKET".into());
        let mut a = OsString::from("--socket=");
        a.push(sock.as_os_str());
        args.push(a);
    } else if let Some(h) = host {
        args.push("--protocol=TCP".into());
        args.push(format!("--host={h}").into());
    }
    if let Some(p) = port {
        args.push(format!("--port={p}").into());
    }
    match database {
        Some(db) => args.push(db.into()),
        None => args.push("--all-databases".into()),
    }
    DumpCommand { tool, args, ext: "mysqldump.sql.zst", compress: true }
}

/// The absolute path of `name` in the runner's PATH
/// ([`ferry_run::SAFE_PATH`]): the PATH every child gets.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    ferry_run::SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// MariaDB's `mariadb-dump`, else `mysqldump` (MySQL, or MariaDB's
/// compatibility name).
pub fn find_mysql_dump() -> Option<&'static str> {
    ["mariadb-dump", "mysqldump"].into_iter().find(|n| find_program(n).is_some())
}

/// The name of the user with uid `uid` in `/etc/passwd` (local accounts
/// only; enough to notice "os_user is who we already are").
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let (name, _, id) = (f.next()?, f.next()?, f.next()?);
        (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// How to become `os_user`: nothing when we already are that user,
/// `runuser -u <user> --` as root (no PAM password, no sudoers needed),
/// else `sudo -n -u <user> --` (`-n`: fail instead of prompting).
pub fn user_prefix(os_user: Option<&str>) -> Result<Vec<OsString>, String> {
    let Some(user) = os_user else { return Ok(Vec::new()) };
    let uid = rustix::process::geteuid();
    if user_name(uid.as_raw()).as_deref() == Some(user) {
        return Ok(Vec::new());
    }
    if uid.is_root() {
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("os_user needs runuser (util-linux), which is not installed")?;
        Ok(vec![runuser.into(), "-u".into(), user.into(), "--".into()])
    } else {
        let sudo = find_program("sudo").ok_or_else(|| {
            format!("os_user {user:?} needs sudo when the client does not run as root, and sudo is not installed")
        })?;
        Ok(vec![sudo.into(), "-n".into(), "-u".into(), user.into(), "--".into()])
    }
}

/// Runs `cmd` (as `os_user`), streaming its stdout — compressed when the
/// format says so — into `out`. A non-zero exit, a deadline or a write
/// error fails the dump; the message carries the tool's stderr excerpt.
pub(crate) fn run_dump(
    module: &'static str,
    source_name: &str,
    cmd: &DumpCommand,
    os_user: Option<&str>,
    env: &[(String, OsString)],
    timeout: Duration,
    out: &mut HashingWriter<File>,
) -> Result<(), PrepareError> {
    let fail = |message: String| PrepareError::Failed {
        module: module.to_owned(),
        message: format!("source {source_name}: {message}"),
    };
    let program = find_program(cmd.tool)
        .ok_or_else(|| fail(format!("{} is not installed (looked in {})", cmd.tool, ferry_run::SAFE_PATH)))?;
    let prefix = user_prefix(os_user).map_err(&fail)?;
    let mut argv: Vec<OsString> = prefix;
    argv.push(program.into_os_string());
    argv.extend(cmd.args.iter().cloned());
    let (first, rest) = argv.split_first().expect("argv has the program");
    let mut c = Cmd::new(first).args(rest).cwd("/").timeout(timeout).die_with_parent();
    for (k, v) in env {
        c = c.env(k, v);
    }
    tracing::info!(source = source_name, module, command = %c.display(), "dumping");
    let result = if cmd.compress {
        let mut enc = zstd::stream::write::Encoder::new(&mut *out, SQL_ZSTD_LEVEL)
            .map_err(|e| fail(format!("starting zstd: {e}")))?;
        enc.include_checksum(true).map_err(|e| fail(format!("configuring zstd: {e}")))?;
        let r = c.run_to(&mut enc);
        match r {
            Ok(o) => enc.finish().map(|_| o).map_err(|e| RunError::Sink { cmd: cmd.tool.into(), source: e }),
            Err(e) => Err(e),
        }
    } else {
        c.run_to(out)
    };
    match result {
        Ok(o) => {
            if o.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
                tracing::warn!(source = source_name, module, stderr = %o.stderr_excerpt(), "the dump succeeded with warnings");
            }
            Ok(())
        }
        Err(RunError::Spawn { source, .. }) => Err(fail(format!("cannot start {}: {source}", cmd.tool))),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn pg_dump_of_one_database_over_a_socket() {
        let c = postgres_command(Some("app"), None, None, Some(Path::new("/run/postgresql/.s.PGSQL.5433")));
        assert_eq!(c.tool, "pg_dump");
        assert_eq!((c.ext, c.compress), ("pgdump", false));
        assert_eq!(
            strs(&c.args),
            ["--format=custom", "--no-password", "--host=/run/postgresql", "--port=5433", "--dbname=app"]
        );
        // A socket directory, explicit port wins over the socket's name.
        let c = postgres_command(Some("app"), None, Some(6000), Some(Path::new("/tmp/pg")));
        assert_eq!(
            strs(&c.args),
            ["--format=custom", "--no-password", "--host=/tmp/pg", "--port=6000", "--dbname=app"]
        );
    }

    #[test]
    fn pg_dumpall_for_the_whole_cluster() {
        let c = postgres_command(None, Some("db.example"), Some(5432), None);
        assert_eq!(c.tool, "pg_dumpall");
        assert_eq!((c.ext, c.compress), ("pgdumpall.sql.zst", true));
        assert_eq!(strs(&c.args), ["--no-password", "--host=db.example", "--port=5432"]);
    }

    #[test]
    fn mysqldump_arguments() {
        let c = mysql_command("mariadb-dump", Some("shop"), None, None, Some(Path::new("/run/mysqld/mysqld.sock")));
        assert_eq!((c.ext, c.compress), ("mysqldump.sql.zst", true));
        let a = strs(&c.args);
        assert!(a.starts_with(&["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"]));
        assert!(a.ends_with(&["--protocol=SOCKET", "--socket=/run/mysqld/mysqld.sock", "shop"]), "{a:?}");
        let c = mysql_command("mysqldump", None, Some("127.0.0.1"), Some(3307), None);
        assert!(strs(&c.args).ends_with(&["--protocol=TCP", "--host=127.0.0.1", "--port=3307", "--all-databases"]));
    }

    #[test]
    fn becoming_another_user() {
        assert!(user_prefix(None).unwrap().is_empty());
        let me = user_name(rustix::process::geteuid().as_raw()).unwrap();
        assert!(user_prefix(Some(&me)).unwrap().is_empty());
        if rustix::process::geteuid().is_root() {
            let p = user_prefix(Some("postgres")).unwrap();
            assert_eq!(strs(&p)[1..], ["-u", "postgres", "--"]);
            assert!(strs(&p)[0].ends_with("/runuser"));
        }
    }
}
