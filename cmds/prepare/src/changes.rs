//! The change journal of a watched tree source (issue 11): the paths the
//! client agent's inotify watcher saw change since the source's newest
//! manifest, so the next manifest is an O(changes) update of the previous
//! one ([`ferry_tree::scan::update`]) instead of a full walk.
//!
//! Files, next to the source's hash cache (`<state_dir>/tree-cache/<src>`):
//!
//! - `<src>.watch`: a lock the watcher holds for as long as it watches. The
//!   journal is trusted only while it is held: a change made while nobody
//!   watched is in no journal, so without a live watcher the manifest is a
//!   full scan (and the journal is discarded). A watcher that starts takes
//!   the lock, sets its watches, then journals a full rescan, so whatever
//!   happened before it watched is covered.
//! - `<src>.changes`: records appended by the watcher, each a relative path
//!   and a NUL byte (names may hold newlines); the empty path means "rescan
//!   everything" (an overflow, a start, a reload), and `/` (never a
//!   relative path) "verify": walk everything *and* count how the walk
//!   differs from the update the journal alone would have made (the
//!   periodic safety net; expected 0).
//! - `<src>.rescan`: the verify runs' counts, `runs total_differences
//!   last_differences`, for `ferry status --agent`.
//! - `<src>.changes.taking`: what a manifest run took. It is removed only
//!   after the manifest is committed, so a run that fails or is killed
//!   leaves it to be merged into the next run's take: a change is never
//!   dropped, at worst scanned twice.
//! - `<src>.changes.lock`: serialises appends and takes.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use ferry_durable::Lock;

/// What a manifest run takes from the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Changed paths, relative to the root, sorted and unique.
    pub paths: Vec<Vec<u8>>,
    /// Something asked for a full rescan.
    pub full: bool,
    /// The agent's periodic safety-net rescan: walk everything and count
    /// the differences from the journal's update.
    pub verify: bool,
}

/// Counts of the verify rescans of a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RescanCounts {
    pub runs: u64,
    /// Differences found in all runs together (each one a change the
    /// watcher missed).
    pub total_differences: u64,
    pub last_differences: u64,
}

/// Asks the next manifest run for a verify rescan.
pub fn append_verify(cache: &Path) -> std::io::Result<()> {
    append(cache, &[b"/".to_vec()], false)
}

/// The verify rescans so far.
pub fn rescan_counts(cache: &Path) -> RescanCounts {
    let text = std::fs::read_to_string(with_suffix(cache, ".rescan")).unwrap_or_default();
    let n: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match n[..] {
        [runs, total_differences, last_differences] => RescanCounts { runs, total_differences, last_differences },
        _ => RescanCounts::default(),
    }
}

/// Records one verify rescan that found `differences`.
pub fn record_rescan(cache: &Path, differences: u64) -> std::io::Result<RescanCounts> {
    let _l = lock(cache)?;
    let mut c = rescan_counts(cache);
    c.runs += 1;
    c.total_differences += differences;
    c.last_differences = differences;
    let file = with_suffix(cache, ".rescan");
    let (dir, name) = (file.parent().unwrap_or(Path::new(".")), file.file_name().unwrap_or_default().to_string_lossy());
    ferry_durable::write_synced(
        dir,
        &name,
        format!("{} {} {}\n", c.runs, c.total_differences, c.last_differences).as_bytes(),
    )?;
    Ok(c)
}

fn with_suffix(cache: &Path, suffix: &str) -> PathBuf {
    let mut s = cache.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The watcher's lock file for the source whose hash cache is `cache`.
pub fn watch_lock_path(cache: &Path) -> PathBuf {
    with_suffix(cache, ".watch")
}

fn journal(cache: &Path) -> PathBuf {
    with_suffix(cache, ".changes")
}

fn taking(cache: &Path) -> PathBuf {
    with_suffix(cache, ".changes.taking")
}

fn lock(cache: &Path) -> std::io::Result<Lock> {
    if let Some(p) = cache.parent() {
        std::fs::create_dir_all(p)?;
    }
    Lock::acquire(&with_suffix(cache, ".changes.lock")).map_err(std::io::Error::other)
}

/// Takes the watcher lock of a source, if no watcher holds it.
pub fn try_watch(cache: &Path) -> std::io::Result<Option<Lock>> {
    if let Some(p) = cache.parent() {
        std::fs::create_dir_all(p)?;
    }
    Lock::try_acquire(&watch_lock_path(cache)).map_err(std::io::Error::other)
}

/// Appends changed paths (and, if `full`, a full-rescan record) to the
/// journal, synced: a manifest run that starts after this returns sees
/// them.
pub fn append(cache: &Path, paths: &[Vec<u8>], full: bool) -> std::io::Result<()> {
    let _l = lock(cache)?;
    let mut buf = Vec::new();
    if full {
        buf.push(0);
    }
    for p in paths.iter().filter(|p| !p.is_empty()) {
        buf.extend_from_slice(p);
        buf.push(0);
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(journal(cache))?;
    f.write_all(&buf)?;
    f.sync_data()
}

/// Takes the journal for a manifest run: `None` when no watcher holds the
/// source (the run must walk everything), else what changed since the
/// previous manifest. Call [`done`] once the manifest is committed.
pub fn take(cache: &Path) -> std::io::Result<Option<Taken>> {
    let watched = match try_watch(cache)? {
        Some(_free) => false,
        None => true,
    };
    let _l = lock(cache)?;
    let (j, t) = (journal(cache), taking(cache));
    if j.exists() {
        if t.exists() {
            let mut more = Vec::new();
            std::fs::File::open(&j)?.read_to_end(&mut more)?;
            let mut f = std::fs::OpenOptions::new().append(true).open(&t)?;
            f.write_all(&more)?;
            f.sync_data()?;
            std::fs::remove_file(&j)?;
        } else {
            std::fs::rename(&j, &t)?;
        }
    }
    if !watched {
        return Ok(None);
    }
    let mut raw = Vec::new();
    match std::fs::File::open(&t) {
        Ok(mut f) => {
            f.read_to_end(&mut raw)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(Some(parse(&raw)))
}

/// What the journal holds now (taken or not), without taking it: for
/// `ferry changes`.
pub fn peek(cache: &Path) -> std::io::Result<Taken> {
    let _l = lock(cache)?;
    let mut raw = Vec::new();
    for p in [taking(cache), journal(cache)] {
        match std::fs::File::open(&p) {
            Ok(mut f) => {
                f.read_to_end(&mut raw)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Taken {
    let mut out = Taken::default();
    let mut set = BTreeSet::new();
    for rec in raw.split(|b| *b == 0) {
        if rec.is_empty() {
            continue;
        }
        if rec == b"/" {
            out.verify = true;
        } else {
            set.insert(rec.to_vec());
        }
    }
    // An empty record is two NULs in a row or one at the start.
    out.full = raw.first() == Some(&0) || raw.windows(2).any(|w| w == [0, 0]);
    out.paths = set.into_iter().collect();
    out
}

/// The manifest is committed: what was taken is covered.
pub fn done(cache: &Path) -> std::io::Result<()> {
    let _l = lock(cache)?;
    match std::fs::remove_file(taking(cache)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_is_trusted_only_under_a_watcher_and_survives_a_failed_run() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("tree-cache/site");
        // No watcher: a full walk, and what was journalled is dropped.
        append(&cache, &[b"a".to_vec()], false).unwrap();
        assert_eq!(take(&cache).unwrap(), None);
        done(&cache).unwrap();

        let w = try_watch(&cache).unwrap().expect("free");
        assert!(try_watch(&cache).unwrap().is_none(), "one watcher at a time");
        append(&cache, &[], true).unwrap();
        append(&cache, &[b"x/new\nline".to_vec(), b"b".to_vec()], false).unwrap();
        let t = take(&cache).unwrap().unwrap();
        assert!(t.full);
        assert_eq!(t.paths, vec![b"b".to_vec(), b"x/new\nline".to_vec()]);
        // The run fails (no done): its take is merged into the next one.
        append(&cache, &[b"c".to_vec()], false).unwrap();
        let t = take(&cache).unwrap().unwrap();
        assert!(t.full);
        assert_eq!(t.paths.len(), 3, "{t:?}");
        done(&cache).unwrap();
        append(&cache, &[b"d".to_vec()], false).unwrap();
        let t = take(&cache).unwrap().unwrap();
        assert_eq!(t, Taken { paths: vec![b"d".to_vec()], full: false, verify: false });
        done(&cache).unwrap();
        assert_eq!(take(&cache).unwrap(), Some(Taken::default()));
        append_verify(&cache).unwrap();
        let t = take(&cache).unwrap().unwrap();
        assert!(t.verify && !t.full && t.paths.is_empty(), "{t:?}");
        assert_eq!(
            record_rescan(&cache, 2).unwrap(),
            RescanCounts { runs: 1, total_differences: 2, last_differences: 2 }
        );
        assert_eq!(
            record_rescan(&cache, 0).unwrap(),
            RescanCounts { runs: 2, total_differences: 2, last_differences: 0 }
        );
        assert_eq!(rescan_counts(&cache).runs, 2);
        done(&cache).unwrap();
        drop(w);
        assert_eq!(take(&cache).unwrap(), None);
    }
}
