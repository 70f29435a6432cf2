//! Request pools: one directory, one file per request, state = name prefix.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lock::{Lock, LockError};
use crate::sync::{self, TMP_PREFIX};

/// Name of the lock file inside every pool directory.
const LOCK_NAME: &str = ".lock";

/// A request id: what follows the state prefix in a pool file name.
///
/// Ids are `[0-9A-Za-z][0-9A-Za-z_-]{0,127}`: no dots, so sidecars such as
/// `E<id>.why` and internal names (`.lock`, `.tmp-…`) can never be mistaken
/// for entries, and no slash or control byte can ever reach a path.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// Errors from pool operations, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("invalid request id {0:?}")]
    InvalidId(String),
    #[error("unknown state {0:?}")]
    UnknownState(String),
}

impl PoolError {
    /// The underlying I/O error, if any (to tell a full disk from a bug).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            PoolError::Io { source, .. } => Some(source),
            PoolError::Lock(LockError::Io { source, .. }) => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PoolError + '_ {
    move |source| PoolError::Io { path: path.to_owned(), source }
}

/// One entry of a pool listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub id: String,
    pub state: &'static str,
}

impl Entry {
    /// The file name of this entry (`<state><id>`).
    pub fn file_name(&self) -> String {
        format!("{}{}", self.state, self.id)
    }
}

/// A pool directory with a fixed set of states.
#[derive(Debug, Clone)]
pub struct Pool {
    dir: PathBuf,
    /// Longest prefix first, so `RQ` is matched before any one-letter state.
    states: Vec<&'static str>,
}

impl Pool {
    /// Open (creating if needed) the pool at `dir` whose files use `states`
    /// as name prefixes.
    pub fn open(dir: &Path, states: &[&'static str]) -> Result<Pool, PoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut states = states.to_vec();
        states.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Pool { dir: dir.to_owned(), states })
    }

    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check(&self, state: &str, id: &str) -> Result<(), PoolError> {
        if !self.states.contains(&state) {
            return Err(PoolError::UnknownState(state.to_owned()));
        }
        if !is_valid_id(id) {
            return Err(PoolError::InvalidId(id.to_owned()));
        }
        Ok(())
    }

    /// Path of the file holding `id` in `state`.
    pub fn path(&self, state: &str, id: &str) -> PathBuf {
        self.dir.join(format!("{state}{id}"))
    }

    /// Path of a sidecar file (`<state><id>.<ext>`, e.g. an error reason).
    pub fn sidecar(&self, state: &str, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{state}{id}.{ext}"))
    }

    /// Take the pool lock, waiting as long as needed.
    pub fn lock(&self) -> Result<Lock, PoolError> {
        Ok(Lock::acquire(&self.dir.join(LOCK_NAME))?)
    }

    /// Take the pool lock if free.
    pub fn try_lock(&self) -> Result<Option<Lock>, PoolError> {
        Ok(Lock::try_acquire(&self.dir.join(LOCK_NAME))?)
    }

    /// Take the pool lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Lock, PoolError> {
        Ok(Lock::acquire_timeout(&self.dir.join(LOCK_NAME), timeout)?)
    }

    /// Parse a directory entry name into an [`Entry`], if it is one.
    pub fn parse_name(&self, name: &str) -> Option<Entry> {
        self.states.iter().find_map(|state| {
            let id = name.strip_prefix(state)?;
            is_valid_id(id).then(|| Entry { id: id.to_owned(), state })
        })
    }

    /// Every entry, sorted by id then state. Ids start with a UTC timestamp,
    /// so this is arrival order.
    pub fn list(&self) -> Result<Vec<Entry>, PoolError> {
        let mut out = Vec::new();
        for de in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let de = de.map_err(io_err(&self.dir))?;
            if let Some(name) = de.file_name().to_str()
                && let Some(e) = self.parse_name(name)
            {
                out.push(e);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Sorted ids currently in `state`.
    pub fn ids(&self, state: &str) -> Result<Vec<String>, PoolError> {
        Ok(self.list()?.into_iter().filter(|e| e.state == state).map(|e| e.id).collect())
    }

    /// The state `id` is in, if any (see [`Pool::states_of`] for the
    /// impossible-by-rename case of a hand-copied pool holding two names).
    pub fn state_of(&self, id: &str) -> Option<&'static str> {
        self.states.iter().copied().find(|s| self.path(s, id).exists())
    }

    /// Every state `id` has a file in.
    pub fn states_of(&self, id: &str) -> Vec<&'static str> {
        self.states.iter().copied().filter(|s| self.path(s, id).exists()).collect()
    }

    /// Delete leftovers of writers that crashed: temporary files. Call with
    /// the pool lock held (only lock holders create them).
    pub fn clean_tmp(&self) -> Result<usize, PoolError> {
        let mut n = 0;
        for de in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let de = de.map_err(io_err(&self.dir))?;
            if de.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = de.path();
                fs::remove_file(&p).map_err(io_err(&p))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Create `id` directly in `state` with `data` (synced; fails if that
    /// name exists).
    pub fn put(&self, state: &str, id: &str, data: &[u8]) -> Result<(), PoolError> {
        self.check(state, id)?;
        sync::write_synced_new(&self.dir, &format!("{state}{id}"), data).map_err(io_err(&self.path(state, id)))
    }

    /// The seed's two-step creation: write `<incomplete><id>`, sync it, then
    /// rename it to `<complete><id>` and sync the directory. A crash leaves
    /// either nothing, an incomplete file (ignored; swept after a day), or
    /// the complete request.
    pub fn create(&self, incomplete: &str, complete: &str, id: &str, data: &[u8]) -> Result<(), PoolError> {
        self.check(incomplete, id)?;
        self.check(complete, id)?;
        let ipath = self.path(incomplete, id);
        let res = (|| -> io::Result<()> {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&ipath)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&ipath);
            return Err(PoolError::Io { path: ipath, source: e });
        }
        self.move_to(id, incomplete, complete, true)
    }

    /// Read the content of `id` in `state`, at most `max` bytes (`None` when
    /// larger).
    pub fn read(&self, state: &str, id: &str, max: usize) -> Result<Option<Vec<u8>>, PoolError> {
        self.check(state, id)?;
        let p = self.path(state, id);
        sync::read_capped(&p, max).map_err(io_err(&p))
    }

    /// Change the state of `id` with one `rename(2)`; sync the directory when
    /// `sync` is true (batch callers sync once at the end instead).
    pub fn move_to(&self, id: &str, from: &str, to: &str, sync: bool) -> Result<(), PoolError> {
        self.check(from, id)?;
        self.check(to, id)?;
        let from_name = format!("{from}{id}");
        sync::rename_synced(&self.dir, &from_name, &format!("{to}{id}"), sync)
            .map_err(io_err(&self.dir.join(from_name)))
    }

    /// Move `id` from `from` to `to` together with its sidecars
    /// (`<state><id>.<ext>` for each of `exts`), one `rename(2)` each: the
    /// request first (that is the state change), then every sidecar that
    /// exists; the directory is synced once at the end. Nothing is copied
    /// or deleted. A crash in between leaves a sidecar under its old
    /// state's name, where [`Pool::find_sidecar`] still finds it; calling
    /// this again for `id` (now in `to`) finishes the sidecars.
    pub fn move_with_sidecars(&self, id: &str, from: &str, to: &str, exts: &[&str]) -> Result<(), PoolError> {
        self.check(from, id)?;
        self.check(to, id)?;
        if self.path(from, id).exists() || !self.path(to, id).exists() {
            self.move_to(id, from, to, false)?;
        }
        for ext in exts {
            let old = format!("{from}{id}.{ext}");
            match sync::rename_synced(&self.dir, &old, &format!("{to}{id}.{ext}"), false) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(PoolError::Io { path: self.dir.join(old), source: e }),
            }
        }
        self.sync()
    }

    /// The sidecar `<state><id>.<ext>` if it exists, else the one a move
    /// interrupted by a crash left under another state's name.
    pub fn find_sidecar(&self, state: &str, id: &str, ext: &str) -> Option<PathBuf> {
        std::iter::once(state)
            .chain(self.states.iter().copied().filter(|s| *s != state))
            .map(|s| self.sidecar(s, id, ext))
            .find(|p| p.is_file())
    }

    /// Remove `id` in `state` (retention of finished requests).
    pub fn remove(&self, state: &str, id: &str) -> Result<(), PoolError> {
        self.check(state, id)?;
        let p = self.path(state, id);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PoolError::Io { path: p, source: e }),
        }
    }

    /// `fsync` the pool directory.
    pub fn sync(&self) -> Result<(), PoolError> {
        sync::fsync_dir(&self.dir).map_err(io_err(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &[&str] = &["RQ", "P", "F", "E"];

    #[test]
    fn ids_are_strict() {
        for ok in ["20261122T010203Z-ab12-1", "a", "A_b-c"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "a.b", "a/b", "a b", "é", "a\n", &"a".repeat(129)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn states_by_prefix_and_moves() {
        let d = crate::sync::tests::tempdir();
        let pool = Pool::open(&d, NODE).unwrap();
        pool.put("RQ", "1a", b"dummy x\n").unwrap();
        pool.put("RQ", "2b", b"dummy y\n").unwrap();
        fs::write(d.join("E3c.why"), b"reason").unwrap();
        fs::write(d.join("junk"), b"").unwrap();
        assert_eq!(pool.ids("RQ").unwrap(), vec!["1a", "2b"]);
        pool.move_to("1a", "RQ", "P", true).unwrap();
        assert_eq!(pool.state_of("1a"), Some("P"));
        assert_eq!(pool.read("P", "1a", 100).unwrap().unwrap(), b"dummy x\n");
        assert!(pool.put("RQ", "2b", b"again").is_err());
        assert!(pool.put("RQ", "../x", b"").is_err());
        assert!(pool.put("X", "1", b"").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn moves_with_sidecars_keep_them_and_finish_after_a_crash() {
        let d = crate::sync::tests::tempdir();
        let pool = Pool::open(&d, &["RQ", "P", "F", "E", "A"]).unwrap();
        pool.put("E", "1a", b"dummy x\n").unwrap();
        fs::write(d.join("E1a.why"), b"reason one\n").unwrap();
        pool.move_with_sidecars("1a", "E", "A", &["why"]).unwrap();
        assert_eq!(pool.states_of("1a"), ["A"]);
        assert_eq!(fs::read(d.join("A1a.why")).unwrap(), b"reason one\n");
        assert!(!d.join("E1a.why").exists());
        // A crash after the request's rename left the sidecar behind: it is
        // still found, and a second call moves it.
        pool.put("A", "2b", b"dummy y\n").unwrap();
        fs::write(d.join("E2b.why"), b"reason two\n").unwrap();
        assert_eq!(pool.find_sidecar("A", "2b", "why"), Some(d.join("E2b.why")));
        pool.move_with_sidecars("2b", "E", "A", &["why"]).unwrap();
        assert_eq!(pool.find_sidecar("A", "2b", "why"), Some(d.join("A2b.why")));
        assert_eq!(fs::read(d.join("A2b.why")).unwrap(), b"reason two\n");
        // No sidecar is fine; no request is an error.
        pool.put("E", "3c", b"x").unwrap();
        pool.move_with_sidecars("3c", "E", "A", &["why"]).unwrap();
        assert_eq!(pool.state_of("3c"), Some("A"));
        assert!(pool.move_with_sidecars("4d", "E", "A", &["why"]).is_err());
        assert_eq!(pool.find_sidecar("A", "4d", "why"), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_goes_through_incomplete() {
        let d = crate::sync::tests::tempdir();
        let pool = Pool::open(&d, &["i", "C", "P", "F"]).unwrap();
        pool.create("i", "C", "20261122T000000Z-1", b"dummy hi\n").unwrap();
        assert_eq!(pool.list().unwrap(), vec![Entry { id: "20261122T000000Z-1".into(), state: "C" }]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn clean_tmp_removes_only_temporaries() {
        let d = crate::sync::tests::tempdir();
        let pool = Pool::open(&d, NODE).unwrap();
        fs::write(d.join(".tmp-RQ1-99-0"), b"half").unwrap();
        pool.put("RQ", "1", b"x").unwrap();
        assert_eq!(pool.clean_tmp().unwrap(), 1);
        assert_eq!(pool.ids("RQ").unwrap(), vec!["1"]);
        fs::remove_dir_all(&d).unwrap();
    }
}
