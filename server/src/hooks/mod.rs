//! `ferry-node hook <name>`: the single entry point of every hook script
//! the node installs. Which hook runs depends on the repository git is
//! running it in (resolved from `GIT_DIR`, never from pushed content).

pub mod admin;
pub mod queue;

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::NodeConfig;

/// Run hook `name` for the repository in `GIT_DIR`.
pub fn run(cfg: &NodeConfig, config_path: &Path, name: &str) -> anyhow::Result<()> {
    let git_dir = std::env::var_os("GIT_DIR").map(PathBuf::from).unwrap_or_else(|| ".".into());
    let repo = std::env::current_dir()?.join(git_dir).canonicalize()?;
    let admin = cfg.admin_repo().canonicalize().ok();
    if admin.as_deref() == Some(repo.as_path()) {
        return match name {
            "pre-receive" => admin::pre_receive(cfg),
            "post-update" => admin::post_update(cfg, config_path),
            _ => Ok(()),
        };
    }
    if let Some(client) = queue::client_of(cfg, &repo) {
        return match name {
            "pre-receive" => queue::pre_receive(cfg, &client),
            "post-update" => queue::post_update(cfg, config_path, &client),
            _ => Ok(()),
        };
    }
    if name == "pre-receive" {
        return Ok(()); // other hosted repositories: plain gitosis behaviour
    }
    if name == "post-update" {
        return Ok(());
    }
    bail!("unknown hook {name:?}")
}
