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

    pub fn record_success(&mut self, cfg: &ClientConfig, node: &str) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let recovered = self.failing_since.is_some();
        let was_alerted = self.alerted;
        self.last_success = Some(now);
        self.last_attempt = Some(now);
        self.failures = 0;
        self.next_attempt = None;
        if recovered {
            crate::alerts::node_recovered(cfg, node, self, was_alerted);
        }
        self.failing_since = None;
        self.alerted = false;
        self.save(cfg, node)
    }

    pub fn record_failure(
        &mut self,
        cfg: &ClientConfig,
        node: &str,
        reason: &str,
        pending: usize,
    ) -> anyhow::Result<()> {
        let now = Timestamp::now();
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
