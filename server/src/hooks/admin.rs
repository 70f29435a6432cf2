//! The `gitosis-admin` repository's hooks: enrollment.
//!
//! Unlike gitosis (weakness W1), a new `gitosis.conf` is validated *before*
//! it becomes live: `pre-receive` refuses a push whose configuration or keys
//! do not validate, or that would leave nobody able to push the admin repo,
//! and tells the pusher every problem. `post-update` validates again (a
//! local push may bypass pre-receive), then activates: the live copy in
//! `state/enrolled/` is switched atomically (symlink swap), the git
//! account's authorized_keys is regenerated, and each enrolled client gets
//! its queue repo (with Ferry's hooks), pool, pinned host key and pull key.
//! Last, the web view's access files are rewritten (`crate::web`), so a
//! client's `web =` and the set of administrators take effect at once.
//! Removing a client revokes its key and its web view; its data and
//! history stay.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ferry_gitosis::access::{Mode, have_access};
use ferry_gitosis::conf::Config;
use ferry_gitosis::enroll::Enrollment;
use git2::{ObjectType, Oid, Repository, Tree};

use crate::config::NodeConfig;
use crate::events;

const BRANCH: &str = "refs/heads/master";
const ADMIN_REPO: &str = "gitosis-admin";
const MAX_CONF_BYTES: usize = 1024 * 1024;
const MAX_KEYFILE_BYTES: usize = 64 * 1024;

/// gitosis.conf and keydir/ read from a commit.
pub struct AdminTree {
    pub conf_bytes: Vec<u8>,
    pub keydir: BTreeMap<String, Vec<u8>>,
}

/// Read gitosis.conf and keydir/*.pub from `tree` (only regular blobs;
/// sizes checked before reading).
pub fn read_tree(repo: &Repository, tree: &Tree<'_>) -> anyhow::Result<AdminTree> {
    let odb = repo.odb()?;
    let conf = tree.get_name("gitosis.conf").context("the commit has no gitosis.conf")?;
    if conf.kind() != Some(ObjectType::Blob) || conf.filemode() & 0o170000 != 0o100000 {
        bail!("gitosis.conf must be a regular file");
    }
    let (size, _) = odb.read_header(conf.id())?;
    if size > MAX_CONF_BYTES {
        bail!("gitosis.conf is larger than 1 MiB");
    }
    let conf_bytes = repo.find_blob(conf.id())?.content().to_vec();
    let mut keydir = BTreeMap::new();
    if let Some(kd) = tree.get_name("keydir") {
        let kt = repo.find_tree(kd.id()).context("keydir must be a directory")?;
        for e in kt.iter() {
            let Ok(name) = e.name() else { continue };
            if name.starts_with('.') || !name.ends_with(".pub") {
                continue;
            }
            if e.kind() != Some(ObjectType::Blob) || e.filemode() & 0o170000 != 0o100000 {
                bail!("keydir/{} must be a regular file", ferry_text::escape(name, 100));
            }
            let (size, _) = odb.read_header(e.id())?;
            if size > MAX_KEYFILE_BYTES {
                bail!("keydir/{} is larger than 64 KiB", ferry_text::escape(name, 100));
            }
            keydir.insert(name.to_owned(), repo.find_blob(e.id())?.content().to_vec());
        }
    }
    Ok(AdminTree { conf_bytes, keydir })
}

/// Validate an admin tree: syntax, enrollment rules, no lock-out.
pub fn validate(t: &AdminTree, pusher: Option<&str>) -> Result<(Config, Enrollment), Vec<String>> {
    let conf = Config::parse(&t.conf_bytes).map_err(|e| vec![format!("E_ENROL_CONF: gitosis.conf: {e}")])?;
    let enrollment = Enrollment::build(&conf, &t.keydir)
        .map_err(|errs| errs.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>())?;
    let admins: Vec<&String> =
        enrollment.users.keys().filter(|u| have_access(&conf, u, Mode::Writable, ADMIN_REPO).is_some()).collect();
    if admins.is_empty() {
        return Err(vec![
            "E_ENROL_CONF: after this change no enrolled key could push gitosis-admin; nobody could repair the node remotely".into(),
        ]);
    }
    if let Some(p) = pusher
        && !admins.iter().any(|a| a.as_str() == p)
    {
        return Err(vec![format!(
            "E_ENROL_CONF: this change removes your own ({p}) write access to gitosis-admin; another admin must push it"
        )]);
    }
    Ok((conf, enrollment))
}

/// Client names that differ only in letter case from storage the node
/// already has for another name (a client removed earlier, or a rename
/// that changed only the case): on a case-insensitive file system or object
/// store they would share that client's queue repo, pool, keys and data.
/// Checked on the node's directories and the catalog; the pure rules
/// (reserved names, two enrolled names differing in case) are in
/// [`Enrollment::build`].
pub fn storage_conflicts(cfg: &NodeConfig, enrollment: &Enrollment) -> Vec<String> {
    let catalog = crate::catalog::open_existing(cfg).ok().flatten();
    let known_hosts = cfg.known_hosts("x");
    let places: [(PathBuf, &str, &str); 5] = [
        (cfg.data_dir(), "data/", ""),
        (cfg.pool_dir(), "pool/", ""),
        (cfg.repositories().join("queue"), "queue/", ".git"),
        (cfg.keys_dir(), "keys/", ""),
        (known_hosts.parent().map(Path::to_owned).unwrap_or_default(), "state/known_hosts/", ""),
    ];
    let mut out = Vec::new();
    for name in enrollment.clients.keys() {
        let mut found: Vec<String> = places
            .iter()
            .filter_map(|(dir, label, suffix)| {
                crate::store::case_twin(dir, &format!("{name}{suffix}")).map(|t| format!("{label}{t}"))
            })
            .collect();
        if let Some(t) = catalog.as_ref().and_then(|c| c.case_twin_client(name).ok().flatten()) {
            found.push(format!("catalog client {t}"));
        }
        if !found.is_empty() {
            out.push(format!(
                "E_ENROL_CONF: client '{name}' differs only in letter case from storage this node already has ({}); \
                 on a case-insensitive file system or object store they would be one; keep the stored spelling \
                 or move that storage away first",
                found.join(", ")
            ));
        }
    }
    out
}

/// A line for the pusher (relayed as `remote: ferry: …`); messages quote
/// client text escaped once already, sanitize only guards the rest.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "ferry: {}", ferry_text::sanitize(msg, 2000));
}

/// `pre-receive` of gitosis-admin.
pub fn pre_receive(cfg: &NodeConfig) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let repo = Repository::open_from_env()?;
    let pusher = std::env::var("FERRY_USER").ok();
    for line in std::io::stdin().lock().lines().take(64) {
        let line = line?;
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 3 || f[2] != BRANCH {
            continue; // other branches are never activated
        }
        if f[1] == Oid::ZERO_SHA1.to_string() {
            say("refusing to delete master of gitosis-admin");
            bail!("refused");
        }
        let commit = repo.find_commit(Oid::from_str(f[1])?)?;
        let checked = read_tree(&repo, &commit.tree()?)
            .map_err(|e| vec![format!("E_ENROL_CONF: {e:#}")])
            .and_then(|t| validate(&t, pusher.as_deref()))
            .and_then(|(_, enrollment)| {
                let conflicts = storage_conflicts(cfg, &enrollment);
                if conflicts.is_empty() { Ok(()) } else { Err(conflicts) }
            });
        if let Err(problems) = checked {
            say("gitosis.conf rejected; the previous enrollment stays in force:");
            for p in &problems {
                // Enrollment messages quote input escaped once already.
                say(&format!("  {}", ferry_text::sanitize(p, 400)));
            }
            events::record(
                &cfg.events_log(),
                "warn",
                None,
                "enrollment_refused",
                Some("E_ENROL_CONF"),
                None,
                &problems.join("; "),
            );
            bail!("refused");
        }
    }
    Ok(())
}

/// `post-update` of gitosis-admin: validate and activate master.
pub fn post_update(cfg: &NodeConfig, config_path: &Path) -> anyhow::Result<()> {
    match apply(cfg, config_path) {
        Ok(summary) => {
            say(&summary);
            Ok(())
        }
        Err(e) => {
            say(&format!("enrollment NOT applied; the previous one stays in force: {e:#}"));
            events::record(
                &cfg.events_log(),
                "error",
                None,
                "enrollment_failed",
                Some("E_ENROL_CONF"),
                None,
                &format!("{e:#}"),
            );
            Err(e)
        }
    }
}

/// Validate and activate the admin repo's master. Returns a summary.
pub fn apply(cfg: &NodeConfig, config_path: &Path) -> anyhow::Result<String> {
    let state = cfg.state_dir();
    std::fs::create_dir_all(&state)?;
    let _lock = ferry_durable::Lock::acquire_timeout(&state.join("admin.lock"), std::time::Duration::from_secs(120))?;
    let repo = Repository::open_bare(cfg.admin_repo())?;
    let oid = repo.refname_to_id(BRANCH).context("gitosis-admin has no master branch")?;
    let tree = read_tree(&repo, &repo.find_commit(oid)?.tree()?)?;
    let (conf, enrollment) = validate(&tree, None).map_err(|p| anyhow::anyhow!("{}", p.join("; ")))?;
    let conflicts = storage_conflicts(cfg, &enrollment);
    if !conflicts.is_empty() {
        bail!("{}", conflicts.join("; "));
    }

    activate_files(cfg, oid, &tree)?;
    let prev_clients = previous_clients(cfg);
    write_authorized_keys(cfg, config_path, &enrollment)?;
    let mut new_clients = Vec::new();
    for c in enrollment.clients.values() {
        if !prev_clients.contains(&c.name) {
            new_clients.push(c.name.clone());
        }
        setup_client(cfg, config_path, c)?;
    }
    write_descriptions(cfg, &conf);
    std::fs::write(state.join("enrolled-clients"), enrollment.clients.keys().cloned().collect::<Vec<_>>().join("\n"))?;
    for w in &enrollment.warnings {
        say(&format!("warning: {}", ferry_text::sanitize(w, 300)));
    }
    // The enrollment is live from here on; a web view that cannot follow
    // is closed, journaled and mailed by sync (fails closed), not undone.
    let web = match crate::web::sync(cfg) {
        Ok(_) => String::new(),
        Err(e) => {
            say(&format!("{:#}", e));
            "; the web view is CLOSED (E_WEB_SYNC)".to_owned()
        }
    };
    // git daemon export follows `daemon =` (a failure is reported, the
    // enrollment stays live; the next scan retries).
    if let Err(e) = crate::gitexport::sync(cfg) {
        say(&format!("git daemon export: {e:#}"));
    }
    let summary = format!(
        "enrollment {} applied: {} client(s), {} key user(s){}{web}",
        &oid.to_string()[..12],
        enrollment.clients.len(),
        enrollment.users.len(),
        if new_clients.is_empty() { String::new() } else { format!("; new: {}", new_clients.join(", ")) }
    );
    events::record(&cfg.events_log(), "info", None, "enrollment_applied", None, None, &summary);
    Ok(summary)
}

fn previous_clients(cfg: &NodeConfig) -> Vec<String> {
    std::fs::read_to_string(cfg.state_dir().join("enrolled-clients"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Write `state/enrolled-<commit>/` and switch the `state/enrolled`
/// symlink to it atomically; older generations but the previous are removed.
fn activate_files(cfg: &NodeConfig, oid: Oid, tree: &AdminTree) -> anyhow::Result<()> {
    let state = cfg.state_dir();
    let gen_name = format!("enrolled-{oid}");
    let gen_dir = state.join(&gen_name);
    if !gen_dir.exists() {
        let tmp = state.join(format!(".tmp-{gen_name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("keydir"))?;
        ferry_durable::write_synced(&tmp, "gitosis.conf", &tree.conf_bytes)?;
        for (name, data) in &tree.keydir {
            ferry_durable::write_synced(&tmp.join("keydir"), name, data)?;
        }
        ferry_durable::fsync_dir(&tmp)?;
        std::fs::rename(&tmp, &gen_dir)?;
    }
    let link = cfg.enrolled_dir();
    let old_target = std::fs::read_link(&link).ok();
    let tmp_link = state.join(format!(".tmp-enrolled-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&gen_name, &tmp_link)?;
    std::fs::rename(&tmp_link, &link)?;
    ferry_durable::fsync_dir(&state)?;
    // Keep the current and the previous generation only.
    for de in std::fs::read_dir(&state)?.flatten() {
        let n = de.file_name().to_string_lossy().into_owned();
        if n.starts_with("enrolled-")
            && n != "enrolled-clients"
            && n != gen_name
            && old_target.as_deref() != Some(Path::new(&n))
        {
            let _ = std::fs::remove_dir_all(de.path());
        }
    }
    Ok(())
}

fn write_authorized_keys(cfg: &NodeConfig, config_path: &Path, enrollment: &Enrollment) -> anyhow::Result<()> {
    let ak = cfg.authorized_keys();
    let dir = ak.parent().context("authorized_keys has no directory")?;
    std::fs::create_dir_all(dir)?;
    let existing = std::fs::read_to_string(&ak).unwrap_or_default();
    let prefix = cfg.self_command(config_path);
    let text =
        ferry_gitosis::authkeys::render(&existing, &enrollment.key_entries(), &|u| format!("{prefix} serve {u}"))
            .map_err(|e| anyhow::anyhow!("cannot write authorized_keys: {e}"))?;
    if text != existing {
        ferry_durable::write_synced_mode(
            dir,
            &ak.file_name().context("file")?.to_string_lossy(),
            text.as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

/// Create (idempotently) everything an enrolled client needs on the node.
fn setup_client(
    cfg: &NodeConfig,
    config_path: &Path,
    c: &ferry_gitosis::enroll::ClientEnrollment,
) -> anyhow::Result<()> {
    let repo = cfg.queue_repo(&c.name);
    crate::repos::ensure_bare(cfg, config_path, &repo, true)?;
    crate::pool::open_pool(cfg, &c.name)?;
    let kh = cfg.known_hosts(&c.name);
    let kh_dir = kh.parent().context("known_hosts dir")?;
    std::fs::create_dir_all(kh_dir)?;
    let line = format!("ferry-client-{} {}\n", c.name, c.host_key.to_line());
    if std::fs::read_to_string(&kh).ok().as_deref() != Some(line.as_str()) {
        ferry_durable::write_synced(kh_dir, &c.name, line.as_bytes())?;
    }
    ensure_key(&cfg.pull_key(&c.name), &format!("ferry-pull-{}@{}", c.name, cfg.name))?;
    Ok(())
}

/// Generate an ed25519 key pair at `path` if it does not exist.
pub fn ensure_key(path: &Path, comment: &str) -> anyhow::Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_owned());
    }
    let dir = path.parent().context("key has no directory")?;
    std::fs::create_dir_all(dir)?;
    // Two accounts: keys/ lets its group (the scan account) read.
    let key_mode = crate::layout::private_key_mode(dir.parent().unwrap_or(dir));
    {
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = if key_mode == 0o640 { 0o2750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))?;
    }
    ferry_run::Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .run_checked()
        .context("ssh-keygen failed")?;
    if key_mode != 0o600 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(key_mode))?;
    }
    Ok(path.to_owned())
}

/// gitosis step 5: `description` files for `[repo X]` sections whose
/// repository exists (names are checked like serve paths).
fn write_descriptions(cfg: &NodeConfig, conf: &Config) {
    for s in conf.sections() {
        let Some(name) = s.strip_prefix("repo ") else { continue };
        let Some(desc) = conf.get(s, "description").filter(|d| !d.is_empty()) else { continue };
        if !ferry_gitosis::serve::is_safe_relpath(name) {
            continue;
        }
        let dir = cfg.repositories().join(format!("{}.git", name.trim_end_matches(".git")));
        if dir.join("HEAD").is_file() {
            let _ = ferry_durable::write_synced(
                &dir,
                "description",
                format!("{}\n", ferry_text::escape(desc, 300)).as_bytes(),
            );
        }
    }
}
