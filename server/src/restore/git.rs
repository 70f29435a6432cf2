//! Giving a mirrored repository back: a clone through git's transport of
//! the mirror as it is, or of its refs as they were at a time, rebuilt from
//! the history the mirror keeps ([`crate::history`]).

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::history::{History, iso};

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
pub fn restore_git_at(
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
