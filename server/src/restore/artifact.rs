//! Giving an artifact back: an fs archive extracted with the strict
//! extractor, a dump replayed into a new database ([`super::db`]), a pipe
//! stream to standard output, or the verified file itself into a
//! directory. Every restore checks the stored artifact's digest before
//! anything it gives back counts: an archive, a dump or a stream on the
//! node's disk is re-hashed first; a file into a directory is hashed (on a
//! thread of its own) while it is written to a temporary file there, and
//! renamed into place only when it matches (one read of the store, not
//! two); a dump or stream from S3 is copied that way into the node's state
//! directory and given back from there (what was checked is what is
//! replayed). A wrong or missing store key
//! (`E_STORE_KEY`) stops a restore before anything is written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::store::ArtifactKey;
use crate::verify::{bar, check_version};

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
    if into_dir(a, args) {
        // Checked while it is copied (module docs).
        return restore_version(cfg, store.as_ref(), a, args, show, None);
    }
    if let Some(key) = ArtifactKey::parse(&a.path)
        && store.local_path(&key).is_none()
        && (args.stdout || args.into_db.is_some())
    {
        return from_verified_copy(cfg, store.as_ref(), &key, a, args, show);
    }
    let checked = match check_version(store.as_ref(), a, show) {
        Ok(opener) => opener,
        Err(problem) if problem.contains("E_STORE_KEY") => {
            // Not the artifact's fault: the node cannot decrypt it.
            bail!("{} cannot be restored: {problem}", a.path);
        }
        Err(problem) => {
            bail!("the stored artifact {} fails its integrity check ({problem}); run `ferry-node verify`", a.path)
        }
    };
    restore_version(cfg, store.as_ref(), a, args, show, Some(&checked))
}

/// A dump or stream restored as a file into a directory.
fn into_dir(a: &Artifact, args: &RestoreArgs) -> bool {
    a.module != "fs" && !args.stdout && args.into_db.is_none() && args.to.is_some()
}

/// [`restore`] of an artifact whose digest the caller has just checked
/// ([`super::all`] checks first, to fall back to an older artifact), read
/// through `checked`, the version the check read, when the caller has it
/// (a dump or stream into a directory is checked while it is copied, and
/// has none).
pub(super) fn restore_version(
    cfg: &NodeConfig,
    store: &dyn crate::store::ArtifactStore,
    a: &Artifact,
    args: &RestoreArgs,
    show: bool,
    checked: Option<&crate::store::Opener<'_>>,
) -> anyhow::Result<String> {
    if a.module == crate::trees::MODULE {
        return super::tree::restore(cfg, a, args);
    }
    let key = ArtifactKey::parse(&a.path).expect("checked");
    let open = || match checked {
        Some(o) => o(),
        None => store.open(&key),
    };
    if args.stdout || args.into_db.is_some() {
        return deliver(a, &key.file, open()?, args);
    }
    let Some(to) = &args.to else {
        return Err(UsageError("say where to restore: --to DIR, --into-db NAME or --stdout".into()).into());
    };
    let name = key.file.clone();
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
        let f = open()?;
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
    copy_verified(store, &key, a, to, Keep::Durable, show)
}

/// Give `from`, the checked bytes of `a` (file name `name`), to standard
/// output or to a new database, as `args` says.
fn deliver(a: &Artifact, name: &str, mut from: Box<dyn Read + Send>, args: &RestoreArgs) -> anyhow::Result<String> {
    if let Some(db) = &args.into_db {
        return super::db::restore(a, name, from, db);
    }
    let mut out = std::io::stdout().lock();
    // Unlike a listing, a stream cut short is a failed restore: the
    // reader (`| slapadd`) did not get the whole artifact.
    if let Err(e) = std::io::copy(&mut from, &mut out).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            bail!(
                "the reader of standard output went away before all {} bytes of {} were written; the restore is incomplete",
                a.size,
                a.path
            );
        }
        return Err(e.into());
    }
    Ok(format!("wrote {} ({} bytes) to standard output", a.path, a.size))
}

/// `--stdout` or `--into-db` from a store off the node (S3): the object is
/// downloaded once into a temporary directory in the node's state
/// directory, checked while it is written ([`copy_verified`]), and what is
/// given back is that file. Checking the object and then reading it again
/// would fetch it twice, and the second read would give back whatever the
/// bucket served then, not the bytes that were checked.
fn from_verified_copy(
    cfg: &NodeConfig,
    store: &dyn crate::store::ArtifactStore,
    key: &ArtifactKey,
    a: &Artifact,
    args: &RestoreArgs,
    show: bool,
) -> anyhow::Result<String> {
    let state_dir = cfg.state_dir();
    std::fs::create_dir_all(&state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(&state_dir)
        .with_context(|| format!("cannot create a temporary directory in {}", state_dir.display()))?;
    copy_verified(store, key, a, scratch.path(), Keep::Scratch, show)?;
    let file = scratch.path().join(&key.file);
    let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
    deliver(a, &key.file, Box::new(f), args)
}

/// Whether a [`copy_verified`] copy must survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A restore's result: on disk when the restore returns.
    Durable,
    /// Read once and removed ([`from_verified_copy`]): never synced.
    Scratch,
}

/// Copy the artifact into `to/<file>`: streamed from the store into a
/// temporary file in `to`, hashed as it is written ([`copy_hashed`]: on
/// its own thread, so hashing overlaps the download), synced, and linked to
/// its name only when size and sha256 match the catalog (never replacing
/// a file). The store is read once; whatever fails leaves no file at the
/// destination, and a key that cannot decrypt it leaves nothing at all.
fn copy_verified(
    store: &dyn crate::store::ArtifactStore,
    key: &ArtifactKey,
    a: &Artifact,
    to: &Path,
    keep: Keep,
    show: bool,
) -> anyhow::Result<String> {
    let dest = to.join(&key.file);
    if std::fs::symlink_metadata(&dest).is_ok() {
        bail!("{} exists", dest.display());
    }
    let unusable = |problem: String| Unusable { path: a.path.clone(), problem };
    // The sidecar must vouch for the catalog's digest, as `verify` checks.
    // The version looked at is the one read (one HEAD in object storage).
    let opener = match store.look(key).map_err(|e| unusable(format!("{e:#}")))? {
        None => return Err(unusable("missing".into()).into()),
        Some((s, _)) if s.size != a.size => {
            return Err(unusable(format!("size {} instead of {}", s.size, a.size)).into());
        }
        Some((s, _)) if s.sidecar.as_deref() != Some(key.sidecar_text(&a.sha256).as_str()) => {
            return Err(unusable("digest sidecar missing or disagreeing".into()).into());
        }
        Some((_, opener)) => opener,
    };
    // Opened before anything is created: E_STORE_KEY leaves no trace.
    // At most one byte past the catalog's size: an object larger than it
    // should be (replaced in the bucket, or lying metadata) is refused by
    // the size check below, not written out until the disk is full.
    let mut from = match opener() {
        Ok(f) => f.take(a.size.saturating_add(1)),
        // Not the copy's fault: the node cannot decrypt it (nor any other).
        Err(e) if e.downcast_ref::<crate::store::crypt::KeyError>().is_some() => return Err(e),
        Err(e) => return Err(unusable(format!("{e:#}")).into()),
    };
    // Made here, removed again if nothing usable arrives (an older copy
    // may be tried next, or nothing should be left).
    let made = !to.exists();
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let unmake = || {
        if made {
            let _ = std::fs::remove_dir(to);
        }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", key.file))
        .suffix(".part")
        .tempfile_in(to)
        .with_context(|| format!("cannot create a temporary file in {}", to.display()))?;
    let pb = show.then(|| bar(a.size, &key.file));
    let copied = copy_hashed(&mut from, tmp.as_file_mut(), keep == Keep::Durable, |k| {
        if let Some(pb) = &pb {
            pb.inc(k);
        }
    });
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let problem = match copied {
        Err(Copy::Read(e)) => Some(format!("unreadable: {e}")),
        Err(Copy::Write(e)) => {
            drop(tmp);
            unmake();
            return Err(anyhow::Error::new(e).context(format!("writing into {}", to.display())));
        }
        Ok((n, got)) if n != a.size || got != a.sha256 => {
            Some(format!("{n} bytes, sha256 {got} instead of {} bytes, {}", a.size, a.sha256))
        }
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        drop(tmp);
        unmake();
        return Err(unusable(problem).into());
    }
    if keep == Keep::Durable {
        tmp.as_file().sync_all()?;
    }
    // A link refuses an existing name; then the temporary name goes.
    tmp.persist_noclobber(&dest)
        .map_err(|e| anyhow::anyhow!("cannot move the copy into place as {}: {}", dest.display(), e.error))?;
    if keep == Keep::Durable {
        let _ = ferry_durable::fsync_dir(to);
    }
    Ok(format!("copied {} ({} bytes, sha256 {}) to {}", a.path, a.size, a.sha256, dest.display()))
}

/// The stored copy of an artifact cannot give its bytes back (missing,
/// another size or digest, unreadable): nothing was written. A store key
/// that cannot decrypt it is not this (`E_STORE_KEY` fails every copy
/// alike, and is returned as it is). Typed so that `restore --all` tries an older copy
/// then, while a destination that cannot be written fails the restore.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stored artifact {path} fails its integrity check ({problem}); nothing was restored; run `ferry-node verify`"
)]
pub(super) struct Unusable {
    path: String,
    /// What is wrong with it, for a listing of the copies tried.
    pub(super) problem: String,
}

/// Bytes of one read from the store in [`copy_hashed`].
const CHUNK: usize = 4 << 20;
/// Chunks written and waiting for (or being) hashed: with the one being
/// read, memory is `CHUNK × (HASH_AHEAD + 1)` whatever the artifact's size.
const HASH_AHEAD: usize = 2;
/// Bytes written between two background syncs in [`copy_hashed`].
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Which side of [`copy_hashed`] failed.
#[derive(Debug)]
enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copy `from` into `out` and return the byte count and the sha256 (hex)
/// of what was copied. A pipeline, so a restore runs at the speed of its
/// slowest stage rather than of their sum: this thread reads a chunk and
/// writes it, then hands it to a hashing thread and reads the next one
/// while that chunk is hashed (the store's reader fetches ahead on its own
/// runtime meanwhile). Chunks go back to this thread once hashed and are
/// reused, so at most [`HASH_AHEAD`] + 1 are ever allocated. The digest
/// covers exactly the bytes written, in order: a chunk is hashed after it
/// was written, from the same buffer.
///
/// Every [`WRITEBACK_EVERY`] bytes the hashing thread wakes a third thread
/// that `fdatasync`s what was written so far, so the `fsync` before the
/// rename waits for the last few MiB instead of the whole file after the
/// download. (A `posix_fadvise(DONTNEED)` hint, used before, also started
/// writeback but dropped the pages, and re-faulting fresh pages costs more
/// than the wait it saved: 1 GiB from one Garage node restored in
/// 3.9–4.3 s with it, 3.0–3.4 s with this thread, 3.4–3.7 s with neither.)
///
/// `writeback: false` (a scratch copy that is read once and removed) does
/// without the third thread: nothing of it needs to reach the disk.
fn copy_hashed(
    from: &mut dyn Read,
    out: &mut std::fs::File,
    writeback: bool,
    mut progress: impl FnMut(u64),
) -> Result<(u64, String), Copy> {
    use sha2::Digest as _;
    use std::sync::mpsc;
    std::thread::scope(|s| {
        let (to_hash, hash_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(HASH_AHEAD);
        let (give_back, free) = mpsc::channel::<Vec<u8>>();
        // Writeback runs on a thread of its own: the hashing thread only
        // pokes it (never blocking; a poke while a sync runs is merged).
        let sync_tx = if writeback {
            let synced = out.try_clone().map_err(Copy::Write)?;
            let (sync_tx, sync_rx) = mpsc::sync_channel::<()>(1);
            std::thread::Builder::new()
                .name("ferry-sync".into())
                .spawn_scoped(s, move || {
                    for () in sync_rx {
                        // Only a head start: the fsync before the rename counts.
                        let _ = synced.sync_data();
                    }
                })
                .map_err(Copy::Write)?;
            Some(sync_tx)
        } else {
            None
        };
        let hasher = std::thread::Builder::new()
            .name("ferry-hash".into())
            .spawn_scoped(s, move || {
                let mut h = sha2::Sha256::new();
                let (mut n, mut started) = (0u64, 0u64);
                for (buf, k) in hash_rx {
                    h.update(&buf[..k]);
                    // This thread's end only fails when the copy stopped.
                    let _ = give_back.send(buf);
                    // The chunk was written before it was sent here.
                    n += k as u64;
                    if let Some(tx) = &sync_tx
                        && n - started >= WRITEBACK_EVERY
                    {
                        // Full: a sync is pending and will cover this too.
                        let _ = tx.try_send(());
                        started = n;
                    }
                }
                hex::encode(h.finalize())
            })
            .map_err(Copy::Read)?;
        let mut allocated = 0;
        let mut n = 0u64;
        let copied = (|| {
            loop {
                let mut buf = match free.try_recv() {
                    Ok(b) => b,
                    Err(_) if allocated <= HASH_AHEAD => {
                        allocated += 1;
                        vec![0u8; CHUNK]
                    }
                    // Every buffer is queued for hashing: wait for one.
                    Err(_) => {
                        free.recv().map_err(|_| Copy::Read(std::io::Error::other("the hashing thread stopped")))?
                    }
                };
                // Fill the chunk (fewer, larger writes and hash calls).
                let mut k = 0;
                while k < buf.len() {
                    match from.read(&mut buf[k..]) {
                        Ok(0) => break,
                        Ok(r) => k += r,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Copy::Read(e)),
                    }
                }
                if k == 0 {
                    return Ok(());
                }
                out.write_all(&buf[..k]).map_err(Copy::Write)?;
                n += k as u64;
                progress(k as u64);
                if to_hash.send((buf, k)).is_err() {
                    return Err(Copy::Read(std::io::Error::other("the hashing thread stopped")));
                }
            }
        })();
        // Closing the queue ends the hasher after the last chunk.
        drop(to_hash);
        let digest = hasher.join().map_err(|_| Copy::Read(std::io::Error::other("the hashing thread panicked")))?;
        copied.map(|()| (n, digest))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    /// Gives at most `step` bytes a read, and fails after `fail_at`.
    struct Uneven<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        at: usize,
    }

    impl Read for Uneven<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(std::io::Error::other("the store went away"));
            }
            let k = out.len().min(self.step).min(self.data.len() - self.at);
            out[..k].copy_from_slice(&self.data[self.at..self.at + k]);
            self.at += k;
            Ok(k)
        }
    }

    #[test]
    fn copy_hashed_writes_and_hashes_every_byte_in_order() {
        // Past WRITEBACK_EVERY, in reads that never line up with a chunk.
        let data: Vec<u8> = (0..CHUNK * 9 + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for size in [0, 1, CHUNK - 1, CHUNK, data.len()] {
            let td = tempfile::tempdir().unwrap();
            let mut f = std::fs::File::create(td.path().join("out")).unwrap();
            let mut from = Uneven { data: &data[..size], step: 777_777, fail_at: None, at: 0 };
            let mut seen = 0;
            let (n, digest) = copy_hashed(&mut from, &mut f, true, |k| seen += k).unwrap();
            assert_eq!((n, seen), (size as u64, size as u64));
            assert_eq!(digest, hex::encode(sha2::Sha256::digest(&data[..size])), "{size}");
            assert!(std::fs::read(td.path().join("out")).unwrap() == data[..size], "{size}");
        }
        // A failed read is the read's error, whatever was written before.
        let td = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(td.path().join("out")).unwrap();
        let mut from = Uneven { data: &data, step: 1 << 20, fail_at: Some(CHUNK * 2 + 5), at: 0 };
        match copy_hashed(&mut from, &mut f, false, |_| {}) {
            Err(Copy::Read(e)) => assert_eq!(e.to_string(), "the store went away"),
            other => panic!("{other:?}"),
        }
    }
}
