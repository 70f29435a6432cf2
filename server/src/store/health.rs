//! The store gate a scan passes before it pulls an artifact: with an S3
//! store, the bucket is probed (HeadBucket, seconds at most) once per scan
//! worker, and with `[store] object_lock = true` its lock configuration
//! checked. A store that does not answer defers the request: it goes back
//! to `RQ` (`E_STORE_DOWN` in the journal, counted as deferred in the scan
//! summary), nothing is downloaded or recorded, and the next scan tries
//! again. A store that answers and refuses (wrong credentials, no bucket,
//! no object lock where it is required) fails the request as `E_STORE`:
//! waiting would not fix it.
//!
//! Alerts: one `STORE_UNREACHABLE` per outage, one `STORE_RECOVERED` when
//! a probe succeeds again (key `store:<node>`). Whether an outage is open
//! lives in `state/store.json`, changed under `state/store.lock`, so many
//! scans (and parallel workers) during one outage raise it once.

use serde::{Deserialize, Serialize};

use super::bucket::{Health, Lock};
use crate::config::NodeConfig;

/// What a scan does with a request that needs the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Defer: the store does not answer.
    Down(String),
    /// Fail: the store answers and refuses.
    Refused(String),
}

/// `state/store.json`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Outage {
    /// When the open outage began (RFC 3339), `None` while the store is up.
    since: Option<String>,
    /// Probes that failed in this outage.
    failed_probes: u64,
}

/// Probe the store (module docs). The local store is always open.
pub fn gate(cfg: &NodeConfig) -> Gate {
    if cfg.store.kind != "s3" {
        return Gate::Open;
    }
    // Connecting makes no request: a failure is the configuration's (a
    // credentials or key file), not the store's.
    let store = match super::S3Store::connect(cfg) {
        Ok(s) => s,
        Err(e) => return Gate::Refused(format!("{e:#}")),
    };
    let g = match store.probe() {
        Health::Up => Gate::Open,
        Health::Down(why) => Gate::Down(why),
        Health::Refused(why) => Gate::Refused(why),
    };
    let g = record(cfg, g);
    if g != Gate::Open || !cfg.store.object_lock {
        return g;
    }
    match store.lock() {
        Lock::Retained { .. } => Gate::Open,
        other => Gate::Refused(format!(
            "[store] object_lock = true, and {}: {}; nothing is stored there",
            store.describe(),
            other.describe()
        )),
    }
}

/// Keep the outage state and raise its alerts (module docs); returns `g`.
fn record(cfg: &NodeConfig, g: Gate) -> Gate {
    let dir = cfg.state_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _lock = ferry_durable::Lock::acquire_timeout(&dir.join("store.lock"), std::time::Duration::from_secs(60))
        .inspect_err(|e| tracing::warn!("store state lock: {e}; updating without it"))
        .ok();
    let path = dir.join("store.json");
    let mut st: Outage = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let before = st.clone();
    let key = format!("store:{}", cfg.name);
    match &g {
        Gate::Down(why) => {
            st.failed_probes += 1;
            if st.since.is_none() {
                let now = jiff::Timestamp::now().to_string();
                st.since = Some(now.clone());
                let body = format!(
                    "The node {} cannot reach its object store since {now}: {why}\n\
                     Requests that store artifacts wait in the queue and run once it answers; \
                     nothing is recorded as stored meanwhile.",
                    cfg.name
                );
                crate::alerts::raise(
                    cfg,
                    ferry_notify::Alert::new(ferry_notify::Kind::StoreUnreachable, key, &cfg.name, body),
                );
            }
        }
        Gate::Open | Gate::Refused(_) => {
            if let Some(since) = st.since.take() {
                let body = format!(
                    "The node {} reaches its object store again (unreachable since {since}, {} failed probes).",
                    cfg.name, st.failed_probes
                );
                crate::alerts::raise(
                    cfg,
                    ferry_notify::Alert::new(ferry_notify::Kind::StoreRecovered, key, &cfg.name, body),
                );
            }
            st.failed_probes = 0;
        }
    }
    if st != before {
        let data = serde_json::to_vec_pretty(&st).expect("serialisable");
        if let Err(e) = ferry_durable::write_synced(&dir, "store.json", &data) {
            tracing::warn!("cannot save the store state: {e}");
        }
    }
    g
}
