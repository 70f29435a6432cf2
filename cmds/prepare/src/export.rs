//! The export directory: where the data modules leave artifacts for the
//! backup nodes to pull over read-only sftp.
//!
//! Layout: `<export_dir>/<source>/<stamp>.<ext>`, e.g.
//! `/var/lib/ferry/export/trac/20261122T010203Z.tar.zst`. The node is told
//! the exact path, size and SHA-256 of each artifact in the request, and its
//! strict request parser only accepts paths whose segments are
//! `[A-Za-z0-9_][A-Za-z0-9._-]{0,99}` ([`ferry_request::RemotePath`]), so
//! the export directory is checked against that grammar before anything is
//! written ([`check_export_dir`]) rather than after an hour-long dump.
//!
//! Why the write discipline below:
//!
//! * an artifact is written under a hidden temporary name
//!   (`.tmp-<stamp>-<pid>-<n>`, which the node can never request: hidden
//!   names are outside the grammar), hashed and counted *while* it is
//!   written ([`HashingWriter`]), so a 100 GB dump is read once, never
//!   buffered and never re-read;
//! * it is `fsync`ed, renamed into place without replacing anything
//!   (`RENAME_NOREPLACE`), and the directory is `fsync`ed, so a request can
//!   only ever name a complete, durable file;
//! * on any failure (or panic) the temporary file is removed (the artifact writer's
//!   `Drop`); temporary files left by a crash are removed by the next run
//!   of the same source, which holds the source's lock;
//! * retention ([`apply_retention`]) deletes old artifacts only when the
//!   caller's guard says no unacknowledged request still names them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_request::{Digest, RemotePath, Stamp};
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

use crate::PrepareError;

/// Prefix of temporary artifact names (the same as ferry-durable's).
pub const TMP_PREFIX: &str = ".tmp-";
/// Lock file inside each source directory: one run per source at a time.
pub const LOCK_NAME: &str = ".lock";
/// Mode of the directories this crate creates: the export account (the
/// node's sftp login) is the owner or in the group; nobody else reads dumps.
pub const DIR_MODE: u32 = 0o750;
/// Mode of artifacts (before the umask).
pub const FILE_MODE: u32 = 0o640;
/// An artifact finished less than this long ago is never deleted by
/// retention: another run of the same source (for another node) may have
/// just produced it and not yet committed the request that names it, so the
/// caller's guard cannot know about it yet.
pub const RETENTION_GRACE: Duration = Duration::from_secs(300);
/// The longest extension a module uses (`tar.zst`), for up-front length
/// checks of the artifact path.
pub const LONGEST_EXT: &str = "tar.zst";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Checks that `dir` can be named in sftp requests: absolute, no `..`, every
/// segment in the request grammar, short and shallow enough to leave room
/// for `/<source>/<stamp>.<ext>`. Returns it in canonical spelling (a
/// trailing `/` or `.` segments are dropped). The node refuses anything
/// else, so a client refuses it first, with a message that says what to
/// change.
pub fn check_export_dir(dir: &Path) -> Result<RemotePath, PrepareError> {
    let bad = |why: String| {
        PrepareError::Config(format!(
            "export directory {}: {why}; set export.dir to an absolute path whose components use only \
             letters, digits, '.', '_' and '-' and do not start with '.' or '-' (e.g. /var/lib/ferry/export)",
            ferry_text::escape_bytes(dir.as_os_str().as_bytes(), 200)
        ))
    };
    if !dir.is_absolute() {
        return Err(bad("is not absolute".into()));
    }
    let mut text = String::new();
    for c in dir.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(seg) => {
                let seg = seg.to_str().ok_or_else(|| bad("is not UTF-8".into()))?;
                text.push('/');
                text.push_str(seg);
            }
            Component::ParentDir => return Err(bad("contains '..'".into())),
            Component::Prefix(_) => return Err(bad("has a prefix".into())),
        }
    }
    if text.is_empty() {
        return Err(bad("is the root directory".into()));
    }
    let path: RemotePath = text.parse().map_err(|e: ferry_request::Rejection| bad(e.to_string()))?;
    // Room for "/<source>/<stamp>.<ext>": two more segments.
    if path.depth() + 2 > 32 {
        return Err(bad("is too deep (at most 30 components)".into()));
    }
    Ok(path)
}

/// `<export_dir>/<source>`, the directory of one source's artifacts.
pub fn source_dir(export_dir: &Path, source: &str) -> PathBuf {
    export_dir.join(source)
}

/// The file name of an artifact: `<stamp>.<ext>`.
pub fn artifact_name(stamp: &Stamp, ext: &str) -> String {
    format!("{stamp}.{ext}")
}

/// Splits an artifact file name `<stamp>.<ext>` (ext: lower-case letters,
/// digits and inner dots). Anything else — temporary files, the lock, an
/// administrator's notes — is not an artifact, so retention never touches it.
pub fn parse_artifact_name(name: &str) -> Option<(Stamp, &str)> {
    let stamp = name.get(..16)?;
    let ext = name.get(16..)?.strip_prefix('.')?;
    let ext_ok = !ext.is_empty()
        && !ext.starts_with('.')
        && !ext.ends_with('.')
        && !ext.contains("..")
        && ext.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.');
    if !ext_ok {
        return None;
    }
    Some((stamp.parse().ok()?, ext))
}

/// The artifacts of one source directory (regular files named
/// `<stamp>.<ext>`, not following symlinks), oldest first. A missing
/// directory has none.
pub fn list_artifacts(dir: &Path) -> io::Result<Vec<(Stamp, PathBuf)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some((stamp, _)) = name.to_str().and_then(parse_artifact_name) else {
            continue;
        };
        if ent.file_type()?.is_file() {
            out.push((stamp, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Creates `dir` (and missing parents) with [`DIR_MODE`], and sets that mode
/// on `dir` itself when this call created it (the umask may have cleared
/// bits). An existing directory keeps the mode its administrator gave it.
/// Refuses a symlink or a non-directory: the node is told plain paths.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory (symlinks are not followed)",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    if let Some(parent) = dir.parent() {
        let _ = fsync_dir(parent);
    }
    Ok(())
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn now_unix() -> (i64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// The stamp for a new artifact in `dir`: the current UTC second, strictly
/// after every artifact already there, because the node files each
/// download under `<source>/<stamp>/`. A second run within the same second
/// waits for the next one (the caller holds the source lock, so runs do not
/// race); a clock that stepped back by more than two seconds gets the
/// stamp after the newest artifact instead of a long wait.
pub(crate) fn choose_stamp(dir: &Path) -> io::Result<Stamp> {
    let latest = list_artifacts(dir)?.last().map(|(s, _)| s.to_unix());
    loop {
        let (now, nanos) = now_unix();
        match latest {
            Some(l) if now <= l && l - now <= 2 => {
                let wait = Duration::from_secs((l - now) as u64) + Duration::from_nanos(1_000_000_000 - nanos as u64);
                std::thread::sleep(wait + Duration::from_millis(5));
            }
            Some(l) if now <= l => {
                warn!(dir = %dir.display(), "the clock is behind the newest artifact; using the next stamp after it");
                return Ok(Stamp::from_unix(l + 1));
            }
            _ => return Ok(Stamp::from_unix(now)),
        }
    }
}

/// Removes temporary files left in a source directory by a run that
/// crashed. Only called with the source lock held, so no live run owns one.
pub(crate) fn remove_stale_tmp(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        if ent.file_name().as_bytes().starts_with(TMP_PREFIX.as_bytes()) && ent.file_type()?.is_file() {
            warn!(file = %ent.path().display(), "removing a temporary artifact left by an interrupted run");
            fs::remove_file(ent.path())?;
            n += 1;
        }
    }
    if n > 0 {
        fsync_dir(dir)?;
    }
    Ok(n)
}

/// A [`Write`] adapter that computes the SHA-256 and the length of exactly
/// the bytes the inner writer accepted, so the digest in the request is the
/// digest of the file, without reading it back. With a deadline, every
/// write after it fails with `TimedOut`: in-process producers (the `fs`
/// module's archiver) have no process group to kill, and this stops them.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    deadline: Option<Instant>,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0, deadline: None }
    }

    /// Fail writes once `deadline` has passed.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> HashingWriter<W> {
        self.deadline = deadline;
        self
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the digest and the length of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        let digest: [u8; 32] = self.hasher.finalize().into();
        (self.inner, Digest::from_bytes(digest), self.bytes)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the source's timeout expired"));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A finished artifact: where it is and what the node must find there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub path: PathBuf,
    pub stamp: Stamp,
    pub sha256: Digest,
    pub size: u64,
}

/// An artifact being written. Dropping it before [`Artifact::commit`]
/// removes the temporary file, so no failure path can leave a partial dump
/// behind (or one the node could be told about).
pub(crate) struct Artifact {
    dir: PathBuf,
    tmp: PathBuf,
    stamp: Stamp,
    ext: &'static str,
    writer: Option<HashingWriter<File>>,
}

impl Artifact {
    /// Creates the temporary file in `dir` for an artifact `<stamp>.<ext>`.
    pub(crate) fn create(
        dir: &Path,
        stamp: Stamp,
        ext: &'static str,
        deadline: Option<Instant>,
    ) -> io::Result<Artifact> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{stamp}-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        Ok(Artifact {
            dir: dir.to_owned(),
            tmp,
            stamp,
            ext,
            writer: Some(HashingWriter::new(file).with_deadline(deadline)),
        })
    }

    pub(crate) fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    /// The writer producers stream into.
    pub(crate) fn writer(&mut self) -> &mut HashingWriter<File> {
        self.writer.as_mut().expect("writer present until commit")
    }

    /// `fsync`, rename to `<stamp>.<ext>` without replacing anything,
    /// `fsync` the directory.
    pub(crate) fn commit(mut self) -> io::Result<ArtifactInfo> {
        let writer = self.writer.take().expect("writer present until commit");
        let (mut file, sha256, size) = writer.finish();
        file.flush()?;
        file.sync_all()?;
        drop(file);
        let path = self.dir.join(artifact_name(&self.stamp, self.ext));
        rename_noreplace(&self.tmp, &path)?;
        // From here on the file is the artifact; Drop must not remove it.
        self.tmp = PathBuf::new();
        fsync_dir(&self.dir)?;
        Ok(ArtifactInfo { path, stamp: self.stamp.clone(), sha256, size })
    }
}

impl Drop for Artifact {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.writer = None;
            if let Err(e) = fs::remove_file(&self.tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(file = %self.tmp.display(), error = %e, "cannot remove a failed artifact's temporary file");
            }
        }
    }
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing
/// `to`. Uses `RENAME_NOREPLACE`; on filesystems without it, a hard link
/// (also atomic and non-replacing) followed by removing `from`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Keeps at most `keep` artifacts in the source directory `dir` — `newest`
/// (the one just made, always kept) and the `keep - 1` newest others — and
/// deletes the older ones, except those for which `guard(path)` is true
/// (a request naming them has not been acknowledged by every node yet) and
/// those finished less than [`RETENTION_GRACE`] ago. Returns the deleted
/// paths. Deleting is best effort: a file that cannot be deleted is logged
/// and left for the next run, it never fails the backup that just worked.
pub fn apply_retention(
    dir: &Path,
    keep: usize,
    newest: &Path,
    guard: &dyn Fn(&Path) -> bool,
) -> io::Result<Vec<PathBuf>> {
    let mut others: Vec<(Stamp, PathBuf)> = list_artifacts(dir)?.into_iter().filter(|(_, p)| p != newest).collect();
    // Newest first.
    others.reverse();
    let room = keep.max(1) - 1;
    let now = SystemTime::now();
    let mut deleted = Vec::new();
    for (_, path) in others.into_iter().skip(room) {
        if guard(&path) {
            info!(file = %path.display(), "keeping an old artifact: a request naming it is not acknowledged yet");
            continue;
        }
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(_) => continue,
        };
        let finished = UNIX_EPOCH + Duration::from_secs(md.mtime().max(0) as u64);
        if now.duration_since(finished).unwrap_or_default() < RETENTION_GRACE {
            info!(file = %path.display(), "keeping an old artifact finished moments ago (another run may still queue it)");
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                info!(file = %path.display(), "retention: deleted an old artifact");
                deleted.push(path);
            }
            Err(e) => warn!(file = %path.display(), error = %e, "retention: cannot delete an old artifact"),
        }
    }
    if !deleted.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-prepare-ut-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn export_dir_must_fit_the_request_grammar() {
        assert_eq!(check_export_dir(Path::new("/var/lib/ferry/export")).unwrap().as_str(), "/var/lib/ferry/export");
        // Trailing slash and '.' segments are only spelling.
        assert_eq!(check_export_dir(Path::new("/srv/./export/")).unwrap().as_str(), "/srv/export");
        for (bad, why) in [
            ("export", "not absolute"),
            ("/", "root directory"),
            ("/srv/../etc", "'..'"),
            ("/srv/my export", "E_REQ_NAME"),
            ("/srv/.hidden", "E_REQ_NAME"),
            ("/srv/-x", "E_URL_DASH"),
        ] {
            let e = check_export_dir(Path::new(bad)).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(why), "{bad}: {msg}");
            assert!(msg.contains("set export.dir"), "{msg}");
            assert_eq!(e.code(), "E_CONFIG");
        }
        let deep = format!("/{}", vec!["d"; 31].join("/"));
        assert!(check_export_dir(Path::new(&deep)).unwrap_err().to_string().contains("too deep"));
    }

    #[test]
    fn artifact_names() {
        let (s, ext) = parse_artifact_name("20261122T010203Z.tar.zst").unwrap();
        assert_eq!((s.as_str(), ext), ("20261122T010203Z", "tar.zst"));
        assert_eq!(parse_artifact_name("20261122T010203Z.pgdump").unwrap().1, "pgdump");
        for n in [
            ".tmp-20261122T010203Z-1-0",
            ".lock",
            "20261122T010203Z",
            "20261122T010203Z.",
            "20261122T010203Z.TAR",
            "20261122T010203Z..x",
            "20261322T010203Z.sql",
            "notes.txt",
        ] {
            assert!(parse_artifact_name(n).is_none(), "{n}");
        }
    }

    #[test]
    fn hashing_writer_counts_and_hashes_what_was_written() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d.as_str(), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }

    #[test]
    fn hashing_writer_enforces_its_deadline() {
        let mut w = HashingWriter::new(Vec::new()).with_deadline(Some(Instant::now()));
        let e = w.write_all(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(w.bytes(), 0);
    }

    #[test]
    fn dropped_artifact_leaves_no_temporary_file() {
        let d = tmpdir("drop");
        {
            let mut a = Artifact::create(&d, Stamp::from_unix(1_700_000_000), "pipe", None).unwrap();
            a.writer().write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        let mut a = Artifact::create(&d, Stamp::from_unix(1_700_000_000), "pipe", None).unwrap();
        a.writer().write_all(b"whole").unwrap();
        let info = a.commit().unwrap();
        assert_eq!(info.path, d.join("20231114T221320Z.pipe"));
        assert_eq!(fs::read(&info.path).unwrap(), b"whole");
        assert_eq!(info.size, 5);
        assert_eq!(fs::metadata(&info.path).unwrap().mode() & 0o037, 0);
        // The same name again is refused, never replaced.
        let mut b = Artifact::create(&d, Stamp::from_unix(1_700_000_000), "pipe", None).unwrap();
        b.writer().write_all(b"other").unwrap();
        assert_eq!(b.commit().unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&info.path).unwrap(), b"whole");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stamps_are_unique_per_source() {
        let d = tmpdir("stamp");
        let (now, _) = now_unix();
        // An artifact stamped this very second: the next stamp waits.
        fs::write(d.join(artifact_name(&Stamp::from_unix(now), "pipe")), b"").unwrap();
        let s = choose_stamp(&d).unwrap();
        assert!(s.to_unix() > now);
        // Far in the future (clock stepped back): the stamp after it, at once.
        fs::write(d.join(artifact_name(&Stamp::from_unix(now + 3600), "sql.zst")), b"").unwrap();
        let t = Instant::now();
        assert_eq!(choose_stamp(&d).unwrap().to_unix(), now + 3601);
        assert!(t.elapsed() < Duration::from_secs(1));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_keeps_newest_guarded_and_recent() {
        let d = tmpdir("keep");
        let old = SystemTime::now() - Duration::from_secs(3600);
        let mk = |secs: i64, age_old: bool| {
            let p = d.join(artifact_name(&Stamp::from_unix(secs), "pipe"));
            let f = File::create(&p).unwrap();
            if age_old {
                f.set_modified(old).unwrap();
            }
            p
        };
        let a1 = mk(1_000, true);
        let a2 = mk(2_000, true); // guarded
        let a3 = mk(3_000, true);
        let a4 = mk(4_000, false); // finished moments ago
        let a5 = mk(5_000, true);
        let newest = mk(6_000, false);
        fs::write(d.join("notes.txt"), b"admin's").unwrap();
        fs::write(d.join(".tmp-x"), b"").unwrap();
        let deleted = apply_retention(&d, 2, &newest, &|p: &Path| p == a2).unwrap();
        // Kept: newest + a5 (keep = 2), a2 (guarded), a4 (grace).
        assert_eq!(deleted, vec![a3.clone(), a1.clone()]);
        for p in [&a2, &a4, &a5, &newest] {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(!a1.exists() && !a3.exists());
        assert!(d.join("notes.txt").exists() && d.join(".tmp-x").exists());
        // keep = 0 still keeps the artifact just made; unguarded, a2 goes.
        let deleted = apply_retention(&d, 0, &newest, &|_: &Path| false).unwrap();
        assert_eq!(deleted, vec![a5.clone(), a2.clone()]);
        assert!(newest.exists() && a4.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ensure_dir_creates_0750_and_refuses_symlinks() {
        let d = tmpdir("mkdir");
        let sub = d.join("a/b");
        ensure_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o7777, DIR_MODE);
        std::os::unix::fs::symlink(&sub, d.join("link")).unwrap();
        assert!(ensure_dir(&d.join("link")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
