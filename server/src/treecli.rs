//! The `ferry-node` commands that exist only for snapshot trees: `rescue`
//! and `diff` (flattened into [`crate::cli::Command`]).

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::NodeConfig;
use crate::exit::{self, UsageError};
use crate::out;

#[derive(Debug, Subcommand)]
pub enum TreeCommand {
    /// Make a snapshot tree usable in place, without copying data: an
    /// overlay mount on DIR whose writes stay beside DIR and never reach
    /// the backup (see the README, "Snapshot trees and rescue"). Root only.
    ///
    /// The default view shows the manifest's owners, modes and mtimes
    /// (metacopy; the metadata layer is built by the pull, node.toml
    /// `[tree] prepare_rescue`, or else on a snapshot's first rescue, and
    /// cached). `--nfs HOST` mounts a view knfsd can export instead
    /// and prints its /etc/exports line (the kernel does not allow NFS
    /// export of a metacopy overlay: that view shows the node's owners and
    /// modes). `--undo DIR` unmounts and removes what a rescue made.
    Rescue {
        /// The client (with --undo: the DIR to undo).
        client: PathBuf,
        /// The snapshot tree's source.
        source: Option<String>,
        /// The empty (or absent) directory to mount the view on.
        dir: Option<PathBuf>,
        /// The newest snapshot received at or before this time
        /// (2026-11-01, 2026-11-01T10:00:00Z or 20261101T100000Z).
        #[arg(long)]
        at: Option<String>,
        /// A view to serve to HOST over NFS (an /etc/exports host pattern);
        /// prints the exports line (nothing under /etc is written).
        #[arg(long, value_name = "HOST")]
        nfs: Option<String>,
        /// Unmount the view on the one argument DIR and remove the upper,
        /// work and mount-point directories its rescue made beside it.
        #[arg(long, conflicts_with_all = ["at", "nfs"])]
        undo: bool,
    },
    /// What was added, removed and changed (content, mode, owner, type,
    /// symlink target, hard links) between two snapshot trees of a source:
    /// A and B as times or snapshot names, the newest pair by default, A
    /// against the newest when only A is given.
    Diff {
        /// The client.
        client: String,
        /// The snapshot tree's source.
        source: String,
        /// The older snapshot (a snapshot name or time: the newest at or
        /// before it).
        a: Option<String>,
        /// The newer snapshot (default: the newest).
        b: Option<String>,
        /// Compare modification times too (directories change mtime with
        /// every entry, so this is noisy).
        #[arg(long)]
        mtime: bool,
    },
}

pub fn run(cfg: &NodeConfig, command: TreeCommand, json: bool) -> anyhow::Result<u8> {
    match command {
        TreeCommand::Rescue { client, source, dir, undo: true, .. } => {
            if source.is_some() || dir.is_some() {
                return Err(UsageError("rescue --undo DIR: one argument, the rescued DIR".into()).into());
            }
            let u = crate::rescue::undo_checked(&client)?;
            if json {
                out::json(&u)?;
            } else {
                out::line(&format!(
                    "rescue at {} undone: {} unmounted, {} removed",
                    u.dir.display(),
                    u.unmounted.len(),
                    u.removed.len()
                ))?;
            }
            Ok(exit::OK)
        }
        TreeCommand::Rescue { client, source, dir, at, nfs, undo: false } => {
            let (Some(source), Some(dir)) = (source, dir) else {
                return Err(UsageError("rescue CLIENT SOURCE DIR: say which source and where".into()).into());
            };
            let client = client.to_str().ok_or_else(|| UsageError("the client name is not UTF-8".into()))?;
            let at = at.as_deref().map(|s| crate::catalog::parse_time(s, true)).transpose()?;
            let r = crate::rescue::rescue(cfg, client, &source, at.as_deref(), &dir, nfs.as_deref())?;
            if json {
                out::json(&r)?;
            } else {
                out::line(&format!(
                    "{} {} snapshot {} mounted on {} ({} view, {} ms{})",
                    r.client,
                    ferry_text::escape(&r.source, 200),
                    r.received,
                    r.dir.display(),
                    r.kind,
                    r.elapsed_ms,
                    if r.meta_built { format!(", metadata layer built in {} ms", r.meta_ms) } else { String::new() }
                ))?;
                out::line(&format!(
                    "writes go to {}; undo with: ferry-node rescue --undo {}",
                    crate::rescue::private_dir(&r.dir).join("upper").display(),
                    r.dir.display()
                ))?;
                match &r.exports {
                    Some(line) => {
                        out::line("/etc/exports line (then `exportfs -ra`):")?;
                        out::line(line)?;
                    }
                    None => out::line(
                        "to serve a rescue host over NFS, use --nfs HOST (knfsd cannot export this metacopy view)",
                    )?,
                }
            }
            Ok(exit::OK)
        }
        TreeCommand::Diff { client, source, a, b, mtime } => {
            let d = crate::treediff::diff(cfg, &client, &source, a.as_deref(), b.as_deref(), mtime)?;
            if json {
                out::json(&d.to_json())?;
            } else {
                for l in d.lines() {
                    out::line(&l)?;
                }
            }
            Ok(exit::OK)
        }
    }
}
