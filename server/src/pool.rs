//! The node's request pools, `pool/<client>/`: the states a request goes
//! through (`RQ` → `P` → `F`/`E` → `A`, each a rename of a synced file), the
//! `.wake` marker by which the queue hook asks for a scan, and the reasons
//! failed requests recorded. Owned here, so that the queue hook (which
//! fills pools), the scanner (which empties them), `list`, `ack` and
//! `purge` share one definition without depending on each other.

use std::path::Path;

use ferry_durable::Pool;

use crate::config::NodeConfig;

/// Node pool states, in order: received, being handled, finished, ended
/// in error, and acknowledged (a failed request an administrator has dealt
/// with, `ferry-node ack`; kept with its reason, no longer reported). `A`
/// stays after `E`: [`Pool::state_of`] looks in this order, so a request
/// renamed from `E` to `A` while the queue hook looks for a duplicate id is
/// found in one or the other, never in neither.
pub const STATES: &[&str] = &["RQ", "P", "F", "E", "A"];
pub const WAKE: &str = ".wake";

/// Open a client's pool.
pub fn open_pool(cfg: &NodeConfig, client: &str) -> anyhow::Result<Pool> {
    Ok(Pool::open(&cfg.client_pool(client), STATES)?)
}

/// Ask for a scan of `client` (the queue hook calls this after extracting).
pub fn request_wake(pool: &Pool) -> anyhow::Result<()> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(pool.dir().join(WAKE))?;
    Ok(())
}

/// The reason recorded for a failed request, if any.
pub fn reason_of(pool_dir: &Path, id: &str) -> Option<serde_json::Value> {
    let b = std::fs::read(pool_dir.join(format!("E{id}.why"))).ok()?;
    serde_json::from_slice(&b).ok()
}
