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
