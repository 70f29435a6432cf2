//! Stored artifacts: integrity checks, `restore`, `verify`.
//!
//! The stored file and its `.sha256` sidecar are the truth; the catalog is
//! the index. Every restore re-hashes the stored file first: a corrupted
//! artifact is reported, never restored.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::catalog::{Artifact, Query};
use crate::config::NodeConfig;
use crate::exit::UsageError;

/// A time given on the command line (`20261122T010203Z`, `2026-11-22`,
/// `2026-11-22T01:02:03Z`), in the catalog's `received` format.
pub fn parse_time(s: &str, end_of_day: bool) -> anyhow::Result<String> {
    if let Ok(st) = s.parse::<ferry_request::Stamp>() {
        return Ok(st.to_string());
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.strftime("%Y%m%dT%H%M%SZ").to_string());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let t = if end_of_day { d.at(23, 59, 59, 0) } else { d.at(0, 0, 0, 0) };
        return Ok(t.strftime("%Y%m%dT%H%M%SZ").to_string());
    }
    Err(UsageError(format!("cannot read the time {s:?}: use 2026-11-22, 2026-11-22T01:02:03Z or 20261122T010203Z"))
        .into())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal.
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Hash a file (with a progress bar on a terminal).
pub fn hash_file(path: &Path, show: bool) -> std::io::Result<(u64, String)> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags_nofollow().open(path)?;
    let len = f.metadata()?.len();
    let pb = show.then(|| bar(len, &path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        if let Some(pb) = &pb {
            pb.inc(k as u64);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok((n, hex::encode(h.finalize())))
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
    }
}

/// One problem found by `verify`.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub client: String,
    pub source: String,
    pub path: String,
    pub problem: String,
}

/// Check one artifact: present, a regular file, size, digest, sidecar.
pub fn check(cfg: &NodeConfig, a: &Artifact, show: bool) -> Option<String> {
    let p = cfg.data_dir().join(&a.path);
    match std::fs::symlink_metadata(&p) {
        Err(e) => return Some(format!("missing: {e}")),
        Ok(m) if !m.file_type().is_file() => return Some("not a regular file".into()),
        Ok(m) if m.len() != a.size => return Some(format!("size {} instead of {}", m.len(), a.size)),
        Ok(_) => {}
    }
    match hash_file(&p, show) {
        Err(e) => return Some(format!("unreadable: {e}")),
        Ok((_, h)) if h != a.sha256 => return Some(format!("sha256 {h} instead of {}", a.sha256)),
        Ok(_) => {}
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sidecar = p.with_file_name(format!("{name}.sha256"));
    match std::fs::read_to_string(&sidecar) {
        Ok(s) if s == format!("{}  {name}\n", a.sha256) => None,
        Ok(_) => Some("digest sidecar disagrees with the catalog".into()),
        Err(e) => Some(format!("digest sidecar missing: {e}")),
    }
}

/// `ferry-node verify`: re-hash every stored artifact against its sidecar
/// and the catalog, and look for artifacts on disk the catalog lacks.
pub fn verify(cfg: &NodeConfig, client: Option<&str>, show: bool) -> anyhow::Result<(usize, Vec<Problem>)> {
    let _lock = crate::maintain::maintenance_lock(cfg, "verify")?;
    let Some(cat) = crate::catalog::open_existing(cfg)? else { return Ok((0, Vec::new())) };
    let all = cat.find(&Query { client: client.map(str::to_owned), ..Default::default() })?;
    let mut problems = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    for a in &all {
        known.insert(cfg.data_dir().join(&a.path));
        if let Some(p) = check(cfg, a, show) {
            problems.push(Problem {
                client: a.client.clone(),
                source: a.source.clone(),
                path: a.path.clone(),
                problem: p,
            });
        }
    }
    // Files on disk the catalog does not know (data/<client>/<source>/<run>/<file>).
    let clients: Vec<PathBuf> = match client {
        Some(c) => vec![cfg.client_data(c)],
        None => {
            std::fs::read_dir(cfg.data_dir()).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        }
    };
    for cdir in clients {
        let cname = cdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for src in std::fs::read_dir(&cdir).into_iter().flatten().flatten() {
            let sname = src.file_name().to_string_lossy().into_owned();
            if sname == "git" || !src.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for run in std::fs::read_dir(src.path()).into_iter().flatten().flatten() {
                for f in std::fs::read_dir(run.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".sha256") || name.starts_with(".tmp-") {
                        continue;
                    }
                    if !known.contains(&f.path()) {
                        problems.push(Problem {
                            client: cname.clone(),
                            source: sname.clone(),
                            path: f.path().strip_prefix(cfg.data_dir()).unwrap_or(&f.path()).display().to_string(),
                            problem: UNCATALOGUED.into(),
                        });
                    }
                }
            }
        }
    }
    // A scan running meanwhile renames a new artifact into place just
    // before recording it: a file the first catalog read missed is a
    // problem only if the catalog still lacks it now.
    if problems.iter().any(|p| p.problem == UNCATALOGUED) {
        let now: std::collections::BTreeSet<String> = cat
            .find(&Query { client: client.map(str::to_owned), ..Default::default() })?
            .into_iter()
            .map(|a| a.path)
            .collect();
        problems.retain(|p| p.problem != UNCATALOGUED || !now.contains(&p.path));
    }
    Ok((all.len(), problems))
}

const UNCATALOGUED: &str = "on disk but not in the catalog";

/// How to give an artifact back.
#[derive(Debug, Default)]
pub struct RestoreArgs {
    pub to: Option<PathBuf>,
    pub at: Option<String>,
    /// For a database dump: the new database and how to reach the server.
    pub into_db: Option<crate::dbrestore::DbTarget>,
    pub stdout: bool,
    pub policy: ferry_archive::ExtractPolicy,
}

/// Restore the newest artifact of `client`/`source` received at or before
/// `at`. Returns a description of what was done.
pub fn restore(cfg: &NodeConfig, a: &Artifact, args: &RestoreArgs, show: bool) -> anyhow::Result<String> {
    if let Some(problem) = check(cfg, a, show) {
        bail!("the stored artifact {} fails its integrity check ({problem}); run `ferry-node verify`", a.path);
    }
    let file = cfg.data_dir().join(&a.path);
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if args.stdout {
        let mut f = std::fs::File::open(&file)?;
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
        return crate::dbrestore::restore(a, &file, db);
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
        let f = std::fs::File::open(&file)?;
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
        return Ok(format!(
            "extracted {} ({} entries: {} files, {} dirs, {} symlinks, {} hard links, {} bytes) into {}",
            a.path,
            stats.entries,
            stats.files,
            stats.dirs,
            stats.symlinks,
            stats.hardlinks,
            stats.bytes,
            to.display()
        ));
    }
    // Dumps and streams: the file itself, verified, into DIR.
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let dest = to.join(&name);
    if dest.exists() {
        bail!("{} exists", dest.display());
    }
    std::fs::copy(&file, &dest)?;
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
