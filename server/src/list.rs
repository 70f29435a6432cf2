//! `ferry-node list`: what is stored, per client.

use std::path::Path;

use serde::Serialize;

use crate::config::NodeConfig;

#[derive(Debug, Serialize)]
pub struct MirrorInfo {
    /// Path below `data/<client>/`, e.g. `git/team/app.git`.
    pub name: String,
    pub path: String,
    pub origin: Option<String>,
    pub heads: usize,
    pub tags: usize,
    pub last_fetch: Option<String>,
    /// What `restore --at` can go back to (filled by [`add_history`]:
    /// `list` shows it, the daemon's collector does not read reflogs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<KeptHistory>,
}

/// The history a mirror keeps (see [`crate::history`]).
#[derive(Debug, Serialize)]
pub struct KeptHistory {
    /// Node time of the first backup: `restore --at` goes back to here.
    pub first_backup: Option<String>,
    /// Runs in which the client rewrote or deleted refs (force-push,
    /// deleted branch); their old values are kept under `refs/backup/`.
    pub rewrites: usize,
    /// Refs kept under `refs/backup/`.
    pub kept_refs: usize,
    /// Node time of the oldest and newest rewrite.
    pub oldest_rewrite: Option<String>,
    pub newest_rewrite: Option<String>,
}

fn kept_history(mirror: &Path) -> Option<KeptHistory> {
    let h = match crate::history::History::load(mirror) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(mirror = %mirror.display(), "cannot read the mirror's history: {e:#}");
            return None;
        }
    };
    let span = h.rewrite_span();
    Some(KeptHistory {
        first_backup: h.first.map(crate::history::iso),
        rewrites: h.rewrites.len(),
        kept_refs: h.kept_refs,
        oldest_rewrite: span.map(|s| crate::history::iso(s.0)),
        newest_rewrite: span.map(|s| crate::history::iso(s.1)),
    })
}

#[derive(Debug, Serialize)]
pub struct ClientInfo {
    pub client: String,
    pub enrolled: bool,
    pub git: Vec<MirrorInfo>,
    pub artifacts: Vec<crate::catalog::Artifact>,
    pub pending: usize,
    pub finished: usize,
    /// Failed requests not acknowledged yet (`E`).
    pub failed: usize,
    /// The newest of them (at most [`FAILED_SHOWN`]), with their reasons.
    pub failed_requests: Vec<FailedRequest>,
    /// Failed requests acknowledged with `ferry-node ack` (`A`).
    pub acknowledged: usize,
    /// The client's content store of snapshot trees, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_store: Option<TreeStore>,
}

/// What the content store of a client's snapshot trees holds: the bytes
/// the trees really cost (every snapshot's files are links into it).
#[derive(Debug, Serialize)]
pub struct TreeStore {
    /// The store's directory under `data/`: `<client>/store`, or
    /// `.share/<group>/store` for a member of a share group (the figures
    /// below are then the whole group's).
    pub dir: String,
    /// Distinct contents.
    pub contents: u64,
    /// Bytes stored (all copies; each inode once).
    pub bytes: u64,
    /// Contents no snapshot links any more (removed by the next purge).
    pub unreferenced: u64,
}

/// The store the client's trees use now (its own, or its share group's:
/// then the figures are the group's), listed once (one `lstat` per
/// content).
fn tree_store(cfg: &NodeConfig, client: &str) -> Option<TreeStore> {
    let dir = crate::trees::live_store_dir(cfg, client);
    if !dir.is_dir() {
        return None;
    }
    let rel = dir.strip_prefix(cfg.data_dir()).unwrap_or(&dir).to_string_lossy().into_owned();
    let store = ferry_tree::store::Store::open(&dir).ok()?;
    let mut t = TreeStore { dir: rel, contents: 0, bytes: 0, unreferenced: 0 };
    for c in store.iter().flatten() {
        t.contents += 1;
        t.bytes += c.copies.iter().map(|k| k.size).sum::<u64>();
        if c.references() == 0 {
            t.unreferenced += 1;
        }
    }
    Some(t)
}

/// A failed request and why, as its `E<id>.why` says.
#[derive(Debug, Serialize)]
pub struct FailedRequest {
    pub id: String,
    /// The reason code (`E_…`).
    pub reason: String,
    /// The escaped detail recorded with it.
    pub detail: String,
    pub at: String,
}

/// Failed requests listed per client with their reasons (all are counted).
pub const FAILED_SHOWN: usize = 50;

fn count_refs(dir: &Path, git: &Path) -> (usize, usize) {
    let out = ferry_run::Cmd::new(git)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg(format!("--git-dir={}", dir.display()))
        .args(["for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags"])
        .run_checked();
    match out {
        Ok(o) => {
            let s = o.stdout_str();
            (
                s.lines().filter(|l| l.starts_with("refs/heads/")).count(),
                s.lines().filter(|l| l.starts_with("refs/tags/")).count(),
            )
        }
        Err(_) => (0, 0),
    }
}

pub fn collect(cfg: &NodeConfig, only: Option<&str>) -> anyhow::Result<Vec<ClientInfo>> {
    let enrolled: Vec<String> =
        crate::enrollment::load(cfg).map(|e| e.clients.keys().cloned().collect()).unwrap_or_default();
    let mut names: std::collections::BTreeSet<String> = enrolled.iter().cloned().collect();
    for dir in [cfg.data_dir(), cfg.pool_dir()] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for de in rd.flatten() {
                if let Some(n) = de.file_name().to_str()
                    && ferry_gitosis::username::is_valid_client_name(n)
                {
                    names.insert(n.to_owned());
                }
            }
        }
    }
    let catalog = crate::catalog::open_existing(cfg)?;
    // A shared catalog also lists the clients other nodes store.
    if crate::catalog::is_shared(cfg)
        && let Some(cat) = &catalog
    {
        let q = crate::catalog::Query { client: only.map(str::to_owned), all_nodes: true, ..Default::default() };
        // Names from the database build paths below: the same grammar as
        // the names read from the data directory.
        names.extend(
            cat.find(&q)?.into_iter().map(|a| a.client).filter(|n| ferry_gitosis::username::is_valid_client_name(n)),
        );
    }
    let mut out = Vec::new();
    for c in names.into_iter().filter(|c| only.is_none_or(|o| o == c)) {
        let cdir = cfg.client_data(&c);
        let git = crate::repos::find_mirrors(&cdir.join("git"))
            .into_iter()
            .map(|p| {
                let (heads, tags) = count_refs(&p, &cfg.git);
                MirrorInfo {
                    name: p.strip_prefix(&cdir).unwrap_or(&p).display().to_string(),
                    origin: std::fs::read_to_string(p.join("ferry-origin")).ok().map(|s| s.trim().to_owned()),
                    last_fetch: std::fs::read_to_string(p.join("ferry-fetched")).ok().map(|s| s.trim().to_owned()),
                    path: p.display().to_string(),
                    heads,
                    tags,
                    history: None,
                }
            })
            .collect();
        let (mut pending, mut finished, mut acknowledged) = (0, 0, 0);
        let mut failed_ids = Vec::new();
        if let Ok(pool) = crate::pool::open_pool(cfg, &c) {
            for e in pool.list()? {
                match e.state {
                    "RQ" | "P" => pending += 1,
                    "F" => finished += 1,
                    "A" => acknowledged += 1,
                    _ => failed_ids.push(e.id),
                }
            }
        }
        let failed_requests = failed_ids
            .iter()
            .rev()
            .take(FAILED_SHOWN)
            .map(|id| {
                let why = crate::pool::reason_of(&cfg.client_pool(&c), id).unwrap_or_default();
                let field = |k: &str| why.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                FailedRequest { id: id.clone(), reason: field("reason"), detail: field("detail"), at: field("at") }
            })
            .collect();
        let failed = failed_ids.len();
        let artifacts = match &catalog {
            Some(cat) => {
                cat.find(&crate::catalog::Query { client: Some(c.clone()), all_nodes: true, ..Default::default() })?
            }
            None => Vec::new(),
        };
        out.push(ClientInfo {
            tree_store: tree_store(cfg, &c),
            enrolled: enrolled.contains(&c),
            client: c,
            git,
            artifacts,
            pending,
            finished,
            failed,
            failed_requests,
            acknowledged,
        });
    }
    Ok(out)
}

/// Reads each mirror's kept history into `list`.
pub fn add_history(list: &mut [ClientInfo]) {
    for m in list.iter_mut().flat_map(|c| c.git.iter_mut()) {
        m.history = kept_history(Path::new(&m.path));
    }
}

/// The human listing; every line goes through [`crate::out::line`].
/// `shared`: the catalog is shared, each artifact names its node.
pub fn print(list: &[ClientInfo], shared: bool) -> std::io::Result<()> {
    use crate::out::line;
    for c in list {
        line(&format!("{}{}", c.client, if c.enrolled { "" } else { " (not enrolled)" }))?;
        for m in &c.git {
            line(&format!(
                "  {:<40} {} heads, {} tags, last fetch {}{}",
                m.name,
                m.heads,
                m.tags,
                m.last_fetch.as_deref().unwrap_or("-"),
                m.origin.as_deref().map(|o| format!(", from {o}")).unwrap_or_default()
            ))?;
            if let Some(h) = &m.history {
                let rewrites = match (h.rewrites, &h.oldest_rewrite) {
                    (0, _) => "no rewrites".to_owned(),
                    (n, Some(oldest)) => format!(
                        "{n} rewrite{} kept ({} refs under refs/backup/, oldest {oldest})",
                        if n == 1 { "" } else { "s" },
                        h.kept_refs
                    ),
                    (n, None) => format!("{n} rewrites kept"),
                };
                line(&format!(
                    "    history kept since {} (restore --at back to then): {rewrites}",
                    h.first_backup.as_deref().unwrap_or("-")
                ))?;
            }
        }
        for a in &c.artifacts {
            line(&format!(
                "  {:<40} {} {} bytes sha256 {}...{}",
                format!("{}/{}", a.source, a.received),
                a.module,
                a.size,
                a.sha256.get(..12).unwrap_or(&a.sha256),
                if shared { format!(" on node {}", a.node) } else { String::new() }
            ))?;
        }
        if let Some(t) = &c.tree_store {
            line(&format!(
                "  tree store {}: {} contents, {} bytes ({} unreferenced, removed by the next purge)",
                t.dir, t.contents, t.bytes, t.unreferenced
            ))?;
        }
        line(&format!(
            "  requests: {} pending, {} finished, {} failed, {} acknowledged",
            c.pending, c.finished, c.failed, c.acknowledged
        ))?;
        for f in c.failed_requests.iter().take(20) {
            line(&format!(
                "    E {} {} at {}: {}",
                f.id,
                f.reason,
                f.at,
                f.detail.chars().take(200).collect::<String>()
            ))?;
        }
        if c.failed > 20 {
            line(&format!("    ... and {} older (ferry-node --json list shows {FAILED_SHOWN})", c.failed - 20))?;
        }
        if c.failed > 0 {
            line(&format!(
                "  once dealt with, acknowledge them: ferry-node ack {} ID... (or: ferry-node ack {} --all)",
                c.client, c.client
            ))?;
        }
    }
    Ok(())
}
