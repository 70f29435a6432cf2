//! What the node remembers about each client between runs
//! (`state/clients/<client>.json`): when it last sent a request, when a
//! pull last succeeded or failed, how many pulls failed in a row, and which
//! alerts are open. `scan` updates it; `check` reads it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
}

impl ClientState {
    fn path(cfg: &NodeConfig, client: &str) -> std::path::PathBuf {
        cfg.state_dir().join("clients").join(format!("{client}.json"))
    }

    pub fn load(cfg: &NodeConfig, client: &str) -> ClientState {
        std::fs::read(Self::path(cfg, client)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, cfg: &NodeConfig, client: &str) {
        let dir = cfg.state_dir().join("clients");
        let res = std::fs::create_dir_all(&dir).and_then(|()| {
            ferry_durable::write_synced(
                &dir,
                &format!("{client}.json"),
                &serde_json::to_vec_pretty(self).expect("serialisable"),
            )
        });
        if let Err(e) = res {
            tracing::warn!(client, "cannot save client state: {e}");
        }
    }
}
