//! The artifact store: where verified artifacts (dumps, archives, pipe
//! streams) live, behind one interface.
//!
//! Everything that writes or reads an artifact goes through
//! [`ArtifactStore`] — the sftp job puts what it verified, `restore`,
//! `verify` and the drills read, `purge` removes, quota asks for usage — so
//! the node's code does not know where the bytes are. [`LocalStore`] is
//! the node's own disk, the layout Ferry has always used:
//! `data/<client>/<source>/<received>/<file>` beside its digest sidecar
//! `<file>.sha256` (`<sha256>  <file>`). Git mirrors are not artifacts:
//! git needs a file system, so they stay in `data/<client>/git/` whatever
//! the store.
//!
//! The contract every implementation keeps: an artifact becomes visible
//! under its key only complete and verified ([`ArtifactStore::put`] is
//! atomic for readers), and the catalog row is written after it, so a row
//! always names a complete artifact; an artifact without a row (a scan
//! killed in between) is found by `verify` and by the next run of the same
//! request.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::NodeConfig;

/// Where one artifact lives: client, source, node receive time (the run
/// directory, retention's order) and the client module's file name. Every
/// part was validated as a storage name before a key is made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactKey {
    pub client: String,
    pub source: String,
    pub received: String,
    pub file: String,
}

impl ArtifactKey {
    /// `client/source/received/file`: the catalog's `path`, relative to
    /// the data directory.
    pub fn rel_path(&self) -> String {
        format!("{}/{}/{}/{}", self.client, self.source, self.received, self.file)
    }

    /// The key of a catalog `path`; `None` for anything but four plain
    /// segments (a path never comes from a client, but a catalog row is
    /// not trusted to name a place outside the store either).
    pub fn parse(rel: &str) -> Option<ArtifactKey> {
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.starts_with('.')) {
            return None;
        }
        Some(ArtifactKey {
            client: parts[0].to_owned(),
            source: parts[1].to_owned(),
            received: parts[2].to_owned(),
            file: parts[3].to_owned(),
        })
    }

    /// The name of the digest sidecar.
    pub fn sidecar_name(&self) -> String {
        format!("{}.sha256", self.file)
    }

    /// The sidecar's exact content for `sha256`.
    pub fn sidecar_text(&self, sha256: &str) -> String {
        format!("{sha256}  {}\n", self.file)
    }
}

/// The client module an artifact came from, by its extension (the client
/// names artifacts `<stamp>.<ext>`; see ferry-prepare).
pub fn module_of(file_name: &str) -> &'static str {
    if file_name.ends_with(".tar.zst") {
        "fs"
    } else if file_name.ends_with(".pgdump") || file_name.ends_with(".pgdumpall.sql.zst") {
        "postgresdb"
    } else if file_name.ends_with(".mysqldump.sql.zst") {
        "mysql"
    } else if file_name.ends_with(".pipe") {
        "pipe"
    } else {
        "file"
    }
}

/// What the store holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// The digest sidecar's content, if there is one.
    pub sidecar: Option<String>,
}

/// Opens the version of an artifact that [`ArtifactStore::look`] looked
/// at, as often as it is called (a check, then the restore that reads it
/// again, both read that version or fail).
pub type Opener<'a> = Box<dyn Fn() -> anyhow::Result<Box<dyn Read + Send>> + Send + 'a>;

/// The artifact store interface (module docs).
pub trait ArtifactStore: Send + Sync {
    /// A local directory where the download for `key` is written before it
    /// is put (created if needed). For [`LocalStore`] it is the artifact's
    /// own run directory, so that [`ArtifactStore::put`] is a rename.
    fn staging_dir(&self, key: &ArtifactKey) -> anyhow::Result<PathBuf>;
    /// Make the verified local file `file` the artifact `key` with its
    /// digest sidecar, atomically for readers.
    fn put(&self, key: &ArtifactKey, file: &Path, sha256: &str) -> anyhow::Result<()>;
    /// Read the artifact.
    fn open(&self, key: &ArtifactKey) -> anyhow::Result<Box<dyn Read + Send>>;
    /// Size and sidecar of the artifact; `None` when it is not there.
    fn stat(&self, key: &ArtifactKey) -> anyhow::Result<Option<Stored>>;
    /// [`ArtifactStore::stat`], and a way to read the very version it saw,
    /// for whoever checks the size and sidecar and then reads (restore,
    /// verify). In object storage `stat` then `open` were two HEAD requests,
    /// and could see two versions of a replaced object; here one HEAD
    /// serves both and every read is bound to its ETag (a replaced object
    /// fails the read). The opener's errors are `open`'s (E_STORE_KEY
    /// among them). On the node's disk an artifact is never rewritten in
    /// place, so `open` again reads the same file.
    fn look(&self, key: &ArtifactKey) -> anyhow::Result<Option<(Stored, Opener<'_>)>> {
        let key = key.clone();
        Ok(self.stat(&key)?.map(|s| (s, Box::new(move || self.open(&key)) as Opener<'_>)))
    }
    /// Every artifact stored for `client` (or for every client).
    fn list(&self, client: Option<&str>) -> anyhow::Result<Vec<ArtifactKey>>;
    /// Remove the artifact and its sidecar (and its run directory when
    /// empty). Removing what is not there is not an error.
    fn remove(&self, key: &ArtifactKey) -> anyhow::Result<()>;
    /// A local path for the artifact, where the store has one (tools that
    /// need a file; restore falls back to [`ArtifactStore::open`]).
    fn local_path(&self, key: &ArtifactKey) -> Option<PathBuf>;
    /// Bytes the store holds for `client` off the node's disk (objects
    /// and sidecars), which the client's quota counts beside
    /// [`used_bytes`] of `data/<client>`; 0 for the node's own disk.
    fn remote_bytes(&self, _client: &str) -> anyhow::Result<u64> {
        Ok(0)
    }
}

/// Create `base/<segments…>` directory by directory with `lstat` checks, so
/// no existing symlink can redirect a write outside `base`; every segment
/// must be a safe storage name (`InvalidInput` otherwise).
pub fn safe_subdir(base: &Path, segments: &[&str]) -> std::io::Result<PathBuf> {
    let mut p = base.to_owned();
    for s in segments {
        if !ferry_text::is_safe_token(s) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{s:?} is not a safe storage name"),
            ));
        }
        p.push(s);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!("{} is not a plain directory", p.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&p)?,
            Err(e) => return Err(e),
        }
    }
    Ok(p)
}

mod bucket;
pub mod crypt;
pub mod health;
mod reader;
mod s3;
pub use bucket::{Health, Lock};
pub use s3::S3Store;

/// The node's chosen store (`[store] kind`).
pub fn open(cfg: &NodeConfig) -> anyhow::Result<Box<dyn ArtifactStore>> {
    Ok(match cfg.store.kind.as_str() {
        "s3" => Box::new(S3Store::open(cfg)?),
        _ => Box::new(LocalStore { data: cfg.data_dir() }),
    })
}

/// Artifacts on the node's disk under `data/` (module docs).
#[derive(Debug, Clone)]
pub struct LocalStore {
    data: PathBuf,
}

impl LocalStore {
    pub fn new(data: impl Into<PathBuf>) -> LocalStore {
        LocalStore { data: data.into() }
    }

    fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.data.join(&key.client).join(&key.source).join(&key.received).join(&key.file)
    }
}

fn nofollow() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    o
}

/// Mode of a stored artifact: the owner and the node's group read it.
pub const ARTIFACT_MODE: u32 = 0o640;

impl ArtifactStore for LocalStore {
    fn staging_dir(&self, key: &ArtifactKey) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.data).with_context(|| format!("cannot create {}", self.data.display()))?;
        safe_subdir(&self.data, &[&key.client, &key.source, &key.received])
            .with_context(|| format!("cannot create the run directory of {}", key.rel_path()))
    }

    fn put(&self, key: &ArtifactKey, file: &Path, sha256: &str) -> anyhow::Result<()> {
        let dest = self.path(key);
        let dir = dest.parent().expect("a run directory");
        // The download is private (0600) while unverified; stored, the
        // group reads it too: in the two-account layout the scan account
        // stores and `git` serves the client's restore verb (`ferry
        // restore`), which failed "Permission denied" on a 0600 file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(ARTIFACT_MODE))
            .with_context(|| format!("cannot set the mode of {}", file.display()))?;
        if file != dest {
            std::fs::rename(file, &dest).with_context(|| format!("cannot move {} into place", file.display()))?;
        }
        ferry_durable::write_synced(dir, &key.sidecar_name(), key.sidecar_text(sha256).as_bytes())
            .with_context(|| format!("cannot write the digest sidecar in {}", dir.display()))?;
        Ok(())
    }

    fn open(&self, key: &ArtifactKey) -> anyhow::Result<Box<dyn Read + Send>> {
        let p = self.path(key);
        Ok(Box::new(nofollow().open(&p).with_context(|| format!("cannot open {}", p.display()))?))
    }

    fn stat(&self, key: &ArtifactKey) -> anyhow::Result<Option<Stored>> {
        let p = self.path(key);
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
        };
        if !md.file_type().is_file() {
            anyhow::bail!("{} is not a regular file", p.display());
        }
        let sidecar = std::fs::read_to_string(p.with_file_name(key.sidecar_name())).ok();
        Ok(Some(Stored { size: md.len(), sidecar }))
    }

    fn list(&self, client: Option<&str>) -> anyhow::Result<Vec<ArtifactKey>> {
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !n.starts_with('.'))
                .collect();
            v.sort();
            v
        };
        let clients = match client {
            Some(c) => vec![c.to_owned()],
            None => names(&self.data),
        };
        let mut out = Vec::new();
        for c in clients {
            let cdir = self.data.join(&c);
            // `git/` holds the mirrors, `store/` and `trees/` the snapshot
            // trees ([`crate::trees`]), not artifacts.
            for s in names(&cdir).into_iter().filter(|s| !matches!(s.as_str(), "git" | "store" | "trees")) {
                for r in names(&cdir.join(&s)) {
                    let run = cdir.join(&s).join(&r);
                    let mut files: Vec<String> = std::fs::read_dir(&run)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                        .filter(|n| !n.ends_with(".sha256") && !n.starts_with('.'))
                        .collect();
                    files.sort();
                    out.extend(files.into_iter().map(|file| ArtifactKey {
                        client: c.clone(),
                        source: s.clone(),
                        received: r.clone(),
                        file,
                    }));
                }
            }
        }
        Ok(out)
    }

    fn remove(&self, key: &ArtifactKey) -> anyhow::Result<()> {
        let p = self.path(key);
        for f in [p.clone(), p.with_file_name(key.sidecar_name())] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", f.display())),
            }
        }
        if let Some(dir) = p.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    fn local_path(&self, key: &ArtifactKey) -> Option<PathBuf> {
        Some(self.path(key))
    }
}

/// Bytes stored for a client: everything under `data/<client>` (mirrors and
/// artifacts), by an `lstat` walk that never follows links. Each entry
/// counts what it occupies on disk (at least its allocated blocks), so many
/// tiny files — refs, reflogs — cost the client what they cost the node.
/// An inode with several names counts once: the files of snapshot trees
/// are hard links into the client's content store ([`crate::trees`]), so
/// thirty snapshots of an unchanged file cost what the node stores, once,
/// and a new snapshot costs the new content it adds.
///
/// Each name of a multiply-linked inode after the first costs no `lstat`:
/// the directory listing's inode number (`d_ino`) is looked up among the
/// inodes already counted. A pull checks the quota with this walk, and a
/// client with thirty snapshots of 100,000 files has three million names
/// but only the store's inodes to stat.
pub fn used_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let Ok(top) = std::fs::symlink_metadata(dir) else { return 0 };
    let mut total: u64 = 0;
    let mut stack = vec![(dir.to_owned(), top.dev())];
    let mut linked = std::collections::HashSet::new();
    while let Some((d, dev)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for de in rd.flatten() {
            if de.file_type().is_ok_and(|t| t.is_file()) && linked.contains(&(dev, de.ino())) {
                continue;
            }
            let Ok(md) = de.metadata() else { continue };
            if md.is_dir() {
                stack.push((de.path(), md.dev()));
            } else if md.nlink() > 1 && !linked.insert((md.dev(), md.ino())) {
                continue;
            }
            total = total.saturating_add(md.len().max(md.blocks().saturating_mul(512)));
        }
    }
    total
}

/// An entry of `dir` whose name differs from `name` only in ASCII letter
/// case: on a case-insensitive file system or object store the two would
/// be one directory, mixing two sources' or repositories' data.
pub fn case_twin(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name();
        let n = n.to_str()?;
        ferry_request::same_ignoring_case(n, name).then(|| n.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ArtifactKey {
        ArtifactKey {
            client: "host-a".into(),
            source: "site".into(),
            received: "20261122T010203Z".into(),
            file: "20261122T010200Z.tar.zst".into(),
        }
    }

    #[test]
    fn used_bytes_counts_each_inode_once_whatever_its_names() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let on_disk = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            m.len().max(m.blocks() * 512)
        };
        std::fs::create_dir_all(d.join("store/ab")).unwrap();
        std::fs::write(d.join("store/ab/content"), vec![7u8; 10_000]).unwrap();
        std::fs::write(d.join("single"), b"one name").unwrap();
        let mut want = on_disk(&d.join("store")) + on_disk(&d.join("store/ab")) + on_disk(&d.join("single"));
        want += on_disk(&d.join("store/ab/content"));
        // Three snapshots linking the content, in directories of their own
        // (listed before and after the store, whatever readdir's order).
        for s in ["a-snap", "snap", "z-snap"] {
            std::fs::create_dir_all(d.join(s).join("dir")).unwrap();
            std::fs::hard_link(d.join("store/ab/content"), d.join(s).join("dir/file")).unwrap();
            std::fs::hard_link(d.join("store/ab/content"), d.join(s).join("again")).unwrap();
            want += on_disk(&d.join(s)) + on_disk(&d.join(s).join("dir"));
        }
        std::os::unix::fs::symlink("store/ab/content", d.join("link")).unwrap();
        want += on_disk(&d.join("link"));
        assert_eq!(used_bytes(d), want);
        assert_eq!(used_bytes(&d.join("missing")), 0);
    }

    #[test]
    fn keys_round_trip_and_refuse_what_is_not_four_plain_segments() {
        let k = key();
        assert_eq!(ArtifactKey::parse(&k.rel_path()), Some(k));
        for bad in ["a/b/c", "a/b/c/d/e", "a/../c/d", "a//c/d", "/a/b/c", "a/b/c/.hidden", ""] {
            assert_eq!(ArtifactKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn put_open_stat_list_remove() {
        let td = tempfile::tempdir().unwrap();
        let s = LocalStore::new(td.path());
        let k = key();
        assert_eq!(s.stat(&k).unwrap(), None);
        let dir = s.staging_dir(&k).unwrap();
        let tmp = dir.join(".tmp-download");
        std::fs::write(&tmp, b"hello").unwrap();
        s.put(&k, &tmp, "abc").unwrap();
        let mut got = String::new();
        s.open(&k).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.local_path(&k).unwrap()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, ARTIFACT_MODE, "the group reads a stored artifact");
        assert_eq!(s.stat(&k).unwrap(), Some(Stored { size: 5, sidecar: Some(k.sidecar_text("abc")) }));
        std::fs::create_dir_all(td.path().join("host-a/git/x.git")).unwrap();
        assert_eq!(s.list(None).unwrap(), vec![k.clone()]);
        assert_eq!(s.list(Some("host-b")).unwrap(), vec![]);
        s.remove(&k).unwrap();
        s.remove(&k).unwrap();
        assert_eq!(s.stat(&k).unwrap(), None);
        assert!(!dir.exists(), "the empty run directory goes too");
    }
}
