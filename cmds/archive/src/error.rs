//! The crate's one error type and the escaping of untrusted names.

use std::io;

/// Why an archive operation failed.
///
/// The variants are the decisions a caller branches on: each maps to a
/// reason code of SECURITY.md through [`ArchiveError::code`]. Entry names are
/// already escaped (see [`escape_name`]) so the `Display` text can go to a
/// log, a terminal or a mail body as is.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A name that is not a safe relative path: `..`, absolute, too long,
    /// too deep, control characters under `strict_names` (AX-01/02/15).
    #[error("E_ARCHIVE_PATH: unsafe entry name `{entry}`: {reason}")]
    Path {
        /// The escaped entry name.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A symlink or hard link the policy does not allow, or an entry that
    /// would be written through a link (AX-03/04/07).
    #[error("E_ARCHIVE_LINK: refused link `{entry}`: {reason}")]
    Link {
        /// The escaped entry name (and target, when it matters).
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry type the policy does not allow: devices, FIFOs, sparse or
    /// unknown types (AX-09).
    #[error("E_ARCHIVE_TYPE: refused entry type of `{entry}`: {reason}")]
    Type {
        /// The escaped entry name.
        entry: String,
        /// Which type and why.
        reason: &'static str,
    },
    /// A second entry for a name already in the archive, exactly or after
    /// case folding and NFC normalisation under `strict_names` (AX-13/14).
    #[error("E_ARCHIVE_DUP: duplicate entry `{entry}`: {reason}")]
    Dup {
        /// The escaped entry name.
        entry: String,
        /// Which collision.
        reason: &'static str,
    },
    /// A configured cap was exceeded: entries, bytes, ratio, extension
    /// header size (AX-15/16/18/19).
    #[error("E_ARCHIVE_LIMIT: {what}")]
    Limit {
        /// Which limit, with the configured value.
        what: String,
    },
    /// The input is not one well-formed tar+zstd archive: wrong magic,
    /// corrupt frame, bad header, trailing data (SF-12).
    #[error("E_ARCHIVE_FORMAT: {what}")]
    Format {
        /// What was wrong, escaped.
        what: String,
    },
    /// Creating an archive: the account this process runs as may not read
    /// an entry of the tree (`EACCES`/`EPERM`). A client-side problem with
    /// a fix of its own (give that account read access), so it is not
    /// reported as a storage failure.
    #[error("E_SOURCE_UNREADABLE: {path} cannot be read by account {account}: {source}")]
    Unreadable {
        /// The entry's absolute path, escaped.
        path: String,
        /// The account that lacked access: `name (uid N)`, or `uid N`.
        account: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading the input or writing the tree failed for a reason outside
    /// the archive: disk full, permissions, an existing destination.
    #[error("{}: {context}: {source}", if is_disk_full(source) { "E_DISK_FULL" } else { "E_STORE" })]
    Io {
        /// What was being done (names escaped).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// The reason code SECURITY.md and the node's logs use for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ArchiveError::Path { .. } => "E_ARCHIVE_PATH",
            ArchiveError::Link { .. } => "E_ARCHIVE_LINK",
            ArchiveError::Type { .. } => "E_ARCHIVE_TYPE",
            ArchiveError::Dup { .. } => "E_ARCHIVE_DUP",
            ArchiveError::Limit { .. } => "E_ARCHIVE_LIMIT",
            ArchiveError::Format { .. } => "E_ARCHIVE_FORMAT",
            ArchiveError::Unreadable { .. } => "E_SOURCE_UNREADABLE",
            ArchiveError::Io { source, .. } => {
                if is_disk_full(source) {
                    "E_DISK_FULL"
                } else {
                    "E_STORE"
                }
            }
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ArchiveError::Io { context: context.into(), source: source.into() }
    }

    pub(crate) fn path(name: &[u8], reason: &'static str) -> Self {
        ArchiveError::Path { entry: escape_name(name), reason }
    }

    pub(crate) fn link(name: &[u8], reason: &'static str) -> Self {
        ArchiveError::Link { entry: escape_name(name), reason }
    }

    pub(crate) fn typ(name: &[u8], reason: &'static str) -> Self {
        ArchiveError::Type { entry: escape_name(name), reason }
    }

    pub(crate) fn dup(name: &[u8], reason: &'static str) -> Self {
        ArchiveError::Dup { entry: escape_name(name), reason }
    }

    pub(crate) fn limit(what: impl Into<String>) -> Self {
        ArchiveError::Limit { what: what.into() }
    }

    /// `what` is message text whose names are already escaped: it is only
    /// made safe ([`ferry_text::sanitize`]), never escaped a second time.
    pub(crate) fn format(what: impl AsRef<str>) -> Self {
        ArchiveError::Format { what: ferry_text::sanitize(what.as_ref(), 600) }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    ) || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

/// How many characters of an escaped name [`escape_name`] shows before
/// cutting it.
const ESCAPE_MAX_CHARS: usize = 200;

/// Escapes an untrusted name for printing, in Ferry's one escaped form
/// ([`ferry_text::escape_bytes`]): printable ASCII is kept, `\` doubled,
/// controls and invalid UTF-8 bytes become `\xNN`, other non-ASCII
/// characters `\u{XXXX}`; long names are cut and say how much was left
/// out. The result is pure printable ASCII, safe for logs, terminals and
/// mail (SECURITY.md I6, NL-*). Escape a name once, where it goes into a
/// message; a message is never escaped again.
pub fn escape_name(name: &[u8]) -> String {
    ferry_text::escape_bytes(name, ESCAPE_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_is_printable_ascii_and_capped() {
        assert_eq!(escape_name(b"ok.txt"), "ok.txt");
        assert_eq!(escape_name(b"a\nb\x1b[31m"), "a\\nb\\x1B[31m");
        assert_eq!(escape_name("é\u{202E}".as_bytes()), "\\u{00E9}\\u{202E}");
        assert_eq!(escape_name(b"\xff"), "\\xFF");
        assert_eq!(escape_name(b"a\\b"), "a\\\\b");
        let long = vec![b'a'; 1000];
        let e = escape_name(&long);
        assert!(e.starts_with(&"a".repeat(200)));
        assert!(e.ends_with("...[+800 bytes]"));
        // A message quoting an escaped name is not escaped again.
        let m = ArchiveError::format(format!("truncated data of `{}`", escape_name(b"a\x1b[31mb")));
        assert_eq!(m.to_string(), "E_ARCHIVE_FORMAT: truncated data of `a\\x1B[31mb`");
    }

    #[test]
    fn codes() {
        let full = ArchiveError::io("x", io::Error::from_raw_os_error(28));
        assert_eq!(full.code(), "E_DISK_FULL");
        assert!(full.to_string().starts_with("E_DISK_FULL"));
        let other = ArchiveError::io("x", io::Error::from_raw_os_error(13));
        assert_eq!(other.code(), "E_STORE");
        assert_eq!(ArchiveError::path(b"../x", "r").code(), "E_ARCHIVE_PATH");
        assert_eq!(ArchiveError::limit("n").code(), "E_ARCHIVE_LIMIT");
    }
}
