//! `ferry-node init`: the gitosis-init step.
//!
//! Creates the node's directories and its shared pull key, the
//! `gitosis-admin` repository with Ferry's hooks, and — when the repository
//! has no commit yet — the first commit, exactly as gitosis-init makes it
//! (`gitosis.conf` granting the admin write access to gitosis-admin, and
//! `keydir/<admin>.pub`). Then it activates that enrollment, which writes
//! authorized_keys. Re-running is safe and never replaces the admin key.

use std::path::Path;

use anyhow::{Context as _, bail};
use git2::{Repository, Signature};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::layout::{self, Owner};

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub admin: String,
    pub admin_repo: String,
    pub created_commit: bool,
    pub node_pull_key: String,
    pub summary: String,
}

pub fn init(
    cfg: &NodeConfig,
    config_path: &Path,
    admin_key: &str,
    name: Option<&str>,
    owner: Option<&Owner>,
) -> anyhow::Result<InitReport> {
    let key_line = admin_key.lines().find(|l| !l.trim().is_empty()).context("no public key given")?.trim();
    let key = ferry_gitosis::keys::parse_line(key_line)
        .map_err(|e| anyhow::anyhow!("the admin key is not acceptable: {e}"))?;
    let admin = match name {
        Some(n) => n.to_owned(),
        None => key_line
            .split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .context("the key has no comment to take the admin name from (gitosis-init uses it); pass --name")?,
    };
    if !ferry_gitosis::username::is_safe_username(&admin) {
        bail!("Username contains not allowed characters: {}", ferry_text::escape(&admin, 100));
    }
    let config_str = config_path.to_string_lossy();
    if config_str.contains(['\'', '"', '\\', ' ', '\n']) {
        bail!("the configuration path must not contain quotes, spaces or backslashes (it is written into hooks)");
    }
    match owner {
        Some(o) if layout::is_root() => layout::prepare_as_root(cfg, o)?,
        Some(o) => bail!(
            "--owner {}:{} needs root (it creates the directories for that account); as {}, run init without --owner once root made them",
            o.user,
            o.group,
            o.user
        ),
        None if !layout::is_root() => layout::check_creatable(cfg, config_path)?,
        None => {}
    }
    for d in [cfg.base_dir.clone(), cfg.repositories(), cfg.pool_dir(), cfg.data_dir(), cfg.state_dir()] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::create_dir_all(cfg.empty_dir().join("hooks"))?;
    if owner.is_none() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(cfg.keys_dir())?;
        // The two-account layout's 2750 (made by root with --owner) stays.
        if layout::private_key_mode(&cfg.keys_dir()) == 0o600 {
            std::fs::set_permissions(cfg.keys_dir(), std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let node_key =
        crate::hooks::admin::ensure_key(&cfg.keys_dir().join("node/id_ed25519"), &format!("ferry-node@{}", cfg.name))?;
    let admin_repo = cfg.admin_repo();
    crate::repos::ensure_bare(cfg, config_path, &admin_repo, false)?;
    let repo = Repository::open_bare(&admin_repo)?;
    let created = repo.refname_to_id("refs/heads/master").is_err();
    if created {
        let conf = format!("[gitosis]\n\n[group gitosis-admin]\nmembers = {admin}\nwritable = gitosis-admin\n\n");
        let mut keydir = repo.treebuilder(None)?;
        keydir.insert(format!("{admin}.pub"), repo.blob(format!("{}\n", key.to_line()).as_bytes())?, 0o100644)?;
        let keydir = keydir.write()?;
        let mut root = repo.treebuilder(None)?;
        root.insert("gitosis.conf", repo.blob(conf.as_bytes())?, 0o100644)?;
        root.insert("keydir", keydir, 0o040000)?;
        let tree = repo.find_tree(root.write()?)?;
        let sig = Signature::now("Gitosis Admin", &admin)?;
        repo.commit(Some("refs/heads/master"), &sig, &sig, "Automatic creation of gitosis repository.", &tree, &[])?;
    }
    let summary = crate::hooks::admin::apply(cfg, config_path)?;
    if let Some(o) = owner {
        layout::chown_made_by_root(cfg, o)?;
    }
    Ok(InitReport {
        admin,
        admin_repo: admin_repo.display().to_string(),
        created_commit: created,
        node_pull_key: std::fs::read_to_string(node_key.with_extension("pub"))?.trim().to_owned(),
        summary,
    })
}
