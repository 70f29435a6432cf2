//! Giving an artifact back: an fs archive extracted with the strict
//! extractor, a dump replayed into a new database ([`super::db`]), a pipe
//! stream to standard output, or the verified file itself into a
//! directory. Every restore re-hashes the stored artifact first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::store::ArtifactKey;
use crate::verify::{bar, check, hash_file};

/// How to give an artifact back.
#[derive(Debug, Default)]
pub struct RestoreArgs {
    pub to: Option<PathBuf>,
    pub at: Option<String>,
    /// For a database dump: the new database and how to reach the server.
    pub into_db: Option<super::db::DbTarget>,
    pub stdout: bool,
    pub policy: ferry_archive::ExtractPolicy,
}

/// Restore the artifact `a` (chosen by [`super::restore`]). Returns a
/// description of what was done.
pub fn restore(cfg: &NodeConfig, a: &Artifact, args: &RestoreArgs, show: bool) -> anyhow::Result<String> {
    if a.module == crate::trees::MODULE {
        return super::tree::restore(cfg, a, args);
    }
    let store = crate::store::open(cfg)?;
    if let Some(problem) = check(store.as_ref(), a, show) {
        bail!("the stored artifact {} fails its integrity check ({problem}); run `ferry-node verify`", a.path);
    }
    restore_checked(cfg, a, args, show)
}

/// [`restore`] of an artifact whose digest the caller has just checked
/// ([`super::all`] checks first, to fall back to an older artifact).
pub(super) fn restore_checked(
    cfg: &NodeConfig,
    a: &Artifact,
    args: &RestoreArgs,
    show: bool,
) -> anyhow::Result<String> {
    if a.module == crate::trees::MODULE {
        return super::tree::restore(cfg, a, args);
    }
    let store = crate::store::open(cfg)?;
    let key = ArtifactKey::parse(&a.path).expect("checked");
    let name = key.file.clone();
    if args.stdout {
        let mut f = store.open(&key)?;
        let mut out = std::io::stdout().lock();
        // Unlike a listing, a stream cut short is a failed restore: the
        // reader (`| slapadd`) did not get the whole artifact.
        if let Err(e) = std::io::copy(&mut f, &mut out).and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                bail!(
                    "the reader of standard output went away before all {} bytes of {} were written; the restore is incomplete",
                    a.size,
                    a.path
                );
            }
            return Err(e.into());
        }
        return Ok(format!("wrote {} ({} bytes) to standard output", a.path, a.size));
    }
    if let Some(db) = &args.into_db {
        return super::db::restore(a, &name, store.open(&key)?, db);
    }
    let Some(to) = &args.to else {
        return Err(UsageError("say where to restore: --to DIR, --into-db NAME or --stdout".into()).into());
    };
    if a.module == "fs" {
        if to.exists() {
            if std::fs::read_dir(to)?.next().is_some() {
                bail!("{} exists and is not empty", to.display());
            }
            std::fs::remove_dir(to)?;
        }
        // The archive may come from a compromised client (AX-18): never
        // let it fill the destination's file system.
        let mut policy = args.policy.clone();
        if let Some(room) = room_for(to) {
            policy.max_total_bytes = policy.max_total_bytes.min(room);
            policy.max_file_bytes = policy.max_file_bytes.min(room);
        }
        let f = store.open(&key)?;
        let pb = show.then(|| bar(a.size, &name));
        let reader: Box<dyn Read> = match &pb {
            Some(pb) => Box::new(pb.wrap_read(f)),
            None => Box::new(f),
        };
        let stats = ferry_archive::extract_tar_zst(std::io::BufReader::with_capacity(1 << 20, reader), to, &policy)
            .map_err(|e| {
                let msg = e.to_string();
                let hint = if msg.contains("max_ratio") {
                    "; if the archive is trusted (large zero-filled files), restore it with --max-ratio 0"
                } else {
                    ""
                };
                anyhow::anyhow!("{}: {msg}{hint}", e.code())
            })?;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        return Ok(format!("extracted {} ({stats}) into {}", a.path, to.display()));
    }
    // Dumps and streams: the file itself, verified, into DIR.
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let dest = to.join(&name);
    if dest.exists() {
        bail!("{} exists", dest.display());
    }
    {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&dest)?;
        std::io::copy(&mut store.open(&key)?, &mut out)?;
        out.sync_all()?;
    }
    let (_, h) = hash_file(&dest, false)?;
    if h != a.sha256 {
        let _ = std::fs::remove_file(&dest);
        bail!("the copy does not match its digest (disk problem?)");
    }
    Ok(format!("copied {} ({} bytes, sha256 {}) to {}", a.path, a.size, a.sha256, dest.display()))
}

/// Bytes a restore into `to` may write: what is available on its file
/// system (at the nearest existing ancestor) minus 5 % of the file system,
/// so a restore stops with `E_ARCHIVE_LIMIT` before the disk is full.
fn room_for(to: &Path) -> Option<u64> {
    let mut at = to;
    while std::fs::symlink_metadata(at).is_err() {
        at = match at.parent()? {
            p if p.as_os_str().is_empty() => Path::new("."),
            p => p,
        };
    }
    let st = rustix::fs::statvfs(at).ok()?;
    let reserve = st.f_blocks.saturating_mul(st.f_frsize) / 20;
    Some(st.f_bavail.saturating_mul(st.f_frsize).saturating_sub(reserve))
}
