//! Maintenance: `purge` (retention) and `gc` (monthly git gc with a
//! report), one at a time under the maintenance lock (with `verify`).

use anyhow::Context;
use serde::Serialize;

use std::collections::BTreeMap;

use crate::catalog::{Artifact, Query};
use crate::config::NodeConfig;

#[derive(Debug, Default, Serialize)]
pub struct PurgeReport {
    pub artifacts_removed: Vec<String>,
    pub bytes_freed: u64,
    pub pool_files_removed: usize,
    /// Store contents of snapshot trees no snapshot links any more,
    /// removed after the snapshots went (their bytes are in `bytes_freed`).
    pub tree_contents_removed: u64,
    /// Every artifact of every source that has rules: kept (with the rules
    /// that keep it) or removed.
    pub items: Vec<PurgeItem>,
    /// Sources or clients left alone this run, and why.
    pub skipped: Vec<Skipped>,
}

/// One artifact's fate.
#[derive(Debug, Serialize)]
pub struct PurgeItem {
    pub client: String,
    pub source: String,
    pub path: String,
    /// Node receive time.
    pub received: String,
    pub size: u64,
    pub verified: bool,
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, …, `only-verified`).
    pub reasons: Vec<crate::retention::Reason>,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub client: String,
    pub source: Option<String>,
    pub why: String,
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

/// Retention on node time only (SECURITY I7, RE-06), per client and source
/// with the rules of [`crate::retention`]: the source's
/// `[ferry source CLIENT SOURCE]` section, else its client's `keep-*`
/// options, else the node's `[retention]`; no rules: kept forever. A
/// client whose pool lock is held (a pull of it is running) is left alone
/// this run. Finished pool files older than `finished_days` go too.
pub fn purge(cfg: &NodeConfig, dry_run: bool) -> anyhow::Result<PurgeReport> {
    let _lock = maintenance_lock(cfg, "purge")?;
    let mut report = PurgeReport::default();
    let node_rules = cfg.retention.node_rules()?;
    let enrollment =
        if cfg.enrolled_dir().join("gitosis.conf").exists() { Some(crate::enrollment::load(cfg)?) } else { None };
    if let Some(cat) = crate::catalog::open_existing(cfg)? {
        let store = crate::store::open(cfg)?;
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<Artifact>>> = BTreeMap::new();
        for a in cat.find(&Query::default())? {
            groups.entry(a.client.clone()).or_default().entry(a.source.clone()).or_default().push(a);
        }
        for (client, sources) in groups {
            let rules: Vec<_> = sources
                .into_iter()
                .filter_map(|(source, list)| {
                    let r = enrollment.as_ref().and_then(|e| e.keep_rules(&client, &source)).or(node_rules);
                    if r.is_none() {
                        report.skipped.push(Skipped {
                            client: client.clone(),
                            source: Some(source.clone()),
                            why: "no retention rules: kept forever".into(),
                        });
                    }
                    Some((source, list, r?))
                })
                .collect();
            if rules.is_empty() {
                continue;
            }
            // A pull holds the client's pool lock from taking its requests
            // to storing them: nothing of the client is touched meanwhile.
            let _pool = if ferry_gitosis::username::is_valid_client_name(&client) {
                match crate::pool::open_pool(cfg, &client)?.try_lock()? {
                    Some(l) => Some(l),
                    None => {
                        report.skipped.push(Skipped {
                            client: client.clone(),
                            source: None,
                            why: "a pull of this client is running; purged next run".into(),
                        });
                        continue;
                    }
                }
            } else {
                None
            };
            for (source, list, rules) in rules {
                purge_source(cfg, &*cat, &*store, &client, &source, list, &rules, dry_run, &mut report)?;
            }
            if !dry_run && ferry_gitosis::username::is_valid_client_name(&client) {
                let (n, bytes) = crate::treepurge::gc(cfg, &client)?;
                report.tree_contents_removed += n;
                report.bytes_freed += bytes;
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

/// One source: decide, then remove what no rule keeps (not in a dry run).
#[allow(clippy::too_many_arguments)]
fn purge_source(
    cfg: &NodeConfig,
    cat: &dyn crate::catalog::Catalog,
    store: &dyn crate::store::ArtifactStore,
    client: &str,
    source: &str,
    list: Vec<Artifact>,
    rules: &ferry_gitosis::enroll::KeepRules,
    dry_run: bool,
    report: &mut PurgeReport,
) -> anyhow::Result<()> {
    let mut items = Vec::new();
    let mut rows = Vec::new();
    for a in list {
        let tree = a.module == crate::trees::MODULE;
        // A snapshot tree's path has four segments too, but is no artifact.
        let key = if tree { None } else { crate::store::ArtifactKey::parse(&a.path) };
        // A run directory received in the same second as another has a
        // `-N` suffix; the time is the first 16 characters.
        let Some(at) = a.received.get(..16).and_then(|t| {
            jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", t)
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
                .ok()
        }) else {
            // Not a receive time the node wrote: never decided on, kept.
            report.skipped.push(Skipped {
                client: client.to_owned(),
                source: Some(source.to_owned()),
                why: format!("{}: unreadable receive time, kept", a.path),
            });
            continue;
        };
        let verified = match &key {
            None if tree => crate::treepurge::verified(cfg, &a),
            Some(k) => store
                .stat(k)?
                .is_some_and(|st| st.size == a.size && st.sidecar.as_deref() == Some(&k.sidecar_text(&a.sha256))),
            None => false,
        };
        items.push(crate::retention::Item { id: a.id, at, verified });
        rows.push((a, key, verified));
    }
    let decisions = crate::retention::decide(&items, rules)
        .map_err(|e| anyhow::anyhow!("retention rules of {client} {source}: {e}"))?;
    for (d, (a, key, verified)) in decisions.into_iter().zip(rows) {
        let mut keep = d.keep();
        let tree = a.module == crate::trees::MODULE;
        if !keep
            && tree
            && let Some(at) = crate::treepurge::rescued_at(cfg, &a)
        {
            keep = true;
            report.skipped.push(Skipped {
                client: client.to_owned(),
                source: Some(source.to_owned()),
                why: format!("{}: rescued at {at}, kept until `ferry-node rescue --undo`", a.path),
            });
        }
        if !keep {
            // A snapshot's own bytes are shared with others: what it frees
            // is counted when the store drops unlinked contents.
            if !tree {
                report.bytes_freed += a.size;
            }
            report.artifacts_removed.push(a.path.clone());
            if !dry_run {
                if let Some(key) = &key {
                    store.remove(key)?;
                } else if tree {
                    crate::treepurge::remove(cfg, &a)?;
                }
                cat.delete(a.id)?;
            }
        }
        report.items.push(PurgeItem {
            client: client.to_owned(),
            source: source.to_owned(),
            path: a.path,
            received: a.received,
            size: a.size,
            verified,
            keep,
            reasons: d.reasons,
        });
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct GcEntry {
    pub mirror: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long `git gc` took on this mirror.
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// `1.5 MiB`, `812 KiB`, `93 B`: sizes in the gc report, for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The mailed gc report: totals first (what shrank, how long), then one
/// line per mirror.
pub fn gc_body(node: &str, entries: &[GcEntry], took: std::time::Duration) -> String {
    let failed = entries.iter().filter(|e| e.error.is_some()).count();
    let before: u64 = entries.iter().map(|e| e.bytes_before).sum();
    let after: u64 = entries.iter().map(|e| e.bytes_after).sum();
    let change = |b: u64, a: u64| {
        if a <= b { format!("shrank by {}", human_bytes(b - a)) } else { format!("grew by {}", human_bytes(a - b)) }
    };
    let mut body = format!(
        "git gc on node {node}: {} mirrors, {failed} failed, in {:.1} s.\nTotal: {} -> {} ({}).\nReflogs and unreachable objects are kept (append-only history).\n\n",
        entries.len(),
        took.as_secs_f64(),
        human_bytes(before),
        human_bytes(after),
        change(before, after),
    );
    for e in entries {
        // Two short lines per mirror: mail bodies are wrapped at 72.
        body.push_str(&format!(
            "{}\n  {} -> {}, {}, {:.1} s{}\n",
            e.mirror,
            human_bytes(e.bytes_before),
            human_bytes(e.bytes_after),
            change(e.bytes_before, e.bytes_after),
            e.duration_ms as f64 / 1000.0,
            e.error.as_deref().map(|x| format!("\n  FAILED: {}", ferry_text::sanitize(x, 200))).unwrap_or_default()
        ));
    }
    body
}

/// `git gc` on every mirror (the seed's monthly git_gc.sh), keeping every
/// reflog and unreachable object (append-only history), with a report that
/// is logged and mailed.
pub fn gc(cfg: &NodeConfig) -> anyhow::Result<Vec<GcEntry>> {
    let _lock = maintenance_lock(cfg, "gc")?;
    let started = std::time::Instant::now();
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
            let t = std::time::Instant::now();
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
                duration_ms: t.elapsed().as_millis() as u64,
                error: res.err().map(|e| e.to_string()),
            });
        }
    }
    let failed = out.iter().filter(|e| e.error.is_some()).count();
    let body = gc_body(&cfg.name, &out, started.elapsed());
    crate::events::record(&cfg.events_log(), if failed > 0 { "warn" } else { "info" }, None, "gc", None, None, &body);
    // A report, not an alert: logged at info level and mailed on its own
    // (`[ferry <node>] GC_REPORT: <node>`), never inside an alert digest.
    // Failed mirrors show in its body, in the journal (warn) and in the
    // exit code (3).
    crate::alerts::raise(cfg, ferry_notify::Alert::new(ferry_notify::Kind::GcReport, "gc", &cfg.name, body));
    crate::alerts::flush(cfg);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gc_report_says_what_shrank_and_how_long_it_took() {
        assert_eq!(
            (human_bytes(93), human_bytes(1536), human_bytes(3 << 20)),
            ("93 B".into(), "1.5 KiB".into(), "3.0 MiB".into())
        );
        let e = |m: &str, b, a, error: Option<&str>| GcEntry {
            mirror: m.into(),
            bytes_before: b,
            bytes_after: a,
            duration_ms: 1500,
            error: error.map(str::to_owned),
        };
        let body = gc_body(
            "backup1",
            &[e("host-a/git/p.git", 4 << 20, 1 << 20, None), e("host-b/git/q.git", 1024, 2048, Some("boom"))],
            std::time::Duration::from_millis(3200),
        );
        assert!(
            body.starts_with(
                "git gc on node backup1: 2 mirrors, 1 failed, in 3.2 s.\nTotal: 4.0 MiB -> 1.0 MiB (shrank by 3.0 MiB)."
            ),
            "{body}"
        );
        assert!(body.contains("host-a/git/p.git\n  4.0 MiB -> 1.0 MiB, shrank by 3.0 MiB, 1.5 s\n"), "{body}");
        assert!(
            body.contains("host-b/git/q.git\n  1.0 KiB -> 2.0 KiB, grew by 1.0 KiB, 1.5 s\n  FAILED: boom"),
            "{body}"
        );
        assert!(body.lines().all(|l| l.len() <= 72), "{body}");
    }
}
