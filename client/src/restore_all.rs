//! `ferry restore --all --node NODE DIR`: whole-host recovery from the
//! client (issue 13 point 3). The node lists every source and mirror of
//! this host (`ferry-restore list-all`, the same inventory as `ferry-node
//! restore CLIENT --all`); each is then fetched, checked and placed like a
//! single `ferry restore`, with the node's layout:
//!
//! | what | where |
//! |---|---|
//! | fs source | `DIR/<source>/` |
//! | dump, pipe | `DIR/<source>/<artifact file>` |
//! | git mirror | `DIR/git/<repo>.git` |
//!
//! One member failing never stops the others; the summary names every
//! source that had no usable backup.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use crate::config::ClientConfig;
use crate::restore::{Remote, check_target, clone, download, parse_time, pick_node, place};

/// One row of the summary (`--json`: `members[]`).
#[derive(Debug, Serialize)]
pub struct Row {
    pub source: String,
    pub kind: String,
    /// `restored`, `missing` or `failed`.
    pub status: String,
    pub received: String,
    pub size: Option<u64>,
    pub path: Option<PathBuf>,
    pub detail: String,
}

/// The whole summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub node: String,
    pub dir: PathBuf,
    pub members: Vec<Row>,
    pub restored: usize,
    pub missing: usize,
    pub failed: usize,
}

#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    kind: String,
    module: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    sha256: Option<String>,
    received: Option<String>,
    repo: Option<String>,
    oldest: Option<String>,
}

/// Restore every source and mirror of this host from `node` into `dir`.
pub fn restore_all(
    cfg: &ClientConfig,
    node: Option<&str>,
    dir: &Path,
    at: Option<&str>,
    force: bool,
) -> anyhow::Result<Summary> {
    let node = pick_node(cfg, node)?;
    let at = at.map(parse_time).transpose()?;
    check_target(dir, force)?;
    let remote = Remote::new(cfg, node)?;
    let mut cmd = "ferry-restore list-all".to_owned();
    if let Some(t) = &at {
        cmd.push(' ');
        cmd.push_str(t.as_str());
    }
    let out = remote.ssh(&cmd).run_checked().map_err(|e| match e {
        ferry_run::RunError::Failed { stderr, .. } => anyhow!("node {}: {}", node.name, stderr.trim()),
        e => anyhow!("node {}: {e}", node.name),
    })?;
    let entries: Vec<Entry> = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow!("node {} answered the listing with something else than JSON: {e}", node.name))?;
    std::fs::create_dir_all(dir)?;
    let when = at.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "now".into());
    let mut members = Vec::new();
    for e in entries {
        // Source and repository names come from the node: the same grammar
        // as every other name, so none can lead `dir.join` elsewhere.
        if ferry_request::Name::parse(&e.name).is_err() {
            anyhow::bail!("node {} listed {} that is no source name", node.name, ferry_text::escape(&e.name, 200));
        }
        let mut row = Row {
            source: e.name.clone(),
            kind: e.module.clone().unwrap_or_else(|| if e.kind == "git" { "git".into() } else { "-".into() }),
            status: "restored".into(),
            received: e.received.clone().unwrap_or_else(|| "-".into()),
            size: e.size,
            path: None,
            detail: String::new(),
        };
        let result: anyhow::Result<String> = match e.kind.as_str() {
            // The same refusal as `ferry restore` of one tree source.
            "artifact" if row.kind == "tree" => Err(anyhow!(
                "a snapshot tree, which the client cannot fetch yet: `ferry-node restore {} {} --to DIR` on the node",
                cfg.name,
                e.name
            )),
            "artifact" => (|| {
                let dest = dir.join(&e.name);
                no_overwrite(&dest)?;
                let (path, size, sha) = (e.path.unwrap_or_default(), e.size.unwrap_or(0), e.sha256.unwrap_or_default());
                let sha = ferry_request::Digest::parse(&sha).map_err(|x| anyhow!("bad digest from the node: {x}"))?;
                let (partial, _) = download(&remote, &dest, &path, size, sha.as_str())?;
                let module = row.kind.clone();
                crate::restore::with_hooks(cfg, &e.name, &dest, || place(&partial, &module, &path, &dest))?;
                row.path = Some(dest);
                Ok(if module == "fs" {
                    "tree extracted, sha256 checked".into()
                } else {
                    format!("file {}, sha256 checked", crate::restore::artifact_file_name(&path)?)
                })
            })(),
            "git" if at.is_some() => {
                row.status = "failed".into();
                Ok("--at is not available for git from the client; use ferry-node restore on the node".into())
            }
            "git" => (|| {
                let repo = e.repo.unwrap_or_default();
                let dest = dir.join("git").join(format!("{repo}.git"));
                no_overwrite(&dest)?;
                std::fs::create_dir_all(dest.parent().expect("has parent"))?;
                clone(cfg, &remote, &repo, &dest)?;
                row.path = Some(dest);
                Ok("bare clone, every ref".into())
            })(),
            "none" => {
                row.status = "missing".into();
                Ok(format!("no backup as of {when} (oldest {})", e.oldest.unwrap_or_default()))
            }
            _ => {
                row.status = "missing".into();
                Ok(format!("no backup as of {when} (declared, nothing stored)"))
            }
        };
        match result {
            Ok(d) => row.detail = d,
            Err(x) => {
                row.status = "failed".into();
                row.detail = ferry_text::sanitize(&format!("{x:#}"), 300);
            }
        }
        members.push(row);
    }
    let count = |s: &str| members.iter().filter(|r| r.status == s).count();
    Ok(Summary {
        node: node.name.clone(),
        dir: dir.to_owned(),
        restored: count("restored"),
        missing: count("missing"),
        failed: count("failed"),
        members,
    })
}

/// A member's own place must be absent or empty, even with `--force`.
fn no_overwrite(dest: &Path) -> anyhow::Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(dest)
        && !(m.is_dir() && std::fs::read_dir(dest)?.next().is_none())
    {
        anyhow::bail!("{} exists and is not empty", dest.display());
    }
    Ok(())
}

/// The summary as a table, like `ferry-node restore --all`.
pub fn table(s: &Summary) -> Vec<String> {
    let rows: Vec<[String; 6]> = s
        .members
        .iter()
        .map(|r| {
            [
                r.source.clone(),
                r.kind.clone(),
                r.status.clone(),
                r.received.clone(),
                r.size.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                r.detail.clone(),
            ]
        })
        .collect();
    let head = ["SOURCE", "KIND", "RESULT", "RECEIVED", "SIZE", "DETAIL"].map(String::from);
    let mut w = [0usize; 6];
    for r in std::iter::once(&head).chain(rows.iter()) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out: Vec<String> = std::iter::once(&head)
        .chain(rows.iter())
        .map(|r| {
            let mut l = String::new();
            for (i, c) in r.iter().enumerate().take(5) {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
            l.push_str(&r[5]);
            l
        })
        .collect();
    out.push(format!(
        "{} restored, {} missing, {} failed, from node {} into {}",
        s.restored,
        s.missing,
        s.failed,
        s.node,
        s.dir.display()
    ));
    out
}
