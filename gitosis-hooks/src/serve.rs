//! The pure part of `serve USER`: parse `SSH_ORIGINAL_COMMAND` and decide
//! access, gitosis-compatible (GITOSIS.md 2.2–2.5).
//!
//! sshd runs the forced command for any client request (an interactive
//! login, `id; cat /etc/passwd`, an sftp subsystem), so this parser is the
//! only barrier between a client key and the node. It accepts exactly what
//! gitosis accepted and answers with gitosis' messages:
//!
//! 1. a newline anywhere → `Command may not contain newline`;
//! 2. split off the verb (Python `split(None, 1)`); `git <sub>` is
//!    normalised to `git <sub>`; no argument → `Unknown command denied`;
//! 3. the verb must be `git-upload-pack`, `git-upload-archive`,
//!    `git-receive-pack` or their `git <sub>` forms, else
//!    `Unknown command denied`;
//! 4. the argument must be exactly one single-quoted safe path
//!    ([`safe_path_arg`]), else `Arguments to command look dangerous`.
//!
//! One message differs on purpose: a refused push is always `Repository
//! write access denied` (gitosis said "read" when the key had no access
//! at all; see [`decide_command`]).
//!
//! Hardening beyond gitosis (AC-04): a command longer than
//! [`MAX_COMMAND_BYTES`] or containing any control character other than
//! TAB (NUL, CR, ESC, vertical tab, form feed…) is refused as an unknown
//! command before it is split; gitosis' Python split treated CR, VT and FF
//! as word separators, which Ferry does not want to reproduce. `~` is
//! refused by the safe-path rule (no `~user` expansion can happen). After
//! access is granted, the resulting repository path must itself be a safe
//! relative path not ending in `.git` (a `map` target is used verbatim by
//! gitosis; weakness W2) or the request is denied with
//! [`Denied::UnsafeMapping`].

use std::fmt;

pub use crate::access::is_safe_relpath;
use crate::access::{Mode, have_access};
use crate::conf::Config;

/// Longest `SSH_ORIGINAL_COMMAND` considered (git sends well under 1 KiB;
/// CVE-2022-39260 was an overflow on a huge command in `git shell`).
pub const MAX_COMMAND_BYTES: usize = 4096;

/// The git service a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `git-upload-pack`: fetch/clone (read).
    UploadPack,
    /// `git-receive-pack`: push (write).
    ReceivePack,
    /// `git-upload-archive`: `git archive --remote` (read).
    UploadArchive,
}

impl Verb {
    /// The dashed program name git uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::UploadPack => "git-upload-pack",
            Verb::ReceivePack => "git-receive-pack",
            Verb::UploadArchive => "git-upload-archive",
        }
    }

    /// The service name without the `git-` prefix (`upload-pack`, …), as
    /// used for `git <service> <dir>`.
    pub fn service(self) -> &'static str {
        match self {
            Verb::UploadPack => "upload-pack",
            Verb::ReceivePack => "receive-pack",
            Verb::UploadArchive => "upload-archive",
        }
    }

    /// Whether the service writes to the repository.
    pub fn is_write(self) -> bool {
        matches!(self, Verb::ReceivePack)
    }

    fn from_name(name: &str) -> Option<Verb> {
        match name {
            "git-upload-pack" | "git upload-pack" => Some(Verb::UploadPack),
            "git-upload-archive" | "git upload-archive" => Some(Verb::UploadArchive),
            "git-receive-pack" | "git receive-pack" => Some(Verb::ReceivePack),
            _ => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A syntactically acceptable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The requested service.
    pub verb: Verb,
    /// The requested path with leading slashes dropped; may still end in
    /// `.git` (stripped by the access check).
    pub path: String,
}

/// Why serve refused. `Display` is gitosis' exact log message, so clients
/// and scripts that grep for them keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Denied {
    /// `SSH_ORIGINAL_COMMAND` is not set (interactive login).
    #[error("Need SSH_ORIGINAL_COMMAND in environment.")]
    NoCommand,
    /// The command contains a newline.
    #[error("Command may not contain newline")]
    Newline,
    /// Not one of the git services, missing argument, too long or control
    /// characters.
    #[error("Unknown command denied")]
    Unknown,
    /// The argument is not exactly one single-quoted safe path.
    #[error("Arguments to command look dangerous")]
    Dangerous,
    /// A fetch or archive without read access.
    #[error("Repository read access denied")]
    ReadDenied,
    /// A push without write access (read-only or no access at all).
    #[error("Repository write access denied")]
    WriteDenied,
    /// Ferry only: the access rule maps to an unsafe repository path (a
    /// `map` target outside the safe-path rule or ending in `.git`; gitosis
    /// would use it verbatim or crash).
    #[error("Repository mapping in gitosis.conf is unsafe")]
    UnsafeMapping,
}

/// The outcome of a granted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The requested service.
    pub verb: Verb,
    /// True when the service writes (receive-pack); a granted write implies
    /// a write grant. Auto-creation of missing repositories should be tied
    /// to this (GITOSIS.md 2.6, weakness W5).
    pub write: bool,
    /// The repository root the granting rule names. Ferry takes its real
    /// repository root from the node's TOML config (weakness W2); this is
    /// reported for logging and compatibility only.
    pub prefix: String,
    /// Repository path below the root, without `.git`; a safe relative
    /// path. The physical repository is `<root>/<relpath>.git`.
    pub relpath: String,
    /// Which option granted it (`Writeable` means the typo was used and
    /// should be logged as gitosis did).
    pub mode: Mode,
}

fn is_split_ws(c: char) -> bool {
    // After the control-character filter only these can occur.
    c == ' ' || c == '\t'
}

/// Python's `s.split(None, 1)`: leading whitespace dropped, first word,
/// then the rest with its leading whitespace dropped (trailing kept).
/// `None` for the rest when there is no second word.
fn split_first(s: &str) -> (&str, Option<&str>) {
    let s = s.trim_start_matches(is_split_ws);
    match s.find(is_split_ws) {
        None => (s, None),
        Some(i) => {
            let word = s.get(..i).unwrap_or("");
            let rest = s.get(i..).unwrap_or("").trim_start_matches(is_split_ws);
            (word, (!rest.is_empty()).then_some(rest))
        }
    }
}

/// gitosis' `ALLOW_RE` on the argument: a single quote, any number of `/`,
/// a safe relative path, a closing single quote, end of string. Returns
/// the path without the leading slashes.
pub fn safe_path_arg(arg: &str) -> Option<&str> {
    let inner = arg.strip_prefix('\'')?.strip_suffix('\'')?;
    let path = inner.trim_start_matches('/');
    is_safe_relpath(path).then_some(path)
}

/// Parses `SSH_ORIGINAL_COMMAND` (see the module doc for the rules).
pub fn parse_command(cmd: &str) -> Result<Command, Denied> {
    if cmd.contains('\n') {
        return Err(Denied::Newline);
    }
    if cmd.len() > MAX_COMMAND_BYTES {
        return Err(Denied::Unknown);
    }
    if cmd.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Denied::Unknown);
    }
    let (verb, args) = split_first(cmd);
    let Some(mut args) = args else {
        return Err(Denied::Unknown);
    };
    let mut verb_name = verb.to_string();
    if verb == "git" {
        let (sub, rest) = split_first(args);
        let Some(rest) = rest else {
            return Err(Denied::Unknown);
        };
        verb_name = format!("git {sub}");
        args = rest;
    }
    let verb = Verb::from_name(&verb_name).ok_or(Denied::Unknown)?;
    let path = safe_path_arg(args).ok_or(Denied::Dangerous)?;
    if path.contains('~') {
        return Err(Denied::Dangerous); // unreachable by the rule; explicit
    }
    Ok(Command { verb, path: path.to_string() })
}

/// [`parse_command`] on raw bytes (the environment variable need not be
/// UTF-8). The length is checked on the raw bytes; invalid UTF-8 is
/// replaced by U+FFFD, which no verb or safe path contains, so the outcome
/// is the one gitosis gave for such bytes (unknown verb or dangerous
/// argument).
pub fn parse_command_bytes(cmd: &[u8]) -> Result<Command, Denied> {
    if cmd.contains(&b'\n') {
        return Err(Denied::Newline);
    }
    if cmd.len() > MAX_COMMAND_BYTES {
        return Err(Denied::Unknown);
    }
    parse_command(&String::from_utf8_lossy(cmd))
}

/// The access decision for an already parsed command (GITOSIS.md 2.5):
/// `writable`, then `writeable`, then `readonly`. A refused push
/// (`git-receive-pack`) is always [`Denied::WriteDenied`]; a refused
/// fetch or archive is [`Denied::ReadDenied`].
///
/// Deliberate difference: gitosis answered a push by a key with no access
/// at all with "Repository read access denied", which sends whoever
/// debugs a refused push looking for a read grant. Ferry answers every
/// refused push with gitosis' own "Repository write access denied"; it
/// tells nothing more (a read-only key got the same answer from gitosis).
pub fn decide_command(conf: &Config, user: &str, cmd: &Command) -> Result<Allowed, Denied> {
    let write_grant = have_access(conf, user, Mode::Writable, &cmd.path)
        .map(|a| (a, Mode::Writable))
        .or_else(|| have_access(conf, user, Mode::Writeable, &cmd.path).map(|a| (a, Mode::Writeable)));
    let (access, mode) = match write_grant {
        Some(g) => g,
        None if cmd.verb.is_write() => return Err(Denied::WriteDenied),
        None => {
            let Some(read) = have_access(conf, user, Mode::Readonly, &cmd.path) else {
                return Err(Denied::ReadDenied);
            };
            (read, Mode::Readonly)
        }
    };
    if !is_safe_relpath(&access.relpath) || access.relpath.ends_with(".git") {
        return Err(Denied::UnsafeMapping);
    }
    Ok(Allowed { verb: cmd.verb, write: cmd.verb.is_write(), prefix: access.prefix, relpath: access.relpath, mode })
}

/// Parse and decide: the whole gitosis-compatible check for `user` (the
/// forced command's argument, i.e. the authenticated key's owner; never
/// anything the client sent — SECURITY I1).
pub fn decide(conf: &Config, user: &str, original_command: &str) -> Result<Allowed, Denied> {
    let cmd = parse_command(original_command)?;
    decide_command(conf, user, &cmd)
}

/// [`decide`] for the raw environment value: `None` (variable unset) →
/// [`Denied::NoCommand`]; bytes as in [`parse_command_bytes`].
pub fn decide_original_command(conf: &Config, user: &str, original_command: Option<&[u8]>) -> Result<Allowed, Denied> {
    let raw = original_command.ok_or(Denied::NoCommand)?;
    let cmd = parse_command_bytes(raw)?;
    decide_command(conf, user, &cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn conf(s: &str) -> Config {
        match Config::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn cmd(verb: Verb, path: &str) -> Result<Command, Denied> {
        Ok(Command { verb, path: path.to_string() })
    }

    #[test]
    fn messages_are_gitosis_messages() {
        let cases = [
            (Denied::NoCommand, "Need SSH_ORIGINAL_COMMAND in environment."),
            (Denied::Newline, "Command may not contain newline"),
            (Denied::Unknown, "Unknown command denied"),
            (Denied::Dangerous, "Arguments to command look dangerous"),
            (Denied::ReadDenied, "Repository read access denied"),
            (Denied::WriteDenied, "Repository write access denied"),
        ];
        for (d, msg) in cases {
            assert_eq!(d.to_string(), msg);
        }
    }

    /// GITOSIS.md 2.2: command parsing, including what real clients send.
    #[test]
    fn command_table() {
        use Verb::*;
        let cases: &[(&str, Result<Command, Denied>)] = &[
            ("git-upload-pack 'foo.git'", cmd(UploadPack, "foo.git")),
            ("git-upload-pack 'foo'", cmd(UploadPack, "foo")),
            ("git-upload-pack '/foo.git'", cmd(UploadPack, "foo.git")),
            ("git-upload-pack '~/foo.git'", Err(Denied::Dangerous)),
            ("git-upload-pack '/abs/foo'", cmd(UploadPack, "abs/foo")),
            ("git-upload-pack 'sub/dir/it'\\''s.git'", Err(Denied::Dangerous)),
            ("git-receive-pack 'foo.git'", cmd(ReceivePack, "foo.git")),
            ("git-upload-archive 'foo.git'", cmd(UploadArchive, "foo.git")),
            ("git upload-pack 'foo'", cmd(UploadPack, "foo")),
            ("git receive-pack 'foo'", cmd(ReceivePack, "foo")),
            ("git upload-archive 'foo'", cmd(UploadArchive, "foo")),
            // whitespace normalisation of Python's split
            ("git\tupload-pack 'foo'", cmd(UploadPack, "foo")),
            ("git   upload-pack \t 'foo'", cmd(UploadPack, "foo")),
            ("  git-upload-pack 'foo'", cmd(UploadPack, "foo")),
            ("git-upload-pack\t'foo'", cmd(UploadPack, "foo")),
            // trailing whitespace stays part of the argument
            ("git-upload-pack 'foo' ", Err(Denied::Dangerous)),
            // newline
            ("git-upload-pack 'foo'\n", Err(Denied::Newline)),
            ("git-upload-pack 'foo'\ncat /etc/passwd", Err(Denied::Newline)),
            ("\n", Err(Denied::Newline)),
            // unknown verb or missing argument
            ("", Err(Denied::Unknown)),
            ("   ", Err(Denied::Unknown)),
            ("git-upload-pack", Err(Denied::Unknown)),
            ("git-upload-pack   ", Err(Denied::Unknown)),
            ("git", Err(Denied::Unknown)),
            ("git upload-pack", Err(Denied::Unknown)),
            ("git upload-pack ", Err(Denied::Unknown)),
            ("git foo 'bar'", Err(Denied::Unknown)),
            ("git-foo 'bar'", Err(Denied::Unknown)),
            ("GIT-UPLOAD-PACK 'foo'", Err(Denied::Unknown)),
            ("git-upload-pack-x 'foo'", Err(Denied::Unknown)),
            ("git git-upload-pack 'foo'", Err(Denied::Unknown)),
            ("git shell -c 'foo'", Err(Denied::Unknown)),
            // dangerous arguments
            ("git-upload-pack foo", Err(Denied::Dangerous)),
            ("git-upload-pack \"foo\"", Err(Denied::Dangerous)),
            ("git-upload-pack 'foo' 'bar'", Err(Denied::Dangerous)),
            ("git-upload-pack 'foo", Err(Denied::Dangerous)),
            ("git-upload-pack ''", Err(Denied::Dangerous)),
            ("git-upload-pack '/'", Err(Denied::Dangerous)),
            ("git-upload-pack '--upload-pack=touch /tmp/x'", Err(Denied::Dangerous)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_command(input), want, "command {input:?}");
        }
    }

    /// GITOSIS.md 2.3: the safe-path table.
    #[test]
    fn safe_path_table() {
        let ok = [
            ("'foo'", "foo"),
            ("'foo.git'", "foo.git"),
            ("'/foo.git'", "foo.git"),
            ("'///a/b.git'", "a/b.git"),
            ("'a..b'", "a..b"),
            ("'a@b.c'", "a@b.c"),
            ("'0abc'", "0abc"),
            ("'A-b_c/d'", "A-b_c/d"),
        ];
        for (arg, path) in ok {
            assert_eq!(safe_path_arg(arg), Some(path), "{arg}");
            let full = format!("git-upload-pack {arg}");
            assert_eq!(parse_command(&full), cmd(Verb::UploadPack, path), "{full}");
        }
        let bad = [
            "foo",
            "'foo/'",
            "'a//b'",
            "'../x'",
            "'a/../b'",
            "'a/..b'",
            "'.hidden'",
            "'a/.git/b'",
            "'~/foo.git'",
            "'-x'",
            "'@x'",
            "'x y'",
            "'h\u{e9}llo'",
            "'it'\\''s'",
            "'foo' 'bar'",
            "'_x'",
            "'a/-x'",
            "'a\\b'",
            "'a;b'",
            "'a$b'",
            "'a'b'",
        ];
        for arg in bad {
            assert_eq!(safe_path_arg(arg), None, "{arg}");
            let full = format!("git-receive-pack {arg}");
            assert_eq!(parse_command(&full), Err(Denied::Dangerous), "{full}");
        }
    }

    #[test]
    fn hardening_beyond_gitosis() {
        // 1 MiB command (AC-04, CVE-2022-39260)
        let huge = format!("git-upload-pack '{}'", "a".repeat(1024 * 1024));
        assert_eq!(parse_command(&huge), Err(Denied::Unknown));
        let at_limit = format!("git-upload-pack '{}'", "a".repeat(MAX_COMMAND_BYTES - 18));
        assert_eq!(at_limit.len(), MAX_COMMAND_BYTES);
        assert!(parse_command(&at_limit).is_ok());
        let over = format!("git-upload-pack '{}'", "a".repeat(MAX_COMMAND_BYTES - 17));
        assert_eq!(parse_command(&over), Err(Denied::Unknown));
        // control characters, including ones Python split on
        for c in ["\0", "\r", "\x0b", "\x0c", "\x1b", "\x7f", "\u{85}"] {
            let a = format!("git-upload-pack{c}'foo'");
            assert_eq!(parse_command(&a), Err(Denied::Unknown), "{a:?}");
            let b = format!("git-upload-pack 'foo{c}'");
            assert_eq!(parse_command(&b), Err(Denied::Unknown), "{b:?}");
        }
        // raw bytes
        assert_eq!(parse_command_bytes(b"git-upload-pack 'foo'"), cmd(Verb::UploadPack, "foo"));
        assert_eq!(parse_command_bytes(b"git-upload-pack '\xff'"), Err(Denied::Dangerous));
        assert_eq!(parse_command_bytes(b"git-upload-pa\xffck 'x'"), Err(Denied::Unknown));
        assert_eq!(parse_command_bytes(b"x\n\xff"), Err(Denied::Newline));
        let huge = vec![0xffu8; MAX_COMMAND_BYTES + 1];
        assert_eq!(parse_command_bytes(&huge), Err(Denied::Unknown));
    }

    const SERVE_CONF: &str = "\
[gitosis]

[group admins]
members = admin@ws
writable = gitosis-admin

[group fooers]
members = jdoe
writable = foo
writeable = typo
readonly = ro
map writable visible = real/repo
map readonly evil = ../../etc
map readonly dotgit = x.git

[group readers]
members = @all
readonly = public/docs

[ferry client clienta]
[ferry client clientb]
";

    fn allowed(verb: Verb, relpath: &str, mode: Mode) -> Result<Allowed, Denied> {
        Ok(Allowed { verb, write: verb.is_write(), prefix: "repositories".into(), relpath: relpath.into(), mode })
    }

    /// GITOSIS.md 2.5: decision order and messages.
    #[test]
    fn decision_table() {
        use Verb::*;
        let c = conf(SERVE_CONF);
        let cases: &[(&str, &str, Result<Allowed, Denied>)] = &[
            ("jdoe", "git-receive-pack 'foo.git'", allowed(ReceivePack, "foo", Mode::Writable)),
            ("jdoe", "git-upload-pack 'foo'", allowed(UploadPack, "foo", Mode::Writable)),
            ("jdoe", "git-upload-pack '/foo.git'", allowed(UploadPack, "foo", Mode::Writable)),
            ("jdoe", "git upload-archive 'foo'", allowed(UploadArchive, "foo", Mode::Writable)),
            ("jdoe", "git-receive-pack 'typo'", allowed(ReceivePack, "typo", Mode::Writeable)),
            ("jdoe", "git-upload-pack 'ro'", allowed(UploadPack, "ro", Mode::Readonly)),
            ("jdoe", "git-upload-archive 'ro'", allowed(UploadArchive, "ro", Mode::Readonly)),
            ("jdoe", "git-receive-pack 'ro'", Err(Denied::WriteDenied)),
            ("jdoe", "git-receive-pack 'nosuch'", Err(Denied::WriteDenied)),
            ("jdoe", "git-upload-pack 'nosuch'", Err(Denied::ReadDenied)),
            ("jdoe", "git-receive-pack 'VISIBLE'", allowed(ReceivePack, "real/repo", Mode::Writable)),
            ("jdoe", "git-upload-pack 'evil'", Err(Denied::UnsafeMapping)),
            ("jdoe", "git-upload-pack 'dotgit'", Err(Denied::UnsafeMapping)),
            ("nobody", "git-upload-pack 'public/docs'", allowed(UploadPack, "public/docs", Mode::Readonly)),
            ("nobody", "git-receive-pack 'public/docs'", Err(Denied::WriteDenied)),
            ("nobody", "git-upload-pack 'foo'", Err(Denied::ReadDenied)),
            ("admin@ws", "git-receive-pack 'gitosis-admin.git'", allowed(ReceivePack, "gitosis-admin", Mode::Writable)),
            ("jdoe", "git-receive-pack 'gitosis-admin.git'", Err(Denied::WriteDenied)),
            ("jdoe", "sh", Err(Denied::Unknown)),
        ];
        for (user, command, want) in cases {
            assert_eq!(&decide(&c, user, command), want, "{user}: {command}");
        }
        assert_eq!(decide_original_command(&c, "jdoe", None), Err(Denied::NoCommand));
        assert_eq!(decide_original_command(&c, "jdoe", Some(b"")), Err(Denied::Unknown));
        assert_eq!(
            decide_original_command(&c, "jdoe", Some(b"git-upload-pack 'foo'")),
            allowed(Verb::UploadPack, "foo", Mode::Writable)
        );
    }

    /// Issue 16 point 7: every refused push says write access was denied,
    /// whether the key may read the repository or not; refused reads keep
    /// saying read.
    #[test]
    fn refused_push_says_write_access_denied() {
        let c = conf(SERVE_CONF);
        let mut pushes = 0;
        for user in ["jdoe", "nobody", "clienta", "stranger"] {
            for path in ["foo", "ro", "nosuch", "public/docs", "gitosis-admin.git", "queue/clientb.git", "/queue/x"] {
                for verb in ["git-receive-pack", "git receive-pack"] {
                    if let Err(d) = decide(&c, user, &format!("{verb} '{path}'")) {
                        assert_eq!(d, Denied::WriteDenied, "{user} {verb} {path}");
                        assert_eq!(d.to_string(), "Repository write access denied");
                        pushes += 1;
                    }
                }
                if let Err(d) = decide(&c, user, &format!("git-upload-pack '{path}'")) {
                    assert!(matches!(d, Denied::ReadDenied | Denied::UnsafeMapping), "{user} fetch {path}: {d:?}");
                }
            }
        }
        assert!(pushes >= 40, "the table exercises refused pushes: {pushes}");
    }

    /// SECURITY AC-01 / AC-02: with client A's key, nothing reaches B's
    /// queue, and every spelling of A's own queue resolves to one path.
    #[test]
    fn ac01_ac02_path_tricks() {
        use Verb::*;
        let c = conf(SERVE_CONF);
        let own = allowed(ReceivePack, "queue/clienta", Mode::Writable);
        let cases: &[(&str, Result<Allowed, Denied>)] = &[
            ("git-receive-pack 'queue/clientb.git'", Err(Denied::WriteDenied)),
            ("git-receive-pack 'queue/clienta/../clientb.git'", Err(Denied::Dangerous)),
            ("git-receive-pack 'queue/client.example/../clientb.git'", Err(Denied::Dangerous)),
            ("git-receive-pack '/queue/clientb.git'", Err(Denied::WriteDenied)),
            ("git-receive-pack 'queue//clientb.git'", Err(Denied::Dangerous)),
            ("git-receive-pack 'queue/clientb.git/'", Err(Denied::Dangerous)),
            ("git-receive-pack 'queue/CLIENTB.git'", Err(Denied::WriteDenied)),
            ("git-receive-pack 'queue/CLIENTA.git'", Err(Denied::WriteDenied)),
            ("git-receive-pack '~backupq/queue/clientb.git'", Err(Denied::Dangerous)),
            ("git-receive-pack 'queue/clienta.git' 'queue/clientb.git'", Err(Denied::Dangerous)),
            ("git-receive-pack \"queue/clientb.git\"", Err(Denied::Dangerous)),
            ("git-receive-pack 'queue/clienta.git'\ngit-receive-pack 'queue/clientb.git'", Err(Denied::Newline)),
            ("git-receive-pack 'queue/clienta.git'", own.clone()),
            ("git receive-pack 'queue/clienta.git'", own.clone()),
            ("git-receive-pack '/queue/clienta.git'", own.clone()),
            ("git-receive-pack '//queue/clienta'", own.clone()),
            ("git-receive-pack 'queue/clienta.git.git'", Err(Denied::WriteDenied)),
            // a client may read its own queue (write implies read)
            ("git-upload-pack 'queue/clienta'", allowed(UploadPack, "queue/clienta", Mode::Writable)),
        ];
        for (command, want) in cases {
            assert_eq!(&decide(&c, "clienta", command), want, "{command}");
        }
    }

    /// SECURITY AC-04: non-git commands and git-shell quirks.
    #[test]
    fn ac04_non_git_commands() {
        let c = conf(SERVE_CONF);
        let huge = "a".repeat(1024 * 1024);
        let cases: &[(&str, Denied)] = &[
            ("sh", Denied::Unknown),
            ("cat /etc/passwd", Denied::Unknown),
            ("id; cat /etc/passwd", Denied::Unknown),
            ("git-upload-archive 'queue/clientb.git'", Denied::ReadDenied),
            ("git-upload-pack '--help'", Denied::Dangerous),
            ("git-upload-pack --help", Denied::Dangerous),
            ("scp -t /tmp", Denied::Unknown),
            ("sftp", Denied::Unknown),
            ("internal-sftp", Denied::Unknown),
            ("/usr/lib/openssh/sftp-server", Denied::Unknown),
            ("git-upload-pack 'x'; sh", Denied::Dangerous),
            ("git-upload-pack $(id)", Denied::Dangerous),
            ("git-upload-pack `id`", Denied::Dangerous),
            (&huge, Denied::Unknown),
        ];
        for (command, want) in cases {
            assert_eq!(decide(&c, "clienta", command), Err(*want), "{command:.40}");
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        let c = conf(SERVE_CONF);
        let mut rng = Rng::new(0xdec1de);
        let seeds: &[&[u8]] =
            &[b"git-upload-pack 'foo.git'", b"git receive-pack '/queue/clienta.git'", b"git\tupload-archive 'a/b@c.d'"];
        for round in 0..30_000 {
            let input = if round % 2 == 0 {
                let s = seeds[rng.below(seeds.len())];
                rng.mutate(s)
            } else {
                (0..rng.below(64)).map(|_| rng.byte()).collect()
            };
            if let Ok(cmd) = parse_command_bytes(&input) {
                assert!(is_safe_relpath(&cmd.path));
                assert!(!cmd.path.starts_with('/'));
            }
            if let Ok(a) = decide_original_command(&c, "clienta", Some(&input)) {
                assert!(is_safe_relpath(&a.relpath));
                assert!(!a.relpath.ends_with(".git"));
            }
        }
    }
}
