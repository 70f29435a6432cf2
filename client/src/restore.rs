//! `ferry restore SOURCE TARGET`: give one of this host's backups back from
//! a node (issue 13 point 2).
//!
//! The node serves only this host's own data, read-only, to the key this
//! host pushes with, through the forced command's `ferry-restore` verb
//! (`ferry_gitosis::serve_restore`). Nothing the node sends is trusted: the
//! bytes of an artifact are hashed here and must match the catalog's
//! digest before anything is extracted or moved into place; an fs archive
//! goes through the same strict extractor as the node's own restore; a git
//! mirror is cloned through git's transport with object checks on.
//!
//! Downloads resume: the bytes land in `TARGET.partial`, and
//! `TARGET.partial.from` names the artifact they belong to, so a second
//! run asks only for what is missing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{ClientConfig, NodeConfig};
use crate::exit::UsageError;

/// What to restore, from the command line.
#[derive(Debug)]
pub struct Args {
    pub source: String,
    pub target: PathBuf,
    pub at: Option<String>,
    pub node: Option<String>,
    pub force: bool,
}

/// What was restored (`--json` prints it as one line).
#[derive(Debug, Serialize)]
pub struct Done {
    pub node: String,
    pub source: String,
    /// `artifact` or `git`.
    pub kind: String,
    /// The catalog path of the artifact (empty for git).
    pub path: String,
    pub received: String,
    pub sha256: String,
    pub bytes: u64,
    /// Bytes that were already in `TARGET.partial` from an earlier run.
    pub resumed_from: u64,
    pub target: PathBuf,
    pub message: String,
}

/// The node's answer to `ferry-restore list`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Listing {
    Artifact { module: String, path: String, size: u64, sha256: String, received: String },
    Git { repo: String },
    None { oldest: String },
}

/// Restore `args.source` from a node into `args.target`.
pub fn restore(cfg: &ClientConfig, args: &Args) -> anyhow::Result<Done> {
    let node = pick_node(cfg, args.node.as_deref())?;
    let source = ferry_request::Name::parse(&args.source)
        .map_err(|e| UsageError(format!("{:?} is not a source or repository name: {e}", args.source)))?;
    let at = args.at.as_deref().map(parse_time).transpose()?;
    check_target(&args.target, args.force)?;
    let remote = Remote::new(cfg, node)?;
    let asked = node_name_of(cfg, &source);
    let mut list = format!("ferry-restore list {asked}");
    if let Some(t) = &at {
        list.push(' ');
        list.push_str(t.as_str());
    }
    let out = remote.ssh(&list).run_checked().map_err(|e| match e {
        // The node's answer, not ssh's long command line.
        ferry_run::RunError::Failed { stderr, .. } => anyhow!("node {}: {}", node.name, stderr.trim()),
        e => anyhow!("node {}: {e}", node.name),
    })?;
    let listing: Listing = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("node {} answered the listing with something else than JSON", node.name))?;
    match listing {
        Listing::None { oldest } => Err(UsageError(format!(
            "{} has no backup of {source} at or before {}: the oldest one kept was received at {oldest}",
            node.name,
            at.map(|t| t.to_string()).unwrap_or_default()
        ))
        .into()),
        Listing::Git { repo } => {
            if at.is_some() {
                return Err(UsageError(
                    "--at is not available for git repositories from the client; run `ferry-node restore CLIENT REPO --at T` on the node".into(),
                )
                .into());
            }
            with_hooks(cfg, source.as_str(), &args.target, || {
                clone(cfg, &remote, &repo, &args.target).map(|_| String::new())
            })?;
            Ok(Done {
                node: node.name.clone(),
                source: source.to_string(),
                kind: "git".into(),
                path: String::new(),
                received: String::new(),
                sha256: String::new(),
                bytes: 0,
                resumed_from: 0,
                target: args.target.clone(),
                message: format!(
                    "cloned git repository {repo} from node {} with every ref of its mirror into {}",
                    node.name,
                    args.target.display()
                ),
            })
        }
        Listing::Artifact { module, .. } if module == "tree" => Err(UsageError(format!(
            "{source} is a snapshot tree, which the client cannot fetch yet: on the node, \
             `ferry-node restore {} {source} --to DIR` copies it out and `ferry-node rescue {} {source} DIR` \
             serves it in place (README: Snapshot trees and rescue)",
            cfg.name, cfg.name
        ))
        .into()),
        Listing::Artifact { module, path, size, sha256, received } => {
            if module == "fs" && !is_absent_or_empty(&args.target) {
                // The extractor publishes a whole tree with one rename that
                // replaces nothing: it never merges into an existing tree.
                return Err(UsageError(format!(
                    "{} is not empty: an fs source is extracted into an absent or empty directory only, even with --force",
                    args.target.display()
                ))
                .into());
            }
            let digest =
                ferry_request::Digest::parse(&sha256).map_err(|e| anyhow!("the node sent a bad digest: {e}"))?;
            let (partial, resumed_from) = download(&remote, &args.target, &path, size, digest.as_str())?;
            let message =
                with_hooks(cfg, source.as_str(), &args.target, || place(&partial, &module, &path, &args.target))?;
            Ok(Done {
                node: node.name.clone(),
                source: source.to_string(),
                kind: "artifact".into(),
                message: format!(
                    "{message} (from node {}, received {received}, {size} bytes, sha256 {sha256} checked{})",
                    node.name,
                    if resumed_from > 0 { format!(", resumed at byte {resumed_from}") } else { String::new() }
                ),
                path,
                received,
                sha256,
                bytes: size,
                resumed_from,
                target: args.target.clone(),
            })
        }
    }
}

/// The name the node keeps `source` under. A git source's mirror is named
/// by the repository's path below its git root (`/srv/git/project.git` →
/// `project`), not by the source's name in client.toml, so `ferry restore
/// code` for a source `code` with that path asks for `project`; any other
/// name, or a repository nested deeper than one directory (whose mirror
/// name the restore verb cannot carry), is asked for as given.
fn node_name_of(cfg: &ClientConfig, source: &ferry_request::Name) -> ferry_request::Name {
    let Some(src) = cfg.source(source.as_str()).filter(|s| s.module == "git") else { return source.clone() };
    let Some(path) = src.path.as_deref() else { return source.clone() };
    let rel = cfg.export.git_roots.iter().find_map(|r| path.strip_prefix(r).ok());
    rel.and_then(|r| r.to_str())
        .filter(|r| !r.contains('/'))
        .map(|r| r.strip_suffix(".git").unwrap_or(r))
        .and_then(|r| ferry_request::Name::parse(r).ok())
        .unwrap_or_else(|| source.clone())
}

/// `--node`, else the only node, else the first default node.
pub(crate) fn pick_node<'a>(cfg: &'a ClientConfig, name: Option<&str>) -> anyhow::Result<&'a NodeConfig> {
    match name {
        Some(n) => cfg.node(n).ok_or_else(|| UsageError(format!("no node {n:?} in the configuration")).into()),
        None => cfg
            .nodes
            .iter()
            .find(|n| n.default)
            .or(cfg.nodes.first())
            .ok_or_else(|| UsageError("no node configured".into()).into()),
    }
}

/// A time as the node's catalog writes it.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<ferry_request::Stamp> {
    if let Ok(st) = s.parse::<ferry_request::Stamp>() {
        return Ok(st);
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ferry_request::Stamp::from_unix(ts.as_second()));
    }
    Err(UsageError(format!("cannot read the time {s:?}: use 2026-11-22T01:02:03Z or 20261122T010203Z")).into())
}

/// Refuse a target below a symbolic link (a restore must land where it
/// was asked to) and, unless `force`, one that exists and is not empty.
pub(crate) fn check_target(target: &Path, force: bool) -> anyhow::Result<()> {
    let abs = std::path::absolute(target)?;
    for p in abs.ancestors() {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(UsageError(format!(
                "{} is under the symbolic link {}; restore to a real path",
                target.display(),
                p.display()
            ))
            .into());
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(target) {
        let empty = m.is_dir() && std::fs::read_dir(target)?.next().is_none();
        if !empty && !force {
            return Err(UsageError(format!("{} exists and is not empty (use --force)", target.display())).into());
        }
    }
    Ok(())
}

fn is_absent_or_empty(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Err(_) => true,
        Ok(m) => m.is_dir() && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()),
    }
}

/// How to reach the node as this host's push key.
pub(crate) struct Remote {
    ssh: PathBuf,
    /// The options for git, whose URL carries user and port.
    plain: ferry_run::ssh::SshOptions,
    /// The options for a plain `ssh host COMMAND`.
    opts: ferry_run::ssh::SshOptions,
    /// `ssh://user@host:port` of the node's queue URL.
    base: String,
    host: String,
}

impl Remote {
    pub(crate) fn new(cfg: &ClientConfig, node: &NodeConfig) -> anyhow::Result<Remote> {
        let url = ferry_request::GitUrl::parse(&node.url)
            .map_err(|e| UsageError(format!("node {}: url {:?}: {e}", node.name, node.url)))?;
        let opts = crate::queue::ssh_options(cfg, node)?;
        let mut with = opts.clone();
        let mut base = "ssh://".to_owned();
        if let Some(u) = &url.user {
            with = with.user(u.as_str());
            base.push_str(&format!("{}@", u.as_str()));
        }
        base.push_str(url.host.as_str());
        if let Some(p) = url.port {
            with = with.port(p);
            base.push_str(&format!(":{p}"));
        }
        Ok(Remote { ssh: cfg.ssh.clone(), plain: opts, opts: with, base, host: url.host.as_str().to_owned() })
    }

    /// `ssh … host COMMAND`; the node's forced command reads `COMMAND`.
    pub(crate) fn ssh(&self, command: &str) -> ferry_run::Cmd {
        ferry_run::Cmd::new(&self.ssh).args(self.opts.args()).arg("--").arg(&self.host).arg(command)
    }
}

fn partial_paths(target: &Path) -> (PathBuf, PathBuf) {
    let mut p = target.as_os_str().to_owned();
    p.push(".partial");
    let mut from = p.clone();
    from.push(".from");
    (PathBuf::from(p), PathBuf::from(from))
}

/// Writes to the partial file and moves the progress bar.
struct Progress<'a> {
    file: &'a mut File,
    bar: &'a ProgressBar,
}

impl Write for Progress<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(b)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Fetch the artifact `path` into `TARGET.partial`, resuming what an
/// earlier run left, and check its size and digest. Returns the partial
/// file and the offset the download resumed at.
pub(crate) fn download(
    remote: &Remote,
    target: &Path,
    path: &str,
    size: u64,
    sha256: &str,
) -> anyhow::Result<(PathBuf, u64)> {
    let (partial, from) = partial_paths(target);
    let want_from = format!("{path} {sha256}\n");
    let mut offset = 0;
    if std::fs::read_to_string(&from).ok().as_deref() == Some(want_from.as_str()) {
        offset = std::fs::symlink_metadata(&partial).map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0);
    }
    if offset > size {
        offset = 0;
    }
    if offset == 0 {
        let _ = std::fs::remove_file(&partial);
        std::fs::write(&from, &want_from).with_context(|| format!("cannot write {}", from.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("cannot open {}", partial.display()))?;
    if offset < size {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(path.rsplit('/').next().unwrap_or(path).to_owned());
        bar.set_position(offset);
        let mut sink = Progress { file: &mut file, bar: &bar };
        remote
            .ssh(&format!("ferry-restore get {path} {offset}"))
            .timeout_opt(None)
            .run_to(&mut sink)
            .map_err(|e| anyhow!("download of {path} stopped ({e}); run the same command again to resume"))?;
        bar.finish_and_clear();
    }
    file.sync_all()?;
    drop(file);
    let (len, got) = hash(&partial)?;
    if len != size || got != sha256 {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&from);
        bail!(
            "what arrived of {path} does not match the node's catalog ({len} bytes, sha256 {got}; expected {size} bytes, sha256 {sha256}): refused, nothing restored"
        );
    }
    Ok((partial, offset))
}

fn hash(p: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// The file name of a catalog path the node sent
/// (`client/source/received/file`). The node is not trusted to name a
/// place: every segment must be a plain storage name, so no `..`, `/`,
/// empty segment or control character reaches a path or the terminal.
pub(crate) fn artifact_file_name(path: &str) -> anyhow::Result<&str> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts[..] {
        [_, _, _, file] if parts.iter().all(|p| ferry_text::is_safe_token(p)) => Ok(file),
        _ => bail!("the node named an artifact {} that is no storage path", ferry_text::escape(path, 200)),
    }
}

/// Put a verified download in place: an fs archive extracted into TARGET
/// with the strict extractor, any other artifact as `TARGET/<file>`.
pub(crate) fn place(partial: &Path, module: &str, path: &str, target: &Path) -> anyhow::Result<String> {
    let (_, from) = partial_paths(target);
    let name = artifact_file_name(path)?;
    let msg = if module == "fs" {
        if target.is_dir() && std::fs::read_dir(target)?.next().is_none() {
            std::fs::remove_dir(target)?;
        }
        let f = File::open(partial)?;
        let stats = ferry_archive::extract_tar_zst(
            std::io::BufReader::with_capacity(1 << 20, f),
            target,
            &ferry_archive::ExtractPolicy::default(),
        )
        .map_err(|e| anyhow!("{}: {e}", e.code()))?;
        std::fs::remove_file(partial)?;
        format!("extracted {path} ({stats}) into {}", target.display())
    } else {
        std::fs::create_dir_all(target).with_context(|| format!("cannot create {}", target.display()))?;
        let dest = target.join(name);
        if std::fs::symlink_metadata(&dest).is_ok() {
            bail!("{} exists", dest.display());
        }
        if std::fs::rename(partial, &dest).is_err() {
            std::fs::copy(partial, &dest)?;
            std::fs::remove_file(partial)?;
        }
        format!("copied {path} to {}", dest.display())
    };
    let _ = std::fs::remove_file(from);
    Ok(msg)
}

/// Clone the mirror `repo` with every ref it kept into the bare
/// repository `target`, through git's transport with object checks.
pub(crate) fn clone(cfg: &ClientConfig, remote: &Remote, repo: &str, target: &Path) -> anyhow::Result<()> {
    let ssh_base = remote
        .plain
        .command_line(&remote.ssh)
        .ok_or_else(|| anyhow!("the ssh command or its files are not UTF-8 paths"))?;
    let git = |dir: Option<&Path>| {
        let c = ferry_run::Cmd::new(&cfg.git)
            .env("GIT_SSH_COMMAND", &ssh_base)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", &cfg.state_dir)
            .args(["-c", "core.hooksPath=/dev/null", "-c", "transfer.fsckObjects=true"]);
        match dir {
            Some(d) => c.arg("--git-dir").arg(d),
            None => c,
        }
    };
    git(None)
        .args(["clone", "--quiet", "--mirror", "--upload-pack", "ferry-restore git", "--"])
        .arg(format!("{}/{repo}", remote.base))
        .arg(target)
        .timeout_opt(None)
        .run_checked()
        .context("git clone of the mirror failed")?;
    // The restored repository should not point back at the backup node.
    git(Some(target)).args(["remote", "remove", "origin"]).run_checked()?;
    Ok(())
}

/// Run `step` (putting a verified backup in place) between the source's
/// `pre_restore` and `post_restore` commands from client.toml, when it has
/// them (issue 13 point 4: stop the application, restore, start it). The
/// commands are argv lists run without a shell through ferry-run with a
/// cleared environment plus `FERRY_SOURCE`, `FERRY_RESTORE_TARGET` (and for
/// `post_restore` `FERRY_STATUS` = `ok`/`failed`, `FERRY_ERROR`), for at
/// most an hour each. A failing `pre_restore` stops the restore before
/// anything is placed; `post_restore` runs after every attempt that ran
/// `pre_restore`, and its failure fails the restore (it usually restarts
/// the application, someone must hear about it).
pub(crate) fn with_hooks(
    cfg: &ClientConfig,
    source: &str,
    target: &Path,
    step: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    use ferry_prepare::hooks::{Phase, run};
    let Some(src) = cfg.sources.iter().find(|s| s.name == source) else { return step() };
    let timeout = std::time::Duration::from_secs(3600);
    let mut env: Vec<(String, std::ffi::OsString)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C".into()),
        ("FERRY_SOURCE".into(), source.into()),
        ("FERRY_RESTORE_TARGET".into(), std::path::absolute(target)?.into_os_string()),
    ];
    let pre = match &src.pre_restore {
        Some(argv) => run(source, Phase::Pre, argv, &env, timeout).map_err(|e| anyhow!("pre_restore: {e}")),
        None => Ok(()),
    };
    let result = pre.and_then(|_| step());
    if let Some(argv) = &src.post_restore {
        match &result {
            Ok(_) => env.push(("FERRY_STATUS".into(), "ok".into())),
            Err(e) => {
                env.push(("FERRY_STATUS".into(), "failed".into()));
                env.push(("FERRY_ERROR".into(), ferry_text::escape(&format!("{e:#}"), 1000).into()));
            }
        }
        if let Err(e) = run(source, Phase::Post, argv, &env, timeout) {
            return Err(match result {
                Ok(_) => anyhow!("post_restore: {e} (the backup itself was restored to {})", target.display()),
                Err(first) => anyhow!("{first:#}; post_restore: {e}"),
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::artifact_file_name;

    #[test]
    fn a_node_names_only_plain_storage_paths() {
        assert_eq!(artifact_file_name("host-a/www/20261205T074512Z/x.tar.zst").unwrap(), "x.tar.zst");
        for bad in [
            "host-a/www/20261205T074512Z/..",
            "host-a/www/20261205T074512Z/",
            "host-a/www/x",
            "host-a/www/t/a/b",
            "/etc/passwd",
            "host-a/www/t/\u{1b}[2Jx",
            "host-a/../t/x",
        ] {
            assert!(artifact_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
