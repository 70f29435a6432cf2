//! `ferry status`: per node, what is pending and since when, and how the
//! node has been answering.

use serde::Serialize;

use crate::config::ClientConfig;
use crate::nodestatus::NodeStatus;
use crate::requests;

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub node: String,
    pub url: String,
    pub pending: usize,
    pub oldest_pending: Option<String>,
    pub finished: usize,
    pub failed: usize,
    pub failed_recent: Vec<(String, String)>,
    /// The newest requests (pending or finished) that were prepared with
    /// warnings (`F<id>.warn`): id and the warning lines.
    pub warned_recent: Vec<(String, String)>,
    #[serde(flatten)]
    pub health: NodeStatus,
}

pub fn collect(cfg: &ClientConfig) -> anyhow::Result<Vec<NodeView>> {
    let mut out = Vec::new();
    for node in &cfg.nodes {
        let pool = requests::open(&cfg.pool_dir(&node.name))?;
        let list = pool.list()?;
        let pending: Vec<_> = list.iter().filter(|e| matches!(e.state, "C" | "P")).collect();
        let failed: Vec<_> = list.iter().filter(|e| e.state == "E").collect();
        let failed_recent = failed
            .iter()
            .rev()
            .take(5)
            .map(|e| {
                let why = std::fs::read_to_string(pool.sidecar("E", &e.id, "why")).unwrap_or_default();
                (e.id.clone(), why.trim().to_owned())
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
            oldest_pending: pending.first().and_then(|e| requests::id_time(&e.id)).map(|t| t.to_string()),
            finished: list.iter().filter(|e| e.state == "F").count(),
            failed: failed.len(),
            failed_recent,
            warned_recent,
            health: NodeStatus::load(cfg, &node.name)?,
        });
    }
    Ok(out)
}

pub fn print(views: &[NodeView]) {
    for v in views {
        let state = match (&v.health.failing_since, v.pending) {
            (Some(since), _) => format!("FAILING since {since} ({} attempts)", v.health.failures),
            (None, 0) => "ok".to_owned(),
            (None, _) => "ok, work waiting".to_owned(),
        };
        println!("node {} ({}): {state}", v.node, v.url);
        println!(
            "  pending: {}{}",
            v.pending,
            v.oldest_pending.as_ref().map(|t| format!(", oldest since {t}")).unwrap_or_default()
        );
        if let Some(t) = &v.health.last_success {
            println!("  last delivery: {t}");
        }
        if let (Some(e), Some(_)) = (&v.health.last_error, &v.health.failing_since) {
            println!("  last error: {e}");
            if let Some(n) = &v.health.next_attempt {
                println!("  next attempt: {n}");
            }
        }
        println!("  finished: {}, failed: {}", v.finished, v.failed);
        for (id, why) in &v.failed_recent {
            println!("    E {id}: {why}");
        }
        for (id, warning) in &v.warned_recent {
            for line in warning.lines() {
                println!("    W {id}: {line}");
            }
        }
    }
}
