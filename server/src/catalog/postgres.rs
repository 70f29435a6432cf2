//! The catalog on PostgreSQL (`[catalog] url`): one database several nodes
//! share, each writing rows under its own name, so any node's `list`,
//! `find`, `check` and published JSON can show the whole fleet.
//!
//! The synchronous `postgres` client, not `sqlx` or `tokio-postgres`
//! directly: the node is synchronous code (one process per command or
//! worker, blocking I/O), each catalog call is one short query, and an
//! async runtime in every caller would buy nothing; rusqlite stays for the
//! embedded default. Both engines run the same numbered steps
//! ([`super::schema`]).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use postgres::{Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::{self, Dialect, MIGRATIONS};
use super::{Artifact, Catalog, Drill, Query};
use crate::config::NodeConfig;

/// Key of the advisory lock that serialises migrations of nodes opening
/// one database at once ("ferry" in ASCII).
const MIGRATION_LOCK: i64 = 0x0066_6572_7279;

const COLS: &str = "id, client, source, module, received, stamp, path, size, sha256, duration_ms, request, node";

fn row(r: &Row) -> Artifact {
    Artifact {
        id: r.get(0),
        client: r.get(1),
        source: r.get(2),
        module: r.get(3),
        received: r.get(4),
        stamp: r.get(5),
        path: r.get(6),
        size: r.get::<_, i64>(7) as u64,
        sha256: r.get(8),
        duration_ms: r.get::<_, i64>(9) as u64,
        request: r.get(10),
        node: r.get(11),
    }
}

/// The PostgreSQL implementation of [`Catalog`].
pub struct PgCatalog {
    client: RefCell<Client>,
    node: String,
}

/// Where the database is, for messages (never the password).
pub fn describe(cfg: &postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("database {:?} on {host}:{port}", cfg.get_dbname().unwrap_or("(default)"))
}

/// The password for `cfg`: the `password_file`'s content, else the first
/// matching line of `PGPASSFILE` or `~/.pgpass` (libpq's format
/// `host:port:database:user:password`, `*` matching anything).
///
/// The file follows the rule of the node's other secrets
/// ([`crate::layout::check_secret_file`]): 0600 and the node's, or 0640 in
/// the two-account layout's shared group, where both accounts open the
/// catalog.
fn password(
    file: Option<&Path>,
    cfg: &postgres::Config,
    shared: Option<&crate::layout::SharedGroup>,
) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let md = std::fs::metadata(f).with_context(|| format!("[catalog] password_file {}", f.display()))?;
        crate::layout::check_secret_file(f, "[catalog] password_file", &md, shared, true)
            .map_err(anyhow::Error::msg)?;
        let s = std::fs::read_to_string(f).with_context(|| format!("[catalog] password_file {}", f.display()))?;
        return Ok(Some(s.trim_end_matches(['\n', '\r']).to_owned()));
    }
    let pass: PathBuf = match std::env::var_os("PGPASSFILE") {
        Some(p) => p.into(),
        None => match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&pass) else { return Ok(None) };
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let db = cfg.get_dbname().or(cfg.get_user()).unwrap_or("").to_owned();
    let user = cfg.get_user().unwrap_or("").to_owned();
    Ok(pgpass_lookup(&text, [&host, &port, &db, &user]))
}

/// The password of the first line of a pgpass file matching `want`.
fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // Fields split on unescaped ':'; '\:' and '\\' are literal.
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => fields.last_mut()?.extend(chars.next()),
                ':' if fields.len() < 5 => fields.push(String::new()),
                c => fields.last_mut()?.push(c),
            }
        }
        if fields.len() == 5 && fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return fields.pop();
        }
    }
    None
}

/// A connection to the database `cfg` names (a clear error naming the
/// database when it is unreachable).
pub fn connect_client(cfg: &NodeConfig) -> anyhow::Result<Client> {
    let Some(url) = &cfg.catalog.url else { bail!("no [catalog] url") };
    let mut pc: postgres::Config = url.parse().context("[catalog] url")?;
    pc.connect_timeout(Duration::from_secs(cfg.catalog.connect_timeout_secs));
    pc.application_name(&format!("ferry-node {}", cfg.name));
    if pc.get_password().is_none()
        && let Some(p) =
            password(cfg.catalog.password_file.as_deref(), &pc, crate::layout::SharedGroup::of(cfg).as_ref())?
    {
        pc.password(p);
    }
    let tls = tls(cfg.catalog.ca_file.as_deref(), &mut pc)?;
    let reach = || format!("cannot reach the catalog {}", describe(&pc));
    match tls {
        Some(tls) => pc.connect(tls).with_context(reach),
        None => pc.connect(NoTls).with_context(reach),
    }
}

/// The TLS connector for `pc`, or `None` for a plain connection (no
/// `ca_file` and no `sslmode=require`: a socket, loopback or a trusted
/// network). With TLS the certificate is always checked against the
/// authorities and the url's host: libpq's `require` skips that check, but
/// a catalog reached through an unverified server would let whoever sits
/// in between read and rewrite where every backup is.
fn tls(ca_file: Option<&Path>, pc: &mut postgres::Config) -> anyhow::Result<Option<MakeRustlsConnect>> {
    use postgres::config::SslMode;
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(f) = ca_file {
        // A CA file means TLS: the default `prefer` would fall back to the
        // clear for a server that does not offer it.
        pc.ssl_mode(SslMode::Require);
        let certs = CertificateDer::pem_file_iter(f)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("[catalog] ca_file {}: {e}", f.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("[catalog] ca_file {}: no usable PEM certificate in it", f.display());
        }
    } else if pc.get_ssl_mode() == SslMode::Require {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            bail!("[catalog] url asks for sslmode=require and this host has no CA certificates: set [catalog] ca_file");
        }
    } else {
        return Ok(None);
    }
    // ring: the provider the S3 client already builds with (aws-lc-rs, the
    // one with post-quantum key exchange, would add a C toolchain build).
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS for the catalog")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

impl PgCatalog {
    /// Connect and bring the database to the current schema.
    pub fn connect(cfg: &NodeConfig) -> anyhow::Result<PgCatalog> {
        PgCatalog::with_client(connect_client(cfg)?, &cfg.name)
    }

    /// The catalog over `client` for the node `node`, migrated.
    pub fn with_client(mut client: Client, node: &str) -> anyhow::Result<PgCatalog> {
        migrate(&mut client, node)?;
        Ok(PgCatalog { client: RefCell::new(client), node: node.to_owned() })
    }
}

/// Apply the steps the database lacks, in one transaction, under an
/// advisory lock: nodes starting together wait for each other and the
/// second finds the work done.
fn migrate(client: &mut Client, node: &str) -> anyhow::Result<()> {
    let want = MIGRATIONS.len() as i64;
    // The common case, one round trip: already current (every command
    // opens the catalog; the lock and the DDL are for the first).
    if let Ok(r) = client.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM catalog_migrations", &[])
        && r.get::<_, i64>(0) == want
    {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(schema::MIGRATIONS_TABLE)?;
    let have: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM catalog_migrations", &[])?.get(0);
    if have > want {
        return Err(schema::too_new(have));
    }
    let applied = jiff::Timestamp::now().to_string();
    for v in (have as usize + 1)..=(want as usize) {
        tx.batch_execute(&schema::step(v, Dialect::Postgres, node))
            .with_context(|| format!("catalog migration {v}"))?;
        tx.execute("INSERT INTO catalog_migrations (version, applied) VALUES ($1, $2)", &[&(v as i64), &applied])?;
    }
    tx.commit()?;
    Ok(())
}

impl PgCatalog {
    fn one(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> anyhow::Result<Option<Artifact>> {
        Ok(self.client.borrow_mut().query_opt(sql, params)?.as_ref().map(row))
    }
}

impl Catalog for PgCatalog {
    /// Record an artifact under this node's name. A row already there
    /// (same node and path: a queued row written twice) is kept, and its
    /// id returned.
    fn insert(&self, a: &Artifact) -> anyhow::Result<i64> {
        let mut c = self.client.borrow_mut();
        let inserted = c.query_opt(
            "INSERT INTO artifacts (node, client, source, module, received, stamp, path, size, sha256, duration_ms, request)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (node, path) DO NOTHING RETURNING id",
            &[
                &self.node,
                &a.client,
                &a.source,
                &a.module,
                &a.received,
                &a.stamp,
                &a.path,
                &(a.size as i64),
                &a.sha256,
                &(a.duration_ms as i64),
                &a.request,
            ],
        )?;
        match inserted {
            Some(r) => Ok(r.get(0)),
            None => {
                let r = c.query_one(
                    "SELECT id, size, sha256 FROM artifacts WHERE node=$1 AND path=$2",
                    &[&self.node, &a.path],
                )?;
                super::RowConflict::check(a, &self.node, r.get(0), r.get::<_, i64>(1) as u64, r.get(2))
            }
        }
    }

    fn same(&self, client: &str, source: &str, stamp: &str, sha256: &str) -> anyhow::Result<Option<Artifact>> {
        self.one(
            &format!(
                "SELECT {COLS} FROM artifacts WHERE node=$1 AND client=$2 AND source=$3 AND stamp=$4 AND sha256=$5 LIMIT 1"
            ),
            &[&self.node, &client, &source, &stamp, &sha256],
        )
    }

    fn case_twin_source(&self, client: &str, source: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt(
                "SELECT source FROM artifacts WHERE node=$1 AND client=$2 AND source<>$3 AND lower(source)=lower($3) LIMIT 1",
                &[&self.node, &client, &source],
            )?
            .map(|r| r.get(0)))
    }

    fn case_twin_client(&self, client: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt(
                "SELECT client FROM artifacts WHERE node=$1 AND client<>$2 AND lower(client)=lower($2) LIMIT 1",
                &[&self.node, &client],
            )?
            .map(|r| r.get(0)))
    }

    fn by_stamp(&self, client: &str, source: &str, stamp: &str) -> anyhow::Result<Option<Artifact>> {
        self.one(
            &format!(
                "SELECT {COLS} FROM artifacts WHERE node=$1 AND client=$2 AND source=$3 AND stamp=$4
                 ORDER BY received LIMIT 1"
            ),
            &[&self.node, &client, &source, &stamp],
        )
    }

    fn find(&self, q: &Query) -> anyhow::Result<Vec<Artifact>> {
        let node: Option<&str> = if q.all_nodes { None } else { Some(&self.node) };
        // Byte order (COLLATE "C"), as SQLite sorts, whatever the
        // database's locale.
        let (cond, args) = q.where_clause(node, |n| format!("${n}"));
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn postgres::types::ToSql + Sync)).collect();
        let rows = self.client.borrow_mut().query(
            &format!(
                "SELECT {COLS} FROM artifacts WHERE {cond}
                 ORDER BY client COLLATE \"C\", source COLLATE \"C\", received, node COLLATE \"C\", id"
            ),
            &params,
        )?;
        Ok(rows.iter().map(row).collect())
    }

    fn latest(&self, client: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<Artifact>> {
        self.one(
            &format!(
                "SELECT {COLS} FROM artifacts WHERE node=$1 AND client=$2 AND source=$3 AND ($4::TEXT IS NULL OR received<=$4)
                 ORDER BY received DESC, id DESC LIMIT 1"
            ),
            &[&self.node, &client, &source, &at],
        )
    }

    fn bytes_of(&self, client: &str) -> anyhow::Result<u64> {
        let n: i64 = self
            .client
            .borrow_mut()
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT FROM artifacts WHERE node=$1 AND client=$2",
                &[&self.node, &client],
            )?
            .get(0);
        Ok(n as u64)
    }

    fn delete(&self, id: i64) -> anyhow::Result<()> {
        self.client.borrow_mut().execute("DELETE FROM artifacts WHERE id=$1 AND node=$2", &[&id, &self.node])?;
        Ok(())
    }

    fn record_drill(&self, d: &Drill) -> anyhow::Result<()> {
        self.client.borrow_mut().execute(
            "INSERT INTO drills (node, client, source, what, at, ok, duration_ms, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&self.node, &d.client, &d.source, &d.what, &d.at, &(d.ok as i64), &(d.duration_ms as i64), &d.reason],
        )?;
        Ok(())
    }

    fn last_drill(&self, client: &str, source: &str, only_ok: bool) -> anyhow::Result<Option<Drill>> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt(
                "SELECT client, source, what, at, ok, duration_ms, reason FROM drills
                 WHERE node=$1 AND client=$2 AND source=$3 AND (ok=1 OR NOT $4) ORDER BY at DESC, id DESC LIMIT 1",
                &[&self.node, &client, &source, &only_ok],
            )?
            .map(|r| Drill {
                client: r.get(0),
                source: r.get(1),
                what: r.get(2),
                at: r.get(3),
                ok: r.get::<_, i64>(4) != 0,
                duration_ms: r.get::<_, i64>(5) as u64,
                reason: r.get(6),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let td = tempfile::tempdir().unwrap();
        let f = td.path().join("pass");
        std::fs::write(&f, "secret\n").unwrap();
        let cfg: postgres::Config = "postgres://ferry@db/ferry".parse().unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = password(Some(&f), &cfg, None).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("secret"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password(Some(&f), &cfg, None).unwrap().as_deref(), Some("secret"));
    }

    #[test]
    fn pgpass_matches_fields_wildcards_and_escapes() {
        let text = "# comment\nother:5432:ferry:ferry:no\n*:5433:ferry:ferry:a\\:b\\\\c\n*:*:*:*:last\n";
        assert_eq!(pgpass_lookup(text, ["db", "5433", "ferry", "ferry"]).as_deref(), Some("a:b\\c"));
        assert_eq!(pgpass_lookup(text, ["db", "1", "x", "y"]).as_deref(), Some("last"));
        assert_eq!(pgpass_lookup("h:1:d:u:pw\n", ["h", "2", "d", "u"]), None);
    }
}
