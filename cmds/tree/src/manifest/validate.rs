//! The checks on entries that go beyond the syntax of one line: paths,
//! order, parents, hard-link groups, limits. Shared by the parser and by
//! [`super::Manifest::check`], so a manifest built in memory meets exactly
//! the rules a parsed one does.

use std::collections::HashSet;

use super::{
    Entry, Kind, Limits, Manifest, ManifestError, NAME_FIELD_MAX, NAME_MAX, Options, PATH_MAX, Refusal, XATTR_VALUE_MAX,
};

/// Checks one relative path: length, absolute, NUL, and every component.
pub(crate) fn check_path(path: &[u8]) -> Result<(), Refusal> {
    if path.is_empty() {
        return Err(Refusal::EmptyComponent);
    }
    if path.len() > PATH_MAX {
        return Err(Refusal::PathTooLong);
    }
    if path[0] == b'/' {
        return Err(Refusal::Absolute);
    }
    if path.contains(&0) {
        return Err(Refusal::Nul);
    }
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" => return Err(Refusal::EmptyComponent),
            b"." => return Err(Refusal::DotComponent),
            b".." => return Err(Refusal::DotDot),
            _ if c.len() > NAME_MAX => return Err(Refusal::NameTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// The parent directory of a relative path (empty for the root).
pub(crate) fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

/// What the validator remembers of a hard-link group.
struct Group {
    /// The first member (its `path` is not compared).
    first: Entry,
    first_line: u64,
    members: u64,
}

/// Admits entries one at a time, in manifest order.
pub(crate) struct Validator<'l> {
    limits: &'l Limits,
    options: Options,
    last: Option<Vec<u8>>,
    dirs: HashSet<Vec<u8>>,
    groups: Vec<Group>,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

impl<'l> Validator<'l> {
    pub(crate) fn new(limits: &'l Limits, options: Options) -> Self {
        Validator { limits, options, last: None, dirs: HashSet::new(), groups: Vec::new(), entries: 0, bytes: 0 }
    }

    /// Checks `e` against everything admitted before it and records it.
    pub(crate) fn admit(&mut self, e: &Entry, line: u64) -> Result<(), ManifestError> {
        let err = |r: Refusal, d: &[u8]| ManifestError::new(r, line, d);
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(err(Refusal::TooManyEntries, format!("limit {}", self.limits.max_entries).as_bytes()));
        }
        check_path(&e.path).map_err(|r| err(r, &e.path))?;
        if let Some(last) = &self.last {
            match e.path.as_slice().cmp(last) {
                std::cmp::Ordering::Equal => return Err(err(Refusal::Duplicate, &e.path)),
                std::cmp::Ordering::Less => return Err(err(Refusal::Unsorted, &e.path)),
                std::cmp::Ordering::Greater => {}
            }
        }
        let parent = parent_of(&e.path);
        if !parent.is_empty() && !self.dirs.contains(parent) {
            return Err(err(Refusal::ParentNotDir, &e.path));
        }
        check_values(e, self.options).map_err(|(r, d)| err(r, d.as_bytes()))?;
        self.bytes = self.bytes.saturating_add(e.size());
        if self.bytes > self.limits.max_total_bytes {
            return Err(err(Refusal::TooManyBytes, format!("limit {} bytes", self.limits.max_total_bytes).as_bytes()));
        }
        if let Some(n) = e.link {
            self.admit_link(e, n, line)?;
        }
        if e.kind == Kind::Dir {
            self.dirs.insert(e.path.clone());
        }
        match &mut self.last {
            Some(last) => {
                last.clear();
                last.extend_from_slice(&e.path);
            }
            None => self.last = Some(e.path.clone()),
        }
        Ok(())
    }

    fn admit_link(&mut self, e: &Entry, n: u64, line: u64) -> Result<(), ManifestError> {
        if e.kind == Kind::Dir {
            return Err(ManifestError::new(Refusal::LinkMixedTypes, line, "a directory cannot be hard-linked"));
        }
        let known = self.groups.len() as u64;
        if n == known + 1 {
            self.groups.push(Group { first: e.clone(), first_line: line, members: 1 });
            return Ok(());
        }
        if n == 0 || n > known + 1 {
            return Err(ManifestError::new(
                Refusal::LinkNumbering,
                line,
                format!("link={n} but the next new group is {}", known + 1),
            ));
        }
        let g = &mut self.groups[(n - 1) as usize];
        if std::mem::discriminant(&g.first.kind) != std::mem::discriminant(&e.kind) {
            return Err(ManifestError::new(
                Refusal::LinkMixedTypes,
                line,
                format!(
                    "link={n}: a {} joins a group of {}s (line {})",
                    e.kind.name(),
                    g.first.kind.name(),
                    g.first_line
                ),
            ));
        }
        if !g.first.same_inode_data(e) {
            return Err(ManifestError::new(
                Refusal::LinkDisagree,
                line,
                format!("link={n}: differs from the group's first member (line {})", g.first_line),
            ));
        }
        g.members += 1;
        Ok(())
    }

    /// The checks that need the whole manifest: every group links two
    /// names or more. Returns the trailer's counts.
    pub(crate) fn finish(&self) -> Result<(u64, u64), ManifestError> {
        if let Some((i, g)) = self.groups.iter().enumerate().find(|(_, g)| g.members < 2) {
            return Err(ManifestError::new(
                Refusal::LinkSingle,
                g.first_line,
                format!("link={} names only this entry", i + 1),
            ));
        }
        Ok((self.entries, self.bytes))
    }
}

/// A name-like value: 1..=`max` bytes, no NUL.
fn check_name(what: &str, v: &[u8], max: usize) -> Result<(), (Refusal, String)> {
    if v.contains(&0) {
        return Err((Refusal::Nul, format!("NUL in {what}")));
    }
    if v.is_empty() || v.len() > max {
        return Err((Refusal::Value, format!("{what} must be 1 to {max} bytes")));
    }
    Ok(())
}

/// Per-entry value rules the syntax alone does not express.
fn check_values(e: &Entry, options: Options) -> Result<(), (Refusal, String)> {
    if e.mode > 0o7777 {
        return Err((Refusal::Value, "mode above 7777".into()));
    }
    if e.mtime.nsec >= 1_000_000_000 {
        return Err((Refusal::Value, "nanoseconds above 999999999".into()));
    }
    if let Some(u) = &e.user {
        check_name("user", u, NAME_FIELD_MAX)?;
    }
    if let Some(g) = &e.group {
        check_name("group", g, NAME_FIELD_MAX)?;
    }
    if let Kind::Symlink { target } = &e.kind {
        check_name("symlink target", target, PATH_MAX)?;
    }
    if !e.xattrs.is_empty() && !options.xattrs {
        return Err((Refusal::Field, "xattr field without the xattrs option".into()));
    }
    for (i, (k, v)) in e.xattrs.iter().enumerate() {
        check_name("xattr name", k, NAME_FIELD_MAX)?;
        if v.len() > XATTR_VALUE_MAX {
            return Err((Refusal::Value, format!("xattr value above {XATTR_VALUE_MAX} bytes")));
        }
        if i > 0 && e.xattrs[i - 1].0 >= *k {
            return Err((Refusal::Value, "xattrs not sorted strictly by name".into()));
        }
    }
    Ok(())
}

/// [`super::Manifest::check`].
pub(crate) fn check(m: &Manifest, limits: &Limits) -> Result<(), ManifestError> {
    let first_line = 2 + u64::from(m.options.xattrs);
    let mut v = Validator::new(limits, m.options);
    for (i, e) in m.entries.iter().enumerate() {
        v.admit(e, first_line + i as u64)?;
    }
    v.finish().map(|_| ())
}
