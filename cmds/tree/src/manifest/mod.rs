//! The manifest: what a snapshot tree holds, as one versioned, line-oriented
//! text of printable ASCII.
//!
//! The client writes it (from [`crate::scan`]); the node reads it as
//! **hostile input** and builds the snapshot from it; `diff` compares two of
//! them; an administrator may read one in a terminal or a diff tool. Hence:
//! one strict grammar, one way to write every manifest (so
//! `parse(write(m)) == m` and `write(parse(t)) == t` byte for byte), and a
//! parser that rejects instead of repairing, with a typed [`Refusal`] and a
//! line number for every rejection.
//!
//! # Grammar
//!
//! ```text
//! manifest = header option* entry* trailer
//! header   = "ferry-tree 1" LF
//! option   = "xattrs 1" LF                      ; xattrs were recorded
//! entry    = type SP fields LF
//! trailer  = "end" SP count SP bytes LF          ; then end of input
//! type     = "f" | "d" | "l" | "p" | "s" | "c" | "b"
//!            ; file, directory, symlink, fifo, socket, char/block device
//! fields   = "path=" enc SP "mode=" mode SP "uid=" dec SP "gid=" dec
//!            [SP "user=" enc] [SP "group=" enc] SP "mtime=" time
//!            ( SP "size=" dec SP "sha256=" hex64   ; f only, required
//!            | SP "target=" enc                    ; l only, required
//!            | SP "rdev=" dec ":" dec )            ; c and b only, required
//!            [SP "link=" dec]                      ; not on d
//!            (SP "xattr=" xname ":" enc)*          ; only with the option
//! mode     = 4 octal digits (permission bits with setuid/setgid/sticky)
//! dec      = "0" | [1-9][0-9]*                      ; no leading zeros
//! time     = ["-"] dec "." 9 digits                 ; seconds.nanoseconds
//! hex64    = 64 lower-case hex digits
//! ```
//!
//! Fields come in exactly this order; a missing, repeated, misplaced or
//! unknown field is refused. `LF` is a single `\n` (no CR), fields are
//! separated by exactly one space, and every byte of a line is printable
//! ASCII (`0x20..=0x7e`).
//!
//! **Values** (`enc`) are raw bytes, percent-encoded: every byte outside
//! `0x21..=0x7e` (so space, controls, DEL and every non-ASCII byte) and
//! `%` itself is written `%XX` with two **upper-case** hex digits; every
//! other byte is written as itself. `=` needs no escape (a field's key ends
//! at its first `=`). In `xattr=` the *name* also escapes `:` (the value
//! starts after the first literal `:`). An escape of a byte that need not
//! be escaped (`%41`, `%2F`) or a lower-case escape is refused, so each
//! value has exactly one spelling. [`encode`] and [`decode`] are the two
//! directions.
//!
//! **Paths** are relative, `/`-separated, raw bytes (Linux names are bytes,
//! not UTF-8), at most [`PATH_MAX`] bytes with components of at most
//! [`NAME_MAX`] bytes; no empty, `.` or `..` component, no NUL, no leading
//! or trailing `/` (so a `/` inside a name, `%2F`, cannot be written). The
//! tree's root has no entry. Entries are sorted strictly by raw path bytes
//! (so no duplicates), and every entry's parent is a `d` entry listed
//! earlier (a path below a symlink, a file or nothing is refused).
//!
//! **Hard links**: names of one inode carry the same `link=<n>`. Groups
//! are numbered 1, 2, … in order of first appearance; a group has at
//! least two members, all of one type, which agree on every field but
//! `path` (they are one inode). Directories never have `link=`.
//!
//! **Trailer**: `end <entries> <bytes>` counts the entry lines and the sum
//! of the `size=` of `f` entries, so a truncated manifest is detected; no
//! byte may follow it.
//!
//! Example:
//!
//! ```text
//! ferry-tree 1
//! d path=etc mode=0755 uid=0 gid=0 user=root group=root mtime=1733300000.000000000
//! f path=etc/motd mode=0644 uid=0 gid=0 user=root group=root mtime=1733300000.123456789 size=12 sha256=… link=1
//! f path=etc/motd%20copy mode=0644 uid=0 gid=0 user=root group=root mtime=1733300000.123456789 size=12 sha256=… link=1
//! l path=etc/x mode=0777 uid=0 gid=0 mtime=1733300000.000000000 target=../motd
//! end 4 24
//! ```
//!
//! # Cost
//!
//! [`Writer`] streams: one line buffer, never the whole text. The parser
//! keeps the entries (the node needs them all), the set of directory paths
//! (for the parent check) and one representative per hard-link group.

pub(crate) mod encode;
mod error;
mod parse;
pub(crate) mod validate;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;

pub use encode::{decode, encode};
pub use error::{ManifestError, ReadError, Refusal};
pub use parse::{parse, read};
pub use write::Writer;

/// The first line of every manifest (format version 1).
pub const HEADER: &str = "ferry-tree 1";

/// Longest path component, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Longest relative path, in bytes (Linux `PATH_MAX` without its NUL).
/// Also the longest symlink target.
pub const PATH_MAX: usize = 4095;

/// Longest user or group name, and longest xattr name, in bytes.
pub const NAME_FIELD_MAX: usize = 255;

/// Largest xattr value, in bytes (Linux `XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 65536;

/// Caps on what a manifest may describe, so a hostile client cannot make
/// the node hold or build more than the administrator allows. Every cap is
/// checked while parsing, at the line that crosses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (lines between the options and the trailer).
    pub max_entries: u64,
    /// Largest sum of regular-file sizes (hard links counted per name).
    pub max_total_bytes: u64,
    /// Longest line, in bytes, without its LF. Paths, targets and xattrs
    /// are bounded on their own; this bounds the memory of one line.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 10_000_000, max_total_bytes: 1 << 44, max_line_bytes: 1 << 20 }
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        use sha2::Digest as _;
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lower-case hex digits (the one spelling the
    /// manifest allows).
    pub fn from_hex(s: &[u8]) -> Option<Sha256> {
        if s.len() != 64 || !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

/// A modification time: seconds since the epoch and nanoseconds (always
/// `0..1_000_000_000`, also before 1970, as in `struct timespec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mtime {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: u32,
}

impl fmt::Display for Mtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

/// Device numbers of a character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rdev {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// An entry's type and what only that type carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Regular file: its size and the SHA-256 of its contents.
    File {
        /// Size in bytes.
        size: u64,
        /// Digest of the contents.
        sha256: Sha256,
    },
    /// Directory.
    Dir,
    /// Symbolic link and its target, verbatim (never followed).
    Symlink {
        /// Raw target bytes.
        target: Vec<u8>,
    },
    /// Named pipe (recorded; created only by a restore that asks).
    Fifo,
    /// Unix socket (recorded only; never created).
    Socket,
    /// Character device (recorded; created only by a root restore that asks).
    CharDev(Rdev),
    /// Block device (as [`Kind::CharDev`]).
    BlockDev(Rdev),
}

impl Kind {
    /// The type letter of the grammar.
    pub fn letter(&self) -> char {
        match self {
            Kind::File { .. } => 'f',
            Kind::Dir => 'd',
            Kind::Symlink { .. } => 'l',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::CharDev(_) => 'c',
            Kind::BlockDev(_) => 'b',
        }
    }

    /// A word for people ("file", "directory", …).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File { .. } => "file",
            Kind::Dir => "directory",
            Kind::Symlink { .. } => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev(_) => "char device",
            Kind::BlockDev(_) => "block device",
        }
    }
}

/// One entry of a manifest. See the module docs for what each field may
/// hold; [`parse`] guarantees it, [`Manifest::check`] re-checks a manifest
/// built in memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Relative path, raw bytes.
    pub path: Vec<u8>,
    /// Type and type-specific data.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0..=0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name on the scanned host, when it had one.
    pub user: Option<Vec<u8>>,
    /// Group name on the scanned host, when it had one.
    pub group: Option<Vec<u8>>,
    /// Modification time.
    pub mtime: Mtime,
    /// Hard-link group (1, 2, … by first appearance), for names that share
    /// an inode within the tree.
    pub link: Option<u64>,
    /// Extended attributes, sorted by name without duplicates (only when
    /// [`Options::xattrs`]).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The regular file's size, 0 for every other type.
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        }
    }

    /// The regular file's digest.
    pub fn sha256(&self) -> Option<&Sha256> {
        match &self.kind {
            Kind::File { sha256, .. } => Some(sha256),
            _ => None,
        }
    }

    /// Whether two names of one hard-link group agree on everything an
    /// inode holds (all fields but `path`).
    pub fn same_inode_data(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.user == other.user
            && self.group == other.group
            && self.mtime == other.mtime
            && self.link == other.link
            && self.xattrs == other.xattrs
    }
}

/// Manifest-wide options (option lines after the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Extended attributes were recorded: an entry without `xattr=` fields
    /// had none (without this option, nothing is known about them).
    pub xattrs: bool,
}

/// A whole manifest in memory: options and entries sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Option lines.
    pub options: Options,
    /// Entries, sorted strictly by raw path bytes.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The canonical text.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 128 + 64);
        self.write_to(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Streams the canonical text to `out`.
    pub fn write_to<W: std::io::Write>(&self, out: W) -> std::io::Result<W> {
        let mut w = Writer::new(out, self.options)?;
        for e in &self.entries {
            w.entry(e)?;
        }
        w.finish()
    }

    /// Runs every check [`parse`] runs on the entries of a manifest built
    /// in memory (defence in depth before building or restoring from it).
    /// The line numbers in an error are those the text would have.
    pub fn check(&self, limits: &Limits) -> Result<(), ManifestError> {
        validate::check(self, limits)
    }

    /// The entry at `path`, if any (binary search).
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_slice().cmp(path)).ok().map(|i| &self.entries[i])
    }

    /// The sum of regular-file sizes (the trailer's second number).
    pub fn total_file_bytes(&self) -> u64 {
        self.entries.iter().map(Entry::size).fold(0u64, u64::saturating_add)
    }
}
