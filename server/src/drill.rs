//! Restore drills (issue 12): nothing proves a backup restores until it
//! was restored. `ferry-node drill [CLIENT [SOURCE]]` (and the daemon's
//! `drill_every`, weekly by default) restores the newest artifact of each
//! source into a scratch area and checks it:
//!
//! * a database dump is replayed into a throw-away database on the
//!   `[drill]` server, with the same least privilege as `restore
//!   --into-db` (a one-time role that owns only that database, client-side
//!   commands refused), then the database and role are dropped;
//! * an fs archive is extracted with the strict extractor;
//! * any other artifact is copied out and re-hashed;
//! * a git mirror is cloned through git's transport and `git fsck`ed.
//!
//! A drill never touches the stored artifact (everything reads through the
//! store and writes only under the scratch area); it records pass/fail,
//! duration and a one-line reason in the catalog, mails DRILL_FAILED once
//! (DRILL_PASSED when it passes again), and the published catalog and the
//! history page show the last good drill per source.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::catalog::{Catalog, Drill, Query};
use crate::clientstate::ClientState;
use crate::config::NodeConfig;
use crate::restore::db::{DbTarget, DumpKind};

/// The outcome of one drill (also what `--json` prints).
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub client: String,
    pub source: String,
    pub what: String,
    /// `passed`, `failed` or `skipped` (nothing to restore into).
    pub result: &'static str,
    pub duration_ms: u64,
    pub reason: String,
}

fn scratch(cfg: &NodeConfig) -> PathBuf {
    cfg.drill.scratch.clone().unwrap_or_else(|| cfg.state_dir().join("drill"))
}

/// Drills every source (of `client`, of `source`) and records the results.
pub fn drill(cfg: &NodeConfig, client: Option<&str>, source: Option<&str>) -> anyhow::Result<Vec<Outcome>> {
    let _lock = crate::maintain::maintenance_lock(cfg, "drill")?;
    let catalog = crate::catalog::open(cfg)?;
    let area = scratch(cfg);
    // A drill killed half-way leaves its scratch behind: start clean.
    if area.exists() {
        std::fs::remove_dir_all(&area).with_context(|| format!("emptying {}", area.display()))?;
    }
    std::fs::create_dir_all(&area)?;
    let mut newest: std::collections::BTreeMap<(String, String), crate::catalog::Artifact> = Default::default();
    for a in catalog.find(&Query { client: client.map(str::to_owned), ..Query::default() })? {
        if source.is_none_or(|s| s == a.source) {
            newest.insert((a.client.clone(), a.source.clone()), a);
        }
    }
    let mut out = Vec::new();
    for ((c, s), a) in newest {
        let start = Instant::now();
        let dir = area.join(format!("{c}--{s}"));
        let result = artifact_drill(cfg, &a, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        out.push(finish(cfg, catalog.as_ref(), &c, &s, &a.path, start, result));
    }
    for cdir in std::fs::read_dir(cfg.data_dir()).into_iter().flatten().flatten() {
        let c = cdir.file_name().to_string_lossy().into_owned();
        if client.is_some_and(|x| x != c) || !ferry_gitosis::username::is_valid_client_name(&c) {
            continue;
        }
        for m in crate::repos::find_mirrors(&cdir.path().join("git")) {
            let Some(name) = m.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".git")) else {
                continue;
            };
            if source.is_some_and(|s| s != name) {
                continue;
            }
            let start = Instant::now();
            let dir = area.join(format!("{c}--git"));
            let result = mirror_drill(cfg, &m, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            let rel = m.strip_prefix(cfg.data_dir()).unwrap_or(&m).display().to_string();
            out.push(finish(cfg, catalog.as_ref(), &c, name, &rel, start, result));
        }
    }
    crate::alerts::flush(cfg);
    Ok(out)
}

/// What a drill found: `Ok(Some(what was checked))`, `Ok(None)` when
/// skipped (the reason in the error text is then the skip reason).
type Found = Result<Result<String, String>, anyhow::Error>;

fn finish(
    cfg: &NodeConfig,
    catalog: &dyn Catalog,
    client: &str,
    source: &str,
    what: &str,
    start: Instant,
    found: Found,
) -> Outcome {
    let duration_ms = start.elapsed().as_millis() as u64;
    let (result, reason) = match found {
        Ok(Ok(r)) => ("passed", r),
        Ok(Err(skip)) => ("skipped", skip),
        Err(e) => ("failed", ferry_text::sanitize(&format!("{e:#}"), 400)),
    };
    if result != "skipped" {
        let d = Drill {
            client: client.to_owned(),
            source: source.to_owned(),
            what: what.to_owned(),
            at: crate::clock::now().to_string(),
            ok: result == "passed",
            duration_ms,
            reason: reason.clone(),
        };
        if let Err(e) = catalog.record_drill(&d) {
            tracing::error!(client, source, "recording a drill: {e:#}");
        }
        ClientState::update(cfg, client, |st| {
            let key = format!("drill:{client}:{source}");
            if !d.ok && st.drill_failed_open.insert(source.to_owned()) {
                let body =
                    format!("The restore drill of {client}/{source} ({what}) failed on node {}: {reason}", cfg.name);
                crate::alerts::raise(cfg, ferry_notify::Alert::new(ferry_notify::Kind::DrillFailed, key, client, body));
            } else if d.ok && st.drill_failed_open.remove(source) {
                let body = format!("The restore drill of {client}/{source} passes again on node {}.", cfg.name);
                crate::alerts::raise(cfg, ferry_notify::Alert::new(ferry_notify::Kind::DrillPassed, key, client, body));
            }
        });
    }
    tracing::info!(client, source, result, duration_ms, "drill: {reason}");
    Outcome { client: client.to_owned(), source: source.to_owned(), what: what.to_owned(), result, duration_ms, reason }
}

/// A database name for one drill: unique per source and run, valid for
/// both engines.
fn drill_db(client: &str, source: &str) -> String {
    let tag = ferry_durable::short_hash(format!("{client}/{source}/{}", crate::clock::now()).as_bytes());
    let mut t: String = tag.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    t.make_ascii_lowercase();
    format!("ferry_drill_{t}")
}

fn artifact_drill(cfg: &NodeConfig, a: &crate::catalog::Artifact, dir: &Path) -> Found {
    let file = a.path.rsplit('/').next().unwrap_or("");
    if let Some(kind) = DumpKind::of(file) {
        let target = match kind {
            DumpKind::PgCustom | DumpKind::PgCluster => cfg.drill.postgres_host.as_ref().map(|h| DbTarget {
                db: drill_db(&a.client, &a.source),
                admin_os_user: cfg.drill.postgres_user.clone(),
                host: Some(h.clone()),
                port: cfg.drill.postgres_port,
                restore_host: cfg.drill.restore_host.clone(),
            }),
            DumpKind::MySql => cfg.drill.mariadb_host.as_ref().map(|h| DbTarget {
                db: drill_db(&a.client, &a.source),
                admin_os_user: cfg.drill.mariadb_user.clone(),
                host: Some(h.clone()),
                port: cfg.drill.mariadb_port,
                restore_host: None,
            }),
        };
        let Some(target) = target else {
            let which = if kind == DumpKind::MySql { "mariadb_host" } else { "postgres_host" };
            return Ok(Err(format!("not drilled: no database server for this dump ([drill] {which})")));
        };
        let args = crate::restore::artifact::RestoreArgs { into_db: Some(target.clone()), ..Default::default() };
        let restored = crate::restore::artifact::restore(cfg, a, &args, false);
        let dropped = crate::restore::db::drop_restored(kind, &target)
            .with_context(|| format!("dropping the drill database {}", target.db));
        let msg = restored?;
        dropped?;
        return Ok(Ok(format!("{msg}; dropped again")));
    }
    let args = crate::restore::artifact::RestoreArgs { to: Some(dir.to_owned()), ..Default::default() };
    crate::restore::artifact::restore(cfg, a, &args, false).map(Ok)
}

fn mirror_drill(cfg: &NodeConfig, mirror: &Path, dir: &Path) -> Found {
    crate::restore::restore_git(cfg, mirror, dir, false)?;
    let out = ferry_run::Cmd::new(&cfg.git)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", cfg.empty_dir())
        .arg(format!("--git-dir={}", dir.display()))
        .args(["fsck", "--no-progress", "--no-dangling", "--strict"])
        .timeout(cfg.duration(&cfg.limits.job_timeout))
        .run_checked()
        .map_err(|e| anyhow::anyhow!("git fsck of the clone: {e}"))?;
    let refs = ferry_run::Cmd::new(&cfg.git)
        .arg(format!("--git-dir={}", dir.display()))
        .args(["for-each-ref", "--format=%(refname)"])
        .run_checked()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(out);
    Ok(Ok(format!("cloned and fsck-clean, {} refs", refs.stdout_str().lines().count())))
}
