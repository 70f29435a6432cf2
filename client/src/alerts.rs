//! Administrator alerts raised by the client: a backup node unreachable for
//! longer than `send.alert_after` (which node, since when, how many
//! attempts failed, how many requests wait), its recovery (how long and how
//! many failed attempts, from the recorded failure history), and requests
//! whose client module failed.
//!
//! Alerts go into a durable outbox (`state_dir/outbox`) and are mailed by
//! `ferry-notify` at the end of each `send`, grouped and rate-limited (see
//! the README's "Alerts"), with the client's `name` in the subject unless
//! `[mail] host_label` says otherwise. Without `[mail]` they are logged only.
//!
//! "Unreachable" is checked on every `send` run for every node it handles —
//! also when the backoff defers the push — so the mail leaves once
//! `alert_after` has passed since the first failure, not at the next push
//! attempt, which the backoff may put hours later.

use jiff::Timestamp;
use tracing::warn;

use crate::clock;
use crate::config::ClientConfig;
use crate::nodestatus::{NodeStatus, Outage};
use ferry_notify::{Alert, Kind, Notifier, human_duration};

fn notifier(cfg: &ClientConfig) -> Option<Notifier> {
    match Notifier::new(cfg.mail.clone(), cfg.state_dir.join("outbox"), &cfg.name) {
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

fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Called on every send run for each node it handled (after a push
/// attempt, and when the backoff deferred it): raise "unreachable" once the
/// first recorded failure is `send.alert_after` old.
pub fn check_unreachable(cfg: &ClientConfig, node: &str, status: &mut NodeStatus, pending: usize) {
    let now = clock::now();
    if !status.unreachable_due(now, cfg.duration(&cfg.send.alert_after)) {
        return;
    }
    let Some(since) = status.failing_since else { return };
    let body = unreachable_body(&cfg.name, node, status, pending, now);
    // Dated at the first failure: the outage began then, so the recovery
    // mail's "it lasted" counts from there too.
    let alert = Alert::new(Kind::NodeUnreachable, format!("node:{node}"), node, body)
        .with_excerpt(status.last_error.clone().unwrap_or_default())
        .at(since);
    raise(cfg, alert);
    status.alerted = true;
    if let Err(e) = status.save(cfg, node) {
        warn!("cannot save node status: {e:#}");
    }
}

fn unreachable_body(client: &str, node: &str, status: &NodeStatus, pending: usize, now: Timestamp) -> String {
    let since = status.failing_since.unwrap_or(now);
    format!(
        "Client {client} cannot deliver backup requests to node {node}.\n\
         Failing since: {since} ({} ago)\n\
         Failed attempts: {}{}\n\
         Requests waiting for this node: {pending}\n\
         Next attempt: {}\n\
         The requests stay queued and are delivered when the node answers again.",
        human_duration(now.duration_since(since)),
        status.failures,
        status.last_attempt.map(|t| format!(", the last at {}", ts(t))).unwrap_or_default(),
        status.next_attempt.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
    )
}

/// Called when a push to a failing node was acknowledged: the recovery,
/// with the outage's length and failed attempts from the recorded history
/// (mailed only if the outage was).
pub fn node_recovered(cfg: &ClientConfig, node: &str, outage: &Outage) {
    tracing::info!(node, failing_since = %outage.since, failures = outage.failures, "node reachable again");
    if outage.alerted {
        let body = recovery_body(&cfg.name, node, outage);
        raise(cfg, Alert::new(Kind::NodeRecovered, format!("node:{node}"), node, body).at(outage.ended));
    }
}

fn recovery_body(client: &str, node: &str, o: &Outage) -> String {
    let s = if o.failures == 1 { "" } else { "s" };
    format!(
        "Client {client} delivers to node {node} again.\n\
         Unreachable for {} (failing since {}, delivered again at {}).\n\
         {} failed delivery attempt{s}, the last at {}.\n\
         Queued requests were delivered.",
        human_duration(o.ended.duration_since(o.since)),
        o.since,
        o.ended,
        o.failures,
        ts(o.last_failure),
    )
}

/// A client request ended in `E` (its module failed).
pub fn request_failed(cfg: &ClientConfig, id: &str, reason: &str) {
    let body = format!(
        "Client {}: request {id} failed on the client and will not be retried.\n\
         Once dealt with, acknowledge it: ferry ack {id}",
        cfg.name
    );
    raise(
        cfg,
        Alert::new(Kind::RequestFailed, "client-module", &cfg.name, body)
            .with_excerpt(reason.to_owned())
            .at(clock::now()),
    );
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
        && let Err(e) = n.flush(clock::now())
    {
        warn!("alert mail not sent (kept for the next run): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn t(min: i64) -> Timestamp {
        "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(min)
    }

    #[test]
    fn recovery_counts_the_failed_attempts_and_the_whole_outage() {
        let o = Outage { since: t(0), failures: 4, last_failure: t(90), ended: t(125), alerted: true };
        let b = recovery_body("host-a", "backup1", &o);
        assert!(b.contains("Unreachable for 2h05m (failing since 2026-11-22T10:00:00Z"), "{b}");
        assert!(b.contains("delivered again at 2026-11-22T12:05:00Z)"), "{b}");
        assert!(b.contains("4 failed delivery attempts, the last at 2026-11-22T11:30:00Z."), "{b}");
        let one = recovery_body("host-a", "backup1", &Outage { failures: 1, ..o });
        assert!(one.contains("1 failed delivery attempt, "), "{one}");
    }

    #[test]
    fn unreachable_says_since_when_and_how_often() {
        let st = NodeStatus {
            failing_since: Some(t(0)),
            failures: 3,
            last_attempt: Some(t(60)),
            next_attempt: Some(t(120)),
            ..Default::default()
        };
        let b = unreachable_body("host-a", "backup1", &st, 0, t(61));
        assert!(b.contains("Failing since: 2026-11-22T10:00:00Z (1h01m ago)"), "{b}");
        assert!(b.contains("Failed attempts: 3, the last at 2026-11-22T11:00:00Z"), "{b}");
        assert!(b.contains("Requests waiting for this node: 0"), "{b}");
    }
}
