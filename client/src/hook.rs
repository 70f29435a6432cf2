//! `ferry hook post-update` (installed in client git repositories) and
//! `ferry hook install`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::ClientConfig;

/// Run as a client repository's `post-update` hook: request a backup of the
/// repository and start a `send` in the background. Never blocks the push:
/// the background process gets no inherited stdio (GITOSIS.md §7.4).
pub fn post_update(cfg: &ClientConfig, config_path: &Path) -> anyhow::Result<String> {
    let git_dir = std::env::var_os("GIT_DIR").map(PathBuf::from).unwrap_or_else(|| ".".into());
    let repo = std::env::current_dir()?.join(git_dir);
    let repo = ferry_prepare::git::canonical_repo(&repo)?;
    let repo_str = repo.to_str().context("repository path is not UTF-8")?;
    // A configured git source for this path decides its nodes.
    let src = cfg.sources.iter().find(|s| {
        s.module == "git" && s.path.as_ref().and_then(|p| p.canonicalize().ok()).as_deref() == Some(repo.as_path())
    });
    let id = match src {
        Some(src) => crate::request::backup(cfg, &src.name, None)?,
        None => crate::request::request(cfg, "git", repo_str, None)?,
    };
    spawn_send(cfg, config_path)?;
    Ok(id)
}

/// Variables of the hook's environment the background send keeps: the
/// account's identity and home (a send prepares every pending request, and
/// a database dump finds `~/.pgpass` or `~/.my.cnf` through `HOME`) and its
/// time zone. Everything else is the pusher's or git's (`GIT_DIR`, the
/// quarantine path, `GIT_SSH_COMMAND`, `LD_PRELOAD`, `FERRY_*`) and must
/// not steer the send (SECURITY C3).
const SEND_ENV: &[&str] = &["HOME", "USER", "LOGNAME", "TZ"];

/// Start `ferry send` detached, logging to `state_dir/log/send.log`, with
/// the runner's cleared environment plus [`SEND_ENV`].
pub fn spawn_send(cfg: &ClientConfig, config_path: &Path) -> anyhow::Result<()> {
    let log_dir = cfg.state_dir.join("log");
    std::fs::create_dir_all(&log_dir)?;
    ferry_run::Cmd::new(std::env::current_exe()?)
        .arg("--config")
        .arg(config_path)
        .arg("send")
        .pass_env(SEND_ENV)
        .spawn_detached(Some(&log_dir.join("send.log")))
        .context("cannot start a background send")?;
    Ok(())
}

/// Install the post-update hook into `repo`.
pub fn install(repo: &Path, config_path: &Path, force: bool) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let repo = ferry_prepare::git::canonical_repo(repo)?;
    let hook = repo.join("hooks/post-update");
    if hook.exists() && !force {
        let existing = std::fs::read_to_string(&hook).unwrap_or_default();
        if !existing.contains("ferry") {
            bail!(
                "{} exists and is not Ferry's; add this line to it or pass --force:\n  {}",
                hook.display(),
                hook_line(config_path)?
            );
        }
    }
    std::fs::create_dir_all(repo.join("hooks"))?;
    let text = format!(
        "#!/bin/sh\n# Installed by `ferry hook install`: every push requests a backup.\n{}\n",
        hook_line(config_path)?
    );
    ferry_durable::write_synced(&repo.join("hooks"), "post-update", text.as_bytes())?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(hook)
}

fn hook_line(config_path: &Path) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let q = |p: &Path| -> anyhow::Result<String> {
        Ok(crate::queue::shell_quote(p.to_str().context("path is not UTF-8")?))
    };
    let cfg = config_path.canonicalize().unwrap_or_else(|_| config_path.to_owned());
    Ok(format!("{} --config {} hook post-update || true", q(&exe)?, q(&cfg)?))
}
