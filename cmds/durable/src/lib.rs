//! Crash-safe state for Ferry: synced writes, atomic renames and locks.
//!
//! Ferry's promise "nothing lost" rests on one rule from the seed: every state
//! change of a request is a single `rename(2)` of a file whose content was
//! synced, inside a directory that is synced afterwards. A crash at any
//! instant then leaves each request in exactly one state, and re-running the
//! interrupted step is always safe because every module is idempotent.
//!
//! This crate owns that rule so that no other crate does file-state
//! bookkeeping by hand:
//!
//! * [`write_synced`] / [`write_synced_new`] — write a file via a temporary
//!   name, `fsync` it, rename it into place, `fsync` the directory;
//! * [`Pool`] — a directory of request files whose *state* is the name prefix
//!   (`i`/`C`/`P`/`F` on clients, `RQ`/`P`/`F`/`E` on nodes);
//! * [`Lock`] — an advisory `flock(2)` lock (std's `File::lock`). The kernel
//!   drops it when the holder dies, so a stale lock from a killed process can
//!   never block forever; the lock file itself is never deleted (deleting a
//!   lock file while someone waits on it is the classic way to get two
//!   holders).

mod gitlocks;
mod lock;
mod pool;
mod sync;

/// Test hook for crash safety: when the environment variable
/// `FERRY_CRASH_AT` equals `name`, the process kills itself with SIGKILL
/// right here — no destructor, no flush, exactly like a power cut for this
/// process. The crash tests walk every state change this way. Costs one
/// cached environment lookup per call.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("FERRY_CRASH_AT").ok()).as_deref() == Some(name) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
}

/// Test hook beside [`crash_point`] for tests that must act while a process
/// is in the middle of an operation (stop a storage server during an
/// upload, say): when `FERRY_HOLD_AT` is `name` (or `name@N`: the N-th time
/// the process gets here) and `FERRY_HOLD_FILE` names a path, the process
/// creates `<path>.held` and waits, polling every 20 ms, until `<path>`
/// exists; then it goes on. Work other threads already started (an
/// upload's parts in flight) continues meanwhile. It holds once per
/// process. Costs one cached environment lookup per call when unset.
pub fn hold_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Hold {
        at: String,
        nth: u64,
        release: std::path::PathBuf,
    }
    static HOLD: std::sync::OnceLock<Option<Hold>> = std::sync::OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let hold = HOLD.get_or_init(|| {
        let spec = std::env::var("FERRY_HOLD_AT").ok()?;
        let release = std::env::var_os("FERRY_HOLD_FILE")?.into();
        let (at, nth) = match spec.rsplit_once('@') {
            Some((at, n)) => (at.to_owned(), n.parse().ok()?),
            None => (spec, 1),
        };
        Some(Hold { at, nth, release })
    });
    let Some(h) = hold else { return };
    if h.at != name || SEEN.fetch_add(1, Ordering::Relaxed) + 1 != h.nth {
        return;
    }
    let mut held = h.release.clone().into_os_string();
    held.push(".held");
    if let Err(e) = std::fs::write(&held, name) {
        tracing::warn!(path = ?held, error = %e, "hold point: cannot create the marker; not holding");
        return;
    }
    while !h.release.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A short, stable, file-name-safe hash (12 hex digits of FNV-1a 64) for
/// names that must stay short, such as ssh control sockets.
pub fn short_hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

pub use gitlocks::git_lock_files;
pub use lock::{Lock, LockError};
pub use pool::{Entry, Pool, PoolError, is_valid_id};
pub use sync::{
    TMP_PREFIX, fsync_dir, is_disk_full, read_capped, remove_dead_tmp, remove_synced, rename_synced, replace_unsynced,
    sync_filesystem, write_synced, write_synced_mode, write_synced_new,
};
