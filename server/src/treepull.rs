//! The `tree` job (issue 10): pull a snapshot tree from a client.
//!
//! 1. The manifest (`<stamp>.ftree` in the export dir) is downloaded with
//!    the single-file sftp downloader into `trees/<source>/.partial/`,
//!    size and SHA-256 checked against the request.
//! 2. It is parsed as hostile input ([`ferry_tree::manifest::read`] with
//!    the limits of node.toml `[tree]`); a refusal keeps its `E_TREE_*` code.
//! 3. The contents the client's store lacks ([`snapshot::missing`]) are
//!    checked against the quota (new bytes only), then fetched pipelined
//!    over one sftp session ([`ferry_pull::sftp::fetch_many`]) straight
//!    into the snapshot's staging directory, at each content's first path,
//!    where [`Store::batch`] verifies size and digest while writing
//!    (`put_missing_in`) and makes the contents durable a batch at a time:
//!    a sync, then a link of each file into the store (nothing is stored
//!    under a digest it does not have, and the fetched file is the store's
//!    inode where the snapshot needs it).
//! 4. Files that changed on the client between scan and fetch are left out:
//!    the snapshot is built from the manifest without them (so restore,
//!    diff and verify see exactly what is there), published with one
//!    rename ([`snapshot::build`]), and their paths are journaled beside
//!    it as `<received>.changed` and named in the job's result. The next
//!    backup fetches them again.
//! 5. The catalog row: module `tree`, see [`crate::trees`].
//! 6. With `[tree] prepare_rescue` (node as root), the scan builds the
//!    snapshot's rescue metadata layer ([`crate::rescue::after_pull`])
//!    once the request is finished, so that even the first `rescue` of it
//!    is a mount only.
//!
//! The result names the wall time of each step (manifest, parse, lookup,
//! fetch, build, catalog): it is in the journal's `request_done`.
//!
//! Resume: contents of committed batches stay in the store, so
//! a re-run of the request after kill -9 fetches only what is missing.
//! Before the publishing rename the snapshot's name is recorded, synced,
//! in `.partial/<manifest digest>.received` with the request id, so a
//! re-run after a kill between the rename and the catalog row finds the
//! snapshot it published and only writes the row (a second snapshot of
//! one request would be uncatalogued data).
//! Crash points: `tree:after-manifest`, `tree:after-put`, `tree:after-build`
//! (that last one sits between the rename and the catalog row).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use ferry_gitosis::enroll::ClientEnrollment;
use ferry_pull::sftp::{ManyJob, RemoteFile, SinkError};
use ferry_request::{Reason, TreeRequest};
use ferry_tree::manifest::{Kind, Limits, ReadError, Sha256};
use ferry_tree::snapshot;
use ferry_tree::store::{Store, StoreError};

use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::jobs::{client_dir, io_refusal, quota_left, run_id, subdir};
use crate::trees::{MODULE, TreeLayout};
use crate::validate::{self, Refusal};

/// A batch of fetched contents is made durable after this long, or at
/// `[tree] batch_contents` contents, whichever comes first.
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn reason_of(code: &str) -> Reason {
    Reason::from_code(code).unwrap_or(Reason::Store)
}

fn store_refusal(e: &StoreError) -> Refusal {
    Refusal::new(reason_of(e.code()), e.to_string())
}

/// The durable record of which snapshot name a request publishes under:
/// `<dir>/<manifest digest>.received` holding `<request id> <received>`.
struct Mark<'a> {
    dir: &'a std::path::Path,
    sha_hex: &'a str,
    name: String,
    id: &'a str,
}

impl Mark<'_> {
    /// The name recorded by an earlier run of this very request.
    fn read(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(&self.name)).ok()?;
        let (id, received) = text.trim_end().split_once(' ')?;
        let plain = !received.is_empty()
            && !received.starts_with('.')
            && received.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (id == self.id && plain).then(|| received.to_owned())
    }

    /// Records `received`, synced (file and directory) before the rename.
    fn write(&self, received: &str) -> Result<(), Refusal> {
        ferry_durable::write_synced(self.dir, &self.name, format!("{} {received}\n", self.id).as_bytes())
            .map_err(|e| io_refusal("record the snapshot's name", e))
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(self.dir.join(&self.name));
    }
}

/// The re-run of a request whose snapshot was published but whose catalog
/// row was not written (killed in between): write only the row, from the
/// manifest stored beside the snapshot.
#[allow(clippy::too_many_arguments)]
fn catalog_published(
    cfg: &NodeConfig,
    catalog: &dyn Catalog,
    layout: &TreeLayout,
    client: &ClientEnrollment,
    source: &str,
    stamp: &str,
    id: &str,
    received: &str,
    limits: &Limits,
    mark: &Mark<'_>,
) -> Result<String, Refusal> {
    let dest = layout.snapshot_dir(&client.name, source, received);
    let stored = snapshot::read_manifest_text(&dest, cfg.tree.max_manifest_bytes)
        .map_err(|e| io_refusal("read the stored manifest", e))?;
    let manifest = ferry_tree::manifest::read(stored.as_slice(), limits)
        .map_err(|e| Refusal::new(Reason::Store, format!("the stored manifest of {}: {e}", dest.display())))?;
    let path = TreeLayout::catalog_path(&client.name, source, received);
    catalog
        .insert(&crate::catalog::Artifact {
            id: 0,
            client: client.name.clone(),
            source: source.to_owned(),
            module: MODULE.to_owned(),
            received: received.to_owned(),
            stamp: stamp.to_owned(),
            path: path.clone(),
            size: manifest.total_file_bytes(),
            sha256: Sha256::of(&stored).to_hex(),
            duration_ms: 0,
            request: id.to_owned(),
            node: cfg.name.clone(),
        })
        .map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
    // The downloaded manifest the interrupted run left in `.partial`.
    let _ = std::fs::remove_file(mark.dir.join(format!("{}.ftree", mark.sha_hex)));
    mark.remove();
    // What a run that was not interrupted does after its row (the rescue
    // layer is the scan's, after the request is finished).
    crate::tripwire::after_snapshot(cfg, &client.name, source, received);
    Ok(format!("tree {source} {stamp}: already published as {path} by an interrupted run; catalog row written"))
}

/// Run a validated-by-grammar `tree` request; see the module docs.
pub fn tree(
    cfg: &NodeConfig,
    catalog: &dyn Catalog,
    client: &ClientEnrollment,
    id: &str,
    req: &TreeRequest,
) -> Result<String, Refusal> {
    validate::tree(req, client)?;
    let source = req.source.as_str();
    if ferry_request::is_reserved_source(source) {
        return Err(Refusal::new(Reason::ReqNameReserved, format!("source name {source} is reserved")));
    }
    let stamp = req.stamp.to_string();
    let sha_hex = req.sha256.to_hex();
    if let Some(a) =
        catalog.same(&client.name, source, &stamp, &sha_hex).map_err(|e| Refusal::new(Reason::Store, e.to_string()))?
    {
        // A run killed after the row but before its cleanup leaves the
        // name record and the downloaded manifest in `.partial`.
        let partial = TreeLayout::new(cfg.data_dir()).partial_dir(&client.name, source);
        for leftover in [format!("{sha_hex}.received"), format!("{sha_hex}.ftree")] {
            let _ = std::fs::remove_file(partial.join(leftover));
        }
        return Ok(format!("tree {source} {stamp}: already stored as {} (identical duplicate)", a.path));
    }
    let cdir = client_dir(cfg, &client.name)?;
    let layout = TreeLayout::new(cfg.data_dir());
    subdir(&cdir, &["trees", source])?;
    // `.partial` is no storage name (a dot name is never a snapshot), so
    // it is made here, refusing anything but a plain directory.
    let partial = layout.partial_dir(&client.name, source);
    match std::fs::symlink_metadata(&partial) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return Err(Refusal::new(Reason::Store, format!("{} is not a plain directory", partial.display()))),
        Err(_) => std::fs::create_dir(&partial).map_err(|e| io_refusal("create the pull's work area", e))?,
    }
    let limits =
        Limits { max_entries: cfg.tree.max_entries, max_total_bytes: cfg.tree.max_total_bytes, ..Limits::default() };
    let mark = Mark { dir: &partial, sha_hex: &sha_hex, name: format!("{sha_hex}.received"), id };
    let recorded = mark.read();
    if let Some(received) = &recorded
        && layout.has_manifest(&client.name, source, received)
        && layout.snapshot_dir(&client.name, source, received).is_dir()
    {
        return catalog_published(cfg, catalog, &layout, client, source, &stamp, id, received, &limits, &mark);
    }
    let (endpoint, timeout) = crate::jobs::sftp_endpoint(cfg, client)?;
    let mut steps = Steps::start();
    let idle = std::time::Duration::from_secs(60);
    let max_manifest = cfg.tree.max_manifest_bytes;

    // 1. The manifest, named by the request's digest so a re-run reuses it.
    let mname = format!("{sha_hex}.ftree");
    let mpath = partial.join(&mname);
    if !mpath.is_file() {
        let job = ferry_pull::sftp::DownloadJob {
            endpoint: &endpoint,
            remote_path: req.manifest.path.as_str(),
            expected_size: req.size,
            expected_sha256: *req.sha256.as_bytes(),
            max_bytes: max_manifest.min(req.size),
            dest_dir: &partial,
            dest_name: &mname,
            timeout,
            idle_timeout: idle,
            min_rate: cfg.min_rate(),
        };
        if req.size > max_manifest {
            return Err(Refusal::new(
                Reason::TreeLimit,
                format!("manifest of {} bytes, the limit is {max_manifest} ([tree] max_manifest_bytes)", req.size),
            ));
        }
        ferry_pull::sftp::download(&job).map_err(|e| Refusal::new(e.reason, e.message))?;
    }
    ferry_durable::crash_point("tree:after-manifest");
    steps.lap("manifest");

    // 2. Hostile input.
    let file = std::fs::File::open(&mpath).map_err(|e| io_refusal("open the manifest", e))?;
    let mut manifest = match ferry_tree::manifest::read(file, &limits) {
        Ok(m) => m,
        Err(ReadError::Refused(r)) => {
            let _ = std::fs::remove_file(&mpath);
            return Err(Refusal::new(reason_of(r.code()), r.to_string()));
        }
        Err(e) => return Err(Refusal::new(Reason::Store, format!("read the manifest: {e}"))),
    };

    // 3. Quota on new bytes, then the fetch.
    // The client's store or its share group's, held shared until the
    // snapshot is published so no gc takes a content put but not linked.
    let store_dir = crate::trees::store_dir_for(cfg, client);
    let locked = crate::trees::lock_store(&cfg.data_dir(), &store_dir, false)
        .map_err(|e| store_refusal(&e))?
        .ok_or_else(|| Refusal::new(Reason::Store, "the store's lock was refused"))?;
    let (store, _store_lock): (Store, _) = locked.into_parts();
    // Temporaries of an earlier pull killed mid-fetch (this client's pulls
    // are one at a time; another member's live pull keeps its own).
    match store.clean_tmp() {
        Ok(0) => {}
        Ok(n) => tracing::info!(client = %client.name, files = n, "tree pull: removed temporaries of a killed pull"),
        Err(e) => tracing::warn!(client = %client.name, error = %e, "tree pull: cannot sweep the store's tmp"),
    }
    steps.lap("parse");
    let missing = snapshot::missing(&manifest, &store);
    steps.lap("lookup");
    let new_bytes: u64 = missing.iter().map(|m| m.size).fold(0, u64::saturating_add);
    // Checked before anything is fetched, on this thread while the
    // staging thread links (below): the walk of every kept snapshot it
    // needs took 50-60 ms of a 0.5 s repeat pull. A refusal drops the
    // staging, which removes it.
    let quota = || match quota_left(cfg, client, &cdir)? {
        Some(left) if new_bytes > left => {
            Err(Refusal::new(Reason::Quota, format!("{new_bytes} new bytes exceed the {left} bytes left in the quota")))
        }
        _ => Ok(()),
    };
    // A name recorded by an earlier run of this request that did not get
    // as far as the rename is used again (its staging is replaced).
    let received = match recorded.filter(|r| !layout.snapshot_dir(&client.name, source, r).exists()) {
        Some(r) => r,
        None => {
            let mut received = run_id();
            let mut n = 1;
            while layout.snapshot_dir(&client.name, source, &received).exists() {
                n += 1;
                received = format!("{}-{n}", run_id());
            }
            mark.write(&received)?;
            received
        }
    };
    let dest = layout.snapshot_dir(&client.name, source, &received);
    let root = req.root.path.as_str().trim_end_matches('/');
    let files: Vec<RemoteFile> = missing
        .iter()
        .map(|m| RemoteFile { path: [root.as_bytes(), b"/", m.paths[0].as_slice()].concat(), size: m.size })
        .collect();
    let job = ManyJob {
        endpoint: &endpoint,
        files: &files,
        depth: cfg.tree.files_in_flight,
        timeout,
        idle_timeout: idle,
        min_rate: cfg.min_rate(),
        spool: Some(&partial),
    };
    // Contents become durable in batches (one syncfs before their renames,
    // not two fsyncs per content: 20,000 small files spent most of a first
    // pull in fsync), cut at COMMIT_EVERY or at `batch_contents`: a resume
    // fetches again at most the batches not yet committed, and a small
    // pull (a repeat's 1% changed) pays one batch, not the 2·log2(n)
    // syncfs of batches that double from one. A full batch is committed
    // on a thread of its own while the next one fills (a commit of 4,096
    // files took 100-150 ms, a third of the fetch, with the sink idle),
    // with at most one more batch waiting for it; the names of all
    // batches are synced by the build's sync.
    let batch_max = cfg.tree.batch_contents.max(1);
    // What is still to come, to taper the last batches (`taper`).
    let (mut left_count, mut left_bytes) = (missing.len(), missing.iter().map(|m| m.size).sum::<u64>());
    let abort = |e: StoreError| SinkError::Abort(ferry_pull::PullError::new(reason_of(e.code()), e.to_string()));
    let mut batch = Some(store.batch().map_err(|e| store_refusal(&e))?);
    let mut opened = std::time::Instant::now();
    // The snapshot's directories, symlinks and links of stored contents
    // are staged on another thread while the fetch runs (see
    // `snapshot::Staged`); the fetched ones are linked there too, a batch
    // at a time as they are committed (below).
    let later: HashSet<Sha256> = missing.iter().map(|m| m.sha256).collect();
    // The directories first, here: the fetch writes each content straight
    // into the staging, at its first path (`Batch::put_missing_in`), and
    // the batch's commit links it into the store from there.
    let staged =
        snapshot::stage_dirs(&manifest, &dest, later).map_err(|e| Refusal::new(reason_of(e.code()), e.to_string()))?;
    let root = staged.root().map_err(|e| Refusal::new(reason_of(e.code()), e.to_string()))?;
    let (fetched, staged) = std::thread::scope(|scope| {
        // Each batch the committer (or, for the last, this thread) makes
        // present in the store goes to the staging thread, which links its
        // files into the snapshot while the fetch goes on
        // (`Staged::link_stored`), so the build after the fetch links
        // only what is left. A staging thread that failed stops taking
        // them; its error is told when it is joined.
        let (to_stage, stored) = std::sync::mpsc::channel::<HashSet<Sha256>>();
        let (m, st, miss) = (&manifest, &store, &missing);
        let staging = scope.spawn(move || -> Result<snapshot::Staged, snapshot::SnapshotError> {
            let mut staged = staged;
            staged.fill_stored(m, st)?;
            let by_digest: HashMap<&Sha256, &snapshot::Missing> = miss.iter().map(|x| (&x.sha256, x)).collect();
            for set in stored {
                staged.link_copies(st, set.iter().filter_map(|x| by_digest.get(x).copied()))?;
            }
            Ok(staged)
        });
        if let Err(refused) = quota() {
            drop(to_stage);
            return (Err(refused), staging.join());
        }
        let last_to_stage = to_stage.clone();
        let (to_commit, commits) = std::sync::mpsc::sync_channel::<ferry_tree::store::Batch<'_>>(1);
        let committer = scope.spawn(move || -> Result<(), StoreError> {
            for b in commits {
                let contents: HashSet<Sha256> = b.contents().copied().collect();
                b.commit_unsynced()?;
                ferry_durable::crash_point("tree:after-put");
                let _ = to_stage.send(contents);
            }
            Ok(())
        });
        let fetched = ferry_pull::sftp::fetch_many(&job, |i, r| {
            let Some(b) = batch.as_mut() else {
                return Err(SinkError::Abort(ferry_pull::PullError::new(
                    Reason::Store,
                    "no store batch open".to_owned(),
                )));
            };
            left_count = left_count.saturating_sub(1);
            left_bytes = left_bytes.saturating_sub(missing[i].size);
            match b.put_missing_in(r, missing[i].size, &missing[i].sha256, &root, &missing[i].paths[0]) {
                Ok(_) => {}
                Err(e @ StoreError::Mismatch { .. }) => {
                    return Err(SinkError::Reject(format!("{}: {e}", ferry_text::escape_bytes(&files[i].path, 200))));
                }
                Err(e) => return Err(abort(e)),
            }
            if (b.len() >= batch_max || opened.elapsed() >= COMMIT_EVERY || taper(b, left_count, left_bytes))
                && let Some(b) = batch.take()
            {
                // A committer that stopped has its error, told below.
                to_commit.send(b).map_err(|_| {
                    SinkError::Abort(ferry_pull::PullError::new(
                        Reason::Store,
                        "the store's committer stopped".to_owned(),
                    ))
                })?;
                batch = Some(store.batch().map_err(abort)?);
                opened = std::time::Instant::now();
            }
            Ok(())
        });
        drop(to_commit);
        let committed = committer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let fetched = match (fetched, committed) {
            (_, Err(e)) => Err(store_refusal(&e)),
            (Err(e), Ok(())) => Err(Refusal::new(e.reason, e.message)),
            (Ok(report), Ok(())) => {
                // The names of the committed batches are made durable by
                // the build's sync (the store and the snapshots are one
                // file system: they share inodes), not by a sync of their
                // own here: a crash before it loses names, which costs a
                // fetch again, never a wrong content (`commit_unsynced`).
                let last = batch.take().filter(|b| !b.is_empty());
                let contents: HashSet<Sha256> = last.iter().flat_map(|b| b.contents().copied()).collect();
                last.map_or(Ok(0), ferry_tree::store::Batch::commit_unsynced)
                    .map(|_| {
                        let _ = last_to_stage.send(contents);
                        report
                    })
                    .map_err(|e| store_refusal(&e))
            }
        };
        // The staging thread ends once every sender is gone.
        drop(last_to_stage);
        (fetched, staging.join())
    });
    let staged = match staged {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let report = fetched?;
    let staged = staged.map_err(|e| Refusal::new(reason_of(e.code()), e.to_string()))?;
    steps.lap("fetch");

    // 4. Leave out what changed; build and publish.
    let changed: HashSet<Sha256> = report.skipped.iter().map(|s| missing[s.index].sha256).collect();
    let mut journal = Vec::new();
    if !changed.is_empty() {
        manifest.entries.retain(|e| match &e.kind {
            Kind::File { sha256, .. } if changed.contains(sha256) => {
                journal.push(ferry_tree::manifest::encode(&e.path));
                false
            }
            _ => true,
        });
        for s in &report.skipped {
            tracing::warn!(client = %client.name, source, why = %s.why, "tree: a file changed during the pull");
        }
    }
    // Changed on the client since its scan, or a client that lies about
    // sizes or digests: the node cannot tell them apart, and neither is
    // stored. The first reasons go into the result, with their code.
    let left_out: Vec<String> = report
        .skipped
        .iter()
        .take(3)
        .map(|s| if s.why.contains("E_TREE_CONTENT") { s.why.clone() } else { format!("E_TREE_CONTENT: {}", s.why) })
        .collect();
    if !journal.is_empty() {
        let jpath = dest.with_file_name(format!("{received}.changed"));
        let mut f = std::fs::File::create(&jpath).map_err(|e| io_refusal("write the changed-files journal", e))?;
        f.write_all(format!("{}\n", journal.join("\n")).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io_refusal("write the changed-files journal", e))?;
    }
    let stats = match staged.finish(&manifest, &store) {
        Ok(snapshot::Built::Published(s)) => s,
        Ok(snapshot::Built::AlreadyPublished) => Default::default(),
        Err(e) => return Err(Refusal::new(reason_of(e.code()), e.to_string())),
    };
    ferry_durable::crash_point("tree:after-build");
    steps.lap("build");

    // 5. The catalog row (sha256 of the stored manifest).
    let stored = manifest.to_bytes();
    let digest = Sha256::of(&stored).to_hex();
    let path = TreeLayout::catalog_path(&client.name, source, &received);
    catalog
        .insert(&crate::catalog::Artifact {
            id: 0,
            client: client.name.clone(),
            source: source.to_owned(),
            module: MODULE.to_owned(),
            received: received.clone(),
            stamp: stamp.clone(),
            path: path.clone(),
            size: manifest.total_file_bytes(),
            sha256: digest,
            duration_ms: report.elapsed.as_millis() as u64,
            request: id.to_owned(),
            node: cfg.name.clone(),
        })
        .map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
    crate::tripwire::after_snapshot(cfg, &client.name, source, &received);
    let _ = std::fs::remove_file(&mpath);
    mark.remove();
    steps.lap("catalog");
    Ok(format!(
        "tree {source} {stamp}: {} files, {} contents fetched ({} bytes), {} changed during the pull{}, stored as {path} in {}",
        stats.files,
        report.fetched,
        report.bytes,
        journal.len(),
        if journal.is_empty() {
            String::new()
        } else {
            format!(
                " (journal {path}.changed; {}{})",
                left_out.join("; "),
                if report.skipped.len() > left_out.len() { "; …" } else { "" }
            )
        },
        steps,
    ))
}

/// Batches below this many contents or bytes are not cut early by [`taper`].
const TAPER_MIN: (usize, u64) = (256, 4 << 20);

/// Whether to cut `batch` because it holds as much as is still to come:
/// the batches of a pull's end halve (down to [`TAPER_MIN`]), so the last
/// one, whose commit (a sync of its data, then a rename per content) is
/// the only one nothing overlaps, is small. With batches cut at 4,096
/// contents the last one of a 20,000-file first pull held 3,616, and its
/// commit was 0.14 s of the pull's end with the fetch done and one core
/// idle. A pull of fewer than 512 contents still pays one batch.
fn taper(batch: &ferry_tree::store::Batch<'_>, left_count: usize, left_bytes: u64) -> bool {
    (batch.len() >= TAPER_MIN.0 && batch.len() >= left_count)
        || (batch.bytes() >= TAPER_MIN.1 && batch.bytes() >= left_bytes)
}

/// Wall time per step of one pull, for the journal: where a slow pull
/// spends its time (a fetch bound by the client's sftp-server, a build
/// bound by the node's disk) is the first thing an administrator asks.
struct Steps {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Steps {
    fn start() -> Steps {
        Steps { last: std::time::Instant::now(), laps: Vec::new() }
    }

    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }
}

/// `1.23 s (manifest 0.01, parse 0.05, …)`
impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: std::time::Duration = self.laps.iter().map(|(_, d)| *d).sum();
        write!(f, "{:.2} s (", total.as_secs_f64())?;
        for (i, (name, d)) in self.laps.iter().enumerate() {
            write!(f, "{}{name} {:.2}", if i == 0 { "" } else { ", " }, d.as_secs_f64())?;
        }
        f.write_str(")")
    }
}
