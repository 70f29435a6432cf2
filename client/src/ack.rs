//! `ferry ack`: acknowledge failed requests.
//!
//! A request whose client module failed ends in `E` with its reason in
//! `E<id>.why`, and `ferry status` lists it until someone has dealt with it.
//! Acknowledging moves it to `A` (and its reason to `A<id>.why`) with synced
//! renames, under the node pool's lock: the record and its reason stay, so
//! nothing is deleted silently, but status no longer reports it. Ids are
//! checked before anything moves: an id that is not a failed request of the
//! chosen nodes is a usage error and nothing changes.

use std::collections::BTreeSet;

use serde::Serialize;
use tracing::info;

use crate::config::ClientConfig;
use crate::exit;
use crate::pool;

/// What `ferry ack` did, per node and request.
#[derive(Debug, Default, Serialize)]
pub struct AckReport {
    /// `(node, id)` moved from `E` to `A` now.
    pub acknowledged: Vec<(String, String)>,
    /// `(node, id)` that were acknowledged already.
    pub already: Vec<(String, String)>,
}

/// Acknowledge `ids` (or, with `all`, every failed request) in the pools of
/// `node`, or of every node.
pub fn ack(cfg: &ClientConfig, ids: &[String], all: bool, node: Option<&str>) -> anyhow::Result<AckReport> {
    if let Some(bad) = ids.iter().find(|id| !ferry_durable::is_valid_id(id)) {
        return exit::usage(format!(
            "{:?} is not a request id (ferry status lists them)",
            ferry_text::escape(bad, 130)
        ));
    }
    if let Some(n) = node
        && cfg.node(n).is_none()
    {
        return exit::usage(format!("unknown node {n:?}"));
    }
    let nodes: Vec<&str> =
        cfg.nodes.iter().map(|n| n.name.as_str()).filter(|n| node.is_none_or(|only| only == *n)).collect();
    // Every id must be a failed (or already acknowledged) request somewhere
    // before anything moves.
    let mut known = BTreeSet::new();
    for n in &nodes {
        let pool = pool::open(&cfg.pool_dir(n))?;
        for e in pool.list()? {
            if matches!(e.state, "E" | "A") {
                known.insert(e.id);
            }
        }
    }
    if let Some(missing) = ids.iter().find(|id| !known.contains(*id)) {
        let whose = node.map(|n| format!("node {n}")).unwrap_or_else(|| "any node".into());
        return exit::usage(format!("{missing} is not a failed request of {whose} (ferry status lists them)"));
    }
    let mut report = AckReport::default();
    for n in nodes {
        let pool = pool::open(&cfg.pool_dir(n))?;
        // `send` moves requests to E under this lock.
        let _lock = pool.lock()?;
        let targets: Vec<String> = if all { pool.ids("E")? } else { ids.to_vec() };
        for id in targets {
            match pool.state_of(&id) {
                Some("E") => {
                    pool.move_with_sidecars(&id, "E", "A", &["why"])?;
                    info!(node = n, id, "failed request acknowledged");
                    report.acknowledged.push((n.to_owned(), id));
                }
                Some("A") => {
                    // Finishes a sidecar a crash left behind, if any.
                    pool.move_with_sidecars(&id, "E", "A", &["why"])?;
                    report.already.push((n.to_owned(), id));
                }
                _ => {}
            }
        }
    }
    Ok(report)
}
