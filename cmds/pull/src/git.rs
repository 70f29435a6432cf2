//! The node's `git` module: mirror a client's repository into
//! `data/<client>/git/<name>.git`, first in full, then incrementally.
//!
//! Safety (SECURITY C3, MR-01/02/09, GU-01..05/12..16): git runs with a
//! cleared environment, no system or global config, only the one transport
//! of this job allowed, no hooks, no templates, no submodules, no redirects,
//! object checks on, and the URL — rebuilt by the caller from validated
//! fields — after `--`. Nothing from the client reaches an option position.
//!
//! History is append-only (MR-09): the fetch lands in `refs/ferry/incoming/*`
//! (an exact copy of the client's heads and tags), then Ferry moves
//! `refs/heads/*` and `refs/tags/*` to match in one transaction. A ref that
//! moved backwards or sideways (force-push) or disappeared is first saved
//! under `refs/backup/<run>/…`, so no commit the node ever stored becomes
//! unreachable, whatever the client does.
//!
//! The record of what the refs were when: every ref update of a run is
//! logged in the ref's reflog (`core.logAllRefUpdates=always`, never
//! expired) with the node's time and the message `ferry: mirror run <run>`;
//! one transaction, so all entries of a run carry the same time. A deleted
//! ref keeps its reflog, and its last value is the creation entry of its
//! `refs/backup/<run>/…` copy. `<run>` is unique per mirror (a second run in
//! the same second gets `<run>-2`), so one run's copies never overwrite
//! another's. The node's `restore --at` reads this record back.
//!
//! Limits before work (RE, issue 16): the remote's ref advertisement is
//! checked (ref count, ref-name lengths) before git asks for an object —
//! over ssh inside the fetch's own connection by [`guard`], else by a
//! `git ls-remote` first — and a fetch is only done when every advertised
//! branch and tag arrived where it was advertised and the mirror is not
//! shallow (git exits 0 when it refuses a shallow client's refs):
//! otherwise the fetch is undone and fails `E_FETCH_INCOMPLETE`.
//! Failures carry git's own words first (module `failure`); a repository git's
//! fsck refuses is `E_FETCH_FSCK` with the fsck message ids.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_request::{GitScheme, GitUrl, Reason};
use ferry_run::Cmd;

use crate::PullError;

mod advert;
mod failure;
pub mod guard;

pub use advert::{MAX_REF_COMPONENT, MAX_REF_NAME};

/// Node-owned settings for running git against untrusted remotes.
#[derive(Debug, Clone)]
pub struct GitEnv {
    pub git: PathBuf,
    /// An empty, node-owned directory: HOME, hooks path and template dir.
    pub empty_dir: PathBuf,
    /// The data root (`GIT_CEILING_DIRECTORIES`).
    pub data_root: PathBuf,
    /// Wall-clock limit of one fetch.
    pub timeout: Duration,
    /// fsck message ids to downgrade (e.g. `zeroPaddedFilemode` for old
    /// repositories), from the node's configuration only.
    pub fsck_ignore: Vec<String>,
    /// The relay that checks the ref advertisement inside an ssh fetch's
    /// own connection ([`guard`]); without it (or for `git://`) the refs
    /// are listed by a `git ls-remote` first, one more round trip.
    pub ssh_guard: Option<SshGuard>,
}

/// How to run [`guard::main`]: `<program> git-ssh-guard …`.
#[derive(Debug, Clone)]
pub struct SshGuard {
    /// A program with a `git-ssh-guard` command (`ferry-node`).
    pub program: PathBuf,
    /// A node-owned directory for the guard's records (one small file per
    /// fetch, removed once read).
    pub record_dir: PathBuf,
}

/// `s` single-quoted for the shell git runs `core.sshCommand` with.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Per-fetch limits (SECURITY I5, MR-06, RE-02). A fetch that crosses one
/// is stopped while it runs (the watch sees the incoming pack grow), its
/// new packs are deleted and the incoming refs put back, so nothing of it
/// remains.
#[derive(Debug, Clone, Default)]
pub struct FetchLimits {
    /// Most bytes of new packs this fetch may add.
    pub max_bytes: Option<u64>,
    /// The code to fail with when `max_bytes` is crossed (`E_QUOTA` when the
    /// limit is what is left of the client's quota, else `E_FETCH_LIMIT`).
    pub bytes_reason: Option<Reason>,
    /// Most objects this fetch may add.
    pub max_objects: Option<u64>,
    /// Most branches and tags the repository may have. Every ref is a file
    /// (and a reflog) on the node, so without a cap a client could spend
    /// the node's inodes with a million branches that cost it no bytes.
    pub max_refs: Option<u64>,
}

/// One mirror job.
#[derive(Debug)]
pub struct MirrorJob<'a> {
    pub url: &'a GitUrl,
    /// `data/<client>/git/<name>.git`.
    pub mirror: &'a Path,
    /// Node-assigned run id, used for backup refs.
    pub run_id: &'a str,
    /// `core.sshCommand` for ssh URLs (a node-built constant).
    pub ssh_command: Option<&'a str>,
    pub env: &'a GitEnv,
    pub limits: FetchLimits,
}

/// What a mirror run changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MirrorOutcome {
    pub created: bool,
    pub updated: Vec<String>,
    /// Refs the client rewrote; their old value is kept under `saved_under`.
    pub forced: Vec<String>,
    /// Refs the client deleted; kept under `saved_under`.
    pub deleted: Vec<String>,
    pub saved_under: Option<String>,
    pub elapsed_ms: u128,
}

fn git_base(env: &GitEnv, scheme: GitScheme, ssh_command: Option<&str>) -> Cmd {
    let s = scheme.as_str();
    let hooks = env.empty_dir.join("hooks");
    let mut c = Cmd::new(&env.git)
        .env("HOME", &env.empty_dir)
        .env("XDG_CONFIG_HOME", &env.empty_dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", s)
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_CEILING_DIRECTORIES", &env.data_root)
        .args(["-c", "protocol.allow=never"])
        .arg("-c")
        .arg(format!("protocol.{s}.allow=always"))
        .args(["-c", "transfer.fsckObjects=true", "-c", "fetch.fsckObjects=true"])
        .args(["-c", "transfer.bundleURI=false", "-c", "fetch.recurseSubmodules=false"])
        .args(["-c", "submodule.recurse=false", "-c", "http.followRedirects=false"])
        .args(["-c", "credential.helper=", "-c", "ssh.variant=ssh", "-c", "core.useReplaceRefs=false"])
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "core.logAllRefUpdates=always"])
        .args(["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60", "-c", "pack.threads=1"])
        .arg("-c")
        .arg(format!("core.hooksPath={}", hooks.display()))
        .args(["-c", "fetch.writeCommitGraph=false", "-c", "fetch.showForcedUpdates=false"])
        // ...and not the advice about it on every fetch's stderr, which
        // would push git's real messages out of a failure's detail.
        .args(["-c", "advice.fetchShowForcedUpdates=false"])
        // Keep every fetch as one pack, so its size and object count are
        // visible (and limitable) while it arrives.
        .args(["-c", "fetch.unpackLimit=1", "-c", "transfer.unpackLimit=1"]);
    for id in &env.fsck_ignore {
        c = c.arg("-c").arg(format!("fetch.fsck.{id}=ignore"));
    }
    match ssh_command {
        Some(sc) => c.arg("-c").arg(format!("core.sshCommand={sc}")),
        None => c.args(["-c", "core.sshCommand=/bin/false"]),
    }
}

fn run(cmd: Cmd, what: &str) -> Result<ferry_run::Output, PullError> {
    cmd.run_checked().map_err(|e| failure::from_run(&e, what))
}

/// Local git command on the mirror (no network; still the hardened env).
fn local(env: &GitEnv, dir: &Path) -> Cmd {
    git_base(env, GitScheme::Ssh, None).env("GIT_ALLOW_PROTOCOL", "none").arg(format!("--git-dir={}", dir.display()))
}

fn init_bare(env: &GitEnv, dir: &Path) -> Result<(), PullError> {
    let template = env.empty_dir.join("template");
    std::fs::create_dir_all(&template).map_err(|e| PullError::io("create the empty template dir", e))?;
    std::fs::create_dir_all(env.empty_dir.join("hooks")).map_err(|e| PullError::io("create the empty hooks dir", e))?;
    run(
        local(env, dir)
            .arg("init")
            .arg("--bare")
            .arg("--quiet")
            .arg(format!("--template={}", template.display()))
            .arg("--")
            .arg(dir),
        "git init",
    )?;
    // Settings that must hold for every later command on this mirror,
    // including a monthly `gc` run by hand.
    for (k, v) in [
        ("core.logAllRefUpdates", "always"),
        ("gc.reflogExpire", "never"),
        ("gc.reflogExpireUnreachable", "never"),
        ("gc.pruneExpire", "never"),
        ("gc.auto", "0"),
        ("uploadpack.allowAnySHA1InWant", "false"),
        ("uploadpack.allowReachableSHA1InWant", "false"),
        ("receive.denyNonFastForwards", "true"),
        ("receive.denyDeletes", "true"),
    ] {
        run(local(env, dir).args(["config", k, v]), "git config")?;
    }
    Ok(())
}

// Reading and moving refs after a fetch happens in-process with libgit2:
// on an incremental fetch these few operations would otherwise cost three
// or four git processes, as much as the fetch itself.

fn open(dir: &Path) -> Result<git2::Repository, PullError> {
    git2::Repository::open_bare(dir).map_err(|e| PullError::new(Reason::Store, format!("open {}: {e}", dir.display())))
}

fn g2(what: &str) -> impl FnOnce(git2::Error) -> PullError + '_ {
    move |e| PullError::new(Reason::Store, format!("{what}: {e}"))
}

/// Refs under `prefixes`, name → object id (direct target, as
/// `for-each-ref %(objectname)` shows it).
fn refs(_env: &GitEnv, dir: &Path, prefixes: &[&str]) -> Result<BTreeMap<String, String>, PullError> {
    let repo = open(dir)?;
    let mut out = BTreeMap::new();
    for r in repo.references().map_err(g2("list refs"))? {
        let r = r.map_err(g2("read a ref"))?;
        let (Ok(name), Some(oid)) = (r.name(), r.target()) else { continue };
        if prefixes.iter().any(|p| name.starts_with(p)) {
            out.insert(name.to_owned(), oid.to_string());
        }
    }
    Ok(out)
}

fn is_ancestor(_env: &GitEnv, dir: &Path, old: &str, new: &str) -> Result<bool, PullError> {
    let repo = open(dir)?;
    let (o, n) = (git2::Oid::from_str(old).map_err(g2("oid"))?, git2::Oid::from_str(new).map_err(g2("oid"))?);
    if o == n {
        return Ok(true);
    }
    repo.graph_descendant_of(n, o).map_err(g2("ancestry"))
}

/// One ref change of a promotion.
enum Change {
    Set(String, String),
    Delete(String),
}

/// The reflog message of a run's ref updates (the node's `restore --at`
/// reads the run back from it).
pub fn reflog_message(run: &str) -> String {
    format!("ferry: mirror run {run}")
}

/// Apply `changes` in one locked transaction, with reflog entries naming
/// `run`.
fn apply(dir: &Path, changes: &[Change], run: &str) -> Result<(), PullError> {
    let repo = open(dir)?;
    let sig = git2::Signature::now("ferry", "ferry@node").map_err(g2("signature"))?;
    let msg = reflog_message(run);
    let mut tx = repo.transaction().map_err(g2("ref transaction"))?;
    for c in changes {
        let (Change::Set(name, _) | Change::Delete(name)) = c;
        tx.lock_ref(name).map_err(g2("lock ref"))?;
    }
    for c in changes {
        match c {
            Change::Set(name, oid) => {
                let oid = git2::Oid::from_str(oid).map_err(g2("oid"))?;
                tx.set_target(name, oid, Some(&sig), &msg).map_err(g2("set ref"))?;
            }
            Change::Delete(name) => tx.remove(name).map_err(g2("delete ref"))?,
        }
    }
    tx.commit().map_err(g2("commit ref transaction"))
}

/// Mirror or incrementally fetch `job.url` into `job.mirror`.
pub fn mirror(job: &MirrorJob<'_>) -> Result<MirrorOutcome, PullError> {
    let start = Instant::now();
    let env = job.env;
    let exists = job.mirror.join("HEAD").is_file();
    let parent =
        job.mirror.parent().ok_or_else(|| PullError::new(Reason::Store, "mirror path has no parent".into()))?;
    std::fs::create_dir_all(parent).map_err(|e| PullError::io("create the mirror's directory", e))?;
    // A first mirror is built beside its final place and renamed in only
    // when complete, so a failed first fetch leaves nothing behind.
    let staging;
    let dir: &Path = if exists {
        job.mirror
    } else {
        let name = job.mirror.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        staging = parent.join(format!(".incoming-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        init_bare(env, &staging)?;
        &staging
    };
    let result = fetch_and_promote(job, dir);
    match (result, exists) {
        (Ok(mut out), false) => {
            std::fs::rename(dir, job.mirror).map_err(|e| {
                let _ = std::fs::remove_dir_all(dir);
                PullError::io("publish the new mirror", e)
            })?;
            let _ = ferry_durable::fsync_dir(parent);
            out.created = true;
            out.elapsed_ms = start.elapsed().as_millis();
            Ok(out)
        }
        (Ok(mut out), true) => {
            out.elapsed_ms = start.elapsed().as_millis();
            Ok(out)
        }
        (Err(e), false) => {
            let _ = std::fs::remove_dir_all(dir);
            Err(e)
        }
        (Err(e), true) => Err(e),
    }
}

fn pack_names(pack_dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(pack_dir).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default()
}

/// Bytes and objects of the packs that appeared since `before` (complete
/// packs and git's `tmp_pack_*` files still being written).
fn new_pack_usage(pack_dir: &Path, before: &BTreeSet<OsString>) -> (u64, u64) {
    let (mut bytes, mut objects) = (0u64, 0u64);
    for name in pack_names(pack_dir) {
        if before.contains(&name) {
            continue;
        }
        let p = pack_dir.join(&name);
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        bytes += md.len();
        let n = name.to_string_lossy();
        if n.starts_with("tmp_pack_") || n.ends_with(".pack") {
            // Pack header: "PACK", version, object count (big-endian).
            let mut head = [0u8; 12];
            if let Ok(mut f) = std::fs::File::open(&p)
                && std::io::Read::read_exact(&mut f, &mut head).is_ok()
                && &head[..4] == b"PACK"
            {
                objects += u64::from(u32::from_be_bytes([head[8], head[9], head[10], head[11]]));
            }
        }
    }
    (bytes, objects)
}

fn over_limits(limits: &FetchLimits, bytes: u64, objects: u64) -> Option<(Reason, String)> {
    if let Some(max) = limits.max_bytes
        && bytes > max
    {
        return Some((limits.bytes_reason.unwrap_or(Reason::FetchLimit), format!("fetch exceeded {max} bytes")));
    }
    if let Some(max) = limits.max_objects
        && objects > max
    {
        return Some((Reason::FetchLimit, format!("fetch brings {objects} objects, more than the limit of {max}")));
    }
    None
}

/// Remove every pack file a failed fetch left and put the incoming refs
/// back as they were.
fn undo_fetch(env: &GitEnv, dir: &Path, before: &BTreeSet<OsString>, incoming_before: &BTreeMap<String, String>) {
    let pack_dir = dir.join("objects/pack");
    for name in pack_names(&pack_dir) {
        if !before.contains(&name) {
            let _ = std::fs::remove_file(pack_dir.join(name));
        }
    }
    if let Ok(now) = refs(env, dir, &["refs/ferry/incoming/"]) {
        let mut tx = String::new();
        for (r, oid) in &now {
            match incoming_before.get(r) {
                Some(old) if old == oid => {}
                Some(old) => tx.push_str(&format!("update {r} {old}\n")),
                None => tx.push_str(&format!("delete {r}\n")),
            }
        }
        for (r, old) in incoming_before {
            if !now.contains_key(r) {
                tx.push_str(&format!("create {r} {old}\n"));
            }
        }
        if !tx.is_empty() {
            let _ = local(env, dir).args(["update-ref", "--stdin"]).stdin_bytes(tx.into_bytes()).run();
        }
    }
}

/// `refs/heads/x` → `refs/ferry/incoming/heads/x`.
fn incoming_name(r: &str) -> String {
    format!("refs/ferry/incoming/{}", r.trim_start_matches("refs/"))
}

/// Time left until `deadline` (at least a millisecond, so a run started
/// after it is killed at once and reported as the timeout it is).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

/// The remote's branches and tags, listed over the fetch's own transport
/// and within the job's deadline; refused here when over a limit.
fn ls_remote(job: &MirrorJob<'_>, dir: &Path, url: &str, deadline: Instant) -> Result<advert::Advertised, PullError> {
    let cmd = git_base(job.env, job.url.scheme, job.ssh_command)
        .arg(format!("--git-dir={}", dir.display()))
        .args(["ls-remote", "--quiet", "--refs", "--heads", "--tags", "--"])
        .arg(url)
        .timeout(left(deadline))
        .die_with_parent();
    advert::list(cmd, job.limits.max_refs)
}

/// State of the mirror before a fetch, to check it against and to put
/// back if the fetch fails.
struct Before {
    packs: BTreeSet<OsString>,
    incoming: BTreeMap<String, String>,
    shallow: bool,
}

/// Fetch the client's heads and tags into `refs/ferry/incoming/*`, then
/// check that the fetch is whole: within the byte and object limits, every
/// advertised ref where the remote advertised it, and the mirror not made
/// shallow. Any failure removes what the fetch added.
fn fetch(
    job: &MirrorJob<'_>,
    dir: &Path,
    url: &str,
    deadline: Instant,
    listed: Option<&advert::Advertised>,
    before: &Before,
) -> Result<(), PullError> {
    let env = job.env;
    // Over ssh the guard checks the advertisement in this connection and
    // records it; the refs were listed beforehand otherwise.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let guarded = match (listed, &env.ssh_guard, job.ssh_command) {
        (None, Some(g), Some(ssh)) => {
            let record = g.record_dir.join(format!(
                "advert-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let max = job.limits.max_refs.map(|n| format!(" --max-refs {n}")).unwrap_or_default();
            let command = format!(
                "{} git-ssh-guard{max} --record {} -- {ssh}",
                shell_quote(&g.program.to_string_lossy()),
                shell_quote(&record.to_string_lossy())
            );
            Some((record, command))
        }
        _ => None,
    };
    let ssh_command = guarded.as_ref().map(|(_, c)| c.as_str()).or(job.ssh_command);
    let pack_dir = dir.join("objects/pack");
    let limits = job.limits.clone();
    let stop_reason = std::sync::Arc::new(std::sync::Mutex::new(None));
    let watch = {
        let (pack_dir, packs, limits, stop_reason) =
            (pack_dir.clone(), before.packs.clone(), limits.clone(), stop_reason.clone());
        move || {
            let (bytes, objects) = new_pack_usage(&pack_dir, &packs);
            let over = over_limits(&limits, bytes, objects)?;
            let msg = over.1.clone();
            *stop_reason.lock().expect("not poisoned") = Some(over);
            Some(msg)
        }
    };
    let cmd = git_base(env, job.url.scheme, ssh_command)
        .arg(format!("--git-dir={}", dir.display()))
        .args(["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", "--prune"])
        .arg("--")
        .arg(url)
        .arg("+refs/heads/*:refs/ferry/incoming/heads/*")
        .arg("+refs/tags/*:refs/ferry/incoming/tags/*")
        .timeout(left(deadline))
        .watch(Duration::from_millis(200), watch)
        .die_with_parent();
    let t = Instant::now();
    let fetched = run(cmd, "git fetch");
    tracing::debug!(fetch_us = t.elapsed().as_micros() as u64, "git fetch done");
    let undo = || {
        if !before.shallow {
            let _ = std::fs::remove_file(dir.join("shallow"));
        }
        undo_fetch(env, dir, &before.packs, &before.incoming);
    };
    let recorded = guarded.as_ref().map(|(record, _)| {
        let r = advert::read_record(record);
        let _ = std::fs::remove_file(record);
        r
    });
    if let Some(Some(advert::Recorded::Refused(e))) = recorded {
        undo();
        return Err(e);
    }
    let output = match fetched {
        Ok(o) => o,
        Err(e) => {
            undo();
            if let Some((reason, msg)) = stop_reason.lock().expect("not poisoned").take() {
                return Err(PullError::new(reason, format!("{msg}; the partial fetch was deleted")));
            }
            return Err(e);
        }
    };
    let advertised = match (listed, recorded) {
        (Some(l), _) => l.clone(),
        (None, Some(Some(advert::Recorded::Refs(r)))) => r,
        _ => {
            undo();
            return Err(PullError::new(
                Reason::Internal,
                "the fetch succeeded but its ref advertisement was not recorded, so it cannot be checked; nothing was kept"
                    .into(),
            ));
        }
    };
    let (bytes, objects) = new_pack_usage(&pack_dir, &before.packs);
    if let Some((reason, msg)) = over_limits(&limits, bytes, objects) {
        undo();
        return Err(PullError::new(reason, format!("{msg}; the fetch was deleted")));
    }
    // git fetch exits 0 when it rejects a ref (from a shallow repository:
    // "shallow roots are not allowed to be updated"), so what arrived is
    // compared with what was advertised. A ref the fetch did move was
    // moved by a push in between, not left behind.
    let after = refs(env, dir, &["refs/ferry/incoming/"])?;
    let mut behind: Vec<&String> = advertised
        .iter()
        .filter(|(r, oid)| {
            let name = incoming_name(r);
            after.get(&name) != Some(*oid) && after.get(&name) == before.incoming.get(&name)
        })
        .map(|(r, _)| r)
        .collect();
    if !behind.is_empty() && listed.is_some() {
        // Listed in another connection: a ref created and deleted again
        // in between looks left behind too, so only refs the remote still
        // advertises as before count. (The guard's list is this
        // connection's own: no such race.)
        let again = ls_remote(job, dir, url, deadline).inspect_err(|_| undo())?;
        behind.retain(|r| again.get(*r) == advertised.get(*r));
    }
    let made_shallow = !before.shallow && dir.join("shallow").exists();
    if behind.is_empty() && !made_shallow {
        return Ok(());
    }
    undo();
    let mut shown: Vec<String> =
        behind.iter().take(5).map(|r| format!("{} at {}", ferry_text::escape(r, 80), &advertised[*r][..12])).collect();
    if behind.len() > 5 {
        shown.push(format!("and {} more", behind.len() - 5));
    }
    let what = if made_shallow {
        "the fetch would have made the mirror shallow".to_owned()
    } else {
        format!(
            "git fetch left {} of the {} advertised branches and tags behind ({})",
            behind.len(),
            advertised.len(),
            shown.join(", ")
        )
    };
    let said = failure::one_line(&output.stderr, 400);
    let why = if made_shallow || said.contains("shallow") {
        "the client's repository is shallow"
    } else {
        "git did not take them (see what it said)"
    };
    Err(PullError::new(
        Reason::FetchIncomplete,
        format!("{what}; git said: \"{said}\"; {why}; the mirror was left as it was"),
    ))
}

fn fetch_and_promote(job: &MirrorJob<'_>, dir: &Path) -> Result<MirrorOutcome, PullError> {
    let env = job.env;
    let deadline = Instant::now() + env.timeout;
    let url = job.url.to_url_string();
    let before = Before {
        packs: pack_names(&dir.join("objects/pack")),
        incoming: refs(env, dir, &["refs/ferry/incoming/"])?,
        shallow: dir.join("shallow").exists(),
    };
    // Limits before work: the ref count and ref names are checked on the
    // advertisement before the fetch writes anything — by the guard inside
    // the fetch's connection, else by listing the refs first.
    let listed = if job.ssh_command.is_some() && env.ssh_guard.is_some() {
        None
    } else {
        let t = Instant::now();
        let l = ls_remote(job, dir, &url, deadline)?;
        tracing::debug!(ls_remote_us = t.elapsed().as_micros() as u64, refs = l.len(), "git ls-remote done");
        Some(l)
    };
    // Listed and nothing new: the fetch (its second connection) is skipped.
    let unchanged = listed.as_ref().is_some_and(|l| {
        l.len() == before.incoming.len() && l.iter().all(|(r, oid)| before.incoming.get(&incoming_name(r)) == Some(oid))
    });
    if !unchanged {
        fetch(job, dir, &url, deadline, listed.as_ref(), &before)?;
    }
    let limits = &job.limits;
    let all = refs(env, dir, &["refs/ferry/incoming/", "refs/heads/", "refs/tags/", "refs/backup/"])?;
    let (backups, all): (BTreeMap<_, _>, BTreeMap<_, _>) =
        all.into_iter().partition(|(r, _)| r.starts_with("refs/backup/"));
    let (incoming, current): (BTreeMap<_, _>, BTreeMap<_, _>) =
        all.into_iter().partition(|(r, _)| r.starts_with("refs/ferry/incoming/"));
    // The listing was within the limit; refs pushed between it and the
    // fetch may not be.
    if let Some(max) = limits.max_refs
        && incoming.len() as u64 > max
    {
        undo_fetch(env, dir, &before.packs, &before.incoming);
        return Err(PullError::new(
            Reason::FetchLimit,
            format!(
                "the repository has {} branches and tags, more than the limit of {max}; the fetch was deleted",
                incoming.len()
            ),
        ));
    }
    let mut out = MirrorOutcome::default();
    // Unique per mirror: a second run within the same second must not
    // overwrite the first one's copies.
    let mut run = job.run_id.to_owned();
    let mut n = 1;
    while backups.keys().any(|r| r.starts_with(&format!("refs/backup/{run}/"))) {
        n += 1;
        run = format!("{}-{n}", job.run_id);
    }
    let backup_root = format!("refs/backup/{run}/");
    let mut tx: Vec<Change> = Vec::new();
    let mut wanted = BTreeMap::new();
    for (r, oid) in &incoming {
        let local_ref = format!("refs/{}", r.trim_start_matches("refs/ferry/incoming/"));
        wanted.insert(local_ref, oid.clone());
    }
    for (r, new) in &wanted {
        match current.get(r) {
            Some(old) if old == new => {}
            Some(old) => {
                let ff = r.starts_with("refs/heads/") && is_ancestor(env, dir, old, new)?;
                if !ff {
                    tx.push(Change::Set(format!("{backup_root}{}", r.trim_start_matches("refs/")), old.clone()));
                    out.forced.push(r.clone());
                }
                tx.push(Change::Set(r.clone(), new.clone()));
                out.updated.push(r.clone());
            }
            None => {
                tx.push(Change::Set(r.clone(), new.clone()));
                out.updated.push(r.clone());
            }
        }
    }
    for (r, old) in &current {
        if !wanted.contains_key(r) {
            tx.push(Change::Set(format!("{backup_root}{}", r.trim_start_matches("refs/")), old.clone()));
            tx.push(Change::Delete(r.clone()));
            out.deleted.push(r.clone());
        }
    }
    if !out.forced.is_empty() || !out.deleted.is_empty() {
        out.saved_under = Some(backup_root.trim_end_matches('/').to_owned());
    }
    if !tx.is_empty() {
        apply(dir, &tx, &run)?;
    }
    fix_head(env, dir, &wanted)?;
    Ok(out)
}

/// Point HEAD at a branch that exists (main, master, else the first), so
/// clones and cgit show something sensible.
fn fix_head(env: &GitEnv, dir: &Path, heads: &BTreeMap<String, String>) -> Result<(), PullError> {
    let head = std::fs::read_to_string(dir.join("HEAD")).unwrap_or_default();
    let current = head.trim().strip_prefix("ref: ").unwrap_or("").to_owned();
    if heads.contains_key(&current) {
        return Ok(());
    }
    let pick = ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|r| heads.contains_key(*r))
        .map(str::to_owned)
        .or_else(|| heads.keys().find(|r| r.starts_with("refs/heads/")).cloned());
    if let Some(r) = pick {
        run(local(env, dir).args(["symbolic-ref", "HEAD"]).arg(&r), "git symbolic-ref")?;
    }
    Ok(())
}
