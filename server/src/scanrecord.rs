//! What the node knows of its scans, whoever started them:
//! `state/scan.json`.
//!
//! Scans start from cron or a systemd timer, from the queue hook after
//! every accepted push, from an administrator, and from the daemon. The
//! daemon knows only the runs of its own children, so every scan records
//! its end here, and the daemon's collector reads this file: `/status` and
//! `/metrics` show the last scan and the counts whatever started it.
//!
//! One small JSON object, replaced atomically (a temporary file renamed
//! over it) under `state/scan.lock`, so concurrent scans (a hook's and
//! cron's) never lose each other's counts. Counters only grow, from the
//! file's creation on (a power loss may lose the last counts: not synced,
//! see [`record`]). Recording is best effort: a scan never fails because
//! its record could not be written.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

const FILE: &str = "scan.json";
const LOCK: &str = "scan.lock";
/// What one scan did (its JSON output, and what the daemon shows).
#[derive(Debug, Default, Serialize)]
pub struct ScanReport {
    pub clients: usize,
    pub finished: usize,
    pub failed: usize,
    /// Requests put back in the queue because the object store did not
    /// answer (`E_STORE_DOWN`; they run again at the next scan).
    pub deferred: usize,
    /// Clients whose pool another scanner was processing.
    pub busy: Vec<String>,
    pub elapsed_ms: u128,
}
/// Larger than any record we write; a bigger file is not ours.
const MAX_BYTES: usize = 64 * 1024;

/// Every scan's outcome, summed, and the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanRecord {
    /// Scans that ended, whoever started them.
    pub runs: u64,
    /// Scans that ended with failed requests (exit 3).
    pub problems: u64,
    /// Scans that stopped with an error (exit 1).
    pub errors: u64,
    /// Requests the scans finished (`F`).
    pub requests_finished: u64,
    /// Requests the scans ended in error (`E`).
    pub requests_failed: u64,
    pub last_start: Option<Timestamp>,
    pub last_end: Option<Timestamp>,
    pub last_duration_ms: Option<u64>,
    /// `ok`, `problems` (some requests failed) or `error` (the scan stopped).
    pub last_result: Option<String>,
    /// The one client the last scan was limited to (`scan --client`, as
    /// the queue hook starts it); `None`: every client.
    pub last_client: Option<String>,
    /// Why the last scan stopped, escaped.
    pub last_error: Option<String>,
    /// End of the last scan that did not stop with an error.
    pub last_success: Option<Timestamp>,
}

fn path(cfg: &NodeConfig) -> PathBuf {
    cfg.state_dir().join(FILE)
}

/// The record, or an empty one (no scan yet; an unreadable file is logged).
pub fn load(cfg: &NodeConfig) -> ScanRecord {
    let p = path(cfg);
    match ferry_durable::read_capped(&p, MAX_BYTES) {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("{} is damaged ({e}); scan counts start again", p.display());
            ScanRecord::default()
        }),
        Ok(None) => {
            tracing::warn!("{} is larger than {MAX_BYTES} bytes; ignored", p.display());
            ScanRecord::default()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ScanRecord::default(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", p.display());
            ScanRecord::default()
        }
    }
}

impl ScanRecord {
    /// Adds one scan that started at `start` and took `elapsed`.
    pub fn add(&mut self, start: Timestamp, elapsed: Duration, only: Option<&str>, res: &anyhow::Result<ScanReport>) {
        let end = start + jiff::SignedDuration::try_from(elapsed).unwrap_or_default();
        self.runs += 1;
        self.last_start = Some(start);
        self.last_end = Some(end);
        self.last_duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        self.last_client = only.map(str::to_owned);
        match res {
            Ok(r) => {
                self.requests_finished += r.finished as u64;
                self.requests_failed += r.failed as u64;
                self.last_error = None;
                self.last_success = Some(end);
                if r.failed > 0 {
                    self.problems += 1;
                    self.last_result = Some("problems".into());
                } else {
                    self.last_result = Some("ok".into());
                }
            }
            Err(e) => {
                self.errors += 1;
                self.last_result = Some("error".into());
                self.last_error = Some(ferry_text::escape(&format!("{e:#}"), 600));
            }
        }
    }
}

/// Adds one scan's outcome to `state/scan.json`.
pub fn record(
    cfg: &NodeConfig,
    start: Timestamp,
    elapsed: Duration,
    only: Option<&str>,
    res: &anyhow::Result<ScanReport>,
) {
    let dir = cfg.state_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!("cannot record the scan in {}: {e}", dir.display());
        return;
    }
    // A hung holder cannot block scans for long (flock dies with its
    // process); past the wait, a possibly lost count beats a stuck scan.
    let _lock = ferry_durable::Lock::acquire_timeout(&dir.join(LOCK), Duration::from_secs(30))
        .inspect_err(|e| tracing::warn!("scan record lock: {e}; recording without it"))
        .ok();
    let mut rec = load(cfg);
    rec.add(start, elapsed, only, res);
    let data = serde_json::to_vec_pretty(&rec).expect("serialisable");
    // Atomic (a reader sees the old record or the new one, never half of
    // one) but not synced: an fsync of the state directory per scan would
    // add ~10 ms to every push's scan for monitoring data, and a power
    // loss costing the last counts is a counter reset Prometheus handles.
    // Only the lock holder writes; the swap file keeps the previous
    // record, so no inode is created or freed per scan.
    let res = ferry_durable::replace_unsynced(&dir, FILE, &data);
    if let Err(e) = res {
        tracing::warn!("cannot record the scan in {}: {e}", path(cfg).display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn scans_add_up_and_the_last_one_is_kept() {
        let mut r = ScanRecord::default();
        let report = |finished, failed| Ok(ScanReport { clients: 1, finished, failed, ..Default::default() });
        r.add(t(0), Duration::from_millis(1500), Some("host-a"), &report(2, 0));
        assert_eq!((r.runs, r.problems, r.errors, r.requests_finished), (1, 0, 0, 2));
        assert_eq!(r.last_result.as_deref(), Some("ok"));
        assert_eq!(
            (r.last_end, r.last_duration_ms, r.last_client.as_deref()),
            (Some(t(1) + jiff::SignedDuration::from_millis(500)), Some(1500), Some("host-a"))
        );
        r.add(t(10), Duration::from_secs(1), None, &report(1, 3));
        assert_eq!((r.runs, r.problems, r.requests_finished, r.requests_failed), (2, 1, 3, 3));
        assert_eq!((r.last_result.as_deref(), r.last_client.as_deref()), (Some("problems"), None));
        r.add(t(20), Duration::from_secs(2), None, &Err(anyhow::anyhow!("cannot read the enrollment\nnext line")));
        assert_eq!((r.runs, r.errors), (3, 1));
        assert_eq!(r.last_result.as_deref(), Some("error"));
        assert_eq!(r.last_success, Some(t(11)), "the last scan that did not stop");
        assert!(!r.last_error.as_deref().unwrap().contains('\n'), "escaped: {:?}", r.last_error);
    }

    /// Concurrent scans (threads exclude each other through the flock as
    /// processes do) never lose a count.
    #[test]
    fn concurrent_records_are_never_lost() {
        let base = std::env::temp_dir().join(format!("ferry-scanrecord-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let cfg: NodeConfig = toml::from_str(&format!("base_dir = {:?}", base.to_str().unwrap())).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        let ok = Ok(ScanReport { finished: 1, ..Default::default() });
                        record(&cfg, Timestamp::now(), Duration::from_millis(3), None, &ok);
                    }
                });
            }
        });
        let r = load(&cfg);
        assert_eq!((r.runs, r.requests_finished), (40, 40));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
