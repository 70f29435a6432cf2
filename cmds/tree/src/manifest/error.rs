//! Why a manifest was refused.

use std::fmt;

/// One class of refusal. Callers branch on it; [`Refusal::code`] is the
/// reason code the node logs and mails (the `E_TREE_*` group), and
/// [`Refusal::reason`] one phrase for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The first line is not `ferry-tree 1`.
    Header,
    /// An unknown, repeated or misordered option line.
    BadOption,
    /// A line longer than [`super::Limits::max_line_bytes`].
    LineTooLong,
    /// A byte outside printable ASCII in a line, or a value whose percent
    /// encoding is not the canonical one.
    Encoding,
    /// A field missing, out of order, empty, or not allowed for the type.
    Field,
    /// A field this format does not know.
    UnknownField,
    /// A malformed value: number, mode, time, digest, empty or overlong
    /// name or target, unsorted xattrs.
    Value,
    /// A trailer whose counts do not match the entries, or a malformed one.
    Trailer,
    /// Input ends before the trailer (or without a final LF).
    Truncated,
    /// Anything after the trailer.
    TrailingGarbage,
    /// A path starting with `/`.
    Absolute,
    /// A `..` component.
    DotDot,
    /// A `.` component.
    DotComponent,
    /// An empty path or component (`a//b`, trailing `/`).
    EmptyComponent,
    /// A NUL byte in a path, target or name.
    Nul,
    /// A `/` inside a name (`%2F`).
    SlashInName,
    /// A component longer than [`super::NAME_MAX`].
    NameTooLong,
    /// A path longer than [`super::PATH_MAX`].
    PathTooLong,
    /// The parent is not a directory entry listed earlier: a path below a
    /// symlink, below a file, or below nothing.
    ParentNotDir,
    /// The same path twice.
    Duplicate,
    /// A path that sorts before the previous one.
    Unsorted,
    /// A hard-link group with members of different types (or a directory
    /// in a group).
    LinkMixedTypes,
    /// Members of a hard-link group that disagree on size, digest or any
    /// other inode data.
    LinkDisagree,
    /// A group number that skips ahead (groups are 1, 2, … by first use).
    LinkNumbering,
    /// A group with a single member: it links to nothing.
    LinkSingle,
    /// More entries than [`super::Limits::max_entries`].
    TooManyEntries,
    /// More file bytes than [`super::Limits::max_total_bytes`].
    TooManyBytes,
}

impl Refusal {
    /// The reason code: `E_TREE_FORMAT`, `E_TREE_PATH`, `E_TREE_DUP`,
    /// `E_TREE_LINK` or `E_TREE_LIMIT`.
    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            Header | BadOption | LineTooLong | Encoding | Field | UnknownField | Value | Trailer | Truncated
            | TrailingGarbage | Unsorted => "E_TREE_FORMAT",
            Absolute | DotDot | DotComponent | EmptyComponent | Nul | SlashInName | NameTooLong | PathTooLong
            | ParentNotDir => "E_TREE_PATH",
            Duplicate => "E_TREE_DUP",
            LinkMixedTypes | LinkDisagree | LinkNumbering | LinkSingle => "E_TREE_LINK",
            TooManyEntries | TooManyBytes => "E_TREE_LIMIT",
        }
    }

    /// A short phrase for people.
    pub fn reason(&self) -> &'static str {
        use Refusal::*;
        match self {
            Header => "not a ferry-tree 1 manifest",
            BadOption => "bad option line",
            LineTooLong => "line too long",
            Encoding => "not canonical printable ASCII",
            Field => "missing, misplaced or empty field",
            UnknownField => "unknown field",
            Value => "malformed value",
            Trailer => "wrong trailer",
            Truncated => "manifest ends before its trailer",
            TrailingGarbage => "data after the trailer",
            Absolute => "absolute path",
            DotDot => "`..` component",
            DotComponent => "`.` component",
            EmptyComponent => "empty path component",
            Nul => "NUL byte",
            SlashInName => "`/` inside a name",
            NameTooLong => "name longer than NAME_MAX",
            PathTooLong => "path longer than PATH_MAX",
            ParentNotDir => "parent is not a directory listed earlier",
            Duplicate => "duplicate path",
            Unsorted => "entries not sorted by path",
            LinkMixedTypes => "hard-link group mixes types",
            LinkDisagree => "hard-link group members disagree",
            LinkNumbering => "hard-link group number out of sequence",
            LinkSingle => "hard-link group with a single member",
            TooManyEntries => "more entries than allowed",
            TooManyBytes => "more file bytes than allowed",
        }
    }
}

/// A refused manifest: the class, the 1-based line, and an escaped detail
/// (printable ASCII on one line, safe for any log, terminal or mail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// What is wrong.
    pub refusal: Refusal,
    /// The line it is on (1 is the header).
    pub line: u64,
    /// Escaped detail: which field, which path, which limit.
    pub detail: String,
}

impl ManifestError {
    pub(crate) fn new(refusal: Refusal, line: u64, detail: impl AsRef<[u8]>) -> Self {
        ManifestError { refusal, line, detail: ferry_text::escape_bytes(detail.as_ref(), ferry_text::EXCERPT_CHARS) }
    }

    /// The reason code (see [`Refusal::code`]).
    pub fn code(&self) -> &'static str {
        self.refusal.code()
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: manifest line {}: {}", self.code(), self.line, self.refusal.reason())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// [`super::read`]'s error: the input failed, or the manifest is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the input failed (not the manifest's fault).
    #[error("reading manifest: {0}")]
    Io(#[from] std::io::Error),
    /// The manifest is refused.
    #[error(transparent)]
    Refused(#[from] ManifestError),
}
