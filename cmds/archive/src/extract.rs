//! Strict, confined extraction of tar+zstd archives from untrusted clients,
//! and the validate-only listing that shares its checks.
//!
//! The pipeline, outermost first:
//!
//! 1. The input must start with the zstd frame magic (SF-12: gzip, xz, zip
//!    or a script is `E_ARCHIVE_FORMAT`, never handed to another decoder).
//! 2. One zstd frame is decoded with the library's default window limit
//!    (2^27; `window_log_max` is never raised, AX-18). After the frame, the
//!    input must end.
//! 3. A counting reader caps the decompressed bytes (`max_total_bytes`) and
//!    their ratio to the compressed bytes read (`max_ratio`), while
//!    streaming, so a bomb stops as soon as it crosses the line.
//! 4. The tar crate splits the stream into raw records only
//!    (`Entries::raw(true)`, `set_ignore_zeros(false)`). GNU long names,
//!    long links and PAX records are read here, each checked against
//!    `max_ext_header_bytes` *before* it is read. After the end-of-archive
//!    block only zero padding may follow.
//! 5. [`Validator`] checks each entry's name, type, links, duplicates and
//!    limits before anything is written.
//! 6. The extractor creates each entry through directory fds opened
//!    beneath the staging root with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_SYMLINKS)`, or component by component with `O_NOFOLLOW`
//!    (`openat`, `mkdirat`, `symlinkat`, `linkat`, files with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW`), so even a validator bug could not write
//!    through a symlink or outside the staging directory. Directory modes
//!    and times are applied last, deepest first, so a `0000` or `0555`
//!    directory cannot block its own children.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Chain, Cursor, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use unicode_normalization::UnicodeNormalization;

use crate::error::{ArchiveError, escape_name};
use crate::fsutil::{open_dir_at, open_dir_beneath, random_token, remove_tree};
use crate::pax;

/// What to do with symlink entries.
///
/// Whatever the policy, extraction never follows a link: every parent is
/// opened beneath the staging root with `RESOLVE_NO_SYMLINKS` (or
/// `O_NOFOLLOW` per component), files are created `O_EXCL|O_NOFOLLOW`, and
/// an entry below a symlink of the archive (`link -> /etc`, then
/// `link/passwd`) is refused with `E_ARCHIVE_LINK`. So a link's target only
/// matters to whoever reads the restored tree later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymlinkPolicy {
    /// Only relative targets that stay inside the extracted tree, checked
    /// lexically per link and then once more at the end by resolving every
    /// link through the archive's other links (so `a -> x/..` where `x` is
    /// itself a link to `..` is caught too). Absolute targets are refused.
    /// For trees that later readers walk without `O_NOFOLLOW`.
    InTree,
    /// Targets are kept verbatim, whatever they point to: relative,
    /// dangling (`../nonexistent`), out of the tree, absolute. A restore
    /// gives back the links a host had, since a link is only a name for
    /// something; none is ever followed while extracting.
    #[default]
    Any,
    /// Every symlink entry is refused.
    Reject,
}

/// What extraction accepts and preserves. [`ExtractPolicy::default`] is
/// strict about structure but faithful to names, symlinks and permission
/// bits (minus setuid); [`ExtractPolicy::hostile`] is the profile for
/// archives from a client that may be compromised whose tree other programs
/// will walk; [`ExtractPolicy::faithful`] restores everything a host's own
/// tree can contain.
#[derive(Debug, Clone)]
pub struct ExtractPolicy {
    /// Symlink entries, see [`SymlinkPolicy`].
    pub symlinks: SymlinkPolicy,
    /// Allow hard links, and then only to a regular file this archive
    /// already wrote (the target name is validated like any entry name).
    pub hardlinks: bool,
    /// Allow FIFOs and character/block devices. Devices are created only
    /// when running as root (else `E_ARCHIVE_TYPE`); FIFOs need no
    /// privilege. Off: all three are `E_ARCHIVE_TYPE` (AX-09).
    pub devices: bool,
    /// Keep setuid, setgid and sticky bits. Off: they are stripped (AX-10).
    pub setuid: bool,
    /// Keep permission bits (minus setuid unless `setuid`). Off: files are
    /// 0644, or 0755 when any execute bit is set; directories 0755.
    pub preserve_modes: bool,
    /// Restore uid/gid. Only effective when running as root.
    pub preserve_owner: bool,
    /// Apply extended attributes, and then only the `user.` namespace
    /// (never `security.*`, `trusted.*` or `system.*` ACLs, AX-12).
    pub xattrs: bool,
    /// Restore modification times.
    pub mtimes: bool,
    /// Refuse names that are not valid UTF-8 or contain C0/C1 controls,
    /// DEL or bidi controls, and detect per-directory collisions after case
    /// folding and NFC normalisation (AX-14). Off by default so a host's own
    /// odd names restore faithfully.
    pub strict_names: bool,
    /// Most entries (of any type) in one archive (AX-19).
    pub max_entries: u64,
    /// Most decompressed tar stream bytes (headers and padding included,
    /// so at least the data size) (AX-18).
    pub max_total_bytes: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
    /// Longest path component, in bytes.
    pub max_component_bytes: usize,
    /// Deepest entry, in components.
    pub max_depth: usize,
    /// Largest GNU long-name/long-link or PAX record (and their sum for one
    /// entry); checked before the record is read (AX-16).
    pub max_ext_header_bytes: u64,
    /// Most decompressed bytes per compressed byte read (plus a 1 MiB
    /// allowance for the start of the stream), checked while streaming.
    /// `None` (the default): no ratio check.
    pub max_ratio: Option<u64>,
}

impl Default for ExtractPolicy {
    fn default() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::Any,
            hardlinks: true,
            devices: false,
            setuid: false,
            preserve_modes: true,
            preserve_owner: false,
            xattrs: false,
            mtimes: true,
            strict_names: false,
            max_entries: 1_000_000,
            max_total_bytes: 1 << 40,
            max_file_bytes: 1 << 40,
            max_path_bytes: 1024,
            max_component_bytes: 255,
            max_depth: 64,
            max_ext_header_bytes: 64 << 10,
            // No ratio cap by default: real trees hold zero-filled files
            // (database WAL segments, VM images) that zstd shrinks 30000:1,
            // exactly like a bomb. The caller bounds the output with
            // max_total_bytes (from its quota or free space); `hostile()`
            // adds the ratio cap.
            max_ratio: None,
        }
    }
}

impl ExtractPolicy {
    /// The profile for archives from a client that may be compromised:
    /// strict names, in-tree symlinks only, no devices or FIFOs, no setuid,
    /// modes normalised to 0644/0755, no ownership, no xattrs, and a
    /// decompression ratio cap of 200:1 (SECURITY.md C12). The ratio cap
    /// also refuses honest archives with large zero-filled files; raise or
    /// clear `max_ratio` for those, and keep `max_total_bytes` at the quota.
    pub fn hostile() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::InTree,
            devices: false,
            setuid: false,
            preserve_modes: false,
            preserve_owner: false,
            xattrs: false,
            strict_names: true,
            max_ratio: Some(200),
            ..ExtractPolicy::default()
        }
    }

    /// Everything a host's own tree can hold, for an administrator's
    /// restore of trusted data: symlinks verbatim, FIFOs and devices (as
    /// root), setuid bits, owners (as root), `user.*` xattrs. Structure
    /// checks and limits still apply, and nothing is written through links.
    pub fn faithful() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::Any,
            devices: true,
            setuid: true,
            preserve_modes: true,
            preserve_owner: true,
            xattrs: true,
            max_ratio: None,
            ..ExtractPolicy::default()
        }
    }
}

/// What [`extract_tar_zst`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Archive entries (extension records not counted).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories with an entry of their own.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// FIFOs and devices.
    pub other: u64,
    /// File data bytes written.
    pub bytes: u64,
}

/// The type of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Regular file with data.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link to an earlier regular file of the archive.
    HardLink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

/// One validated entry, as [`list_tar_zst`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Normalised relative path (no `./`, no trailing `/`); empty for an
    /// entry describing the root directory itself.
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryKind,
    /// Data size (0 for everything but files).
    pub size: u64,
    /// Permission bits as stored, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner ids as stored.
    pub uid: u64,
    /// Group id as stored.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Sub-second part of the modification time (from PAX), nanoseconds.
    pub mtime_nanos: u32,
    /// Symlink target (verbatim) or hard-link target (normalised path).
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes recorded in the archive (all namespaces; which
    /// are applied is the policy's business).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Device numbers for character/block devices.
    pub device: Option<(u32, u32)>,
}

/// Reads and validates the whole archive without writing anything: the
/// same checks and limits as [`extract_tar_zst`] (except that devices are
/// not refused for want of root), for `verify` and `find`.
pub fn list_tar_zst<R: Read>(input: R, policy: &ExtractPolicy) -> Result<Vec<ListEntry>, ArchiveError> {
    let mut sink = ListSink(Vec::new());
    process(input, policy, &mut sink)?;
    Ok(sink.0)
}

/// Extracts a tar+zstd archive into `dest`, which must not exist.
///
/// The tree is built in `<parent>/.ferry-staging-<random>` (mode 0700) and
/// renamed to `dest` (without replacing anything) only after the whole
/// archive was read, validated and written. On any error the staging
/// directory is removed without following links and nothing is left
/// behind. See [`ExtractPolicy`] for what is accepted, and the crate docs
/// for how writes are confined.
pub fn extract_tar_zst<R: Read>(input: R, dest: &Path, policy: &ExtractPolicy) -> Result<ExtractStats, ArchiveError> {
    let dest_name = dest
        .file_name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ArchiveError::io(
                format!("destination {}", dest.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name"),
            )
        })?
        .as_bytes()
        .to_vec();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = rustix::fs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ArchiveError::io(format!("opening {}", parent.display()), e))?;
    match rustix::fs::statat(&parent_fd, dest_name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => {
            return Err(ArchiveError::io(
                format!("destination {}", dest.display()),
                io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists"),
            ));
        }
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(ArchiveError::io(format!("checking {}", dest.display()), e));
        }
    }

    let mut staging_name = Vec::new();
    for attempt in 0.. {
        let name = format!(".ferry-staging-{}", random_token()).into_bytes();
        match rustix::fs::mkdirat(&parent_fd, name.as_slice(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                staging_name = name;
                break;
            }
            Err(rustix::io::Errno::EXIST) if attempt < 8 => continue,
            Err(e) => {
                return Err(ArchiveError::io(format!("creating staging directory in {}", parent.display()), e));
            }
        }
    }

    let result = extract_into_staging(input, policy, parent_fd.as_fd(), &staging_name).and_then(|stats| {
        publish(parent_fd.as_fd(), &staging_name, &dest_name)
            .map_err(|e| ArchiveError::io(format!("publishing {}", dest.display()), e))?;
        Ok(stats)
    });
    if result.is_err()
        && let Err(e) = remove_tree(parent_fd.as_fd(), &staging_name)
    {
        tracing::error!(
            staging = %escape_name(&staging_name),
            error = %e,
            "could not remove the staging directory of a failed extraction"
        );
    }
    result
}

fn extract_into_staging<R: Read>(
    input: R,
    policy: &ExtractPolicy,
    parent: BorrowedFd<'_>,
    staging_name: &[u8],
) -> Result<ExtractStats, ArchiveError> {
    let root = open_dir_at(parent, staging_name).map_err(|e| ArchiveError::io("opening staging directory", e))?;
    let mut sink = ExtractSink {
        policy,
        root,
        is_root: rustix::process::geteuid().is_root(),
        cache: None,
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        root_meta: None,
        stats: ExtractStats::default(),
        buf: vec![0u8; 1 << 20],
    };
    process(input, policy, &mut sink)?;
    sink.finish()?;
    Ok(sink.stats)
}

/// Renames staging to the destination without replacing anything that
/// appeared meanwhile, and syncs the parent so the name survives a crash.
fn publish(parent: BorrowedFd<'_>, staging: &[u8], dest: &[u8]) -> io::Result<()> {
    match rustix::fs::renameat_with(parent, staging, parent, dest, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // Filesystem without RENAME_NOREPLACE: check, then rename.
            if rustix::fs::statat(parent, dest, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "destination appeared during extraction"));
            }
            rustix::fs::renameat(parent, staging, parent, dest)?;
        }
        Err(e) => return Err(e.into()),
    }
    let _ = rustix::fs::fsync(parent);
    Ok(())
}

// ---------------------------------------------------------------------------
// Input pipeline: magic check, counting, zstd, limits.

/// The zstd frame magic number, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Decompressed bytes always allowed before the ratio check bites.
const RATIO_ALLOWANCE: u64 = 1 << 20;

/// Counters shared by the readers of the pipeline, so an error surfacing
/// through the tar crate (which rewraps io errors) can still be classified.
#[derive(Default)]
struct Shared {
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    limit_hit: RefCell<Option<String>>,
    input_failed: Cell<bool>,
    eof_seen: Cell<bool>,
}

struct CountingReader<R> {
    inner: R,
    sh: Rc<Shared>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sh.compressed.set(self.sh.compressed.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.sh.input_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

struct LimitReader<R> {
    inner: R,
    sh: Rc<Shared>,
    max_total: u64,
    max_ratio: Option<u64>,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.sh.eof_seen.set(true);
        }
        let total = self.sh.decompressed.get() + n as u64;
        self.sh.decompressed.set(total);
        let hit = if total > self.max_total {
            Some(format!("decompressed archive larger than max_total_bytes ({} bytes)", self.max_total))
        } else if let Some(r) = self.max_ratio
            && total > r.saturating_mul(self.sh.compressed.get()).saturating_add(RATIO_ALLOWANCE)
        {
            Some(format!(
                "decompression ratio above max_ratio ({r}:1) after {total} bytes \
                 (large zero-filled files do this too; raise max_ratio if the archive is trusted)"
            ))
        } else {
            None
        };
        if let Some(what) = hit {
            *self.sh.limit_hit.borrow_mut() = Some(what);
            return Err(io::Error::other("archive limit exceeded"));
        }
        Ok(n)
    }
}

type Decoder<R> = zstd::stream::read::Decoder<'static, BufReader<CountingReader<Chain<Cursor<[u8; 4]>, R>>>>;
type Stream<R> = LimitReader<Decoder<R>>;

/// Names well-known magic numbers so an administrator sees what the file
/// really is.
fn describe_magic(m: &[u8]) -> &'static str {
    match m {
        [0x1f, 0x8b, ..] => "gzip data, not zstd",
        [0xfd, b'7', b'z', b'X'] => "xz data, not zstd",
        [b'P', b'K', ..] => "zip data, not zstd",
        [b'B', b'Z', b'h', ..] => "bzip2 data, not zstd",
        [b'#', b'!', ..] => "a script, not zstd",
        [0x50..=0x5f, 0x2a, 0x4d, 0x18] => "a zstd skippable frame where the archive must start",
        _ => "not a zstd stream",
    }
}

fn open_stream<R: Read>(mut input: R, policy: &ExtractPolicy) -> Result<(Stream<R>, Rc<Shared>), ArchiveError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArchiveError::io("reading archive", e)),
        }
    }
    if got < 4 {
        return Err(ArchiveError::format("input too short to be a zstd stream"));
    }
    if magic != ZSTD_MAGIC {
        return Err(ArchiveError::format(describe_magic(&magic)));
    }
    let sh = Rc::new(Shared::default());
    sh.compressed.set(4);
    let counting = CountingReader { inner: Cursor::new(magic).chain(input), sh: sh.clone() };
    // Default window limit (2^27) on purpose: never call window_log_max.
    let dec =
        zstd::stream::read::Decoder::new(counting).map_err(|e| ArchiveError::io("starting zstd", e))?.single_frame();
    Ok((LimitReader { inner: dec, sh: sh.clone(), max_total: policy.max_total_bytes, max_ratio: policy.max_ratio }, sh))
}

/// Classifies an error from the reading side: a limit we raised, the
/// caller's input failing, or (everything else) a malformed archive.
fn read_err(sh: &Shared, e: io::Error) -> ArchiveError {
    if let Some(what) = sh.limit_hit.borrow_mut().take() {
        return ArchiveError::limit(what);
    }
    if sh.input_failed.get() {
        return ArchiveError::io("reading archive", e);
    }
    ArchiveError::format(format!("malformed archive: {e}"))
}

// ---------------------------------------------------------------------------
// Entry parsing and validation.

/// One archive entry after extension records were applied.
struct Item {
    path: Vec<u8>,
    kind: EntryKind,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    link: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    device: Option<(u32, u32)>,
}

#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    bytes: u64,
}

/// Where validated entries go: a list, or the filesystem.
trait Sink {
    /// A directory the archive implies but has not described (yet).
    fn implicit_dir(&mut self, path: &[u8]) -> Result<(), ArchiveError>;
    /// A validated entry; `data` yields exactly `item.size` bytes for files.
    fn entry(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError>;
}

fn process<R: Read>(input: R, policy: &ExtractPolicy, sink: &mut dyn Sink) -> Result<(), ArchiveError> {
    let (stream, sh) = open_stream(input, policy)?;
    let mut archive = tar::Archive::new(stream);
    archive.set_ignore_zeros(false);
    let mut v = Validator::new(policy);
    {
        let entries = archive.entries().map_err(|e| read_err(&sh, e))?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| read_err(&sh, e))?;
            let header = entry.header().clone();
            let size = header.entry_size().map_err(|e| ArchiveError::format(format!("bad size field: {e}")))?;
            let tflag = header.entry_type().as_byte();
            if matches!(tflag, b'L' | b'K' | b'x' | b'g') {
                read_extension(&mut entry, tflag, size, policy, &mut pending, &sh)?;
                continue;
            }
            let p = std::mem::take(&mut pending);
            let mut item = v.item(&header, size, p)?;
            for dir in v.admit(&mut item)? {
                sink.implicit_dir(&dir)?;
            }
            sink.entry(&item, &mut entry, &sh)?;
        }
        if pending.long_name.is_some() || pending.long_link.is_some() || pending.pax.is_some() {
            return Err(ArchiveError::format("extension record at the end of the archive without an entry"));
        }
    }
    v.finish()?;
    // The tar crate stops at the first zero block; make sure it was a real
    // end-of-archive marker and not the input simply running out.
    if sh.eof_seen.get() {
        return Err(ArchiveError::format("archive ends without an end-of-archive marker (truncated?)"));
    }
    let mut stream = archive.into_inner();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(&sh, e)),
        };
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::format("data after the end-of-archive marker (one archive per file)"));
        }
    }
    // One zstd frame per file: nothing may follow it.
    let mut rest = stream.inner.finish();
    if !io::BufRead::fill_buf(&mut rest).map_err(|e| read_err(&sh, e))?.is_empty() {
        return Err(ArchiveError::format("data after the zstd frame (one frame per file)"));
    }
    Ok(())
}

fn read_extension(
    entry: &mut dyn Read,
    tflag: u8,
    size: u64,
    policy: &ExtractPolicy,
    pending: &mut Pending,
    sh: &Shared,
) -> Result<(), ArchiveError> {
    let what = match tflag {
        b'L' => "GNU long name",
        b'K' => "GNU long link",
        b'x' => "PAX header",
        _ => "PAX global header",
    };
    pending.bytes = pending.bytes.saturating_add(size);
    if size > policy.max_ext_header_bytes || pending.bytes > policy.max_ext_header_bytes {
        return Err(ArchiveError::limit(format!(
            "{what} larger than max_ext_header_bytes ({} bytes)",
            policy.max_ext_header_bytes
        )));
    }
    // `size` is capped above, but the cap is configurable: never let a
    // header's claim size an allocation.
    let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
    entry.take(size).read_to_end(&mut data).map_err(|e| read_err(sh, e))?;
    if data.len() as u64 != size {
        return Err(ArchiveError::format(format!("truncated {what}")));
    }
    match tflag {
        b'L' | b'K' => {
            let slot = if tflag == b'L' { &mut pending.long_name } else { &mut pending.long_link };
            if slot.is_some() {
                return Err(ArchiveError::format(format!("two {what} records for one entry")));
            }
            while data.last() == Some(&0) {
                data.pop();
            }
            *slot = Some(data);
        }
        b'x' => {
            if pending.pax.is_some() {
                return Err(ArchiveError::format("two PAX headers for one entry"));
            }
            let recs = pax::parse(&data).map_err(ArchiveError::format)?;
            pending.pax = Some(recs);
        }
        _ => {
            // Global headers change how every later entry is read; accept
            // only the harmless `comment` that `git archive` writes.
            let recs = pax::parse(&data).map_err(ArchiveError::format)?;
            if recs.iter().any(|(k, _)| k != b"comment") {
                return Err(ArchiveError::format("PAX global header with records other than `comment`"));
            }
            pending.bytes = 0;
        }
    }
    Ok(())
}

/// What the validator knows about a name already in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A directory: `explicit` once an entry described it.
    Dir {
        explicit: bool,
    },
    File,
    Symlink,
    Special,
}

struct Validator<'p> {
    policy: &'p ExtractPolicy,
    nodes: HashMap<Vec<u8>, Node>,
    /// Under strict_names: (parent path, NUL, folded name) → actual name.
    folded: HashMap<Vec<u8>, Vec<u8>>,
    /// Symlink targets, for the final in-tree resolution.
    symlinks: Vec<(Vec<u8>, Vec<u8>)>,
    root_seen: bool,
    entries: u64,
    /// The parent directory of the previous entry, already checked.
    last_parent: Vec<u8>,
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn parent_of(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Bidi and other invisible direction controls that make a name display
/// differently from what it is (Trojan Source class).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Under strict_names: valid UTF-8 without C0, DEL, C1 or bidi controls.
fn check_strict(bytes: &[u8]) -> Result<(), &'static str> {
    let s = std::str::from_utf8(bytes).map_err(|_| "name is not valid UTF-8")?;
    if s.chars().any(|c| c.is_control() || is_bidi(c)) {
        return Err("control or bidi character in name");
    }
    Ok(())
}

/// The per-directory collision key: NFC, lower-cased, NFC again.
fn fold_key(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) => {
            let nfc: String = s.nfc().collect();
            let lower: String = nfc.chars().flat_map(char::to_lowercase).collect();
            lower.nfc().collect::<String>().into_bytes()
        }
        Err(_) => name.to_vec(),
    }
}

impl<'p> Validator<'p> {
    fn new(policy: &'p ExtractPolicy) -> Self {
        Validator {
            policy,
            nodes: HashMap::new(),
            folded: HashMap::new(),
            symlinks: Vec::new(),
            root_seen: false,
            entries: 0,
            last_parent: Vec::new(),
        }
    }

    /// Normalises and checks an entry name; returns the path (empty for
    /// the root) or why it is unsafe.
    fn normalise(&self, raw: &[u8], is_dir: bool) -> Result<Vec<u8>, &'static str> {
        let p = self.policy;
        if raw.is_empty() {
            return Err("empty name");
        }
        if raw.contains(&0) {
            return Err("NUL byte in name");
        }
        if raw[0] == b'/' {
            return Err("absolute path");
        }
        let mut s = raw;
        if let Some(stripped) = s.strip_suffix(b"/") {
            if !is_dir {
                return Err("trailing `/` on an entry that is not a directory");
            }
            s = stripped;
        }
        let mut comps: Vec<&[u8]> = Vec::new();
        for c in s.split(|b| *b == b'/') {
            match c {
                b"." if comps.is_empty() => {}
                b"." => return Err("`.` component inside the path"),
                b"" => return Err("empty component (`//`)"),
                b".." => return Err("`..` component"),
                _ => {
                    if c.len() > p.max_component_bytes {
                        return Err("component longer than max_component_bytes");
                    }
                    if p.strict_names {
                        check_strict(c)?;
                    }
                    comps.push(c);
                }
            }
        }
        if comps.len() > p.max_depth {
            return Err("deeper than max_depth");
        }
        let path = join(&comps);
        if path.len() > p.max_path_bytes {
            return Err("path longer than max_path_bytes");
        }
        Ok(path)
    }

    /// Builds an [`Item`] from a header and the extension records before it.
    fn item(&mut self, h: &tar::Header, size: u64, p: Pending) -> Result<Item, ArchiveError> {
        self.entries += 1;
        if self.entries > self.policy.max_entries {
            return Err(ArchiveError::limit(format!("more than max_entries ({}) entries", self.policy.max_entries)));
        }
        let mut raw_path = h.path_bytes().into_owned();
        let mut raw_link = h.link_name_bytes().map(|l| l.into_owned());
        let fmt = |what: &str, e: io::Error| ArchiveError::format(format!("bad {what}: {e}"));
        let mut uid = h.uid().map_err(|e| fmt("uid", e))?;
        let mut gid = h.gid().map_err(|e| fmt("gid", e))?;
        let mode = h.mode().map_err(|e| fmt("mode", e))?;
        let mut mtime = (i64::try_from(h.mtime().map_err(|e| fmt("mtime", e))?).unwrap_or(i64::MAX), 0u32);
        let had_long_name = p.long_name.is_some();
        let had_long_link = p.long_link.is_some();
        if let Some(n) = p.long_name {
            raw_path = n;
        }
        if let Some(l) = p.long_link {
            raw_link = Some(l);
        }
        let mut xattrs = Vec::new();
        for (k, v) in p.pax.unwrap_or_default() {
            match k.as_slice() {
                // Two names for one entry would let two readers see two
                // different archives: refuse instead of picking one.
                b"path" if had_long_name => {
                    return Err(ArchiveError::format("entry has both a PAX path and a GNU long name"));
                }
                b"linkpath" if had_long_link => {
                    return Err(ArchiveError::format("entry has both a PAX linkpath and a GNU long link"));
                }
                b"path" => raw_path = v,
                b"linkpath" => raw_link = Some(v),
                b"size" if pax::parse_u64(&v) != Some(size) => {
                    return Err(ArchiveError::format("PAX size disagrees with the header size"));
                }
                b"uid" => uid = pax::parse_u64(&v).ok_or_else(|| ArchiveError::format("bad PAX uid"))?,
                b"gid" => gid = pax::parse_u64(&v).ok_or_else(|| ArchiveError::format("bad PAX gid"))?,
                b"mtime" => {
                    mtime = pax::parse_time(&v).ok_or_else(|| ArchiveError::format("bad PAX mtime"))?;
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(ArchiveError::typ(&raw_path, "GNU sparse files are not supported"));
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    xattrs.push((k[b"SCHILY.xattr.".len()..].to_vec(), v));
                }
                // atime, ctime, uname, gname, comment, charset, SCHILY.dev…:
                // nothing that changes what the entry is.
                _ => {}
            }
        }
        let kind = match h.entry_type().as_byte() {
            b'0' | 0 | b'7' => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDev,
            b'4' => EntryKind::BlockDev,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'S' => {
                return Err(ArchiveError::typ(&raw_path, "GNU sparse files are not supported"));
            }
            _ => return Err(ArchiveError::typ(&raw_path, "unknown entry type")),
        };
        if kind != EntryKind::File && size != 0 {
            return Err(ArchiveError::format(format!(
                "entry `{}` is not a regular file but carries data",
                escape_name(&raw_path)
            )));
        }
        let device = if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev) {
            // An unset (all NUL) field means 0, as GNU tar reads it.
            let blank = |r: std::ops::Range<usize>| h.as_bytes()[r].iter().all(|b| *b == 0);
            let maj = if blank(329..337) { Some(0) } else { h.device_major().map_err(|e| fmt("device major", e))? };
            let min = if blank(337..345) { Some(0) } else { h.device_minor().map_err(|e| fmt("device minor", e))? };
            Some((maj.unwrap_or(0), min.unwrap_or(0)))
        } else {
            None
        };
        let path = self.normalise(&raw_path, kind == EntryKind::Dir).map_err(|r| ArchiveError::path(&raw_path, r))?;
        Ok(Item {
            path,
            kind,
            size,
            mode: mode & 0o7777,
            uid,
            gid,
            mtime,
            link: match kind {
                EntryKind::Symlink | EntryKind::HardLink => Some(raw_link.unwrap_or_default()),
                _ => None,
            },
            xattrs,
            device,
        })
    }

    /// Records `name` in `parent` for the case-fold/NFC collision check.
    fn fold_check(&mut self, parent: &[u8], name: &[u8], full: &[u8]) -> Result<(), ArchiveError> {
        if !self.policy.strict_names {
            return Ok(());
        }
        let mut key = parent.to_vec();
        key.push(0);
        key.extend_from_slice(&fold_key(name));
        match self.folded.get(&key) {
            Some(existing) if existing.as_slice() != name => Err(ArchiveError::dup(
                full,
                "collides with another name in its directory after case folding and NFC normalisation",
            )),
            Some(_) => Ok(()),
            None => {
                self.folded.insert(key, name.to_vec());
                Ok(())
            }
        }
    }

    /// Checks an entry against everything seen so far and records it;
    /// returns the parent directories that must be created first.
    fn admit(&mut self, item: &mut Item) -> Result<Vec<Vec<u8>>, ArchiveError> {
        let pol = self.policy;
        // Links first: a refused link is a link problem even if its name
        // would also collide.
        match item.kind {
            EntryKind::Symlink => {
                let target = item.link.as_deref().unwrap_or_default();
                let what = |r| ArchiveError::link(&item.path, r);
                if pol.symlinks == SymlinkPolicy::Reject {
                    return Err(what("symlinks are not allowed by the policy"));
                }
                if target.is_empty() {
                    return Err(what("empty symlink target"));
                }
                if target.contains(&0) {
                    return Err(what("NUL byte in symlink target"));
                }
                if target.len() > 4095 {
                    return Err(what("symlink target longer than PATH_MAX"));
                }
                if pol.strict_names && check_strict(target).is_err() {
                    return Err(what("symlink target with control characters or invalid UTF-8"));
                }
                if pol.symlinks == SymlinkPolicy::InTree {
                    if target[0] == b'/' {
                        return Err(what("absolute symlink target"));
                    }
                    let (parent, _) = parent_of(&item.path);
                    let mut depth = if parent.is_empty() { 0usize } else { parent.split(|b| *b == b'/').count() };
                    if item.path.is_empty() {
                        return Err(what("the root cannot be a symlink"));
                    }
                    for c in target.split(|b| *b == b'/') {
                        match c {
                            b"" | b"." => {}
                            b".." => {
                                depth = depth.checked_sub(1).ok_or_else(|| what("symlink target leaves the tree"))?;
                            }
                            _ => depth += 1,
                        }
                    }
                }
            }
            EntryKind::HardLink => {
                let raw = item.link.clone().unwrap_or_default();
                if !pol.hardlinks {
                    return Err(ArchiveError::link(&item.path, "hard links are not allowed by the policy"));
                }
                let target = self
                    .normalise(&raw, false)
                    .map_err(|_| ArchiveError::link(&raw, "hard link target is not a safe relative path"))?;
                if self.nodes.get(&target) != Some(&Node::File) {
                    return Err(ArchiveError::link(
                        &raw,
                        "hard link target is not a regular file extracted earlier from this archive",
                    ));
                }
                item.link = Some(target);
            }
            EntryKind::CharDev | EntryKind::BlockDev | EntryKind::Fifo if !pol.devices => {
                return Err(ArchiveError::typ(&item.path, "devices and FIFOs are not allowed by the policy"));
            }
            _ => {}
        }
        if item.kind == EntryKind::File && item.size > pol.max_file_bytes {
            return Err(ArchiveError::limit(format!(
                "file `{}` larger than max_file_bytes ({} bytes)",
                escape_name(&item.path),
                pol.max_file_bytes
            )));
        }

        if item.path.is_empty() {
            if item.kind != EntryKind::Dir {
                return Err(ArchiveError::path(b".", "the root entry must be a directory"));
            }
            if self.root_seen {
                return Err(ArchiveError::dup(b".", "second entry for the root directory"));
            }
            self.root_seen = true;
            return Ok(Vec::new());
        }

        let mut implicit = Vec::new();
        let mut end = 0usize;
        let path = item.path.clone();
        // Sorted archives put siblings together: when the parent is the
        // one just checked, every prefix is already known to be a directory
        // (a node never changes type once recorded).
        let (parent, _) = parent_of(&path);
        if !parent.is_empty() && parent == self.last_parent.as_slice() {
            end = path.len();
        }
        while let Some(off) = path[end..].iter().position(|b| *b == b'/') {
            let dir = &path[..end + off];
            match self.nodes.get(dir) {
                Some(Node::Dir { .. }) => {}
                Some(Node::Symlink) => {
                    return Err(ArchiveError::link(
                        &path,
                        "a parent of this entry is a symlink (writes never go through links)",
                    ));
                }
                Some(_) => {
                    return Err(ArchiveError::dup(&path, "a parent of this entry is not a directory"));
                }
                None => {
                    let (pp, name) = parent_of(dir);
                    self.fold_check(pp, name, dir)?;
                    self.nodes.insert(dir.to_vec(), Node::Dir { explicit: false });
                    implicit.push(dir.to_vec());
                }
            }
            end += off + 1;
        }
        self.last_parent = parent.to_vec();
        let node = match item.kind {
            EntryKind::Dir => Node::Dir { explicit: true },
            EntryKind::File | EntryKind::HardLink => Node::File,
            EntryKind::Symlink => Node::Symlink,
            _ => Node::Special,
        };
        match self.nodes.get(&path) {
            Some(Node::Dir { explicit: false }) if node == (Node::Dir { explicit: true }) => {
                self.nodes.insert(path, node);
            }
            Some(_) => {
                return Err(ArchiveError::dup(&path, "an entry with this name came earlier in the archive"));
            }
            None => {
                let (pp, name) = parent_of(&path);
                self.fold_check(pp, name, &path)?;
                if item.kind == EntryKind::Symlink {
                    self.symlinks.push((path.clone(), item.link.clone().unwrap_or_default()));
                }
                self.nodes.insert(path, node);
            }
        }
        Ok(implicit)
    }

    /// Final checks that need the whole archive: under `InTree`, every
    /// symlink is resolved through the archive's other symlinks and must
    /// stay inside the tree (a lexical check per link misses `a -> b/..`
    /// when `b` is itself a link to `..`).
    fn finish(&self) -> Result<(), ArchiveError> {
        if self.policy.symlinks != SymlinkPolicy::InTree || self.symlinks.is_empty() {
            return Ok(());
        }
        let targets: HashMap<&[u8], &[u8]> = self.symlinks.iter().map(|(p, t)| (p.as_slice(), t.as_slice())).collect();
        // Work budget for the whole archive, so a crafted set of long,
        // chained targets cannot turn this check into a hang.
        let mut budget: u64 = 32 << 20;
        for (path, target) in &self.symlinks {
            let err = |r| ArchiveError::link(path, r);
            let (parent, _) = parent_of(path);
            // `cur` is the resolved path so far; `lens` where each
            // component starts, to pop it.
            let mut cur: Vec<u8> = parent.to_vec();
            let mut lens: Vec<usize> = Vec::new();
            if !parent.is_empty() {
                let mut at = 0;
                for c in parent.split(|b| *b == b'/') {
                    lens.push(at);
                    at += c.len() + 1;
                }
            }
            let mut queue: VecDeque<&[u8]> = target.split(|b| *b == b'/').collect();
            let mut hops = 0;
            while let Some(c) = queue.pop_front() {
                budget = budget.checked_sub(1).ok_or_else(|| {
                    ArchiveError::limit("symlink targets too complex to check (resolution work budget)")
                })?;
                match c {
                    b"" | b"." => {}
                    b".." => match lens.pop() {
                        Some(start) => cur.truncate(start.saturating_sub(1)),
                        None => {
                            return Err(err("symlink resolves outside the tree through other symlinks"));
                        }
                    },
                    _ => {
                        let start = if cur.is_empty() { 0 } else { cur.len() + 1 };
                        if !cur.is_empty() {
                            cur.push(b'/');
                        }
                        cur.extend_from_slice(c);
                        lens.push(start);
                        // Deeper or longer than any entry can be: not a link
                        // of this archive, so only `..` matters from here.
                        if lens.len() > self.policy.max_depth || cur.len() > self.policy.max_path_bytes {
                            continue;
                        }
                        if let Some(t) = targets.get(cur.as_slice()) {
                            hops += 1;
                            if hops > 40 {
                                return Err(err("symlink chain too long (loop?)"));
                            }
                            let start = lens.pop().expect("just pushed");
                            cur.truncate(start.saturating_sub(1));
                            for tc in t.split(|b| *b == b'/').rev() {
                                queue.push_front(tc);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Sinks.

struct ListSink(Vec<ListEntry>);

impl Sink for ListSink {
    fn implicit_dir(&mut self, _path: &[u8]) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn entry(&mut self, item: &Item, _data: &mut dyn Read, _sh: &Shared) -> Result<(), ArchiveError> {
        self.0.push(ListEntry {
            path: item.path.clone(),
            kind: item.kind,
            size: item.size,
            mode: item.mode,
            uid: item.uid,
            gid: item.gid,
            mtime: item.mtime.0,
            mtime_nanos: item.mtime.1,
            link_target: item.link.clone(),
            xattrs: item.xattrs.clone(),
            device: item.device,
        });
        // The data is skipped (and still counted against the limits) by
        // the tar crate when the next entry is read.
        Ok(())
    }
}

/// Metadata applied to a directory at the end.
struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct ExtractSink<'p> {
    policy: &'p ExtractPolicy,
    root: OwnedFd,
    is_root: bool,
    /// The last parent directory opened, by path: archives are sorted, so
    /// consecutive entries usually share it.
    cache: Option<(Vec<u8>, OwnedFd)>,
    dirs: Vec<(Vec<u8>, DirMeta)>,
    dir_index: HashMap<Vec<u8>, usize>,
    root_meta: Option<DirMeta>,
    stats: ExtractStats,
    buf: Vec<u8>,
}

fn wctx(what: &str, path: &[u8]) -> String {
    format!("{what} {}", escape_name(path))
}

fn ts(t: (i64, u32)) -> Timestamps {
    let spec = Timespec { tv_sec: t.0, tv_nsec: i64::from(t.1.min(999_999_999)) };
    Timestamps { last_access: spec, last_modification: spec }
}

impl ExtractSink<'_> {
    fn final_mode(&self, kind: EntryKind, mode: u32) -> u32 {
        let m = mode & 0o7777;
        if !self.policy.preserve_modes {
            return match kind {
                EntryKind::Dir => 0o755,
                _ if m & 0o111 != 0 => 0o755,
                _ => 0o644,
            };
        }
        if self.policy.setuid { m } else { m & 0o777 }
    }

    fn owner(&self, uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
        if !(self.policy.preserve_owner && self.is_root) {
            return None;
        }
        // u32::MAX is "no change" to chown(2), never a real id.
        let uid = u32::try_from(uid).ok().filter(|u| *u != u32::MAX)?;
        let gid = u32::try_from(gid).ok().filter(|g| *g != u32::MAX)?;
        Some((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
    }

    /// The fd of directory `parent` (relative path), opened beneath the
    /// staging root without following links.
    fn parent(&mut self, parent: &[u8]) -> io::Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = open_dir_beneath(self.root.as_fd(), split_path(parent))?;
            self.cache = Some((parent.to_vec(), fd));
        }
        Ok(self.cache.as_ref().expect("just filled").1.as_fd())
    }

    fn apply_xattrs(&self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], path: &[u8]) -> Result<(), ArchiveError> {
        if !self.policy.xattrs {
            return Ok(());
        }
        for (k, v) in xattrs {
            if !k.starts_with(b"user.") || k.contains(&0) {
                tracing::debug!(path = %escape_name(path), name = %escape_name(k), "xattr not applied");
                continue;
            }
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOTSUP) => {
                    tracing::warn!(path = %escape_name(path), "filesystem does not support user xattrs");
                }
                Err(e) => return Err(ArchiveError::io(wctx("setting xattr on", path), e)),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.cache = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest (and later siblings) first: a parent's restrictive mode
        // is set only after everything below it is done.
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, meta) in &dirs {
            let fd = open_dir_beneath(self.root.as_fd(), split_path(path))
                .map_err(|e| ArchiveError::io(wctx("reopening", path), e))?;
            self.dir_meta(fd.as_fd(), meta, path)?;
        }
        let root_meta =
            self.root_meta.take().unwrap_or(DirMeta { mode: 0o755, uid: 0, gid: 0, mtime: None, xattrs: Vec::new() });
        let root = rustix::io::dup(&self.root).map_err(|e| ArchiveError::io("dup", e))?;
        self.dir_meta(root.as_fd(), &root_meta, b".")
    }

    fn dir_meta(&self, fd: BorrowedFd<'_>, meta: &DirMeta, path: &[u8]) -> Result<(), ArchiveError> {
        self.apply_xattrs(fd, &meta.xattrs, path)?;
        if let Some((u, g)) = self.owner(meta.uid, meta.gid) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| ArchiveError::io(wctx("chown", path), e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| ArchiveError::io(wctx("chmod", path), e))?;
        if let Some(t) = meta.mtime {
            rustix::fs::futimens(fd, &ts(t)).map_err(|e| ArchiveError::io(wctx("utimes", path), e))?;
        }
        Ok(())
    }

    fn dir_meta_of(&self, item: &Item) -> DirMeta {
        DirMeta {
            mode: self.final_mode(EntryKind::Dir, item.mode),
            uid: item.uid,
            gid: item.gid,
            mtime: self.policy.mtimes.then_some(item.mtime),
            xattrs: item.xattrs.clone(),
        }
    }

    fn write_file(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError> {
        let (parent, name) = parent_of(&item.path);
        let fd = {
            let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
            rustix::fs::openat(
                pfd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| ArchiveError::io(wctx("creating", &item.path), e))?
        };
        let mut file = std::fs::File::from(fd);
        let mut left = item.size;
        while left > 0 {
            let want = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(ArchiveError::format(format!("truncated data of `{}`", escape_name(&item.path))));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(sh, e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| ArchiveError::io(wctx("writing", &item.path), e))?;
            left -= n as u64;
            self.stats.bytes += n as u64;
        }
        let fd = file.as_fd();
        self.apply_xattrs(fd, &item.xattrs, &item.path)?;
        if let Some((u, g)) = self.owner(item.uid, item.gid) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| ArchiveError::io(wctx("chown", &item.path), e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.final_mode(EntryKind::File, item.mode)))
            .map_err(|e| ArchiveError::io(wctx("chmod", &item.path), e))?;
        if self.policy.mtimes {
            rustix::fs::futimens(fd, &ts(item.mtime)).map_err(|e| ArchiveError::io(wctx("utimes", &item.path), e))?;
        }
        self.stats.files += 1;
        Ok(())
    }

    /// Owner and time of a non-file entry, through its parent fd, never
    /// following the entry itself.
    fn meta_at(&mut self, item: &Item, set_mode: bool) -> Result<(), ArchiveError> {
        let owner = self.owner(item.uid, item.gid);
        let mode = self.final_mode(item.kind, item.mode);
        let mtimes = self.policy.mtimes;
        let (parent, name) = parent_of(&item.path);
        let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
        if let Some((u, g)) = owner {
            rustix::fs::chownat(pfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(wctx("chown", &item.path), e))?;
        }
        if set_mode {
            // Only for FIFOs/devices we just created in a directory only we
            // write to, so following is not a concern (and Linux has no
            // lchmod).
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| ArchiveError::io(wctx("chmod", &item.path), e))?;
        }
        if mtimes {
            rustix::fs::utimensat(pfd, name, &ts(item.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(wctx("utimes", &item.path), e))?;
        }
        Ok(())
    }
}

fn split_path(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

impl Sink for ExtractSink<'_> {
    fn implicit_dir(&mut self, path: &[u8]) -> Result<(), ArchiveError> {
        let (parent, name) = parent_of(path);
        let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", path), e))?;
        rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
            .map_err(|e| ArchiveError::io(wctx("creating directory", path), e))?;
        self.dir_index.insert(path.to_vec(), self.dirs.len());
        self.dirs.push((path.to_vec(), DirMeta { mode: 0o755, uid: 0, gid: 0, mtime: None, xattrs: Vec::new() }));
        Ok(())
    }

    fn entry(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError> {
        self.stats.entries += 1;
        match item.kind {
            EntryKind::Dir if item.path.is_empty() => {
                self.root_meta = Some(self.dir_meta_of(item));
                self.stats.dirs += 1;
            }
            EntryKind::Dir => {
                let meta = self.dir_meta_of(item);
                if let Some(&i) = self.dir_index.get(&item.path) {
                    // Described after a child implied it.
                    self.dirs[i].1 = meta;
                } else {
                    let (parent, name) = parent_of(&item.path);
                    let pfd =
                        self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                    rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| ArchiveError::io(wctx("creating directory", &item.path), e))?;
                    self.dir_index.insert(item.path.clone(), self.dirs.len());
                    self.dirs.push((item.path.clone(), meta));
                }
                self.stats.dirs += 1;
            }
            EntryKind::File => self.write_file(item, data, sh)?,
            EntryKind::Symlink => {
                let target = item.link.as_deref().unwrap_or_default();
                let (parent, name) = parent_of(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                rustix::fs::symlinkat(target, pfd, name)
                    .map_err(|e| ArchiveError::io(wctx("creating symlink", &item.path), e))?;
                self.meta_at(item, false)?;
                self.stats.symlinks += 1;
            }
            EntryKind::HardLink => {
                let target = item.link.as_deref().unwrap_or_default();
                let (tparent, tname) = parent_of(target);
                let tfd = open_dir_beneath(self.root.as_fd(), split_path(tparent))
                    .map_err(|e| ArchiveError::io(wctx("opening parent of", target), e))?;
                let (parent, name) = parent_of(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                // No AT_SYMLINK_FOLLOW: the target was validated as a
                // regular file this archive wrote, and is linked as is.
                rustix::fs::linkat(&tfd, tname, pfd, name, AtFlags::empty())
                    .map_err(|e| ArchiveError::io(wctx("creating hard link", &item.path), e))?;
                self.stats.hardlinks += 1;
            }
            EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => {
                let (ft, dev) = match item.kind {
                    EntryKind::Fifo => (FileType::Fifo, 0),
                    EntryKind::CharDev | EntryKind::BlockDev => {
                        if !self.is_root {
                            return Err(ArchiveError::typ(
                                &item.path,
                                "device nodes can only be restored when running as root",
                            ));
                        }
                        let (maj, min) = item.device.unwrap_or((0, 0));
                        let ft = if item.kind == EntryKind::CharDev {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(maj, min))
                    }
                    _ => unreachable!("matched above"),
                };
                let (parent, name) = parent_of(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| ArchiveError::io(wctx("creating", &item.path), e))?;
                self.meta_at(item, true)?;
                self.stats.other += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(policy: &ExtractPolicy, raw: &[u8]) -> Result<Vec<u8>, &'static str> {
        Validator::new(policy).normalise(raw, true)
    }

    #[test]
    fn normalise_paths() {
        let p = ExtractPolicy::default();
        assert_eq!(v(&p, b"a/b").unwrap(), b"a/b");
        assert_eq!(v(&p, b"./a/b/").unwrap(), b"a/b");
        assert_eq!(v(&p, b"./").unwrap(), b"");
        assert!(v(&p, b"../x").is_err());
        assert!(v(&p, b"a/../x").is_err());
        assert!(v(&p, b"/etc/passwd").is_err());
        assert!(v(&p, b"//x").is_err());
        assert!(v(&p, b"a//b").is_err());
        assert!(v(&p, b"a/./b").is_err());
        assert!(v(&p, b"a\0b").is_err());
        assert!(v(&p, &[b'x'; 256]).is_err());
        assert_eq!(v(&p, b"a\nb\xff").unwrap(), b"a\nb\xff");
        let s = ExtractPolicy::hostile();
        assert!(v(&s, b"a\nb").is_err());
        assert!(v(&s, b"\xff").is_err());
        assert!(v(&s, "a\u{202e}b".as_bytes()).is_err());
        assert!(v(&s, "a\u{85}b".as_bytes()).is_err());
        assert!(v(&s, "日本/é".as_bytes()).is_ok());
    }

    #[test]
    fn fold_keys_collide() {
        assert_eq!(fold_key(b"README"), fold_key(b"readme"));
        assert_eq!(fold_key("\u{e9}".as_bytes()), fold_key("e\u{301}".as_bytes()));
        assert_ne!(fold_key(b"a"), fold_key(b"b"));
    }
}
