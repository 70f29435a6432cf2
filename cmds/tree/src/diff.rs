//! What changed between two manifests: added, removed and changed entries,
//! each change broken down into aspects (type, content, mode, owner,
//! symlink target, device numbers, hard links, and, when asked, mtime and
//! xattrs).
//!
//! Two forms: a stable JSON form (serde; paths, targets and names in the
//! manifest's percent encoding, so any byte survives and nothing needs
//! escaping) for scripts and `--json`, and a human form in which every
//! client-controlled string is escaped with ferry-text: no control or bidi
//! character from a file name ever reaches a terminal.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::manifest::{Entry, Kind, Manifest, encode};

/// What [`diff`] compares besides type, content, mode, owner, target,
/// device numbers and hard links (always compared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compare modification times (off by default: a directory's mtime
    /// changes whenever an entry in it does, which is noise in a report).
    pub mtime: bool,
    /// Compare extended attributes.
    pub xattrs: bool,
}

impl DiffOptions {
    /// Compare every recorded attribute (tests, verification).
    pub fn everything() -> DiffOptions {
        DiffOptions { mtime: true, xattrs: true }
    }
}

/// Owner ids and names, as the JSON form shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// User name (percent-encoded), if recorded.
    pub user: Option<String>,
    /// Group name (percent-encoded), if recorded.
    pub group: Option<String>,
}

impl Owner {
    fn of(e: &Entry) -> Owner {
        Owner { uid: e.uid, gid: e.gid, user: e.user.as_deref().map(encode), group: e.group.as_deref().map(encode) }
    }
}

/// One way an entry changed. Values are strings in the manifest's
/// spelling (`0644`, `1733300000.123456789`, percent-encoded bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "aspect", rename_all = "snake_case")]
pub enum Aspect {
    /// The type changed (then content, target and device numbers are not
    /// compared).
    Type {
        /// Old type (`file`, `directory`, `symlink`, …).
        old: &'static str,
        /// New type.
        new: &'static str,
    },
    /// A regular file's contents changed.
    Content {
        /// Old size.
        old_size: u64,
        /// New size.
        new_size: u64,
        /// Old digest.
        old_sha256: String,
        /// New digest.
        new_sha256: String,
    },
    /// Permission bits.
    Mode {
        /// Old, four octal digits.
        old: String,
        /// New.
        new: String,
    },
    /// Owner or group (ids or names).
    Owner {
        /// Old owner.
        old: Owner,
        /// New owner.
        new: Owner,
    },
    /// A symlink's target.
    Target {
        /// Old target, percent-encoded.
        old: String,
        /// New target.
        new: String,
    },
    /// A device's numbers.
    Rdev {
        /// Old `major:minor`.
        old: String,
        /// New.
        new: String,
    },
    /// The other names of the entry's inode within the tree.
    Links {
        /// Old other names, percent-encoded, sorted.
        old: Vec<String>,
        /// New other names.
        new: Vec<String>,
    },
    /// Modification time (only with [`DiffOptions::mtime`]).
    Mtime {
        /// Old `seconds.nanoseconds`.
        old: String,
        /// New.
        new: String,
    },
    /// Extended attributes (only with [`DiffOptions::xattrs`]).
    Xattrs {
        /// Old `[name, value]` pairs, both percent-encoded.
        old: Vec<(String, String)>,
        /// New.
        new: Vec<(String, String)>,
    },
}

/// Added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum What {
    /// Only in the newer manifest.
    Added {
        /// Its type.
        #[serde(rename = "type")]
        kind: &'static str,
    },
    /// Only in the older manifest.
    Removed {
        /// Its type.
        #[serde(rename = "type")]
        kind: &'static str,
    },
    /// In both, different.
    Changed {
        /// How.
        aspects: Vec<Aspect>,
    },
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path, percent-encoded in JSON.
    #[serde(serialize_with = "ser_path")]
    pub path: Vec<u8>,
    /// What happened to it.
    #[serde(flatten)]
    pub what: What,
}

fn ser_path<S: serde::Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(p))
}

/// Every change from one manifest to another, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// The changes.
    pub changes: Vec<Change>,
}

/// How a path is shown to people: escaped, never cut (a path is at most
/// 4095 bytes, and its escape at most ten characters per byte).
fn show(b: &[u8]) -> String {
    ferry_text::escape_bytes(b, 65536)
}

impl Diff {
    /// No differences.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// (added, removed, changed) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in &self.changes {
            match ch.what {
                What::Added { .. } => c.0 += 1,
                What::Removed { .. } => c.1 += 1,
                What::Changed { .. } => c.2 += 1,
            }
        }
        c
    }

    /// The stable JSON form: `{"changes": [{"path": …, "change":
    /// "added"|"removed"|"changed", "type"|"aspects": …}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a diff always serialises")
    }

    /// One line per change, every client string escaped:
    /// `+ file a/new`, `- directory old`, `~ a/f: mode 0644 -> 0755; …`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let path = show(&c.path);
            let _ = match &c.what {
                What::Added { kind } => writeln!(out, "+ {kind} {path}"),
                What::Removed { kind } => writeln!(out, "- {kind} {path}"),
                What::Changed { aspects } => {
                    let parts: Vec<String> = aspects.iter().map(describe).collect();
                    writeln!(out, "~ {path}: {}", parts.join("; "))
                }
            };
        }
        out
    }
}

/// The human form of one aspect (values decoded, then escaped).
fn describe(a: &Aspect) -> String {
    let dec = |s: &str| show(&crate::manifest::decode(s).unwrap_or_else(|| s.as_bytes().to_vec()));
    let owner = |o: &Owner| {
        let name = |n: &Option<String>| n.as_deref().map(dec).unwrap_or_else(|| "?".into());
        format!("{}:{} ({}:{})", o.uid, o.gid, name(&o.user), name(&o.group))
    };
    let list = |v: &[String]| v.iter().map(|s| dec(s)).collect::<Vec<_>>().join(", ");
    match a {
        Aspect::Type { old, new } => format!("type {old} -> {new}"),
        Aspect::Content { old_size, new_size, old_sha256, new_sha256 } => format!(
            "content {old_size} bytes {} -> {new_size} bytes {}",
            &old_sha256[..12.min(old_sha256.len())],
            &new_sha256[..12.min(new_sha256.len())]
        ),
        Aspect::Mode { old, new } => format!("mode {old} -> {new}"),
        Aspect::Owner { old, new } => format!("owner {} -> {}", owner(old), owner(new)),
        Aspect::Target { old, new } => format!("target {} -> {}", dec(old), dec(new)),
        Aspect::Rdev { old, new } => format!("device {old} -> {new}"),
        Aspect::Links { old, new } => format!("hard links [{}] -> [{}]", list(old), list(new)),
        Aspect::Mtime { old, new } => format!("mtime {old} -> {new}"),
        Aspect::Xattrs { old, new } => {
            let x = |v: &[(String, String)]| {
                v.iter().map(|(k, v)| format!("{}={}", dec(k), dec(v))).collect::<Vec<_>>().join(", ")
            };
            format!("xattrs [{}] -> [{}]", x(old), x(new))
        }
    }
}

/// The other names of each hard-linked entry, by path.
fn link_peers(m: &Manifest) -> HashMap<&[u8], Vec<String>> {
    let mut groups: HashMap<u64, Vec<&[u8]>> = HashMap::new();
    for e in &m.entries {
        if let Some(g) = e.link {
            groups.entry(g).or_default().push(&e.path);
        }
    }
    let mut out = HashMap::new();
    for members in groups.values() {
        for p in members {
            let mut others: Vec<String> = members.iter().filter(|o| *o != p).map(|o| encode(o)).collect();
            others.sort();
            out.insert(*p, others);
        }
    }
    out
}

fn kind_name(e: &Entry) -> &'static str {
    e.kind.name()
}

/// The differences from `old` to `new`.
pub fn diff(old: &Manifest, new: &Manifest, opts: &DiffOptions) -> Diff {
    let (lo, ln) = (link_peers(old), link_peers(new));
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.entries.len() || j < new.entries.len() {
        let ord = match (old.entries.get(i), new.entries.get(j)) {
            (Some(a), Some(b)) => a.path.cmp(&b.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let a = &old.entries[i];
                changes.push(Change { path: a.path.clone(), what: What::Removed { kind: kind_name(a) } });
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let b = &new.entries[j];
                changes.push(Change { path: b.path.clone(), what: What::Added { kind: kind_name(b) } });
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (&old.entries[i], &new.entries[j]);
                let empty = Vec::new();
                let peers = (lo.get(a.path.as_slice()).unwrap_or(&empty), ln.get(b.path.as_slice()).unwrap_or(&empty));
                let aspects = compare(a, b, peers, opts);
                if !aspects.is_empty() {
                    changes.push(Change { path: a.path.clone(), what: What::Changed { aspects } });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Diff { changes }
}

fn compare(a: &Entry, b: &Entry, peers: (&Vec<String>, &Vec<String>), opts: &DiffOptions) -> Vec<Aspect> {
    let mut out = Vec::new();
    match (&a.kind, &b.kind) {
        (Kind::File { size: s1, sha256: h1 }, Kind::File { size: s2, sha256: h2 }) if (s1, h1) != (s2, h2) => {
            out.push(Aspect::Content {
                old_size: *s1,
                new_size: *s2,
                old_sha256: h1.to_hex(),
                new_sha256: h2.to_hex(),
            });
        }
        (Kind::Symlink { target: t1 }, Kind::Symlink { target: t2 }) if t1 != t2 => {
            out.push(Aspect::Target { old: encode(t1), new: encode(t2) });
        }
        (Kind::CharDev(r1), Kind::CharDev(r2)) | (Kind::BlockDev(r1), Kind::BlockDev(r2)) if r1 != r2 => {
            out.push(Aspect::Rdev {
                old: format!("{}:{}", r1.major, r1.minor),
                new: format!("{}:{}", r2.major, r2.minor),
            });
        }
        (k1, k2) if std::mem::discriminant(k1) != std::mem::discriminant(k2) => {
            out.push(Aspect::Type { old: k1.name(), new: k2.name() });
        }
        _ => {}
    }
    if a.mode != b.mode {
        out.push(Aspect::Mode { old: format!("{:04o}", a.mode), new: format!("{:04o}", b.mode) });
    }
    if (a.uid, a.gid, &a.user, &a.group) != (b.uid, b.gid, &b.user, &b.group) {
        out.push(Aspect::Owner { old: Owner::of(a), new: Owner::of(b) });
    }
    if peers.0 != peers.1 {
        out.push(Aspect::Links { old: peers.0.clone(), new: peers.1.clone() });
    }
    if opts.mtime && a.mtime != b.mtime {
        out.push(Aspect::Mtime { old: a.mtime.to_string(), new: b.mtime.to_string() });
    }
    if opts.xattrs && a.xattrs != b.xattrs {
        let show = |v: &[(Vec<u8>, Vec<u8>)]| v.iter().map(|(k, v)| (encode(k), encode(v))).collect();
        out.push(Aspect::Xattrs { old: show(&a.xattrs), new: show(&b.xattrs) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Mtime, Options, Sha256};

    fn e(path: &[u8], kind: Kind) -> Entry {
        Entry {
            path: path.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: Some(b"root".to_vec()),
            group: Some(b"root".to_vec()),
            mtime: Mtime { sec: 1, nsec: 0 },
            link: None,
            xattrs: Vec::new(),
        }
    }

    fn f(path: &[u8], data: &[u8]) -> Entry {
        e(path, Kind::File { size: data.len() as u64, sha256: Sha256::of(data) })
    }

    fn m(entries: Vec<Entry>) -> Manifest {
        Manifest { options: Options { xattrs: true }, entries }
    }

    #[test]
    fn added_removed_and_each_aspect() {
        let mut moved = f(b"mode", b"x");
        moved.mode = 0o755;
        let mut owned = f(b"owner", b"x");
        (owned.uid, owned.user) = (1000, Some(b"bob".to_vec()));
        let mut timed = f(b"time", b"x");
        timed.mtime.nsec = 5;
        let mut tagged = f(b"xattr", b"x");
        tagged.xattrs = vec![(b"user.a=b".to_vec(), b"v".to_vec())];
        let old = m(vec![
            f(b"content", b"old"),
            f(b"gone", b"x"),
            f(b"linked", b"x"),
            f(b"mode", b"x"),
            f(b"owner", b"x"),
            e(b"sym", Kind::Symlink { target: b"a".to_vec() }),
            f(b"time", b"x"),
            f(b"type", b"x"),
            f(b"xattr", b"x"),
        ]);
        let mut l1 = f(b"linked", b"x");
        l1.link = Some(1);
        let mut l2 = f(b"linked2", b"x");
        l2.link = Some(1);
        let new = m(vec![
            f(b"content", b"new!"),
            l1,
            l2,
            moved,
            owned,
            e(b"sym", Kind::Symlink { target: b"b".to_vec() }),
            timed,
            e(b"type", Kind::Dir),
            tagged,
        ]);
        let quiet = diff(&old, &new, &DiffOptions::default());
        let all = diff(&old, &new, &DiffOptions::everything());
        assert_eq!(quiet.counts(), (1, 1, 6), "{}", quiet.to_text());
        assert_eq!(all.counts(), (1, 1, 8), "{}", all.to_text());
        let text = all.to_text();
        for want in [
            "- file gone\n",
            "+ file linked2\n",
            "~ linked: hard links [] -> [linked2]\n",
            "~ mode: mode 0644 -> 0755\n",
            "~ owner: owner 0:0 (root:root) -> 1000:0 (bob:root)\n",
            "~ sym: target a -> b\n",
            "~ time: mtime 1.000000000 -> 1.000000005\n",
            "~ type: type file -> directory\n",
            "~ xattr: xattrs [] -> [user.a=b=v]\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.contains("~ content: content 3 bytes "), "{text}");
        assert!(diff(&old, &old, &DiffOptions::everything()).is_empty());
    }

    #[test]
    fn the_json_form_is_stable() {
        let mut b = f(b"a b", b"2");
        b.mode = 0o600;
        let d =
            diff(&m(vec![f(b"a b", b"1"), f(b"old\xff", b"")]), &m(vec![b, f(b"new", b"")]), &DiffOptions::default());
        let want = serde_json::json!({"changes": [
            {"path": "a%20b", "change": "changed", "aspects": [
                {"aspect": "content", "old_size": 1, "new_size": 1,
                 "old_sha256": Sha256::of(b"1").to_hex(), "new_sha256": Sha256::of(b"2").to_hex()},
                {"aspect": "mode", "old": "0644", "new": "0600"}
            ]},
            {"path": "new", "change": "added", "type": "file"},
            {"path": "old%FF", "change": "removed", "type": "file"}
        ]});
        assert_eq!(d.to_json(), want);
    }

    #[test]
    fn the_human_form_never_carries_raw_controls_or_bidi() {
        let evil = "x\u{202e}gpj.exe\n\u{1b}[2J".as_bytes();
        let mut b = e(evil, Kind::Symlink { target: b"\x1b]52;c;AAAA\x07".to_vec() });
        b.user = Some("\u{200f}root".as_bytes().to_vec());
        let d = diff(&m(vec![e(evil, Kind::Symlink { target: b"t".to_vec() })]), &m(vec![b]), &DiffOptions::default());
        let text = d.to_text();
        assert!(text.lines().count() == 1, "{text}");
        assert!(text.trim_end().bytes().all(|c| (0x20..0x7f).contains(&c)), "{text:?}");
        assert!(text.contains(r"x\u{202E}gpj.exe\n\x1B[2J"), "{text}");
        assert!(text.contains(r"\u{200F}root"), "{text}");
    }
}
