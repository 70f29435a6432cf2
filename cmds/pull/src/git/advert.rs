//! What the client's repository advertises, checked before anything is
//! fetched (SECURITY RE, issue 16 point 3).
//!
//! The ref limit used to be checked after the fetch had written every ref
//! and its reflog: a repository with a million branches made the node
//! create millions of files before it was refused. Now the advertisement
//! is checked while it arrives, before git asks for a single object:
//!
//! * over ssh, inside the fetch's own connection: git's `core.sshCommand`
//!   is [`super::guard`], which relays ssh and reads the advertisement on
//!   its way to git ([`Checker`]), stopping the connection before git sees
//!   its end when it crosses a limit — no second round trip;
//! * otherwise (`git://`), by a `git ls-remote` before the fetch ([`list`]),
//!   same hardened git, same transport, same deadline, its output parsed
//!   while it streams.
//!
//! Either way the node keeps what was advertised (a [`record`] file for the
//! guard), and the fetch is checked against it afterwards: a ref git
//! silently left behind (a shallow client) fails the job instead of being
//! reported as done.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use ferry_request::Reason;
use ferry_run::Cmd;

use super::failure;
use crate::PullError;

/// Longest ref name (`refs/heads/…`) a mirror takes. git itself sets no
/// limit, but every ref is a file below the mirror (and a reflog, and
/// later perhaps a backup ref) whose path must fit in `PATH_MAX`.
pub const MAX_REF_NAME: usize = 1024;

/// Longest path component of a ref name: `NAME_MAX` (255) less the
/// `.lock` suffix git needs beside every loose ref it writes. A longer
/// component fails the fetch with "File name too long" on the node.
pub const MAX_REF_COMPONENT: usize = 250;

/// Branches and tags of a remote, `refs/heads/…` or `refs/tags/…` → the
/// object id it advertises (lower-case hex).
pub type Advertised = BTreeMap<String, String>;

/// A ref name the node cannot store, as a sentence; `None` if it fits.
pub fn name_over_limit(name: &str) -> Option<String> {
    let shown = || ferry_text::escape(name, 80);
    if name.len() > MAX_REF_NAME {
        return Some(format!(
            "the ref name {} is {} bytes long, more than the limit of {MAX_REF_NAME}",
            shown(),
            name.len()
        ));
    }
    let longest = name.split('/').map(str::len).max().unwrap_or(0);
    if longest > MAX_REF_COMPONENT {
        return Some(format!(
            "the ref name {} has a path component of {longest} bytes, more than the limit of {MAX_REF_COMPONENT}",
            shown()
        ));
    }
    None
}

/// The limits applied to advertised refs, one at a time, and what passed.
pub struct Checker {
    refs: Advertised,
    max_refs: Option<u64>,
}

impl Checker {
    pub fn new(max_refs: Option<u64>) -> Checker {
        Checker { refs: BTreeMap::new(), max_refs }
    }

    /// One advertised ref: branches and tags are kept (others are not
    /// fetched and do not count), or the limit they cross is returned.
    pub fn add(&mut self, oid: &str, name: &str) -> Result<(), PullError> {
        if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) || name.ends_with("^{}") {
            return Ok(());
        }
        if let Some(msg) = name_over_limit(name) {
            return Err(PullError::new(Reason::FetchLimit, format!("{msg}; nothing was fetched")));
        }
        self.refs.insert(name.to_owned(), oid.to_ascii_lowercase());
        if let Some(max) = self.max_refs
            && self.refs.len() as u64 > max
        {
            return Err(PullError::new(
                Reason::FetchLimit,
                format!(
                    "the repository advertises more than {max} branches and tags, the limit ([limits] max_refs); nothing was fetched"
                ),
            ));
        }
        Ok(())
    }

    pub fn into_refs(self) -> Advertised {
        self.refs
    }
}

/// An object id as git prints it: 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn is_oid(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `ls-remote` output parsed as it arrives, with the limits applied.
struct Listing {
    checker: Checker,
    partial: Vec<u8>,
    /// Why the listing was stopped; the runner kills git when a write fails.
    refused: Option<PullError>,
}

impl Listing {
    fn refuse(&mut self, e: PullError) -> io::Error {
        self.refused = Some(e);
        io::Error::other("refused")
    }

    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let unexpected = || {
            PullError::new(
                Reason::FetchFailed,
                format!("git ls-remote printed an unexpected line: \"{}\"", ferry_text::escape(&text, 120)),
            )
        };
        let Some((oid, name)) = text.split_once('\t') else {
            return Err(self.refuse(unexpected()));
        };
        if !is_oid(oid) {
            return Err(self.refuse(unexpected()));
        }
        match self.checker.add(oid, name) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refuse(e)),
        }
    }
}

impl Write for Listing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            self.line(&line)?;
        }
        self.partial.extend_from_slice(rest);
        // An object id, a TAB and the longest name the node accepts.
        if self.partial.len() > 64 + 1 + MAX_REF_NAME {
            let name = String::from_utf8_lossy(&self.partial[self.partial.len().min(65)..]).into_owned();
            return Err(self.refuse(PullError::new(
                Reason::FetchLimit,
                format!(
                    "the repository advertises a ref name longer than the limit of {MAX_REF_NAME} bytes ({}...); nothing was fetched",
                    ferry_text::escape(&name, 80)
                ),
            )));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run `ls_remote` (a hardened `git ls-remote --refs --heads --tags -- URL`)
/// and return what it lists, or the limit it crossed, or its failure
/// classified like a fetch's.
pub fn list(ls_remote: Cmd, max_refs: Option<u64>) -> Result<Advertised, PullError> {
    let mut listing = Listing { checker: Checker::new(max_refs), partial: Vec::new(), refused: None };
    let ran = ls_remote.run_to(&mut listing);
    if let Some(refused) = listing.refused.take() {
        return Err(refused);
    }
    ran.map_err(|e| failure::from_run(&e, "git ls-remote"))?;
    if !listing.partial.is_empty() {
        let last = std::mem::take(&mut listing.partial);
        listing.line(&last).map_err(|_| listing.refused.take().expect("a refusal"))?;
    }
    Ok(listing.checker.into_refs())
}

/// What the guard saw of a fetch's connection, left in a node-owned file
/// for the node to read once git has finished.
#[derive(Debug)]
pub enum Recorded {
    /// The whole advertisement passed the limits: these branches and tags.
    Refs(Advertised),
    /// The connection was stopped at this limit before git saw the end of
    /// the advertisement.
    Refused(PullError),
}

const RECORD_HEADER: &str = "ferry-advert 1\n";

/// Write the guard's record (whole, then renamed into place, so the node
/// never reads half of one).
pub fn write_record(path: &Path, what: &Recorded) -> io::Result<()> {
    let mut text = String::from(RECORD_HEADER);
    match what {
        Recorded::Refs(refs) => {
            for (name, oid) in refs {
                text.push_str(&format!("ref {oid} {name}\n"));
            }
            text.push_str("end\n");
        }
        Recorded::Refused(e) => {
            text.push_str(&format!("refused {} {}\n", e.reason.code(), ferry_text::escape(&e.message, 2000)));
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The guard's record, if it wrote a complete one.
pub fn read_record(path: &Path) -> Option<Recorded> {
    let text = std::fs::read_to_string(path).ok()?;
    let body = text.strip_prefix(RECORD_HEADER)?;
    if let Some(rest) = body.strip_prefix("refused ") {
        let (code, message) = rest.trim_end_matches('\n').split_once(' ')?;
        return Some(Recorded::Refused(PullError::new(Reason::from_code(code)?, message.to_owned())));
    }
    let mut refs = BTreeMap::new();
    for line in body.lines() {
        if line == "end" {
            return Some(Recorded::Refs(refs));
        }
        let mut f = line.splitn(3, ' ');
        let (Some("ref"), Some(oid), Some(name)) = (f.next(), f.next(), f.next()) else { return None };
        refs.insert(name.to_owned(), oid.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(max: Option<u64>, chunks: &[&[u8]]) -> Result<Advertised, PullError> {
        let mut l = Listing { checker: Checker::new(max), partial: Vec::new(), refused: None };
        for c in chunks {
            if l.write_all(c).is_err() {
                return Err(l.refused.take().unwrap());
            }
        }
        Ok(l.checker.into_refs())
    }

    const A: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn lines_split_across_writes_are_parsed() {
        let refs =
            feed(Some(2), &[format!("{A}\trefs/hea").as_bytes(), format!("ds/main\n{A}\trefs/tags/v1\n").as_bytes()])
                .unwrap();
        assert_eq!(refs.keys().collect::<Vec<_>>(), ["refs/heads/main", "refs/tags/v1"]);
    }

    #[test]
    fn one_ref_over_the_limit_is_refused_at_once() {
        let mut input = String::new();
        for i in 0..4 {
            input.push_str(&format!("{A}\trefs/heads/b{i}\n"));
        }
        let e = feed(Some(3), &[input.as_bytes()]).unwrap_err();
        assert_eq!(e.reason, Reason::FetchLimit);
        assert!(e.message.contains("more than 3 branches and tags"), "{}", e.message);
        assert_eq!(feed(Some(4), &[input.as_bytes()]).unwrap().len(), 4);
        assert_eq!(feed(None, &[input.as_bytes()]).unwrap().len(), 4);
    }

    #[test]
    fn over_long_names_are_a_limit() {
        let comp = "c".repeat(MAX_REF_COMPONENT + 1);
        let e = feed(None, &[format!("{A}\trefs/heads/{comp}\n").as_bytes()]).unwrap_err();
        assert_eq!(e.reason, Reason::FetchLimit);
        assert!(e.message.contains("path component of 251 bytes"), "{}", e.message);
        let ok = "c".repeat(MAX_REF_COMPONENT);
        assert_eq!(feed(None, &[format!("{A}\trefs/heads/{ok}\n").as_bytes()]).unwrap().len(), 1);
        // A line that never ends is cut off at the name limit.
        let e =
            feed(None, &[format!("{A}\trefs/heads/").as_bytes(), "a/".repeat(MAX_REF_NAME).as_bytes()]).unwrap_err();
        assert_eq!(e.reason, Reason::FetchLimit);
        assert!(name_over_limit(&format!("refs/heads/{}", "a/".repeat(600))).is_some());
    }

    #[test]
    fn other_refs_are_ignored_and_garbage_fails() {
        let refs =
            feed(Some(1), &[format!("{A}\tHEAD\n{A}\trefs/pull/1/head\n{A}\trefs/heads/x\n").as_bytes()]).unwrap();
        assert_eq!(refs.len(), 1);
        let e = feed(None, &[b"\x1b[2Jgarbage\n"]).unwrap_err();
        assert_eq!(e.reason, Reason::FetchFailed);
        assert!(e.message.contains("\\x1B[2J"), "escaped: {}", e.message);
    }

    #[test]
    fn records_round_trip_and_half_records_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec");
        assert!(read_record(&p).is_none());
        let refs: Advertised = [("refs/heads/a".to_owned(), A.to_owned())].into();
        write_record(&p, &Recorded::Refs(refs.clone())).unwrap();
        assert!(matches!(read_record(&p), Some(Recorded::Refs(r)) if r == refs));
        write_record(&p, &Recorded::Refused(PullError::new(Reason::FetchLimit, "too\nmany".into()))).unwrap();
        match read_record(&p) {
            Some(Recorded::Refused(e)) => {
                assert_eq!((e.reason, e.message.as_str()), (Reason::FetchLimit, "too\\nmany"))
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, format!("{RECORD_HEADER}ref {A} refs/heads/a\n")).unwrap();
        assert!(read_record(&p).is_none(), "no end line: incomplete");
    }
}
