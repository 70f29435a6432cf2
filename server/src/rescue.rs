//! `ferry-node rescue`: a snapshot tree usable in place, with no data
//! copied and no way for the rescue side's writes to reach the backup.
//!
//! # The view
//!
//! An overlayfs mount on DIR whose layers are, top to bottom:
//!
//! * `upper`/`work`: beside DIR (`.<DIR name>.ferry-rescue/`), never under
//!   the data directory: everything the rescue side writes goes here;
//! * the snapshot's metadata layer ([`crate::rescue_meta`]), built once
//!   per snapshot under `<state dir>/rescue-meta/` and reused: the
//!   manifest's owners, modes, mtimes as metacopy files;
//! * the snapshot directory itself as a *data-only* layer
//!   (`lowerdir=meta::data`), reached only through the metadata layer's
//!   redirects.
//!
//! Mount options `metacopy=on,redirect_dir=on` (metacopy needs
//! redirect_dir with an upper layer), `index=off`, `nosuid,nodev` (the
//! view holds a client's setuid files and is mounted on the node).
//!
//! # Why writes cannot reach the backup
//!
//! Store files are hard links shared by every snapshot: a write through
//! one would change all versions. Overlayfs never writes a lower layer
//! (a write, chmod, chown, rename or delete copies up or whites out in the
//! upper layer), and on top of that both lower layers are *read-only bind
//! mounts* (checked with `statvfs` before the overlay is mounted): even a
//! bug in this code or the kernel's copy-up cannot open a store inode for
//! writing, and reads do not even update its atime. The test compares a
//! full listing of the client's store and snapshots (content hashes,
//! modes, owners, link counts, mtimes, ctimes) before and after a rescue
//! that writes, chmods, deletes and renames.
//!
//! # NFS
//!
//! knfsd exports an overlay only when it is mounted with `nfs_export=on`
//! (which needs `index=on`), and the kernel refuses `nfs_export=on`
//! together with `metacopy=on` ("conflicting options"); a metacopy view
//! stacked under an exportable one does not work either (no file handles
//! to decode). So `--nfs` mounts a second kind of view: the snapshot as
//! the only lower layer with `nfs_export=on,index=on,metacopy=off`. No
//! data is copied to make it, but it shows the node's metadata (read-only
//! files owned by the node) and a chmod or chown from the rescue host
//! copies that one file's data up. Use the default view on the node
//! itself (chroot, containers, a local service) and `--nfs` when a
//! remote host must mount it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::trees::TreeLayout;

/// The directory beside DIR holding upper, work and the lower layers'
/// read-only bind mounts.
pub fn private_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{name}.ferry-rescue"))
}

const RECORD: &str = "rescue.json";

/// What a rescue mounted (kept in the private dir for `--undo`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Rescued {
    pub dir: PathBuf,
    pub client: String,
    pub source: String,
    pub received: String,
    /// Catalog path of the snapshot.
    pub snapshot: String,
    /// `metacopy` or `nfs`.
    pub kind: String,
    /// The cached metadata layer used (metacopy view only).
    pub meta: Option<PathBuf>,
    /// Whether this rescue built the metadata layer (the first rescue of a
    /// snapshot) and how long that took.
    pub meta_built: bool,
    pub meta_ms: u64,
    /// Time from start to a mounted view, metadata layer included.
    pub elapsed_ms: u64,
    /// The `/etc/exports` line serving DIR (nfs view only).
    pub exports: Option<String>,
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(UsageError(format!("{what} mounts and unmounts overlays: run it as root")).into());
    }
    Ok(())
}

/// A path overlayfs and mount(8) read in a comma- and colon-separated
/// option string.
fn option_path(p: &Path) -> anyhow::Result<String> {
    let s = p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.chars().any(|c| matches!(c, ',' | ':' | '\\' | '"' | '\'') || c.is_control() || c == ' ') {
        return Err(UsageError(format!(
            "{s:?}: overlay mount options cannot hold paths with commas, colons, quotes, blanks or backslashes"
        ))
        .into());
    }
    Ok(s.to_owned())
}

/// Mount points, unescaped, from /proc/self/mountinfo.
fn mount_points() -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(|l| l.split(' ').nth(4)).map(|f| PathBuf::from(unescape_octal(f))).collect())
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted(p: &Path) -> anyhow::Result<bool> {
    Ok(mount_points()?.iter().any(|m| m == p))
}

fn run_mount(args: &[&str]) -> anyhow::Result<()> {
    let out = ferry_run::Cmd::new("mount").args(args).timeout(std::time::Duration::from_secs(60)).run()?;
    if !out.success() {
        bail!("mount {}: {}", args.join(" "), out.stderr_excerpt());
    }
    Ok(())
}

fn run_umount(p: &Path) -> anyhow::Result<()> {
    let out = ferry_run::Cmd::new("umount").arg(p).timeout(std::time::Duration::from_secs(60)).run()?;
    if !out.success() {
        bail!("umount {}: {}", p.display(), out.stderr_excerpt());
    }
    Ok(())
}

/// A read-only bind mount of `src` on `dst`, proven read-only.
fn bind_ro(src: &Path, dst: &Path) -> anyhow::Result<()> {
    run_mount(&["--bind", "-o", "ro", &option_path(src)?, &option_path(dst)?])?;
    let st = rustix::fs::statvfs(dst)?;
    if !st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        bail!("{} is not read-only after a read-only bind mount; refusing to go on", dst.display());
    }
    Ok(())
}

/// The catalog row of the snapshot to rescue: newest at or before `at`.
pub fn pick(
    cfg: &NodeConfig,
    client: &str,
    source: &str,
    at: Option<&str>,
) -> anyhow::Result<crate::catalog::Artifact> {
    let trees = crate::trees::snapshots_of(cfg, client, source)?;
    let chosen = match at {
        None => trees.last(),
        Some(t) => trees.iter().rev().find(|a| a.received.as_str() <= t),
    };
    chosen.cloned().ok_or_else(|| {
        let first = trees.first().map(|a| format!(": the oldest is {}", a.received)).unwrap_or_default();
        let when = at.map(|t| format!(" at or before {t}")).unwrap_or_default();
        UsageError(format!("{client} has no snapshot tree of {source:?}{when}{first}")).into()
    })
}

/// The cached metadata layer of a snapshot (by manifest digest, so a
/// snapshot rebuilt under the same name gets a new one).
pub fn meta_dir(cfg: &NodeConfig, a: &crate::catalog::Artifact) -> PathBuf {
    let digest = a.sha256.get(..16).unwrap_or(&a.sha256);
    cfg.state_dir().join("rescue-meta").join(&a.client).join(&a.source).join(format!("{}-{digest}", a.received))
}

/// Builds the metadata layer of a snapshot unless it is cached; returns
/// (path, built now, milliseconds). The scan calls it (through
/// [`after_pull`]) once a pull is finished, so that even the first rescue
/// is a mount only.
pub fn prepare(cfg: &NodeConfig, a: &crate::catalog::Artifact) -> anyhow::Result<(PathBuf, bool, u64)> {
    let dest = meta_dir(cfg, a);
    if dest.is_dir() {
        return Ok((dest, false, 0));
    }
    let base = cfg.state_dir().join("rescue-meta");
    std::fs::create_dir_all(&base)?;
    rustix::fs::chmod(&base, rustix::fs::Mode::from_raw_mode(0o700))?;
    let layout = TreeLayout::new(cfg.data_dir());
    let m = layout.checked_manifest(a).map_err(anyhow::Error::msg)?;
    let stats = crate::rescue_meta::build(&m, &dest, newest_other_layer(&dest).as_deref())?;
    Ok((dest, true, stats.elapsed_ms))
}

/// The newest finished layer of the same source other than `dest` (names
/// start with the snapshot's received time), for [`crate::rescue_meta::build`]
/// to link unchanged files from.
fn newest_other_layer(dest: &Path) -> Option<PathBuf> {
    let dir = dest.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != dest && p.file_name().is_some_and(|n| !n.as_encoded_bytes().starts_with(b".")) && p.is_dir())
        .max()
}

/// After a tree pull (`[tree] prepare_rescue`): builds the metadata layer
/// of the source's newest snapshot, so that even its first rescue is a
/// mount only, then drops the layers of the source's other snapshots that
/// no rescue has mounted (one rescued later gets its layer rebuilt on
/// demand). Root only: the layer's `trusted.overlay.*` xattrs need
/// `CAP_SYS_ADMIN`; a node running as another account leaves the layer to
/// `rescue`, which runs as root. Never fails the backup: a failure is
/// logged and `rescue` builds the layer when asked.
pub fn after_pull(cfg: &NodeConfig, catalog: &dyn crate::catalog::Catalog, client: &str, source: &str) {
    if !rustix::process::geteuid().is_root() {
        tracing::debug!(client, source, "rescue layer not prepared: the node does not run as root");
        return;
    }
    let run = || -> anyhow::Result<Option<(PathBuf, u64, Vec<PathBuf>)>> {
        let q =
            crate::catalog::Query { client: Some(client.into()), source: Some(source.into()), ..Default::default() };
        let Some(a) = catalog.find(&q)?.into_iter().rfind(|a| a.module == crate::trees::MODULE) else {
            return Ok(None);
        };
        let (dest, _, ms) = prepare(cfg, &a)?;
        Ok(Some((dest.clone(), ms, drop_other_layers(&dest)?)))
    };
    match run() {
        Ok(Some((dest, ms, dropped))) => {
            tracing::info!(client, source, layer = %dest.display(), ms, dropped = dropped.len(), "rescue layer prepared")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(client, source, "rescue layer not prepared (rescue builds it on demand): {e:#}"),
    }
}

/// Removes the finished layers beside `keep` (the same client and
/// source) that are not the source of a mount; returns what it removed.
/// Temporary `.tmp-*` builds are left to the rescue building them.
fn drop_other_layers(keep: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Some(dir) = keep.parent() else { return Ok(Vec::new()) };
    let mounts = mount_table()?;
    let mut dropped = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p == keep || p.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b".")) || !p.is_dir() {
            continue;
        }
        if is_mount_source(&p, &mounts)? {
            tracing::info!(layer = %p.display(), "rescue layer kept: a rescue has it mounted");
            continue;
        }
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        dropped.push(p);
    }
    Ok(dropped)
}

/// One row of /proc/self/mountinfo: device, root of the mount within its
/// filesystem, mount point.
struct MountRow {
    dev: String,
    root: PathBuf,
    point: PathBuf,
}

fn mount_table() -> anyhow::Result<Vec<MountRow>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(MountRow {
                dev: (*f.get(2)?).to_owned(),
                root: PathBuf::from(unescape_octal(f.get(3)?)),
                point: PathBuf::from(unescape_octal(f.get(4)?)),
            })
        })
        .collect())
}

/// Whether `p` (or something below it) is mounted elsewhere, as a rescue's
/// read-only bind mount of its layer is: a mount of the same device whose
/// root lies at or below `p`'s path within that filesystem.
fn is_mount_source(p: &Path, mounts: &[MountRow]) -> anyhow::Result<bool> {
    let p = p.canonicalize()?;
    let st = rustix::fs::stat(&p)?;
    let dev = format!("{}:{}", rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    // The mount `p` is reached through, and so its path in the filesystem.
    let Some(host) =
        mounts.iter().filter(|m| m.dev == dev && p.starts_with(&m.point)).max_by_key(|m| m.point.as_os_str().len())
    else {
        return Ok(true); // not found: keep it rather than guess
    };
    let rel = host.root.join(p.strip_prefix(&host.point)?);
    Ok(mounts.iter().any(|m| m.dev == dev && m.point != host.point && m.root.starts_with(&rel)))
}

/// `rescue CLIENT SOURCE [--at] DIR [--nfs]`.
pub fn rescue(
    cfg: &NodeConfig,
    client: &str,
    source: &str,
    at: Option<&str>,
    dir: &Path,
    nfs: Option<&str>,
) -> anyhow::Result<Rescued> {
    let started = std::time::Instant::now();
    require_root("rescue")?;
    let a = pick(cfg, client, source, at)?;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(UsageError(format!("cannot create {}: {e}", dir.display())).into()),
    }
    let dir = dir.canonicalize()?;
    if !dir.is_dir() || std::fs::read_dir(&dir)?.next().is_some() {
        return Err(
            UsageError(format!("{} is not an empty directory: refusing to rescue into it", dir.display())).into()
        );
    }
    for (what, area) in [("data", cfg.data_dir()), ("state", cfg.state_dir())] {
        if let Ok(area) = area.canonicalize()
            && dir.starts_with(&area)
        {
            return Err(UsageError(format!("{} is inside the node's {what} directory", dir.display())).into());
        }
    }
    let private = private_dir(&dir);
    if private.exists() || is_mounted(&dir)? {
        return Err(UsageError(format!(
            "{} already holds a rescue (or its leftovers): ferry-node rescue --undo {} first",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    let snapshot = TreeLayout::new(cfg.data_dir()).snapshot_dir(client, source, &a.received);
    if !snapshot.is_dir() {
        bail!("the snapshot {} is in the catalog but not on disk (run ferry-node verify)", a.path);
    }
    let (meta, meta_built, meta_ms) = match nfs {
        None => {
            let (m, b, ms) = prepare(cfg, &a)?;
            (Some(m), b, ms)
        }
        Some(_) => (None, false, 0),
    };
    let dir_s = option_path(&dir)?;
    let mut r = Rescued {
        dir: dir.clone(),
        client: client.into(),
        source: source.into(),
        received: a.received.clone(),
        snapshot: a.path.clone(),
        kind: if nfs.is_some() { "nfs" } else { "metacopy" }.into(),
        meta: meta.clone(),
        meta_built,
        meta_ms,
        elapsed_ms: 0,
        exports: nfs.map(|host| exports_line(&dir_s, host)),
    };
    std::fs::create_dir(&private)?;
    rustix::fs::chmod(&private, rustix::fs::Mode::from_raw_mode(0o700))?;
    std::fs::write(private.join(RECORD), serde_json::to_vec_pretty(&r)?)?;
    let mounted = (|| -> anyhow::Result<()> {
        for d in ["upper", "work", "data", "meta"] {
            std::fs::create_dir(private.join(d))?;
        }
        bind_ro(&snapshot, &private.join("data"))?;
        let (upper, work, data) = (
            option_path(&private.join("upper"))?,
            option_path(&private.join("work"))?,
            option_path(&private.join("data"))?,
        );
        let opts = match &meta {
            Some(m) => {
                bind_ro(m, &private.join("meta"))?;
                let meta = option_path(&private.join("meta"))?;
                format!(
                    "lowerdir={meta}::{data},upperdir={upper},workdir={work},metacopy=on,redirect_dir=on,index=off,nosuid,nodev"
                )
            }
            None => format!(
                "lowerdir={data},upperdir={upper},workdir={work},nfs_export=on,index=on,metacopy=off,redirect_dir=nofollow,nosuid,nodev"
            ),
        };
        run_mount(&["-t", "overlay", "overlay", "-o", &opts, &dir_s])
    })();
    if let Err(e) = mounted {
        let _ = undo(&dir);
        return Err(e);
    }
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    std::fs::write(private.join(RECORD), serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}

/// The `/etc/exports` line for a rescue host: read-write, root not
/// squashed (the rescue host is the machine itself coming back), an
/// explicit `fsid` (an overlay has no device number knfsd can use).
fn exports_line(dir: &str, host: &str) -> String {
    let fsid =
        u32::from_be_bytes(<sha2::Sha256 as sha2::Digest>::digest(dir.as_bytes())[..4].try_into().unwrap_or([0; 4]))
            & 0x7fff_ffff;
    format!("{dir} {host}(rw,sync,no_subtree_check,no_root_squash,fsid={fsid})")
}

/// What `--undo` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Undone {
    pub dir: PathBuf,
    pub unmounted: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

/// `rescue --undo DIR`: unmounts the view and its bind mounts and removes
/// the directories the rescue made beside DIR (upper, work, mount points);
/// DIR itself and the cached metadata layer stay.
pub fn undo_checked(dir: &Path) -> anyhow::Result<Undone> {
    require_root("rescue --undo")?;
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    if !private_dir(&dir).join(RECORD).is_file() {
        return Err(UsageError(format!("no rescue at {}: nothing to undo", dir.display())).into());
    }
    undo(&dir)
}

fn undo(dir: &Path) -> anyhow::Result<Undone> {
    let private = private_dir(dir);
    let mut u = Undone { dir: dir.to_path_buf(), ..Default::default() };
    for m in [dir.to_path_buf(), private.join("meta"), private.join("data")] {
        if is_mounted(&m)? {
            run_umount(&m)?;
            u.unmounted.push(m);
        }
    }
    for m in [private.join("meta"), private.join("data")] {
        if is_mounted(&m)? {
            bail!("{} is still mounted", m.display());
        }
    }
    let pfd = ferry_archive::fsutil::open_dir(&private)?;
    for d in ["upper", "work", "data", "meta", RECORD] {
        if ferry_archive::fsutil::lstat_at(std::os::fd::AsFd::as_fd(&pfd), d.as_bytes())?.is_some() {
            ferry_archive::fsutil::remove_tree(std::os::fd::AsFd::as_fd(&pfd), d.as_bytes())
                .with_context(|| format!("removing {}", private.join(d).display()))?;
            u.removed.push(private.join(d));
        }
    }
    std::fs::remove_dir(&private).with_context(|| format!("removing {}", private.display()))?;
    u.removed.push(private);
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_octal(r"/tmp/a\040b\011c\134d"), "/tmp/a b\tc\\d");
        assert_eq!(unescape_octal(r"/tmp/end\04"), r"/tmp/end\04");
    }

    #[test]
    fn paths_that_would_split_the_mount_options_are_refused() {
        assert_eq!(option_path(Path::new("/srv/rescue/view-1")).unwrap(), "/srv/rescue/view-1");
        for bad in ["/srv/a,upperdir=/x", "/srv/a:b", "/srv/a b", "/srv/a\\b", "/srv/a\nb"] {
            assert!(option_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_exports_line_is_stable_and_names_the_host() {
        let l = exports_line("/srv/rescue/web1", "10.0.0.7");
        assert!(l.starts_with("/srv/rescue/web1 10.0.0.7(rw,sync,no_subtree_check,no_root_squash,fsid="), "{l}");
        assert_eq!(l, exports_line("/srv/rescue/web1", "10.0.0.7"));
        assert_ne!(l, exports_line("/srv/rescue/web2", "10.0.0.7"));
        assert_eq!(private_dir(Path::new("/srv/rescue/web1")), Path::new("/srv/rescue/.web1.ferry-rescue"));
    }
}
