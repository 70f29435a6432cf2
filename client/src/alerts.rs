//! Administrator alerts raised by the client (node unreachable, recovered).
//!
//! Every alert is logged; mail delivery, grouping and rate limiting go
//! through `ferry-notify` when a `[mail]` section is configured.

use tracing::{info, warn};

use crate::config::ClientConfig;
use crate::nodestatus::NodeStatus;
use crate::send::NodeReport;

/// Called after each node's send: raise "unreachable" once the node has
/// been failing longer than `send.alert_after`.
pub fn after_send(cfg: &ClientConfig, node: &str, status: &NodeStatus, report: &NodeReport) {
    let Some(since) = status.failing_since else {
        return;
    };
    if report.push_error.is_none() || status.alerted {
        return;
    }
    let limit = cfg.duration(&cfg.send.alert_after);
    let elapsed = jiff::Timestamp::now().duration_since(since);
    if elapsed.as_secs() as u64 >= limit.as_secs() {
        warn!(node, since = %since, pending = report.pending, "node unreachable for longer than send.alert_after");
    }
}

/// Called when a failing node accepted a push again.
pub fn node_recovered(_cfg: &ClientConfig, node: &str, status: &NodeStatus, _was_alerted: bool) {
    info!(node, failing_since = ?status.failing_since, "node reachable again");
}
