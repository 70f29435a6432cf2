//! `ferry-node verify`: every stored artifact re-read from the store and
//! re-hashed against its sidecar and the catalog, every artifact the
//! store holds that the catalog does not know reported, and every git
//! mirror checked with `git fsck`.
//!
//! The stored artifact and its `.sha256` sidecar are the truth; the catalog
//! is the index. Restores run [`check`] first: a corrupted artifact is
//! reported, never restored.

use std::io::Read;
use std::path::Path;

mod tree;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::catalog::{Artifact, Query};
use crate::config::NodeConfig;
use crate::store::{ArtifactKey, ArtifactStore};

/// A progress bar (indicatif draws nothing when stderr is not a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
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

/// Hash a local file, not following a link (with a progress bar on a
/// terminal).
pub fn hash_file(path: &Path, show: bool) -> std::io::Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f =
        std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path)?;
    let len = f.metadata()?.len();
    let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    hash_reader(f, len, show, &label)
}

/// Hash what `r` gives (`len` bytes expected, for the progress bar).
pub fn hash_reader(r: impl Read, len: u64, show: bool, label: &str) -> std::io::Result<(u64, String)> {
    let pb = show.then(|| bar(len, label));
    let mut r = std::io::BufReader::with_capacity(1 << 20, r);
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

/// One problem found by `verify`.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub client: String,
    pub source: String,
    pub path: String,
    pub problem: String,
}

/// Check one artifact: present, size, digest (re-read from the store),
/// sidecar.
pub fn check(store: &dyn ArtifactStore, a: &Artifact, show: bool) -> Option<String> {
    check_version(store, a, show).err()
}

/// [`check`], returning on success a way to read the version checked (a
/// restore reads it again; in object storage a replaced object then fails
/// the read instead of giving back bytes nobody checked).
pub fn check_version<'s>(
    store: &'s dyn ArtifactStore,
    a: &Artifact,
    show: bool,
) -> Result<crate::store::Opener<'s>, String> {
    let Some(key) = ArtifactKey::parse(&a.path) else {
        return Err("the catalog names no valid storage place".into());
    };
    let (stored, opener) = match store.look(&key) {
        Err(e) => return Err(format!("{e:#}")),
        Ok(None) => return Err("missing".into()),
        Ok(Some(s)) => s,
    };
    if stored.size != a.size {
        return Err(format!("size {} instead of {}", stored.size, a.size));
    }
    let hashed = opener()
        .map_err(|e| format!("{e:#}"))
        .and_then(|r| hash_reader(r, a.size, show, &key.file).map_err(|e| e.to_string()));
    match hashed {
        Err(e) => return Err(format!("unreadable: {e}")),
        Ok((_, h)) if h != a.sha256 => return Err(format!("sha256 {h} instead of {}", a.sha256)),
        Ok(_) => {}
    }
    match stored.sidecar {
        Some(s) if s == key.sidecar_text(&a.sha256) => Ok(opener),
        Some(_) => Err("digest sidecar disagrees with the catalog".into()),
        None => Err("digest sidecar missing".into()),
    }
}

/// What one `verify` run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Artifacts and mirrors checked.
    pub checked: usize,
    pub problems: Vec<Problem>,
    /// Catalog paths recorded again by `--rebuild`.
    pub recorded: Vec<String>,
}

/// `ferry-node verify`: re-hash every stored artifact against its sidecar
/// and the catalog, and look for artifacts on disk the catalog lacks.
///
/// With `rebuild`, an artifact the catalog lacks is recorded again when
/// its content still hashes to its own sidecar's digest: the store is the
/// truth and the catalog its index, so a catalog lost with a disk, or
/// restored from an older backup of the node, is rebuilt from the store.
/// One whose sidecar is missing or disagrees stays a problem: nothing
/// vouches for its bytes.
pub fn verify(cfg: &NodeConfig, client: Option<&str>, show: bool, rebuild: bool) -> anyhow::Result<Report> {
    let _lock = crate::maintain::maintenance_lock(cfg, "verify")?;
    let cat = if rebuild { Some(crate::catalog::open(cfg)?) } else { crate::catalog::open_existing(cfg)? };
    let Some(cat) = cat else {
        // No artifact was ever recorded; mirrors are checked all the same.
        let mut problems = Vec::new();
        let checked = fsck_mirrors(cfg, client, &mut problems)?;
        return Ok(Report { checked, problems, recorded: Vec::new() });
    };
    let all = cat.find(&Query { client: client.map(str::to_owned), ..Default::default() })?;
    let store = crate::store::open(cfg)?;
    let mut problems = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    for a in &all {
        known.insert(a.path.clone());
        if a.module == crate::trees::MODULE {
            continue;
        }
        if let Some(p) = check(store.as_ref(), a, show) {
            problems.push(Problem {
                client: a.client.clone(),
                source: a.source.clone(),
                path: a.path.clone(),
                problem: p,
            });
        }
    }
    // Artifacts the store holds that the catalog does not know.
    for key in store.list(client)? {
        let path = key.rel_path();
        if !known.contains(&path) && !key.file.starts_with(".tmp-") {
            problems.push(Problem { client: key.client, source: key.source, path, problem: UNCATALOGUED.into() });
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
    let mut recorded = Vec::new();
    if rebuild {
        for p in problems.iter_mut().filter(|p| p.problem == UNCATALOGUED) {
            match record_again(cat.as_ref(), store.as_ref(), &p.path, show) {
                Ok(()) => recorded.push(p.path.clone()),
                Err(why) => p.problem = format!("{UNCATALOGUED}, not recorded: {why}"),
            }
        }
        problems.retain(|p| !recorded.contains(&p.path));
    }
    let trees = tree::verify(cfg, client, &all, &mut problems);
    let artifacts = all.iter().filter(|a| a.module != crate::trees::MODULE).count();
    let mirrors = fsck_mirrors(cfg, client, &mut problems)?;
    Ok(Report { checked: artifacts + trees + mirrors, problems, recorded })
}

/// Records a stored artifact the catalog lacks, from what the store
/// itself vouches for: its bytes, re-hashed, must match its sidecar. The
/// client's own stamp and the request are not kept in the store, so the
/// row carries the receive time as stamp and `verify --rebuild` as its
/// request.
fn record_again(
    cat: &dyn crate::catalog::Catalog,
    store: &dyn ArtifactStore,
    path: &str,
    show: bool,
) -> Result<(), String> {
    let key = ArtifactKey::parse(path).ok_or("not a storage place")?;
    if crate::publish::received_time(&key.received).is_none() {
        return Err(format!("{:?} is not a receive time", key.received));
    }
    let (stored, opener) = store.look(&key).map_err(|e| format!("{e:#}"))?.ok_or("gone")?;
    let (_, sha256) = opener()
        .map_err(|e| format!("{e:#}"))
        .and_then(|r| hash_reader(r, stored.size, show, &key.file).map_err(|e| e.to_string()))?;
    match stored.sidecar {
        Some(s) if s == key.sidecar_text(&sha256) => {}
        Some(_) => return Err(format!("its sidecar does not name its content (sha256 {sha256})")),
        None => return Err("its digest sidecar is missing".into()),
    }
    cat.insert(&Artifact {
        id: 0,
        client: key.client.clone(),
        source: key.source.clone(),
        module: crate::store::module_of(&key.file).to_owned(),
        received: key.received.clone(),
        stamp: key.received.clone(),
        path: path.to_owned(),
        size: stored.size,
        sha256,
        duration_ms: 0,
        request: "verify --rebuild".into(),
        node: String::new(), // set by the catalog
    })
    .map(drop)
    .map_err(|e| format!("catalog: {e:#}"))
}

/// `git fsck` of every mirror (of `client`, or all), each under its
/// client's pool lock like every fetch into it; a mirror that fails is a
/// problem with git's first lines. Returns how many were checked.
fn fsck_mirrors(cfg: &NodeConfig, client: Option<&str>, problems: &mut Vec<Problem>) -> anyhow::Result<usize> {
    let mut n = 0;
    for cdir in std::fs::read_dir(cfg.data_dir()).into_iter().flatten().flatten() {
        let name = cdir.file_name().to_string_lossy().into_owned();
        if client.is_some_and(|c| c != name) || !ferry_gitosis::username::is_valid_client_name(&name) {
            continue;
        }
        let mirrors = crate::repos::find_mirrors(&cdir.path().join("git"));
        if mirrors.is_empty() {
            continue;
        }
        let _lock = crate::pool::open_pool(cfg, &name)?.lock()?;
        for m in mirrors {
            n += 1;
            let res = ferry_run::Cmd::new(&cfg.git)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("HOME", cfg.empty_dir())
                .args(["-c", "core.hooksPath=/dev/null"])
                .arg(format!("--git-dir={}", m.display()))
                .args(["fsck", "--no-progress", "--no-dangling", "--strict"])
                .timeout(cfg.duration(&cfg.limits.job_timeout))
                .run_checked();
            if let Err(e) = res {
                let rel = m.strip_prefix(cfg.data_dir()).unwrap_or(&m).display().to_string();
                let detail = e.output().map(|o| o.stderr_excerpt()).unwrap_or_else(|| e.to_string());
                problems.push(Problem {
                    client: name.clone(),
                    source: "git".into(),
                    path: rel,
                    problem: format!("git fsck failed: {}", ferry_text::sanitize(detail.trim(), 400)),
                });
            }
        }
    }
    Ok(n)
}

const UNCATALOGUED: &str = "on disk but not in the catalog";
