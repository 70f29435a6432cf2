//! Maintenance: `purge` (retention) and `gc` (monthly git gc with a
//! report), one at a time under the maintenance lock (with `verify`).

use anyhow::Context;
use serde::Serialize;

use crate::catalog::Query;
use crate::config::NodeConfig;

#[derive(Debug, Default, Serialize)]
pub struct PurgeReport {
    pub artifacts_removed: Vec<String>,
    pub bytes_freed: u64,
    pub pool_files_removed: usize,
}

/// The node-wide maintenance lock (`state/maintain.lock`): `purge`,
/// `verify` and `gc` run one at a time whoever starts them (cron, a timer,
/// the daemon, an administrator), so a verify never reports as missing what
/// a purge is removing, and two purges never race on one artifact. A run
/// that finds the lock taken waits for it: the other run ends, or dies and
/// its flock goes with it.
pub fn maintenance_lock(cfg: &NodeConfig, what: &str) -> anyhow::Result<ferry_durable::Lock> {
    let dir = cfg.state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("maintain.lock");
    if let Some(l) = ferry_durable::Lock::try_acquire(&path)? {
        return Ok(l);
    }
    tracing::warn!(lock = %path.display(), "{what}: waiting for another purge, verify or gc to finish");
    Ok(ferry_durable::Lock::acquire(&path)?)
}

/// Retention on node time only (SECURITY I7, RE-06): per client and source
/// the newest `keep_last` artifacts are always kept; older ones go once
/// their *receive* time is more than `keep_days` old. Client timestamps
/// never decide. Finished pool files older than `finished_days` go too.
pub fn purge(cfg: &NodeConfig, dry_run: bool) -> anyhow::Result<PurgeReport> {
    let _lock = maintenance_lock(cfg, "purge")?;
    let mut report = PurgeReport::default();
    let now = jiff::Timestamp::now();
    if cfg.retention.keep_days > 0
        && let Some(cat) = crate::catalog::open_existing(cfg)?
    {
        let cutoff = (now - jiff::SignedDuration::from_hours(24 * cfg.retention.keep_days as i64))
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let store = crate::store::open(cfg);
        let all = cat.find(&Query::default())?;
        let mut groups: std::collections::BTreeMap<(String, String), Vec<_>> = Default::default();
        for a in all {
            groups.entry((a.client.clone(), a.source.clone())).or_default().push(a);
        }
        for (_, mut list) in groups {
            list.sort_by(|a, b| b.received.cmp(&a.received).then(b.id.cmp(&a.id)));
            for a in list.into_iter().skip(cfg.retention.keep_last.max(1)) {
                if a.received >= cutoff {
                    continue;
                }
                report.bytes_freed += a.size;
                report.artifacts_removed.push(a.path.clone());
                if dry_run {
                    continue;
                }
                if let Some(key) = crate::store::ArtifactKey::parse(&a.path) {
                    store.remove(&key)?;
                }
                cat.delete(a.id)?;
            }
        }
    }
    let finished = std::time::Duration::from_secs(cfg.retention.finished_days * 86400);
    for de in std::fs::read_dir(cfg.pool_dir()).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(de.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            // Finished, failed and acknowledged requests, with their reasons.
            if !(n.starts_with('F') || n.starts_with('E') || n.starts_with('A')) {
                continue;
            }
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > finished)
                .unwrap_or(false);
            if old {
                report.pool_files_removed += 1;
                if !dry_run {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
    Ok(report)
}

#[derive(Debug, Serialize)]
pub struct GcEntry {
    pub mirror: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub error: Option<String>,
}

/// `git gc` on every mirror (the seed's monthly git_gc.sh), keeping every
/// reflog and unreachable object (append-only history), with a report that
/// is logged and mailed.
pub fn gc(cfg: &NodeConfig) -> anyhow::Result<Vec<GcEntry>> {
    let _lock = maintenance_lock(cfg, "gc")?;
    let mut out = Vec::new();
    for cdir in std::fs::read_dir(cfg.data_dir()).into_iter().flatten().flatten() {
        let mirrors = crate::repos::find_mirrors(&cdir.path().join("git"));
        let client = cdir.file_name().to_string_lossy().into_owned();
        // Under the client's pool lock, like every fetch into these mirrors:
        // a fetch and a gc in one mirror at once could lose refs, and the
        // scan's sweep of a killed job's git locks must never take gc's.
        let _lock = if !mirrors.is_empty() && ferry_gitosis::username::is_valid_client_name(&client) {
            Some(crate::pool::open_pool(cfg, &client)?.lock()?)
        } else {
            None
        };
        for m in mirrors {
            let before = crate::store::used_bytes(&m);
            let res = ferry_run::Cmd::new(&cfg.git)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("HOME", cfg.empty_dir())
                .args([
                    "-c",
                    "gc.reflogExpire=never",
                    "-c",
                    "gc.reflogExpireUnreachable=never",
                    "-c",
                    "gc.pruneExpire=never",
                ])
                .args(["-c", "core.hooksPath=/dev/null", "-c", "pack.threads=1"])
                .arg(format!("--git-dir={}", m.display()))
                .args(["gc", "--quiet"])
                .timeout(cfg.duration(&cfg.limits.job_timeout))
                .run_checked();
            out.push(GcEntry {
                mirror: m.strip_prefix(cfg.data_dir()).unwrap_or(&m).display().to_string(),
                bytes_before: before,
                bytes_after: crate::store::used_bytes(&m),
                error: res.err().map(|e| e.to_string()),
            });
        }
    }
    let failed = out.iter().filter(|e| e.error.is_some()).count();
    let mut body = format!("git gc on node {}: {} mirrors, {failed} failed.\n", cfg.name, out.len());
    for e in &out {
        body.push_str(&format!(
            "{:<50} {:>12} -> {:>12} bytes{}\n",
            e.mirror,
            e.bytes_before,
            e.bytes_after,
            e.error.as_deref().map(|x| format!("  FAILED: {}", ferry_text::sanitize(x, 200))).unwrap_or_default()
        ));
    }
    crate::events::record(&cfg.events_log(), if failed > 0 { "warn" } else { "info" }, None, "gc", None, None, &body);
    // A report, not an alert: logged at info level and mailed on its own
    // (`[ferry <node>] GC_REPORT: <node>`), never inside an alert digest.
    // Failed mirrors show in its body, in the journal (warn) and in the
    // exit code (3).
    crate::alerts::raise(cfg, ferry_notify::Alert::new(ferry_notify::Kind::GcReport, "gc", &cfg.name, body));
    crate::alerts::flush(cfg);
    Ok(out)
}
