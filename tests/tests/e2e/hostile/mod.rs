//! The hostile-input suite (SECURITY.md section B): what a compromised
//! client can send the node, case by case, through the real channels — its
//! queue repository (local transport through the real hooks, exactly what
//! `git push` over ssh reaches), the node's sshd with its own key, and its
//! own sshd/gate/git/sftp server that the node pulls from.
//!
//! Every case asserts three things:
//!
//! 1. the documented outcome: the request ends in `E` with its reason code
//!    in `E<id>.why` and in the events journal, or the push is refused with
//!    the code in the pusher's output and the journal, or — where the safe
//!    outcome is "contained" — the data is stored inert;
//! 2. nothing outside the allowed place changed: a canary directory in the
//!    node's home, client B's repositories, exports, data, pool and queue,
//!    the node's keys, authorized_keys and live enrollment are hashed
//!    before and after ([`kit::Guard`]), and no execution canary
//!    (`/tmp/ferry-canary-<pid>-…`) ever appears;
//! 3. the node stays alive: a valid request still ends in `F` afterwards.
//!
//! One `#[test]` per case class, named after it (`rp09_…`, `gu07_…`,
//! `ax04_…`), so a failure names the class that broke. Each test starts its
//! own fleet ([`kit::Fleet`]: a node and clients, a few seconds), pushes its
//! cases in as few pushes as the refusal rules allow and scans once, then
//! checks case by case. The areas:
//!
//! - [`requests`]: request files (RP), URLs refused at parse or enrollment
//!   level (GU), identity in content (AC-10), text aimed at sinks (NL), a
//!   flood of rejections (RE-05);
//! - [`access`]: pushes, ssh commands and enrollments (AC), per-push and
//!   backlog limits (RE);
//! - [`repos`]: what the client's repositories hold (MR) and what its git
//!   server answers (GU and RE at fetch time);
//! - [`downloads`]: what the client's sftp server serves (SF);
//! - [`archives`]: what its archives hold, met when an administrator
//!   restores them (AX);
//! - [`trees`]: what its snapshot-tree manifests and gate claim (TR).

mod access;
mod archives;
mod downloads;
pub(crate) mod kit;
mod repos;
mod requests;
mod trees;
