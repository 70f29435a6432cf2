//! `ferry gate`: the forced command bound to a backup node's pull key on
//! this client (SECURITY C10, SF-10).
//!
//! The node's key may do exactly two things here:
//!
//! * `git-upload-pack '<repo>'` of a repository under one of the exported
//!   git roots (read-only by nature), and
//! * the sftp subsystem, run as `sftp-server -R` (read-only) with an
//!   allow-list of read requests, starting in the export directory.
//!
//! Everything else — a shell, `git-receive-pack`, `scp`, another path — is
//! refused with a message and exit 1. For confinement of sftp to the export
//! directory, the sshd recipe in `deploy/` adds a `ChrootDirectory`; the
//! node additionally never asks for a path outside the enrolled export dir,
//! except below an enrolled `tree-roots` directory for a snapshot tree
//! (`mode = "tree"`): it reads each file the manifest names by its
//! absolute path, `<root>/<path>`, through this same read-only sftp. So a
//! chroot for this account must contain every tree root at its own
//! absolute path (read-only bind mounts), and the sftp side serves every
//! file the account can read: `tree-roots` limits what the node asks for,
//! file permissions what it can get. Listing (readdir) is not allowed and
//! not needed: the node reads only what the manifest names.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::ClientConfig;

/// sftp requests the node's puller needs; nothing that writes or lists.
pub const SFTP_ALLOWED: &str = "open,close,read,lstat,fstat,stat,realpath,limits";

/// What an original command is allowed to become.
#[derive(Debug, PartialEq, Eq)]
pub enum GateDecision {
    UploadPack(PathBuf),
    Sftp,
}

/// Decide about `SSH_ORIGINAL_COMMAND` (pure; unit-tested).
pub fn decide(cfg: &ClientConfig, original: &str) -> anyhow::Result<GateDecision> {
    if original.len() > 4096 || original.bytes().any(|b| b < 0x20 || b == 0x7f) {
        bail!("command refused");
    }
    if original == "internal-sftp" || original == "sftp-server" || original.ends_with("/sftp-server") {
        return Ok(GateDecision::Sftp);
    }
    let rest = original
        .strip_prefix("git-upload-pack ")
        .or_else(|| original.strip_prefix("git upload-pack "))
        .ok_or_else(|| anyhow::anyhow!("only git-upload-pack and read-only sftp are allowed"))?;
    let path = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .filter(|p| !p.contains('\''))
        .ok_or_else(|| anyhow::anyhow!("arguments look dangerous"))?;
    if !path.starts_with('/')
        || path.split('/').skip(1).any(|seg| seg.is_empty() || seg.starts_with('.') || seg.starts_with('-'))
    {
        bail!("arguments look dangerous");
    }
    let canon =
        ferry_prepare::git::canonical_repo(Path::new(path)).map_err(|_| anyhow::anyhow!("no such repository"))?;
    let roots: Vec<PathBuf> = cfg.export.git_roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    if !roots.iter().any(|r| canon.starts_with(r)) {
        bail!("repository is not exported");
    }
    Ok(GateDecision::UploadPack(canon))
}

/// `-c safe.directory=<repo>` for one exported repository. The gate runs as
/// the export account, and repositories usually belong to another one (the
/// git service's, root): git then refuses with "dubious ownership" unless
/// the repository is declared safe in protected configuration, of which the
/// command line is one. Listing a root in `export.git_roots` (root's
/// client.toml) is that declaration, so it is given for exactly the
/// repository [`decide`] admitted, never a wildcard. upload-pack reads no
/// repository setting that runs a program (`uploadpack.packObjectsHook` is
/// honoured only from protected configuration).
fn safe_directory(repo: &Path) -> [std::ffi::OsString; 2] {
    let mut v = std::ffi::OsString::from("safe.directory=");
    v.push(repo.as_os_str());
    ["-c".into(), v]
}

/// The sftp server the gate runs, program first: read-only (`-R`), the
/// allow-list of read requests, starting in the export directory.
pub fn sftp_argv(cfg: &ClientConfig) -> Vec<std::ffi::OsString> {
    let server = cfg.gate.sftp_server.clone().unwrap_or_else(|| "/usr/lib/openssh/sftp-server".into());
    vec![server.into(), "-R".into(), "-p".into(), SFTP_ALLOWED.into(), "-d".into(), cfg.export_dir().into()]
}

/// Exec what the decision allows (does not return on success).
pub fn run(cfg: &ClientConfig) -> anyhow::Result<()> {
    let original = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let decision = match decide(cfg, &original) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(command = %ferry_text::escape(&original, 200), "ferry gate: {e}");
            bail!("ferry gate: {e}");
        }
    };
    let mut cmd = match decision {
        GateDecision::UploadPack(repo) => ferry_run::Cmd::new(&cfg.git)
            .args(safe_directory(&repo))
            .args(["-c", "uploadpack.allowAnySHA1InWant=false", "-c", "uploadpack.allowReachableSHA1InWant=false"])
            .args(["-c", "uploadpack.allowFilter=false", "upload-pack", "--strict", "--"])
            .arg(repo),
        GateDecision::Sftp => {
            let argv = sftp_argv(cfg);
            ferry_run::Cmd::new(&argv[0]).args(&argv[1..])
        }
    };
    // The runner clears the environment; git's protocol v2 is the one thing
    // of sshd's that the child needs, and only its one harmless value.
    if let Ok(p) = std::env::var("GIT_PROTOCOL")
        && p == "version=2"
    {
        cmd = cmd.env("GIT_PROTOCOL", p);
    }
    let err = cmd.exec();
    bail!("ferry gate: cannot execute: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshot trees (issue 10): the node reads tree files by absolute
    /// path below the tree root, outside the export directory, through
    /// the gate's own sftp-server command; writing and listing stay
    /// refused. Driven by the real sftp client (`sftp -D`).
    #[test]
    fn tree_files_are_readable_by_absolute_path_and_nothing_else_is_allowed() {
        let base = std::env::temp_dir().join(format!("ferry-gate-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (export, root) = (base.join("state/export"), base.join("home/alice"));
        std::fs::create_dir_all(&export).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("notes"), b"tree content\n").unwrap();
        let cfg: ClientConfig = toml::from_str(&format!(
            "name='a'\nstate_dir='{}'\n[export]\naddress='h'\nuser='u'\n",
            base.join("state").display()
        ))
        .unwrap();
        let argv: Vec<String> = sftp_argv(&cfg).iter().map(|a| a.to_str().unwrap().to_owned()).collect();
        assert_eq!(argv[1..5], ["-R", "-p", SFTP_ALLOWED, "-d"]);
        let got = base.join("got");
        let sftp = |batch: String| {
            ferry_run::Cmd::new("sftp").arg("-b").arg("-").arg("-D").arg(argv.join(" ")).stdin_bytes(batch).run()
        };
        let out = sftp(format!("get {}/notes {}\n", root.display(), got.display())).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&got).unwrap(), b"tree content\n");
        for refused in [format!("ls {}\n", root.display()), format!("put {} {}/copy\n", got.display(), root.display())]
        {
            let out = sftp(refused.clone()).unwrap();
            assert!(!out.status.success(), "{refused} was allowed");
        }
        assert!(!root.join("copy").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
