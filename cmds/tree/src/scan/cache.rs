//! The hash cache: what git's index and restic's parent snapshot do for
//! them. For each regular file hashed before, the path, its `(device,
//! inode, size, mtime ns, ctime ns)` and its digest. A file whose `lstat`
//! still shows exactly those values is not opened at all. A file found
//! under another name (a renamed or moved directory) is looked up by
//! device and inode too: the same five values vouch for it just as well.
//!
//! `ctime` is the key that makes this safe: a user can reset `mtime`
//! (`touch -d`, `rsync -t`), but any change to the inode (write, chmod,
//! utimes, rename into place) sets `ctime` to the kernel's clock, and
//! replacing a file gives a new inode. What remains is the *racy* file: one
//! changed in the same clock tick as we hashed it, after we read it, keeps
//! its timestamps. Such a file is hashed but not cached (see
//! [`super::ScanOptions::racy_window`]), so the next scan reads it again.
//!
//! The file is local state, not client input; still, anything that does not
//! parse makes the whole cache empty (every file is hashed again) rather
//! than trusted in part. It is replaced atomically (temporary file, fsync,
//! rename, fsync of the directory), and only after a successful scan.
//!
//! Format, one record per line after the header `ferry-tree-cache 1`:
//! `<dev> <ino> <size> <mtime> <ctime> <sha256> <path>` with times as in
//! the manifest and the path percent-encoded as in the manifest.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::Stat;

use crate::manifest::encode::{decode_with, encode_into, parse_dec, parse_time};
use crate::manifest::{Mtime, Sha256};

const HEADER: &str = "ferry-tree-cache 1";

/// What the cache knows of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: Mtime,
    pub(crate) ctime: Mtime,
    pub(crate) sha256: Sha256,
}

fn time(sec: i64, nsec: i64) -> Mtime {
    Mtime { sec, nsec: nsec.clamp(0, 999_999_999) as u32 }
}

pub(crate) fn mtime_of(st: &Stat) -> Mtime {
    time(st.st_mtime, st.st_mtime_nsec as i64)
}

pub(crate) fn ctime_of(st: &Stat) -> Mtime {
    time(st.st_ctime, st.st_ctime_nsec as i64)
}

impl Record {
    pub(crate) fn new(st: &Stat, sha256: Sha256) -> Record {
        Record {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size.max(0) as u64,
            mtime: mtime_of(st),
            ctime: ctime_of(st),
            sha256,
        }
    }

    /// Whether `st` shows the file exactly as it was when hashed.
    pub(crate) fn matches(&self, st: &Stat) -> bool {
        self.dev == st.st_dev
            && self.ino == st.st_ino
            && self.size == st.st_size.max(0) as u64
            && self.mtime == mtime_of(st)
            && self.ctime == ctime_of(st)
    }
}

/// The records by path, and by inode for renamed files.
#[derive(Debug, Default)]
pub(crate) struct HashCache {
    pub(crate) map: HashMap<Vec<u8>, Record>,
    by_inode: HashMap<(u64, u64), Record>,
}

impl HashCache {
    /// Loads the cache at `path`; a missing file is an empty cache, and so
    /// (with a warning) is one that does not parse.
    pub(crate) fn load(path: &Path) -> HashCache {
        match Self::try_load(path) {
            Ok(Some(c)) => c,
            Ok(None) => HashCache::default(),
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "hash cache unusable; every file is hashed again");
                HashCache::default()
            }
        }
    }

    fn try_load(path: &Path) -> io::Result<Option<HashCache>> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut lines = BufReader::new(f).split(b'\n');
        match lines.next() {
            Some(Ok(h)) if h == HEADER.as_bytes() => {}
            _ => return Err(bad("bad header")),
        }
        let mut map = HashMap::new();
        for line in lines {
            let line = line?;
            let mut f = line.split(|b| *b == b' ');
            let mut next = || f.next().ok_or_else(|| bad("short record"));
            let (dev, ino, size) = (next()?, next()?, next()?);
            let (mt, ct, sha, p) = (next()?, next()?, next()?, next()?);
            let rec = Record {
                dev: parse_dec(dev).ok_or_else(|| bad("dev"))?,
                ino: parse_dec(ino).ok_or_else(|| bad("ino"))?,
                size: parse_dec(size).ok_or_else(|| bad("size"))?,
                mtime: parse_time(mt).ok_or_else(|| bad("mtime"))?,
                ctime: parse_time(ct).ok_or_else(|| bad("ctime"))?,
                sha256: Sha256::from_hex(sha).ok_or_else(|| bad("sha256"))?,
            };
            let path = decode_with(p, None).map_err(|_| bad("path"))?;
            if next().is_ok() {
                return Err(bad("long record"));
            }
            map.insert(path, rec);
        }
        // Names of one inode may carry records of different ages (a name
        // added later changed the ctime); only the newest can match.
        let mut by_inode: HashMap<(u64, u64), Record> = HashMap::new();
        for r in map.values() {
            let slot = by_inode.entry((r.dev, r.ino)).or_insert(*r);
            if r.ctime > slot.ctime {
                *slot = *r;
            }
        }
        Ok(Some(HashCache { map, by_inode }))
    }

    /// The digest for `path` if `st` shows the file unchanged (under this
    /// name or, renamed, under another).
    pub(crate) fn lookup(&self, path: &[u8], st: &Stat) -> Option<Sha256> {
        self.map
            .get(path)
            .filter(|r| r.matches(st))
            .or_else(|| self.by_inode.get(&(st.st_dev, st.st_ino)).filter(|r| r.matches(st)))
            .map(|r| r.sha256)
    }
}

/// Writes `records` (in the given order) to `path` atomically.
pub(crate) fn write<'a>(path: &Path, records: impl Iterator<Item = (&'a [u8], &'a Record)>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache path has no name"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), ferry_archive::fsutil::random_token()));
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(256 << 10, f);
        writeln!(w, "{HEADER}")?;
        let mut line = Vec::with_capacity(256);
        for (p, r) in records {
            line.clear();
            write!(line, "{} {} {} {} {} {} ", r.dev, r.ino, r.size, r.mtime, r.ctime, r.sha256)?;
            encode_into(&mut line, p, None);
            line.push(b'\n');
            w.write_all(&line)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
