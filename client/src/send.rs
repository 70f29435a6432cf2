//! `ferry send`: deliver queued requests to each backup node.
//!
//! Per node, holding that node's pool lock:
//!
//! 1. `P*` first: requests a crashed or failed run left half-handled;
//! 2. `C*` → `P*`, oldest first;
//! 3. for each `P` request not yet committed (the queue repo's history is
//!    the record), run its client module and commit the `RQ` files it
//!    emits; a module failure ends the request in `E` with the reason;
//! 4. push the unacknowledged commits in batches; only what the node
//!    acknowledged moves `P` → `F`. A failed push leaves everything in `P`,
//!    records the failure with a backoff, and is retried by the next run.
//!
//! Every step is idempotent, so `send` can be killed at any instant and the
//! next run finishes each request exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{ClientConfig, NodeConfig};
use crate::nodestatus::NodeStatus;
use crate::pool::{self, ClientRequest};
use crate::queue::{PushResult, Queue};

/// Options of one `send` run.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Ignore the retry backoff of failing nodes.
    pub force: bool,
    /// Wait for a busy pool lock instead of leaving the work to its holder.
    pub wait: bool,
}

/// What happened for one node.
#[derive(Debug, Default, Serialize)]
pub struct NodeReport {
    pub node: String,
    /// Requests the node acknowledged in this run.
    pub delivered: Vec<String>,
    /// Requests whose client module failed (ended in `E`).
    pub failed: Vec<(String, String)>,
    /// Requests prepared with warnings (an fs source left unreadable
    /// entries out): id and the warnings, one per line.
    pub warned: Vec<(String, String)>,
    /// Requests of tree sources prepared in this run and what their scan
    /// cost (an unchanged repeat hashes 0 files).
    pub trees: Vec<TreeScan>,
    /// Requests still waiting for this node.
    pub pending: usize,
    /// Why the push failed, if it did.
    pub push_error: Option<String>,
    /// Another `send` holds this node's pool; it will deliver the work.
    pub busy: bool,
    /// The node is failing; the next attempt is not before this time.
    pub deferred_until: Option<String>,
}

/// A tree source's scan, for the `--json` record and the log.
#[derive(Debug, Serialize)]
pub struct TreeScan {
    pub id: String,
    /// Entries in the manifest.
    pub entries: u64,
    /// Regular files read to compute their digest (not in the hash cache).
    pub files_hashed: u64,
    /// Bytes read for hashing.
    pub bytes_hashed: u64,
}

impl NodeReport {
    /// Work for this node is left undelivered.
    pub fn undelivered(&self) -> bool {
        self.push_error.is_some() || self.deferred_until.is_some()
    }
}

/// Send to every configured node (or only `only`).
pub fn send(cfg: &ClientConfig, only: Option<&str>, opts: &SendOptions) -> anyhow::Result<Vec<NodeReport>> {
    // Node status files half-written by a send that was killed.
    let _ = ferry_durable::remove_dead_tmp(&cfg.node_status_dir());
    let mut reports = Vec::new();
    for node in &cfg.nodes {
        if only.is_some_and(|n| n != node.name) {
            continue;
        }
        let r = send_node(cfg, node, opts).with_context(|| format!("sending to node {}", node.name))?;
        reports.push(r);
    }
    crate::alerts::flush(cfg);
    Ok(reports)
}

/// Send one node's pool.
///
/// A `request` adds `C` files without taking the lock (a git hook must never
/// wait for a long send), then starts a send. If that send finds the lock
/// taken it leaves; so the holder looks for new `C` files again *after*
/// releasing the lock, and goes round once more if there are any — no
/// request waits for cron because two sends crossed.
pub fn send_node(cfg: &ClientConfig, node: &NodeConfig, opts: &SendOptions) -> anyhow::Result<NodeReport> {
    let pool = pool::open(&cfg.pool_dir(&node.name))?;
    let mut total = NodeReport { node: node.name.clone(), ..Default::default() };
    let mut wait = opts.wait;
    loop {
        let lock = if wait { Some(pool.lock()?) } else { pool.try_lock()? };
        let Some(lock) = lock else {
            info!(node = %node.name, "another send holds this node's pool; leaving the work to it");
            total.busy = total.delivered.is_empty() && total.failed.is_empty();
            total.pending = count_pending(&pool)?;
            return Ok(total);
        };
        let r = send_locked(cfg, node, opts, &pool)?;
        drop(lock);
        total.delivered.extend(r.delivered);
        total.failed.extend(r.failed);
        total.warned.extend(r.warned);
        total.trees.extend(r.trees);
        total.pending = r.pending;
        total.push_error = r.push_error;
        total.deferred_until = r.deferred_until;
        if total.undelivered() || pool.ids("C")?.is_empty() {
            return Ok(total);
        }
        wait = false;
    }
}

fn send_locked(
    cfg: &ClientConfig,
    node: &NodeConfig,
    opts: &SendOptions,
    pool: &ferry_durable::Pool,
) -> anyhow::Result<NodeReport> {
    let mut report = NodeReport { node: node.name.clone(), ..Default::default() };
    let pool = pool.clone();
    pool.clean_tmp()?;
    sweep_incomplete(&pool)?;

    let mut status = NodeStatus::load(cfg, &node.name)?;
    let now = crate::clock::now();
    if !opts.force
        && let Some(next) = status.next_attempt
        && next > now
    {
        report.pending = count_pending(&pool)?;
        report.deferred_until = Some(next.to_string());
        info!(node = %node.name, until = %next, "node is failing; waiting for the backoff before retrying");
        // No push now, but the outage goes on: alert_after counts from the
        // first failure, not from the next attempt.
        crate::alerts::check_unreachable(cfg, &node.name, &mut status, report.pending);
        return Ok(report);
    }

    Queue::remove_stale_locks(cfg, node);
    let queue = Queue::open(cfg, node)?;
    let module_timeout = cfg.duration(&cfg.send.module_timeout);

    // 1 + 2: P first (crash recovery), then C → P in arrival order.
    let mut work = pool.ids("P")?;
    for id in pool.ids("C")? {
        pool.move_to(&id, "C", "P", true)?;
        ferry_durable::crash_point("send:after-c-to-p");
        work.push(id);
    }
    // The push's connection is made while the requests are prepared.
    let _warm = Reaped(if work.is_empty() { None } else { queue.warm() });
    for id in &work {
        if queue.committed(id)?.is_some() {
            continue; // committed before a crash or a failed push
        }
        // Another send (a hook's, for another node) may be running this
        // request's module right now: wait for it, then reuse its result.
        // Held until the commit below; always taken after a pool lock.
        let _prepare = prepare_lock(cfg, id)?;
        // The same request for another node already ran its module: reuse
        // its request files (one dump serves every node), and its warnings.
        if let Some((files, summary)) = committed_elsewhere(cfg, node, id)? {
            copy_warnings(cfg, node, &pool, id);
            queue.commit(id, &files, &summary)?;
            ferry_durable::crash_point("send:after-commit");
            continue;
        }
        let rec = match pool.read("P", id, 64 * 1024)? {
            Some(b) => ClientRequest::from_bytes(&b),
            None => Err(anyhow::anyhow!("request file larger than 64 KiB")),
        };
        let result = rec.and_then(|rec| prepare(cfg, id, &rec, module_timeout).map(|p| (rec, p)));
        if let Ok((rec, p)) = &result
            && !p.warnings.is_empty()
        {
            let text = record_warnings(cfg, &pool, id, rec, &p.warnings)?;
            report.warned.push((id.clone(), text));
        }
        if let Ok((_, p)) = &result
            && let Some(t) = &p.tree
        {
            info!(
                id,
                entries = t.entries,
                files_hashed = t.files_hashed,
                bytes_hashed = t.bytes_hashed,
                "tree scanned"
            );
            report.trees.push(TreeScan {
                id: id.clone(),
                entries: t.entries,
                files_hashed: t.files_hashed,
                bytes_hashed: t.bytes_hashed,
            });
        }
        match result.map(|(rec, p)| (rec, p.requests)) {
            Ok((rec, reqs)) if reqs.is_empty() => {
                info!(node = %node.name, id, module = %rec.module, "module emitted no request; nothing to send");
                pool.move_to(id, "P", "F", true)?;
            }
            Ok((rec, reqs)) => {
                let files: Vec<(String, Vec<u8>)> = reqs
                    .iter()
                    .enumerate()
                    .map(|(n, r)| (format!("RQ{id}-{}", n + 1), r.to_line().into_bytes()))
                    .collect();
                let summary =
                    format!("{} {}", rec.module, ferry_text::escape(rec.source.as_deref().unwrap_or(&rec.arg), 120));
                queue.commit(id, &files, &summary)?;
                ferry_durable::crash_point("send:after-commit");
            }
            Err(e) => {
                let reason = format!("{e:#}");
                warn!(node = %node.name, id, reason = %ferry_text::sanitize(&reason, 600), "client module failed; request ends in E");
                fail(&pool, id, &reason)?;
                crate::alerts::request_failed(cfg, id, &reason);
                report.failed.push((id.clone(), reason));
            }
        }
    }

    // 3: push in batches; only acknowledged commits finish their requests.
    let push_timeout = cfg.duration(&cfg.send.push_timeout);
    let mut retried_rebase = false;
    loop {
        let unpushed = queue.unpushed()?;
        let pending_ids: BTreeSet<String> = unpushed.iter().flat_map(|(_, ids)| ids.iter().cloned()).collect();
        // Requests committed and acknowledged before a crash: finish them.
        for id in pool.ids("P")? {
            if !pending_ids.contains(&id) && queue.committed(&id)?.is_some() {
                pool.move_to(&id, "P", "F", false)?;
                report.delivered.push(id);
            }
        }
        pool.sync()?;
        if unpushed.is_empty() {
            // Reported before the save (see `record_success`).
            if let Some(outage) = status.record_success(crate::clock::now()) {
                crate::alerts::node_recovered(cfg, &node.name, &outage);
            }
            status.save(cfg, &node.name)?;
            break;
        }
        let mut failed = None;
        for batch in unpushed.chunks(cfg.send.batch) {
            let (upto, _) = batch.last().expect("non-empty chunk");
            match queue.push(*upto, push_timeout)? {
                PushResult::Acked => {
                    for id in batch.iter().flat_map(|(_, ids)| ids) {
                        if pool.state_of(id) == Some("P") {
                            pool.move_to(id, "P", "F", false)?;
                            ferry_durable::crash_point("send:after-p-to-f");
                            report.delivered.push(id.clone());
                        }
                    }
                    pool.sync()?;
                    info!(node = %node.name, requests = batch.len(), "node acknowledged the push");
                }
                PushResult::Failed { reason, non_fast_forward } => {
                    failed = Some((reason, non_fast_forward));
                    break;
                }
            }
        }
        match failed {
            None => continue, // re-check: finishes leftovers, records success
            Some((_, true)) if !retried_rebase => {
                retried_rebase = true;
                warn!(node = %node.name, "node's queue has history this clone lacks; replaying our requests on top of it");
                if let Err(e) = queue.rebase_on_remote(push_timeout) {
                    let reason = format!("cannot bring the queue clone up to date: {e:#}");
                    status.record_failure(cfg, &node.name, &reason, count_pending(&pool)?)?;
                    report.push_error = Some(reason);
                    break;
                }
            }
            Some((reason, _)) => {
                warn!(node = %node.name, reason = %reason, "push failed; requests stay queued for the next run");
                status.record_failure(cfg, &node.name, &reason, count_pending(&pool)?)?;
                report.push_error = Some(reason);
                break;
            }
        }
    }
    report.pending = count_pending(&pool)?;
    crate::alerts::check_unreachable(cfg, &node.name, &mut status, report.pending);
    Ok(report)
}

/// The lock a request's module runs under, whichever node's send runs it
/// (sharded over 256 lock files, so unrelated requests rarely wait for each
/// other and no lock file is ever deleted).
/// A background thread joined when dropped (on every way out of a send).
struct Reaped(Option<std::thread::JoinHandle<()>>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

fn prepare_lock(cfg: &ClientConfig, id: &str) -> anyhow::Result<ferry_durable::Lock> {
    let dir = cfg.state_dir.join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shard = &ferry_durable::short_hash(id.as_bytes())[..2];
    Ok(ferry_durable::Lock::acquire(&dir.join(format!("prepare-{shard}.lock")))?)
}

/// Request files (name, content) of one commit.
type RequestFiles = Vec<(String, Vec<u8>)>;

/// Request files another node's queue clone already holds for `id`.
fn committed_elsewhere(
    cfg: &ClientConfig,
    node: &NodeConfig,
    id: &str,
) -> anyhow::Result<Option<(RequestFiles, String)>> {
    for other in cfg.nodes.iter().filter(|n| n.name != node.name) {
        if !cfg.queue_dir(&other.name).join("HEAD").exists() {
            continue;
        }
        let q = Queue::open(cfg, other)?;
        if let Some(oid) = q.committed(id)? {
            return Ok(Some((q.files(oid)?, q.summary(oid)?)));
        }
    }
    Ok(None)
}

/// Run the client module of one request.
fn prepare(
    cfg: &ClientConfig,
    id: &str,
    rec: &ClientRequest,
    timeout: Duration,
) -> anyhow::Result<ferry_prepare::Prepared> {
    let endpoint = cfg.endpoint();
    let ctx = ferry_prepare::Context {
        client_name: &cfg.name,
        request_id: id,
        endpoint: &endpoint,
        script_dir: cfg.script_dir.as_deref(),
        git: &cfg.git,
        timeout,
    };
    match rec.source.as_deref().and_then(|s| cfg.source(s)) {
        Some(src) => crate::sources::prepare_source(cfg, src, &ctx),
        None => Ok(ferry_prepare::Prepared {
            requests: ferry_prepare::prepare(&rec.module, &rec.arg, &ctx)?,
            warnings: Vec::new(),
            tree: None,
        }),
    }
}

/// The warnings of a request whose module succeeded incompletely (an fs
/// source that left unreadable entries out): logged, kept beside the
/// request as `F<id>.warn` (named for the state it ends in, as `E<id>.why`
/// is) for `ferry status`, and mailed. The request itself goes on: its
/// artifact is what could be read.
fn record_warnings(
    cfg: &ClientConfig,
    pool: &ferry_durable::Pool,
    id: &str,
    rec: &ClientRequest,
    warnings: &[String],
) -> anyhow::Result<String> {
    let text: String = warnings.iter().map(|w| format!("{}\n", ferry_text::escape(w, 4000))).collect();
    for w in warnings {
        warn!(id, warning = %ferry_text::escape(w, 4000), "request prepared with warnings");
    }
    let name = pool.sidecar("F", id, "warn");
    ferry_durable::write_synced(pool.dir(), &name.file_name().expect("file").to_string_lossy(), text.as_bytes())?;
    let text = text.trim_end().to_owned();
    crate::alerts::request_warned(cfg, id, rec.source.as_deref().unwrap_or(&rec.module), &text);
    Ok(text)
}

/// Copies the warnings another node's pool recorded for `id`, when this
/// node reuses that node's request files.
fn copy_warnings(cfg: &ClientConfig, node: &NodeConfig, pool: &ferry_durable::Pool, id: &str) {
    for other in cfg.nodes.iter().filter(|n| n.name != node.name) {
        let Ok(op) = pool::open(&cfg.pool_dir(&other.name)) else { continue };
        if let Ok(text) = std::fs::read(op.sidecar("F", id, "warn")) {
            let name = pool.sidecar("F", id, "warn");
            if let Err(e) =
                ferry_durable::write_synced(pool.dir(), &name.file_name().expect("file").to_string_lossy(), &text)
            {
                warn!(id, error = %e, "cannot copy the request's warnings");
            }
            return;
        }
    }
}

/// End a request in `E`, its reason beside it.
pub fn fail(pool: &ferry_durable::Pool, id: &str, reason: &str) -> anyhow::Result<()> {
    let why = pool.sidecar("E", id, "why");
    ferry_durable::write_synced(
        pool.dir(),
        &why.file_name().expect("file").to_string_lossy(),
        // Client text in the reason was escaped once when it was built.
        format!("{}\n", ferry_text::sanitize(reason, 4000)).as_bytes(),
    )?;
    pool.move_to(id, "P", "E", true)?;
    Ok(())
}

fn count_pending(pool: &ferry_durable::Pool) -> anyhow::Result<usize> {
    Ok(pool.list()?.iter().filter(|e| matches!(e.state, "C" | "P")).count())
}

/// `i` files older than a day were left by a `request` that crashed before
/// finishing the file; they never became requests.
fn sweep_incomplete(pool: &ferry_durable::Pool) -> anyhow::Result<()> {
    for id in pool.ids("i")? {
        let p = pool.path("i", &id);
        let old = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(86400))
            .unwrap_or(false);
        if old {
            warn!(id, "removing an incomplete request left by a crash a day ago");
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}
