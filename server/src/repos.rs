//! Repositories the node hosts: queue repos and gitosis-admin.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::NodeConfig;

/// The hook scripts Ferry installs: each only `exec`s `ferry-node hook`.
pub const HOOKS: &[&str] = &["pre-receive", "post-update"];

/// Create a bare repository (if missing) with hardened receive settings
/// and Ferry's hooks (always rewritten, so a moved binary is picked up).
/// `queue` repos accept only fast-forwards of one branch and no deletions.
pub fn ensure_bare(cfg: &NodeConfig, config_path: &Path, dir: &Path, queue: bool) -> anyhow::Result<()> {
    let git = |args: &[&str]| -> anyhow::Result<()> {
        ferry_run::Cmd::new(&cfg.git)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", cfg.empty_dir())
            .arg(format!("--git-dir={}", dir.display()))
            .args(args)
            .run_checked()?;
        Ok(())
    };
    if !dir.join("HEAD").is_file() {
        let template = cfg.empty_dir().join("template");
        std::fs::create_dir_all(&template)?;
        std::fs::create_dir_all(dir.parent().context("repository has no parent")?)?;
        ferry_run::Cmd::new(&cfg.git)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", cfg.empty_dir())
            .args(["init", "--bare", "--quiet"])
            .arg(format!("--template={}", template.display()))
            .arg("--")
            .arg(dir)
            .run_checked()
            .with_context(|| format!("cannot create {}", dir.display()))?;
        git(&["symbolic-ref", "HEAD", "refs/heads/master"])?;
        let mut settings = vec![
            ("receive.fsckObjects", "true"),
            ("receive.advertisePushOptions", "false"),
            ("core.logAllRefUpdates", "true"),
            ("uploadpack.allowAnySHA1InWant", "false"),
        ];
        if queue {
            settings.extend([
                ("receive.denyNonFastForwards", "true"),
                ("receive.denyDeletes", "true"),
                ("receive.maxInputSize", "64m"),
                ("gc.auto", "0"),
            ]);
        }
        for (k, v) in settings {
            git(&["config", k, v])?;
        }
    }
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let cmd = cfg.self_command(config_path);
    for h in HOOKS {
        let text = format!("#!/bin/sh\n# Installed by ferry-node; do not edit.\nexec {cmd} hook {h}\n");
        if std::fs::read_to_string(hooks.join(h)).ok().as_deref() != Some(text.as_str()) {
            ferry_durable::write_synced_mode(&hooks, h, text.as_bytes(), 0o755)?;
        }
    }
    Ok(())
}

/// Bare repositories below `root`, found by an iterative `lstat` walk that
/// never follows symlinks and stops at each repository.
pub fn find_mirrors(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for de in rd.flatten() {
            let Ok(ft) = de.file_type() else { continue };
            let name = de.file_name().to_string_lossy().into_owned();
            if !ft.is_dir() || name.starts_with('.') {
                continue;
            }
            let p = de.path();
            if name.ends_with(".git") && p.join("HEAD").is_file() {
                out.push(p);
            } else if stack.len() < 10_000 {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
