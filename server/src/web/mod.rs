//! Who may browse what in the web view (cgit behind nginx): files the node
//! writes and the web server reads on every request, so enrolling a
//! client, changing `web =` or a password needs no web server reload.
//!
//! # Views
//!
//! * `/cgit/`: the administrators (every user who may push
//!   `gitosis-admin`) see every client's mirrors;
//! * `/c/<client>/…`: one client's own view, its mirrors only, at
//!   `/c/<client>/git/`. Its web user (the client's name) may open it when
//!   the client's `[ferry client]` section says `web = yes`; the
//!   administrators always may. The whole `/c/<client>/` prefix belongs to
//!   that client, so pages added later fall under the same rule.
//!
//! # Files, under `[web] dir` (default `<base_dir>/web`)
//!
//! ```text
//! current -> gen-<id>           switched by one rename: readers see one whole generation
//! gen-<id>/admin.htpasswd       administrators with a password
//! gen-<id>/cgitrc               the administrators' cgit (project-list + scan-path)
//! gen-<id>/projects             <client>/git of every enrolled client and every data/<client>/git found
//! gen-<id>/c/<client>/htpasswd  the administrators, and the client if web = yes (with a password)
//! gen-<id>/c/<client>/cgitrc    scan-path = data/<client>/git, virtual-root = /c/<client>/git/
//! ```
//!
//! nginx (`deploy/nginx-cgit.conf`) takes `<client>` from the first path
//! component *after* it has normalised the URL (`..`, `%2e`, `%2f`
//! resolved), so every spelling of another client's URL lands in that
//! client's location and its password file; a name that is not enrolled
//! has no file and gets the same 401 as a wrong password. cgit, started
//! with that client's cgitrc, knows only that client's repositories, so
//! nothing inside a view (`?url=`, paths) reaches another client's.
//!
//! Files are written 0640 and directories 0750: the web server reads them
//! through the group of the web directory, which the installer makes
//! setgid with the web server's group. When a generation cannot be
//! written the view fails closed: `current` is removed, so nobody gets in
//! until `ferry-node web sync` succeeds (`E_WEB_SYNC`).

pub mod passwd;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_gitosis::access::{Mode, have_access, strip_git_suffix};
use ferry_gitosis::conf::Config;
use ferry_gitosis::enroll::{ADMIN_REPO, Enrollment};
use ferry_gitosis::username::is_valid_client_name;
use serde::Serialize;

use crate::config::NodeConfig;

/// The shipped cgitrc, the template of every generated one.
const CGITRC_TEMPLATE: &str = include_str!("../../../deploy/cgitrc");
/// The symlink naming the live generation.
pub const CURRENT: &str = "current";
const GEN_PREFIX: &str = "gen-";
const TMP_PREFIX: &str = ".tmp-";

/// What the web view looks like after a sync.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The web directory.
    pub dir: String,
    /// The generation now live (`current` points to it).
    pub generation: String,
    /// The administrators, with whether each has a password.
    pub admins: Vec<WebUser>,
    /// One view per enrolled client.
    pub clients: Vec<ClientView>,
}

/// A web user.
#[derive(Debug, Serialize)]
pub struct WebUser {
    pub name: String,
    pub password: bool,
}

/// One client's view.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub client: String,
    /// The URL path of the view.
    pub path: String,
    /// `web = yes` in its `[ferry client]` section.
    pub web: bool,
    /// Who can log in there (a password is set): administrators and,
    /// with `web = yes`, the client.
    pub users: Vec<String>,
}

/// What a web user may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Every view.
    Admin,
    /// Its own view; `web` says whether the enrollment allows it yet.
    Client { web: bool },
}

/// The password store (`<state_dir>/web-passwords`).
pub fn store_path(cfg: &NodeConfig) -> PathBuf {
    cfg.state_dir().join("web-passwords")
}

/// A user is an administrator when it may push `gitosis-admin` itself
/// (the decision `serve` makes: `writable`, or gitosis' `writeable`
/// typo, not a `map` that sends the push elsewhere). Clients never are
/// (enrollment refuses that).
pub fn is_admin(conf: &Config, enrollment: &Enrollment, user: &str) -> bool {
    !enrollment.clients.contains_key(user)
        && [Mode::Writable, Mode::Writeable]
            .into_iter()
            .any(|m| have_access(conf, user, m, ADMIN_REPO).is_some_and(|a| strip_git_suffix(&a.relpath) == ADMIN_REPO))
}

/// The live enrollment and its configuration.
fn live(cfg: &NodeConfig) -> anyhow::Result<(Config, Enrollment)> {
    let conf = crate::enrollment::load_conf(cfg).context("no live enrollment (run ferry-node init first)")?;
    let keys = crate::enrollment::load_keydir(cfg)?;
    let enrollment = Enrollment::build(&conf, &keys).map_err(|errs| {
        anyhow::anyhow!(
            "live enrollment is invalid: {}",
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        )
    })?;
    Ok((conf, enrollment))
}

/// The role of `user` in the live enrollment, or why it has none.
pub fn role(cfg: &NodeConfig, user: &str) -> anyhow::Result<Result<Role, String>> {
    let (conf, enrollment) = live(cfg)?;
    Ok(role_in(&conf, &enrollment, user))
}

fn role_in(conf: &Config, enrollment: &Enrollment, user: &str) -> Result<Role, String> {
    let shown = ferry_text::escape(user, 100);
    if !enrollment.users.contains_key(user) {
        return Err(format!("{shown} is not enrolled (no keydir/{shown}.pub in the live gitosis-admin)"));
    }
    if let Some(c) = enrollment.client(user) {
        return Ok(Role::Client { web: c.web });
    }
    if is_admin(conf, enrollment, user) {
        return Ok(Role::Admin);
    }
    Err(format!("{shown} has no web view: it is neither an administrator (may push gitosis-admin) nor a client"))
}

fn lock(cfg: &NodeConfig) -> anyhow::Result<ferry_durable::Lock> {
    let state = cfg.state_dir();
    fs::create_dir_all(&state)?;
    Ok(ferry_durable::Lock::acquire_timeout(&state.join("web.lock"), Duration::from_secs(120))?)
}

/// Rewrite the web view from the live enrollment and the stored
/// passwords. On failure the view is closed (see the module doc), the
/// failure journaled and mailed, and the error returned.
pub fn sync(cfg: &NodeConfig) -> anyhow::Result<Report> {
    let _lock = lock(cfg)?;
    sync_locked(cfg)
}

/// Set (`Some(hash)`) or remove (`None`) `user`'s password, then sync.
/// Returns whether a password was removed, and the report.
pub fn set_password(cfg: &NodeConfig, user: &str, hash: Option<String>) -> anyhow::Result<(bool, Report)> {
    let _lock = lock(cfg)?;
    let path = store_path(cfg);
    let mut store = passwd::Store::load(&path)?;
    let removed = match hash {
        Some(h) => {
            store.set(user, h);
            false
        }
        None => store.remove(user),
    };
    store.save(&path)?;
    let what = if removed { "web_password_removed" } else { "web_password_set" };
    crate::events::record(&cfg.events_log(), "info", None, what, None, None, &format!("user {user}"));
    Ok((removed, sync_locked(cfg)?))
}

fn sync_locked(cfg: &NodeConfig) -> anyhow::Result<Report> {
    match build(cfg) {
        Ok(r) => Ok(r),
        Err(e) => {
            let closed = match fs::remove_file(cfg.web_dir().join(CURRENT)) {
                Ok(()) => "the web view is closed to everyone until `ferry-node web sync` succeeds".to_owned(),
                Err(x) if x.kind() == std::io::ErrorKind::NotFound => "the web view is closed".to_owned(),
                Err(x) => format!("and the web view could not be closed either ({x}): stop the web server"),
            };
            let detail = format!("cannot rewrite the web access files: {e:#}; {closed}");
            crate::events::record(
                &cfg.events_log(),
                "error",
                None,
                "web_sync_failed",
                Some("E_WEB_SYNC"),
                None,
                &detail,
            );
            let body = format!(
                "Node {}: {}\n{}",
                cfg.name,
                ferry_text::escape(&detail, 2000),
                ferry_request::Reason::WebSync.describe()
            );
            crate::alerts::raise(cfg, ferry_notify::Alert::new(ferry_notify::Kind::Other, "web:sync", &cfg.name, body));
            crate::alerts::flush(cfg);
            bail!("E_WEB_SYNC: {detail}")
        }
    }
}

/// Write a new generation and make it current (module doc).
fn build(cfg: &NodeConfig) -> anyhow::Result<Report> {
    let (conf, enrollment) = live(cfg)?;
    let store = passwd::Store::load(&store_path(cfg))?;
    let web = cfg.web_dir();
    if !web.is_dir() {
        fs::create_dir_all(&web).with_context(|| format!("cannot create {}", web.display()))?;
        restrict_mode(&web, 0o750)?;
    }
    let admins: Vec<&str> =
        enrollment.users.keys().map(String::as_str).filter(|u| is_admin(&conf, &enrollment, u)).collect();
    let admin_lines: Vec<(&str, &str)> = admins.iter().filter_map(|u| Some((*u, store.get(u)?))).collect();

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let generation = format!("{GEN_PREFIX}{nanos:x}-{}", std::process::id());
    let g = web.join(&generation);
    make_dir(&g, &web)?;
    write_file(&g, "admin.htpasswd", &htpasswd("/cgit/ and every /c/<client>/", &admin_lines), &web)?;

    // The administrators' view scans only the clients' git directories
    // (never snapshot or artifact trees, SECURITY C8); removed clients'
    // mirrors stay visible to them.
    let data = cfg.data_dir();
    let mut projects: BTreeSet<&str> = enrollment.clients.keys().map(String::as_str).collect();
    let found: Vec<String> = match fs::read_dir(&data) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|de| de.file_name().to_str().map(str::to_owned))
            .filter(|n| {
                is_valid_client_name(n) && fs::symlink_metadata(data.join(n).join("git")).is_ok_and(|m| m.is_dir())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    projects.extend(found.iter().map(String::as_str));
    let list: String = projects.iter().map(|c| format!("{c}/git\n")).collect();
    write_file(&g, "projects", &list, &web)?;
    // cgit expands $CGIT_REPO_URL (the path under the scan path, without
    // .git); clone-url, like every repository setting, before scan-path.
    let clone = |prefix: &str| {
        cfg.web.git_url.as_ref().map(|u| format!("clone-url={u}{prefix}$CGIT_REPO_URL.git\n")).unwrap_or_default()
    };
    let scan = format!("{}project-list={}\nscan-path={}", clone(""), g.join("projects").display(), data.display());
    let rc = cgitrc("Ferry backups", "Read-only mirrors of every client's git repositories", "/cgit/", &scan);
    write_file(&g, "cgitrc", &rc, &web)?;

    let c_dir = g.join("c");
    make_dir(&c_dir, &web)?;
    let mut clients = Vec::new();
    for c in enrollment.clients.values() {
        let d = c_dir.join(&c.name);
        make_dir(&d, &web)?;
        let scan = format!(
            "{}scan-path={}",
            clone(&format!("{}/git/", c.name)),
            cfg.client_data(&c.name).join("git").display()
        );
        let rc = cgitrc(
            &format!("Ferry backups of {}", c.name),
            &format!("Read-only mirrors of {}'s git repositories", c.name),
            &format!("/c/{}/git/", c.name),
            &scan,
        );
        write_file(&d, "cgitrc", &rc, &web)?;
        let mut lines = admin_lines.clone();
        if c.web
            && let Some(h) = store.get(&c.name)
        {
            lines.push((c.name.as_str(), h));
        }
        write_file(&d, "htpasswd", &htpasswd(&format!("/c/{}/", c.name), &lines), &web)?;
        ferry_durable::fsync_dir(&d)?;
        clients.push(ClientView {
            client: c.name.clone(),
            path: format!("/c/{}/", c.name),
            web: c.web,
            users: lines.iter().map(|(u, _)| (*u).to_owned()).collect(),
        });
    }
    ferry_durable::fsync_dir(&c_dir)?;
    ferry_durable::fsync_dir(&g)?;

    let tmp_link = format!("{TMP_PREFIX}{CURRENT}-{}", std::process::id());
    let _ = fs::remove_file(web.join(&tmp_link));
    std::os::unix::fs::symlink(&generation, web.join(&tmp_link))?;
    adopt(&web.join(&tmp_link), &web)?;
    fs::rename(web.join(&tmp_link), web.join(CURRENT))
        .with_context(|| format!("cannot switch {}", web.join(CURRENT).display()))?;
    ferry_durable::fsync_dir(&web)?;
    remove_old(&web, &generation);

    Ok(Report {
        dir: web.display().to_string(),
        generation,
        admins: admins.iter().map(|u| WebUser { name: (*u).to_owned(), password: store.get(u).is_some() }).collect(),
        clients,
    })
}

/// Older generations and temporaries left by a crash (we hold the lock).
fn remove_old(web: &Path, keep: &str) {
    let Ok(rd) = fs::read_dir(web) else { return };
    for de in rd.flatten() {
        let name = de.file_name().to_string_lossy().into_owned();
        if name == keep || !(name.starts_with(GEN_PREFIX) || name.starts_with(TMP_PREFIX)) {
            continue;
        }
        let p = de.path();
        let r = if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if let Err(e) = r {
            tracing::warn!("cannot remove the old web generation {}: {e}", p.display());
        }
    }
}

/// An htpasswd file for nginx: a comment, then `user:hash` lines.
fn htpasswd(opens: &str, lines: &[(&str, &str)]) -> String {
    let mut s = format!("# Written by ferry-node web sync: who may open {opens}. Do not edit.\n");
    for (u, h) in lines {
        s.push_str(&format!("{u}:{h}\n"));
    }
    s
}

/// The shipped cgitrc with its placeholders filled; `scan` replaces the
/// `scan-path=` line (it must stay last: cgit applies the settings above
/// it to the repositories it finds).
fn cgitrc(title: &str, desc: &str, virtual_root: &str, scan: &str) -> String {
    let mut out = String::from("# Written by ferry-node web sync from deploy/cgitrc. Do not edit.\n");
    // The template's opening comment is about the template itself.
    for line in CGITRC_TEMPLATE.lines().skip_while(|l| l.starts_with('#')) {
        let line = if line.starts_with('#') {
            line.to_owned()
        } else if line == "scan-path=@SCAN_PATH@" {
            scan.to_owned()
        } else {
            line.replace("@TITLE@", title).replace("@DESC@", desc).replace("@VIRTUAL_ROOT@", virtual_root)
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn make_dir(dir: &Path, web: &Path) -> anyhow::Result<()> {
    fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    restrict_mode(dir, 0o750)?;
    adopt(dir, web)
}

/// Write a new file of a generation (not yet live: the directory is
/// synced once, before the switch), 0640 whatever the umask.
fn write_file(dir: &Path, name: &str, text: &str, web: &Path) -> anyhow::Result<()> {
    let p = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", p.display()))?;
    restrict_mode(&p, 0o640)?;
    adopt(&p, web)
}

/// Set the permission bits exactly (the umask may have cleared some).
pub(crate) fn restrict_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    // Keep a setgid bit the directory inherited from the web directory.
    let keep = fs::metadata(p).map(|m| if m.is_dir() { m.permissions().mode() & 0o2000 } else { 0 }).unwrap_or(0);
    fs::set_permissions(p, fs::Permissions::from_mode(mode | keep))
        .with_context(|| format!("cannot set the mode of {}", p.display()))
}

/// Run as root (an administrator's `sudo ferry-node web …`), give what was
/// written to the owner and group of `like` (the web or state directory),
/// so the node's own account can replace it later.
pub(crate) fn adopt(p: &Path, like: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let m = fs::metadata(like)?;
    std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid()))
        .with_context(|| format!("cannot change the owner of {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cgitrcs_fill_every_placeholder_and_scan_last() {
        let rc = cgitrc("T", "D", "/c/host-a/git/", "scan-path=/srv/data/host-a/git");
        assert!(!rc.contains('@'), "placeholder left:\n{rc}");
        let lines: Vec<&str> = rc.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert_eq!(lines.last(), Some(&"scan-path=/srv/data/host-a/git"), "{rc}");
        for must in [
            "virtual-root=/c/host-a/git/",
            "root-title=T",
            "enable-html-serving=0",
            "enable-filter-overrides=0",
            "enable-git-config=0",
            "enable-http-clone=0",
            "snapshots=",
        ] {
            assert!(lines.contains(&must), "{must} missing:\n{rc}");
        }
    }

    #[test]
    fn administrators_are_those_who_may_push_gitosis_admin_itself() {
        let conf = Config::parse(
            b"[group admins]\nmembers = alice\nwritable = gitosis-admin\n\
              [group typo]\nmembers = bob\nwriteable = gitosis-admin\n\
              [group mapped]\nmembers = mallory\nmap writable gitosis-admin = elsewhere\n\
              [group readers]\nmembers = carol host-a\nreadonly = gitosis-admin\n\
              [ferry client host-a]\n",
        )
        .unwrap();
        let mut e = Enrollment::default();
        for u in ["alice", "bob", "mallory", "carol", "host-a", "dave"] {
            e.users.insert(u.to_owned(), Vec::new());
        }
        let admins: Vec<&str> = e.users.keys().map(String::as_str).filter(|u| is_admin(&conf, &e, u)).collect();
        assert_eq!(admins, ["alice", "bob"]);
        assert_eq!(role_in(&conf, &e, "alice"), Ok(Role::Admin));
        assert!(role_in(&conf, &e, "carol").unwrap_err().contains("neither an administrator"));
        assert!(role_in(&conf, &e, "erin").unwrap_err().contains("not enrolled"));
    }

    #[test]
    fn htpasswd_lines() {
        let t = htpasswd("/c/x/", &[("admin@ws", "$6$a$b"), ("x", "$6$c$d")]);
        assert_eq!(t.lines().skip(1).collect::<Vec<_>>(), ["admin@ws:$6$a$b", "x:$6$c$d"]);
        assert!(t.starts_with('#'));
    }
}
