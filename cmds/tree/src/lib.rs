//! Snapshot trees: incremental, deduplicated filesystem backups that a
//! rescue host can use in place (issue 10).
//!
//! # Why
//!
//! A `tar.zst` per backup stores a 50 GB tree again in full when 1% of it
//! changed, and getting a crashed host back means extracting everything.
//! The systems Ferry replaces kept each backup as a plain directory tree
//! whose unchanged files are hard links to the previous one (rsnapshot,
//! BackupPC). This crate does that without giving up what makes Ferry
//! different: the node pulls, verifies every byte, and trusts nothing the
//! client says.
//!
//! # The flow
//!
//! ```text
//! client                                   node
//! scan::scan(opts) ──► manifest text ──►   manifest::read(.., &limits)      hostile input
//!   (hash cache under state_dir)           snapshot::missing(&m, &store)    distinct contents to fetch
//!                                          store.put(reader, size, &sha)    verified while written
//!                                          snapshot::build(&m, &store, dest)  one rename
//!                                          restore::restore / diff::diff / store.verify / store.gc
//! ```
//!
//! * [`manifest`] — the format: versioned, line-oriented, printable ASCII,
//!   one canonical spelling, a strict parser that refuses with a typed
//!   reason and a line number.
//! * [`scan`] — the client: an `lstat` walk with a hash cache (an unchanged
//!   tree costs no reads), and an O(changes) [`scan::update`] for a watcher.
//! * [`store`] — the node's content-addressed store, one read-only inode
//!   per distinct content, with a second copy at the hard-link limit.
//! * [`snapshot`] — builds `data/<client>/<source>/<time>/` as links into
//!   the store, with the manifest beside it as `<time>.ftree`.
//! * [`restore`] — reproduces a snapshot faithfully into a directory.
//! * [`diff`] — what changed between two manifests, as JSON or escaped text.
//!
//! # What the node trusts: nothing in the manifest
//!
//! The manifest comes from a client that may be compromised. Every path is
//! checked (relative, no `..`/`.`/empty component, no NUL, no `/` inside a
//! name, `NAME_MAX`/`PATH_MAX`), every entry's parent must be a directory
//! listed before it (so no path can lie below a symlink), entries are
//! sorted and unique, hard-link groups are consistent, and entry and byte
//! counts are capped by [`manifest::Limits`]. Sizes and digests are only
//! *promises*: each content is hashed as it arrives and enters the store
//! only if it is exactly what was promised ([`store::Store::put`]). The
//! node then creates only directories, links to its own store inodes and
//! symlinks (never followed), inside a staging directory opened with
//! `O_NOFOLLOW` at every step; it never creates devices, FIFOs or sockets,
//! and never applies the manifest's modes or owners to its own files. Those
//! live in the manifest and are applied only by a [`restore`] an
//! administrator asks for. [`manifest::Manifest::check`] re-runs the
//! validation before a build or restore from a manifest held in memory.
//!
//! # Why dedup is per client by default
//!
//! A store shared by several clients tells each of them, by what the node
//! does *not* download, which contents the others hold: a hostile client
//! lists the digest of a file it guesses another host has (a known
//! configuration with a default password, a leaked document) and watches
//! whether the node fetches it. So each client gets its own store (for
//! example `data/<client>/.store`, on the same filesystem as its
//! snapshots, since snapshots hard-link into it), and sharing across the
//! clients of one gitosis group is an explicit opt-in that accepts that
//! trade-off.
//!
//! # Reason codes
//!
//! Refusals carry stable codes for the node's logs, mails and `E*` files:
//! `E_TREE_FORMAT`, `E_TREE_PATH`, `E_TREE_DUP`, `E_TREE_LINK`,
//! `E_TREE_LIMIT` ([`manifest::Refusal::code`]) and `E_TREE_CONTENT` (a
//! download that is not what the manifest promised,
//! [`store::StoreError::code`]); disk problems are `E_DISK_FULL` or
//! `E_STORE`, as elsewhere.

pub mod diff;
mod dirstack;
pub mod manifest;
mod names;
pub mod restore;
pub mod scan;
pub mod snapshot;
pub mod store;

#[cfg(test)]
mod testutil;
