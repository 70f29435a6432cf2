//! Per-node delivery health: `nodes/<node>.json`.
//!
//! The seed could not tell a failed push from a good one. Ferry records,
//! per node, when it last delivered, since when it has been failing, how
//! often, why, and when it will try again (exponential backoff), so that
//! `ferry status` can say it and the administrators can be mailed once.

use anyhow::Context as _;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::ClientConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub last_success: Option<Timestamp>,
    pub last_attempt: Option<Timestamp>,
    /// First failure of the current run of failures.
    pub failing_since: Option<Timestamp>,
    pub failures: u32,
    pub last_error: Option<String>,
    pub next_attempt: Option<Timestamp>,
    /// Requests waiting when the last failure was recorded.
    pub pending_at_failure: usize,
    /// An "unreachable" alert was mailed for the current failure run.
    #[serde(default)]
    pub alerted: bool,
}

impl NodeStatus {
    fn path(cfg: &ClientConfig, node: &str) -> std::path::PathBuf {
        cfg.node_status_dir().join(format!("{node}.json"))
    }

    pub fn load(cfg: &ClientConfig, node: &str) -> anyhow::Result<NodeStatus> {
        let p = Self::path(cfg, node);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("corrupt node status {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeStatus::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    pub fn save(&self, cfg: &ClientConfig, node: &str) -> anyhow::Result<()> {
        let dir = cfg.node_status_dir();
        std::fs::create_dir_all(&dir)?;
        let data = serde_json::to_vec_pretty(self)?;
        ferry_durable::write_synced(&dir, &format!("{node}.json"), &data)?;
        Ok(())
    }

    /// An "unreachable" mail is due: a failure was recorded, the first
    /// one at least `alert_after` ago, and none was mailed for this run of
    /// failures. Pending work does not matter: the failure record is what
    /// says the node did not answer, and only an acknowledged push clears
    /// it (a node nothing was ever attempted for is never reported: the
    /// client does not probe nodes it has nothing to send).
    pub fn unreachable_due(&self, now: Timestamp, alert_after: std::time::Duration) -> bool {
        let Some(since) = self.failing_since else { return false };
        !self.alerted && now.duration_since(since).as_secs() >= alert_after.as_secs() as i64
    }

    /// The node acknowledged a push at `now`: the run of failures, if any,
    /// ends and is returned so its recovery can be reported from the
    /// recorded history. Not saved here: the caller reports the outage
    /// first and saves after, so a crash in between repeats the report
    /// (which the notifier drops once its outage is closed) rather than
    /// losing it.
    pub fn record_success(&mut self, now: Timestamp) -> Option<Outage> {
        let ended = self.failing_since.map(|since| Outage {
            since,
            failures: self.failures,
            last_failure: self.last_attempt.unwrap_or(since),
            ended: now,
            alerted: self.alerted,
        });
        self.last_success = Some(now);
        self.last_attempt = Some(now);
        self.failures = 0;
        self.next_attempt = None;
        self.failing_since = None;
        self.alerted = false;
        ended
    }

    pub fn record_failure(
        &mut self,
        cfg: &ClientConfig,
        node: &str,
        reason: &str,
        pending: usize,
    ) -> anyhow::Result<()> {
        let now = crate::clock::now();
        self.last_attempt = Some(now);
        self.failing_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        // The reason quotes remote output escaped once already (sanitize
        // only guards the rest, it never escapes twice).
        self.last_error = Some(ferry_text::sanitize(reason, 1000));
        self.pending_at_failure = pending;
        let min = cfg.duration(&cfg.send.backoff_min).as_secs().max(1);
        let max = cfg.duration(&cfg.send.backoff_max).as_secs().max(min);
        let delay = min.saturating_mul(1u64 << self.failures.saturating_sub(1).min(20)).min(max);
        self.next_attempt = Some(now + SignedDuration::from_secs(delay as i64));
        self.save(cfg, node)
    }
}

/// A run of failed deliveries that an acknowledged push just ended, as the
/// node status recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// The first failed attempt.
    pub since: Timestamp,
    /// Failed attempts in the run.
    pub failures: u32,
    /// The last failed attempt.
    pub last_failure: Timestamp,
    /// The acknowledged push that ended it.
    pub ended: Timestamp,
    /// An "unreachable" alert was raised for it.
    pub alerted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(min: i64) -> Timestamp {
        "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(min)
    }

    #[test]
    fn unreachable_is_due_alert_after_the_first_failure_whatever_is_pending() {
        let hour = Duration::from_secs(3600);
        let never_failed = NodeStatus::default();
        assert!(!never_failed.unreachable_due(t(10_000), hour), "no failure recorded: nothing to report");
        // One failure, nothing pending any more: the record still counts.
        let st = NodeStatus { failing_since: Some(t(0)), failures: 1, pending_at_failure: 0, ..Default::default() };
        assert!(!st.unreachable_due(t(59), hour));
        assert!(st.unreachable_due(t(60), hour));
        assert!(st.unreachable_due(t(600), hour));
        let mailed = NodeStatus { alerted: true, ..st };
        assert!(!mailed.unreachable_due(t(600), hour), "once per run of failures");
    }

    #[test]
    fn success_ends_the_run_of_failures_and_returns_it() {
        let mut st = NodeStatus {
            failing_since: Some(t(0)),
            failures: 3,
            last_attempt: Some(t(90)),
            next_attempt: Some(t(120)),
            alerted: true,
            ..Default::default()
        };
        let o = st.record_success(t(125)).expect("a run of failures ended");
        assert_eq!(o, Outage { since: t(0), failures: 3, last_failure: t(90), ended: t(125), alerted: true });
        assert_eq!((st.failing_since, st.failures, st.next_attempt, st.alerted), (None, 0, None, false));
        assert_eq!((st.last_success, st.last_attempt), (Some(t(125)), Some(t(125))));
        assert_eq!(st.record_success(t(130)), None, "no failures since: nothing to report");
    }
}
