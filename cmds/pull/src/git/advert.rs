//! What the client's repository advertises, read before anything is
//! fetched (SECURITY RE, issue 16 point 3).
//!
//! The ref limit used to be checked after the fetch had written every ref
//! and its reflog: a repository with a million branches made the node
//! create millions of files before it was refused. Here `git ls-remote`
//! (same hardened git, same transport, same `core.sshCommand`, same
//! deadline) lists the branches and tags first; its output is parsed while
//! it streams and the listing is stopped as soon as it crosses a limit, so
//! a refused repository costs the node no file and a bounded amount of
//! memory. The listing is also what the fetch is checked against
//! afterwards: a ref git silently left behind (a shallow client) fails the
//! job instead of being reported as done.

use std::collections::BTreeMap;
use std::io::{self, Write};

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

/// `ls-remote` output parsed as it arrives, with the limits applied.
struct Listing {
    refs: Advertised,
    partial: Vec<u8>,
    max_refs: Option<u64>,
    /// Why the listing was stopped; the runner kills git when a write fails.
    refused: Option<PullError>,
}

impl Listing {
    fn refuse(&mut self, reason: Reason, msg: String) -> io::Error {
        self.refused = Some(PullError::new(reason, msg));
        io::Error::other("refused")
    }

    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let Some((oid, name)) = text.split_once('\t') else {
            return Err(self.refuse(
                Reason::FetchFailed,
                format!("git ls-remote printed an unexpected line: \"{}\"", ferry_text::escape(&text, 120)),
            ));
        };
        if !matches!(oid.len(), 40 | 64) || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.refuse(
                Reason::FetchFailed,
                format!("git ls-remote printed an unexpected object id: \"{}\"", ferry_text::escape(&text, 120)),
            ));
        }
        if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) {
            return Ok(());
        }
        if let Some(msg) = name_over_limit(name) {
            return Err(self.refuse(Reason::FetchLimit, format!("{msg}; nothing was fetched")));
        }
        self.refs.insert(name.to_owned(), oid.to_ascii_lowercase());
        if let Some(max) = self.max_refs
            && self.refs.len() as u64 > max
        {
            return Err(self.refuse(
                Reason::FetchLimit,
                format!(
                    "the repository advertises more than {max} branches and tags, the limit ([limits] max_refs); nothing was fetched"
                ),
            ));
        }
        Ok(())
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
            return Err(self.refuse(
                Reason::FetchLimit,
                format!(
                    "the repository advertises a ref name longer than the limit of {MAX_REF_NAME} bytes ({}...); nothing was fetched",
                    ferry_text::escape(&name, 80)
                ),
            ));
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
    let mut listing = Listing { refs: BTreeMap::new(), partial: Vec::new(), max_refs, refused: None };
    let ran = ls_remote.run_to(&mut listing);
    if let Some(refused) = listing.refused.take() {
        return Err(refused);
    }
    ran.map_err(|e| failure::from_run(&e, "git ls-remote"))?;
    if !listing.partial.is_empty() {
        let last = std::mem::take(&mut listing.partial);
        listing.line(&last).map_err(|_| listing.refused.take().expect("a refusal"))?;
    }
    Ok(listing.refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(max: Option<u64>, chunks: &[&[u8]]) -> Result<Advertised, PullError> {
        let mut l = Listing { refs: BTreeMap::new(), partial: Vec::new(), max_refs: max, refused: None };
        for c in chunks {
            if l.write_all(c).is_err() {
                return Err(l.refused.take().unwrap());
            }
        }
        Ok(l.refs)
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
}
