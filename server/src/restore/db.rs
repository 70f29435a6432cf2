//! Restoring a client's database dump into a new database on the node, with
//! the least privilege that can do it.
//!
//! A dump is client-controlled input like every other artifact: a
//! compromised client can put anything in it. Two things stand between that
//! text and the node:
//!
//! * **Only SQL is executed, never client-side commands.** `psql` runs
//!   backslash meta-commands from its input (`\! cmd`, `\o file`, `\copy`,
//!   `` \set x `cmd` ``, `\connect other`), so a cluster dump is fed after a
//!   `\restrict <random key>` line of ours: psql then refuses every
//!   meta-command but `\unrestrict <that key>`, which the dump cannot know.
//!   `mysql` runs with `--binary-mode` (no client commands but `DELIMITER`
//!   and `\C` in piped input: no `system`, `\!`, `source`, `tee`, `connect`,
//!   `edit`), `--sandbox` on top, `--local-infile=0` (no `LOAD DATA LOCAL`
//!   reading the node's files) and an options file of ours only.
//!   `pg_restore` reads a custom-format archive and sends only SQL.
//! * **The SQL runs as a role that owns nothing but the target database.**
//!   An administrator's connection (the `--db-user` OS account, by peer or
//!   socket authentication, as before) only creates the database and a
//!   one-time role `ferry_restore_<db>` with a random password: no
//!   superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, no membership
//!   in `pg_execute_server_program` or the server-file roles (PostgreSQL);
//!   `ALL` on `<db>.*` only, no global privilege such as FILE or SUPER
//!   (MariaDB). The dump is replayed over that role's own connection, so
//!   `COPY … PROGRAM`, server file functions, `ALTER SYSTEM`, roles, other
//!   databases and plugins are refused by the server itself. Afterwards the
//!   PostgreSQL role keeps owning the database but cannot log in
//!   (`NOLOGIN PASSWORD NULL`); the MariaDB account is dropped.
//!
//! The one-time password travels only in the child's environment
//! (`PGPASSWORD`) or a 0600 options file in a private directory, never on a
//! command line. PostgreSQL's role logs in over TCP (`--restore-host`,
//! default the `--db-host` when that is a host name, else 127.0.0.1),
//! because a stock `pg_hba.conf` authenticates sockets by peer only.

use std::io::Read;

use anyhow::{Context as _, bail};

use crate::catalog::Artifact;
use crate::exit::UsageError;

/// Where and as whom a dump is restored (from the `restore` flags).
#[derive(Debug, Default, Clone)]
pub struct DbTarget {
    /// The new database's name (`[A-Za-z_][A-Za-z0-9_]*`, at most 63).
    pub db: String,
    /// OS account the administrative step runs as (peer authentication).
    pub admin_os_user: Option<String>,
    /// Server socket directory/socket file or host for the administrative step.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Where the one-time restore role logs in with its password.
    pub restore_host: Option<String>,
}

/// The kinds of dump the node can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// `pg_dump --format=custom`: `pg_restore`.
    PgCustom,
    /// `pg_dumpall` SQL (zstd): `psql`, restricted.
    PgCluster,
    /// `mysqldump` SQL (zstd): `mysql`, binary mode and sandboxed.
    MySql,
}

impl DumpKind {
    /// The kind of a stored artifact, by the name the client module gives it.
    pub fn of(file_name: &str) -> Option<DumpKind> {
        if file_name.ends_with(".pgdump") {
            Some(DumpKind::PgCustom)
        } else if file_name.ends_with(".pgdumpall.sql.zst") {
            Some(DumpKind::PgCluster)
        } else if file_name.ends_with(".mysqldump.sql.zst") {
            Some(DumpKind::MySql)
        } else {
            None
        }
    }
}

/// A valid name for the new database (both engines, quoted or not).
pub fn valid_db_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The one-time role/account for restoring into `db`: at most 32 bytes
/// (MariaDB's older limit), so long names are cut; a clash with an existing
/// role is refused by the server, never reused.
pub fn restore_role(db: &str) -> String {
    let mut r = format!("ferry_restore_{db}");
    r.truncate(32);
    r
}

/// 48 hexadecimal digits from the kernel's random source.
fn one_time_password() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .context("no random bytes for the restore role's password")?;
    }
    Ok(hex::encode(b))
}

/// Restore the verified artifact `a` (file name `name`, read from `data`)
/// into the new database.
pub fn restore(a: &Artifact, name: &str, data: Box<dyn Read + Send>, target: &DbTarget) -> anyhow::Result<String> {
    if !valid_db_name(&target.db) {
        return Err(UsageError(format!("{:?} is not a database name ([A-Za-z_][A-Za-z0-9_]*)", target.db)).into());
    }
    let Some(kind) = DumpKind::of(name) else {
        return Err(UsageError(format!("{} is not a database dump; use --to DIR or --stdout", a.path)).into());
    };
    match kind {
        DumpKind::PgCustom | DumpKind::PgCluster => pg::restore(a, data, kind, target),
        DumpKind::MySql => my::restore(a, data, target),
    }
}

/// The administrative command: the database tool run as `user` (peer
/// authentication), as before this module existed.
fn as_user(user: Option<&str>, program: &str) -> ferry_run::Cmd {
    match user {
        Some(u) if rustix::process::getuid().is_root() => {
            ferry_run::Cmd::new("/usr/sbin/runuser").args(["-u", u, "--", program])
        }
        Some(u) => ferry_run::Cmd::new("sudo").args(["-n", "-u", u, "--", program]),
        None => ferry_run::Cmd::new(program),
    }
}

/// Lines of a tool's captured stderr that report a refused statement or
/// command, and whether the capture was cut.
fn error_lines<'a>(stderr: &'a str, markers: &[&str]) -> Vec<&'a str> {
    stderr.lines().filter(|l| markers.iter().any(|m| l.contains(m))).collect()
}

mod pg {
    use super::*;

    fn conn(mut c: ferry_run::Cmd, host: Option<&str>, port: Option<u16>) -> ferry_run::Cmd {
        if let Some(h) = host {
            c = c.arg(format!("--host={h}"));
        }
        if let Some(p) = port {
            c = c.arg(format!("--port={p}"));
        }
        c.env("HOME", "/").env("PGCONNECT_TIMEOUT", "30")
    }

    /// Run fixed administrative SQL (never client text) over the
    /// administrator's connection; the SQL goes on stdin, so a password
    /// in it never shows in a process list.
    pub(super) fn admin_sql(t: &DbTarget, sql: String) -> anyhow::Result<()> {
        conn(super::as_user(t.admin_os_user.as_deref(), "psql"), t.host.as_deref(), t.port)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--dbname=postgres"])
            .stdin_bytes(sql)
            .run_checked()
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn restore(a: &Artifact, data: Box<dyn Read + Send>, kind: DumpKind, t: &DbTarget) -> anyhow::Result<String> {
        let db = &t.db;
        let role = restore_role(db);
        let password = one_time_password()?;
        admin_sql(
            t,
            format!(
                "CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                 PASSWORD '{password}';\n\
                 GRANT \"{role}\" TO CURRENT_USER;\n\
                 CREATE DATABASE \"{db}\" OWNER \"{role}\";\n\
                 REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;\n"
            ),
        )
        .with_context(|| {
            format!(
                "creating database {db} and its one-time restore role {role} failed (a leftover from an \
                 earlier restore? drop both, or restore into another database)"
            )
        })?;
        let result = replay(a, data, kind, t, &role, &password);
        // Whatever happened, the role never logs in again: the dump may
        // have changed its password.
        let lock = admin_sql(
            t,
            format!("ALTER ROLE \"{role}\" NOLOGIN PASSWORD NULL;\nREVOKE \"{role}\" FROM CURRENT_USER;\n"),
        )
        .with_context(|| format!("locking the restore role {role} failed: run ALTER ROLE \"{role}\" NOLOGIN"));
        let msg = result?;
        lock?;
        Ok(msg)
    }

    fn replay(
        a: &Artifact,
        data: Box<dyn Read + Send>,
        kind: DumpKind,
        t: &DbTarget,
        role: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        let db = &t.db;
        let host = t.restore_host.clone().or_else(|| t.host.clone().filter(|h| !h.starts_with('/')));
        let host = host.unwrap_or_else(|| "127.0.0.1".to_owned());
        let as_role = |program: &str| {
            conn(ferry_run::Cmd::new(program), Some(&host), t.port)
                .arg(format!("--username={role}"))
                .arg(format!("--dbname={db}"))
                .arg("--no-password")
                .env("PGPASSWORD", password)
        };
        match kind {
            DumpKind::PgCustom => {
                as_role("pg_restore")
                    .args(["--no-owner", "--no-privileges", "--no-tablespaces", "--exit-on-error"])
                    .stdin_reader(data)
                    .run_checked()
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("pg_restore failed")?;
                Ok(format!("restored {} into PostgreSQL database {db} (owner {role})", a.path))
            }
            DumpKind::PgCluster => {
                let version = ferry_run::Cmd::new("psql")
                    .arg("--version")
                    .run_checked()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .stdout_str();
                if !psql_can_restrict(&version) {
                    bail!(
                        "{} cannot be replayed safely: this psql ({}) lacks \\restrict, which keeps a dump's \
                         meta-commands from running on the node; install psql 13.22, 14.19, 15.14, 16.10, 17.6 \
                         or newer, or restore the file with --to DIR and review it",
                        a.path,
                        ferry_text::escape(version.trim(), 80)
                    );
                }
                let key = one_time_password()?;
                let header = std::io::Cursor::new(format!("\\restrict {key}\n").into_bytes());
                let dec = zstd::stream::read::Decoder::new(data)?;
                let out = as_role("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "--no-psqlrc", "--output=/dev/null"])
                    .stdin_reader(header.chain(dec))
                    .stderr_cap(1 << 20)
                    .run_checked()
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("psql failed")?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                let refused = error_lines(&stderr, &["backslash commands are restricted", "\\unrestrict:"]).len();
                let errors = error_lines(&stderr, &["ERROR:"]);
                let more = if out.stderr_truncated { "at least " } else { "" };
                let mut msg = format!(
                    "replayed cluster dump {} into PostgreSQL database {db} (owner {role}): \
                     {more}{} statements failed, {more}{refused} psql meta-commands (\\connect, \\restrict, …) \
                     not run; roles, databases and settings of the dump are not created by a node restore",
                    a.path,
                    errors.len()
                );
                if let Some(first) = errors.first() {
                    msg.push_str(&format!("; first error: {}", ferry_text::escape(first, 300)));
                }
                Ok(msg)
            }
            DumpKind::MySql => unreachable!("a MariaDB dump is not restored by PostgreSQL tools"),
        }
    }
}

/// Whether `psql --version` output names a psql that knows `\restrict`
/// (added in 13.22, 14.19, 15.14, 16.10 and 17.6).
pub fn psql_can_restrict(version: &str) -> bool {
    let Some(v) = version.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit())) else {
        return false;
    };
    let mut it = v.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

mod my {
    use super::*;

    fn conn(mut c: ferry_run::Cmd, t: &DbTarget) -> ferry_run::Cmd {
        if let Some(h) = &t.host {
            if h.starts_with('/') {
                c = c.arg(format!("--socket={h}"));
            } else {
                c = c.arg(format!("--host={h}")).arg("--protocol=TCP");
            }
        }
        if let Some(p) = t.port {
            c = c.arg(format!("--port={p}"));
        }
        c
    }

    /// Fixed administrative SQL over the administrator's connection (its
    /// own option files apply: `HOME=/root` as before).
    pub(super) fn admin_sql(t: &DbTarget, sql: String) -> anyhow::Result<String> {
        conn(super::as_user(t.admin_os_user.as_deref(), "mysql"), t)
            .args(["--batch", "--skip-column-names"])
            .env("HOME", "/root")
            .stdin_bytes(sql)
            .run_checked()
            .map(|o| o.stdout_str())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// `'a''b'` — a string literal of fixed, validated text.
    fn lit(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    }

    pub fn restore(a: &Artifact, data: Box<dyn Read + Send>, t: &DbTarget) -> anyhow::Result<String> {
        let db = &t.db;
        let user = restore_role(db);
        let password = one_time_password()?;
        // The account's host part is how the server sees this connection
        // (`localhost` over the socket, an address over TCP), nothing wider.
        let seen = admin_sql(t, "SELECT SUBSTRING_INDEX(USER(), '@', -1);\n".into())
            .context("connecting to MariaDB/MySQL as the administrator failed")?;
        let host = seen.trim().to_owned();
        if host.is_empty() || host.contains(['\'', '\\', '\n']) {
            bail!("the server reports an unusable client host {host:?}");
        }
        let account = format!("{}@{}", lit(&user), lit(&host));
        admin_sql(
            t,
            format!(
                "CREATE DATABASE `{db}`;\n\
                 CREATE USER {account} IDENTIFIED BY {pw};\n\
                 GRANT ALL PRIVILEGES ON `{db}`.* TO {account};\n",
                pw = lit(&password)
            ),
        )
        .with_context(|| {
            format!(
                "creating database {db} and its one-time restore account {user} failed (a leftover from an \
                 earlier restore? drop both, or restore into another database)"
            )
        })?;
        let result = replay(a, data, t, &user, &password);
        let dropped = admin_sql(t, format!("DROP USER {account};\n"))
            .with_context(|| format!("dropping the restore account {user}@{host} failed: drop it by hand"));
        let msg = result?;
        dropped?;
        Ok(msg)
    }

    fn replay(
        a: &Artifact,
        data: Box<dyn Read + Send>,
        t: &DbTarget,
        user: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        let db = &t.db;
        // Our options file only (`--defaults-file` must come first): no
        // ~/.my.cnf, no [client] section of the node's configuration.
        let dir = tempfile::Builder::new().prefix("ferry-restore-").tempdir()?;
        let opts = dir.path().join("my.cnf");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&opts)?;
            writeln!(f, "[client]\nuser={user}\npassword={password}")?;
        }
        let dec = zstd::stream::read::Decoder::new(data)?;
        let cmd = ferry_run::Cmd::new("mysql").arg(format!("--defaults-file={}", opts.display()));
        conn(cmd, t)
            .args(["--binary-mode", "--sandbox", "--local-infile=0", "--batch", "--silent"])
            .arg(format!("--database={db}"))
            // Belt and braces: were a client command ever parsed, an editor
            // or pager it names is a program that does nothing.
            .env("HOME", dir.path())
            .env("EDITOR", "/bin/false")
            .env("VISUAL", "/bin/false")
            .env("PAGER", "/bin/cat")
            .stdin_reader(dec)
            .stdout_cap(64 * 1024)
            .run_checked()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("mysql refused the dump (client commands and statements beyond the one database are refused)")?;
        Ok(format!("restored {} into MySQL/MariaDB database {db} (as the one-time account {user})", a.path))
    }
}

/// Drops a database restored by [`restore`] and its one-time role (restore
/// drills restore into a throw-away database and remove it afterwards).
/// Fixed administrative SQL: the names are checked ([`valid_db_name`]).
pub fn drop_restored(kind: DumpKind, target: &DbTarget) -> anyhow::Result<()> {
    let db = &target.db;
    if !valid_db_name(db) {
        anyhow::bail!("{db:?} is not a database name");
    }
    let role = restore_role(db);
    match kind {
        DumpKind::PgCustom | DumpKind::PgCluster => pg::admin_sql(
            target,
            format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE);\nDROP ROLE IF EXISTS \"{role}\";\n"),
        ),
        DumpKind::MySql => my::admin_sql(target, format!("DROP DATABASE IF EXISTS `{db}`;\n")).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_db_name("shop_2"));
        assert!(!valid_db_name("2shop"));
        assert!(!valid_db_name("a-b"));
        assert!(!valid_db_name("a\"b"));
        assert!(!valid_db_name(&"x".repeat(64)));
        assert_eq!(restore_role("shop"), "ferry_restore_shop");
        assert_eq!(restore_role(&"x".repeat(63)).len(), 32);
        assert_eq!(DumpKind::of("20261122T010203Z.pgdump"), Some(DumpKind::PgCustom));
        assert_eq!(DumpKind::of("x.pgdumpall.sql.zst"), Some(DumpKind::PgCluster));
        assert_eq!(DumpKind::of("x.mysqldump.sql.zst"), Some(DumpKind::MySql));
        assert_eq!(DumpKind::of("x.tar.zst"), None);
    }

    #[test]
    fn psql_versions() {
        assert!(psql_can_restrict("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"));
        assert!(psql_can_restrict("psql (PostgreSQL) 15.14"));
        assert!(!psql_can_restrict("psql (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)"));
        assert!(psql_can_restrict("psql (PostgreSQL) 17.6"));
        assert!(!psql_can_restrict("psql (PostgreSQL) 17.5"));
        assert!(psql_can_restrict("psql (PostgreSQL) 18.1"));
        assert!(!psql_can_restrict("psql (PostgreSQL) 12.22"));
        assert!(!psql_can_restrict("garbage"));
    }

    #[test]
    fn passwords_are_random_hex() {
        let a = one_time_password().unwrap();
        let b = one_time_password().unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
