//! Hashing on more cores than the walk's own.
//!
//! A first scan (or one after much changed) is mostly reading and SHA-256,
//! and the walk that feeds it is mostly `lstat`, `open` and `close`: on one
//! thread they take turns, with every other core idle (a 200 MB,
//! 20,000-file tree: 0.5 s, of which reading and hashing are half). So the
//! walk keeps everything that resolves a name (the `lstat`, the `open`
//! beneath the directory fd it holds, the inode check of
//! [`super::hash::open_file`]) and hands the *open* file to a hasher
//! thread, which reads, hashes and re-stats it exactly as the walk would
//! ([`hash_file`]). What comes back is merged by the walk, on its thread,
//! into the same entries, cache records and counts; the manifest is sorted
//! afterwards anyway, so the order results arrive in changes nothing.
//!
//! The queue is bounded ([`QUEUE`] open files): when the hashers are
//! behind, the walk hashes the file itself instead of waiting, so no core
//! idles and open descriptors stay bounded. Files with more than one link
//! are hashed by the walk: the next name of the inode needs the digest at
//! once.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use ferry_archive::fsutil::{Xattrs, read_xattrs};
use rustix::fs::Stat;

use super::hash::{HashFailure, Hashed, hash_file};

/// Open files waiting for a hasher, at most.
const QUEUE: usize = 64;

/// Hasher threads a scan starts by default: one per further core, up to
/// three (four cores hashing: past that a client's disk, not its CPU, is
/// what limits, and a backup should not take a big host's every core).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) - 1
}

/// One file for a hasher: open, checked against its `lstat`.
pub(crate) struct Job {
    pub(crate) file: File,
    /// Its `fstat` after the open.
    pub(crate) st: Stat,
    /// The walk's `lstat`.
    pub(crate) lst: Stat,
    pub(crate) rel: Vec<u8>,
}

/// What a hasher made of a [`Job`].
pub(crate) struct Done {
    pub(crate) lst: Stat,
    pub(crate) rel: Vec<u8>,
    pub(crate) outcome: Result<Hashed, HashFailure>,
    /// Read only when xattrs are recorded (`Ok(empty)` otherwise).
    pub(crate) xattrs: Result<Xattrs, String>,
}

/// The hasher threads of one scan. Dropping it (or [`Hashers::finish`])
/// closes the queue, and the threads end when it is empty.
pub(crate) struct Hashers {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    /// Jobs sent and not yet received back.
    pending: usize,
}

impl Hashers {
    /// Starts `threads` hashers within `scope` (the scan joins them).
    /// `xattrs_root`: the scan's root when xattrs are recorded.
    pub(crate) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        threads: usize,
        attempts: u32,
        xattrs_root: Option<PathBuf>,
    ) -> Hashers {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let (to_walk, done) = std::sync::mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let to_walk = to_walk.clone();
            let root = xattrs_root.clone();
            scope.spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    // The lock is held only to take one job.
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(mut job) = job else { return };
                    let outcome = hash_file(&mut job.file, job.st, attempts, &mut buf);
                    let xattrs = match (&root, &outcome) {
                        (Some(root), Ok(_)) => {
                            let path = root.join(std::ffi::OsStr::from_bytes(&job.rel));
                            read_xattrs(Some(job.file.as_fd()), &path).map_err(|e| e.to_string())
                        }
                        _ => Ok(Vec::new()),
                    };
                    drop(job.file);
                    let done = Done { lst: job.lst, rel: job.rel, outcome, xattrs };
                    if to_walk.send(done).is_err() {
                        return;
                    }
                }
            });
        }
        Hashers { jobs: Some(jobs), done, pending: 0 }
    }

    /// Queues `job`; when the queue is full, gives its file back (the
    /// caller hashes it itself).
    pub(crate) fn offer(&mut self, job: Job) -> Option<File> {
        let Some(jobs) = &self.jobs else { return Some(job.file) };
        match jobs.try_send(job) {
            Ok(()) => {
                self.pending += 1;
                None
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job.file),
        }
    }

    /// Results that have arrived, without waiting.
    pub(crate) fn ready(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        while self.pending > 0 {
            match self.done.try_recv() {
                Ok(d) => {
                    self.pending -= 1;
                    out.push(d);
                }
                Err(_) => break,
            }
        }
        out
    }

    /// Closes the queue and waits for every result still owed.
    pub(crate) fn finish(&mut self) -> io::Result<Vec<Done>> {
        self.jobs = None;
        let mut out = Vec::with_capacity(self.pending);
        while self.pending > 0 {
            match self.done.recv() {
                Ok(d) => {
                    self.pending -= 1;
                    out.push(d);
                }
                // Every hasher ended (one panicked) with files still owed.
                Err(_) => return Err(io::Error::other("a hasher thread stopped")),
            }
        }
        Ok(out)
    }
}
