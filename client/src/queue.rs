//! The client's local clone of one node's queue repo: `queues/<node>.git`.
//!
//! Each handled client request becomes one commit whose tree holds only that
//! request's `RQ<id>-<n>` files (the seed cleared the index before every
//! commit for the same reason: the node extracts what each new commit adds).
//! Commits are built with libgit2 straight into the object database — no
//! work tree, no index — and carry a `Ferry-Request: <id>` trailer, which is
//! how a re-run after a crash recognises work it already committed.
//!
//! Pushing goes through the git CLI, because only OpenSSH gives us the
//! pinned host key, connection reuse (ControlMaster) and the exact options
//! we want (CRATES.md §4). A push counts as delivered only when git exits 0
//! *and* its porcelain report shows `refs/heads/master` updated or already
//! up to date — the node's acknowledgement the seed could not see.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use git2::{ObjectType, Oid, Repository, Signature, Sort};

use crate::config::{ClientConfig, NodeConfig};

/// The one branch of a queue repo.
pub const BRANCH: &str = "refs/heads/master";
const REMOTE_REF: &str = "refs/remotes/origin/master";
const TRAILER: &str = "Ferry-Request: ";

/// A node's queue, as seen from this client.
pub struct Queue<'a> {
    cfg: &'a ClientConfig,
    node: &'a NodeConfig,
    dir: PathBuf,
    repo: Repository,
}

/// What a push attempt produced.
#[derive(Debug)]
pub enum PushResult {
    /// The node acknowledged `refs/heads/master` at the pushed commit.
    Acked,
    /// The push failed; `reason` is what git and the node said (escaped).
    Failed { reason: String, non_fast_forward: bool },
}

/// Quote a string for the shell that git uses to run `GIT_SSH_COMMAND`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl<'a> Queue<'a> {
    /// Open (creating on first use) the local queue repo for `node`.
    pub fn open(cfg: &'a ClientConfig, node: &'a NodeConfig) -> anyhow::Result<Queue<'a>> {
        let dir = cfg.queue_dir(&node.name);
        let repo = if dir.join("HEAD").exists() {
            Repository::open_bare(&dir).with_context(|| format!("cannot open queue repo {}", dir.display()))?
        } else {
            std::fs::create_dir_all(&dir)?;
            let repo = Repository::init_bare(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            repo.set_head(BRANCH)?;
            repo
        };
        {
            // Written only when they differ: a queue repo is opened without
            // its pool lock too (another node's send reuses its requests),
            // and concurrent config writers fail on git's config.lock.
            let mut c = repo.config()?;
            if c.get_string("remote.origin.url").ok().as_deref() != Some(node.url.as_str()) {
                c.set_str("remote.origin.url", &node.url)?;
                c.set_str("remote.origin.fetch", "+refs/heads/master:refs/remotes/origin/master")?;
            }
            // Queue repos only grow by our own commits; never let git gc
            // run behind our back in a send.
            if c.get_i64("gc.auto").ok() != Some(0) {
                c.set_i64("gc.auto", 0)?;
            }
        }
        Ok(Queue { cfg, node, dir, repo })
    }

    /// Remove git lock files (`config.lock`, `refs/…/master.lock`, …) left
    /// in `node`'s queue repo by a send that was killed while libgit2 or
    /// git held them: git never removes another process's lock, so one
    /// stale lock would fail every later commit. Call with the node's pool
    /// lock held (every writer of the repo holds it), before [`Queue::open`].
    pub fn remove_stale_locks(cfg: &ClientConfig, node: &NodeConfig) -> usize {
        let dir = cfg.queue_dir(&node.name);
        let stale = ferry_durable::git_lock_files(&dir);
        let mut removed = 0;
        for p in stale {
            if std::fs::remove_file(&p).is_ok() {
                tracing::warn!(lock = %p.display(), "removed a git lock left by an interrupted send");
                removed += 1;
            }
        }
        removed
    }

    fn tip(&self, r: &str) -> Option<Oid> {
        self.repo.refname_to_id(r).ok()
    }

    /// Commit id already holding request `id`, searching recent history
    /// (commits newer than the id's own time minus an hour, at most 10,000).
    pub fn committed(&self, id: &str) -> anyhow::Result<Option<Oid>> {
        let Some(tip) = self.tip(BRANCH) else {
            return Ok(None);
        };
        let since = crate::pool::id_time(id).map(|t| t.as_second() - 3600).unwrap_or(i64::MIN);
        let mut walk = self.repo.revwalk()?;
        walk.push(tip)?;
        walk.set_sorting(Sort::TIME)?;
        let needle = format!("{TRAILER}{id}");
        for (n, oid) in walk.enumerate() {
            let c = self.repo.find_commit(oid?)?;
            if c.message_bytes().split(|b| *b == b'\n').any(|l| l == needle.as_bytes()) {
                return Ok(Some(c.id()));
            }
            if c.time().seconds() < since || n > 10_000 {
                break;
            }
        }
        Ok(None)
    }

    /// Commit `files` (name, content) for request `id` on top of master.
    pub fn commit(&self, id: &str, files: &[(String, Vec<u8>)], summary: &str) -> anyhow::Result<Oid> {
        let mut tb = self.repo.treebuilder(None)?;
        for (name, data) in files {
            let blob = self.repo.blob(data)?;
            tb.insert(name, blob, 0o100644)?;
        }
        let tree = self.repo.find_tree(tb.write()?)?;
        let sig = Signature::now("ferry", &format!("{}@ferry", self.cfg.name))?;
        let parent = self.tip(BRANCH).map(|o| self.repo.find_commit(o)).transpose()?;
        let msg = format!("{summary}\n\n{TRAILER}{id}\n");
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        Ok(self.repo.commit(Some(BRANCH), &sig, &sig, &msg, &tree, &parents)?)
    }

    /// Commits on master the node has not acknowledged, oldest first, with
    /// the request ids they carry.
    pub fn unpushed(&self) -> anyhow::Result<Vec<(Oid, Vec<String>)>> {
        let Some(tip) = self.tip(BRANCH) else {
            return Ok(Vec::new());
        };
        let mut walk = self.repo.revwalk()?;
        walk.push(tip)?;
        if let Some(remote) = self.tip(REMOTE_REF) {
            walk.hide(remote)?;
        }
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
        let mut out = Vec::new();
        for oid in walk {
            let oid = oid?;
            let c = self.repo.find_commit(oid)?;
            let ids = String::from_utf8_lossy(c.message_bytes())
                .lines()
                .filter_map(|l| l.strip_prefix(TRAILER).map(str::to_owned))
                .collect();
            out.push((oid, ids));
        }
        Ok(out)
    }

    fn ssh_command(&self) -> anyhow::Result<String> {
        let opts = ssh_options(self.cfg, self.node)?;
        opts.command_line(&self.cfg.ssh).ok_or_else(|| anyhow!("the ssh command or its files are not UTF-8 paths"))
    }

    fn git(&self) -> anyhow::Result<ferry_run::Cmd> {
        Ok(ferry_run::Cmd::new(&self.cfg.git)
            .env("GIT_SSH_COMMAND", self.ssh_command()?)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", &self.cfg.state_dir)
            .arg("--git-dir")
            .arg(&self.dir))
    }

    /// Opens the node's ssh connection master in the background
    /// (`ssh -f -N`, which returns once authenticated; the master then
    /// lives `ControlPersist` seconds past its last use), so that a push
    /// made after the requests are prepared multiplexes over it instead
    /// of connecting: the connection (0.09–0.13 s on loopback, more over a
    /// WAN, most of it waiting) overlaps a tree's scan instead of following
    /// it. Nothing depends on it: a push that finds no master connects
    /// as always (and a failure is the push's to report). `None` when
    /// connections are not multiplexed here. Join the result to reap it.
    pub fn warm(&self) -> Option<std::thread::JoinHandle<()>> {
        let mut opts = ssh_options(self.cfg, self.node).ok()?;
        if !opts.is_multiplexed() {
            return None;
        }
        let url = ferry_request::GitUrl::parse(&self.node.url).ok()?;
        if let Some(u) = &url.user {
            opts = opts.user(u.as_str());
        }
        if let Some(p) = url.port {
            opts = opts.port(p);
        }
        let cmd = ferry_run::Cmd::new(&self.cfg.ssh)
            .args(opts.args())
            .args(["-f", "-N", "--", url.host.as_str()])
            .timeout(Duration::from_secs(30));
        let node = self.node.name.clone();
        Some(std::thread::spawn(move || match cmd.run() {
            Ok(o) if o.success() => tracing::debug!(node, "connection master ready"),
            Ok(o) => {
                tracing::debug!(node, stderr = %o.stderr_excerpt(), "no connection master; the push connects itself")
            }
            Err(e) => tracing::debug!(node, error = %e, "no connection master; the push connects itself"),
        }))
    }

    /// Push master up to `upto` and report whether the node acknowledged it.
    pub fn push(&self, upto: Oid, timeout: Duration) -> anyhow::Result<PushResult> {
        let out =
            self.git()?.args(["push", "--porcelain", "origin"]).arg(format!("{upto}:{BRANCH}")).timeout(timeout).run();
        let out = match out {
            Ok(o) => o,
            Err(ferry_run::RunError::TimedOut { stderr, after, .. }) => {
                return Ok(PushResult::Failed {
                    reason: format!("push timed out after {}s: {stderr}", after.as_secs()),
                    non_fast_forward: false,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let stdout = out.stdout_str();
        let acked = out.success()
            && stdout.lines().any(|l| l.trim() == "Done")
            && stdout.lines().any(|l| {
                let mut f = l.split('\t');
                matches!(f.next(), Some(" " | "*" | "="))
                    && f.next().is_some_and(|refs| refs.ends_with(&format!(":{BRANCH}")))
            });
        if acked {
            ferry_durable::crash_point("send:after-push");
            self.repo.reference(REMOTE_REF, upto, true, "acknowledged by the node")?;
            ferry_durable::crash_point("send:after-ack-ref");
            return Ok(PushResult::Acked);
        }
        let non_ff = stdout.contains("non-fast-forward") || stdout.contains("fetch first");
        let mut reason = out.stderr_excerpt();
        let report = ferry_text::escape(stdout.trim(), 400);
        if !report.is_empty() {
            reason = format!("{reason} [{report}]");
        }
        Ok(PushResult::Failed {
            reason: format!("{}: {reason}", ferry_run::describe_status(&out.status)),
            non_fast_forward: non_ff,
        })
    }

    /// Fetch the node's master (after a non-fast-forward refusal: the queue
    /// repo on the node has history this clone lacks, e.g. after the client
    /// was reinstalled) and replay our unpushed request commits on top of it.
    pub fn rebase_on_remote(&self, timeout: Duration) -> anyhow::Result<()> {
        self.git()?.args(["fetch", "--quiet", "origin"]).timeout(timeout).run_checked()?;
        let Some(remote) = self.tip(REMOTE_REF) else { bail!("the node's queue repo has no master") };
        let unpushed = self.unpushed()?;
        let mut parent = self.repo.find_commit(remote)?;
        // Skip commits whose requests the node already has.
        for (oid, _) in unpushed {
            let c = self.repo.find_commit(oid)?;
            if self.repo.graph_descendant_of(remote, oid).unwrap_or(false) || remote == oid {
                continue;
            }
            let new = self.repo.commit(
                None,
                &c.author(),
                &c.committer(),
                std::str::from_utf8(c.message_bytes()).unwrap_or("ferry request"),
                &c.tree()?,
                &[&parent],
            )?;
            parent = self.repo.find_commit(new)?;
        }
        self.repo.reference(BRANCH, parent.id(), true, "replayed on the node's history")?;
        Ok(())
    }

    /// The request lines of every commit the node has not acknowledged.
    pub fn unpushed_lines(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for (oid, _) in self.unpushed()? {
            for (_, data) in self.files(oid)? {
                out.push(String::from_utf8_lossy(&data).into_owned());
            }
        }
        Ok(out)
    }

    /// The `RQ` files (name, content) of a commit.
    pub fn files(&self, oid: Oid) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let c = self.repo.find_commit(oid)?;
        let t = c.tree()?;
        let mut out = Vec::new();
        for e in t.iter() {
            if e.kind() == Some(ObjectType::Blob)
                && let Ok(name) = e.name()
            {
                out.push((name.to_owned(), self.repo.find_blob(e.id())?.content().to_vec()));
            }
        }
        Ok(out)
    }

    /// The commit message summary of a commit.
    pub fn summary(&self, oid: Oid) -> anyhow::Result<String> {
        Ok(self
            .repo
            .find_commit(oid)?
            .summary_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default())
    }

    /// Names of the `RQ` files a commit adds (for status output).
    pub fn files_of(&self, oid: Oid) -> anyhow::Result<Vec<String>> {
        let c = self.repo.find_commit(oid)?;
        let t = c.tree()?;
        Ok(t.iter()
            .filter(|e| e.kind() == Some(ObjectType::Blob))
            .filter_map(|e| e.name().ok().map(str::to_owned))
            .collect())
    }
}

fn node_file(p: &Path) -> String {
    p.file_name().expect("file").to_string_lossy().into_owned()
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// The ssh options of `node`: its pinned host key (written to the node's
/// known_hosts file when it changed), the client's push key, one
/// multiplexed connection per node URL. Restores use the same, so a node
/// sees one key per client whatever it asks for.
pub fn ssh_options(cfg: &ClientConfig, node: &NodeConfig) -> anyhow::Result<ferry_run::ssh::SshOptions> {
    let kh = cfg.known_hosts(&node.name);
    let alias = format!("ferry-node-{}", node.name);
    let line = format!("{alias} {}\n", node.host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    if std::fs::read_to_string(&kh).ok().as_deref() != Some(line.as_str()) {
        std::fs::create_dir_all(kh.parent().expect("has parent"))?;
        ferry_durable::write_synced(kh.parent().expect("has parent"), &node_file(&kh), line.as_bytes())?;
    }
    let ctl = cfg.control_dir();
    std::fs::create_dir_all(&ctl)?;
    set_private(&ctl);
    // One multiplexed connection per node URL; too deep a state_dir
    // means no reuse (and a warning).
    let sock = ctl.join(ferry_durable::short_hash(node.url.as_bytes()));
    Ok(ferry_run::ssh::SshOptions::new(&kh, alias, cfg.ssh_key())
        .connect_timeout(Duration::from_secs(15))
        .multiplex(ferry_run::ssh::control_socket(sock)))
}
