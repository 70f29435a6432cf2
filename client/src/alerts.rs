//! Administrator alerts raised by the client: a backup node unreachable for
//! longer than `send.alert_after` (which node, since when, how many
//! requests wait), its recovery, and requests whose client module failed.
//!
//! Alerts go into a durable outbox (`state_dir/outbox`) and are mailed by
//! `ferry-notify` at the end of each `send`, grouped and rate-limited (see
//! the README's "Alerts"). Without `[mail]` they are logged only.

use tracing::warn;

use crate::config::ClientConfig;
use crate::nodestatus::NodeStatus;
use crate::send::NodeReport;
use ferry_notify::{Alert, Kind, Notifier};

fn notifier(cfg: &ClientConfig) -> Option<Notifier> {
    match Notifier::new(cfg.mail.clone(), cfg.state_dir.join("outbox")) {
        Ok(n) => Some(n),
        Err(e) => {
            warn!("cannot open the alert outbox: {e}");
            None
        }
    }
}

fn raise(cfg: &ClientConfig, alert: Alert) {
    if let Some(n) = notifier(cfg)
        && let Err(e) = n.raise(alert)
    {
        warn!("cannot record an alert: {e}");
    }
}

/// Called after each node's send: raise "unreachable" once the node has
/// been failing longer than `send.alert_after`.
pub fn after_send(cfg: &ClientConfig, node: &str, status: &mut NodeStatus, report: &NodeReport) {
    let Some(since) = status.failing_since else { return };
    if report.push_error.is_none() || status.alerted {
        return;
    }
    let limit = cfg.duration(&cfg.send.alert_after);
    let elapsed = jiff::Timestamp::now().duration_since(since);
    if elapsed.as_secs().max(0) as u64 >= limit.as_secs() {
        let body = format!(
            "Client {} cannot deliver backup requests to node {node}.\nFailing since: {since} ({} attempts)\nRequests waiting for this node: {}\nNext attempt: {}\nThe requests stay queued and are delivered when the node answers again.",
            cfg.name,
            status.failures,
            report.pending,
            status.next_attempt.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        );
        let alert = Alert::new(Kind::NodeUnreachable, format!("node:{node}"), node, body)
            .with_excerpt(status.last_error.clone().unwrap_or_default());
        raise(cfg, alert);
        status.alerted = true;
        if let Err(e) = status.save(cfg, node) {
            warn!("cannot save node status: {e:#}");
        }
    }
}

/// Called when a failing node accepted a push again.
pub fn node_recovered(cfg: &ClientConfig, node: &str, status: &NodeStatus, was_alerted: bool) {
    tracing::info!(node, failing_since = ?status.failing_since, "node reachable again");
    if was_alerted {
        let body = format!(
            "Client {} delivers to node {node} again (failing since {}, {} attempts). Queued requests were delivered.",
            cfg.name,
            status.failing_since.map(|t| t.to_string()).unwrap_or_default(),
            status.failures
        );
        raise(cfg, Alert::new(Kind::NodeRecovered, format!("node:{node}"), node, body));
    }
}

/// A client request ended in `E` (its module failed).
pub fn request_failed(cfg: &ClientConfig, id: &str, reason: &str) {
    let body = format!("Client {}: request {id} failed on the client and will not be retried.", cfg.name);
    raise(cfg, Alert::new(Kind::RequestFailed, "client-module", &cfg.name, body).with_excerpt(reason.to_owned()));
}

/// A client request succeeded with warnings (an fs source left unreadable
/// entries out). Keyed per source, so a source that keeps warning is one
/// mail per `min_interval`.
pub fn request_warned(cfg: &ClientConfig, id: &str, source: &str, warnings: &str) {
    let body = format!(
        "Client {}: request {id} (source {}) was backed up incompletely; what was left out is below. \
         Give the client's account read access, or keep unreadable = \"skip\" if that is intended.",
        cfg.name,
        ferry_text::escape(source, 120)
    );
    let key = format!("incomplete:{}", ferry_text::escape(source, 120));
    raise(cfg, Alert::new(Kind::Other, key, &cfg.name, body).with_excerpt(warnings.to_owned()));
}

/// Mail what is due (end of every `send`).
pub fn flush(cfg: &ClientConfig) {
    if let Some(n) = notifier(cfg)
        && let Err(e) = n.flush(jiff::Timestamp::now())
    {
        warn!("alert mail not sent (kept for the next run): {e}");
    }
}
