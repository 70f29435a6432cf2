//! `ferry-gitosis`: gitosis-compatible enrollment for Ferry backup nodes.
//!
//! Ferry clients push request files to per-client queue repositories on a
//! backup node. Who may push where is enrolled the gitosis way: an admin
//! repository `gitosis-admin` holding `gitosis.conf` (`[gitosis]`,
//! `[group …]` with `members`/`writable`/`readonly`/`map`, `[repo …]`) and
//! `keydir/<user>.pub`. gitosis itself is dead (Python 2, not packaged in
//! Debian 12), so this crate re-implements its observable behaviour
//! (shared/GITOSIS.md) and reads real gitosis.conf files unchanged:
//!
//! * [`conf`]: the Python 2 `RawConfigParser` rules, quirks included;
//! * [`username`]: gitosis' safe-user-name rule and Ferry's client names;
//! * [`access`]: group membership and access resolution;
//! * [`serve`]: the `SSH_ORIGINAL_COMMAND` check and access decision with
//!   gitosis' exact messages;
//! * [`authkeys`]: authorized_keys rendering that takes over a
//!   gitosis-managed file.
//!
//! What Ferry adds on top of gitosis (see SECURITY.md AC-01..AC-12, C9):
//!
//! * **validation before activation** ([`enroll::Enrollment::build`]): a
//!   push with a broken config, a bad key or an unsafe grant is refused as
//!   a whole, with every problem listed, and the last good state stays
//!   active (gitosis weakness W1);
//! * **strict keys** ([`keys`]): each key line is parsed, its blob decoded
//!   and checked, options/certificates/DSA/short RSA refused, and only a
//!   canonical `type base64` is written;
//! * **`restrict`** on every generated authorized_keys line instead of
//!   gitosis' list of `no-*` options;
//! * **duplicate-key refusal**: one key under two users is an error, since
//!   sshd would attribute it to whichever line comes first (AC-08);
//! * **implicit queue grant**: a `[ferry client NAME]` section (Ferry's
//!   per-client facts: address, pinned host key, export dir, quotas) also
//!   grants `NAME` write access to `queue/NAME`, so one section enrolls a
//!   client; nobody else may be granted that queue (the queue name is the
//!   client's identity, I1);
//! * path options that would let an admin-repo writer point the node
//!   anywhere (`repositories`, `generate-files-in`,
//!   `ssh-authorized-keys-path`) are not honoured (W2); unsafe `map`
//!   targets are refused.
//!
//! Everything here is pure (no I/O, no environment, no panics on any
//! input); the effectful hooks live in the `hooks_*` modules. Untrusted
//! text in errors and warnings is escaped ([`escape`]).

pub mod access;
pub mod authkeys;
pub mod conf;
pub mod enroll;
pub mod escape;
pub mod fuzzing;
pub mod keys;
pub mod serve;
pub mod serve_restore;
pub mod username;

#[cfg(test)]
mod testutil;
