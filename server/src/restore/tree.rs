//! `restore CLIENT SOURCE --to DIR` of a snapshot tree: the manifest, checked
//! against its catalog digest, reproduced from the client's store by
//! [`ferry_tree::restore`] (content, types, modes, mtimes, symlinks, hard
//! links, empty directories, every name; owners when run as root).

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::trees::TreeLayout;

pub fn restore(cfg: &NodeConfig, a: &Artifact, args: &super::RestoreArgs) -> anyhow::Result<String> {
    if args.stdout || args.into_db.is_some() {
        return Err(UsageError(format!("{} is a snapshot tree: restore it with --to DIR", a.path)).into());
    }
    let Some(to) = &args.to else {
        return Err(UsageError(format!("{} is a snapshot tree: say where with --to DIR", a.path)).into());
    };
    let layout = TreeLayout::new(cfg.data_dir());
    let m = layout.checked_manifest(a).map_err(anyhow::Error::msg)?;
    let snap = layout.snapshot_dir(&a.client, &a.source, &a.received);
    let store = ferry_tree::store::Store::open(crate::trees::snapshot_store(cfg, &a.client, &snap, &m))?;
    let mut policy = ferry_tree::restore::RestorePolicy::from(&args.policy);
    // A tree restore gives owners back whenever it can (as root); the
    // library leaves them alone otherwise.
    policy.preserve_owner = true;
    let s = ferry_tree::restore::restore(&m, &store, to, &policy)?;
    let mut msg = format!(
        "restored {} {} snapshot {} into {}: {} files ({} bytes), {} directories, {} symlinks, {} hard links, {} special",
        a.client,
        ferry_text::escape(&a.source, 200),
        a.received,
        to.display(),
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.special
    );
    if !s.not_created.is_empty() {
        msg.push_str(&format!("; {} not created (see --devices)", s.not_created.len()));
    }
    Ok(msg)
}
