//! Advisory locks on lock files.
//!
//! `std::fs::File::lock` (flock(2) on Linux) replaces the design card's fs2:
//! fs2 is unmaintained since 2018 and its trait methods clash with std's
//! inherent ones on Rust ≥ 1.89 (see CRATES.md). flock locks belong to the
//! open file description, so they are released by the kernel when the holder
//! exits or is killed — a stale lock cannot outlive its process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: held by another process (waited {waited:?})")]
    Busy { path: PathBuf, waited: Duration },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io { path: path.to_owned(), source })
}

impl Lock {
    /// Take the lock, waiting as long as it takes.
    pub fn acquire(path: &Path) -> Result<Lock, LockError> {
        let file = open(path)?;
        file.lock().map_err(|source| LockError::Io { path: path.to_owned(), source })?;
        Ok(Lock { _file: file, path: path.to_owned() })
    }

    /// Take the lock if it is free right now.
    pub fn try_acquire(path: &Path) -> Result<Option<Lock>, LockError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file, path: path.to_owned() })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path: path.to_owned(), source }),
        }
    }

    /// Take the lock, waiting at most `timeout` (polling, so a holder that
    /// dies is noticed within one poll interval).
    pub fn acquire_timeout(path: &Path, timeout: Duration) -> Result<Lock, LockError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(lock) = Lock::try_acquire(path)? {
                return Ok(lock);
            }
            if start.elapsed() >= timeout {
                return Err(LockError::Busy { path: path.to_owned(), waited: start.elapsed() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let d = crate::sync::tests::tempdir();
        let p = d.join("lock");
        let a = Lock::acquire(&p).unwrap();
        assert!(Lock::try_acquire(&p).unwrap().is_none());
        assert!(matches!(Lock::acquire_timeout(&p, Duration::from_millis(30)), Err(LockError::Busy { .. })));
        drop(a);
        assert!(Lock::try_acquire(&p).unwrap().is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lock_of_a_killed_process_is_released() {
        let d = crate::sync::tests::tempdir();
        let p = d.join("lock");
        // A shell takes the lock on its own descriptor with flock(1) from
        // util-linux, then becomes `sleep`: the process we kill is the
        // holder, and no grandchild outlives the test.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec 9>\"$1\" && flock 9 && exec sleep 30", "sh"])
            .arg(&p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Lock::try_acquire(&p).unwrap().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Lock::try_acquire(&p).unwrap().is_none(), "the child never took the lock");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(Lock::acquire_timeout(&p, Duration::from_secs(5)).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
