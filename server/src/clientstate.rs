//! What the node remembers about each client between runs
//! (`state/clients/<client>.json`): when it last sent a request, when a
//! pull last succeeded or failed, how many pulls failed in a row, and which
//! alerts are open. `scan` (through the alerts) and `check` both change it,
//! possibly at the same time (cron, hooks and the daemon overlap), so every
//! change is a read-modify-write under the client's state lock
//! ([`ClientState::update`]): without it one run's update could overwrite
//! the other's and an alert would be raised twice or never closed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub last_request: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub failures_in_a_row: u32,
    pub last_reason: Option<String>,
    #[serde(default)]
    pub pull_alert_open: bool,
    #[serde(default)]
    pub silent_alert_open: bool,
    /// Declared sources with an open BACKUP_OVERDUE alert (late, small or
    /// missing), so each problem is mailed once and its end once.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub overdue_open: std::collections::BTreeSet<String>,
    /// Sources whose last restore drill failed (DRILL_FAILED open).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub drill_failed_open: std::collections::BTreeSet<String>,
}

impl ClientState {
    fn path(cfg: &NodeConfig, client: &str) -> std::path::PathBuf {
        cfg.state_dir().join("clients").join(format!("{client}.json"))
    }

    pub fn load(cfg: &NodeConfig, client: &str) -> ClientState {
        std::fs::read(Self::path(cfg, client)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Load, change and save the state of `client` while holding its lock
    /// (`state/clients/<client>.lock`), so concurrent runs never lose each
    /// other's changes. A lock that cannot be had within a minute (a hung
    /// holder: flock dies with its process) is logged and the change is
    /// made anyway: a possible duplicate alert beats a lost one.
    pub fn update<R>(cfg: &NodeConfig, client: &str, change: impl FnOnce(&mut ClientState) -> R) -> R {
        let dir = cfg.state_dir().join("clients");
        let _lock = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                ferry_durable::Lock::acquire_timeout(
                    &dir.join(format!("{client}.lock")),
                    std::time::Duration::from_secs(60),
                )
                .map_err(|e| e.to_string())
            })
            .inspect_err(|e| tracing::warn!(client, "client state lock: {e}; updating without it"))
            .ok();
        let mut st = ClientState::load(cfg, client);
        let before = st.clone();
        let out = change(&mut st);
        if st != before {
            st.save(cfg, client, st.without_times() != before.without_times());
        }
        out
    }

    /// The state with its timestamps cleared: what alerts depend on.
    fn without_times(&self) -> ClientState {
        ClientState { last_request: None, last_success: None, last_failure: None, ..self.clone() }
    }

    /// Replace the file atomically; `synced`: and durably. A change of
    /// timestamps only (every successful request makes one) is not synced:
    /// two fsyncs were the largest cost of a one-request scan after the
    /// fetch itself (4.5 ms of about 50 on the benchmark's node), and a
    /// power loss that costs the last timestamps delays a staleness report
    /// by one pull at worst. Counts and open alerts are synced, so an alert
    /// is never raised twice or forgotten.
    fn save(&self, cfg: &NodeConfig, client: &str, synced: bool) {
        let dir = cfg.state_dir().join("clients");
        let name = format!("{client}.json");
        let data = serde_json::to_vec_pretty(self).expect("serialisable");
        let res = std::fs::create_dir_all(&dir).and_then(|()| {
            if synced {
                ferry_durable::write_synced(&dir, &name, &data)
            } else {
                // Under the client's lock; no inode created or freed.
                ferry_durable::replace_unsynced(&dir, &name, &data)
            }
        });
        if let Err(e) = res {
            tracing::warn!(client, "cannot save client state: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent updaters (the lock is flock on a fresh open file
    /// description each time, so threads exclude each other as processes
    /// do) never lose an increment.
    #[test]
    fn concurrent_updates_are_never_lost() {
        let base = std::env::temp_dir().join(format!("ferry-clientstate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let cfg: NodeConfig = toml::from_str(&format!("base_dir = {:?}", base.to_str().unwrap())).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        ClientState::update(&cfg, "host-a", |st| st.failures_in_a_row += 1);
                    }
                });
            }
        });
        assert_eq!(ClientState::load(&cfg, "host-a").failures_in_a_row, 100);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
