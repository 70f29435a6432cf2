//! tar+zstd archives for Ferry: streaming creation on the client, strict and
//! confined extraction on the node.
//!
//! # Why this crate exists
//!
//! The client's `fs` module turns a directory tree into one `.tar.zst` file
//! ([`create_tar_zst`]). The backup node downloads that file and stores it
//! opaque: it never extracts client data on ingest. Only `ferry-node restore`
//! extracts it ([`extract_tar_zst`]), for an administrator, and the archive
//! may come from a compromised client. So extraction is written as a parser
//! of hostile input (SECURITY.md B.5 "AX-*", C6, SF-12):
//!
//! * the tar crate is used only to split the stream into raw records
//!   (`Entries::raw(true)`); GNU long names and PAX records are read by this
//!   crate under a size cap, and `Archive::unpack`/`Entry::unpack*` are never
//!   called (they silently skip `..`, strip `/`, follow planted symlinks and
//!   leave partial trees);
//! * every name is validated before anything is written (only normal
//!   components, length/depth caps, no duplicates, optional case-fold/NFC
//!   collision check), and every limit (entries, bytes, ratio, extension
//!   header size) is enforced while streaming;
//! * everything is created through directory file descriptors opened
//!   beneath the staging root with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` (or component by component with `O_NOFOLLOW`
//!   where the kernel lacks it), files with `O_CREAT|O_EXCL|O_NOFOLLOW`, so
//!   no write can go through a symlink or leave the staging directory,
//!   whatever the archive says. That is why symlinks themselves can be
//!   restored verbatim by default, wherever they point;
//! * the tree is built in a fresh `0700` staging directory next to the
//!   destination and renamed into place only once the whole archive was read
//!   and validated; on any error the staging directory is removed without
//!   following links and nothing is published (AX-23).
//!
//! [`list_tar_zst`] runs the same validation without writing anything
//! (`verify`, `find`). [`manifest`] describes a tree (lstat only) so tests
//! and `verify` can compare trees. [`fsutil`] holds the directory-fd
//! helpers that never follow a link, shared with `ferry-tree`.
//!
//! # Reason codes
//!
//! Every [`ArchiveError`] maps to one of the reason codes in SECURITY.md
//! through [`ArchiveError::code`]; entry names in messages are escaped with
//! [`escape_name`] so a hostile name cannot forge log lines or terminal
//! escapes.

mod create;
mod error;
mod extract;
pub mod fsutil;
pub mod manifest;
mod pattern;
mod pax;

pub use create::{CreateOptions, CreateStats, MAX_UNREADABLE_LISTED, Unreadable, create_tar_zst, current_account};
pub use error::{ArchiveError, escape_name};
pub use extract::{EntryKind, ExtractPolicy, ExtractStats, ListEntry, SymlinkPolicy, extract_tar_zst, list_tar_zst};
pub use pattern::ExcludePattern;
