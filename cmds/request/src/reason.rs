//! Reason codes and the [`Rejection`] error that carries one.
//!
//! Reason codes are the one vocabulary every Ferry component uses when it
//! rejects a request or fails a job: the log event's `reason_code`, the
//! request's `E*` file, the mail subject and the exit status all name the
//! same `E_...` string. They live here, beside the grammar, because the
//! request parser is the first place that needs them and every other crate
//! already depends on it.

use std::fmt;

use ferry_text::{EXCERPT_CHARS, escape, escape_bytes};

macro_rules! reasons {
    ($( $(#[$meta:meta])* $variant:ident => $code:literal, $describe:literal; )*) => {
        /// Why a request was rejected or a job failed.
        ///
        /// Callers branch on the variant; people and scripts read
        /// [`Reason::code`]. Codes are stable: they appear in logs, mails
        /// and `E*` files that outlive any one release.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$meta])* $variant, )*
        }

        impl Reason {
            /// Every reason, in declaration order (for documentation,
            /// exhaustive tests and metrics labels).
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// The stable `E_...` code written to logs, mails and `E*` files.
            pub fn code(&self) -> &'static str {
                match self { $( Reason::$variant => $code, )* }
            }

            /// One sentence for a person: what went wrong and what to do.
            pub fn describe(&self) -> &'static str {
                match self { $( Reason::$variant => $describe, )* }
            }

            /// The reason with this exact code, if any (codes are
            /// case-sensitive, as written by [`Reason::code`]).
            pub fn from_code(code: &str) -> Option<Reason> {
                match code {
                    $( $code => Some(Reason::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// NUL, TAB, ESC, DEL, a lone CR or another control byte in a request.
    ReqCtrlChar => "E_REQ_CTRL_CHAR",
        "The request contains a control character (NUL, TAB, ESC, DEL or a CR not directly before the final LF); write it as one line of printable ASCII ending in LF.";
    /// The request file or its line is over the limit.
    ReqTooLong => "E_REQ_TOO_LONG",
        "The request file or line is longer than the limit; a request is one short line, so check what the client module wrote.";
    /// More than one line in a request file, or too many requests at once.
    ReqTooMany => "E_REQ_TOO_MANY",
        "The request file holds more than one line or too many requests arrived at once; write each request as a single line in its own file.";
    /// The line breaks the grammar: spacing, field count, missing LF.
    ReqSyntax => "E_REQ_SYNTAX",
        "The request line does not follow the grammar (single spaces between fields, the exact field count, a final LF); see the ferry-request documentation.";
    /// A byte-order mark or invalid UTF-8.
    ReqEncoding => "E_REQ_ENCODING",
        "The request file starts with a byte-order mark or is not valid UTF-8; write it as plain ASCII.";
    /// A non-ASCII character.
    ReqCharset => "E_REQ_CHARSET",
        "The request contains a non-ASCII character; only printable ASCII is accepted, so rename the source or file.";
    /// A name or path segment outside the allow-list.
    ReqName => "E_REQ_NAME",
        "A name or path segment is not of the form [A-Za-z0-9][A-Za-z0-9._-] with at most 100 characters; rename the source, repository or file.";
    /// A malformed or out-of-range timestamp.
    ReqTimestamp => "E_REQ_TIMESTAMP",
        "The timestamp is not a valid UTC time written YYYYMMDDTHHMMSSZ within the accepted range; check the client's clock and module.";
    /// A malformed sha256 field.
    ReqDigest => "E_REQ_DIGEST",
        "The sha256 field is not exactly 64 lower-case hexadecimal digits; let the client module compute the digest again.";
    /// A malformed or out-of-range size field.
    ReqSize => "E_REQ_SIZE",
        "The size field is not a plain decimal byte count (no sign, no leading zeros, at most 2^63-1); let the client module write it again.";
    /// A module (verb) the node does not know.
    ReqModule => "E_REQ_MODULE",
        "The request names a module this node does not know; use git, sftp, tree or dummy, in lower case.";
    /// A key=value field that is unknown, missing, repeated or out of order.
    ReqField => "E_REQ_FIELD",
        "A key=value field is unknown, missing, repeated or out of order; sftp and tree requests need sha256=, size= and source=, in that order, and nothing else.";
    /// The request entry in the queue repository is not a regular blob.
    ReqFileType => "E_REQ_FILETYPE",
        "The request entry in the queue repository is not a regular file (a symlink, submodule or directory); push request files as plain files.";
    /// The same request was already accepted.
    ReqDuplicate => "E_REQ_DUPLICATE",
        "This request repeats one already accepted, so nothing was done again; no action is needed.";
    /// The request would replace data already stored.
    ReqConflict => "E_REQ_CONFLICT",
        "This request names a backup already stored with different content; stored backups are never replaced, so prepare it again under a new timestamp.";
    /// The path is not canonical or lies outside the enrolled prefix.
    ReqPath => "E_REQ_PATH",
        "The path has empty, '.' or '..' segments, a trailing slash, too many segments, or lies outside the directory enrolled for this client; use a canonical path under the enrolled prefix.";
    /// The host is not the host enrolled for this client.
    ReqHostNotOwned => "E_REQ_HOST_NOT_OWNED",
        "The host in the request is not the one enrolled for this client; a client may only ask the node to pull its own data.";
    /// Too many requests are pending for this client.
    ReqPending => "E_REQ_PENDING",
        "Too many requests from this client are waiting; let the backlog drain, or raise the client's limit in gitosis.conf.";
    /// A name the node keeps for its own directories at that level.
    ReqNameReserved => "E_REQ_NAME_RESERVED",
        "The source name is one the node keeps for its own directories (git, trees, store, tmp, incomplete, lost+found, in any letter case); rename the source.";
    /// A name differing only in letter case from one already stored.
    ReqNameCase => "E_REQ_NAME_CASE",
        "The name differs only in letter case from one this client already stores (one directory on a case-insensitive file system or object store); keep the stored spelling or pick another name.";
    /// A tree request's root is not on the manifest's user, host and port.
    ReqTreeRoot => "E_REQ_TREE_ROOT",
        "The tree request's root URL names another user, host or port than its manifest URL; the client writes both for its own enrolled account.";
    /// Events for this client are being rate-limited.
    RateLimit => "E_RATE_LIMIT",
        "Too many events for this client in a short time; further ones are counted but not reported until the window passes.";
    /// A URL scheme or transport that is not allowed.
    UrlScheme => "E_URL_SCHEME",
        "The URL scheme is not allowed; use git://, ssh:// or https:// for git requests and sftp:// for files, written in lower case.";
    /// A URL component that starts with `-` and could be read as an option.
    UrlDash => "E_URL_DASH",
        "A part of the URL (user, host or path segment) starts with '-', which git or ssh could take as an option; rename it.";
    /// A host that is not a lower-case LDH name or dotted-quad IPv4.
    UrlHost => "E_URL_HOST",
        "The host is not a lower-case DNS name or a dotted-quad IPv4 address; use the host name enrolled for this client.";
    /// A missing or malformed user name.
    UrlUser => "E_URL_USER",
        "The user name is missing or not of the form [a-z_][a-z0-9_-] with at most 32 characters; use the user enrolled for this client.";
    /// A malformed or not-enrolled port.
    UrlPort => "E_URL_PORT",
        "The port is not a decimal number from 1 to 65535 without sign or leading zeros, or not the enrolled port; fix or drop it.";
    /// Credentials, or a user where none is allowed, in a URL.
    UrlUserinfo => "E_URL_USERINFO",
        "The URL carries a user or credentials where none are allowed; remove 'user:secret@' and configure access on the node instead.";
    /// A character that is never allowed in a URL.
    UrlCharset => "E_URL_CHARSET",
        "The URL contains '%', '?', '#', a backslash, a space or a control character; write the plain path without encoding.";
    /// The client refused the node's credentials.
    FetchAuth => "E_FETCH_AUTH",
        "The client refused the node's credentials; check that the node's pull key is installed for the client's backup account.";
    /// The client's SSH host key does not match the pinned key.
    FetchHostKey => "E_FETCH_HOSTKEY",
        "The client's SSH host key does not match the key pinned at enrolment; find out why (reinstall or attack) before pinning the new key.";
    /// A transfer stalled or ran too long.
    FetchTimeout => "E_FETCH_TIMEOUT",
        "The transfer stalled or took too long; check the client's network and load, then request the backup again.";
    /// A transfer exceeded a size or count limit.
    FetchLimit => "E_FETCH_LIMIT",
        "The transfer exceeded a size, object or time limit; check the source, or raise the client's limits.";
    /// The downloaded file's SHA-256 differs from the request's.
    FetchDigestMismatch => "E_FETCH_DIGEST_MISMATCH",
        "The downloaded file's SHA-256 differs from the one in the request; it was discarded, so prepare and request it again.";
    /// The downloaded file's size differs from the request's.
    FetchSizeMismatch => "E_FETCH_SIZE_MISMATCH",
        "The downloaded file's size differs from the one in the request; it was discarded, so prepare and request it again.";
    /// The remote file or repository does not exist.
    FetchNotFound => "E_FETCH_NOT_FOUND",
        "The requested file or repository does not exist on the client; check the path and that it was prepared before the request was sent.";
    /// The remote path is not a regular file.
    FetchNotRegular => "E_FETCH_NOT_REGULAR",
        "The requested remote path is not a regular file (a directory, symlink or device); export a plain file.";
    /// The remote answered with a redirect, which is never followed.
    FetchRedirect => "E_FETCH_REDIRECT",
        "The client's server answered with a redirect, which the node never follows; serve the repository at the requested URL.";
    /// Any other transfer failure.
    FetchFailed => "E_FETCH_FAILED",
        "The transfer failed; read the escaped remote output in the log event, fix the cause on the client and request again.";
    /// The fetch ended without error but left advertised refs behind
    /// (typically a shallow client repository).
    FetchIncomplete => "E_FETCH_INCOMPLETE",
        "The client's repository could not be mirrored whole (usually it is a shallow clone); the mirror was left as it was, so run git fetch --unshallow in it on the client and request again.";
    /// git's object checks (fsck) refused an object of the repository.
    FetchFsck => "E_FETCH_FSCK",
        "git's object checks refused an object of the repository (the detail names the fsck id); nothing was stored, so repair that history on the client, or add the id to git_fsck_ignore if it is harmless.";
    /// A tree manifest breaks the format (header, fields, order, trailer).
    TreeFormat => "E_TREE_FORMAT",
        "The tree manifest breaks the format (header, field, order or trailer); nothing was stored, so let the client scan the tree again.";
    /// A tree manifest path is absolute, holds `..`, `.` or an empty
    /// component, or lies below something that is not a directory.
    TreePath => "E_TREE_PATH",
        "A tree manifest path is absolute, holds '..', '.', an empty component or NUL, is too long, or lies below a non-directory; nothing was stored.";
    /// A tree manifest lists the same path twice.
    TreeDup => "E_TREE_DUP",
        "The tree manifest lists the same path more than once; nothing was stored, so let the client scan the tree again.";
    /// A tree manifest's hard-link groups are inconsistent.
    TreeLink => "E_TREE_LINK",
        "A hard-link group of the tree manifest mixes types, disagrees on content or is numbered wrongly; nothing was stored.";
    /// A tree manifest exceeds the node's `[tree]` limits.
    TreeLimit => "E_TREE_LIMIT",
        "The tree manifest has more entries, bytes or manifest bytes than the node's [tree] limits; split the source or raise the limits.";
    /// Tree content that is not what its manifest promised.
    TreeContent => "E_TREE_CONTENT",
        "Content the client served is not what the tree manifest promised (size or sha256); it was not stored, so back the tree up again.";
    /// The client's storage quota would be exceeded.
    Quota => "E_QUOTA",
        "The client's storage quota would be exceeded; purge old backups or raise the quota in gitosis.conf.";
    /// The node's disk is full.
    DiskFull => "E_DISK_FULL",
        "The node's disk is full; free space on the node, then request the backup again.";
    /// Writing to the node's storage failed.
    Store => "E_STORE",
        "Writing to the node's storage failed; check the node's file system and its log.";
    /// The object store could not be reached (connection refused, timed
    /// out, or a server error); the request waits in the queue.
    StoreDown => "E_STORE_DOWN",
        "The object store could not be reached; the request was put back in the queue and runs again once the store answers.";
    /// The store's encryption key is missing, unreadable, refused, or
    /// does not decrypt an object.
    StoreKey => "E_STORE_KEY",
        "The store's encryption key is missing, exposed or not the one the object was encrypted for; restore the key file from its offline copy.";
    /// An archive entry has an absolute, `..` or overlong path.
    ArchivePath => "E_ARCHIVE_PATH",
        "An archive entry's path is absolute, contains '..' or is too long; rebuild the archive with short relative paths.";
    /// An archive entry is a link that points outside the archive.
    ArchiveLink => "E_ARCHIVE_LINK",
        "An archive entry is a symlink or hard link that points outside the archive; rebuild the archive without it.";
    /// An archive entry of a type that is never extracted.
    ArchiveType => "E_ARCHIVE_TYPE",
        "An archive entry is a device, FIFO, socket or other type that is never extracted; rebuild the archive without it.";
    /// An archive holds the same path twice.
    ArchiveDup => "E_ARCHIVE_DUP",
        "The archive holds the same path more than once; rebuild it so every path appears once.";
    /// An archive exceeds an entry, size, depth or expansion limit.
    ArchiveLimit => "E_ARCHIVE_LIMIT",
        "The archive exceeds an entry-count, size, depth or expansion limit; split it or raise the client's limits.";
    /// A corrupt or unsupported archive.
    ArchiveFormat => "E_ARCHIVE_FORMAT",
        "The archive is corrupt or in an unsupported format; rebuild it as a plain tar, optionally zstd-compressed.";
    /// The client's account may not read a file or directory of an fs source.
    SourceUnreadable => "E_SOURCE_UNREADABLE",
        "The client's account may not read a file of an fs source (path and account are in the reason); give it read access (group or ACL, see the README) or set unreadable = \"skip\".";
    /// The database refused the dump's account, or sudo refused to become
    /// a source's `os_user`.
    SourceDbAccess => "E_SOURCE_DB_ACCESS",
        "The database refused the backup's account, or sudo refused to run the dump as os_user; add the role, grant or sudoers line the reason names.";
    /// The key may not do what it asked.
    AclDenied => "E_ACL_DENIED",
        "This key is not allowed to do that; check its group's members and writable or readonly entries in gitosis.conf.";
    /// A malformed or refused public key in `keydir/`.
    EnrolKey => "E_ENROL_KEY",
        "A public key in keydir/ is malformed or of a refused type; replace it with one valid OpenSSH public key.";
    /// The same public key is enrolled under two names.
    EnrolDupKey => "E_ENROL_DUP_KEY",
        "The same public key is enrolled under two names; each key must identify exactly one client or administrator.";
    /// gitosis.conf is invalid.
    EnrolConf => "E_ENROL_CONF",
        "gitosis.conf cannot be parsed or holds invalid Ferry settings; fix it and push the gitosis-admin repository again.";
    /// The client or key is not enrolled.
    NotEnrolled => "E_NOT_ENROLLED",
        "This client or key is not enrolled on this node; enrol it in the gitosis-admin repository first.";
    /// The web view's access files could not be rewritten.
    WebSync => "E_WEB_SYNC",
        "The web view's access files could not be rewritten, so the view stays closed to everyone; fix the cause (disk space, permissions of the web directory) and run ferry-node web sync.";
    /// A bug or unexpected state on the node.
    Internal => "E_INTERNAL",
        "Something unexpected happened on the node; this is a bug, so report it with the log event.";
}

impl fmt::Display for Reason {
    /// The code alone: it is the stable, greppable part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected request (or a failed step), ready to be logged or mailed.
///
/// `detail` is always printable ASCII on one line: it is built only through
/// the constructors here, which escape every untrusted byte with
/// [`ferry_text`] and cap the excerpt at [`EXCERPT_CHARS`] characters, so a
/// `Rejection` can be written to any sink as it is (SECURITY.md I6, C11).
/// `offset` is the byte offset of the problem in the input that was parsed,
/// when one is meaningful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}", .reason.code(), OffsetSuffix(*.offset), .detail)]
pub struct Rejection {
    /// What kind of problem this is; callers branch on it.
    pub reason: Reason,
    /// Byte offset of the problem in the parsed input, if known.
    pub offset: Option<usize>,
    /// Escaped human-readable detail: a message and a quoted excerpt.
    pub detail: String,
}

/// Formats `" at byte N"` when there is an offset.
struct OffsetSuffix(Option<usize>);

impl fmt::Display for OffsetSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(o) => write!(f, " at byte {o}"),
            None => Ok(()),
        }
    }
}

impl Rejection {
    /// A rejection whose detail is `message: "excerpt"`, both escaped; the
    /// excerpt is capped at [`EXCERPT_CHARS`] characters.
    pub fn new(reason: Reason, offset: Option<usize>, message: &str, excerpt: &[u8]) -> Self {
        let detail = format!("{}: \"{}\"", escape(message, EXCERPT_CHARS), escape_bytes(excerpt, EXCERPT_CHARS));
        Rejection { reason, offset, detail }
    }

    /// A rejection with only a message (escaped and capped), for failures
    /// that have no useful excerpt.
    pub fn plain(reason: Reason, offset: Option<usize>, message: &str) -> Self {
        Rejection { reason, offset, detail: escape(message, EXCERPT_CHARS) }
    }

    /// The reason's stable code.
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }

    /// Moves the offset by `base`, for a value that was validated on its own
    /// and then located inside a larger input.
    pub(crate) fn shifted(mut self, base: usize) -> Self {
        self.offset = self.offset.map(|o| o.saturating_add(base));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate {}", r.code());
            assert!(r.code().starts_with("E_"));
            assert!(r.code().bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()));
            assert_eq!(Reason::from_code(r.code()), Some(*r));
            let d = r.describe();
            assert!(d.ends_with('.') && d.is_ascii() && !d.contains('\n'), "{d}");
            // One line of an alert mail (ferry-notify cuts longer lines).
            assert!(d.len() <= 200, "{} describes itself in {} characters", r.code(), d.len());
        }
        assert_eq!(Reason::from_code("e_req_syntax"), None);
        assert_eq!(Reason::from_code(""), None);
    }

    #[test]
    fn required_codes() {
        for (r, c) in [
            (Reason::ReqCtrlChar, "E_REQ_CTRL_CHAR"),
            (Reason::ReqFileType, "E_REQ_FILETYPE"),
            (Reason::ReqHostNotOwned, "E_REQ_HOST_NOT_OWNED"),
            (Reason::FetchHostKey, "E_FETCH_HOSTKEY"),
            (Reason::FetchDigestMismatch, "E_FETCH_DIGEST_MISMATCH"),
            (Reason::EnrolDupKey, "E_ENROL_DUP_KEY"),
            (Reason::Internal, "E_INTERNAL"),
        ] {
            assert_eq!(r.code(), c);
            assert_eq!(r.to_string(), c);
        }
    }

    #[test]
    fn display_and_escaping() {
        let r = Rejection::new(Reason::ReqSyntax, Some(4), "two spaces between fields", b"git  git://x/\x1b[2J\n");
        assert_eq!(r.to_string(), "E_REQ_SYNTAX at byte 4: two spaces between fields: \"git  git://x/\\x1B[2J\\n\"");
        let p = Rejection::plain(Reason::Internal, None, "oops\nforged");
        assert_eq!(p.to_string(), "E_INTERNAL: oops\\nforged");
        let long = Rejection::new(Reason::ReqName, None, "bad", &[b'a'; 1000]);
        assert!(long.detail.len() < 260);
        assert_eq!(long.shifted(3).offset, None);
        assert_eq!(r.shifted(3).offset, Some(7));
    }
}
