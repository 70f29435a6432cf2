//! `ferry authorize-node`: install a backup node's pull key on this client,
//! bound to `ferry gate` (SECURITY C10: read-only sftp and upload-pack only).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::ClientConfig;

/// The line for `authorized_keys` (a pure function, unit-tested).
pub fn key_line(exe: &Path, config: &Path, node: &str, key: &str) -> anyhow::Result<String> {
    let mut f = key.split_whitespace();
    let (Some(kind), Some(blob)) = (f.next(), f.next()) else { bail!("not a public key line") };
    let known = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"];
    if !known.contains(&kind) || !blob.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
        bail!("not a supported public key (want e.g. \"ssh-ed25519 AAAA...\")");
    }
    let cmd = format!(
        "{} --config {} gate",
        exe.to_str().context("ferry path is not UTF-8")?,
        config.to_str().context("config path is not UTF-8")?
    );
    if cmd.contains('"') || cmd.contains('\\') {
        bail!("paths must not contain quotes or backslashes");
    }
    Ok(format!("restrict,command=\"{cmd}\" {kind} {blob} ferry-node-{node}"))
}

/// Add or replace the key of `node` in the export account's authorized_keys.
pub fn authorize(
    cfg: &ClientConfig,
    config_path: &Path,
    node: &str,
    key_file: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    if cfg.node(node).is_none() {
        return crate::exit::usage(format!("unknown node {node:?}"));
    }
    let key = match key_file {
        Some(p) if p != Path::new("-") => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        _ => {
            let mut s = String::new();
            std::io::stdin().take(16 * 1024).read_to_string(&mut s)?;
            s
        }
    };
    let config_abs = config_path.canonicalize().unwrap_or_else(|_| config_path.to_owned());
    let line = key_line(&std::env::current_exe()?, &config_abs, node, key.trim())?;
    let ak = match &cfg.gate.authorized_keys {
        Some(p) => p.clone(),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is unset; set gate.authorized_keys")?)
            .join(".ssh/authorized_keys"),
    };
    let dir = ak.parent().context("authorized_keys has no directory")?;
    std::fs::create_dir_all(dir)?;
    let old = std::fs::read_to_string(&ak).unwrap_or_default();
    let marker = format!(" ferry-node-{node}");
    let mut out: Vec<&str> = old.lines().filter(|l| !l.ends_with(&marker)).collect();
    out.push(&line);
    let text = out.join("\n") + "\n";
    ferry_durable::write_synced_mode(dir, &ak.file_name().context("file")?.to_string_lossy(), text.as_bytes(), 0o600)?;
    Ok(ak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_line_is_restricted_and_refuses_options() {
        let l =
            key_line(Path::new("/usr/bin/ferry"), Path::new("/etc/ferry/client.toml"), "b1", "ssh-ed25519 AAAAC3Nz x")
                .unwrap();
        assert_eq!(
            l,
            "restrict,command=\"/usr/bin/ferry --config /etc/ferry/client.toml gate\" ssh-ed25519 AAAAC3Nz ferry-node-b1"
        );
        assert!(key_line(Path::new("/f"), Path::new("/c"), "b", "command=\"sh\" ssh-ed25519 AAAA").is_err());
        assert!(key_line(Path::new("/f"), Path::new("/c"), "b", "ssh-ed25519 AA\"AA").is_err());
    }
}
