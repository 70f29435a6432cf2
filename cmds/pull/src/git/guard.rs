//! `ferry-node git-ssh-guard`: the `core.sshCommand` of the node's fetches
//! over ssh. It runs the node's real ssh command and relays its output to
//! git unchanged, reading the remote's ref advertisement on the way
//! (issue 16 point 3).
//!
//! Why a relay: the ref limits must hold before git asks for objects, and
//! listing the refs with a separate `git ls-remote` costs a second ssh
//! session on the client (its gate, its `upload-pack`) for every fetch:
//! 20 to 50 ms on the loaded test machine, against 50 to 100 ms for the
//! whole incremental fetch (`bench/spine.sh fetch`), while the relay's
//! cost did not show above the noise. The advertisement git acts on is
//! the one in this connection, so it is also the exact list the fetch is
//! checked against afterwards.
//!
//! What it does, in order:
//!
//! 1. runs ssh with git's arguments, git's environment (for `GIT_PROTOCOL`)
//!    and git's standard input passed straight through;
//! 2. parses ssh's output as pkt-lines up to the end of the advertisement
//!    (protocol v0/v1: the ref lines up to the first flush; v2: the
//!    capabilities, then the `ls-refs` answer), handing each ref to the
//!    advert module's `Checker`, and forwards every chunk once checked;
//! 3. if a ref crosses a limit, the chunk holding it is not forwarded and
//!    ssh is killed: git never sees the advertisement's end, so it never
//!    asks for a pack and writes nothing; the refusal goes to the record;
//! 4. otherwise it writes the advertised branches and tags to the record
//!    and relays the rest of the connection without looking at it.
//!
//! ssh's stderr (the remote's error messages) is passed on when ssh ends.
//! Nothing here decides anything from the remote's text but counts and
//! lengths; unparseable bytes are forwarded untouched for git to refuse.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use ferry_run::{Cmd, RunError};

use super::advert::{Checker, Recorded, is_oid, write_record};
use crate::PullError;

/// What the guard is called with (built by the node, never by a client).
#[derive(Debug, Clone)]
pub struct GuardArgs {
    /// Most branches and tags the advertisement may hold.
    pub max_refs: Option<u64>,
    /// Where to leave the outcome (the advert module's `Recorded`) for the node.
    pub record: PathBuf,
    /// The ssh program and every argument (the node's options, then git's).
    pub ssh: Vec<OsString>,
}

/// Where the parser is in the server's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first packet: a version line or the first v0 ref.
    Start,
    /// v0/v1 ref lines, up to a flush.
    Refs,
    /// v2 capability advertisement, up to a flush.
    Caps,
    /// v2 `ls-refs` answer, up to a flush.
    LsRefs,
    /// The advertisement is over (or could not be parsed): relay only.
    Done,
}

/// The advertisement parser: pkt-lines fed in arbitrary chunks.
struct Parser {
    phase: Phase,
    pending: Vec<u8>,
    checker: Option<Checker>,
    /// Set when the advertisement ended whole and within the limits.
    refs: Option<super::advert::Advertised>,
}

impl Parser {
    fn new(max_refs: Option<u64>) -> Parser {
        Parser { phase: Phase::Start, pending: Vec::new(), checker: Some(Checker::new(max_refs)), refs: None }
    }

    /// Parse what `chunk` completes; a limit crossed is an error.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PullError> {
        if self.phase == Phase::Done {
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        while self.phase != Phase::Done && self.pending.len() >= at + 4 {
            let Some(len) =
                std::str::from_utf8(&self.pending[at..at + 4]).ok().and_then(|h| usize::from_str_radix(h, 16).ok())
            else {
                // Not pkt-line framing: git will say so; stop looking.
                self.phase = Phase::Done;
                break;
            };
            if len < 4 {
                at += 4;
                self.special(len);
                continue;
            }
            if self.pending.len() < at + len {
                break;
            }
            let payload = self.pending[at + 4..at + len].to_vec();
            at += len;
            self.packet(&payload)?;
        }
        self.pending.drain(..at.min(self.pending.len()));
        if self.phase == Phase::Done {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// A flush (0000), delimiter (0001) or response-end (0002) packet.
    fn special(&mut self, len: usize) {
        if len != 0 {
            return;
        }
        self.phase = match self.phase {
            Phase::Caps => Phase::LsRefs,
            Phase::Start | Phase::Refs | Phase::LsRefs => {
                self.refs = self.checker.take().map(Checker::into_refs);
                Phase::Done
            }
            Phase::Done => Phase::Done,
        };
    }

    fn packet(&mut self, payload: &[u8]) -> Result<(), PullError> {
        match self.phase {
            Phase::Start if payload == b"version 2\n" => self.phase = Phase::Caps,
            Phase::Start if payload == b"version 1\n" => self.phase = Phase::Refs,
            Phase::Start | Phase::Refs | Phase::LsRefs => {
                if self.phase == Phase::Start {
                    self.phase = Phase::Refs;
                }
                self.ref_line(payload)?;
            }
            Phase::Caps | Phase::Done => {}
        }
        Ok(())
    }

    /// `<oid> <name>` followed by `\0capabilities` (first v0 line), ` attr`
    /// (v2) or `\n`; other lines (`shallow <oid>`, `ERR …`) are not refs.
    fn ref_line(&mut self, payload: &[u8]) -> Result<(), PullError> {
        let text = String::from_utf8_lossy(payload);
        let Some((oid, rest)) = text.split_once(' ') else { return Ok(()) };
        if !is_oid(oid) {
            return Ok(());
        }
        let name = rest.split(['\0', ' ', '\n']).next().unwrap_or("");
        match self.checker.as_mut() {
            Some(c) => c.add(oid, name),
            None => Ok(()),
        }
    }
}

/// ssh's output on its way to git: checked, then forwarded.
struct Relay {
    out: File,
    parser: Parser,
    refused: Option<PullError>,
    record: PathBuf,
    recorded: bool,
}

impl Write for Relay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.parser.feed(buf) {
            self.refused = Some(e);
            return Err(io::Error::other("refused"));
        }
        if !self.recorded
            && let Some(refs) = self.parser.refs.take()
        {
            // Before git sees the advertisement's end, so the record is
            // there whatever happens next.
            write_record(&self.record, &Recorded::Refs(refs))?;
            self.recorded = true;
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn dup(fd: impl AsFd) -> io::Result<File> {
    Ok(File::from(fd.as_fd().try_clone_to_owned()?))
}

/// Run the guard; returns the exit status for git (ssh's, or 255).
pub fn main(args: &GuardArgs) -> u8 {
    let fail = |msg: String| {
        eprintln!("ferry-node git-ssh-guard: {msg}");
        255
    };
    let Some((ssh, ssh_args)) = args.ssh.split_first() else {
        return fail("no ssh command given".into());
    };
    let (stdin, stdout) = match (dup(io::stdin()), dup(io::stdout())) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return fail(format!("standard input or output: {e}")),
    };
    let _ = std::fs::remove_file(&args.record);
    let mut relay = Relay {
        out: stdout,
        parser: Parser::new(args.max_refs),
        refused: None,
        record: args.record.clone(),
        recorded: false,
    };
    let ran = Cmd::new(ssh).args(ssh_args).inherit_env().stdin_file(stdin).die_with_parent().run_to(&mut relay);
    // git sees the end of the connection as soon as this returns.
    drop(relay.out);
    if let Some(e) = relay.refused {
        if let Err(w) = write_record(&args.record, &Recorded::Refused(PullError::new(e.reason, e.message.clone()))) {
            return fail(format!("cannot write {}: {w}", args.record.display()));
        }
        return fail(e.message);
    }
    let output = match ran {
        Ok(o) => o,
        Err(RunError::Failed { output, .. }) => *output,
        Err(e) => return fail(e.to_string()),
    };
    let _ = io::stderr().write_all(&output.stderr);
    match output.status.code() {
        Some(c) => u8::try_from(c).unwrap_or(255),
        None => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_request::Reason;

    const A: &str = "1111111111111111111111111111111111111111";

    fn pkt(s: &str) -> Vec<u8> {
        format!("{:04x}{s}", s.len() + 4).into_bytes()
    }

    fn v0(refs: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let caps = if i == 0 { "\0multi_ack side-band-64k" } else { "" };
            out.extend(pkt(&format!("{A} {r}{caps}\n")));
        }
        out.extend(b"0000");
        out
    }

    /// Feed `stream` in chunks of `n` bytes; the refs, or the refusal.
    fn parse(stream: &[u8], n: usize, max: Option<u64>) -> Result<Option<Vec<String>>, PullError> {
        let mut p = Parser::new(max);
        for c in stream.chunks(n) {
            p.feed(c)?;
        }
        Ok(p.refs.map(|r| r.into_keys().collect()))
    }

    #[test]
    fn v0_advertisement_in_any_chunking() {
        let mut s = v0(&["HEAD", "refs/heads/main", "refs/tags/v1", "refs/tags/v1^{}", "refs/pull/1/head"]);
        s.extend(pkt("ACK stuff after the advertisement is not parsed\n"));
        s.extend(b"PACK\x00\x00garbage");
        for n in [1, 3, 7, 4096] {
            assert_eq!(parse(&s, n, Some(2)).unwrap().unwrap(), ["refs/heads/main", "refs/tags/v1"], "chunks of {n}");
        }
    }

    #[test]
    fn v2_capabilities_then_ls_refs() {
        let mut s = pkt("version 2\n");
        s.extend(pkt("agent=git/2.47\n"));
        s.extend(pkt("ls-refs=unborn\n"));
        s.extend(b"0000");
        s.extend(pkt(&format!("{A} HEAD symref-target:refs/heads/main\n")));
        s.extend(pkt(&format!("{A} refs/heads/main\n")));
        s.extend(pkt(&format!("{A} refs/tags/v1 peeled:{A}\n")));
        s.extend(b"0000");
        assert_eq!(parse(&s, 5, None).unwrap().unwrap(), ["refs/heads/main", "refs/tags/v1"]);
        // v1 is v0 after a version line; an empty repository too.
        let mut s = pkt("version 1\n");
        s.extend(v0(&["capabilities^{}"]));
        assert_eq!(parse(&s, 2, None).unwrap().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_flood_is_refused_before_the_advertisement_ends() {
        let names: Vec<String> = (0..50).map(|i| format!("refs/heads/b{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let e = parse(&v0(&refs), 100, Some(20)).unwrap_err();
        assert_eq!(e.reason, Reason::FetchLimit);
        let long = format!("refs/heads/{}", "x".repeat(300));
        let e = parse(&v0(&[long.as_str()]), 64, None).unwrap_err();
        assert!(e.message.contains("path component of 300 bytes"), "{}", e.message);
    }

    #[test]
    fn unparseable_output_is_left_to_git() {
        assert_eq!(parse(b"\x1b[2Jgarbage", 4, None).unwrap(), None);
        assert_eq!(parse(&pkt("ERR access denied\n"), 4, None).unwrap(), None);
    }
}
