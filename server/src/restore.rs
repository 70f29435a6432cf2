//! `ferry-node restore`: give stored data back.
//!
//! `restore CLIENT WHAT [--at T]` names either a source (artifacts in the
//! catalog: fs, database dumps, pipes) or a mirrored git repository. With
//! `--at`, a source gives its newest artifact received at or before `T`; a
//! repository gives its refs as they were at `T`, rebuilt from the history
//! the mirror keeps ([`crate::history`]). A time before the first backup is
//! an error that says when the first backup was, whatever the kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::artifacts::RestoreArgs;
use crate::catalog::{Catalog, Query};
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::history::{History, iso};

/// What a source's artifacts are, for messages.
fn kind_of(module: &str) -> String {
    match module {
        "fs" => "fs source".into(),
        "postgresdb" | "mysql" => format!("{module} dump source"),
        "pipe" => "pipe source".into(),
        m => format!("{m} source"),
    }
}

/// A catalog time (`20261122T010203Z`, maybe `-N`) for people.
fn shown(received: &str) -> String {
    received
        .get(..16)
        .and_then(|s| s.parse::<ferry_request::Stamp>().ok())
        .map(|s| iso(s.to_unix()))
        .unwrap_or_else(|| received.to_owned())
}

/// `restore CLIENT WHAT`: dispatch to the source's artifacts or to the
/// repository. `args.at` is a catalog time ([`crate::artifacts::parse_time`]).
pub fn restore(
    cfg: &NodeConfig,
    client: &str,
    what: &str,
    args: &RestoreArgs,
    checkout: bool,
    show: bool,
) -> anyhow::Result<String> {
    if !ferry_gitosis::username::is_valid_client_name(client) {
        return Err(UsageError(format!("{client:?} is not a client name")).into());
    }
    let catalog = crate::catalog::open_existing(cfg)?;
    let kept = match &catalog {
        Some(c) => {
            c.find(&Query { client: Some(client.to_owned()), source: Some(what.to_owned()), ..Query::default() })?
        }
        None => Vec::new(),
    };
    if let Some(oldest) = kept.first() {
        let chosen = match &args.at {
            None => kept.last(),
            Some(t) => kept.iter().rev().find(|a| a.received.as_str() <= t.as_str()),
        };
        let Some(a) = chosen else {
            return Err(UsageError(format!(
                "{client} has no backup of {} {what:?} at or before {}: the oldest one kept was received at {}",
                kind_of(&oldest.module),
                shown(args.at.as_deref().unwrap_or_default()),
                shown(&oldest.received)
            ))
            .into());
        };
        return crate::artifacts::restore(cfg, a, args, show);
    }
    let mirror = find_git(cfg, client, what, catalog.as_deref())?;
    let to = args.to.as_ref().ok_or_else(|| UsageError("say where to restore the repository: --to DIR".into()))?;
    match &args.at {
        None => {
            restore_git(cfg, &mirror, to, checkout)?;
            Ok(format!("restored {} to {}", mirror.display(), to.display()))
        }
        Some(t) => restore_git_at(cfg, client, what, &mirror, to, checkout, t),
    }
}

/// Locate a git mirror of `client` by name (`app`, `app.git`,
/// `git/team/app.git`); when there is none, say what is stored.
pub fn find_git(cfg: &NodeConfig, client: &str, what: &str, catalog: Option<&dyn Catalog>) -> anyhow::Result<PathBuf> {
    let rel = what.strip_prefix("git/").unwrap_or(what);
    let rel = if rel.ends_with(".git") { rel.to_owned() } else { format!("{rel}.git") };
    let p = cfg.client_data(client).join("git").join(&rel);
    if rel.split('/').all(ferry_text::is_safe_token) && p.join("HEAD").is_file() {
        return Ok(p);
    }
    let repos: Vec<String> = crate::list::find_mirrors(&cfg.client_data(client).join("git"))
        .iter()
        .filter_map(|m| m.strip_prefix(cfg.client_data(client)).ok().map(|r| r.display().to_string()))
        .collect();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = catalog {
        for a in c.find(&Query { client: Some(client.to_owned()), ..Query::default() })? {
            sources.insert(a.source.clone(), a.module.clone());
        }
    }
    let sources: Vec<String> = sources.iter().map(|(s, m)| format!("{s} ({m})")).collect();
    Err(UsageError(format!(
        "no source or repository {what:?} stored for {client}; stored: repositories [{}], sources [{}]",
        repos.join(", "),
        sources.join(", ")
    ))
    .into())
}

/// The hardened git command restores run (no system or global config, no
/// hooks, only local transports).
fn git(cfg: &NodeConfig) -> ferry_run::Cmd {
    ferry_run::Cmd::new(&cfg.git)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", cfg.empty_dir())
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "protocol.allow=never", "-c", "protocol.file.allow=always"])
        .args(["-c", "core.hooksPath=/dev/null", "-c", "transfer.fsckObjects=true"])
}

/// Clone a stored mirror to `to` (bare unless `checkout`). The clone goes
/// through git's transport (`--no-local`), so no file of the stored
/// repository is hard-linked or copied verbatim into the result.
pub fn restore_git(cfg: &NodeConfig, mirror: &Path, to: &Path, checkout: bool) -> anyhow::Result<()> {
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", to.display());
    }
    let mut cmd = git(cfg).args(["clone", "--quiet", "--no-local"]);
    if !checkout {
        cmd = cmd.arg("--bare");
    }
    cmd.arg("--").arg(mirror).arg(to).run_checked().context("git clone failed")?;
    let git_dir = if checkout { to.join(".git") } else { to.to_owned() };
    // The restored repository should not point back into the backup store.
    let _ = ferry_run::Cmd::new(&cfg.git)
        .arg(format!("--git-dir={}", git_dir.display()))
        .args(["remote", "remove", "origin"])
        .run();
    Ok(())
}

/// Seconds since the epoch of a catalog time (`20261122T010203Z`).
fn unix_of(at: &str) -> anyhow::Result<i64> {
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", at).with_context(|| format!("time {at:?}"))?;
    Ok(dt.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second())
}

/// The repository as it was at `at`: its refs then, rebuilt from the
/// mirror's history, are written into a throw-away repository that borrows
/// the mirror's objects (`objects/info/alternates`, nothing copied), which
/// is then cloned like a current restore, so the result holds exactly the
/// objects those refs reach.
fn restore_git_at(
    cfg: &NodeConfig,
    client: &str,
    what: &str,
    mirror: &Path,
    to: &Path,
    checkout: bool,
    at: &str,
) -> anyhow::Result<String> {
    let t = unix_of(at)?;
    let history = History::load(mirror)?;
    let Some(first) = history.first else {
        bail!("the mirror {} keeps no history of its refs, so no earlier state can be restored", mirror.display());
    };
    if t < first {
        return Err(UsageError(format!(
            "{client} has no backup of git repository {what:?} at or before {}: its first backup was at {}",
            iso(t),
            iso(first)
        ))
        .into());
    }
    let state = history.state_at(t).map_err(|problems| {
        anyhow::anyhow!(
            "the refs of {} at {} cannot be reconstructed exactly: {}",
            mirror.display(),
            iso(t),
            problems.join("; ")
        )
    })?;
    let state_dir = cfg.state_dir();
    std::fs::create_dir_all(cfg.empty_dir()).with_context(|| format!("cannot create {}", cfg.empty_dir().display()))?;
    std::fs::create_dir_all(&state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let view = tempfile::Builder::new()
        .prefix(".restore-view-")
        .tempdir_in(&state_dir)
        .with_context(|| format!("cannot create a temporary repository in {}", state_dir.display()))?;
    let v = view.path();
    git(cfg)
        .args(["init", "--quiet", "--bare"])
        .arg(format!("--template={}", cfg.empty_dir().display()))
        .arg("--")
        .arg(v)
        .run_checked()
        .context("git init failed")?;
    let objects = std::fs::canonicalize(mirror.join("objects"))?;
    std::fs::write(v.join("objects/info/alternates"), format!("{}\n", objects.display()))?;
    let script: String = state.iter().map(|(r, oid)| format!("create {r} {oid}\n")).collect();
    git(cfg)
        .arg(format!("--git-dir={}", v.display()))
        .args(["update-ref", "--stdin"])
        .stdin_bytes(script.into_bytes())
        .run_checked()
        .context("setting the refs of the time failed")?;
    if let Some(head) = history.head_for(&state) {
        git(cfg).arg(format!("--git-dir={}", v.display())).args(["symbolic-ref", "HEAD"]).arg(&head).run_checked()?;
    }
    restore_git(cfg, v, to, checkout)?;
    Ok(format!(
        "restored {} as it was at {} ({} refs; first backup {}) to {}",
        mirror.display(),
        iso(t),
        state.len(),
        iso(first),
        to.display()
    ))
}
