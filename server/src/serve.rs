//! `ferry-node serve USER`: the SSH forced command of every enrolled key.
//!
//! gitosis-compatible: the same accepted commands, paths, decision order
//! and messages (`ERROR:gitosis.serve.main:…` on stderr, exit 1), decided by
//! the pure `ferry_gitosis::serve::decide`. Differences, all deliberate:
//! the repository root comes from the node's TOML, not from gitosis.conf
//! (W2); only writers auto-create repositories (W5); git's server programs
//! are exec'd directly with a cleared environment instead of `git shell`;
//! and `FERRY_USER`/`GITOSIS_USER` tell the hooks who authenticated.

use std::path::Path;

use ferry_gitosis::serve::{Denied, Verb};

use crate::config::NodeConfig;
use crate::events;

fn deny(cfg: &NodeConfig, user: &str, original: &str, msg: &str) -> u8 {
    // Relayed to the ssh client's terminal: shown safely, never escaped twice.
    eprintln!("ERROR:gitosis.serve.main:{}", ferry_text::sanitize(msg, 600));
    events::record(
        &cfg.events_log(),
        "warn",
        None,
        "access_denied",
        Some("E_ACL_DENIED"),
        None,
        &format!("user {user}: {msg}: command {}", ferry_text::escape(original, 300)),
    );
    1
}

/// Run serve; returns an exit code only when it could not exec git.
pub fn serve(cfg: &NodeConfig, config_path: &Path, user: &str) -> u8 {
    let Some(original) = std::env::var_os("SSH_ORIGINAL_COMMAND") else {
        return deny(cfg, user, "", &Denied::NoCommand.to_string());
    };
    let original = original.to_string_lossy().into_owned();
    let conf = match crate::enrollment::load_conf(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR:gitosis.app:{e:#}");
            return 1;
        }
    };
    if ferry_gitosis::serve_restore::is_restore(&original) {
        return match ferry_gitosis::serve_restore::decide_restore(&conf, user, &original) {
            Ok(req) => crate::serve_restore::serve(cfg, user, req, &|msg| deny(cfg, user, &original, msg)),
            Err(d) => deny(cfg, user, &original, &d.to_string()),
        };
    }
    let allowed = match ferry_gitosis::serve::decide(&conf, user, &original) {
        Ok(a) => a,
        Err(d) => return deny(cfg, user, &original, &d.to_string()),
    };
    if allowed.mode == ferry_gitosis::access::Mode::Writeable {
        eprintln!(
            "WARNING:gitosis.access.haveAccess:Repository '{}' config has typo \"writeable\", should be \"writable\"",
            allowed.relpath
        );
    }
    let repo = cfg.repositories().join(format!("{}.git", allowed.relpath));
    if !repo.join("HEAD").is_file() {
        if !allowed.write {
            return deny(cfg, user, &original, &Denied::ReadDenied.to_string());
        }
        let is_queue = allowed.relpath.strip_prefix("queue/").is_some_and(|c| c == user);
        if let Err(e) = crate::repos::ensure_bare(cfg, config_path, &repo, is_queue) {
            eprintln!("ERROR:gitosis.serve.main:Cannot create repository: {e:#}");
            return 1;
        }
    }
    let service = match allowed.verb {
        Verb::UploadPack => "upload-pack",
        Verb::ReceivePack => "receive-pack",
        Verb::UploadArchive => "upload-archive",
    };
    let mut cmd = ferry_run::Cmd::new(&cfg.git)
        .env("HOME", cfg.empty_dir())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd = if allowed.verb == Verb::UploadArchive {
        // upload-archive takes no `--` and runs no hooks.
        cmd.arg(service).arg(&repo)
    } else {
        // The hooks learn who authenticated from these.
        cmd.env("FERRY_USER", user).env("GITOSIS_USER", user).arg(service).arg("--").arg(&repo)
    };
    // The runner clears the environment; the protocol version the client
    // asked for (through sshd's AcceptEnv) is kept when it is one git knows.
    if let Ok(p) = std::env::var("GIT_PROTOCOL")
        && matches!(p.as_str(), "version=2" | "version=1" | "version=0")
    {
        cmd = cmd.env("GIT_PROTOCOL", p);
    }
    let err = cmd.exec();
    eprintln!("ERROR:gitosis.serve.main:Cannot execute git-shell. ({err})");
    1
}
