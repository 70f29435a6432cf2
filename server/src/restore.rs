//! `ferry-node restore`: give stored data back.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::NodeConfig;
use crate::exit::UsageError;

/// Locate a git mirror of `client` by name (`app`, `app.git`,
/// `git/team/app.git`).
pub fn find_git(cfg: &NodeConfig, client: &str, what: &str) -> anyhow::Result<PathBuf> {
    if !ferry_gitosis::username::is_valid_client_name(client) {
        return Err(UsageError(format!("{client:?} is not a client name")).into());
    }
    let rel = what.strip_prefix("git/").unwrap_or(what);
    let rel = if rel.ends_with(".git") { rel.to_owned() } else { format!("{rel}.git") };
    if rel.split('/').any(|s| !ferry_text::is_safe_token(s)) {
        return Err(UsageError(format!("{what:?} is not a stored repository name")).into());
    }
    let p = cfg.client_data(client).join("git").join(&rel);
    if !p.join("HEAD").is_file() {
        let known: Vec<String> = crate::list::find_mirrors(&cfg.client_data(client).join("git"))
            .iter()
            .filter_map(|m| m.strip_prefix(cfg.client_data(client)).ok().map(|r| r.display().to_string()))
            .collect();
        return Err(
            UsageError(format!("no repository {what:?} stored for {client}; stored: [{}]", known.join(", "))).into()
        );
    }
    Ok(p)
}

/// Clone a stored mirror to `to` (bare unless `checkout`). The clone goes
/// through git's transport (`--no-local`), so no file of the stored
/// repository is hard-linked or copied verbatim into the result.
pub fn restore_git(cfg: &NodeConfig, mirror: &Path, to: &Path, checkout: bool) -> anyhow::Result<()> {
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", to.display());
    }
    let mut cmd = ferry_run::Cmd::new(&cfg.git)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", cfg.empty_dir())
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "protocol.allow=never", "-c", "protocol.file.allow=always"])
        .args(["-c", "core.hooksPath=/dev/null", "-c", "transfer.fsckObjects=true"])
        .args(["clone", "--quiet", "--no-local"]);
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
