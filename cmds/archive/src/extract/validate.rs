//! What an archive entry may be, decided before anything is written
//! (steps 4 and 5 of the pipeline): extension records under their size cap,
//! then each entry's name (only normal components, length and depth caps,
//! optional strict names and case-fold/NFC collisions), type, links,
//! duplicates and limits, as the [`ExtractPolicy`] says. The validator
//! only decides; the writer (`write`) and the listing (`list`) take what
//! it admits.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};

use unicode_normalization::UnicodeNormalization;

use super::policy::{ExtractPolicy, SymlinkPolicy};
use super::stream::{Shared, read_err};
use crate::error::{ArchiveError, escape_name};
use crate::fsutil::split_last;
use crate::pax;

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

/// One archive entry after extension records were applied.
pub(super) struct Item {
    pub(super) path: Vec<u8>,
    pub(super) kind: EntryKind,
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: (i64, u32),
    pub(super) link: Option<Vec<u8>>,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) device: Option<(u32, u32)>,
}

/// GNU long-name/long-link and PAX records read for the next entry, and
/// their bytes so far (capped by `max_ext_header_bytes`).
#[derive(Default)]
pub(super) struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    bytes: u64,
}

impl Pending {
    /// Records are waiting for an entry.
    pub(super) fn holds_records(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }
}

/// Reads one GNU long-name/long-link or PAX record into `pending`, its
/// size checked against `max_ext_header_bytes` before it is read.
pub(super) fn read_extension(
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

/// Checks each entry against the policy and every entry before it.
pub(super) struct Validator<'p> {
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
    pub(super) fn new(policy: &'p ExtractPolicy) -> Self {
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
        let path = comps.join(&b'/');
        if path.len() > p.max_path_bytes {
            return Err("path longer than max_path_bytes");
        }
        Ok(path)
    }

    /// Builds an [`Item`] from a header and the extension records before it.
    pub(super) fn item(&mut self, h: &tar::Header, size: u64, p: Pending) -> Result<Item, ArchiveError> {
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
    pub(super) fn admit(&mut self, item: &mut Item) -> Result<Vec<Vec<u8>>, ArchiveError> {
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
                    let (parent, _) = split_last(&item.path);
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
        let (parent, _) = split_last(&path);
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
                    let (pp, name) = split_last(dir);
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
                let (pp, name) = split_last(&path);
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
    pub(super) fn finish(&self) -> Result<(), ArchiveError> {
        if self.policy.symlinks != SymlinkPolicy::InTree || self.symlinks.is_empty() {
            return Ok(());
        }
        let targets: HashMap<&[u8], &[u8]> = self.symlinks.iter().map(|(p, t)| (p.as_slice(), t.as_slice())).collect();
        // Work budget for the whole archive, so a crafted set of long,
        // chained targets cannot turn this check into a hang.
        let mut budget: u64 = 32 << 20;
        for (path, target) in &self.symlinks {
            let err = |r| ArchiveError::link(path, r);
            let (parent, _) = split_last(path);
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
