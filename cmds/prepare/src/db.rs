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
//! (`postgres` → role `postgres`) is used without any password. Without
//! `os_user` the dump runs as the client's own account, whose database
//! role needs only `pg_read_all_data` (or, for MariaDB, `SELECT, SHOW VIEW,
//! TRIGGER, EVENT`): the least-privilege setup, README "Databases without
//! sudo"; `pg_dumpall` then gets `--no-role-passwords`. A refusal by the
//! database or by sudo is reported as `E_SOURCE_DB_ACCESS` with the SQL or
//! sudoers line that fixes it ([`access_problem`]). MySQL
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
///
/// `role_passwords: false` adds `--no-role-passwords` to `pg_dumpall`:
/// password hashes live in `pg_authid`, which only a superuser may read, so
/// a role with `pg_read_all_data` can dump the cluster only without them
/// (README: Databases without sudo).
pub fn postgres_command(
    database: Option<&str>,
    host: Option<&str>,
    port: Option<u16>,
    socket: Option<&Path>,
    role_passwords: bool,
) -> DumpCommand {
    let mut args: Vec<OsString> = Vec::new();
    let (tool, ext, compress) = match database {
        Some(_) => ("pg_dump", "pgdump", false),
        None => ("pg_dumpall", "pgdumpall.sql.zst", true),
    };
    if database.is_some() {
        args.push("--format=custom".into());
    } else if !role_passwords {
        args.push("--no-role-passwords".into());
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
            format!(
                "os_user {user:?} needs sudo when the client does not run as root, and sudo is not installed \
                 (looked in {})",
                ferry_run::SAFE_PATH
            )
        })?;
        Ok(vec![sudo.into(), "-n".into(), "-u".into(), user.into(), "--".into()])
    }
}

/// The sudoers line that lets `account` run `program` as `user` the way
/// [`user_prefix`] calls it (`sudo -n -u <user> -- <program> …`).
pub fn sudoers_line(account: &str, user: &str, program: &Path) -> String {
    format!("{account} ALL=({user}) NOPASSWD: {}", program.display())
}

/// The fix when `os_user` needs sudo and there is none.
fn no_sudo_fix(module: &str, account: &str, user: &str, program: &Path) -> String {
    format!(
        "install sudo and add `{}`, or remove os_user and give account {account} its own database account: {}",
        sudoers_line(account, user, program),
        grant_fix(module, account)
    )
}

/// Why this account cannot become `os_user` to run `tool`, with the fix;
/// `None` when it can try (`ferry init` checks this before the first
/// backup; whether a sudoers rule exists shows only when sudo runs).
pub fn os_user_problem(module: &str, tool: &str, os_user: &str) -> Option<String> {
    let m = user_prefix(Some(os_user)).err()?;
    let account = user_name(rustix::process::geteuid().as_raw()).unwrap_or_else(|| "ferry".to_owned());
    let program = find_program(tool).unwrap_or_else(|| Path::new("/usr/bin").join(tool));
    Some(format!(
        "E_SOURCE_DB_ACCESS: {m}; {} (README: Databases without sudo)",
        no_sudo_fix(module, &account, os_user, &program)
    ))
}

/// The commands, run as the database's administrator, that give the
/// account `role` (peer / unix_socket authentication) what a dump needs.
pub fn grant_fix(module: &str, role: &str) -> String {
    if module == "mysql" {
        format!(
            "mariadb -e \"CREATE USER IF NOT EXISTS '{role}'@'localhost' IDENTIFIED VIA unix_socket; \
             GRANT {MYSQL_DUMP_GRANTS} ON *.* TO '{role}'@'localhost'\""
        )
    } else {
        format!(
            "runuser -u postgres -- psql -c 'CREATE ROLE \"{role}\" LOGIN' -c 'GRANT pg_read_all_data TO \"{role}\"'"
        )
    }
}

/// The privileges a MariaDB account needs for Ferry's dump
/// (`--single-transaction --routines --events --triggers`, views, and
/// `--all-databases`; tested with MariaDB 10.11 in e2e `db_nosudo`). No
/// `LOCK TABLES`: `--single-transaction` takes no table locks; no `RELOAD`:
/// Ferry passes neither `--flush-logs` nor `--master-data`.
pub const MYSQL_DUMP_GRANTS: &str = "SELECT, SHOW VIEW, TRIGGER, EVENT";

/// Which account refused a failed dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// sudo would not run the dump as `os_user`.
    Sudo,
    /// The database would not let the account in, or not read everything.
    Database,
}

/// Reads a failed dump's stderr for a refusal that a role, a grant or a
/// sudoers rule fixes (and not, say, a missing database).
pub fn access_problem(module: &str, os_user: Option<&str>, via_sudo: bool, stderr: &str) -> Option<Access> {
    const SUDO: &[&str] = &[
        "sudo: a password is required",
        "sudo: a terminal is required",
        "is not allowed to execute",
        "is not in the sudoers file",
        "may not run sudo",
    ];
    const PG: &[&str] = &[
        "Peer authentication failed",
        "permission denied",
        "password authentication failed",
        "no password supplied",
        "must be superuser",
    ];
    const MY: &[&str] = &["Access denied", "command denied", "privilege(s) for this operation"];
    if via_sudo && os_user.is_some() && SUDO.iter().any(|m| stderr.contains(m)) {
        return Some(Access::Sudo);
    }
    let denied = if module == "mysql" {
        MY.iter().any(|m| stderr.contains(m))
    } else {
        PG.iter().any(|m| stderr.contains(m))
            || stderr.lines().any(|l| l.contains("role \"") && l.contains("does not exist"))
    };
    denied.then_some(Access::Database)
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
    let account = user_name(rustix::process::geteuid().as_raw()).unwrap_or_else(|| "ferry".to_owned());
    let access = |problem: String, fix: String, detail: String| PrepareError::DbAccess {
        source_name: source_name.to_owned(),
        problem,
        fix,
        detail,
    };
    let prefix = user_prefix(os_user).map_err(|m| match os_user {
        Some(user) if m.contains("sudo is not installed") => {
            access(m, no_sudo_fix(module, &account, user, &program), String::new())
        }
        _ => fail(m),
    })?;
    let via_sudo = prefix.first().is_some_and(|p| Path::new(p).ends_with("sudo"));
    let mut argv: Vec<OsString> = prefix;
    argv.push(program.clone().into_os_string());
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
        Err(e) => {
            let stderr = match &e {
                RunError::Failed { stderr, .. } => stderr.as_str(),
                _ => "",
            };
            match access_problem(module, os_user, via_sudo, stderr) {
                Some(Access::Sudo) => {
                    let user = os_user.unwrap_or_default();
                    Err(access(
                        format!("sudo refused to run {} as {user} for account {account}", cmd.tool),
                        format!(
                            "the sudoers rule is missing: add `{}` (visudo -f /etc/sudoers.d/ferry), or remove \
                             os_user and give account {account} its own database account: {}",
                            sudoers_line(&account, user, &program),
                            grant_fix(module, &account)
                        ),
                        format!("; {e}"),
                    ))
                }
                Some(Access::Database) => {
                    let role = os_user.unwrap_or(&account);
                    Err(access(
                        format!("the database refused account {role}"),
                        format!("give it read access: {}", grant_fix(module, role)),
                        format!("; {e}"),
                    ))
                }
                None => Err(fail(e.to_string())),
            }
        }
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
        let c = postgres_command(Some("app"), None, None, Some(Path::new("/run/postgresql/.s.PGSQL.5433")), false);
        assert_eq!(c.tool, "pg_dump");
        assert_eq!((c.ext, c.compress), ("pgdump", false));
        assert_eq!(
            strs(&c.args),
            ["--format=custom", "--no-password", "--host=/run/postgresql", "--port=5433", "--dbname=app"]
        );
        // A socket directory, explicit port wins over the socket's name.
        let c = postgres_command(Some("app"), None, Some(6000), Some(Path::new("/tmp/pg")), true);
        assert_eq!(
            strs(&c.args),
            ["--format=custom", "--no-password", "--host=/tmp/pg", "--port=6000", "--dbname=app"]
        );
    }

    #[test]
    fn pg_dumpall_for_the_whole_cluster() {
        let c = postgres_command(None, Some("db.example"), Some(5432), None, true);
        assert_eq!(c.tool, "pg_dumpall");
        assert_eq!((c.ext, c.compress), ("pgdumpall.sql.zst", true));
        assert_eq!(strs(&c.args), ["--no-password", "--host=db.example", "--port=5432"]);
        // Without os_user: a pg_read_all_data role cannot read pg_authid.
        let c = postgres_command(None, None, None, None, false);
        assert_eq!(strs(&c.args), ["--no-role-passwords", "--no-password"]);
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

    #[test]
    fn refusals_name_their_fix() {
        let sudo = "sudo: a password is required\n";
        assert_eq!(access_problem("postgresdb", Some("postgres"), true, sudo), Some(Access::Sudo));
        // runuser (as root) never gives a sudo refusal.
        assert_eq!(access_problem("postgresdb", Some("postgres"), false, sudo), None);
        let peer = "pg_dump: error: connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" failed: \
                    FATAL:  Peer authentication failed for user \"ferry\"";
        assert_eq!(access_problem("postgresdb", None, false, peer), Some(Access::Database));
        let norole = "FATAL:  role \"ferry\" does not exist";
        assert_eq!(access_problem("postgresdb", None, false, norole), Some(Access::Database));
        let denied = "pg_dump: error: query failed: ERROR:  permission denied for table items";
        assert_eq!(access_problem("postgresdb", None, false, denied), Some(Access::Database));
        // A missing database is not an access problem.
        let nodb = "FATAL:  database \"no_such_db\" does not exist";
        assert_eq!(access_problem("postgresdb", None, false, nodb), None);
        let my = "mariadb-dump: Got error: 1045: \"Access denied for user 'ferry'@'localhost'\"";
        assert_eq!(access_problem("mysql", None, false, my), Some(Access::Database));
        assert_eq!(
            sudoers_line("ferry", "postgres", Path::new("/usr/bin/pg_dump")),
            "ferry ALL=(postgres) NOPASSWD: /usr/bin/pg_dump"
        );
        assert!(grant_fix("postgresdb", "ferry").contains("GRANT pg_read_all_data TO \"ferry\""));
        assert!(grant_fix("mysql", "ferry").contains("IDENTIFIED VIA unix_socket"));
    }
}
