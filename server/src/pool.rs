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
///
/// Also closes `<pool>/.wake` after opening it for writing: inotify does
/// not see into `<pool>/<client>/`, and the `ferry-node-scan.path` unit
/// (`PathChanged=` fires on a close after writing) watches that one file.
pub fn request_wake(pool: &Pool) -> anyhow::Result<()> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(pool.dir().join(WAKE))?;
    if let Some(root) = pool.dir().parent() {
        // Best effort: the per-client marker above is what the scan reads.
        let _ = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(root.join(WAKE));
    }
    Ok(())
}

/// The reason recorded for a failed request, if any.
pub fn reason_of(pool_dir: &Path, id: &str) -> Option<serde_json::Value> {
    let b = std::fs::read(pool_dir.join(format!("E{id}.why"))).ok()?;
    serde_json::from_slice(&b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan's per-client marker, and the pool-wide one the systemd path
    /// unit watches (it cannot see into the client directories).
    #[test]
    fn a_wake_marks_the_client_and_the_pool() {
        let td = tempfile::tempdir().unwrap();
        let pool = Pool::open(&td.path().join("pool/host-a"), STATES).unwrap();
        request_wake(&pool).unwrap();
        assert!(td.path().join("pool/host-a").join(WAKE).is_file());
        assert!(td.path().join("pool").join(WAKE).is_file());
        // `.wake` in the pool root is never taken for a client.
        assert!(!ferry_gitosis::username::is_valid_client_name(WAKE));
    }
}
