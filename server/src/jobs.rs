//! Node jobs: validated requests turned into pulls.

use std::path::{Path, PathBuf};

use ferry_gitosis::enroll::ClientEnrollment;
use ferry_pull::git::{GitEnv, MirrorJob};
use ferry_request::{GitRequest, GitScheme, Reason, SftpRequest};

use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::events;
use crate::validate::{self, Refusal};

/// A node-assigned run id (UTC time of the job); never from the client.
pub fn run_id() -> String {
    jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// `data/<client>`, created if needed, refusing any symlink on the way
/// (SECURITY C7, AC-11): everything the node writes for a client lands
/// below this directory.
pub fn client_dir(cfg: &NodeConfig, client: &str) -> Result<PathBuf, Refusal> {
    let root = cfg.data_dir();
    std::fs::create_dir_all(&root).map_err(|e| io_refusal("create the data directory", e))?;
    let dir = root.join(client);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_dir() => Ok(dir),
        Ok(_) => Err(Refusal::new(Reason::Store, format!("{} is not a plain directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&dir).map_err(|e| io_refusal("create the client's data directory", e))?;
            Ok(dir)
        }
        Err(e) => Err(io_refusal("inspect the client's data directory", e)),
    }
}

/// Create `base/<segments…>` directory by directory with `lstat` checks, so
/// no existing symlink can redirect a write outside `base`
/// ([`crate::store::safe_subdir`]), as a refusal with its reason.
pub fn subdir(base: &Path, segments: &[&str]) -> Result<PathBuf, Refusal> {
    crate::store::safe_subdir(base, segments).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => Refusal::new(Reason::ReqName, e.to_string()),
        _ => io_refusal("create a storage directory", e),
    })
}

/// Remove what a killed job left in `data/<client>` (SIGKILL, power cut:
/// no destructor ran, no lock file was released): `.tmp-*` downloads and
/// the then empty run directories of sftp pulls; `.incoming-*` staging
/// directories of first mirrors; and in mirrors git's temporary packs
/// (`objects/pack/tmp_*`, which would count against the quota for ever)
/// and its `*.lock` files (git never removes another process's lock, so
/// one left by a killed fetch would fail every later fetch). Call with the
/// client's pool lock held: every job and `gc` that writes there holds it,
/// so nothing found here is in use. With an S3 store a stored artifact
/// never stays on disk, so any file in an sftp run directory is the
/// download of a job killed before its upload ended: it goes too (the
/// request runs again).
pub fn sweep_leftovers(cfg: &NodeConfig, client: &str) -> usize {
    let cdir = cfg.client_data(client);
    let off_disk = cfg.store.kind == "s3";
    let mut removed = 0;
    let Ok(top) = std::fs::read_dir(&cdir) else { return 0 };
    for src in top.flatten() {
        if !src.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if src.file_name() == "git" {
            removed += sweep_git(&src.path());
            continue;
        }
        // `store/` and `trees/` hold snapshot trees, on disk whatever the store.
        let downloads_only = off_disk && !matches!(src.file_name().to_str(), Some("store" | "trees"));
        for run in std::fs::read_dir(src.path()).into_iter().flatten().flatten() {
            if !run.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(run.path()).into_iter().flatten().flatten() {
                if (downloads_only || f.file_name().to_string_lossy().starts_with(ferry_durable::TMP_PREFIX))
                    && f.file_type().is_ok_and(|t| t.is_file())
                    && std::fs::remove_file(f.path()).is_ok()
                {
                    removed += 1;
                }
            }
            // Only an empty directory goes: a stored artifact never does.
            if std::fs::remove_dir(run.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        events::record(
            &cfg.events_log(),
            "warn",
            Some(client),
            "leftovers_removed",
            None,
            None,
            &format!("{removed} temporary entries of interrupted jobs removed"),
        );
    }
    removed
}

/// Below `dir` (`data/<client>/git/…`): staging mirrors, and in each mirror
/// temporary packs and lock files.
fn sweep_git(dir: &Path) -> usize {
    let mut removed = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(".incoming-") {
            if std::fs::remove_dir_all(&p).is_ok() {
                removed += 1;
            }
        } else if p.join("HEAD").exists() {
            removed += sweep_mirror(&p);
        } else {
            removed += sweep_git(&p);
        }
    }
    removed
}

fn sweep_mirror(mirror: &Path) -> usize {
    let mut stale = Vec::new();
    for e in std::fs::read_dir(mirror.join("objects/pack")).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("tmp_") {
            stale.push(e.path());
        }
    }
    stale.extend(ferry_durable::git_lock_files(mirror));
    stale.into_iter().filter(|p| std::fs::remove_file(p).is_ok()).count()
}

/// The client's storage quota (enrollment, else the node default; `None`:
/// unlimited, which gitosis.conf spells `quota = unlimited`).
pub fn quota(cfg: &NodeConfig, client: &ClientEnrollment) -> Option<u64> {
    match client.quota_bytes {
        Some(u64::MAX) => None,
        Some(q) => Some(q),
        None => cfg.default_quota(),
    }
}

/// The client's largest artifact (enrollment, else the node default;
/// `None`: unlimited).
pub fn max_artifact(cfg: &NodeConfig, client: &ClientEnrollment) -> Option<u64> {
    match client.max_artifact_bytes {
        Some(u64::MAX) => None,
        Some(m) => Some(m),
        None => cfg.default_max_artifact(),
    }
}

/// Bytes this client may still add, or `E_QUOTA` if none.
pub fn quota_left(cfg: &NodeConfig, client: &ClientEnrollment, cdir: &Path) -> Result<Option<u64>, Refusal> {
    let Some(q) = quota(cfg, client) else { return Ok(None) };
    // Artifacts in object storage count as much as those on disk.
    let remote = crate::store::open(cfg)
        .and_then(|s| s.remote_bytes(&client.name))
        .map_err(|e| Refusal::new(Reason::Store, format!("{e:#}")))?;
    let used = crate::store::used_bytes(cdir).saturating_add(remote);
    if used >= q {
        return Err(Refusal::new(Reason::Quota, format!("the client stores {used} bytes, its quota is {q}")));
    }
    Ok(Some(q - used))
}

pub fn io_refusal(what: &str, e: std::io::Error) -> Refusal {
    let reason = if ferry_durable::is_disk_full(&e) { Reason::DiskFull } else { Reason::Store };
    Refusal::new(reason, format!("{what}: {e}"))
}

/// The ssh command git uses to pull from `client` (SECURITY C3, GU-20): a
/// node-owned constant per client — pinned host key under an alias, the
/// client's own pull key, no agent, no forwarding, no proxy, no local
/// command; one multiplexed connection per client and destination.
/// The sftp endpoint of an enrolled client (pinned host key under its
/// alias, the node's pull key, the shared control dir, made here) and the
/// job's deadline: one place for the sftp download and the tree pull.
pub fn sftp_endpoint(
    cfg: &NodeConfig,
    client: &ClientEnrollment,
) -> Result<(ferry_pull::sftp::SftpEndpoint, std::time::Duration), Refusal> {
    let endpoint = ferry_pull::sftp::SftpEndpoint {
        ssh: cfg.ssh.clone(),
        host: client.address.as_str().to_owned(),
        port: client.port,
        user: client.user.as_str().to_owned(),
        known_hosts: cfg.known_hosts(&client.name),
        host_key_alias: format!("ferry-client-{}", client.name),
        identity: cfg.pull_key(&client.name),
        control_dir: cfg.control_dir(),
        connect_timeout: std::time::Duration::from_secs(20),
    };
    std::fs::create_dir_all(cfg.control_dir()).map_err(|e| io_refusal("create the ssh control dir", e))?;
    let timeout =
        client.job_timeout_secs.map(std::time::Duration::from_secs).unwrap_or(cfg.duration(&cfg.limits.job_timeout));
    Ok((endpoint, timeout))
}

pub fn ssh_command(cfg: &NodeConfig, client: &ClientEnrollment) -> String {
    let client_name = &client.name;
    let opts = ferry_run::ssh::SshOptions::new(
        cfg.known_hosts(client_name),
        format!("ferry-client-{client_name}"),
        cfg.pull_key(client_name),
    )
    .connect_timeout(std::time::Duration::from_secs(20))
    .multiplex(git_control_path(cfg, client));
    // The node's paths come from its TOML and are UTF-8 there; a lossy
    // line would only fail to connect, never run something else.
    opts.command_line(&cfg.ssh).unwrap_or_else(|| {
        let lossy = |p: &Path| ferry_run::ssh::shell_word(&p.to_string_lossy());
        format!("{} {}", lossy(&cfg.ssh), opts.args().iter().map(|a| lossy(Path::new(a))).collect::<Vec<_>>().join(" "))
    })
}

/// The socket of the multiplexed ssh connection git pulls from `client`
/// use: one per client and enrolled endpoint, or none when the path would
/// not fit in a unix socket name ([`ferry_run::ssh::control_socket`]).
fn git_control_path(cfg: &NodeConfig, client: &ClientEnrollment) -> Option<PathBuf> {
    let sock = cfg.control_dir().join(ferry_durable::short_hash(
        format!("{}\0{}\0{}\0{}", client.name, client.address, client.port, client.user).as_bytes(),
    ));
    ferry_run::ssh::control_socket(sock)
}

/// Stop the client's multiplexed ssh master. After a fetch was killed at
/// its deadline the master (outside the killed process group) would keep
/// carrying the stalled session for as long as the client wants (RE-03).
fn close_git_master(cfg: &NodeConfig, client: &ClientEnrollment) {
    let Some(sock) = git_control_path(cfg, client) else { return };
    if std::fs::symlink_metadata(&sock).is_err() {
        return;
    }
    let _ = ferry_run::Cmd::new(&cfg.ssh)
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("ControlPath={}", sock.display()))
        .args(["-O", "exit", "--"])
        .arg(client.address.as_str())
        .timeout(std::time::Duration::from_secs(5))
        .run();
}

/// Where `ferry-node git-ssh-guard` leaves what a fetch's connection
/// advertised (node-owned; one small file per fetch, removed once read).
fn git_record_dir(cfg: &NodeConfig) -> PathBuf {
    cfg.state_dir().join("git-records")
}

/// The `git` module: mirror the repository, append-only.
pub fn git(cfg: &NodeConfig, client: &ClientEnrollment, id: &str, req: &GitRequest) -> Result<String, Refusal> {
    let t0 = std::time::Instant::now();
    let target = validate::git(req, client)?;
    let cdir = client_dir(cfg, &client.name)?;
    check_mirror_case(&cdir, &target.storage)?;
    let segs: Vec<&str> = target.storage.iter().map(String::as_str).collect();
    let (leaf, parents) = segs.split_last().expect("storage has a leaf");
    let mut parent_segs = vec!["git"];
    parent_segs.extend_from_slice(parents);
    let parent = subdir(&cdir, &parent_segs)?;
    let mirror = parent.join(leaf);
    if std::fs::symlink_metadata(&mirror).is_ok_and(|m| !m.file_type().is_dir()) {
        return Err(Refusal::new(Reason::Store, format!("{} is not a directory", mirror.display())));
    }
    let url = target.url.to_url_string();
    // One client URL per storage name: a second repository that would map
    // to the same name is a conflict, not an overwrite.
    let origin_file = mirror.join("ferry-origin");
    if let Ok(old) = std::fs::read_to_string(&origin_file)
        && !target.same_origin(old.trim())
    {
        return Err(Refusal::new(
            Reason::ReqConflict,
            format!("{} already mirrors {} (not {url})", target.storage.join("/"), old.trim()),
        ));
    }
    let empty = cfg.empty_dir();
    std::fs::create_dir_all(empty.join("hooks")).map_err(|e| io_refusal("create the empty dir", e))?;
    let env = GitEnv {
        git: cfg.git.clone(),
        empty_dir: empty,
        data_root: cfg.data_dir(),
        timeout: client
            .job_timeout_secs
            .map(std::time::Duration::from_secs)
            .unwrap_or(cfg.duration(&cfg.limits.job_timeout)),
        fsck_ignore: cfg.git_fsck_ignore.clone(),
        ssh_guard: Some(ferry_pull::git::SshGuard { program: cfg.program(), record_dir: git_record_dir(cfg) }),
    };
    let ssh = (client.git_scheme == GitScheme::Ssh).then(|| ssh_command(cfg, client));
    if ssh.is_some() {
        std::fs::create_dir_all(cfg.control_dir()).map_err(|e| io_refusal("create the ssh control dir", e))?;
        std::fs::create_dir_all(git_record_dir(cfg)).map_err(|e| io_refusal("create the git record dir", e))?;
    }
    let run = run_id();
    let left = quota_left(cfg, client, &cdir)?;
    tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "git job: validated, quota checked");
    let limits = ferry_pull::git::FetchLimits {
        max_bytes: left,
        bytes_reason: Some(Reason::Quota),
        max_objects: client.max_objects,
        max_refs: Some(cfg.limits.max_refs).filter(|n| *n > 0),
    };
    let out = ferry_pull::git::mirror(&MirrorJob {
        url: &target.url,
        mirror: &mirror,
        run_id: &run,
        ssh_command: ssh.as_deref(),
        env: &env,
        limits,
    })
    .map_err(|e| {
        if e.reason == Reason::FetchTimeout && ssh.is_some() {
            close_git_master(cfg, client);
        }
        Refusal::new(e.reason, e.message)
    })?;
    tracing::debug!("git job: mirrored");
    let _ = std::fs::write(mirror.join("ferry-fetched"), format!("{}\n", jiff::Timestamp::now()));
    if out.created {
        ferry_durable::write_synced(&mirror, "ferry-origin", format!("{url}\n").as_bytes())
            .map_err(|e| io_refusal("record the mirror's origin", e))?;
        let _ = std::fs::write(mirror.join("description"), format!("{} backup of {url}\n", client.name));
    }
    if !out.forced.is_empty() || !out.deleted.is_empty() {
        events::record(
            &cfg.events_log(),
            "warn",
            Some(&client.name),
            "history_rewritten",
            None,
            Some(id),
            &format!(
                "{}: the client rewrote [{}] and deleted [{}]; the old commits are kept under {}",
                target.storage.join("/"),
                ref_list(&out.forced),
                ref_list(&out.deleted),
                out.saved_under.as_deref().map(|s| ferry_text::escape(s, 200)).unwrap_or_else(|| "-".into())
            ),
        );
    }
    Ok(format!(
        "git {url} -> git/{}: {}{} refs updated in {} ms",
        target.storage.join("/"),
        if out.created { "new mirror, " } else { "" },
        out.updated.len(),
        out.elapsed_ms
    ))
}

/// Ref names chosen by the client, each escaped once, comma-separated.
fn ref_list(refs: &[String]) -> String {
    refs.iter().map(|r| ferry_text::escape(r, 200)).collect::<Vec<_>>().join(", ")
}

/// `E_REQ_NAME_CASE` for `what` (`source trac`) beside `existing`.
fn case_refusal(what: &str, existing: &str) -> Refusal {
    Refusal::new(
        Reason::ReqNameCase,
        format!(
            "{what} differs only in letter case from {existing}, which this client already stores; \
             keep the stored spelling or choose another name"
        ),
    )
}

/// Each storage segment of a mirror below `data/<client>/git/` checked
/// against what is there: no segment may differ only in case from an
/// existing one at its level.
fn check_mirror_case(cdir: &Path, storage: &[String]) -> Result<(), Refusal> {
    let mut dir = cdir.join("git");
    for seg in storage {
        if let Some(existing) = crate::store::case_twin(&dir, seg) {
            let rel = dir.strip_prefix(cdir).unwrap_or(&dir).join(&existing);
            return Err(case_refusal(&format!("repository path segment {seg}"), &rel.display().to_string()));
        }
        dir.push(seg);
    }
    Ok(())
}

/// The `sftp` module: download the artifact into
/// `data/<client>/<source>/<received>/<file>`, verified, with a digest
/// sidecar, and record it in the catalog. Stored artifacts are immutable:
/// the same source and client timestamp with another digest is a conflict,
/// never an overwrite (RP-12); an identical duplicate is a no-op.
pub fn sftp(
    cfg: &NodeConfig,
    catalog: &dyn Catalog,
    client: &ClientEnrollment,
    id: &str,
    req: &SftpRequest,
) -> Result<String, Refusal> {
    let rel = validate::sftp_endpoint(req, client)?;
    let source = req.source.as_str();
    // The grammar refuses reserved names already; checked again here because
    // this is where the name becomes a directory.
    if ferry_request::is_reserved_source(source) {
        return Err(Refusal::new(Reason::ReqNameReserved, format!("source name {source} is reserved")));
    }
    let file_name = rel.last().expect("non-empty").clone();
    if !ferry_text::is_safe_token(&file_name) {
        return Err(Refusal::new(Reason::ReqName, "the artifact's file name cannot be a storage name"));
    }
    // The client's timestamp is metadata, but it must be plausible (RP-10):
    // not in the future beyond the allowed skew, not older than a year.
    let now = jiff::Timestamp::now().as_second();
    let stamp = req.stamp.to_unix();
    let skew = cfg.duration(&cfg.limits.clock_skew).as_secs() as i64;
    if stamp > now + skew || stamp < now - 366 * 86400 {
        return Err(Refusal::new(
            Reason::ReqTimestamp,
            format!("timestamp {} is outside the accepted window", req.stamp),
        ));
    }
    let max_artifact = max_artifact(cfg, client);
    if let Some(max) = max_artifact
        && req.size > max
    {
        return Err(Refusal::new(
            Reason::FetchLimit,
            format!("artifact of {} bytes exceeds the limit of {max}", req.size),
        ));
    }
    let cdir = client_dir(cfg, &client.name)?;
    if let Some(left) = quota_left(cfg, client, &cdir)?
        && req.size > left
    {
        return Err(Refusal::new(
            Reason::Quota,
            format!("artifact of {} bytes exceeds the {left} bytes left in the quota", req.size),
        ));
    }
    let sha_hex = req.sha256.to_hex();
    let stamp_s = req.stamp.to_string();
    if let Some(a) = catalog
        .same(&client.name, source, &stamp_s, &sha_hex)
        .map_err(|e| Refusal::new(Reason::Store, e.to_string()))?
    {
        return Ok(format!("sftp {source} {stamp_s}: already stored as {} (identical duplicate)", a.path));
    }
    if let Some(a) =
        catalog.by_stamp(&client.name, source, &stamp_s).map_err(|e| Refusal::new(Reason::Store, e.to_string()))?
    {
        return Err(Refusal::new(
            Reason::ReqConflict,
            format!(
                "{source} {stamp_s} is already stored with sha256 {}; stored artifacts are never replaced",
                a.sha256
            ),
        ));
    }
    // `Trac` beside a stored `trac` would share its directory on a
    // case-insensitive file system or object store: refused, whether the
    // twin is on disk or only in the catalog (its files purged).
    if let Some(existing) = crate::store::case_twin(&cdir, source) {
        return Err(case_refusal(&format!("source {source}"), &format!("source {existing}")));
    }
    if let Some(existing) =
        catalog.case_twin_source(&client.name, source).map_err(|e| Refusal::new(Reason::Store, e.to_string()))?
    {
        return Err(case_refusal(&format!("source {source}"), &format!("source {existing}")));
    }
    let source_dir = subdir(&cdir, &[source])?;
    let store = crate::store::open(cfg).map_err(store_refusal)?;
    // A scan killed between publishing this very download and recording it
    // left it in the store, uncatalogued; its request is being run again.
    // Record that artifact (it was verified before it was published, and
    // is hashed again here) instead of downloading a second copy beside it.
    if let Some(key) =
        unrecorded_download(store.as_ref(), catalog, &client.name, source, &file_name, req.size, &sha_hex)
    {
        let rel_path = key.rel_path();
        store
            .put(&key, &store.staging_dir(&key).map_err(store_refusal)?.join(&key.file), &sha_hex)
            .map_err(store_refusal)?;
        catalog
            .insert(&crate::catalog::Artifact {
                id: 0,
                client: client.name.clone(),
                source: source.to_owned(),
                module: crate::store::module_of(&file_name).to_owned(),
                received: key.received.clone(),
                stamp: stamp_s.clone(),
                path: rel_path.clone(),
                size: req.size,
                sha256: sha_hex,
                duration_ms: 0,
                request: id.to_owned(),
                node: cfg.name.clone(),
            })
            .map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
        return Ok(format!(
            "sftp {source} {stamp_s}: {} bytes already downloaded by an interrupted run, verified and recorded as {rel_path}",
            req.size
        ));
    }
    // Node receive time names the directory (retention orders by it).
    let mut received = run_id();
    let mut n = 1;
    while source_dir.join(&received).exists() {
        n += 1;
        received = format!("{}-{n}", run_id());
    }
    let key = crate::store::ArtifactKey {
        client: client.name.clone(),
        source: source.to_owned(),
        received: received.clone(),
        file: file_name.clone(),
    };
    subdir(&source_dir, &[&received])?;
    let dest = store.staging_dir(&key).map_err(store_refusal)?;
    let (endpoint, timeout) = sftp_endpoint(cfg, client)?;
    let job = ferry_pull::sftp::DownloadJob {
        endpoint: &endpoint,
        remote_path: req.url.path.as_str(),
        expected_size: req.size,
        expected_sha256: *req.sha256.as_bytes(),
        max_bytes: max_artifact.unwrap_or(u64::MAX).min(req.size),
        dest_dir: &dest,
        dest_name: &file_name,
        timeout,
        idle_timeout: std::time::Duration::from_secs(60),
        min_rate: cfg.min_rate(),
    };
    let got = match ferry_pull::sftp::download(&job) {
        Ok(g) => g,
        Err(e) => {
            // Nothing of a failed download stays: the module removed its
            // temporary file; remove the empty run directory too, and the
            // source's directory if this was its first artifact (remove_dir
            // only removes empty directories).
            let _ = std::fs::remove_dir(&dest);
            let _ = std::fs::remove_dir(&source_dir);
            return Err(Refusal::new(e.reason, e.message));
        }
    };
    ferry_durable::crash_point("sftp:after-publish");
    // Verified: the store makes it the artifact (for the node's own disk
    // the download already lies in place and this writes its sidecar).
    if let Err(e) = store.put(&key, &got.path, &sha_hex) {
        let remote = store.local_path(&key).as_deref() != Some(got.path.as_path());
        if remote {
            let _ = std::fs::remove_file(&got.path);
        }
        // The object store stopped answering during the upload (the probe
        // before the pull had passed): defer the request as a store found
        // down then is (back to RQ, one outage alert), not fail it.
        if remote
            && e.downcast_ref::<crate::store::crypt::KeyError>().is_none()
            && let crate::store::health::Gate::Down(why) = crate::store::health::gate(cfg)
        {
            return Err(Refusal::new(Reason::StoreDown, format!("{e:#}; {why}")));
        }
        return Err(store_refusal(e));
    }
    let rel_path = key.rel_path();
    let module = crate::store::module_of(&file_name);
    catalog
        .insert(&crate::catalog::Artifact {
            id: 0,
            client: client.name.clone(),
            source: source.to_owned(),
            module: module.to_owned(),
            received: received.clone(),
            stamp: stamp_s.clone(),
            path: rel_path.clone(),
            size: got.size,
            sha256: sha_hex,
            duration_ms: got.elapsed.as_millis() as u64,
            request: id.to_owned(),
            node: cfg.name.clone(),
        })
        .map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
    Ok(format!(
        "sftp {source} {stamp_s}: {} bytes verified and stored as {rel_path} in {} ms",
        got.size,
        got.elapsed.as_millis()
    ))
}

/// A complete artifact of `source` named `file_name` (size and SHA-256 as
/// requested) that the store holds and the catalog does not know.
fn unrecorded_download(
    store: &dyn crate::store::ArtifactStore,
    catalog: &dyn Catalog,
    client: &str,
    source: &str,
    file_name: &str,
    size: u64,
    sha_hex: &str,
) -> Option<crate::store::ArtifactKey> {
    let q = crate::catalog::Query {
        client: Some(client.to_owned()),
        source: Some(source.to_owned()),
        ..Default::default()
    };
    let recorded: std::collections::BTreeSet<String> = catalog.find(&q).ok()?.into_iter().map(|a| a.path).collect();
    let keys = store.list(Some(client)).ok()?;
    keys.into_iter().filter(|k| k.source == source && k.file == file_name && !recorded.contains(&k.rel_path())).find(
        |k| {
            store.stat(k).ok().flatten().is_some_and(|s| s.size == size)
                && store
                    .open(k)
                    .ok()
                    .and_then(|r| crate::verify::hash_reader(r, size, false, file_name).ok())
                    .is_some_and(|(n, h)| n == size && h == sha_hex)
        },
    )
}

/// A store failure as a refusal (disk full keeps its own reason).
fn store_refusal(e: anyhow::Error) -> Refusal {
    if e.downcast_ref::<crate::store::crypt::KeyError>().is_some() {
        return Refusal::new(Reason::StoreKey, format!("{e:#}"));
    }
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if ferry_durable::is_disk_full(io) => Refusal::new(Reason::DiskFull, format!("{e:#}")),
        _ => Refusal::new(Reason::Store, format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-jobs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Issue 16, point 4: a name differing only in case from a stored one.
    #[test]
    fn case_twins_are_found_and_refused() {
        let cdir = tmp("case");
        std::fs::create_dir_all(cdir.join("trac")).unwrap();
        std::fs::create_dir_all(cdir.join("git/team/app.git")).unwrap();
        assert_eq!(crate::store::case_twin(&cdir, "Trac").as_deref(), Some("trac"));
        assert_eq!(crate::store::case_twin(&cdir, "trac"), None, "the same name is no twin");
        assert_eq!(crate::store::case_twin(&cdir, "www"), None);
        let storage = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_mirror_case(&cdir, &storage(&["team", "app.git"])).is_ok());
        assert!(check_mirror_case(&cdir, &storage(&["team", "other.git"])).is_ok());
        let e = check_mirror_case(&cdir, &storage(&["Team", "app.git"])).unwrap_err();
        assert_eq!(e.reason, Reason::ReqNameCase);
        assert!(e.detail.contains("git/team"), "{}", e.detail);
        let e = check_mirror_case(&cdir, &storage(&["team", "App.git"])).unwrap_err();
        assert_eq!(e.reason, Reason::ReqNameCase);
        std::fs::remove_dir_all(&cdir).unwrap();
    }
}
