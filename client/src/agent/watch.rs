//! The inotify watcher of one `watch = true` tree source (issue 11).
//!
//! Every directory of the tree that the source's excludes leave in is
//! watched (one inotify watch each, symlinks never followed). What is
//! recorded, as relative paths for [`ferry_tree::scan::update`]:
//!
//! - a regular file when it is *closed* after writing (`IN_CLOSE_WRITE`),
//!   never when created: a file still being written is taken once closed;
//! - anything created that is not a fresh regular file (symlink, fifo, a
//!   new hard link), changed metadata (`IN_ATTRIB`), deleted or moved
//!   (both names), with the parent directory, whose mtime changed;
//! - a directory created or moved in: it is watched *first*, then read,
//!   and everything already inside is recorded and its subdirectories
//!   watched the same way, so a `mkdir -p a/b/c && touch a/b/c/f` that
//!   races the watcher loses nothing.
//!
//! A queue overflow (`IN_Q_OVERFLOW`) or the watch limit
//! (`max_user_watches`, `ENOSPC`) asks for a full rescan (counted, logged);
//! on overflow every directory is walked again to re-add missing watches.
//! The watcher holds the source's watch lock ([`ferry_prepare::changes`]),
//! so the change journal is only trusted while it runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use ferry_archive::ExcludePattern;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tracing::{info, warn};

/// What one watched source reports to the agent's loop.
#[derive(Debug)]
pub struct Changed {
    pub source: String,
    pub paths: Vec<Vec<u8>>,
    /// Rescan everything (overflow, watch limit).
    pub full: bool,
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub source: String,
    pub root: PathBuf,
    pub exclude: Vec<String>,
    /// Directories never watched (the client's state and export dirs, when
    /// inside the tree: their writes would trigger backups of themselves).
    pub skip: Vec<PathBuf>,
    /// The source's hash cache path (names the journal and watch lock).
    pub cache: PathBuf,
}

/// Counters shown by `ferry status --agent`.
#[derive(Debug, Default)]
pub struct WatchStats {
    pub dirs: AtomicU64,
    pub overflows: AtomicU64,
    pub limit_hits: AtomicU64,
    pub events: AtomicU64,
    /// The root is gone, moved away or replaced by a symlink (not
    /// followed); watched again once a directory is back at its path.
    pub root_missing: AtomicBool,
}

/// A running watcher; stopped (and its watch lock released) on drop.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<WatchStats>,
    pub spec: WatchSpec,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

struct Tree {
    ino: Inotify,
    root: PathBuf,
    exclude: Vec<ExcludePattern>,
    skip: Vec<PathBuf>,
    dirs: HashMap<WatchDescriptor, Vec<u8>>,
    stats: Arc<WatchStats>,
    limit_warned: bool,
    /// The watch limit left directories unwatched: every batch asks for a
    /// full rescan (changes there are seen by walks only).
    degraded: bool,
    symlink_warned: bool,
    /// When an overflow was last logged: a flood logs once a minute, and
    /// every overflow is counted.
    overflow_logged: Option<std::time::Instant>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() { name.to_vec() } else { [dir, b"/", name].concat() }
}

impl Tree {
    fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() { self.root.clone() } else { self.root.join(OsStr::from_bytes(rel)) }
    }

    fn excluded(&self, rel: &[u8]) -> bool {
        let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
        self.exclude.iter().any(|p| p.matches(rel, name)) || self.skip.iter().any(|s| *s == self.abs(rel))
    }

    /// Watches `rel` and every directory below it (watch first, then read),
    /// recording every entry found below it in `out`. Returns false when
    /// the watch limit was hit (a full rescan is needed).
    fn add_tree(&mut self, rel: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        let mut stack = vec![rel.to_vec()];
        let mut complete = true;
        while let Some(dir) = stack.pop() {
            let path = self.abs(&dir);
            match self.ino.watches().add(&path, MASK) {
                Ok(wd) => {
                    if self.dirs.insert(wd, dir.clone()).is_none() {
                        self.stats.dirs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.raw_os_error() == Some(28) => {
                    // ENOSPC: max_user_watches.
                    self.stats.limit_hits.fetch_add(1, Ordering::Relaxed);
                    if !self.limit_warned {
                        warn!(root = %self.root.display(), "the inotify watch limit (fs.inotify.max_user_watches) is reached: changes below unwatched directories are found by full rescans only; raise the limit");
                        self.limit_warned = true;
                    }
                    complete = false;
                    self.degraded = true;
                    continue;
                }
                Err(_) => continue, // gone or no longer a directory: its parent's event says so
            }
            let Ok(rd) = std::fs::read_dir(&path) else { continue };
            for e in rd.flatten() {
                let child = join(&dir, e.file_name().as_bytes());
                if self.excluded(&child) {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child.clone());
                }
                out.push(child);
            }
        }
        complete
    }

    /// Turns one batch of events into recorded paths; returns whether a
    /// full rescan is needed.
    fn handle(&mut self, buf: &mut [u8], out: &mut Vec<Vec<u8>>) -> std::io::Result<bool> {
        let mut full = false;
        let events: Vec<(WatchDescriptor, EventMask, Option<Vec<u8>>)> = match self.ino.read_events(buf) {
            Ok(ev) => ev.map(|e| (e.wd, e.mask, e.name.map(|n| n.as_bytes().to_vec()))).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        for (wd, mask, name) in events {
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            if mask.contains(EventMask::Q_OVERFLOW) {
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
                if self.overflow_logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                    let total = self.stats.overflows.load(Ordering::Relaxed);
                    warn!(root = %self.root.display(), total, "inotify queue overflow: events were lost, rescanning the whole tree (logged at most once a minute; ferry status --agent counts them)");
                    self.overflow_logged = Some(std::time::Instant::now());
                }
                let mut ignore = Vec::new();
                self.add_tree(b"", &mut ignore);
                full = true;
                continue;
            }
            if mask.contains(EventMask::IGNORED) {
                if self.dirs.remove(&wd).is_some() {
                    self.stats.dirs.fetch_sub(1, Ordering::Relaxed);
                }
                continue;
            }
            let Some(dir) = self.dirs.get(&wd).cloned() else { continue };
            let Some(name) = name else {
                if dir.is_empty() && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                    warn!(root = %self.root.display(), "the watched root was removed or moved away: backups of it fail until it is back, and it is watched again then");
                    self.stats.root_missing.store(true, Ordering::Relaxed);
                    if mask.contains(EventMask::MOVE_SELF) {
                        // Still watched under its new name: drop those watches.
                        for wd in self.dirs.drain().map(|(wd, _)| wd).collect::<Vec<_>>() {
                            let _ = self.ino.watches().remove(wd);
                        }
                        self.stats.dirs.store(0, Ordering::Relaxed);
                    }
                    full = true;
                }
                continue;
            };
            let rel = join(&dir, &name);
            if self.excluded(&rel) {
                continue;
            }
            let is_dir = mask.contains(EventMask::ISDIR);
            if is_dir && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                full |= !self.add_tree(&rel, out);
                out.push(rel);
                out.push(dir);
            } else if mask.contains(EventMask::CREATE) {
                // A fresh regular file is taken when closed; anything else now.
                let fresh_file =
                    std::fs::symlink_metadata(self.abs(&rel)).is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1);
                if !fresh_file {
                    out.push(rel);
                    out.push(dir);
                }
            } else if mask
                .intersects(EventMask::CLOSE_WRITE | EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO)
            {
                out.push(rel);
                out.push(dir);
            } else if mask.contains(EventMask::ATTRIB) {
                out.push(rel);
            }
        }
        Ok(full || self.degraded)
    }

    /// While the root is missing: is a directory (not a symlink) back at
    /// its path? Then it is watched and scanned again.
    fn root_back(&mut self, out: &mut Vec<Vec<u8>>) -> bool {
        match std::fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => {
                info!(root = %self.root.display(), "the watched root is back: watching it again");
                self.stats.root_missing.store(false, Ordering::Relaxed);
                self.add_tree(b"", out);
                true
            }
            Ok(m) if m.file_type().is_symlink() && !self.symlink_warned => {
                warn!(root = %self.root.display(), "the watched root was replaced by a symlink: not followed; backups of it fail until it is a directory again");
                self.symlink_warned = true;
                false
            }
            _ => false,
        }
    }
}

/// Starts watching: takes the source's watch lock, watches the whole tree,
/// then journals a full rescan (whatever changed before the watches were
/// set is covered by it), and reports changes on `tx` from a thread.
pub fn start(spec: WatchSpec, tx: SyncSender<super::Msg>) -> anyhow::Result<Watcher> {
    let lock = ferry_prepare::changes::try_watch(&spec.cache)?
        .ok_or_else(|| anyhow::anyhow!("source {}: another agent watches it", spec.source))?;
    let meta = std::fs::symlink_metadata(&spec.root)?;
    if !meta.is_dir() {
        anyhow::bail!("source {}: {} is not a directory (a symlink is not followed)", spec.source, spec.root.display());
    }
    let stats = Arc::new(WatchStats::default());
    let mut tree = Tree {
        ino: Inotify::init()?,
        root: spec.root.clone(),
        exclude: spec.exclude.iter().filter_map(|p| ExcludePattern::parse(p)).collect(),
        skip: spec.skip.clone(),
        dirs: HashMap::new(),
        stats: stats.clone(),
        limit_warned: false,
        degraded: false,
        symlink_warned: false,
        overflow_logged: None,
    };
    let mut initial = Vec::new();
    let complete = tree.add_tree(b"", &mut initial);
    ferry_prepare::changes::append(&spec.cache, &[], true)?;
    info!(source = %spec.source, dirs = tree.dirs.len(), complete, "watching");
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, source) = (stop.clone(), spec.source.clone());
    let thread = std::thread::Builder::new().name(format!("watch-{source}")).spawn(move || {
        let _lock = lock;
        let mut buf = vec![0u8; 64 * 1024];
        while !stop2.load(Ordering::SeqCst) {
            use std::os::fd::AsFd as _;
            let ready = {
                let fd = tree.ino.as_fd();
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                let t = rustix::event::Timespec { tv_sec: 0, tv_nsec: 250_000_000 };
                rustix::event::poll(&mut fds, Some(&t)).unwrap_or(0)
            };
            let mut paths = Vec::new();
            let result = if ready == 0 {
                if !tree.stats.root_missing.load(Ordering::Relaxed) {
                    continue;
                }
                Ok(tree.root_back(&mut paths))
            } else {
                tree.handle(&mut buf, &mut paths)
            };
            match result {
                Ok(full) if full || !paths.is_empty() => {
                    if tx.send(super::Msg::Changed(Changed { source: source.clone(), paths, full })).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(source = %source, "reading inotify events: {e}");
                    return;
                }
            }
        }
    })?;
    Ok(Watcher { stop, thread: Some(thread), stats, spec })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Real inotify on a temporary tree: what a batch of changes records.
    #[test]
    fn records_closed_files_moves_deletes_and_new_trees_but_not_excludes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("keep/cache")).unwrap();
        std::fs::write(root.join("keep/old"), b"o").unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let spec = WatchSpec {
            source: "s".into(),
            root: root.clone(),
            exclude: vec!["cache".into(), "*.tmp".into()],
            skip: vec![],
            cache: tmp.path().join("state/tree-cache/s"),
        };
        let w = start(spec, tx).unwrap();
        assert_eq!(w.stats.dirs.load(Ordering::Relaxed), 2, "root and keep; not the excluded cache");
        let taken = ferry_prepare::changes::take(&w.spec.cache).unwrap().unwrap();
        assert!(taken.full, "a start journals a full rescan");
        std::fs::write(root.join("keep/new"), b"n").unwrap();
        std::fs::write(root.join("keep/cache/junk"), b"j").unwrap();
        std::fs::write(root.join("x.tmp"), b"t").unwrap();
        std::fs::rename(root.join("keep/old"), root.join("moved")).unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/deep"), b"d").unwrap();
        std::fs::write(root.join("last"), b"l").unwrap();
        let mut got = BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !got.contains(b"last".as_slice()) && std::time::Instant::now() < deadline {
            if let Ok(super::super::Msg::Changed(c)) = rx.recv_timeout(Duration::from_millis(200)) {
                got.extend(c.paths);
            }
        }
        use std::collections::BTreeSet;
        for p in ["keep/new", "keep/old", "moved", "keep", "a", "a/b", "a/b/c", "a/b/c/deep", "last"] {
            assert!(
                got.contains(p.as_bytes()),
                "{p} missing from {:?}",
                got.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>()
            );
        }
        for p in ["keep/cache/junk", "x.tmp"] {
            assert!(!got.contains(p.as_bytes()), "{p} is excluded");
        }
        assert!(w.stats.dirs.load(Ordering::Relaxed) >= 5, "new directories are watched");

        // The root removed, replaced by a symlink (not followed), then back.
        let drain_for = |secs: u64, until: &dyn Fn(&Changed) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(secs);
            while std::time::Instant::now() < deadline {
                if let Ok(super::super::Msg::Changed(c)) = rx.recv_timeout(Duration::from_millis(200))
                    && until(&c)
                {
                    return true;
                }
            }
            false
        };
        let drain = |until: &dyn Fn(&Changed) -> bool| drain_for(10, until);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(drain(&|c| c.full), "a removed root asks for a full rescan");
        assert!(w.stats.root_missing.load(Ordering::Relaxed));
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &root).unwrap();
        std::fs::write(elsewhere.join("via-link"), b"l").unwrap();
        // Two seconds: eight looks at the root, none may follow the link.
        assert!(!drain_for(2, &|c| c.paths.iter().any(|p| p == b"via-link")), "a symlinked root is not followed");
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir_all(root.join("again")).unwrap();
        assert!(drain(&|c| c.full && c.paths.iter().any(|p| p == b"again")), "the root is watched again");
        assert!(!w.stats.root_missing.load(Ordering::Relaxed));
        std::fs::write(root.join("again/after"), b"a").unwrap();
        assert!(drain(&|c| c.paths.iter().any(|p| p == b"again/after")));
    }
}
