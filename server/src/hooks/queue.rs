//! The queue repo hooks of one client: `pre-receive` refuses a malformed
//! push with a reason the client sees; `post-update` extracts the pushed
//! `RQ*` files into the client's pool and wakes the scanner.
//!
//! The client's identity is the queue repo's *name* (`queue/<client>.git`),
//! and the pusher authenticated by `serve` must be that client (I1):
//! nothing in a request, a commit, a ref name or a push option can change
//! which pool or data directory is written.
//!
//! Extraction is idempotent and crash-safe: under the pool's extraction lock
//! every new commit since `.extracted` is walked oldest first, each `RQ`
//! blob is written synced into `.incomplete/`, renamed into the pool, and
//! only then is `.extracted` advanced. A crash anywhere leaves either
//! nothing, or files the next run recognises as already there. The scanner
//! calls [`catch_up`] on every scan, so a push whose hook died is never lost.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use ferry_durable::{Lock, Pool};
use ferry_request::Reason;
use git2::{ObjectType, Oid, Repository, Sort};

use crate::config::NodeConfig;
use crate::events;

const BRANCH: &str = "refs/heads/master";
const EXTRACTED: &str = ".extracted";
const INCOMPLETE: &str = ".incomplete";
const EXTRACT_LOCK: &str = ".extract.lock";
/// Most commits one push may add (a client batches its requests).
const MAX_COMMITS_PER_PUSH: usize = 4096;

/// A reason a tree entry is not an acceptable request file.
pub fn check_entry(
    name: &[u8],
    mode: i32,
    kind: Option<ObjectType>,
    size: Option<usize>,
    max_bytes: usize,
) -> Result<String, (Reason, String)> {
    let name_str = std::str::from_utf8(name).ok();
    let id =
        name_str.and_then(|n| n.strip_prefix("RQ")).filter(|id| ferry_durable::is_valid_id(id)).ok_or_else(|| {
            (Reason::ReqName, format!("{} is not a request file name (RQ<id>)", ferry_text::escape_bytes(name, 120)))
        })?;
    if kind != Some(ObjectType::Blob) || mode != 0o100644 {
        return Err((
            Reason::ReqFileType,
            format!(
                "{} is not a regular file (mode {mode:o}); request files are plain blobs",
                ferry_text::escape_bytes(name, 120)
            ),
        ));
    }
    match size {
        Some(s) if s <= max_bytes => Ok(id.to_owned()),
        Some(s) => Err((
            Reason::ReqTooLong,
            format!("{} is {s} bytes; the limit is {max_bytes}", ferry_text::escape_bytes(name, 120)),
        )),
        None => Err((Reason::Store, "cannot read object header".into())),
    }
}

/// Client name of a queue repo path, if it is one.
pub fn client_of(cfg: &NodeConfig, repo: &Path) -> Option<String> {
    let parent = repo.parent()?;
    let queue_dir = cfg.repositories().join("queue");
    let queue_dir = queue_dir.canonicalize().unwrap_or(queue_dir);
    if parent != queue_dir {
        return None;
    }
    let name = repo.file_name()?.to_str()?.strip_suffix(".git")?;
    ferry_gitosis::username::is_valid_client_name(name).then(|| name.to_owned())
}

fn refuse(cfg: &NodeConfig, client: &str, reason: Reason, msg: &str) -> anyhow::Result<()> {
    events::record(&cfg.events_log(), "warn", Some(client), "push_refused", Some(reason.code()), None, msg);
    // `msg` quotes client text escaped once already: only sanitize it.
    let _ = writeln!(std::io::stderr(), "ferry: push refused: {}: {}", reason.code(), ferry_text::sanitize(msg, 600));
    bail!("push refused")
}

/// `pre-receive` of `queue/<client>.git`.
pub fn pre_receive(cfg: &NodeConfig, client: &str) -> anyhow::Result<()> {
    let enrollment = crate::enrollment::load(cfg)?;
    let Some(enrolled) = enrollment.client(client) else {
        return refuse(cfg, client, Reason::NotEnrolled, "this client is not enrolled on the node");
    };
    let pusher = std::env::var("FERRY_USER").unwrap_or_default();
    if pusher != enrolled.name {
        return refuse(
            cfg,
            client,
            Reason::AclDenied,
            &format!("queue/{client} accepts pushes only from {client}, not {pusher:?}"),
        );
    }
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines().take(64) {
        let line = line?;
        let mut f = line.split(' ');
        let (Some(old), Some(new), Some(r), None) = (f.next(), f.next(), f.next(), f.next()) else {
            bail!("unexpected pre-receive input");
        };
        updates.push((old.to_owned(), new.to_owned(), r.to_owned()));
    }
    let repo = Repository::open_from_env().context("cannot open the queue repo")?;
    let zero = Oid::ZERO_SHA1.to_string();
    let max = cfg.limits.request_bytes;
    let mut total = 0usize;
    for (old, new, r) in &updates {
        if r != BRANCH {
            return refuse(
                cfg,
                client,
                Reason::AclDenied,
                &format!("only {BRANCH} may be pushed, not {}", ferry_text::escape(r, 100)),
            );
        }
        if *new == zero {
            return refuse(cfg, client, Reason::AclDenied, "deleting the queue branch is not allowed");
        }
        let new_oid = Oid::from_str(new)?;
        let mut walk = repo.revwalk()?;
        walk.push(new_oid)?;
        if *old != zero {
            let old_oid = Oid::from_str(old)?;
            if !repo.graph_descendant_of(new_oid, old_oid)? {
                return refuse(cfg, client, Reason::AclDenied, "the queue's history may only grow (non-fast-forward)");
            }
            walk.hide(old_oid)?;
        }
        let odb = repo.odb()?;
        for (n, oid) in walk.enumerate() {
            if n >= MAX_COMMITS_PER_PUSH {
                return refuse(
                    cfg,
                    client,
                    Reason::ReqTooMany,
                    &format!("more than {MAX_COMMITS_PER_PUSH} commits in one push"),
                );
            }
            let commit = repo.find_commit(oid?)?;
            for e in commit.tree()?.iter() {
                let size = odb.read_header(e.id()).ok().map(|(s, _)| s);
                if let Err((reason, msg)) = check_entry(e.name_bytes(), e.filemode(), e.kind(), size, max) {
                    return refuse(cfg, client, reason, &format!("commit {}: {msg}", &commit.id().to_string()[..12]));
                }
                total += 1;
                if total > cfg.limits.requests_per_push {
                    return refuse(
                        cfg,
                        client,
                        Reason::ReqTooMany,
                        &format!(
                            "more than {} requests in one push; push fewer at a time",
                            cfg.limits.requests_per_push
                        ),
                    );
                }
            }
        }
    }
    let pool = crate::pool::open_pool(cfg, client)?;
    let pending = pool.list()?.iter().filter(|e| matches!(e.state, "RQ" | "P")).count();
    if pending + total > cfg.limits.pending_per_client {
        return refuse(
            cfg,
            client,
            Reason::ReqPending,
            &format!(
                "{pending} of your requests are still waiting on the node (limit {}); retry later",
                cfg.limits.pending_per_client
            ),
        );
    }
    Ok(())
}

/// `post-update` of `queue/<client>.git`: extract, then wake a scanner.
pub fn post_update(cfg: &NodeConfig, config_path: &Path, client: &str) -> anyhow::Result<()> {
    let n = extract(cfg, client)?;
    let _ = writeln!(std::io::stderr(), "ferry: {n} request(s) accepted for {client}");
    let pool = crate::pool::open_pool(cfg, client)?;
    crate::pool::request_wake(&pool)?;
    if cfg.scan_on_push {
        spawn_scan(cfg, config_path, client)?;
    }
    Ok(())
}

/// Extract anything a missed or crashed hook left behind.
pub fn catch_up(cfg: &NodeConfig, client: &str) -> anyhow::Result<usize> {
    let repo = cfg.queue_repo(client);
    if !repo.join("HEAD").exists() {
        return Ok(0);
    }
    // Fast path for the common case (nothing missed): compare the loose
    // ref with the marker without opening the repository.
    if let Ok(tip) = std::fs::read_to_string(repo.join("refs/heads/master")) {
        let pool = crate::pool::open_pool(cfg, client)?;
        if read_extracted(&pool).is_some_and(|e| e.to_string() == tip.trim()) {
            return Ok(0);
        }
    } else if !repo.join("packed-refs").exists() {
        return Ok(0); // no master yet
    }
    extract(cfg, client)
}

fn read_extracted(pool: &Pool) -> Option<Oid> {
    let s = std::fs::read_to_string(pool.dir().join(EXTRACTED)).ok()?;
    Oid::from_str(s.trim()).ok()
}

/// Extract every request pushed since the last extraction. Returns how
/// many new requests entered the pool.
pub fn extract(cfg: &NodeConfig, client: &str) -> anyhow::Result<usize> {
    let pool = crate::pool::open_pool(cfg, client)?;
    let repo = Repository::open_bare(cfg.queue_repo(client)).map_err(|e| {
        if e.code() == git2::ErrorCode::Owner {
            // Two accounts: the scan account opens queues the git account owns.
            anyhow::anyhow!(
                "cannot open the queue repo: it belongs to another account; let this account trust it with `git config --global --add safe.directory '*'` (the two-account layout, see the README)"
            )
        } else {
            anyhow::Error::new(e).context("cannot open the queue repo")
        }
    })?;
    let Ok(tip) = repo.refname_to_id(BRANCH) else { return Ok(0) };
    let last = read_extracted(&pool);
    if last == Some(tip) {
        return Ok(0);
    }
    let _lock = Lock::acquire_timeout(&pool.dir().join(EXTRACT_LOCK), std::time::Duration::from_secs(120))?;
    // Re-read under the lock: another extractor may have done the work.
    let last = read_extracted(&pool);
    if last == Some(tip) {
        return Ok(0);
    }
    let inc = pool.dir().join(INCOMPLETE);
    if inc.exists() {
        std::fs::remove_dir_all(&inc)?; // leftovers of a crash: never published
    }
    std::fs::create_dir(&inc)?;
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    if let Some(l) = last
        && repo.find_commit(l).is_ok()
    {
        walk.hide(l)?;
    }
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    let odb = repo.odb()?;
    let max = cfg.limits.request_bytes;
    let mut staged: BTreeMap<String, ()> = BTreeMap::new();
    for oid in walk {
        let commit = repo.find_commit(oid?)?;
        for e in commit.tree()?.iter() {
            let size = odb.read_header(e.id()).ok().map(|(s, _)| s);
            let id = match check_entry(e.name_bytes(), e.filemode(), e.kind(), size, max) {
                Ok(id) => id,
                Err((reason, msg)) => {
                    // pre-receive refuses these; reaching here means the
                    // hook was bypassed or replaced. Record, never extract.
                    events::record(
                        &cfg.events_log(),
                        "warn",
                        Some(client),
                        "request_skipped",
                        Some(reason.code()),
                        None,
                        &msg,
                    );
                    continue;
                }
            };
            let blob = repo.find_blob(e.id())?;
            let data = blob.content();
            if let Some(state) = pool.state_of(&id) {
                let same = pool.read(state, &id, max).ok().flatten().is_some_and(|old| old == data);
                if !same {
                    events::record(
                        &cfg.events_log(),
                        "warn",
                        Some(client),
                        "request_conflict",
                        Some(Reason::ReqConflict.code()),
                        Some(&id),
                        "a request with this id and different content was already received; the new one is ignored",
                    );
                }
                continue;
            }
            if staged.contains_key(&id) {
                continue;
            }
            let name = format!("RQ{id}");
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(inc.join(&name))?;
            f.write_all(data)?;
            f.sync_all()?;
            staged.insert(id, ());
        }
    }
    ferry_durable::fsync_dir(&inc)?;
    ferry_durable::crash_point("extract:after-incomplete");
    let mut n = 0;
    for id in staged.keys() {
        let name = format!("RQ{id}");
        if pool.state_of(id).is_some() {
            std::fs::remove_file(inc.join(&name))?;
            continue;
        }
        std::fs::rename(inc.join(&name), pool.dir().join(&name))?;
        n += 1;
        ferry_durable::crash_point("extract:mid-rename");
    }
    pool.sync()?;
    // `.incomplete` goes before the marker moves: once the marker says
    // "done", no later run would look for it (a kill between the two left
    // it behind for good).
    std::fs::remove_dir(&inc)?;
    ferry_durable::crash_point("extract:before-marker");
    ferry_durable::write_synced(pool.dir(), EXTRACTED, format!("{tip}\n").as_bytes())?;
    if n > 0 {
        events::record(
            &cfg.events_log(),
            "info",
            Some(client),
            "requests_received",
            None,
            None,
            &format!("{n} request(s) up to commit {tip}"),
        );
    }
    Ok(n)
}

/// Start `ferry-node scan --client <client>` detached: the pusher must not
/// wait for it (GITOSIS.md §7.4), and nothing of the hook's environment
/// (GIT_DIR, quarantine paths) reaches it.
pub fn spawn_scan(cfg: &NodeConfig, config_path: &Path, client: &str) -> anyhow::Result<()> {
    let log_dir = cfg.state_dir().join("log");
    std::fs::create_dir_all(&log_dir)?;
    ferry_run::Cmd::new(cfg.program())
        .arg("--config")
        .arg(config_path)
        .args(["scan", "--client", client])
        .spawn_detached(Some(&log_dir.join("scan.log")))
        .context("cannot start a scan")?;
    Ok(())
}
