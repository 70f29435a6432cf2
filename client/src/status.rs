//! `ferry status`: per node, what is pending and since when, and how the
//! node has been answering.

use serde::Serialize;

use crate::config::ClientConfig;
use crate::nodestatus::NodeStatus;
use crate::pool;

/// A failed request not acknowledged yet, with its reason.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub id: String,
    /// The reason recorded when it failed (escaped when written).
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub node: String,
    pub url: String,
    pub pending: usize,
    pub oldest_pending: Option<String>,
    pub finished: usize,
    /// Failed requests not acknowledged yet (`E`).
    pub failed: usize,
    /// The five newest of `failed_requests`, as `[id, reason]`.
    pub failed_recent: Vec<(String, String)>,
    /// Every failed request not acknowledged yet, newest first.
    pub failed_requests: Vec<Failed>,
    /// Failed requests acknowledged with `ferry ack` (`A`, kept with their
    /// reason, no longer reported).
    pub acknowledged: usize,
    /// The newest requests (pending or finished) that were prepared with
    /// warnings (`F<id>.warn`): id and the warning lines.
    pub warned_recent: Vec<(String, String)>,
    #[serde(flatten)]
    pub health: NodeStatus,
}

/// Failed requests shown per node by `ferry status` (all are in `--json`).
const SHOWN: usize = 20;

pub fn collect(cfg: &ClientConfig) -> anyhow::Result<Vec<NodeView>> {
    let mut out = Vec::new();
    for node in &cfg.nodes {
        let pool = pool::open(&cfg.pool_dir(&node.name))?;
        let list = pool.list()?;
        let pending: Vec<_> = list.iter().filter(|e| matches!(e.state, "C" | "P")).collect();
        let failed_requests: Vec<Failed> = list
            .iter()
            .rev()
            .filter(|e| e.state == "E")
            .map(|e| {
                let why = pool.find_sidecar("E", &e.id, "why").and_then(|p| std::fs::read_to_string(p).ok());
                Failed { id: e.id.clone(), reason: why.unwrap_or_default().trim().to_owned() }
            })
            .collect();
        let warned_recent = list
            .iter()
            .rev()
            .filter(|e| matches!(e.state, "C" | "P" | "F"))
            .filter_map(|e| {
                let w = std::fs::read_to_string(pool.sidecar("F", &e.id, "warn")).ok()?;
                Some((e.id.clone(), w.trim().to_owned()))
            })
            .take(5)
            .collect();
        out.push(NodeView {
            node: node.name.clone(),
            url: node.url.clone(),
            pending: pending.len(),
            oldest_pending: pending.first().and_then(|e| pool::id_time(&e.id)).map(|t| t.to_string()),
            finished: list.iter().filter(|e| e.state == "F").count(),
            failed: failed_requests.len(),
            failed_recent: failed_requests.iter().take(5).map(|f| (f.id.clone(), f.reason.clone())).collect(),
            failed_requests,
            acknowledged: list.iter().filter(|e| e.state == "A").count(),
            warned_recent,
            health: NodeStatus::load(cfg, &node.name)?,
        });
    }
    Ok(out)
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// The human view; every line goes through [`crate::out::line`], which
/// shows the recorded reasons as they are (their client text was escaped
/// once when they were recorded).
pub fn print(views: &[NodeView]) -> std::io::Result<()> {
    use crate::out::line;
    for v in views {
        let state = match (&v.health.failing_since, v.pending) {
            (Some(since), _) => format!("FAILING since {since} ({} attempts)", v.health.failures),
            (None, 0) => "ok".to_owned(),
            (None, _) => "ok, work waiting".to_owned(),
        };
        line(&format!("node {} ({}): {state}", v.node, v.url))?;
        line(&format!(
            "  pending: {}{}",
            v.pending,
            v.oldest_pending.as_ref().map(|t| format!(", oldest since {t}")).unwrap_or_default()
        ))?;
        if let Some(t) = &v.health.last_success {
            line(&format!("  last delivery: {t}"))?;
        }
        if let (Some(e), Some(_)) = (&v.health.last_error, &v.health.failing_since) {
            line(&format!("  last error: {e}"))?;
            if let Some(n) = &v.health.next_attempt {
                line(&format!("  next attempt: {n}"))?;
            }
        }
        line(&format!("  finished: {}, failed: {}, acknowledged: {}", v.finished, v.failed, v.acknowledged))?;
        for f in v.failed_requests.iter().take(SHOWN) {
            line(&format!("    E {}: {}", f.id, cut(&f.reason, 300)))?;
        }
        if v.failed > SHOWN {
            line(&format!("    ... and {} older (ferry --json status lists them all)", v.failed - SHOWN))?;
        }
        if v.failed > 0 {
            line(&format!(
                "  once dealt with, acknowledge them: ferry ack --node {} ID... (or: ferry ack --node {} --all)",
                v.node, v.node
            ))?;
        }
        for (id, warning) in &v.warned_recent {
            for w in warning.lines() {
                line(&format!("    W {id}: {w}"))?;
            }
        }
    }
    Ok(())
}
