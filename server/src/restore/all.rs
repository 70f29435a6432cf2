//! Whole-host and dataset recovery: `restore CLIENT --all DIR` and
//! `restore --dataset NAME DIR`.
//!
//! Every member is restored as of one moment (`--at`, else now) into its
//! own directory under DIR, and a failing member never stops the others:
//! recovery under pressure wants everything that can be had, plus a plain
//! list of what could not. Layout (documented in the README, "Restore"):
//!
//! * `DIR/<source>/`: an fs source extracted as a tree; a dump or pipe
//!   source as the verified artifact file itself (replaying a dump needs
//!   `--into-db` options per database, so it stays a file here);
//! * `DIR/git/<repo>.git`: a mirror as a bare clone with every ref (`git`
//!   is a reserved source name, so it never clashes with a source);
//! * datasets add one level: `DIR/<client>/<source>/`,
//!   `DIR/<client>/git/<repo>.git`.
//!
//! An artifact is restored only if its digest matches: a tree or an
//! archive is checked first ([`crate::verify::check`]), a dump or stream
//! while it is copied (one read of the store; renamed into place only on a
//! match). When the newest fails, older ones (still as of the moment) are
//! tried and the summary says so.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::{Catalog, Query};
use crate::config::NodeConfig;
use crate::exit::UsageError;

use super::{RestoreArgs, shown};

/// What one member is, as far as the node knows.
#[derive(Debug, Clone)]
enum Kind {
    /// Artifacts in the catalog.
    Source,
    /// A mirrored repository at this path.
    Git(PathBuf),
    /// Declared (gitosis.conf `sources` or a dataset) but nothing stored.
    Nothing,
}

/// One thing to restore.
#[derive(Debug, Clone)]
pub struct Member {
    client: String,
    name: String,
    kind: Kind,
    dest: PathBuf,
}

/// What became of one member (a row of the summary).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub client: String,
    pub source: String,
    /// `fs`, `pipe`, `postgresdb`, …, `git`, or `-` when nothing is stored.
    pub kind: String,
    /// `restored`, `missing` (no backup as of the moment) or `failed`.
    pub status: String,
    /// Node receive time of the restored artifact (RFC 3339).
    pub received: Option<String>,
    /// Bytes of the restored artifact as stored.
    pub size: Option<u64>,
    /// Where it went.
    pub path: Option<String>,
    /// What was done, or why not.
    pub detail: String,
}

/// The whole run, for `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dir: String,
    /// The moment everything was restored as of (RFC 3339), or null: newest.
    pub at: Option<String>,
    pub members: Vec<Outcome>,
    pub restored: usize,
    pub missing: usize,
    pub failed: usize,
}

impl Summary {
    /// `exit::OK` when everything was restored, else `exit::PROBLEMS`.
    pub fn code(&self) -> u8 {
        if self.missing + self.failed == 0 { crate::exit::OK } else { crate::exit::PROBLEMS }
    }

    /// The table people read.
    pub fn lines(&self, with_client: bool) -> Vec<String> {
        let head = ["SOURCE", "KIND", "RESULT", "RECEIVED", "SIZE", "DETAIL"];
        let mut rows: Vec<[String; 6]> = vec![head.map(str::to_owned)];
        for o in &self.members {
            let name = if with_client { format!("{}:{}", o.client, o.source) } else { o.source.clone() };
            rows.push([
                name,
                o.kind.clone(),
                o.status.clone(),
                o.received.clone().unwrap_or_else(|| "-".into()),
                o.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                o.detail.clone(),
            ]);
        }
        let mut width = [0usize; 5];
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.len());
            }
        }
        let mut out: Vec<String> = rows
            .iter()
            .map(|r| {
                let mut l = String::new();
                for (w, c) in width.iter().zip(r.iter()) {
                    l.push_str(&format!("{c:<w$}  "));
                }
                l.push_str(&r[5]);
                l.trim_end().to_owned()
            })
            .collect();
        out.push(format!(
            "{} restored, {} missing, {} failed, into {}{}",
            self.restored,
            self.missing,
            self.failed,
            self.dir,
            self.at.as_ref().map(|a| format!(" as of {a}")).unwrap_or_default()
        ));
        if self.members.iter().any(|o| o.status == "restored" && o.kind != "fs" && o.kind != "git" && o.kind != "pipe")
        {
            out.push(
                "database dumps are restored as files; replay each with `ferry-node restore CLIENT SOURCE --into-db NAME`"
                    .into(),
            );
        }
        out
    }
}

/// Refuse a target below a symbolic link (any existing component of its
/// absolute path, itself included): a link there could send the restore
/// somewhere else than the administrator looked.
pub fn refuse_symlinked(dir: &Path) -> anyhow::Result<()> {
    let abs = if dir.is_absolute() { dir.to_owned() } else { std::env::current_dir()?.join(dir) };
    let mut at = PathBuf::new();
    for c in abs.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UsageError(format!(
                    "{} is below a symbolic link ({} -> {}); restore into a real directory",
                    dir.display(),
                    at.display(),
                    std::fs::read_link(&at).map(|l| l.display().to_string()).unwrap_or_default()
                ))
                .into());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Check the target directory and create it.
fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    refuse_symlinked(dir)?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => Err(UsageError(format!("{} exists and is not a directory", dir.display())).into()),
        Ok(_) if !force && std::fs::read_dir(dir)?.next().is_some() => Err(UsageError(format!(
            "{} is not empty; restore into an empty directory, or pass --force (nothing in it is overwritten: \
             each source's own directory must still be absent or empty)",
            dir.display()
        ))
        .into()),
        Ok(_) => Ok(()),
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display())),
    }
}

/// The mirrors of `client`, by name (`app`, `team/app`) and path.
fn mirrors_of(cfg: &NodeConfig, client: &str) -> Vec<(String, PathBuf)> {
    let root = cfg.client_data(client).join("git");
    crate::repos::find_mirrors(&root)
        .into_iter()
        .filter_map(|m| {
            let rel = m.strip_prefix(&root).ok()?.to_str()?.to_owned();
            Some((rel.strip_suffix(".git").unwrap_or(&rel).to_owned(), m))
        })
        .collect()
}

/// Sources with artifacts stored for `client`, in name order.
fn stored_sources(catalog: Option<&dyn Catalog>, client: &str) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = match catalog {
        Some(c) => c
            .find(&Query { client: Some(client.to_owned()), ..Query::default() })?
            .into_iter()
            .map(|a| a.source)
            .collect(),
        None => Vec::new(),
    };
    v.dedup();
    Ok(v)
}

/// The member `client:name` placed under `base` (a source, else a mirror
/// of that name, else nothing stored).
fn member(
    cfg: &NodeConfig,
    catalog: Option<&dyn Catalog>,
    client: &str,
    name: &str,
    base: &Path,
) -> anyhow::Result<Member> {
    let client = client.to_owned();
    if stored_sources(catalog, &client)?.iter().any(|s| s == name) {
        return Ok(Member { dest: base.join(name), client, name: name.to_owned(), kind: Kind::Source });
    }
    if let Some((n, m)) = mirrors_of(cfg, &client).into_iter().find(|(n, _)| n == name) {
        return Ok(Member { dest: base.join("git").join(format!("{n}.git")), client, name: n, kind: Kind::Git(m) });
    }
    Ok(Member { dest: base.join(name), client, name: name.to_owned(), kind: Kind::Nothing })
}

/// Every member of a whole-host restore of `client`: its stored sources,
/// its mirrors, and the sources gitosis.conf says it sends.
pub fn host_members(cfg: &NodeConfig, client: &str, dir: &Path) -> anyhow::Result<Vec<Member>> {
    if !ferry_gitosis::username::is_valid_client_name(client) {
        return Err(UsageError(format!("{client:?} is not a client name")).into());
    }
    let catalog = crate::catalog::open_existing(cfg)?;
    let expected: Vec<String> = crate::enrollment::load(cfg)
        .ok()
        .and_then(|e| e.clients.get(client).map(|c| c.expected.iter().map(|x| x.source.as_str().to_owned()).collect()))
        .unwrap_or_default();
    let mut out = Vec::new();
    for s in stored_sources(catalog.as_deref(), client)? {
        out.push(Member { dest: dir.join(&s), client: client.to_owned(), name: s, kind: Kind::Source });
    }
    for (n, m) in mirrors_of(cfg, client) {
        out.push(Member {
            dest: dir.join("git").join(format!("{n}.git")),
            client: client.to_owned(),
            name: n,
            kind: Kind::Git(m),
        });
    }
    for e in expected {
        if !out.iter().any(|m| m.name == e) {
            out.push(Member { dest: dir.join(&e), client: client.to_owned(), name: e, kind: Kind::Nothing });
        }
    }
    if out.is_empty() {
        return Err(UsageError(format!("nothing is stored or expected for {client:?}")).into());
    }
    Ok(out)
}

/// The members of a whole-host restore of `client` as `(name, what)`,
/// `what` one of `source`, `git`, `missing` (the client-side `ferry
/// restore --all` asks the node for this through `serve`).
pub fn host_inventory(cfg: &NodeConfig, client: &str) -> anyhow::Result<Vec<(String, &'static str)>> {
    Ok(host_members(cfg, client, Path::new(""))?
        .into_iter()
        .map(|m| {
            let what = match m.kind {
                Kind::Source => "source",
                Kind::Git(_) => "git",
                Kind::Nothing => "missing",
            };
            (m.name, what)
        })
        .collect())
}

/// The `(client, source)` members of dataset `name` (for `find --dataset`).
pub fn dataset_pairs(cfg: &NodeConfig, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let enrollment = crate::enrollment::load(cfg)?;
    enrollment
        .datasets
        .get(name)
        .cloned()
        .ok_or_else(|| UsageError(format!("no dataset {name:?} in gitosis.conf")).into())
}

/// Every member of dataset `name` (from the live enrollment), placed
/// under `dir/<client>/`.
pub fn dataset_members(cfg: &NodeConfig, name: &str, dir: &Path) -> anyhow::Result<Vec<Member>> {
    let enrollment = crate::enrollment::load(cfg)?;
    let Some(ds) = enrollment.datasets.get(name) else {
        let known: Vec<&String> = enrollment.datasets.keys().collect();
        return Err(UsageError(format!(
            "no dataset {name:?} in gitosis.conf; datasets: [{}]",
            known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    let catalog = crate::catalog::open_existing(cfg)?;
    ds.iter().map(|(c, s)| member(cfg, catalog.as_deref(), c, s, &dir.join(c))).collect()
}

/// One dataset for `list --datasets`: each member with its newest backup.
#[derive(Debug, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub members: Vec<DatasetMember>,
}

/// A member of a dataset and what the node holds of it.
#[derive(Debug, Serialize)]
pub struct DatasetMember {
    pub client: String,
    pub source: String,
    /// `source`, `git` or `nothing stored`.
    pub stored: String,
    /// Node receive time of its newest artifact (RFC 3339).
    pub newest: Option<String>,
}

/// Every dataset of the live enrollment, with what is stored of each
/// member.
pub fn datasets(cfg: &NodeConfig) -> anyhow::Result<Vec<DatasetInfo>> {
    let enrollment = crate::enrollment::load(cfg)?;
    let catalog = crate::catalog::open_existing(cfg)?;
    let mut out = Vec::new();
    for (name, ds) in &enrollment.datasets {
        let mut members = Vec::new();
        for (c, s) in ds {
            let m = member(cfg, catalog.as_deref(), c, s, Path::new(""))?;
            let newest = match (&m.kind, &catalog) {
                (Kind::Source, Some(cat)) => cat.latest(c, s, None)?.map(|a| shown(&a.received)),
                _ => None,
            };
            let stored = match m.kind {
                Kind::Source => "source",
                Kind::Git(_) => "git",
                Kind::Nothing => "nothing stored",
            };
            members.push(DatasetMember { client: c.clone(), source: s.clone(), stored: stored.into(), newest });
        }
        out.push(DatasetInfo { name: name.clone(), members });
    }
    Ok(out)
}

/// `list --datasets` for people.
pub fn dataset_lines(list: &[DatasetInfo]) -> Vec<String> {
    if list.is_empty() {
        return vec!["no datasets in gitosis.conf ([ferry dataset NAME] sources = CLIENT:SOURCE ...)".into()];
    }
    let mut out = Vec::new();
    for d in list {
        out.push(format!("dataset {}", d.name));
        for m in &d.members {
            out.push(format!(
                "  {}:{}  {}{}",
                m.client,
                m.source,
                m.stored,
                m.newest.as_ref().map(|n| format!(", newest {n}")).unwrap_or_default()
            ));
        }
    }
    out
}

/// Restore every member as of `args.at` into `dir` (checked first; created
/// when absent) and say what became of each.
pub fn restore_members(
    cfg: &NodeConfig,
    dir: &Path,
    members: &[Member],
    args: &RestoreArgs,
    force: bool,
    show: bool,
) -> anyhow::Result<Summary> {
    prepare_dir(dir, force)?;
    let catalog = crate::catalog::open_existing(cfg)?;
    let store = crate::store::open(cfg)?;
    let as_of = args.at.as_deref().map(shown);
    let no_backup = || format!("no backup as of {}", as_of.clone().unwrap_or_else(|| "now".into()));
    let mut outs = Vec::new();
    for m in members {
        let mut o = Outcome {
            client: m.client.clone(),
            source: m.name.clone(),
            kind: "-".into(),
            status: "missing".into(),
            received: None,
            size: None,
            path: None,
            detail: String::new(),
        };
        if !matches!(m.kind, Kind::Nothing)
            && let Some(parent) = m.dest.parent()
        {
            // DIR/<client>/ and DIR/git/: extraction wants its parent.
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
        }
        match &m.kind {
            Kind::Nothing => o.detail = format!("{} (declared, nothing stored)", no_backup()),
            Kind::Git(mirror) => {
                o.kind = "git".into();
                let done = match &args.at {
                    None => super::restore_git(cfg, mirror, &m.dest, false).map(|()| "bare clone, every ref".into()),
                    Some(t) => super::git::restore_git_at(cfg, &m.client, &m.name, mirror, &m.dest, false, t),
                };
                match done {
                    Ok(d) => {
                        o.status = "restored".into();
                        o.size = Some(crate::store::used_bytes(mirror));
                        o.path = Some(m.dest.display().to_string());
                        o.detail = if args.at.is_none() { d } else { "bare clone, the refs of that time".into() };
                    }
                    Err(e) if e.downcast_ref::<UsageError>().is_some() => o.detail = format!("{}: {e}", no_backup()),
                    Err(e) => {
                        o.status = "failed".into();
                        o.detail = format!("{e:#}");
                    }
                }
            }
            Kind::Source => {
                let q = Query {
                    client: Some(m.client.clone()),
                    source: Some(m.name.clone()),
                    until: args.at.clone(),
                    ..Query::default()
                };
                let rows = match &catalog {
                    Some(c) => c.find(&q)?,
                    None => Vec::new(),
                };
                let mut bad: Vec<String> = Vec::new();
                let one =
                    RestoreArgs { to: Some(m.dest.clone()), policy: args.policy.clone(), ..RestoreArgs::default() };
                // Newest first. A dump or stream is checked while it is
                // copied (one read of the store, not a check and then the
                // copy), a tree or an archive before it is laid out.
                let mut done = None;
                for a in rows.iter().rev() {
                    o.kind = a.module.clone();
                    let copied_checked = a.module != "fs" && a.module != crate::trees::MODULE;
                    // The archive laid out is the version checked.
                    let checked = match copied_checked {
                        true => None,
                        false => match crate::verify::check_version(store.as_ref(), a, show) {
                            Ok(opener) => Some(opener),
                            Err(p) => {
                                bad.push(format!("{} ({p})", shown(&a.received)));
                                continue;
                            }
                        },
                    };
                    let r = super::artifact::restore_version(cfg, store.as_ref(), a, &one, show, checked.as_ref());
                    if let Err(e) = &r
                        && let Some(u) = e.downcast_ref::<super::artifact::Unusable>()
                    {
                        bad.push(format!("{} ({})", shown(&a.received), u.problem));
                        continue;
                    }
                    done = Some((a, r));
                    break;
                }
                match done {
                    None if bad.is_empty() => o.detail = no_backup(),
                    None => {
                        o.status = "failed".into();
                        o.detail = format!("integrity check failed: {}", bad.join("; "));
                    }
                    Some((a, Ok(_))) => {
                        o.status = "restored".into();
                        o.received = Some(shown(&a.received));
                        o.size = Some(a.size);
                        o.path = Some(m.dest.display().to_string());
                        o.detail = match a.module.as_str() {
                            "fs" => "tree extracted".into(),
                            _ => format!("file {}", a.path.rsplit('/').next().unwrap_or_default()),
                        };
                        if !bad.is_empty() {
                            // An older copy is a recovery, but not the one asked for.
                            o.status = "failed".into();
                            o.detail = format!(
                                "older copy restored ({}); integrity check failed: {}",
                                o.detail,
                                bad.join("; ")
                            );
                        }
                    }
                    Some((_, Err(e))) => {
                        o.status = "failed".into();
                        o.detail = format!("{e:#}");
                    }
                }
            }
        }
        outs.push(o);
    }
    let count = |s: &str| outs.iter().filter(|o| o.status == s).count();
    Ok(Summary {
        dir: dir.display().to_string(),
        at: as_of,
        restored: count("restored"),
        missing: count("missing"),
        failed: count("failed"),
        members: outs,
    })
}
